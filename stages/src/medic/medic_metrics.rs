//! `medic_metrics`: the figures of merit of medic.txt section 4 on the
//! ensemble's predictions: 4-class accuracy of the majority vote (eq. 3.5),
//! macro one-vs-rest ROC AUC and Brier score of the ensemble mean (eq. 3.7),
//! binary (normal vs any glitch) accuracy and AUC, confusion matrices, ROC
//! curves, and PNG plots of them and of the training curves. The
//! statistics are [`crate::medic::metrics`]; this stage reads, writes and
//! plots them.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::input::Input;
use crate::medic::metrics::{
    Figures, INTERVAL_METRICS, Predictions, bootstrap_intervals, confusion, figures,
    majority_share, paper_protocol, tie_ceiling,
};
use crate::medic::tables::{
    CurvePoint, ModelSpec, WindowSpec, check_predictions, example_predictions_schema,
    read_predictions, read_training_curves,
};
use crate::plots::{self, Series};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::roc_curve;
use dqm_schemas::{column, nullable};

/// Scores MEDIC predictions (from `medic_infer`) against their soft labels.
///
/// Inputs: the predictions table, and optionally the training log
/// (`<train stage>.log`) for the training-curve plot.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MedicMetrics {
    /// Class index of the normal detector configuration (binary metrics:
    /// normal vs any glitch).
    pub normal_class: usize,
    /// Class names for the plots, in class-index order.
    pub class_names: Vec<String>,
    /// Write PNG plots (confusion matrices, ROC curves, training curves).
    pub plots: bool,
    /// Bootstrap resamples for the 95 % intervals (0: no intervals).
    /// Windows, in time order, are resampled in blocks of W consecutive
    /// ones, since neighbouring windows share W − 1 events.
    pub bootstrap: usize,
    /// Seed of the bootstrap resampling and of the paper-protocol subsamples.
    pub seed: u64,
    /// The paper's reporting (`paper_accuracy`): at most this many windows
    /// per argmax class, drawn at random.
    pub paper_per_class: usize,
}

impl Default for MedicMetrics {
    fn default() -> Self {
        Self {
            normal_class: 0,
            class_names: crate::medic::tables::strings(&crate::medic::tables::CLASSES),
            plots: true,
            bootstrap: 1000,
            seed: 0,
            paper_per_class: 3000,
        }
    }
}

impl StageConfig for MedicMetrics {
    const KIND: &'static str = "medic_metrics";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "MEDIC accuracy (majority vote), macro OvR AUC, Brier, binary accuracy/AUC with block-bootstrap 95 % intervals, the tie ceiling and chance baselines, confusion matrices, ROC curves and plots";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str = "predictions, optional training log";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_predictions_schema()]
    }
}

