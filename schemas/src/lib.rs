//! Arrow schemas of the tables that pass between dqm-pipeline stages.
//!
//! Every stage reads and writes Parquet; these functions are the single source
//! of truth for the columns a stage promises, so `pipeline plan` can check a
//! DAG before anything runs and analysts know what to query. Each field
//! carries its documentation in the Arrow field metadata under the key
//! [`DOC_KEY`], which `pipeline stages` prints and which travels into the
//! Parquet files.
//!
//! The same descriptions are collected in `schemas/README.md`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Field-metadata key holding a column's human-readable description.
pub const DOC_KEY: &str = "doc";

/// A nullable-or-not column with its description attached as metadata.
pub fn doc_field(name: &str, data_type: DataType, nullable: bool, doc: &str) -> Field {
    Field::new(name, data_type, nullable)
        .with_metadata(HashMap::from([(DOC_KEY.to_string(), doc.to_string())]))
}

/// A column that is never null, with its description: the schema builder
/// every table's schema function uses.
pub fn column(name: &str, data_type: DataType, doc: &str) -> Field {
    doc_field(name, data_type, false, doc)
}

/// A column that may be null (a figure undefined for some rows), with its
/// description.
pub fn nullable(name: &str, data_type: DataType, doc: &str) -> Field {
    doc_field(name, data_type, true, doc)
}

/// A schema of described columns, in order.
pub fn schema_of(fields: impl IntoIterator<Item = Field>) -> SchemaRef {
    Arc::new(Schema::new(fields.into_iter().collect::<Vec<_>>()))
}

/// `List<Float64>` with a non-null item, the type of every per-bin column.
pub fn f64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, false)))
}

/// The description of a field, if it carries one.
pub fn field_doc(field: &Field) -> Option<&str> {
    field.metadata().get(DOC_KEY).map(String::as_str)
}

/// Columns of a histogram-per-run table (the `runs` table of `synth_runs`).
///
/// `dinamo_s` needs `run`, `label` and `counts`; `dataset` is optional (a
/// single dataset is assumed without it). The truth columns are only known for
/// synthetic data and are carried through to the scores so metrics can use them.
pub mod runs {
    use super::*;

    pub fn dataset() -> Field {
        doc_field(
            "dataset",
            DataType::Int64,
            false,
            "Dataset id (the generator seed): runs of different datasets are independent sequences",
        )
    }
    pub fn run() -> Field {
        doc_field(
            "run",
            DataType::Int64,
            false,
            "Run number, in data-taking order within the dataset",
        )
    }
    pub fn label() -> Field {
        doc_field(
            "label",
            DataType::Int8,
            false,
            "Ground-truth or shifter label: 0 good, 1 bad",
        )
    }
    pub fn counts() -> Field {
        doc_field(
            "counts",
            f64_list(),
            false,
            "Histogram bin contents (events per bin), N_b values",
        )
    }
    pub fn lo() -> Field {
        doc_field(
            "lo",
            DataType::Float64,
            false,
            "Lower edge of the histogram range",
        )
    }
    pub fn hi() -> Field {
        doc_field(
            "hi",
            DataType::Float64,
            false,
            "Upper edge of the histogram range",
        )
    }
    pub fn mu() -> Field {
        doc_field(
            "mu",
            DataType::Float64,
            false,
            "Truth: mean of the Gaussian this run was drawn from (after drift, rapid and anomaly shifts)",
        )
    }
    pub fn sigma() -> Field {
        doc_field(
            "sigma",
            DataType::Float64,
            false,
            "Truth: width of the Gaussian this run was drawn from (after rapid and anomaly shifts)",
        )
    }
    pub fn rapid_change() -> Field {
        doc_field(
            "rapid_change",
            DataType::Boolean,
            false,
            "Truth: a rapid change of mu or sigma starts at this run",
        )
    }
    pub fn n_dead_bins() -> Field {
        doc_field(
            "n_dead_bins",
            DataType::Int32,
            false,
            "Truth: number of bins forced to zero (bad runs only)",
        )
    }

