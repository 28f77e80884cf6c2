//! `dqm_compare`: several reference methods' `dqm_metrics` tables side by
//! side (the DINAMO paper's Table 1 and Figures 4, 6, 8-10): medians with 95%
//! intervals over datasets, the paired per-dataset difference of each method
//! against the first, and PNG plots.
//!
//! Inputs are the methods' per-dataset metric tables, optionally followed by
//! their per-run score tables in the same order (for the score-versus-run and
//! reference-example plots). Which is which is read from the columns.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::score_plots::{Picks, Scores};
use super::tables::DatasetGroups;
use crate::arrow_util::{cast_column, is_integer};
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::plots;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::median_and_95;
use dqm_schemas::compare::{differences, paired, summary};
use dqm_schemas::metrics::METRICS;

/// Compares the metrics of several methods on the same datasets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DqmCompare {
    /// Names of the methods, one per metrics input in order (e.g.
    /// `[DINAMO-S, DINAMO-ML]`); empty: the input stages' names. The first
    /// is the baseline of the paired differences.
    pub methods: Vec<String>,
    /// Dataset of the score-versus-run and reference-example plots; empty:
    /// the first dataset of the first score table.
    pub plot_dataset: Option<i64>,
}

impl StageConfig for DqmCompare {
    const KIND: &'static str = "dqm_compare";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Several methods' dqm_metrics side by side: medians and 95% intervals, paired per-dataset differences, plots (score vs run, reference examples, metric distributions)";
    const INPUTS: (usize, usize) = (1, 64);
    const INPUT_ROLES: &'static str = "metrics tables, then optionally score tables";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::metrics::per_dataset()]
    }
}

/// Higher is better for accuracies, lower for the others.
fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "balanced_accuracy" | "sensitivity" | "specificity")
}

fn is_metrics(schema: &SchemaRef) -> bool {
    schema.index_of("balanced_accuracy").is_ok() && schema.index_of("regime").is_ok()
}

/// Splits the inputs into metric tables and score tables and checks them.
fn classify(inputs: &[SchemaRef], methods: &[String]) -> Result<(usize, usize)> {
    let n_metrics = inputs.iter().take_while(|s| is_metrics(s)).count();
    let n_scores = inputs.len() - n_metrics;
    if n_metrics == 0 {
        return Err(StageError::data(
            "input 1 is not a dqm_metrics per-dataset table (no `regime`, `balanced_accuracy`); list the metrics tables first",
        ));
    }
    let why = "dqm_compare reads per-dataset metric tables";
    for (k, schema) in inputs[..n_metrics].iter().enumerate() {
        let name = format!("input {}", k + 1);
        require_column(schema, &name, "dataset", why, "an integer", is_integer)?;
        for m in METRICS {
            require_column(schema, &name, m, why, "Float64", |t| {
                t == &DataType::Float64
            })?;
        }
    }
    if n_scores != 0 && n_scores != n_metrics {
        return Err(StageError::data(format!(
            "{n_metrics} metrics tables but {n_scores} score tables: give one score table per method (in the same order) or none"
        )));
    }
    let why = "the plots read per-run score tables";
    for (k, schema) in inputs[n_metrics..].iter().enumerate() {
        let name = format!("input {}", n_metrics + k + 1);
        if is_metrics(schema) {
            return Err(StageError::data(format!(
                "{name} is a metrics table after a score table: list all metrics tables first"
            )));
        }
        for c in ["run", "label"] {
            require_column(schema, &name, c, why, "an integer", is_integer)?;
        }
        for c in ["score", "threshold"] {
            require_column(schema, &name, c, why, "Float64", |t| {
                t == &DataType::Float64
            })?;
        }
        for c in ["flagged", "historical"] {
            require_column(schema, &name, c, why, "Boolean", |t| {
                t == &DataType::Boolean
            })?;
        }
        for c in ["pull", "ref_mu", "ref_sigma", "counts"] {
            require_column(schema, &name, c, why, "a list of numbers", |t| {
                matches!(t, DataType::List(_) | DataType::LargeList(_))
            })?;
        }
    }
    if !methods.is_empty() && methods.len() != n_metrics {
        return Err(StageError::param(
            "methods",
            format!("{} names for {n_metrics} metrics inputs", methods.len()),
        ));
    }
    Ok((n_metrics, n_scores))
}

