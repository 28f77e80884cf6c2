//! `channel_metrics`: the paper's Table 7 on our maps. Per anomaly case and
//! method (the GraphSTAD model scored with Eq. 5, with a signed window pull
//! and summed over RBXes; the reference-map rule with Eq. 5, as a pull and
//! summed over RBXes; the RBX-median-corrected and luminosity-regression
//! rules; the oracle
//! that knows every channel's true rate), on the LS that end an anomalous
//! window: the false-positive rate among healthy channels at the
//! thresholds that detect 90 / 95 / 99 % of the injected channels, the ROC
//! AUC of anomalous vs healthy channels with two 95 % intervals
//! (Hanley-McNeil, which treats every channel as independent, and a
//! bootstrap over fills, which does not: injected channels cluster by
//! window and RBX), and at the decision threshold α: detection, FPR and
//! localisation (the fraction of flagged channels inside the injected
//! region). Rows per kind of positive: `all` injected channels, the
//! `single` ones, and those of an injected `rbx` (at least half of its
//! channels injected). For the oracle under a scale anomaly (dead,
//! degraded, noisy hot), `analytic_auc` is what its pull should reach.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::f64_lists;
use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::tables::{EXTRA_METHODS, read_geometry, scores_schema};
use crate::input::{Input, require_column};
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::{auc_interval, quantile, roc_auc};
use dqm_schemas::{column, f64_list, nullable};

/// What the bootstrap resamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapUnit {
    /// Whole fills (the independent unit once fills share gain offsets or
    /// pile-up); coarse with few fills.
    Fill,
    /// Target LS (one anomalous window each, with its healthy channels).
    Target,
}

/// Table-7 metrics of channel scores.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelMetrics {
    /// Decision threshold α on a_i; `auto`: each method's threshold in the
    /// scores table (`alpha`, `reference_alpha`, `<method>_alpha`: chosen on
    /// validation maps).
    pub alpha: AutoOr<f64>,
    /// Detection levels of the FPR columns (the paper: 0.90, 0.95, 0.99).
    pub detection: [f64; 3],
    /// What the AUC bootstrap resamples: `fill` or `target`.
    pub bootstrap_unit: BootstrapUnit,
    /// Bootstrap resamples (0: no bootstrap interval).
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for ChannelMetrics {
    fn default() -> Self {
        Self {
            alpha: AutoOr::Auto,
            detection: [0.90, 0.95, 0.99],
            bootstrap_unit: BootstrapUnit::Fill,
            resamples: 200,
            seed: 1,
        }
    }
}

impl StageConfig for ChannelMetrics {
    const KIND: &'static str = "channel_metrics";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Channel scores with injected truth -> Table 7 per case, method and kind of positive: FPR at 90/95/99 % detection, AUC with Hanley-McNeil and bootstrap intervals, the oracle's analytic AUC, detection, FPR and localisation at α";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "scores";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![scores_schema(MapGeometry::of(
            crate::hcal::geometry::Subdetector::Barrel,
        ))]
    }

    fn validate(&self) -> Result<()> {
        if let AutoOr::Value(a) = self.alpha
            && !(a > 0.0)
        {
            return bad_param("alpha", "must be > 0 or `auto`");
        }
        if self.detection.iter().any(|&d| !(d > 0.0 && d <= 1.0)) {
            return bad_param("detection", "levels must be in (0, 1]");
        }
        Ok(())
    }
}