    /// The columns `synth_runs` writes, in order.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            dataset(),
            run(),
            label(),
            counts(),
            lo(),
            hi(),
            mu(),
            sigma(),
            rapid_change(),
            n_dead_bins(),
        ]))
    }

    /// Truth columns a scoring stage passes through when its input has them.
    pub const TRUTH_COLUMNS: [&str; 6] = ["lo", "hi", "mu", "sigma", "rapid_change", "n_dead_bins"];
}

/// Columns of a per-run score table written by a reference method
/// (`dinamo_s`, later `dinamo_ml`): the common currency of `dqm_metrics`.
pub mod scores {
    use super::*;

    /// The per-bin columns (`pull`, `ref_mu`, `ref_sigma`) among [`score_fields`].
    pub const VECTORS: [&str; 3] = ["pull", "ref_mu", "ref_sigma"];

    /// Score columns every reference method writes after `dataset, run,
    /// label`; without `vectors`, the per-bin columns ([`VECTORS`]) are left out.
    pub fn score_fields(vectors: bool) -> Vec<Field> {
        let all = vec![
            doc_field(
                "integral",
                DataType::Float64,
                false,
                "Total counts of the run (I); 0 marks an empty run, scored against the reference with no statistical uncertainty and never used to update it",
            ),
            doc_field(
                "chi2",
                DataType::Float64,
                false,
                "Reduced chi-square of the unit-normalized run against the reference, (1/N_b) sum (x-mu)^2/(s_x^2+s_mu^2)",
            ),
            doc_field("score", DataType::Float64, false, "Anomaly score ln(chi2)"),
            doc_field(
                "flagged",
                DataType::Boolean,
                false,
                "score > threshold: the method calls the run bad",
            ),
            doc_field(
                "pull",
                f64_list(),
                false,
                "Per-bin pull (x-mu)/sqrt(s_x^2+s_mu^2)",
            ),
            doc_field(
                "ref_mu",
                f64_list(),
                false,
                "Reference (unit-normalized) used to score this run",
            ),
            doc_field(
                "ref_sigma",
                f64_list(),
                false,
                "Per-bin uncertainty of the reference used to score this run",
            ),
            doc_field(
                "alpha",
                DataType::Float64,
                true,
                "EWMA smoothing factor used for this dataset (DINAMO-S); null for methods without one (DINAMO-ML)",
            ),
            doc_field(
                "threshold",
                DataType::Float64,
                false,
                "Threshold on score used for this dataset",
            ),
            doc_field(
                "historical",
                DataType::Boolean,
                false,
                "The run belongs to the historical regime (the first historical_runs runs, which tune auto parameters)",
            ),
        ];
        all.into_iter()
            .filter(|f| vectors || !VECTORS.contains(&f.name().as_str()))
            .collect()
    }

    /// Names of the columns a metrics stage needs from a score table.
    pub const REQUIRED: [&str; 5] = ["run", "label", "score", "flagged", "historical"];
}

/// The `bands` table of a reference method (`dinamo_s`, `dinamo_ml`): the
/// two 1-sigma bands whose Jaccard distance `dqm_metrics` reports, per
/// dataset, regime and bin, in the z-score space of each good run's truth.
pub mod bands {
    use super::*;

    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            runs::dataset(),
            metrics::regime(),
            doc_field(
                "bin",
                DataType::Int32,
                false,
                "Bin index; the bands are evaluated at the bin centres",
            ),
            doc_field(
                "true_median",
                DataType::Float64,
                false,
                "Per-bin median over the regime's good runs of x sigma, x read in z = (centre - mu)/sigma and interpolated back onto the centres",
            ),
            doc_field(
                "true_std",
                DataType::Float64,
                false,
                "Per-bin standard deviation (ddof 0) of the same densities",
            ),
            doc_field(
                "ref_median",
                DataType::Float64,
                false,
                "Per-bin median of the references (ref_mu) through the same transform",
            ),
            doc_field(
                "ref_sigma",
                DataType::Float64,
                false,
                "Per-bin mean of the references' uncertainties (ref_sigma) through the same transform",
            ),
        ]))
    }
}

