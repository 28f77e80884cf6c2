//! `method_scan`: scoring methods compared where the data can separate
//! them — recall on the bad LS of each point of a scan (e.g. glitch
//! fractions mixed into LS) at one false-alarm rate, set for every method
//! the same way on good calibration LS, with paired bootstrap intervals of
//! each method's recall minus a baseline's on the same LS.
//!
//! An LS's score under a method is its `min_mes`-th largest ME score over
//! that ME's threshold (certify's rule "at least `min_mes` MEs over" as a
//! number; an ME empty in the LS counts as infinitely over). The LS
//! threshold is the (1 − `false_alarm_rate`) quantile of that score over
//! the good LS of the calibration runs: no test LS chooses it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::lumi::tables::{read_scores, require_ls_columns, scores_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::{quantile, wilson};
use dqm_schemas::{column, nullable};

/// Recall of several methods at one false-alarm rate, point by point.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MethodScan {
    /// The scan's points: a label (e.g. `barrel 0.05`) and the runs whose
    /// LS it counts.
    pub points: BTreeMap<String, Vec<i64>>,
    /// Good runs whose good LS set every method's LS threshold.
    pub calibration_runs: Vec<i64>,
    /// Chance that a good calibration LS is over the LS threshold.
    pub false_alarm_rate: f64,
    /// An LS's score is its `min_mes`-th largest ME score / threshold.
    pub min_mes: usize,
    /// Method the others' recall is compared with, LS by LS.
    pub baseline: String,
    /// Bootstrap resamples of each point's bad LS.
    pub bootstrap: usize,
    /// Seed of the resamples.
    pub seed: u64,
}

impl Default for MethodScan {
    fn default() -> Self {
        Self {
            points: BTreeMap::new(),
            calibration_runs: Vec::new(),
            false_alarm_rate: 0.01,
            min_mes: 2,
            baseline: "chi2".into(),
            bootstrap: 2000,
            seed: 1,
        }
    }
}

impl StageConfig for MethodScan {
    const KIND: &'static str = "method_scan";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Per-LS scores of several methods -> recall per scan point at one false-alarm rate set on good calibration LS, paired bootstrap intervals of each method minus a baseline";
    const INPUTS: (usize, usize) = (1, 9);
    const INPUT_ROLES: &'static str =
        "scores tables (`lumi_ae_score`, `lumi_chi2_score`), one method each or more";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![scores_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.points.is_empty() || self.points.values().any(Vec::is_empty) {
            return bad_param("points", "give at least one point, each with its runs");
        }
        if self.calibration_runs.is_empty() {
            return bad_param("calibration_runs", "name at least one good run");
        }
        if !(self.false_alarm_rate > 0.0 && self.false_alarm_rate < 1.0) {
            return bad_param("false_alarm_rate", "must be in (0, 1)");
        }
        if self.min_mes == 0 {
            return bad_param("min_mes", "must be ≥ 1");
        }
        if self.bootstrap < 100 {
            return bad_param("bootstrap", "give at least 100 resamples");
        }
        Ok(())
    }
}

/// Values by (run, LS).
type ByLs<T> = BTreeMap<(i64, i64), T>;

/// One LS of one method: its score and truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LsScoreOf {
    pub score: f64,
    pub bad: bool,
}

/// The `k`-th largest of `ratios` (infinite when an ME is empty; −∞ when
/// there are fewer than k).
pub fn kth_largest(ratios: &mut [f64], k: usize) -> f64 {
    ratios.sort_by(|a, b| b.total_cmp(a));
    ratios.get(k - 1).copied().unwrap_or(f64::NEG_INFINITY)
}

/// The LS threshold: the (1 − rate) quantile of the calibration scores.
pub fn ls_threshold(mut calibration: Vec<f64>, rate: f64) -> Option<f64> {
    calibration.sort_by(f64::total_cmp);
    quantile(&calibration, 1.0 - rate)
}