fn metrics_schema() -> SchemaRef {
    let n = |name, doc| nullable(name, DataType::Float64, doc);
    Arc::new(Schema::new(vec![
        column(
            "method",
            DataType::Utf8,
            "graphstad (the model, Eq. 5), reference (training mean map × row medians, Eq. 5), or a score of the scores table's `<method>_score` columns (graphstad_signed, graphstad_rbx, reference_signed, reference_rbx, rbx_median, lumi_regression, oracle)",
        ),
        column("case", DataType::Utf8, "Anomaly case"),
        column(
            "positives",
            DataType::Utf8,
            "Which injected channels are the positives: all, single (outside an injected RBX) or rbx (in an RBX with at least half of its channels injected)",
        ),
        column(
            "target_maps",
            DataType::Int64,
            "LS ending an anomalous window (where the metrics are computed)",
        ),
        column(
            "anomalous",
            DataType::Int64,
            "Injected channels of this kind on those LS (positives)",
        ),
        column(
            "healthy",
            DataType::Int64,
            "Channels not injected on those LS (negatives)",
        ),
        n(
            "fpr_90",
            "FPR among healthy channels at the threshold detecting the first detection level (90 %)",
        ),
        n("fpr_95", "Same at the second level (95 %)"),
        n("fpr_99", "Same at the third level (99 %)"),
        n("auc", "ROC AUC, anomalous vs healthy channels"),
        n(
            "auc_lo",
            "95 % interval of the AUC, lower (Hanley-McNeil: channels independent)",
        ),
        n("auc_hi", "95 % interval of the AUC, upper"),
        n(
            "auc_boot_lo",
            "95 % bootstrap interval of the AUC over fills or target LS (`bootstrap_unit`), lower",
        ),
        n("auc_boot_hi", "95 % bootstrap interval, upper"),
        n(
            "analytic_auc",
            "Oracle rows under a scale anomaly (dead, degraded, noisy hot): the AUC its pull reaches in the normal approximation, z_healthy ~ N(0, 1), z_anomalous ~ N((R − 1)√Σμ, R²)",
        ),
        n(
            "detection_at_alpha",
            "Fraction of anomalous channels with a_i > α",
        ),
        n("fpr_at_alpha", "Fraction of healthy channels with a_i > α"),
        n(
            "localisation",
            "Of the channels flagged at α, the fraction inside the injected region (rows of all positives)",
        ),
        column(
            "alpha",
            DataType::Float64,
            "α of the method (the last seen when target maps disagree)",
        ),
        column(
            "detection_levels",
            f64_list(),
            "The detection levels of fpr_90 / fpr_95 / fpr_99",
        ),
    ]))
}

/// The FPR at the threshold that detects `level` of the positives: the
/// threshold is the positive score ranked ⌈level · n⌉ from the top, and a
/// channel is flagged at or above it.
pub fn fpr_at_detection(positives: &mut [f64], negatives: &[f64], level: f64) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    positives.sort_unstable_by(|a, b| b.total_cmp(a));
    let k = ((level * positives.len() as f64).ceil() as usize).clamp(1, positives.len());
    let threshold = positives[k - 1];
    Some(negatives.iter().filter(|&&v| v >= threshold).count() as f64 / negatives.len() as f64)
}

/// A scored channel: score, the bootstrap cluster it belongs to.
#[derive(Clone, Copy)]
struct Scored {
    score: f64,
    cluster: u32,
}

/// Which injected channels a positive is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Rbx,
}

/// The target-LS channel scores of one (method, case).
#[derive(Default)]
struct Pool {
    alpha: f64,
    maps: usize,
    positives: Vec<(Scored, Kind)>,
    negatives: Vec<Scored>,
    /// Σ_w μ of every positive (oracle pools of maps with truth).
    expected: Vec<f64>,
    flagged: usize,
    flagged_inside: usize,
}

/// The pools of a scores table by (method index, case).
type Pools = BTreeMap<(usize, String), Pool>;

/// The scores compared: (method, score column, α column).
fn methods() -> Vec<(String, String, String)> {
    let mut m = vec![
        ("graphstad".into(), "score".into(), "alpha".into()),
        (
            "reference".into(),
            "reference_score".into(),
            "reference_alpha".into(),
        ),
    ];
    m.extend(
        EXTRA_METHODS
            .iter()
            .map(|e| (e.name.to_string(), e.score_column(), e.alpha_column())),
    );
    m
}