/// Tables written by `dqm_metrics`.
pub mod metrics {
    use super::*;

    /// The regime a row describes (the score table's `historical` column).
    pub fn regime() -> Field {
        doc_field(
            "regime",
            DataType::Utf8,
            false,
            "historical (the first historical_runs runs, used to tune alpha and the threshold) or continual (the rest)",
        )
    }

    /// One row per dataset and regime.
    pub fn per_dataset() -> SchemaRef {
        Arc::new(Schema::new(vec![
            runs::dataset(),
            regime(),
            doc_field("n_runs", DataType::Int64, false, "Runs in this regime"),
            doc_field(
                "n_bad",
                DataType::Int64,
                false,
                "Runs labelled bad in this regime",
            ),
            doc_field(
                "balanced_accuracy",
                DataType::Float64,
                true,
                "(sensitivity + specificity) / 2; null when a class is absent",
            ),
            doc_field(
                "sensitivity",
                DataType::Float64,
                true,
                "Flagged bad runs / bad runs (true-positive rate)",
            ),
            doc_field(
                "specificity",
                DataType::Float64,
                true,
                "Unflagged good runs / good runs (true-negative rate)",
            ),
            doc_field(
                "adaptation_time",
                DataType::Float64,
                true,
                "Mean over rapid changes of the number of good runs flagged before the first unflagged good run; null without rapid changes (or without the rapid_change column)",
            ),
            doc_field(
                "n_changes",
                DataType::Int64,
                false,
                "Rapid changes in this regime",
            ),
            doc_field(
                "jaccard",
                DataType::Float64,
                true,
                "Jaccard distance between the predicted and the empirical 1-sigma bands of good runs in z-score space; null without truth mu/sigma",
            ),
        ]))
    }

    /// Medians and 95% intervals over datasets, one row per regime and metric.
    pub fn summary() -> SchemaRef {
        Arc::new(Schema::new(vec![
            doc_field("regime", DataType::Utf8, false, "historical or continual"),
            doc_field(
                "metric",
                DataType::Utf8,
                false,
                "Metric name (a column of the per-dataset table)",
            ),
            doc_field(
                "n_datasets",
                DataType::Int64,
                false,
                "Datasets with a defined value of the metric",
            ),
            doc_field("median", DataType::Float64, true, "Median over datasets"),
            doc_field(
                "q025",
                DataType::Float64,
                true,
                "2.5th percentile over datasets",
            ),
            doc_field(
                "q975",
                DataType::Float64,
                true,
                "97.5th percentile over datasets",
            ),
            doc_field("mean", DataType::Float64, true, "Mean over datasets"),
        ]))
    }

    /// The metric columns of [`per_dataset`] that [`summary`] aggregates.
    pub const METRICS: [&str; 5] = [
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "adaptation_time",
        "jaccard",
    ];
}

/// The `updates` table of `dinamo_ml`: one row per online training step.
pub mod online {
    use super::*;

    pub fn updates() -> SchemaRef {
        Arc::new(Schema::new(vec![
            runs::dataset(),
            doc_field(
                "run",
                DataType::Int64,
                false,
                "The good run whose arrival triggered this training step",
            ),
            doc_field(
                "batch_runs",
                DataType::Int64,
                false,
                "Good runs in the mini-batch (the K most recent, fewer at the start)",
            ),
            doc_field(
                "iterations",
                DataType::Int64,
                false,
                "Gradient steps taken on the batch before early stopping (or the cap)",
            ),
            doc_field(
                "first_loss",
                DataType::Float64,
                false,
                "Gaussian NLL of the batch before the first step",
            ),
            doc_field(
                "best_loss",
                DataType::Float64,
                false,
                "Lowest Gaussian NLL of the batch during the step",
            ),
        ]))
    }
}