/// (dataset, regime, metric) → value, for one method.
type Values = BTreeMap<(i64, String, &'static str), Option<f64>>;

fn read_metrics(input: &Input) -> Result<Values> {
    let mut out = Values::new();
    for batch in input.read_all()? {
        let ids = cast_column(
            batch.column_by_name("dataset").expect("checked"),
            &DataType::Int64,
            &input.name,
            "dataset",
        )?;
        let ids = ids.as_primitive::<Int64Type>();
        let regime = cast_column(
            batch.column_by_name("regime").expect("checked"),
            &DataType::Utf8,
            &input.name,
            "regime",
        )?;
        let regime = regime.as_string::<i32>();
        for m in METRICS {
            let values = batch.column_by_name(m).expect("checked");
            let values = values.as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                let v = values.is_valid(i).then(|| values.value(i));
                out.insert((ids.value(i), regime.value(i).to_string(), m), v);
            }
        }
    }
    if out.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no rows",
            input.name
        )));
    }
    Ok(out)
}

/// The three output tables from the methods' values.
fn tables(names: &[String], all: &[Values]) -> Result<[RecordBatch; 3]> {
    let regimes: Vec<String> = {
        let mut r: Vec<String> = all[0].keys().map(|k| k.1.clone()).collect();
        r.sort();
        r.dedup();
        r
    };
    // Summary.
    let (mut s_method, mut s_regime, mut s_metric, mut s_n, mut s_q) =
        (vec![], vec![], vec![], vec![], [vec![], vec![], vec![]]);
    for (name, values) in names.iter().zip(all) {
        for regime in &regimes {
            for m in METRICS {
                let mut v: Vec<f64> = values
                    .iter()
                    .filter(|(k, _)| &k.1 == regime && k.2 == m)
                    .filter_map(|(_, v)| *v)
                    .collect();
                let q = median_and_95(&mut v);
                s_method.push(name.clone());
                s_regime.push(regime.clone());
                s_metric.push(m);
                s_n.push(v.len() as i64);
                for (col, q) in s_q.iter_mut().zip(q) {
                    col.push(q);
                }
            }
        }
    }
    let [m, lo, hi] = s_q;
    let summary_batch = RecordBatch::try_new(
        summary(),
        vec![
            Arc::new(StringArray::from(s_method)) as ArrayRef,
            Arc::new(StringArray::from(s_regime)),
            Arc::new(StringArray::from(s_metric)),
            Arc::new(Int64Array::from(s_n)),
            Arc::new(Float64Array::from(m)),
            Arc::new(Float64Array::from(lo)),
            Arc::new(Float64Array::from(hi)),
        ],
    )?;

    // Per-dataset differences against the baseline, and their summary.
    let baseline = &all[0];
    let mut d = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let mut p = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        [vec![], vec![], vec![]],
        vec![],
    );
    for (name, values) in names.iter().zip(all).skip(1) {
        for regime in &regimes {
            for m in METRICS {
                let (mut diffs, mut better) = (Vec::new(), 0.0);
                for (key, base) in baseline.iter().filter(|(k, _)| &k.1 == regime && k.2 == m) {
                    let value = values.get(key).copied().flatten();
                    let diff = match (value, *base) {
                        (Some(a), Some(b)) if a.is_finite() && b.is_finite() => Some(a - b),
                        _ => None,
                    };
                    if let Some(x) = diff {
                        diffs.push(x);
                        let gain = if higher_is_better(m) { x } else { -x };
                        better += if gain > 0.0 {
                            1.0
                        } else if gain == 0.0 {
                            0.5
                        } else {
                            0.0
                        };
                    }
                    d.0.push(key.0);
                    d.1.push(name.clone());
                    d.2.push(names[0].clone());
                    d.3.push(regime.clone());
                    d.4.push(m);
                    d.5.push(value);
                    d.6.push(*base);
                    d.7.push(diff);
                }
                let n = diffs.len();
                let q = median_and_95(&mut diffs);
                p.0.push(name.clone());
                p.1.push(names[0].clone());
                p.2.push(regime.clone());
                p.3.push(m);
                p.4.push(n as i64);
                for (col, q) in p.5.iter_mut().zip(q) {
                    col.push(q);
                }
                p.6.push((n > 0).then(|| better / n as f64));
            }
        }
    }
    let differences_batch = RecordBatch::try_new(
        differences(),
        vec![
            Arc::new(Int64Array::from(d.0)) as ArrayRef,
            Arc::new(StringArray::from(d.1)),
            Arc::new(StringArray::from(d.2)),
            Arc::new(StringArray::from(d.3)),
            Arc::new(StringArray::from(d.4)),
            Arc::new(Float64Array::from(d.5)),
            Arc::new(Float64Array::from(d.6)),
            Arc::new(Float64Array::from(d.7)),
        ],
    )?;
    let [m, lo, hi] = p.5;
    let paired_batch = RecordBatch::try_new(
        paired(),
        vec![
            Arc::new(StringArray::from(p.0)) as ArrayRef,
            Arc::new(StringArray::from(p.1)),
            Arc::new(StringArray::from(p.2)),
            Arc::new(StringArray::from(p.3)),
            Arc::new(Int64Array::from(p.4)),
            Arc::new(Float64Array::from(m)),
            Arc::new(Float64Array::from(lo)),
            Arc::new(Float64Array::from(hi)),
            Arc::new(Float64Array::from(p.6)),
        ],
    )?;
    Ok([summary_batch, paired_batch, differences_batch])
}