fn metrics_schema() -> SchemaRef {
    let mut fields = vec![
        nullable(
            "window",
            DataType::Int64,
            "W, events per window (from the window table)",
        ),
        nullable("folds", DataType::Int64, "Models in the ensemble"),
        column("windows", DataType::Int64, "Windows scored"),
        column(
            "accuracy",
            DataType::Float64,
            "Fraction of windows whose majority vote equals the argmax of the soft label (eq. 3.5)",
        ),
        nullable(
            "auc",
            DataType::Float64,
            "Macro one-vs-rest ROC AUC of the ensemble-mean probabilities against the argmax class (classes present only)",
        ),
        column(
            "brier",
            DataType::Float64,
            "Brier score of the ensemble mean vs the soft label: sum over classes, mean over windows (eq. 3.7)",
        ),
        column(
            "binary_accuracy",
            DataType::Float64,
            "Normal vs any glitch: vote != normal against argmax class != normal",
        ),
        nullable(
            "binary_auc",
            DataType::Float64,
            "ROC AUC of the anomaly score 1 − p(normal) for argmax class != normal",
        ),
        nullable(
            "binary_false_positive_rate",
            DataType::Float64,
            "Fraction of normal windows whose vote is a glitch",
        ),
        nullable(
            "binary_true_positive_rate",
            DataType::Float64,
            "Fraction of glitch windows whose vote is a glitch",
        ),
        column(
            "tie_ceiling",
            DataType::Float64,
            "Ceiling of `accuracy`: a classifier that knows every event's class still guesses among the classes tied for the largest fraction, so it scores the mean of 1 / (classes tied) over the windows",
        ),
        column(
            "chance_accuracy",
            DataType::Float64,
            "Baseline of `accuracy`: always voting the most frequent true class of these windows",
        ),
        column(
            "binary_baseline_accuracy",
            DataType::Float64,
            "Baseline of `binary_accuracy`: always voting the more frequent of normal and glitch",
        ),
        column(
            "paper_accuracy",
            DataType::Float64,
            "The paper's reporting: accuracy of the argmax of the ensemble-mean probabilities on at most `paper_per_class` random windows per argmax class",
        ),
        nullable(
            "paper_binary_accuracy",
            DataType::Float64,
            "The paper's binary reporting: normal and glitch windows 50/50 (all of the rarer, as many random ones of the other), glitch called when the argmax of the mean probabilities is not normal; baseline 0.5",
        ),
    ];
    for metric in INTERVAL_METRICS {
        for (end, q) in [("lo", "2.5"), ("hi", "97.5")] {
            fields.push(nullable(
                &format!("{metric}_{end}"),
                DataType::Float64,
                &format!(
                    "{q} percentile of `{metric}` over block-bootstrap resamples of the windows (null without `bootstrap`)"
                )));
        }
    }
    Arc::new(Schema::new(fields))
}

fn confusion_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("matrix", DataType::Utf8, "multiclass or binary"),
        column(
            "true_class",
            DataType::Int64,
            "Argmax class of the soft label (binary: 1 = glitch)",
        ),
        column(
            "predicted_class",
            DataType::Int64,
            "Majority vote (binary: 1 = glitch)",
        ),
        column("count", DataType::Int64, "Windows"),
    ]))
}

fn roc_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column(
            "curve",
            DataType::Utf8,
            "class_<c> (one-vs-rest on prob_<c>) or binary (anomaly score)",
        ),
        column(
            "threshold",
            DataType::Float64,
            "Flag windows with score >= threshold",
        ),
        column(
            "false_positive_rate",
            DataType::Float64,
            "At this threshold",
        ),
        column("true_positive_rate", DataType::Float64, "At this threshold"),
    ]))
}

/// A ROC curve with its name: (threshold, FPR, TPR) points.
type NamedCurve = (String, Vec<(f64, f64, f64)>);

/// Everything the `main` row holds besides the window and fold counts.
struct Summary {
    windows: usize,
    figures: Figures,
    /// `[lo, hi]` of each of [`INTERVAL_METRICS`].
    intervals: [[Option<f64>; 2]; 5],
    tie_ceiling: f64,
    chance: f64,
    binary_baseline: f64,
    paper_accuracy: f64,
    paper_binary: Option<f64>,
}

impl Summary {
    /// The log line: the figures with their intervals beside the ceiling
    /// and the baselines.
    fn headline(&self) -> String {
        let figures: Vec<String> = INTERVAL_METRICS
            .iter()
            .zip(self.figures.with_intervals())
            .zip(&self.intervals)
            .map(|((name, value), interval)| {
                let value = value.map_or("n/a".into(), |v| format!("{v:.3}"));
                match interval {
                    [Some(lo), Some(hi)] => format!("{name} {value} [{lo:.3}, {hi:.3}]"),
                    _ => format!("{name} {value}"),
                }
            })
            .collect();
        format!(
            "{} windows: {}; tie ceiling {:.3}, most frequent class {:.3}, always the binary majority {:.3}; paper's protocol: accuracy {:.3}, binary 50/50 {}",
            self.windows,
            figures.join(", "),
            self.tie_ceiling,
            self.chance,
            self.binary_baseline,
            self.paper_accuracy,
            self.paper_binary
                .map_or("n/a".into(), |v| format!("{v:.3}")),
        )
    }