/// Tables of `dqm_compare`: several methods' `dqm_metrics` side by side.
pub mod compare {
    use super::*;

    fn method(doc: &str) -> Field {
        doc_field("method", DataType::Utf8, false, doc)
    }

    fn regime() -> Field {
        doc_field("regime", DataType::Utf8, false, "historical or continual")
    }

    fn metric() -> Field {
        doc_field(
            "metric",
            DataType::Utf8,
            false,
            "Metric name (a column of dqm_metrics' per-dataset table)",
        )
    }

    fn quantiles(what: &str) -> Vec<Field> {
        vec![
            doc_field(
                "n_datasets",
                DataType::Int64,
                false,
                "Datasets with a defined value",
            ),
            doc_field(
                "median",
                DataType::Float64,
                true,
                &format!("Median over datasets of {what}"),
            ),
            doc_field(
                "q025",
                DataType::Float64,
                true,
                &format!("2.5th percentile over datasets of {what}"),
            ),
            doc_field(
                "q975",
                DataType::Float64,
                true,
                &format!("97.5th percentile over datasets of {what}"),
            ),
        ]
    }

    /// One row per method, regime and metric (the paper's Table 1).
    pub fn summary() -> SchemaRef {
        let mut fields = vec![
            method("Method name (the `methods` parameter, else the input's name)"),
            regime(),
            metric(),
        ];
        fields.extend(quantiles("the metric"));
        Arc::new(Schema::new(fields))
    }

    /// One row per dataset, regime, metric and method other than the baseline.
    pub fn differences() -> SchemaRef {
        Arc::new(Schema::new(vec![
            runs::dataset(),
            method("The method compared with the baseline"),
            doc_field("baseline", DataType::Utf8, false, "The first method"),
            regime(),
            metric(),
            doc_field(
                "value",
                DataType::Float64,
                true,
                "The method's value on this dataset",
            ),
            doc_field(
                "baseline_value",
                DataType::Float64,
                true,
                "The baseline's value on this dataset",
            ),
            doc_field(
                "difference",
                DataType::Float64,
                true,
                "value - baseline_value; null when either is undefined",
            ),
        ]))
    }

    /// Paired differences summarized over datasets.
    pub fn paired() -> SchemaRef {
        let mut fields = vec![
            method("The method compared with the baseline"),
            doc_field("baseline", DataType::Utf8, false, "The first method"),
            regime(),
            metric(),
        ];
        fields.extend(quantiles("the paired difference (method - baseline)"));
        fields.push(doc_field(
            "fraction_better",
            DataType::Float64,
            true,
            "Fraction of datasets where the method beats the baseline (higher is better for accuracies, lower for adaptation time and Jaccard distance); ties count half",
        ));
        Arc::new(Schema::new(fields))
    }
}

/// The `events` table of `delphes_convert`: one row per Delphes event.
///
/// Per-object features are one `List<Float32>` column per feature, named
/// `track_<feature>` / `tower_<feature>` in lower case (e.g. `track_pt`,
/// `tower_ehad`), all lists of an event having `n_tracks` / `n_towers`
/// items in the same object order; the MET features are scalar `met_<feature>`
/// columns. Plain columns keep SQL simple (`avg(met_met)`, `cardinality(track_pt)`)
/// and let the window builder take a feature without unpacking structs.
pub mod events {
    use super::*;

    /// The column name of a feature of a collection (`Track`, `PT` -> `track_pt`).
    pub fn column(collection: &str, feature: &str) -> String {
        format!("{}_{}", collection.to_lowercase(), feature.to_lowercase())
    }