/// The scale R of a case named by `inject_anomalies` (dead 0, degraded_R,
/// noisy_hot_R, rbx_drop_R, rbx_half_noisy_R: the same R on every LS of the
/// window), for the oracle's analytic AUC.
fn scale_of(case: &str) -> Option<f64> {
    if case == "dead" {
        return Some(0.0);
    }
    let factor = ["degraded_", "noisy_hot_", "rbx_drop_", "rbx_half_noisy_"]
        .iter()
        .find_map(|p| case.strip_prefix(p))?;
    factor.parse().ok()
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// P(|A| > |B|) with B ~ N(0, 1) and A ~ N(d, r²): exact when r = 0 (A = d),
/// else by the trapezoid rule over b = |B| on [0, 10].
fn beats_healthy(d: f64, r: f64) -> f64 {
    if r == 0.0 {
        return 2.0 * normal_cdf(d.abs()) - 1.0;
    }
    const STEPS: usize = 2000;
    let h = 10.0 / STEPS as f64;
    let density = |b: f64| 2.0 * (-0.5 * b * b).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let exceed = |b: f64| normal_cdf((-b - d) / r) + 1.0 - normal_cdf((b - d) / r);
    (0..=STEPS)
        .map(|k| {
            let b = k as f64 * h;
            let w = if k == 0 || k == STEPS { 0.5 } else { 1.0 };
            w * density(b) * exceed(b)
        })
        .sum::<f64>()
        * h
}

/// The AUC the oracle's pull reaches for a scale anomaly R on positives
/// whose windows expect `expected` counts: the mean over positives of
/// P(|z_a| > |z_h|), z_h ~ N(0, 1), z_a ~ N((R − 1)√Σμ, R²).
pub fn oracle_auc(scale: f64, expected: &[f64]) -> Option<f64> {
    if expected.is_empty() {
        return None;
    }
    let sum: f64 = expected
        .iter()
        .map(|&s| beats_healthy((scale - 1.0) * s.max(0.0).sqrt(), scale))
        .sum();
    Some(sum / expected.len() as f64)
}

/// AUC of positives over negatives with every element weighted by its
/// cluster's weight, on scores sorted ascending (ties count one half).
fn weighted_auc(sorted: &[(f64, bool, u32)], weights: &[f64]) -> Option<f64> {
    let (mut neg_below, mut wins, mut w_pos, mut w_neg) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        let (mut tie_pos, mut tie_neg) = (0.0, 0.0);
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            let w = weights[sorted[j].2 as usize];
            if sorted[j].1 {
                tie_pos += w;
            } else {
                tie_neg += w;
            }
            j += 1;
        }
        wins += tie_pos * (neg_below + 0.5 * tie_neg);
        neg_below += tie_neg;
        w_pos += tie_pos;
        w_neg += tie_neg;
        i = j;
    }
    (w_pos > 0.0 && w_neg > 0.0).then(|| wins / (w_pos * w_neg))
}

/// 95 % percentile interval of the AUC over `resamples` cluster bootstrap
/// resamples (clusters drawn with replacement, `n_clusters` of them).
fn bootstrap_auc(
    positives: &[Scored],
    negatives: &[Scored],
    n_clusters: usize,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if resamples == 0 || positives.is_empty() || negatives.is_empty() || n_clusters == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool, u32)> = positives
        .iter()
        .map(|p| (p.score, true, p.cluster))
        .chain(negatives.iter().map(|n| (n.score, false, n.cluster)))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut aucs: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let mut weights = vec![0.0; n_clusters];
            for _ in 0..n_clusters {
                weights[rng.random_range(0..n_clusters)] += 1.0;
            }
            weighted_auc(&sorted, &weights)
        })
        .collect();
    aucs.sort_unstable_by(f64::total_cmp);
    Some((quantile(&aucs, 0.025)?, quantile(&aucs, 0.975)?))
}

