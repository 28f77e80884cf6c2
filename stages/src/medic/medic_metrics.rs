//! `medic_metrics`: the figures of merit of medic.txt section 4 on the
//! ensemble's predictions: 4-class accuracy of the majority vote (eq. 3.5),
//! macro one-vs-rest ROC AUC and Brier score of the ensemble mean (eq. 3.7),
//! binary (normal vs any glitch) accuracy and AUC, confusion matrices, ROC
//! curves, and PNG plots of them and of the training curves.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int8Type, Int32Type, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::medic::tables::{ModelSpec, WindowSpec, example_predictions_schema};
use crate::plots::{self, Series};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::{median_and_95, roc_auc, roc_curve};
use dqm_schemas::doc_field;

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

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_predictions_schema()]
    }
}

fn metrics_schema() -> SchemaRef {
    let f = |name, t, nullable, doc| doc_field(name, t, nullable, doc);
    let mut fields = vec![
        f(
            "window",
            DataType::Int64,
            true,
            "W, events per window (from the window table)",
        ),
        f("folds", DataType::Int64, true, "Models in the ensemble"),
        f("windows", DataType::Int64, false, "Windows scored"),
        f(
            "accuracy",
            DataType::Float64,
            false,
            "Fraction of windows whose majority vote equals the argmax of the soft label (eq. 3.5)",
        ),
        f(
            "auc",
            DataType::Float64,
            true,
            "Macro one-vs-rest ROC AUC of the ensemble-mean probabilities against the argmax class (classes present only)",
        ),
        f(
            "brier",
            DataType::Float64,
            false,
            "Brier score of the ensemble mean vs the soft label: sum over classes, mean over windows (eq. 3.7)",
        ),
        f(
            "binary_accuracy",
            DataType::Float64,
            false,
            "Normal vs any glitch: vote != normal against argmax class != normal",
        ),
        f(
            "binary_auc",
            DataType::Float64,
            true,
            "ROC AUC of the anomaly score 1 − p(normal) for argmax class != normal",
        ),
        f(
            "binary_false_positive_rate",
            DataType::Float64,
            true,
            "Fraction of normal windows whose vote is a glitch",
        ),
        f(
            "binary_true_positive_rate",
            DataType::Float64,
            true,
            "Fraction of glitch windows whose vote is a glitch",
        ),
        f(
            "tie_ceiling",
            DataType::Float64,
            false,
            "Ceiling of `accuracy`: a classifier that knows every event's class still guesses among the classes tied for the largest fraction, so it scores the mean of 1 / (classes tied) over the windows",
        ),
        f(
            "chance_accuracy",
            DataType::Float64,
            false,
            "Baseline of `accuracy`: always voting the most frequent true class of these windows",
        ),
        f(
            "binary_baseline_accuracy",
            DataType::Float64,
            false,
            "Baseline of `binary_accuracy`: always voting the more frequent of normal and glitch",
        ),
        f(
            "paper_accuracy",
            DataType::Float64,
            false,
            "The paper's reporting: accuracy of the argmax of the ensemble-mean probabilities on at most `paper_per_class` random windows per argmax class",
        ),
        f(
            "paper_binary_accuracy",
            DataType::Float64,
            true,
            "The paper's binary reporting: normal and glitch windows 50/50 (all of the rarer, as many random ones of the other), glitch called when the argmax of the mean probabilities is not normal; baseline 0.5",
        ),
    ];
    for metric in INTERVAL_METRICS {
        for (end, q) in [("lo", "2.5"), ("hi", "97.5")] {
            fields.push(doc_field(
                &format!("{metric}_{end}"),
                DataType::Float64,
                true,
                &format!(
                    "{q} percentile of `{metric}` over block-bootstrap resamples of the windows (null without `bootstrap`)"
                ),
            ));
        }
    }
    Arc::new(Schema::new(fields))
}