/// 95 % percentile interval of the mean difference of paired 0/1 outcomes
/// (`a` − `b`, LS by LS), from `n` resamples.
pub fn paired_bootstrap(a: &[bool], b: &[bool], n: usize, rng: &mut ChaCha8Rng) -> (f64, f64) {
    let m = a.len();
    let diffs: Vec<f64> = (0..n)
        .map(|_| {
            let mut d = 0i64;
            for _ in 0..m {
                let i = rng.random_range(0..m);
                d += i64::from(a[i]) - i64::from(b[i]);
            }
            d as f64 / m as f64
        })
        .collect();
    percentile_interval(diffs)
}

/// The central 95 % of bootstrap replicas.
fn percentile_interval(mut replicas: Vec<f64>) -> (f64, f64) {
    replicas.sort_by(f64::total_cmp);
    (
        quantile(&replicas, 0.025).unwrap_or(0.0),
        quantile(&replicas, 0.975).unwrap_or(0.0),
    )
}

/// Recall on `bad` at the threshold where a fraction `rate` of `good` is
/// over: the ROC point at that false-alarm rate.
pub fn recall_at_rate(bad: &[f64], good: &[f64], rate: f64) -> f64 {
    let t = ls_threshold(good.to_vec(), rate).unwrap_or(f64::INFINITY);
    bad.iter().filter(|&&s| s > t).count() as f64 / bad.len() as f64
}

/// Scores of one method on a point's LS, in the point's LS order.
pub struct PointScores {
    pub bad: Vec<f64>,
    pub good: Vec<f64>,
}

/// 95 % percentile interval of `recall_at_rate(a) − recall_at_rate(b)`,
/// resampling the bad and the good LS (the same LS for both methods, so
/// the threshold's own uncertainty is in the interval).
pub fn paired_bootstrap_at_rate(
    a: &PointScores,
    b: &PointScores,
    rate: f64,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> (f64, f64) {
    let (nb, ng) = (a.bad.len(), a.good.len());
    let diffs: Vec<f64> = (0..n)
        .map(|_| {
            let bad: Vec<usize> = (0..nb).map(|_| rng.random_range(0..nb)).collect();
            let good: Vec<usize> = (0..ng).map(|_| rng.random_range(0..ng)).collect();
            let recall = |p: &PointScores| {
                let bad: Vec<f64> = bad.iter().map(|&i| p.bad[i]).collect();
                let good: Vec<f64> = good.iter().map(|&i| p.good[i]).collect();
                recall_at_rate(&bad, &good, rate)
            };
            recall(a) - recall(b)
        })
        .collect();
    percentile_interval(diffs)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("point", DataType::Utf8, "Point of the scan"),
        column("method", DataType::Utf8, "Scoring method"),
        column(
            "threshold",
            DataType::Float64,
            "LS threshold (on the min_mes-th largest score / ME threshold), from the calibration LS",
        ),
        column("bad_ls", DataType::Int64, "Bad LS of the point's runs"),
        column("found", DataType::Int64, "Of those, over the threshold"),
        nullable("recall", DataType::Float64, "found / bad_ls"),
        nullable("recall_lo", DataType::Float64, "Wilson 95 % interval, low"),
        nullable("recall_hi", DataType::Float64, "… high"),
        column("good_ls", DataType::Int64, "Good LS of the point's runs"),
        column(
            "false_alarms",
            DataType::Int64,
            "Of those, over the threshold",
        ),
        nullable(
            "false_alarm_rate",
            DataType::Float64,
            "false_alarms / good_ls (the calibration target is the stage's `false_alarm_rate`)",
        ),
        column("baseline", DataType::Utf8, "Method compared with"),
        nullable(
            "recall_minus_baseline",
            DataType::Float64,
            "recall − the baseline's on the same bad LS (null for the baseline)",
        ),
        nullable(
            "diff_lo",
            DataType::Float64,
            "Paired bootstrap 95 % interval of the difference, low",
        ),
        nullable("diff_hi", DataType::Float64, "… high"),
        column(
            "recall_at_fa",
            DataType::Float64,
            "Recall at the threshold where `false_alarm_rate` of the point's good LS are over: every method at the same realized false-alarm rate (the ROC point; it shows how well the score separates, not what the calibrated threshold does)",
        ),
        nullable(
            "at_fa_minus_baseline",
            DataType::Float64,
            "recall_at_fa − the baseline's (null for the baseline)",
        ),
        nullable(
            "at_fa_diff_lo",
            DataType::Float64,
            "Paired bootstrap 95 % interval (bad and good LS resampled), low",
        ),
        nullable("at_fa_diff_hi", DataType::Float64, "… high"),
    ]))
}

