//! `medic_compare`: two sets of predictions of the same windows side by
//! side — a model and its reference (the ensemble a student replaces, the
//! physics rule, another recipe) — with the paired difference of every
//! figure of merit and its block-bootstrap interval. Reading two
//! `medic_metrics` rows side by side overstates the uncertainty of a
//! difference (both intervals carry the windows' own difficulty) and says
//! nothing about its sign; resampling the same windows for both does.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::medic::metrics::{INTERVAL_METRICS, Paired, Predictions, paired_differences};
use crate::medic::tables::{
    WindowSpec, check_predictions, example_predictions_schema, read_predictions,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::{column, nullable};

/// Compares a model's predictions with a reference's on the same windows.
///
/// Inputs: the model's predictions table and the reference's (`medic_infer`
/// or `medic_baseline`), scoring the same windows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MedicCompare {
    /// Class index of the normal detector configuration (binary figures).
    pub normal_class: usize,
    /// Bootstrap resamples for the intervals of the differences. Windows,
    /// in time order, are resampled in blocks of W consecutive ones (W from
    /// the window table), the same windows for both inputs.
    pub bootstrap: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for MedicCompare {
    fn default() -> Self {
        Self {
            normal_class: 0,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

impl StageConfig for MedicCompare {
    const KIND: &'static str = "medic_compare";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "MEDIC predictions of a model against a reference on the same windows: every figure of both, their paired difference and its block-bootstrap 95 % interval";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "model predictions, reference predictions";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_predictions_schema(), example_predictions_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.bootstrap == 0 {
            return Err(StageError::param(
                "bootstrap",
                "must be at least 1: the intervals are what this stage adds",
            ));
        }
        Ok(())
    }
}

fn comparison_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column(
            "metric",
            DataType::Utf8,
            "accuracy, auc, brier, binary_accuracy or binary_auc (as in medic_metrics)",
        ),
        column("windows", DataType::Int64, "Windows both inputs score"),
        nullable("model", DataType::Float64, "The figure of the first input"),
        nullable(
            "reference",
            DataType::Float64,
            "The figure of the second input",
        ),
        nullable(
            "difference",
            DataType::Float64,
            "model − reference (for brier, lower is better: a negative difference favours the model)",
        ),
        nullable(
            "difference_lo",
            DataType::Float64,
            "2.5 percentile of the difference over block-bootstrap resamples drawing the same windows for both (null where a resample leaves the figure undefined)",
        ),
        nullable(
            "difference_hi",
            DataType::Float64,
            "97.5 percentile of the difference over the same resamples",
        ),
    ]))
}

/// `reference`'s rows in the order of `model`'s windows: both inputs must
/// score exactly the same windows, with the same soft labels.
fn aligned(
    model: &Predictions,
    reference: Predictions,
    names: (&str, &str),
) -> Result<Predictions> {
    let (model_ids, reference_ids) = (&model.window_id, &reference.window_id);
    let row_of: HashMap<i64, usize> = reference_ids
        .iter()
        .enumerate()
        .map(|(row, &id)| (id, row))
        .collect();
    if row_of.len() != reference_ids.len() || reference_ids.len() != model_ids.len() {
        return Err(StageError::data(format!(
            "inputs `{}` ({} rows) and `{}` ({} rows) do not score the same windows once each",
            names.0,
            model_ids.len(),
            names.1,
            reference_ids.len()
        )));
    }
    let mut order = Vec::with_capacity(model_ids.len());
    for &id in model_ids.iter() {
        let row = row_of.get(&id).ok_or_else(|| {
            StageError::data(format!(
                "input `{}` has no prediction for window {id} of input `{}`: compare predictions of the same windows",
                names.1, names.0
            ))
        })?;
        order.push(*row);
    }
    let reference = reference.subset(&order);
    let same_labels = (0..model.len()).all(|i| {
        reference.start[i] == model.start[i]
            && reference
                .truth
                .iter()
                .zip(&model.truth)
                .all(|(r, m)| r[i] == m[i])
    });
    if !same_labels {
        return Err(StageError::data(format!(
            "inputs `{}` and `{}`: windows with the same id have other labels or positions (made by different `sliding_windows` runs?)",
            names.0, names.1
        )));
    }
    Ok(reference)
}

impl Stage for MedicCompare {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let nc = check_predictions(&inputs[0], "model")?;
        let other = check_predictions(&inputs[1], "reference")?;
        if nc != other {
            return Err(StageError::data(format!(
                "input `model` has {nc} classes, input `reference` {other}"
            )));
        }
        if self.normal_class >= nc {
            return Err(StageError::param(
                "normal_class",
                format!("must be below the {nc} classes of the predictions"),
            ));
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: comparison_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (a, b) = (&ctx.inputs[0], &ctx.inputs[1]);
        let model = read_predictions(a)?;
        let reference = aligned(&model, read_predictions(b)?, (&a.name, &b.name))?;
        // Neighbouring windows share W − 1 events: blocks of W.
        let block = WindowSpec::from_schema(&a.schema, &a.name).map_or(1, |w| w.window);
        let paired = paired_differences(
            &model,
            &reference,
            self.normal_class,
            block,
            self.bootstrap,
            self.seed,
        );
        ctx.reporter.info(&headline(&paired, model.len()));
        ctx.output
            .write("main", comparison_batch(&paired, model.len())?)?;
        Ok(())
    }
}

