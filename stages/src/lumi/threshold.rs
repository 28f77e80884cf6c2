//! Thresholds on per-LS scores, shared by the scoring stages of the family
//! (autoencoder MSE, χ²): the moving average over neighbouring LS, the
//! threshold per ME (from good calibration runs, fixed, or from the tested
//! run itself as the poster authors' code does), and the flags.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param, within};
use crate::lumi::tables::{LsKey, LsScore};
use crate::stats::quantile;

/// How a score's threshold is set, per ME.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum Threshold {
    /// From the good LS of calibration runs (good runs neither trained on
    /// nor certified): per ME, the score a good LS exceeds with probability
    /// `false_alarm_rate / n_MEs`, so that a good LS is flagged by any ME
    /// with probability ≈ `false_alarm_rate`.
    Calibration {
        /// The calibration runs (required).
        runs: Vec<i64>,
        /// Chance that a good LS is flagged by at least one ME.
        #[serde(default = "default_false_alarm_rate")]
        false_alarm_rate: f64,
        /// `empirical` (default): the calibration scores' interpolated
        /// quantile (at most the largest); `lognormal`: the quantile of a
        /// log-normal fitted to them (reaches beyond the largest one).
        #[serde(default)]
        fit: Fit,
    },
    /// Given per ME.
    Fixed {
        /// Threshold of each ME (every scored ME must be listed).
        values: BTreeMap<String, f64>,
    },
    /// lumisaver (`threshold_for_anom_2`): per run and ME, this quantile of
    /// the tested run's own scores. It flags ≈ (1 − quantile) of every run's
    /// LS whatever happens in it: not the default.
    RunQuantile {
        /// Quantile in (0, 1) (lumisaver: 0.99 or 0.999).
        quantile: f64,
    },
    /// lumisaver (`threshold_for_anom`): per run and ME, median + k·MAD of
    /// the tested run's own scores (lumisaver cuts |score − median| on both
    /// sides; a score below the median is no anomaly here).
    RunMad {
        /// Number of median absolute deviations (lumisaver: 2).
        k: f64,
    },
}

fn default_false_alarm_rate() -> f64 {
    1e-3
}

/// The calibration quantile's estimator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Lognormal,
    /// The default: on the development runs the log-normal misfit the
    /// tails (BENCHMARKS.md).
    #[default]
    Empirical,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Calibration {
            runs: Vec::new(),
            false_alarm_rate: default_false_alarm_rate(),
            fit: Fit::Empirical,
        }
    }
}

impl Threshold {
    /// Checks the threshold; errors name their key in `threshold:`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Threshold::Calibration {
                runs,
                false_alarm_rate,
                ..
            } => {
                if runs.is_empty() {
                    return bad_param("runs", "name at least one good calibration run");
                }
                if !(*false_alarm_rate > 0.0 && *false_alarm_rate < 1.0) {
                    return bad_param("false_alarm_rate", "must be in (0, 1)");
                }
            }
            Threshold::Fixed { values } => {
                if let Some((me, v)) = values.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                    let why = format!("{v} is not a finite score ≥ 0");
                    return within("values", bad_param(me, why));
                }
            }
            Threshold::RunQuantile { quantile } => {
                if !(*quantile > 0.0 && *quantile < 1.0) {
                    return bad_param("quantile", "must be in (0, 1)");
                }
            }
            Threshold::RunMad { k } => {
                if !(*k > 0.0) {
                    return bad_param("k", "must be > 0");
                }
            }
        }
        Ok(())
    }

    /// Calibration runs, if any: the certify stage leaves them out.
    pub fn calibration_runs(&self) -> &[i64] {
        match self {
            Threshold::Calibration { runs, .. } => runs,
            _ => &[],
        }
    }
}

/// Standard normal quantile (Acklam's rational approximation, relative
/// error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Centred moving average of `window` LS (odd; clipped at the run's ends,
/// empty LS left out), over scores in LS order.
pub fn moving_average(scores: &[Option<f64>], window: usize) -> Vec<Option<f64>> {
    let half = window / 2;
    (0..scores.len())
        .map(|i| {
            scores[i]?;
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(scores.len()));
            let values: Vec<f64> = scores[lo..hi].iter().flatten().copied().collect();
            Some(values.iter().sum::<f64>() / values.len() as f64)
        })
        .collect()
}

