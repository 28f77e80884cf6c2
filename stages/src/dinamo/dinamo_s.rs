//! `dinamo_s`: DINAMO-S (paper section 2.1, Algorithm 2), an EWMA reference
//! with per-bin Poisson weights, scored by the reduced chi-square: alpha and
//! the threshold tuned per dataset on its historical runs, every run scored
//! against the reference of the runs before it. The reference itself is
//! [`super::reference`].

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reference::{
    ALPHA_STEP, Constants, EPSILON, Keep, PRIOR_EVENTS_PER_BIN, pass, score_of,
};
use super::score_plots::draw_shifter_plots;
use super::tables::{
    DatasetGroups, DatasetRuns, ScoreBatches, Scored, score_outputs, score_schema,
};
use crate::error::{Result, StageError};
use crate::parallel::{overlapped, par_map_counted};
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every run against an EWMA reference built from earlier good runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DinamoS {
    /// EWMA smoothing factor in [0, 1) (weight of the history), or `auto`:
    /// the value on a grid over [0, 1) that maximises the ROC AUC of the score
    /// on the historical runs of each dataset.
    pub alpha: AutoOr<f64>,
    /// Threshold on the score ln(chi2), or `auto`: the value that maximises
    /// balanced accuracy on the historical runs of each dataset.
    pub threshold: AutoOr<f64>,
    /// The first runs of each dataset that tune `auto` parameters (the
    /// historical regime); the rest is the continual regime.
    pub historical_runs: usize,
    /// Step of the alpha grid for `alpha: auto` (0.01 gives 0.00..0.99).
    pub alpha_step: f64,
    /// Small constant in the update weight omega = 1/(sigma_x^2 + epsilon).
    pub epsilon: f64,
    /// Events per bin the uniform starting reference stands for: its
    /// uncertainty is Poisson for an integral of `prior_events_per_bin`
    /// x N_b (the reference code: 100), which sets how fast the first good
    /// runs take over and how the first runs score.
    pub prior_events_per_bin: f64,
    /// Write the per-bin columns (pulls, references, their uncertainties
    /// and the input counts) for every run. Off for large studies: the
    /// per-run scalars and the `bands` table keep every metric, at a
    /// fraction of the disk.
    pub per_run_vectors: bool,
}

impl Default for DinamoS {
    fn default() -> Self {
        Self {
            alpha: AutoOr::Auto,
            threshold: AutoOr::Auto,
            historical_runs: 1000,
            alpha_step: ALPHA_STEP,
            epsilon: EPSILON,
            prior_events_per_bin: PRIOR_EVENTS_PER_BIN,
            per_run_vectors: true,
        }
    }
}

impl StageConfig for DinamoS {
    const KIND: &'static str = "dinamo_s";
    const VERSION: u32 = 4;
    const SUMMARY: &'static str = "DINAMO-S: EWMA reference with Poisson weights, reduced chi2 and pulls per run, per dataset";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        if let AutoOr::Value(a) = self.alpha
            && !(0.0..1.0).contains(&a)
        {
            return Err(StageError::param("alpha", format!("{a} is not in [0, 1)")));
        }
        if !(self.epsilon > 0.0) {
            return Err(StageError::param("epsilon", "must be positive"));
        }
        if !(self.prior_events_per_bin > 0.0 && self.prior_events_per_bin.is_finite()) {
            return Err(StageError::param(
                "prior_events_per_bin",
                "must be a positive number",
            ));
        }
        if !(self.alpha_step > 0.0 && self.alpha_step < 1.0) {
            return Err(StageError::param("alpha_step", "must be in (0, 1)"));
        }
        if self.historical_runs == 0
            && (self.alpha == AutoOr::Auto || self.threshold == AutoOr::Auto)
        {
            return Err(StageError::param(
                "historical_runs",
                "`auto` alpha or threshold needs historical runs to tune on",
            ));
        }
        Ok(())
    }
}

impl DinamoS {
    /// The reference's constants besides alpha.
    fn constants(&self) -> Constants {
        Constants {
            epsilon: self.epsilon,
            prior_events_per_bin: self.prior_events_per_bin,
        }
    }