fn confusion_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        doc_field("matrix", DataType::Utf8, false, "multiclass or binary"),
        doc_field(
            "true_class",
            DataType::Int64,
            false,
            "Argmax class of the soft label (binary: 1 = glitch)",
        ),
        doc_field(
            "predicted_class",
            DataType::Int64,
            false,
            "Majority vote (binary: 1 = glitch)",
        ),
        doc_field("count", DataType::Int64, false, "Windows"),
    ]))
}

fn roc_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        doc_field(
            "curve",
            DataType::Utf8,
            false,
            "class_<c> (one-vs-rest on prob_<c>) or binary (anomaly score)",
        ),
        doc_field(
            "threshold",
            DataType::Float64,
            false,
            "Flag windows with score >= threshold",
        ),
        doc_field(
            "false_positive_rate",
            DataType::Float64,
            false,
            "At this threshold",
        ),
        doc_field(
            "true_positive_rate",
            DataType::Float64,
            false,
            "At this threshold",
        ),
    ]))
}

/// A ROC curve with its name: (threshold, FPR, TPR) points.
type NamedCurve = (String, Vec<(f64, f64, f64)>);

/// The columns of a predictions table, read into memory.
pub struct Predictions {
    pub truth: Vec<Vec<f64>>,
    pub argmax: Vec<usize>,
    pub prob: Vec<Vec<f64>>,
    pub vote: Vec<usize>,
    /// Position of each window's first event: windows in time order.
    pub start: Vec<i64>,
}

fn n_classes(schema: &SchemaRef) -> usize {
    (0..)
        .take_while(|c| schema.index_of(&format!("prob_{c}")).is_ok())
        .count()
}

fn check_predictions(schema: &SchemaRef, input: &str) -> Result<usize> {
    let why = "medic_metrics reads the predictions of `medic_infer`";
    let nc = n_classes(schema);
    if nc < 2 {
        return Err(StageError::MissingColumn {
            input: input.into(),
            column: "prob_0, prob_1, ...".into(),
            why: why.into(),
        });
    }
    let f64_ = |t: &DataType| t == &DataType::Float64;
    for c in 0..nc {
        require_column(schema, input, &format!("p_{c}"), why, "Float64", f64_)?;
        require_column(schema, input, &format!("prob_{c}"), why, "Float64", f64_)?;
    }
    for c in ["argmax_class", "vote"] {
        require_column(schema, input, c, why, "Int8", |t| t == &DataType::Int8)?;
    }
    require_column(schema, input, "start", why, "Int64", |t| {
        t == &DataType::Int64
    })?;
    Ok(nc)
}

impl Predictions {
    pub fn read(input: &Input) -> Result<Self> {
        let nc = check_predictions(&input.schema, &input.name)?;
        let mut p = Predictions {
            truth: vec![Vec::new(); nc],
            argmax: Vec::new(),
            prob: vec![Vec::new(); nc],
            vote: Vec::new(),
            start: Vec::new(),
        };
        for batch in input.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("checked").clone();
            for c in 0..nc {
                p.truth[c].extend(
                    col(&format!("p_{c}"))
                        .as_primitive::<Float64Type>()
                        .values(),
                );
                p.prob[c].extend(
                    col(&format!("prob_{c}"))
                        .as_primitive::<Float64Type>()
                        .values(),
                );
            }
            p.argmax.extend(
                col("argmax_class")
                    .as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .map(|&v| v as usize),
            );
            p.start
                .extend(col("start").as_primitive::<Int64Type>().values());
            p.vote.extend(
                col("vote")
                    .as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .map(|&v| v as usize),
            );
        }
        if p.vote.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no predictions",
                input.name
            )));
        }
        if let Some(i) = (0..p.vote.len()).find(|&i| p.argmax[i] >= nc || p.vote[i] >= nc) {
            return Err(StageError::data(format!(
                "input `{}`: row {i} has a class outside 0..{nc}",
                input.name
            )));
        }
        Ok(p)
    }

    pub fn len(&self) -> usize {
        self.vote.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vote.is_empty()
    }
}

/// The headline figures of one set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub accuracy: f64,
    pub auc: Option<f64>,
    pub brier: f64,
    pub binary_accuracy: f64,
    pub binary_auc: Option<f64>,
    pub binary_fpr: Option<f64>,
    pub binary_tpr: Option<f64>,
}