/// The scores of one method before thresholds: per ME, the LS and their raw scores.
pub type RawScores = BTreeMap<String, Vec<(LsKey, Option<f64>)>>;

/// Moving average per run, thresholds per ME (and run), flags. Returns the
/// rows in (ME, run, LS) order and a line per ME for the log.
pub fn apply(
    raw: RawScores,
    method: &str,
    threshold: &Threshold,
    window: usize,
) -> Result<(Vec<LsScore>, Vec<String>)> {
    let n_mes = raw.len();
    let mut rows = Vec::new();
    let mut log = Vec::new();
    for (me, mut ls) in raw {
        ls.sort_by_key(|(k, _)| (k.run, k.ls));
        // Moving average within each run.
        let mut smoothed = Vec::with_capacity(ls.len());
        for run in ls.chunk_by(|a, b| a.0.run == b.0.run) {
            let scores: Vec<Option<f64>> = run.iter().map(|r| r.1).collect();
            smoothed.extend(moving_average(&scores, window));
        }
        let per_run = |run: i64| -> Vec<f64> {
            let mut v: Vec<f64> = ls
                .iter()
                .zip(&smoothed)
                .filter(|(r, _)| r.0.run == run)
                .filter_map(|(_, s)| *s)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let fixed: Option<f64> = match threshold {
            Threshold::Calibration {
                runs,
                false_alarm_rate,
                fit,
            } => {
                let mut good: Vec<f64> = ls
                    .iter()
                    .zip(&smoothed)
                    .filter(|(r, _)| runs.contains(&r.0.run) && !r.0.bad)
                    .filter_map(|(_, s)| *s)
                    .collect();
                if good.len() < 10 {
                    return Err(StageError::data(format!(
                        "ME `{me}`: {} good LS with entries in calibration runs {runs:?}; a threshold needs ≥ 10",
                        good.len()
                    )));
                }
                good.sort_by(f64::total_cmp);
                let q = 1.0 - false_alarm_rate / n_mes as f64;
                let t = match fit {
                    Fit::Empirical => quantile(&good, q).expect("not empty"),
                    Fit::Lognormal => {
                        let logs: Vec<f64> = good.iter().map(|s| s.max(1e-300).ln()).collect();
                        let n = logs.len() as f64;
                        let mean = logs.iter().sum::<f64>() / n;
                        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0))
                            .sqrt();
                        (mean + normal_quantile(q) * sd).exp()
                    }
                };
                log.push(format!(
                    "{me}: threshold {t:.4e} ({} calibration LS, largest {:.4e}, quantile {q:.5})",
                    good.len(),
                    good[good.len() - 1]
                ));
                Some(t)
            }
            Threshold::Fixed { values } => Some(*values.get(&me).ok_or_else(|| {
                StageError::param(
                    "values",
                    format!(
                        "no threshold for ME `{me}` (given for {:?})",
                        values.keys().collect::<Vec<_>>()
                    ),
                )
            })?),
            _ => None,
        };
        let runs: std::collections::BTreeSet<i64> = ls.iter().map(|r| r.0.run).collect();
        let run_thresholds: BTreeMap<i64, f64> = runs
            .into_iter()
            .map(|run| {
                let v = per_run(run);
                let t = match threshold {
                    Threshold::RunQuantile { quantile: q } => quantile(&v, *q),
                    Threshold::RunMad { k } => quantile(&v, 0.5).map(|median| {
                        let mut dev: Vec<f64> = v.iter().map(|s| (s - median).abs()).collect();
                        dev.sort_by(f64::total_cmp);
                        median + k * quantile(&dev, 0.5).unwrap_or(0.0)
                    }),
                    _ => fixed,
                };
                // A run with no entries in this ME: every LS is flagged anyway.
                (run, t.unwrap_or(f64::INFINITY))
            })
            .collect();
        for ((key, raw_score), score) in ls.into_iter().zip(smoothed) {
            let t = run_thresholds[&key.run];
            rows.push(LsScore {
                over: score.is_none_or(|s| s > t),
                key,
                me: me.clone(),
                method: method.to_string(),
                raw_score,
                score,
                threshold: t,
            });
        }
    }
    Ok((rows, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run: i64, ls: i64, bad: bool) -> LsKey {
        LsKey {
            run,
            ls,
            part: "test".into(),
            events: 50,
            lumi: 0.1,
            truth: if bad { "hcal_barrel_off" } else { "good" }.into(),
            bad,
            pileup: 0.0,
        }
    }

    #[test]
    fn normal_quantile_matches_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.999, 3.090_232_306),
            (1e-4, -3.719_016_485),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-8,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn moving_average_is_centred_clipped_and_skips_empty_ls() {
        let s = [Some(1.0), Some(2.0), None, Some(6.0), Some(9.0)];
        assert_eq!(
            moving_average(&s, 3),
            [Some(1.5), Some(1.5), None, Some(7.5), Some(7.5)]
        );
        assert_eq!(moving_average(&s, 1), s);
    }

    /// Calibration run 1: scores 1..=20 (LS 20 bad, left out); run 2 tested.
    fn raw() -> RawScores {
        let mut ls: Vec<(LsKey, Option<f64>)> = (1..=20)
            .map(|i| (key(1, i, i == 20), Some(i as f64)))
            .collect();
        ls.extend([
            (key(2, 1, false), Some(5.0)),
            (key(2, 2, true), Some(40.0)),
            (key(2, 3, false), None),
        ]);
        BTreeMap::from([("met".to_string(), ls)])
    }

    #[test]
    fn thresholds_by_hand() {
        // Empirical: quantile 1 − 0.1 / 1 of 1..=19 = 17.2 (interpolated).
        let t = Threshold::Calibration {
            runs: vec![1],
            false_alarm_rate: 0.1,
            fit: Fit::Empirical,
        };
        let (rows, _) = apply(raw(), "ae", &t, 1).unwrap();
        let run2: Vec<&LsScore> = rows.iter().filter(|r| r.key.run == 2).collect();
        assert!((run2[0].threshold - 17.2).abs() < 1e-12);
        assert_eq!(
            run2.iter().map(|r| r.over).collect::<Vec<_>>(),
            [false, true, true],
            "LS 3 is empty: flagged"
        );
        // Log-normal: exp(mean + z sd) of ln 1..=19.
        let t = Threshold::Calibration {
            runs: vec![1],
            false_alarm_rate: 0.1,
            fit: Fit::Lognormal,
        };
        let logs: Vec<f64> = (1..=19).map(|i| (i as f64).ln()).collect();
        let mean = logs.iter().sum::<f64>() / 19.0;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / 18.0).sqrt();
        let (rows, _) = apply(raw(), "ae", &t, 1).unwrap();
        let want = (mean + 1.281_551_565_5 * sd).exp();
        assert!(
            (rows[0].threshold - want).abs() < 1e-6 * want,
            "{}",
            rows[0].threshold
        );
        // Run's own median + 2 MAD: run 2's scores {5, 40}: median 22.5, MAD 17.5.
        let (rows, _) = apply(raw(), "ae", &Threshold::RunMad { k: 2.0 }, 1).unwrap();
        let run2: Vec<&LsScore> = rows.iter().filter(|r| r.key.run == 2).collect();
        assert_eq!(run2[0].threshold, 22.5 + 35.0);
        // Fixed, with a moving average of 3 (run 2 LS 1: (5 + 40) / 2).
        let t = Threshold::Fixed {
            values: BTreeMap::from([("met".into(), 20.0)]),
        };
        let (rows, _) = apply(raw(), "chi2", &t, 3).unwrap();
        let first = rows.iter().find(|r| r.key.run == 2).unwrap();
        assert_eq!((first.score, first.over), (Some(22.5), true));
        let t = Threshold::Fixed {
            values: BTreeMap::from([("jet_eta".into(), 20.0)]),
        };
        let err = apply(raw(), "chi2", &t, 1).unwrap_err().to_string();
        assert!(err.contains("no threshold for ME `met`"), "{err}");
    }

    #[test]
    fn too_few_calibration_ls_and_bad_parameters_are_refused() {
        let t = Threshold::Calibration {
            runs: vec![2],
            false_alarm_rate: 0.1,
            fit: Fit::Empirical,
        };
        let err = apply(raw(), "ae", &t, 1).unwrap_err().to_string();
        assert!(err.contains("ME `met`: 1 good LS"), "{err}");
        assert!(Threshold::default().validate().is_err(), "runs required");
        let err = Threshold::RunQuantile { quantile: 1.0 }
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("quantile"));
    }
}