    /// The one row of the `main` table.
    fn batch(&self, window: Option<i64>, folds: Option<i64>) -> Result<RecordBatch> {
        let fig = &self.figures;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![window])),
            Arc::new(Int64Array::from(vec![folds])),
            Arc::new(Int64Array::from(vec![self.windows as i64])),
            Arc::new(Float64Array::from(vec![fig.accuracy])),
            Arc::new(Float64Array::from(vec![fig.auc])),
            Arc::new(Float64Array::from(vec![fig.brier])),
            Arc::new(Float64Array::from(vec![fig.binary_accuracy])),
            Arc::new(Float64Array::from(vec![fig.binary_auc])),
            Arc::new(Float64Array::from(vec![fig.binary_fpr])),
            Arc::new(Float64Array::from(vec![fig.binary_tpr])),
            Arc::new(Float64Array::from(vec![self.tie_ceiling])),
            Arc::new(Float64Array::from(vec![self.chance])),
            Arc::new(Float64Array::from(vec![self.binary_baseline])),
            Arc::new(Float64Array::from(vec![self.paper_accuracy])),
            Arc::new(Float64Array::from(vec![self.paper_binary])),
        ];
        for [lo, hi] in self.intervals {
            columns.push(Arc::new(Float64Array::from(vec![lo])));
            columns.push(Arc::new(Float64Array::from(vec![hi])));
        }
        Ok(RecordBatch::try_new(metrics_schema(), columns)?)
    }
}

/// The `confusion` table of the multiclass and binary matrices.
fn confusion_batch(matrices: [(&str, &[Vec<u64>]); 2]) -> Result<RecordBatch> {
    let (mut kind, mut t, mut pr, mut count) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, m) in matrices {
        for (i, row) in m.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                kind.push(name);
                t.push(i as i64);
                pr.push(j as i64);
                count.push(c as i64);
            }
        }
    }
    Ok(RecordBatch::try_new(
        confusion_schema(),
        vec![
            Arc::new(StringArray::from(kind)),
            Arc::new(Int64Array::from(t)),
            Arc::new(Int64Array::from(pr)),
            Arc::new(Int64Array::from(count)),
        ],
    )?)
}