/// The figures given a bootstrap interval, in the order of
/// [`Figures::with_intervals`] and of the `<metric>_lo/_hi` columns.
const INTERVAL_METRICS: [&str; 5] = ["accuracy", "auc", "brier", "binary_accuracy", "binary_auc"];

impl Figures {
    /// The values of [`INTERVAL_METRICS`], `None` where undefined.
    fn with_intervals(&self) -> [Option<f64>; 5] {
        [
            Some(self.accuracy),
            self.auc,
            Some(self.brier),
            Some(self.binary_accuracy),
            self.binary_auc,
        ]
    }
}

/// Computes the figures of medic.txt section 4 (see the metrics table's docs).
pub fn figures(p: &Predictions, normal: usize) -> Figures {
    let n = p.len() as f64;
    let nc = p.prob.len();
    let accuracy = (0..p.len()).filter(|&i| p.vote[i] == p.argmax[i]).count() as f64 / n;
    let aucs: Vec<f64> = (0..nc)
        .filter_map(|c| {
            let positive: Vec<bool> = p.argmax.iter().map(|&a| a == c).collect();
            roc_auc(&p.prob[c], &positive)
        })
        .collect();
    let auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);
    let brier = (0..p.len())
        .map(|i| {
            (0..nc)
                .map(|c| (p.prob[c][i] - p.truth[c][i]).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n;
    let glitch: Vec<bool> = p.argmax.iter().map(|&a| a != normal).collect();
    let flagged: Vec<bool> = p.vote.iter().map(|&v| v != normal).collect();
    let binary_accuracy = glitch.iter().zip(&flagged).filter(|(a, b)| a == b).count() as f64 / n;
    let score: Vec<f64> = p.prob[normal].iter().map(|q| 1.0 - q).collect();
    let binary_auc = roc_auc(&score, &glitch);
    let (tpr, specificity, _) = crate::stats::rates(&flagged, &glitch);
    Figures {
        accuracy,
        auc,
        brier,
        binary_accuracy,
        binary_auc,
        binary_fpr: specificity.map(|s| 1.0 - s),
        binary_tpr: tpr,
    }
}

/// Accuracy ceiling of the argmax-of-counts label: the mean over windows of
/// 1 / (number of classes tied for the largest fraction).
pub fn tie_ceiling(truth: &[Vec<f64>]) -> f64 {
    let n = truth.first().map_or(0, Vec::len);
    if n == 0 {
        return 0.0;
    }
    (0..n)
        .map(|i| {
            let max = truth.iter().map(|c| c[i]).fold(f64::MIN, f64::max);
            let tied = truth.iter().filter(|c| (c[i] - max).abs() < 1e-9).count();
            1.0 / tied as f64
        })
        .sum::<f64>()
        / n as f64
}

/// The paper's reporting protocol: (accuracy of the argmax of the mean
/// probabilities on ≤ `per_class` random windows of each argmax class,
/// binary accuracy of that argmax on a 50/50 random subsample of normal and
/// glitch windows — `None` without both).
pub fn paper_protocol(
    p: &Predictions,
    normal: usize,
    per_class: usize,
    seed: u64,
) -> (f64, Option<f64>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9A9E5);
    let nc = p.prob.len();
    let predicted: Vec<usize> = (0..p.len())
        .map(|i| {
            (0..nc)
                .max_by(|&a, &b| p.prob[a][i].total_cmp(&p.prob[b][i]).then(b.cmp(&a)))
                .unwrap_or(0)
        })
        .collect();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); nc];
    for (i, &a) in p.argmax.iter().enumerate() {
        by_class[a].push(i);
    }
    let (mut right, mut n) = (0usize, 0usize);
    for members in &mut by_class {
        members.shuffle(&mut rng);
        for &i in members.iter().take(per_class) {
            right += usize::from(predicted[i] == p.argmax[i]);
            n += 1;
        }
    }
    let accuracy = right as f64 / n.max(1) as f64;
    let (mut normal_rows, mut glitch_rows): (Vec<usize>, Vec<usize>) =
        (0..p.len()).partition(|&i| p.argmax[i] == normal);
    let m = normal_rows.len().min(glitch_rows.len());
    let binary = (m > 0).then(|| {
        normal_rows.shuffle(&mut rng);
        glitch_rows.shuffle(&mut rng);
        let right = normal_rows[..m]
            .iter()
            .chain(&glitch_rows[..m])
            .filter(|&&i| (predicted[i] != normal) == (p.argmax[i] != normal))
            .count();
        right as f64 / (2 * m) as f64
    });
    (accuracy, binary)
}