impl Stage for ChannelMetrics {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let why = "a scores table (`graphstad_score`)";
        read_geometry(&inputs[0], "scores")?;
        require_column(&inputs[0], "scores", "case", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        require_column(&inputs[0], "scores", "fill", why, "Int64", |t| {
            t == &DataType::Int64
        })?;
        require_column(&inputs[0], "scores", "target", why, "Boolean", |t| {
            t == &DataType::Boolean
        })?;
        require_column(
            &inputs[0],
            "scores",
            "injected",
            why,
            "List<Boolean>",
            |t| matches!(t, DataType::List(f) if f.data_type() == &DataType::Boolean),
        )?;
        for (_, score, alpha) in methods() {
            require_column(&inputs[0], "scores", &score, why, "List<Float64>", |t| {
                t == &f64_list()
            })?;
            require_column(&inputs[0], "scores", &alpha, why, "Float64", |t| {
                t == &DataType::Float64
            })?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: metrics_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let (pools, n_clusters) = self.pools(input)?;
        if pools.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no target LS (no injected anomaly windows): run `inject_anomalies` on the maps first",
                input.name
            )));
        }
        let names = methods();
        let rows: Vec<Row> = pools
            .into_iter()
            .flat_map(|((k, case), pool)| {
                let pool = Arc::new(pool);
                let has_rbx = pool.positives.iter().any(|p| p.1 == Kind::Rbx);
                let has_single = pool.positives.iter().any(|p| p.1 == Kind::Single);
                let mut kinds = vec![None];
                if has_rbx && has_single {
                    kinds.extend([Some(Kind::Single), Some(Kind::Rbx)]);
                }
                let method = names[k].0.clone();
                kinds.into_iter().map(move |kind| Row {
                    method: method.clone(),
                    case: case.clone(),
                    kind,
                    pool: pool.clone(),
                })
            })
            .collect();
        let figures: Vec<Figures> = rows
            .par_iter()
            .enumerate()
            .map(|(i, row)| self.figures(row, n_clusters, self.seed ^ i as u64))
            .collect();
        for (row, f) in rows.iter().zip(&figures) {
            let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
            ctx.reporter.info(&format!(
                "{:>16} {:<16} {:<6} AUC {} ({}–{} bootstrap) analytic {} FPR@99% {} detection@α {} FPR@α {}",
                row.method,
                row.case,
                row.kind_name(),
                show(f.auc),
                show(f.boot.map(|b| b.0)),
                show(f.boot.map(|b| b.1)),
                show(f.analytic),
                show(f.fpr[2]),
                show(f.detection),
                show(f.fpr_alpha),
            ));
        }
        ctx.output
            .write("main", self.metrics_batch(&rows, &figures)?)
    }
}

/// One row of Table 7: a pool and which of its positives count.
struct Row {
    method: String,
    case: String,
    kind: Option<Kind>,
    pool: Arc<Pool>,
}

impl Row {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            None => "all",
            Some(Kind::Single) => "single",
            Some(Kind::Rbx) => "rbx",
        }
    }

    /// The positives of this row with, for the oracle, their Σ_w μ.
    fn positives(&self) -> (Vec<Scored>, Vec<f64>) {
        let keep = |k: Kind| self.kind.is_none_or(|want| want == k);
        let scored = self
            .pool
            .positives
            .iter()
            .filter(|p| keep(p.1))
            .map(|p| p.0)
            .collect();
        let expected = if self.pool.expected.len() == self.pool.positives.len() {
            self.pool
                .positives
                .iter()
                .zip(&self.pool.expected)
                .filter(|(p, _)| keep(p.1))
                .map(|(_, &e)| e)
                .collect()
        } else {
            Vec::new()
        };
        (scored, expected)
    }
}

/// The figures of one row.
struct Figures {
    anomalous: usize,
    fpr: [Option<f64>; 3],
    auc: Option<f64>,
    hanley: Option<(f64, f64)>,
    boot: Option<(f64, f64)>,
    analytic: Option<f64>,
    detection: Option<f64>,
    fpr_alpha: Option<f64>,
    localisation: Option<f64>,
}