/// File-name-safe version of a method name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl DqmCompare {
    fn names(&self, inputs: &[Input], n_metrics: usize) -> Vec<String> {
        if self.methods.is_empty() {
            inputs[..n_metrics].iter().map(|i| i.name.clone()).collect()
        } else {
            self.methods.clone()
        }
    }

    /// The rows of `dataset` (or the first dataset) of a score table.
    fn plot_rows(&self, input: &Input) -> Result<Option<(i64, RecordBatch)>> {
        let mut groups = DatasetGroups::new(input);
        loop {
            let chunk = groups.next_chunk(1)?;
            let Some((id, batch)) = chunk.into_iter().next() else {
                return Ok(None);
            };
            if self.plot_dataset.is_none_or(|d| d == id) {
                return Ok(Some((id, batch)));
            }
        }
    }

    /// Figures 4 and 6 for one method.
    fn plot_scores(&self, input: &Input, method: &str, dir: &std::path::Path) -> Result<()> {
        let Some((dataset, batch)) = self.plot_rows(input)? else {
            return Err(StageError::data(match self.plot_dataset {
                Some(d) => format!("input `{}` has no dataset {d} (plot_dataset)", input.name),
                None => format!("input `{}` has no rows", input.name),
            }));
        };
        let scores = Scores::read(&batch, dataset, &input.name)?;
        scores.draw_score_vs_run(
            &dir.join(format!("score_vs_run_{}.png", slug(method))),
            method,
        )?;
        scores.draw_references(
            &batch,
            &input.name,
            &Picks::Outcomes,
            &dir.join(format!("reference_examples_{}.png", slug(method))),
            &format!("{method}: reference ± uncertainty and pulls, dataset {dataset}"),
        )?;
        Ok(())
    }
}