/// A row of the output.
struct Row {
    point: String,
    method: String,
    threshold: f64,
    bad: Vec<bool>,
    good_flagged: Vec<bool>,
    diff: Option<(f64, f64, f64)>,
    at_fa: f64,
    at_fa_diff: Option<(f64, f64, f64)>,
}

impl MethodScan {
    /// Per method, per (run, LS): the LS's score and truth.
    fn ls_scores(&self, ctx: &RunContext<'_>) -> Result<BTreeMap<String, ByLs<LsScoreOf>>> {
        let mut ratios: BTreeMap<String, ByLs<(Vec<f64>, bool)>> = BTreeMap::new();
        for input in ctx.inputs.iter() {
            for r in read_scores(input)? {
                let ratio = match r.score {
                    Some(s) if r.threshold > 0.0 => s / r.threshold,
                    Some(s) => {
                        if s > r.threshold {
                            f64::INFINITY
                        } else {
                            0.0
                        }
                    }
                    None => f64::INFINITY,
                };
                let e = ratios
                    .entry(r.method)
                    .or_default()
                    .entry((r.key.run, r.key.ls))
                    .or_insert((Vec::new(), r.key.bad));
                e.0.push(ratio);
            }
        }
        Ok(ratios
            .into_iter()
            .map(|(m, by_ls)| {
                let scores = by_ls
                    .into_iter()
                    .map(|(at, (mut r, bad))| {
                        (
                            at,
                            LsScoreOf {
                                score: kth_largest(&mut r, self.min_mes),
                                bad,
                            },
                        )
                    })
                    .collect();
                (m, scores)
            })
            .collect())
    }
}

impl Stage for MethodScan {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        for (i, schema) in inputs.iter().enumerate() {
            require_ls_columns(
                schema,
                &format!("scores #{}", i + 1),
                "a scores table (`lumi_ae_score`, `lumi_chi2_score`)",
                &[
                    ("me", DataType::Utf8),
                    ("method", DataType::Utf8),
                    ("score", DataType::Float64),
                    ("threshold", DataType::Float64),
                ],
            )?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let methods = self.ls_scores(ctx)?;
        if !methods.contains_key(&self.baseline) {
            let known: Vec<&String> = methods.keys().collect();
            let why = format!(
                "no scores of method `{}` (methods: {known:?})",
                self.baseline
            );
            return Err(StageError::param("baseline", why));
        }
        let thresholds = self.thresholds(&methods)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut rows = Vec::new();
        for (point, runs) in &self.points {
            rows.extend(self.point_rows(point, runs, &methods, &thresholds, &mut rng)?);
        }
        for r in &rows {
            if let Some((d, lo, hi)) = r.diff {
                ctx.reporter.info(&format!(
                    "{}: {} recall − {}'s {d:+.3} [{lo:+.3}, {hi:+.3}] on {} bad LS",
                    r.point,
                    r.method,
                    self.baseline,
                    r.bad.len()
                ));
            }
        }
        ctx.output.write("main", rows_batch(&rows, &self.baseline)?)
    }
}

/// Per method, per (run, LS): the LS's score and truth.
type Methods = BTreeMap<String, ByLs<LsScoreOf>>;

impl MethodScan {
    /// Each method's LS threshold from the good LS of the calibration runs.
    fn thresholds(&self, methods: &Methods) -> Result<BTreeMap<String, f64>> {
        let mut thresholds = BTreeMap::new();
        for (m, scores) in methods {
            let calibration: Vec<f64> = scores
                .iter()
                .filter(|(at, s)| self.calibration_runs.contains(&at.0) && !s.bad)
                .map(|(_, s)| s.score)
                .collect();
            let t = ls_threshold(calibration, self.false_alarm_rate).ok_or_else(|| {
                let why = format!(
                    "method `{m}` has no good LS in runs {:?}",
                    self.calibration_runs
                );
                StageError::param("calibration_runs", why)
            })?;
            thresholds.insert(m.clone(), t);
        }
        Ok(thresholds)
    }