impl ChannelMetrics {
    /// The channel scores of the target LS, pooled per (method, case), and
    /// the number of bootstrap clusters.
    fn pools(&self, input: &Input) -> Result<(Pools, usize)> {
        let geometry = read_geometry(&input.schema, &input.name)?;
        let g = geometry.geometry();
        let (rbx, n_rbx) = (g.rbx_map(), g.n_rbx());
        let mut rbx_size = vec![0usize; n_rbx];
        for &r in &rbx {
            rbx_size[r] += 1;
        }
        let names = methods();
        let mut pools: Pools = BTreeMap::new();
        let mut clusters: BTreeMap<(i64, i64), u32> = BTreeMap::new();
        for batch in input.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("planned");
            let case = col("case");
            let case = case.as_string::<i32>();
            let fill = col("fill");
            let fill = fill.as_primitive::<Int64Type>();
            let ls = col("ls");
            let ls = ls.as_primitive::<Int64Type>();
            let target = col("target");
            let target = target.as_boolean();
            let injected = col("injected");
            let injected = injected.as_list::<i32>();
            let expected = batch
                .column_by_name("expected_window")
                .map(|c| c.as_list::<i32>().clone());
            for i in 0..batch.num_rows() {
                if !target.value(i) {
                    continue;
                }
                let unit = match self.bootstrap_unit {
                    BootstrapUnit::Fill => (fill.value(i), 0),
                    BootstrapUnit::Target => (fill.value(i), ls.value(i)),
                };
                let next = clusters.len() as u32;
                let cluster = *clusters.entry(unit).or_insert(next);
                let mask = injected.value(i);
                let mask = mask.as_boolean();
                let mut in_rbx = vec![0usize; n_rbx];
                for (c, &r) in rbx.iter().enumerate() {
                    in_rbx[r] += usize::from(mask.value(c));
                }
                let kind = |c: usize| {
                    if 2 * in_rbx[rbx[c]] >= rbx_size[rbx[c]] {
                        Kind::Rbx
                    } else {
                        Kind::Single
                    }
                };
                for (k, (name, column, alpha_column)) in names.iter().enumerate() {
                    let scores = col(column);
                    let scores = scores.as_list::<i32>();
                    if scores.is_null(i) {
                        continue;
                    }
                    let values = scores.value(i);
                    let values = values.as_primitive::<Float64Type>();
                    if mask.len() != values.len() || values.len() != rbx.len() {
                        return Err(StageError::data(format!(
                            "input `{}`, row {i}: `injected` and `{column}` differ in length from the geometry's {} channels",
                            input.name,
                            rbx.len()
                        )));
                    }
                    let alphas = col(alpha_column);
                    let alphas = alphas.as_primitive::<Float64Type>();
                    let alpha = match self.alpha {
                        AutoOr::Auto if alphas.is_null(i) => f64::INFINITY,
                        AutoOr::Auto => alphas.value(i),
                        AutoOr::Value(a) => a,
                    };
                    let oracle_expected = (name == "oracle")
                        .then(|| expected.as_ref().filter(|e| !e.is_null(i)))
                        .flatten()
                        .map(|e| e.value(i).as_primitive::<Float64Type>().clone());
                    let pool = pools.entry((k, case.value(i).to_string())).or_default();
                    pool.maps += 1;
                    pool.alpha = alpha;
                    for (j, &v) in values.values().iter().enumerate() {
                        let scored = Scored { score: v, cluster };
                        let positive = mask.value(j);
                        if positive {
                            pool.positives.push((scored, kind(j)));
                            if let Some(e) = &oracle_expected {
                                pool.expected.push(e.value(j));
                            }
                        } else {
                            pool.negatives.push(scored);
                        }
                        if v > alpha {
                            pool.flagged += 1;
                            pool.flagged_inside += usize::from(positive);
                        }
                    }
                }
            }
        }
        Ok((pools, clusters.len()))
    }

    /// FPR at each detection level, AUC with its intervals, the oracle's
    /// analytic AUC, detection, FPR and localisation at α.
    fn figures(&self, row: &Row, n_clusters: usize, seed: u64) -> Figures {
        let p = &row.pool;
        let (positives, expected) = row.positives();
        let mut pos: Vec<f64> = positives.iter().map(|s| s.score).collect();
        let neg: Vec<f64> = p.negatives.iter().map(|s| s.score).collect();
        let mut fpr = [None; 3];
        for (l, level) in self.detection.iter().enumerate() {
            fpr[l] = fpr_at_detection(&mut pos, &neg, *level);
        }
        let labels: Vec<bool> = std::iter::repeat_n(true, pos.len())
            .chain(std::iter::repeat_n(false, neg.len()))
            .collect();
        let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        let auc = roc_auc(&all, &labels);
        let frac = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
        Figures {
            anomalous: pos.len(),
            fpr,
            auc,
            hanley: auc.map(|a| auc_interval(a, pos.len(), neg.len())),
            boot: bootstrap_auc(&positives, &p.negatives, n_clusters, self.resamples, seed),
            analytic: (row.method == "oracle")
                .then(|| scale_of(&row.case))
                .flatten()
                .and_then(|r| oracle_auc(r, &expected)),
            detection: frac(pos.iter().filter(|&&v| v > p.alpha).count(), pos.len()),
            fpr_alpha: frac(neg.iter().filter(|&&v| v > p.alpha).count(), neg.len()),
            localisation: row
                .kind
                .is_none()
                .then(|| frac(p.flagged_inside, p.flagged))
                .flatten(),
        }
    }

    fn metrics_batch(&self, rows: &[Row], figures: &[Figures]) -> Result<RecordBatch> {
        let f = |get: fn(&Figures) -> Option<f64>| -> ArrayRef {
            Arc::new(Float64Array::from(
                figures.iter().map(get).collect::<Vec<_>>(),
            ))
        };
        let strings = |get: fn(&Row) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(get)))
        };
        let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let columns: Vec<ArrayRef> = vec![
            strings(|r| r.method.as_str()),
            strings(|r| r.case.as_str()),
            strings(|r| r.kind_name()),
            ints(rows.iter().map(|r| r.pool.maps as i64).collect()),
            ints(figures.iter().map(|f| f.anomalous as i64).collect()),
            ints(rows.iter().map(|r| r.pool.negatives.len() as i64).collect()),
            f(|x| x.fpr[0]),
            f(|x| x.fpr[1]),
            f(|x| x.fpr[2]),
            f(|x| x.auc),
            f(|x| x.hanley.map(|h| h.0)),
            f(|x| x.hanley.map(|h| h.1)),
            f(|x| x.boot.map(|h| h.0)),
            f(|x| x.boot.map(|h| h.1)),
            f(|x| x.analytic),
            f(|x| x.detection),
            f(|x| x.fpr_alpha),
            f(|x| x.localisation),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.pool.alpha),
            )),
            Arc::new(f64_lists(std::iter::repeat_n(
                &self.detection[..],
                rows.len(),
            ))),
        ];
        Ok(RecordBatch::try_new(metrics_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpr_at_detection_by_hand() {
        // Positives 10, 8, 6, 4: detecting 75 % needs threshold 6.
        let mut pos = vec![4.0, 10.0, 6.0, 8.0];
        let neg = [1.0, 5.0, 6.0, 7.0, 2.0];
        assert_eq!(fpr_at_detection(&mut pos, &neg, 0.75), Some(2.0 / 5.0));
        assert_eq!(fpr_at_detection(&mut pos, &neg, 1.0), Some(3.0 / 5.0));
        assert_eq!(fpr_at_detection(&mut pos, &neg, 0.25), Some(0.0));
        assert_eq!(fpr_at_detection(&mut [], &neg, 0.9), None);
    }

    #[test]
    fn weighted_auc_with_unit_weights_is_the_auc_and_weights_count_clusters() {
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9];
        let labels = [false, false, true, true, true, false];
        let clusters = [0u32, 1, 0, 1, 2, 2];
        let mut sorted: Vec<(f64, bool, u32)> = (0..6)
            .map(|i| (scores[i], labels[i], clusters[i]))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let plain = roc_auc(&scores, &labels).unwrap();
        assert!((weighted_auc(&sorted, &[1.0, 1.0, 1.0]).unwrap() - plain).abs() < 1e-12);
        // Cluster 2 twice is the AUC of the data with cluster 2 copied.
        let twice: Vec<usize> = (0..6).chain([4, 5]).collect();
        let s2: Vec<f64> = twice.iter().map(|&i| scores[i]).collect();
        let l2: Vec<bool> = twice.iter().map(|&i| labels[i]).collect();
        let copied = roc_auc(&s2, &l2).unwrap();
        assert!((weighted_auc(&sorted, &[1.0, 1.0, 2.0]).unwrap() - copied).abs() < 1e-12);
        // Without negatives there is no AUC.
        assert_eq!(
            weighted_auc(&sorted, &[0.0, 0.0, 1.0]).map(|_| ()),
            Some(())
        );
        assert_eq!(weighted_auc(&[(1.0, true, 0)], &[1.0]), None);
    }

    #[test]
    fn bootstrap_interval_brackets_the_auc_and_widens_with_few_clusters() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let draw = |rng: &mut ChaCha8Rng, shift: f64, clusters: u32| -> Vec<Scored> {
            (0..4000)
                .map(|i| Scored {
                    score: rng.sample::<f64, _>(rand_distr::StandardNormal) + shift,
                    cluster: i % clusters,
                })
                .collect()
        };
        let pos = draw(&mut rng, 1.0, 40);
        let neg = draw(&mut rng, 0.0, 40);
        let (lo, hi) = bootstrap_auc(&pos, &neg, 40, 200, 1).unwrap();
        // Φ(1/√2) = 0.760.
        assert!(lo < 0.760 && 0.760 < hi && hi - lo < 0.05, "{lo} {hi}");
        let few: Vec<Scored> = pos
            .iter()
            .map(|s| Scored {
                cluster: s.cluster % 2,
                ..*s
            })
            .collect();
        let few_neg: Vec<Scored> = neg
            .iter()
            .map(|s| Scored {
                cluster: s.cluster % 2,
                ..*s
            })
            .collect();
        let (a, b) = bootstrap_auc(&few, &few_neg, 2, 200, 1).unwrap();
        assert!(a <= b);
        assert_eq!(bootstrap_auc(&pos, &neg, 40, 0, 1), None);
    }

    #[test]
    fn oracle_auc_by_hand_and_against_poisson_windows() {
        // No anomaly: chance. Dead channels expecting 100 counts: certain.
        assert!((oracle_auc(1.0, &[50.0]).unwrap() - 0.5).abs() < 1e-4);
        assert!((oracle_auc(0.0, &[100.0]).unwrap() - 1.0).abs() < 1e-6);
        // Dead with Σμ = 1: |z_a| = 1 beats |N(0,1)| with P = 2Φ(1) − 1.
        assert!((oracle_auc(0.0, &[1.0]).unwrap() - 0.682_689).abs() < 1e-4);
        // Degraded 0.8 at Σμ = 170 (5 LS × 34 hits): simulate the pull of
        // Poisson windows and compare.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mu = 170.0;
        let poisson = rand_distr::Poisson::new(mu).unwrap();
        let pull = |x: f64| (x - mu).abs() / mu.sqrt();
        let n = 20_000;
        let pos: Vec<f64> = (0..n)
            .map(|_| pull((0.8 * rng.sample::<f64, _>(poisson)).round()))
            .collect();
        let neg: Vec<f64> = (0..n)
            .map(|_| pull(rng.sample::<f64, _>(poisson)))
            .collect();
        let labels: Vec<bool> = (0..2 * n).map(|i| i < n).collect();
        let all: Vec<f64> = pos.into_iter().chain(neg).collect();
        let simulated = roc_auc(&all, &labels).unwrap();
        let analytic = oracle_auc(0.8, &[mu]).unwrap();
        assert!(
            (simulated - analytic).abs() < 0.01,
            "{simulated} vs {analytic}"
        );
    }

    #[test]
    fn scale_of_case_names() {
        assert_eq!(scale_of("dead"), Some(0.0));
        assert_eq!(scale_of("degraded_0.6"), Some(0.6));
        assert_eq!(scale_of("noisy_hot_2"), Some(2.0));
        assert_eq!(scale_of("rbx_drop_0.9"), Some(0.9));
        assert_eq!(scale_of("fully_hot"), None);
        assert_eq!(scale_of("ramp_0.7_30"), None);
    }
}