impl Stage for DqmCompare {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        classify(inputs, &self.methods)?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: summary(),
            },
            OutputSpec {
                name: "paired",
                schema: paired(),
            },
            OutputSpec {
                name: "differences",
                schema: differences(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let schemas: Vec<SchemaRef> = ctx.inputs.iter().map(|i| i.schema.clone()).collect();
        let (n_metrics, n_scores) = classify(&schemas, &self.methods)?;
        let names = self.names(ctx.inputs, n_metrics);
        let all = ctx.inputs[..n_metrics]
            .iter()
            .map(read_metrics)
            .collect::<Result<Vec<_>>>()?;
        let [summary_batch, paired_batch, differences_batch] = tables(&names, &all)?;
        for m in METRICS {
            let samples: Vec<(String, Vec<f64>)> = names
                .iter()
                .zip(&all)
                .map(|(name, values)| {
                    let v = values
                        .iter()
                        .filter(|(k, _)| k.1 == "continual" && k.2 == m)
                        .filter_map(|(_, v)| *v)
                        .collect();
                    (name.clone(), v)
                })
                .collect();
            plots::histograms(
                &ctx.artifacts.join(format!("distribution_{m}.png")),
                &format!("{m} over datasets (continual regime)"),
                m,
                &samples,
                30,
            )?;
        }
        if n_scores > 0 {
            for (input, name) in ctx.inputs[n_metrics..].iter().zip(&names) {
                self.plot_scores(input, name, ctx.artifacts)?;
            }
        }
        ctx.output.write("main", summary_batch)?;
        ctx.output.write("paired", paired_batch)?;
        ctx.output.write("differences", differences_batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};

    fn metrics_table(ba: &[(i64, f64)], ad: &[(i64, Option<f64>)]) -> RecordBatch {
        let n = ba.len();
        let none = || Arc::new(Float64Array::from(vec![None::<f64>; n])) as ArrayRef;
        RecordBatch::try_new(
            dqm_schemas::metrics::per_dataset(),
            vec![
                Arc::new(Int64Array::from_iter_values(ba.iter().map(|r| r.0))),
                Arc::new(StringArray::from(vec!["continual"; n])),
                Arc::new(Int64Array::from(vec![100; n])),
                Arc::new(Int64Array::from(vec![10; n])),
                Arc::new(Float64Array::from_iter_values(ba.iter().map(|r| r.1))),
                none(),
                none(),
                Arc::new(Float64Array::from_iter(ad.iter().map(|r| r.1))),
                Arc::new(Int64Array::from(vec![3; n])),
                none(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn medians_and_paired_differences_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let s = metrics_table(
            &[(0, 0.90), (1, 0.94), (2, 0.80)],
            &[(0, Some(2.0)), (1, Some(3.0)), (2, None)],
        );
        let ml = metrics_table(
            &[(0, 0.95), (1, 0.93), (2, 0.90)],
            &[(0, Some(1.0)), (1, Some(1.0)), (2, Some(5.0))],
        );
        let inputs = [
            input_from_batch("s_metrics", &s, &dir.path().join("s.parquet")).unwrap(),
            input_from_batch("ml_metrics", &ml, &dir.path().join("ml.parquet")).unwrap(),
        ];
        let stage = DqmCompare {
            methods: vec!["S".into(), "ML".into()],
            ..Default::default()
        };
        let out = run_in_memory(&stage, &inputs).unwrap();
        let main = out.table("main");
        let find = |batch: &RecordBatch, method: &str, metric: &str, col: &str| -> Option<f64> {
            let methods = batch.column_by_name("method").unwrap().as_string::<i32>();
            let metrics = batch.column_by_name("metric").unwrap().as_string::<i32>();
            let values = batch
                .column_by_name(col)
                .unwrap()
                .as_primitive::<Float64Type>();
            (0..batch.num_rows())
                .find(|&i| methods.value(i) == method && metrics.value(i) == metric)
                .and_then(|i| values.is_valid(i).then(|| values.value(i)))
        };
        assert_eq!(find(&main, "S", "balanced_accuracy", "median"), Some(0.90));
        assert_eq!(find(&main, "ML", "balanced_accuracy", "median"), Some(0.93));
        assert_eq!(find(&main, "S", "jaccard", "median"), None);
        let paired = out.table("paired");
        // Differences +0.05, -0.01, +0.10: median 0.05, ML better on 2 of 3.
        let median = find(&paired, "ML", "balanced_accuracy", "median").unwrap();
        assert!((median - 0.05).abs() < 1e-12, "{median}");
        let better = find(&paired, "ML", "balanced_accuracy", "fraction_better").unwrap();
        assert!((better - 2.0 / 3.0).abs() < 1e-12);
        // Adaptation time: lower is better; dataset 2 has no baseline value.
        let better = find(&paired, "ML", "adaptation_time", "fraction_better").unwrap();
        assert_eq!(better, 1.0);
        let diffs = out.table("differences");
        assert_eq!(diffs.num_rows(), 3 * METRICS.len());
    }

    #[test]
    fn inputs_are_checked() {
        let m = dqm_schemas::metrics::per_dataset();
        let runs = dqm_schemas::runs::schema();
        let stage = DqmCompare::default();
        let err = stage
            .outputs(std::slice::from_ref(&runs))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics"), "{err}");
        let err = stage
            .outputs(&[m.clone(), m.clone(), runs.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 metrics tables but 1 score tables"), "{err}");
        let named = DqmCompare {
            methods: vec!["only one".into()],
            ..Default::default()
        };
        let err = named.outputs(&[m.clone(), m]).unwrap_err().to_string();
        assert!(err.contains("methods"), "{err}");
    }
}