    /// The rows of one point: every method on the point's bad and good LS.
    fn point_rows(
        &self,
        point: &str,
        runs: &[i64],
        methods: &Methods,
        thresholds: &BTreeMap<String, f64>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Row>> {
        let base = &methods[&self.baseline];
        let of_point = |bad: bool| -> Vec<(i64, i64)> {
            base.iter()
                .filter(|(at, s)| runs.contains(&at.0) && s.bad == bad)
                .map(|(at, _)| *at)
                .collect()
        };
        let (bad_ls, good_ls) = (of_point(true), of_point(false));
        if bad_ls.is_empty() {
            let why = format!("point `{point}`: runs {runs:?} have no bad LS");
            return Err(StageError::param("points", why));
        }
        let point_scores = |m: &str| -> Result<PointScores> {
            let of = |ls: &[(i64, i64)]| -> Result<Vec<f64>> {
                ls.iter()
                    .map(|at| {
                        methods[m].get(at).map(|s| s.score).ok_or_else(|| {
                            StageError::data(format!(
                                "method `{m}` has no score of run {} LS {}",
                                at.0, at.1
                            ))
                        })
                    })
                    .collect()
            };
            Ok(PointScores {
                bad: of(&bad_ls)?,
                good: of(&good_ls)?,
            })
        };
        let rate = self.false_alarm_rate;
        let base_scores = point_scores(&self.baseline)?;
        let base_flags: Vec<bool> = (base_scores.bad.iter())
            .map(|&s| s > thresholds[&self.baseline])
            .collect();
        let base_at_fa = recall_at_rate(&base_scores.bad, &base_scores.good, rate);
        let mut rows = Vec::new();
        for m in methods.keys() {
            let t = thresholds[m];
            let scores = point_scores(m)?;
            let bad: Vec<bool> = scores.bad.iter().map(|&s| s > t).collect();
            let at_fa = recall_at_rate(&scores.bad, &scores.good, rate);
            let compared = m != &self.baseline;
            let diff = compared.then(|| {
                let found = |f: &[bool]| f.iter().filter(|x| **x).count() as f64;
                let d = (found(&bad) - found(&base_flags)) / bad.len() as f64;
                let (lo, hi) = paired_bootstrap(&bad, &base_flags, self.bootstrap, rng);
                (d, lo, hi)
            });
            let at_fa_diff = compared.then(|| {
                let (lo, hi) =
                    paired_bootstrap_at_rate(&scores, &base_scores, rate, self.bootstrap, rng);
                (at_fa - base_at_fa, lo, hi)
            });
            rows.push(Row {
                point: point.to_string(),
                method: m.clone(),
                threshold: t,
                good_flagged: scores.good.iter().map(|&s| s > t).collect(),
                bad,
                diff,
                at_fa,
                at_fa_diff,
            });
        }
        Ok(rows)
    }
}

/// The output table.
fn rows_batch(rows: &[Row], baseline: &str) -> Result<RecordBatch> {
    let count = |v: &[bool]| v.iter().filter(|f| **f).count() as u64;
    let opt = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let strs = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from_iter_values(v)) };
    let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from_iter_values(v)) };
    let recall = |r: &Row| wilson(count(&r.bad), r.bad.len() as u64);
    let columns: Vec<ArrayRef> = vec![
        strs(rows.iter().map(|r| r.point.as_str()).collect()),
        strs(rows.iter().map(|r| r.method.as_str()).collect()),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.threshold),
        )),
        ints(rows.iter().map(|r| r.bad.len() as i64).collect()),
        ints(rows.iter().map(|r| count(&r.bad) as i64).collect()),
        opt(rows
            .iter()
            .map(|r| Some(count(&r.bad) as f64 / r.bad.len() as f64))
            .collect()),
        opt(rows.iter().map(|r| recall(r).map(|i| i.0)).collect()),
        opt(rows.iter().map(|r| recall(r).map(|i| i.1)).collect()),
        ints(rows.iter().map(|r| r.good_flagged.len() as i64).collect()),
        ints(rows.iter().map(|r| count(&r.good_flagged) as i64).collect()),
        opt(rows
            .iter()
            .map(|r| {
                let n = r.good_flagged.len();
                (n > 0).then(|| count(&r.good_flagged) as f64 / n as f64)
            })
            .collect()),
        strs(rows.iter().map(|_| baseline).collect()),
        opt(rows.iter().map(|r| r.diff.map(|d| d.0)).collect()),
        opt(rows.iter().map(|r| r.diff.map(|d| d.1)).collect()),
        opt(rows.iter().map(|r| r.diff.map(|d| d.2)).collect()),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.at_fa))),
        opt(rows.iter().map(|r| r.at_fa_diff.map(|d| d.0)).collect()),
        opt(rows.iter().map(|r| r.at_fa_diff.map(|d| d.1)).collect()),
        opt(rows.iter().map(|r| r.at_fa_diff.map(|d| d.2)).collect()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ls_score_is_the_kth_largest_ratio() {
        assert_eq!(kth_largest(&mut [0.5, 3.0, 1.5], 2), 1.5);
        assert_eq!(
            kth_largest(&mut [0.5, f64::INFINITY, 1.5], 1),
            f64::INFINITY
        );
        assert_eq!(kth_largest(&mut [0.5], 2), f64::NEG_INFINITY);
        // 100 calibration scores 1..=100: the 0.99 quantile lies between 99 and 100.
        let t = ls_threshold((1..=100).map(f64::from).collect(), 0.01).unwrap();
        assert!(t > 99.0 && t < 100.0, "{t}");
    }

    /// Paired bootstrap by construction: identical outcomes give [0, 0];
    /// a method finding 30 more of 100 LS gives an interval around +0.3
    /// that excludes 0.
    #[test]
    fn paired_bootstrap_brackets_the_difference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let a: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert_eq!(paired_bootstrap(&a, &a, 500, &mut rng), (0.0, 0.0));
        let b: Vec<bool> = (0..100).map(|i| i < 20).collect();
        let c: Vec<bool> = (0..100).map(|i| i < 50).collect();
        let (lo, hi) = paired_bootstrap(&c, &b, 2000, &mut rng);
        assert!(
            lo > 0.18 && lo < 0.3 && hi > 0.3 && hi < 0.42,
            "[{lo}, {hi}]"
        );
    }

    /// At equal false-alarm rate on the good LS: a method whose scores are
    /// those of another plus a constant has the same recall; one whose bad
    /// LS all lie above every good LS has recall 1.
    #[test]
    fn recall_at_a_rate_is_invariant_to_the_score_scale() {
        let good: Vec<f64> = (0..100).map(f64::from).collect();
        let bad: Vec<f64> = (0..100).map(|i| f64::from(i) + 50.0).collect();
        let r = recall_at_rate(&bad, &good, 0.1);
        // Threshold ≈ 89.1: bad scores 90..149 are over: 60 of 100.
        assert!((r - 0.6).abs() < 1e-12, "{r}");
        let shifted = PointScores {
            bad: bad.iter().map(|s| s + 1000.0).collect(),
            good: good.iter().map(|s| s + 1000.0).collect(),
        };
        assert_eq!(recall_at_rate(&shifted.bad, &shifted.good, 0.1), r);
        let plain = PointScores { bad, good };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            paired_bootstrap_at_rate(&shifted, &plain, 0.1, 200, &mut rng),
            (0.0, 0.0)
        );
        let perfect = PointScores {
            bad: vec![1e9; 100],
            good: plain.good.clone(),
        };
        assert_eq!(recall_at_rate(&perfect.bad, &perfect.good, 0.01), 1.0);
        let (lo, hi) = paired_bootstrap_at_rate(&perfect, &plain, 0.1, 500, &mut rng);
        assert!(lo > 0.25 && hi < 0.55, "[{lo}, {hi}]");
    }
}