/// Share of the most frequent value of `labels` (the always-guess-it baseline).
pub fn majority_share(labels: impl Iterator<Item = usize>) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
        n += 1;
    }
    counts.values().max().map_or(0.0, |&m| m as f64 / n as f64)
}

impl Predictions {
    /// The predictions at rows `idx` (with repeats).
    fn subset(&self, idx: &[usize]) -> Predictions {
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Predictions {
            truth: self.truth.iter().map(|c| pick(c)).collect(),
            argmax: idx.iter().map(|&i| self.argmax[i]).collect(),
            prob: self.prob.iter().map(|c| pick(c)).collect(),
            vote: idx.iter().map(|&i| self.vote[i]).collect(),
            start: idx.iter().map(|&i| self.start[i]).collect(),
        }
    }
}

/// 95 % percentile intervals of the figures over `n` moving-block bootstrap
/// resamples: the windows in time order (`start`) are cut into blocks of
/// `block` consecutive windows, and as many blocks as there are are drawn
/// with replacement. Per figure of [`INTERVAL_METRICS`]: `[lo, hi]`, `None`
/// where a resample leaves the figure undefined.
pub fn bootstrap_intervals(
    p: &Predictions,
    normal: usize,
    block: usize,
    n: usize,
    seed: u64,
) -> [[Option<f64>; 2]; 5] {
    use rand::{Rng, SeedableRng};
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by_key(|&i| p.start[i]);
    let blocks: Vec<&[usize]> = order.chunks(block.max(1)).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut samples: [Vec<f64>; 5] = Default::default();
    for _ in 0..n {
        let mut idx = Vec::with_capacity(p.len());
        for _ in 0..blocks.len() {
            idx.extend_from_slice(blocks[rng.random_range(0..blocks.len())]);
        }
        let values = figures(&p.subset(&idx), normal).with_intervals();
        for (sample, v) in samples.iter_mut().zip(values) {
            sample.extend(v);
        }
    }
    samples.map(|mut v| {
        // An interval only when every resample defines the figure.
        if v.len() < n || n == 0 {
            return [None, None];
        }
        let [_, lo, hi] = median_and_95(&mut v);
        [lo, hi]
    })
}