/// The `roc` table of every curve's points.
fn roc_batch(curves: &[NamedCurve]) -> Result<RecordBatch> {
    let (mut name, mut thr, mut fpr, mut tpr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (curve, points) in curves {
        for &(th, f, tp) in points {
            name.push(curve.clone());
            thr.push(th);
            fpr.push(f);
            tpr.push(tp);
        }
    }
    Ok(RecordBatch::try_new(
        roc_schema(),
        vec![
            Arc::new(StringArray::from(name)),
            Arc::new(Float64Array::from(thr)),
            Arc::new(Float64Array::from(fpr)),
            Arc::new(Float64Array::from(tpr)),
        ],
    )?)
}

impl MedicMetrics {
    fn names(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|c| {
                self.class_names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class {c}"))
            })
            .collect()
    }

    /// The figures, their intervals, the ceiling and the baselines; `window`
    /// (W) is the bootstrap's block length.
    fn summary(&self, p: &Predictions, window: Option<i64>) -> Summary {
        let (paper_accuracy, paper_binary) =
            paper_protocol(p, self.normal_class, self.paper_per_class, self.seed);
        Summary {
            windows: p.len(),
            figures: figures(p, self.normal_class),
            intervals: bootstrap_intervals(
                p,
                self.normal_class,
                window.unwrap_or(1) as usize,
                self.bootstrap,
                self.seed,
            ),
            tie_ceiling: tie_ceiling(&p.truth),
            chance: majority_share(p.argmax.iter().copied()),
            binary_baseline: majority_share(
                p.argmax
                    .iter()
                    .map(|&a| usize::from(a != self.normal_class)),
            ),
            paper_accuracy,
            paper_binary,
        }
    }

    /// The multiclass and the binary (normal vs glitch) confusion matrices.
    fn confusions(&self, p: &Predictions) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
        let multi = confusion(&p.argmax, &p.vote, p.prob.len());
        let glitch = |v: &Vec<usize>| {
            v.iter()
                .map(|&c| usize::from(c != self.normal_class))
                .collect::<Vec<_>>()
        };
        let binary = confusion(&glitch(&p.argmax), &glitch(&p.vote), 2);
        (multi, binary)
    }

    /// One-vs-rest ROC curves per class, then the binary anomaly score's.
    fn roc_curves(&self, p: &Predictions) -> Vec<NamedCurve> {
        let mut curves: Vec<NamedCurve> = (0..p.prob.len())
            .map(|c| {
                let positive: Vec<bool> = p.argmax.iter().map(|&a| a == c).collect();
                (format!("class_{c}"), roc_curve(&p.prob[c], &positive))
            })
            .collect();
        let score: Vec<f64> = p.prob[self.normal_class].iter().map(|q| 1.0 - q).collect();
        let glitch_truth: Vec<bool> = p.argmax.iter().map(|&a| a != self.normal_class).collect();
        curves.push(("binary".into(), roc_curve(&score, &glitch_truth)));
        curves
    }

    /// Confusion matrices, ROC curves and (with a log input) training curves.
    fn plot(
        &self,
        ctx: &RunContext<'_>,
        window: Option<i64>,
        (multi, binary): (&[Vec<u64>], &[Vec<u64>]),
        curves: &[NamedCurve],
    ) -> Result<()> {
        let nc = multi.len();
        let names = self.names(nc);
        let w = window.map_or(String::new(), |w| format!(" (W = {w})"));
        plots::confusion(
            &ctx.artifacts.join("confusion_multiclass.png"),
            &format!("MEDIC ensemble{w}"),
            &names,
            multi,
        )?;
        plots::confusion(
            &ctx.artifacts.join("confusion_binary.png"),
            &format!("normal vs glitch{w}"),
            &[names[self.normal_class].clone(), "glitch".into()],
            binary,
        )?;
        let series: Vec<Series> = curves
            .iter()
            .enumerate()
            .filter(|(_, (_, pts))| !pts.is_empty())
            .map(|(c, (curve, pts))| Series {
                name: if c < nc {
                    names[c].clone()
                } else {
                    curve.clone()
                },
                points: pts.iter().map(|&(_, f, t)| (f, t)).collect(),
            })
            .collect();
        plots::lines(
            &ctx.artifacts.join("roc.png"),
            &format!("ROC curves{w}"),
            "false-positive rate",
            "true-positive rate",
            &series,
            true,
        )?;
        if let Some(log) = ctx.inputs.get(1) {
            training_plot(log, ctx.artifacts)?;
        }
        Ok(())
    }
}

/// Training and validation KL per epoch, one curve per fold and part.
fn training_plot(log: &Input, dir: &std::path::Path) -> Result<()> {
    let points = read_training_curves(log)?;
    let mut series: Vec<Series> = Vec::new();
    // Every fold's training curve, then every fold's validation curve.
    let train = |p: &CurvePoint| p.train_kl;
    let val = |p: &CurvePoint| p.val_kl;
    for (kind, value) in [
        ("train", &train as &dyn Fn(&CurvePoint) -> f64),
        ("val", &val),
    ] {
        for point in &points {
            let label = format!("fold {} {kind}", point.fold);
            let xy = (point.epoch as f64, value(point));
            match series.iter_mut().find(|s| s.name == label) {
                Some(s) => s.points.push(xy),
                None => series.push(Series {
                    name: label,
                    points: vec![xy],
                }),
            }
        }
    }
    plots::lines(
        &dir.join("training_curves.png"),
        "MEDIC training",
        "epoch",
        "KL divergence",
        &series,
        false,
    )
}