    /// Scores one dataset and builds its output batches.
    fn score_dataset(
        &self,
        dataset: i64,
        batch: &RecordBatch,
        schema: &SchemaRef,
        input: &str,
    ) -> Result<ScoreBatches> {
        let constants = self.constants();
        let data = DatasetRuns::parse(dataset, batch, input, self.epsilon)?;
        let (norm, good) = (&data.norm, &data.good);
        let historical = self.historical_runs.min(data.len());
        let alpha = data.alpha_for(self.alpha, self.alpha_step, constants, historical)?;
        let keep = if self.per_run_vectors {
            Keep::ReferencesAndPulls
        } else {
            Keep::References
        };
        let full = pass(constants, norm, good, alpha, keep);
        let scores: Vec<f64> = full.chi2.iter().map(|&c| score_of(c)).collect();
        let threshold = data.threshold(self.threshold, &scores, historical)?;
        data.batches(
            batch,
            schema,
            Scored {
                chi2: full.chi2,
                pulls: full.pulls,
                ref_mu: full.ref_mu,
                ref_sigma: full.ref_sigma,
                alpha: Some(alpha),
                threshold,
                historical,
            },
        )
    }
}

impl Stage for DinamoS {
    fn shardable(&self) -> bool {
        true
    }

    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        score_outputs(&inputs[0], "input", self.per_run_vectors)
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let schema = score_schema(&input.schema, &input.name, self.per_run_vectors)?;
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let progress = ctx.reporter.progress(0, "datasets");
        let chunk = 8 * rayon::current_num_threads();
        let output = &mut *ctx.output;
        let artifacts = ctx.artifacts;
        let mut first = true;
        // Reading (Parquet decoding) and writing overlap the scoring.
        overlapped(
            || {
                let datasets = groups.next_chunk(chunk)?;
                Ok((!datasets.is_empty()).then_some(datasets))
            },
            |datasets: Vec<(i64, RecordBatch)>| {
                let scored = par_map_counted(&datasets, progress.as_ref(), |(id, batch)| {
                    self.score_dataset(*id, batch, &schema, &input.name)
                });
                datasets.iter().map(|d| d.0).zip(scored).collect::<Vec<_>>()
            },
            |scored| {
                for (dataset, batches) in scored {
                    let batches = batches?;
                    if std::mem::take(&mut first) {
                        draw_shifter_plots(&batches.main, dataset, "DINAMO-S", artifacts)?;
                    }
                    output.write("main", batches.main)?;
                    if let Some(bands) = batches.bands {
                        output.write("bands", bands)?;
                    }
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dinamo::dqm_metrics;
    use crate::dinamo::generator::RunGenerator;
    use crate::dinamo::test_support::runs_input;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use arrow::array::{Array, AsArray};

    /// The Jaccard distance is the same whether `dqm_metrics` builds the
    /// bands from the per-run vectors or reads a reference stage's `bands`
    /// table, and a score table without per-run vectors (the study's) gives
    /// every metric of the full one.
    #[test]
    fn bands_table_gives_the_same_metrics_as_per_run_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let generator = RunGenerator {
            seed_range: Some([0, 3]),
            n_runs: 300,
            n_bad: 30,
            ..Default::default()
        };
        let runs = runs_input(generator, dir.path(), "runs");
        let metrics = |s: &DinamoS, with_bands: bool, tag: &str| {
            let out = run_in_memory(s, std::slice::from_ref(&runs)).unwrap();
            let scores = input_from_batch(
                "scores",
                &out.table("main"),
                &dir.path().join(format!("{tag}.parquet")),
            )
            .unwrap();
            let bands = input_from_batch(
                "bands",
                &out.table("bands"),
                &dir.path().join(format!("{tag}_bands.parquet")),
            )
            .unwrap();
            assert_eq!(out.table("bands").num_rows(), 3 * 2 * 100);
            let inputs = if with_bands {
                vec![scores, bands]
            } else {
                vec![scores]
            };
            run_in_memory(&dqm_metrics::DqmMetrics::default(), &inputs)
                .unwrap()
                .table("main")
        };
        let full = DinamoS {
            historical_runs: 100,
            ..Default::default()
        };
        let from_vectors = metrics(&full, false, "a");
        let from_table = metrics(&full, true, "b");
        assert_eq!(from_vectors, from_table);
        let jaccard = from_vectors
            .column_by_name("jaccard")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        assert_eq!(jaccard.null_count(), 0);
        assert!(jaccard.values().iter().all(|j| (0.0..1.0).contains(j)));
        let compact = DinamoS {
            per_run_vectors: false,
            ..full.clone()
        };
        let out = run_in_memory(&compact, std::slice::from_ref(&runs)).unwrap();
        assert!(out.table("main").column_by_name("ref_mu").is_none());
        assert_eq!(metrics(&compact, true, "c"), from_vectors);
        // Without vectors or a bands input the distance is unknown, not made up.
        let scores =
            input_from_batch("s", &out.table("main"), &dir.path().join("d.parquet")).unwrap();
        let no_bands = run_in_memory(&dqm_metrics::DqmMetrics::default(), &[scores])
            .unwrap()
            .table("main");
        assert_eq!(no_bands.column_by_name("jaccard").unwrap().null_count(), 6);
    }
}