/// The log line: each figure of both and the difference with its interval.
fn headline(paired: &[Paired; 5], windows: usize) -> String {
    let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    let figures: Vec<String> = INTERVAL_METRICS
        .iter()
        .zip(paired)
        .map(|(name, p)| {
            format!(
                "{name} {} vs {}: {} [{}, {}]",
                f(p.model),
                f(p.reference),
                f(p.difference),
                f(p.interval[0]),
                f(p.interval[1])
            )
        })
        .collect();
    format!(
        "{windows} windows, model vs reference, difference [95 %]: {}",
        figures.join("; ")
    )
}

fn comparison_batch(paired: &[Paired; 5], windows: usize) -> Result<RecordBatch> {
    let column = |f: fn(&Paired) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(paired.iter().map(f)))
    };
    Ok(RecordBatch::try_new(
        comparison_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(INTERVAL_METRICS)),
            Arc::new(Int64Array::from(vec![windows as i64; paired.len()])),
            column(|p| p.model),
            column(|p| p.reference),
            column(|p| p.difference),
            column(|p| p.interval[0]),
            column(|p| p.interval[1]),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use arrow::array::{AsArray, Int8Array};
    use arrow::datatypes::Float64Type;

    /// A predictions table of four windows (two classes, W = 2 in its
    /// metadata): window ids `ids`, votes `votes`, every window's label
    /// class 0 for the first two and class 1 for the last two.
    fn predictions(dir: &std::path::Path, name: &str, ids: [i64; 4], votes: [i8; 4]) -> Input {
        let windows = crate::medic::tables::windows_schema(&WindowSpec {
            window: 2,
            n_classes: 2,
            ..Default::default()
        });
        let schema = crate::medic::tables::predictions_schema(
            2,
            crate::medic::tables::carried_metadata(&windows, &windows),
        );
        // Labels and start positions follow the window id, as in a window table.
        let label = |id: i64| if id < 2 { 0.0 } else { 1.0 };
        let p1: Vec<f64> = ids.iter().map(|&id| label(id)).collect();
        let prob1: Vec<f64> = votes.iter().map(|&v| 0.2 + 0.6 * v as f64).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(vec!["test"; 4])),
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Float64Array::from_iter_values(p1.iter().map(|p| 1.0 - p))),
            Arc::new(Float64Array::from(p1.clone())),
            Arc::new(Int8Array::from_iter_values(p1.iter().map(|&p| p as i8))),
            Arc::new(Float64Array::from_iter_values(
                prob1.iter().map(|p| 1.0 - p),
            )),
            Arc::new(Float64Array::from(prob1.clone())),
            Arc::new(Int8Array::from(votes.to_vec())),
            Arc::new(Float64Array::from(vec![1.0; 4])),
            Arc::new(Float64Array::from(prob1)),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        input_from_batch(name, &batch, &dir.join(format!("{name}.parquet"))).unwrap()
    }

    /// The reference in another row order is paired by window id: the
    /// model is right on all four windows, the reference on windows 0, 2
    /// and 3.
    #[test]
    fn pairs_windows_by_id_and_differences_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let model = predictions(dir.path(), "student", [0, 1, 2, 3], [0, 0, 1, 1]);
        let reference = predictions(dir.path(), "ensemble", [3, 1, 0, 2], [1, 1, 0, 1]);
        let stage = MedicCompare {
            bootstrap: 300,
            ..Default::default()
        };
        let schemas = [model.schema.clone(), reference.schema.clone()];
        stage.outputs(&schemas).unwrap();
        let out = run_in_memory(&stage, &[model.clone(), reference]).unwrap();
        let t = out.table("main");
        assert_eq!(t.num_rows(), 5);
        let col = |n: &str| {
            t.column_by_name(n)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        assert_eq!(t.column(0).as_string::<i32>().value(0), "accuracy");
        assert_eq!(col("model").value(0), 1.0);
        assert_eq!(col("reference").value(0), 0.75);
        assert_eq!(col("difference").value(0), 0.25);
        // The model is never worse on any window: no resample favours the reference.
        assert!(col("difference_lo").value(0) >= 0.0);
        assert!(col("difference_hi").value(0) >= 0.25);
        // Brier: model (0.2² · 2) per window, reference the same except
        // window 1 at 0.8² · 2.
        let want: f64 = 0.08 - (0.08 * 3.0 + 1.28) / 4.0;
        assert!((col("difference").value(2) - want).abs() < 1e-12);

        // Windows the other input does not score are refused by name.
        let other = predictions(dir.path(), "elsewhere", [0, 1, 2, 7], [0, 0, 1, 1]);
        let err = run_in_memory(&stage, &[model, other])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`elsewhere` has no prediction for window"),
            "{err}"
        );
        let e = MedicCompare {
            bootstrap: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("bootstrap"), "{e}");
    }
}