    /// `List<Float32>` with non-null items.
    pub fn f32_list() -> DataType {
        DataType::List(Arc::new(Field::new("item", DataType::Float32, false)))
    }

    /// The schema for the given feature lists.
    pub fn schema(track: &[String], tower: &[String], met: &[String]) -> SchemaRef {
        schema_with_jets(track, tower, met, &[], false)
    }

    /// The schema with jets (`n_jets` and one `jet_<feature>` list per
    /// feature, when `jets` is not empty) and `scalar_ht` after the MET.
    pub fn schema_with_jets(
        track: &[String],
        tower: &[String],
        met: &[String],
        jets: &[String],
        scalar_ht: bool,
    ) -> SchemaRef {
        let mut fields = vec![
            doc_field(
                "event_id",
                DataType::Int64,
                false,
                "Event id, unique across the input files (files in order, entries in order)",
            ),
            doc_field(
                "source_file",
                DataType::Utf8,
                false,
                "Path of the ROOT file the event comes from",
            ),
            doc_field(
                "entry",
                DataType::Int64,
                false,
                "Entry number of the event in its file's tree",
            ),
            doc_field(
                "label",
                DataType::Utf8,
                false,
                "Detector configuration of the file (e.g. normal, hcal_barrel_off)",
            ),
            doc_field(
                "class",
                DataType::Int8,
                false,
                "Index of the label in the stage's `classes` list",
            ),
            doc_field(
                "n_tracks",
                DataType::Int32,
                false,
                "Number of tracks (Track_size)",
            ),
            doc_field(
                "n_towers",
                DataType::Int32,
                false,
                "Number of calorimeter towers (Tower_size)",
            ),
        ];
        for f in track {
            fields.push(doc_field(
                &column("Track", f),
                f32_list(),
                false,
                &format!("Track.{f} of every track of the event"),
            ));
        }
        for f in tower {
            fields.push(doc_field(
                &column("Tower", f),
                f32_list(),
                false,
                &format!(
                    "Tower.{f} of every tower of the event{}",
                    if f == "NTimeHits" {
                        " (an integer leaf, as float)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        for f in met {
            fields.push(doc_field(
                &column("MissingET", f).replace("missinget_", "met_"),
                DataType::Float32,
                false,
                &format!("MissingET.{f} (one per event)"),
            ));
        }
        if !jets.is_empty() {
            fields.push(doc_field(
                "n_jets",
                DataType::Int32,
                false,
                "Number of jets (Jet_size)",
            ));
        }
        for f in jets {
            fields.push(doc_field(
                &column("Jet", f),
                f32_list(),
                false,
                &format!("Jet.{f} of every jet of the event"),
            ));
        }
        if scalar_ht {
            fields.push(doc_field(
                "scalar_ht",
                DataType::Float32,
                false,
                "ScalarHT.HT: scalar sum of the transverse momenta of the event's objects (one per event)",
            ));
        }
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_documented() {
        let schemas = [
            runs::schema(),
            bands::schema(),
            metrics::per_dataset(),
            metrics::summary(),
        ];
        for schema in schemas {
            for field in schema.fields() {
                assert!(
                    field_doc(field).is_some_and(|d| !d.is_empty()),
                    "{} lacks a doc",
                    field.name()
                );
            }
        }
        for field in scores::score_fields(true) {
            assert!(field_doc(&field).is_some(), "{} lacks a doc", field.name());
        }
        let without: Vec<String> = scores::score_fields(false)
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(
            scores::VECTORS
                .iter()
                .all(|v| !without.contains(&v.to_string()))
        );
        assert_eq!(without.len() + 3, scores::score_fields(true).len());
    }

    #[test]
    fn metrics_listed_in_summary_exist_per_dataset() {
        let per = metrics::per_dataset();
        for m in metrics::METRICS {
            assert_eq!(
                per.field_with_name(m).unwrap().data_type(),
                &DataType::Float64
            );
        }
    }
}