/// Counts[true][predicted].
pub fn confusion(truth: &[usize], predicted: &[usize], n: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; n]; n];
    for (&t, &p) in truth.iter().zip(predicted) {
        m[t][p] += 1;
    }
    m
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

    fn training_plot(&self, log: &Input, dir: &std::path::Path) -> Result<()> {
        let why = "the training log of `medic_train` (for the training-curve plot)";
        for c in ["fold", "epoch"] {
            require_column(&log.schema, &log.name, c, why, "Int32", |t| {
                t == &DataType::Int32
            })?;
        }
        for c in ["train_kl", "val_kl"] {
            require_column(&log.schema, &log.name, c, why, "Float64", |t| {
                t == &DataType::Float64
            })?;
        }
        let mut series: Vec<Series> = Vec::new();
        for batch in log.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("checked").clone();
            let (fold, epoch) = (col("fold"), col("epoch"));
            let (fold, epoch) = (
                fold.as_primitive::<Int32Type>(),
                epoch.as_primitive::<Int32Type>(),
            );
            for (name, kind) in [("train_kl", "train"), ("val_kl", "val")] {
                let v = col(name);
                let v = v.as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    let label = format!("fold {} {kind}", fold.value(i));
                    let point = (epoch.value(i) as f64, v.value(i));
                    match series.iter_mut().find(|s| s.name == label) {
                        Some(s) => s.points.push(point),
                        None => series.push(Series {
                            name: label,
                            points: vec![point],
                        }),
                    }
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
}

impl Stage for MedicMetrics {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        if inputs.is_empty() || inputs.len() > 2 {
            return Err(StageError::InputCount {
                expected: "1 or 2 (predictions, optional training log)".into(),
                found: inputs.len(),
            });
        }
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
        let p = Predictions::read(input)?;
        let nc = p.prob.len();
        let fig = figures(&p, self.normal_class);
        let window = WindowSpec::from_schema(&input.schema, &input.name)
            .ok()
            .map(|w| w.window as i64);
        let folds = ModelSpec::from_schema(&input.schema, &input.name)
            .ok()
            .map(|s| s.folds as i64);
        let ceiling = tie_ceiling(&p.truth);
        let chance = majority_share(p.argmax.iter().copied());
        let binary_baseline = majority_share(
            p.argmax
                .iter()
                .map(|&a| usize::from(a != self.normal_class)),
        );
        let (paper_accuracy, paper_binary) =
            paper_protocol(&p, self.normal_class, self.paper_per_class, self.seed);
        let intervals = bootstrap_intervals(
            &p,
            self.normal_class,
            window.unwrap_or(1) as usize,
            self.bootstrap,
            self.seed,
        );
        let headline: Vec<String> = INTERVAL_METRICS
            .iter()
            .zip(fig.with_intervals())
            .zip(&intervals)
            .map(|((name, value), interval)| {
                let value = value.map_or("n/a".into(), |v| format!("{v:.3}"));
                match interval {
                    [Some(lo), Some(hi)] => format!("{name} {value} [{lo:.3}, {hi:.3}]"),
                    _ => format!("{name} {value}"),
                }
            })
            .collect();
        ctx.reporter.info(&format!(
            "{} windows: {}; tie ceiling {ceiling:.3}, most frequent class {chance:.3}, always the binary majority {binary_baseline:.3}; paper's protocol: accuracy {paper_accuracy:.3}, binary 50/50 {}",
            p.len(),
            headline.join(", "),
            paper_binary.map_or("n/a".into(), |v| format!("{v:.3}")),
        ));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![window])),
            Arc::new(Int64Array::from(vec![folds])),
            Arc::new(Int64Array::from(vec![p.len() as i64])),
            Arc::new(Float64Array::from(vec![fig.accuracy])),
            Arc::new(Float64Array::from(vec![fig.auc])),
            Arc::new(Float64Array::from(vec![fig.brier])),
            Arc::new(Float64Array::from(vec![fig.binary_accuracy])),
            Arc::new(Float64Array::from(vec![fig.binary_auc])),
            Arc::new(Float64Array::from(vec![fig.binary_fpr])),
            Arc::new(Float64Array::from(vec![fig.binary_tpr])),
            Arc::new(Float64Array::from(vec![ceiling])),
            Arc::new(Float64Array::from(vec![chance])),
            Arc::new(Float64Array::from(vec![binary_baseline])),
            Arc::new(Float64Array::from(vec![paper_accuracy])),
            Arc::new(Float64Array::from(vec![paper_binary])),
        ];
        for [lo, hi] in intervals {
            columns.push(Arc::new(Float64Array::from(vec![lo])));
            columns.push(Arc::new(Float64Array::from(vec![hi])));
        }
        ctx.output
            .write("main", RecordBatch::try_new(metrics_schema(), columns)?)?;

        let multi = confusion(&p.argmax, &p.vote, nc);
        let glitch = |v: &Vec<usize>| {
            v.iter()
                .map(|&c| usize::from(c != self.normal_class))
                .collect::<Vec<_>>()
        };
        let binary = confusion(&glitch(&p.argmax), &glitch(&p.vote), 2);
        let (mut kind, mut t, mut pr, mut count) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (name, m) in [("multiclass", &multi), ("binary", &binary)] {
            for (i, row) in m.iter().enumerate() {
                for (j, &c) in row.iter().enumerate() {
                    kind.push(name);
                    t.push(i as i64);
                    pr.push(j as i64);
                    count.push(c as i64);
                }
            }
        }
        ctx.output.write(
            "confusion",
            RecordBatch::try_new(
                confusion_schema(),
                vec![
                    Arc::new(StringArray::from(kind)),
                    Arc::new(Int64Array::from(t)),
                    Arc::new(Int64Array::from(pr)),
                    Arc::new(Int64Array::from(count)),
                ],
            )?,
        )?;

        let mut curves: Vec<NamedCurve> = (0..nc)
            .map(|c| {
                let positive: Vec<bool> = p.argmax.iter().map(|&a| a == c).collect();
                (format!("class_{c}"), roc_curve(&p.prob[c], &positive))
            })
            .collect();
        let score: Vec<f64> = p.prob[self.normal_class].iter().map(|q| 1.0 - q).collect();
        let glitch_truth: Vec<bool> = p.argmax.iter().map(|&a| a != self.normal_class).collect();
        curves.push(("binary".into(), roc_curve(&score, &glitch_truth)));
        let (mut name, mut thr, mut fpr, mut tpr) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (curve, points) in &curves {
            for &(th, f, tp) in points {
                name.push(curve.clone());
                thr.push(th);
                fpr.push(f);
                tpr.push(tp);
            }
        }
        ctx.output.write(
            "roc",
            RecordBatch::try_new(
                roc_schema(),
                vec![
                    Arc::new(StringArray::from(name)),
                    Arc::new(Float64Array::from(thr)),
                    Arc::new(Float64Array::from(fpr)),
                    Arc::new(Float64Array::from(tpr)),
                ],
            )?,
        )?;

        if self.plots {
            let names = self.names(nc);
            let w = window.map_or(String::new(), |w| format!(" (W = {w})"));
            plots::confusion(
                &ctx.artifacts.join("confusion_multiclass.png"),
                &format!("MEDIC ensemble{w}"),
                &names,
                &multi,
            )?;
            plots::confusion(
                &ctx.artifacts.join("confusion_binary.png"),
                &format!("normal vs glitch{w}"),
                &[names[self.normal_class].clone(), "glitch".into()],
                &binary,
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
                self.training_plot(log, ctx.artifacts)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn hand_made() -> Predictions {
        // 4 windows, 2 classes; class 0 = normal.
        Predictions {
            truth: vec![vec![1.0, 0.6, 0.2, 0.0], vec![0.0, 0.4, 0.8, 1.0]],
            argmax: vec![0, 0, 1, 1],
            prob: vec![vec![0.9, 0.4, 0.3, 0.2], vec![0.1, 0.6, 0.7, 0.8]],
            vote: vec![0, 1, 1, 1],
            start: vec![0, 1, 2, 3],
        }
    }

    #[test]
    fn papers_protocol_by_hand() {
        // Argmax of the mean: 0, 1, 1, 1 → right on windows 0, 2, 3.
        let p = hand_made();
        let (acc, binary) = paper_protocol(&p, 0, 3000, 1);
        assert!((acc - 0.75).abs() < 1e-12);
        assert_eq!(binary, Some(0.75), "2 normal + 2 glitch windows, all kept");
        // One window per class: class 0 keeps window 0 (right) or 1 (wrong),
        // class 1 keeps a right one; over seeds both happen.
        let seen: std::collections::BTreeSet<u64> = (0..20)
            .map(|seed| (paper_protocol(&p, 0, 1, seed).0 * 100.0).round() as u64)
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![50, 100]);
        // 3 glitch windows, 1 normal: 50/50 keeps 1 of each.
        let mut q = hand_made();
        q.argmax = vec![0, 1, 1, 1];
        let (_, binary) = paper_protocol(&q, 0, 3000, 1);
        assert_eq!(binary, Some(1.0));
        q.argmax = vec![1, 1, 1, 1];
        assert_eq!(paper_protocol(&q, 0, 3000, 1).1, None);
    }

    #[test]
    fn tie_ceiling_and_baselines_by_hand() {
        // Windows of W = 4: (2,2,0) two-way tie, (1,1,1,1) four-way, (3,1) none.
        let truth = vec![
            vec![0.5, 0.25, 0.75],
            vec![0.5, 0.25, 0.25],
            vec![0.0, 0.25, 0.0],
            vec![0.0, 0.25, 0.0],
        ];
        let want = (0.5 + 0.25 + 1.0) / 3.0;
        assert!((tie_ceiling(&truth) - want).abs() < 1e-12);
        assert!((majority_share([1, 0, 1, 1].into_iter()) - 0.75).abs() < 1e-12);
        assert_eq!(majority_share(std::iter::empty()), 0.0);
    }

    #[test]
    fn block_bootstrap_intervals_bracket_the_figures_and_are_seeded() {
        // 400 windows in time order; the first 200 are right, the rest 50/50.
        let n = 400;
        let p = Predictions {
            truth: vec![
                (0..n).map(|i| (i % 2) as f64).collect(),
                (0..n).map(|i| 1.0 - (i % 2) as f64).collect(),
            ],
            argmax: (0..n).map(|i| 1 - i % 2).collect(),
            prob: vec![
                (0..n)
                    .map(|i| {
                        if i < 200 {
                            (i % 2) as f64 * 0.8 + 0.1
                        } else {
                            0.5
                        }
                    })
                    .collect(),
                (0..n)
                    .map(|i| {
                        if i < 200 {
                            0.9 - (i % 2) as f64 * 0.8
                        } else {
                            0.5
                        }
                    })
                    .collect(),
            ],
            vote: (0..n)
                .map(|i| if i < 200 { 1 - i % 2 } else { (i / 2) % 2 })
                .collect(),
            start: (0..n as i64).rev().collect(),
        };
        let f = figures(&p, 0);
        let iv = bootstrap_intervals(&p, 0, 10, 300, 1);
        let [lo, hi] = iv[0];
        let (lo, hi) = (lo.unwrap(), hi.unwrap());
        assert!(
            lo < f.accuracy && f.accuracy < hi,
            "{lo} {} {hi}",
            f.accuracy
        );
        // Wide enough to reflect 40 blocks: not a point.
        assert!(hi - lo > 0.03 && hi - lo < 0.3, "{lo} {hi}");
        assert_eq!(iv, bootstrap_intervals(&p, 0, 10, 300, 1));
        assert_ne!(iv, bootstrap_intervals(&p, 0, 10, 300, 2));
        // Other block lengths bracket it too.
        let wide = bootstrap_intervals(&p, 0, 40, 300, 1)[0];
        assert!(wide[0].unwrap() < f.accuracy && f.accuracy < wide[1].unwrap());
        assert_eq!(bootstrap_intervals(&p, 0, 10, 0, 1)[0], [None, None]);
    }

    #[test]
    fn figures_of_hand_made_predictions() {
        let f = figures(&hand_made(), 0);
        assert!((f.accuracy - 0.75).abs() < 1e-12);
        // Brier: 2*(0.01) + 2*(0.04) + 2*(0.01) + 2*(0.04) = 0.2, / 4.
        assert!((f.brier - 0.05).abs() < 1e-12, "{}", f.brier);
        // Class 0 scores 0.9, 0.4 vs 0.3, 0.2: perfectly ranked; likewise class 1.
        assert_eq!(f.auc, Some(1.0));
        assert_eq!(f.binary_auc, Some(1.0));
        assert!((f.binary_accuracy - 0.75).abs() < 1e-12);
        assert_eq!(f.binary_fpr, Some(0.5));
        assert_eq!(f.binary_tpr, Some(1.0));
        let m = confusion(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
        assert_eq!(m, vec![vec![1, 1], vec![0, 2]]);
    }

    #[test]
    fn metrics_stage_writes_tables_and_plots() {
        let p = hand_made();
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
            fields.push(arrow::datatypes::Field::new(
                "start",
                DataType::Int64,
                false,
            ));
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