impl Stage for MedicMetrics {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let nc = check_predictions(&inputs[0], "predictions")?;
        if self.normal_class >= nc {
            return Err(StageError::param(
                "normal_class",
                format!("must be below the {nc} classes of the predictions"),
            ));
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: metrics_schema(),
            },
            OutputSpec {
                name: "confusion",
                schema: confusion_schema(),
            },
            OutputSpec {
                name: "roc",
                schema: roc_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let p = read_predictions(input)?;
        let window = WindowSpec::from_schema(&input.schema, &input.name)
            .ok()
            .map(|w| w.window as i64);
        let folds = ModelSpec::from_schema(&input.schema, &input.name)
            .ok()
            .map(|s| s.folds as i64);
        let summary = self.summary(&p, window);
        ctx.reporter.info(&summary.headline());
        ctx.output.write("main", summary.batch(window, folds)?)?;
        let (multi, binary) = self.confusions(&p);
        ctx.output.write(
            "confusion",
            confusion_batch([("multiclass", &multi), ("binary", &binary)])?,
        )?;
        let curves = self.roc_curves(&p);
        ctx.output.write("roc", roc_batch(&curves)?)?;
        if self.plots {
            self.plot(ctx, window, (&multi, &binary), &curves)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    #[test]
    fn metrics_stage_writes_tables_and_plots() {
        let p = crate::medic::test_support::hand_made_predictions();
        let schema = {
            let mut fields = vec![];
            for c in 0..2 {
                fields.push(arrow::datatypes::Field::new(
                    format!("p_{c}"),
                    DataType::Float64,
                    false,
                ));
            }
            fields.push(arrow::datatypes::Field::new(
                "argmax_class",
                DataType::Int8,
                false,
            ));
            for c in 0..2 {
                fields.push(arrow::datatypes::Field::new(
                    format!("prob_{c}"),
                    DataType::Float64,
                    false,
                ));
            }
            fields.push(arrow::datatypes::Field::new("vote", DataType::Int8, false));
            for c in ["start", "window_id"] {
                fields.push(arrow::datatypes::Field::new(c, DataType::Int64, false));
            }
            Arc::new(Schema::new(fields))
        };
        let i8s = |v: &[usize]| {
            Arc::new(arrow::array::Int8Array::from_iter_values(
                v.iter().map(|&x| x as i8),
            )) as ArrayRef
        };
        let f64s = |v: &[f64]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                f64s(&p.truth[0]),
                f64s(&p.truth[1]),
                i8s(&p.argmax),
                f64s(&p.prob[0]),
                f64s(&p.prob[1]),
                i8s(&p.vote),
                Arc::new(Int64Array::from(p.start.clone())),
                Arc::new(Int64Array::from(p.window_id.clone())),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = crate::in_memory::input_from_batch(
            "predictions",
            &batch,
            &dir.path().join("p.parquet"),
        )
        .unwrap();
        let stage = MedicMetrics {
            class_names: vec!["normal".into(), "glitch".into()],
            ..Default::default()
        };
        let out = crate::in_memory::run_in_memory(&stage, &[input]).unwrap();
        let m = out.table("main");
        assert_eq!(m.column(3).as_primitive::<Float64Type>().value(0), 0.75);
        assert!(m.column(0).is_null(0), "no window metadata: W unknown");
        let col = |name: &str| {
            m.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .value(0)
        };
        // Windows (1,0) (.6,.4) (.2,.8) (0,1): no ties; classes 2:2; binary 2:2.
        assert_eq!(col("tie_ceiling"), 1.0);
        assert_eq!(col("chance_accuracy"), 0.5);
        assert_eq!(col("binary_baseline_accuracy"), 0.5);
        assert!(col("accuracy_lo") <= 0.75 && col("accuracy_hi") >= 0.75);
        assert_eq!(out.table("confusion").num_rows(), 4 + 4);
        let roc = out.table("roc");
        let curves = roc.column(0).as_string::<i32>();
        assert!((0..roc.num_rows()).any(|i| curves.value(i) == "binary"));
    }
}
