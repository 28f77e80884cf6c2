//! `lumi_ae_score`: the poster's per-LS reconstruction error. Each LS's
//! histogram of each ME goes through that ME's autoencoder; the score is the
//! MSE over the n bins, 1/n Σ (y − ŷ)², in the min-max scale the network was
//! trained in (as lumisaver computes it). Thresholds per ME (by default from
//! good calibration runs) flag the LS; plots: MSE versus LS per run with the
//! truly bad LS shaded (poster Figs. 3, 5), and input versus reconstruction
//! of the worst LS of each ME (Fig. 6).

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, StageError};
use crate::lumi::model::LumiAe;
use crate::lumi::scoring::{ScoreOptions, finish, validate_method, validate_options};
use crate::lumi::tables::{
    LsHistogram, LumiAeCard, bin_ranges, by_me, histograms_schema, min_max_scaled, read_histograms,
    read_models, require_histograms,
};
use crate::lumi::threshold::{RawScores, Threshold};
use crate::nn::{DeviceChoice, exclusive, load_weights, one_thread, require_models};
use crate::plots::{LinePanel, Series, line_panels};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every LS of every ME with the ME's autoencoder.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiAeScore {
    /// How each ME's threshold is set (`from: calibration` with `runs`,
    /// `false_alarm_rate`, `fit`; `fixed` with `values`; `run_quantile`
    /// with `quantile`; `run_mad` with `k`).
    pub threshold: Threshold,
    /// LS in the centred moving average taken before the threshold (odd;
    /// 1: none; lumisaver offers 5).
    pub moving_average: usize,
    /// Runs plotted (MSE versus LS); empty: every run but the calibration ones.
    pub plot_runs: Vec<i64>,
    /// Where to run the networks: auto, cpu or cuda.
    pub device: DeviceChoice,
    /// Name in the `method` column (to certify several autoencoders side
    /// by side).
    pub method: String,
}

impl Default for LumiAeScore {
    fn default() -> Self {
        Self {
            threshold: Threshold::default(),
            moving_average: 1,
            plot_runs: Vec::new(),
            device: DeviceChoice::Auto,
            method: "ae".into(),
        }
    }
}

impl StageConfig for LumiAeScore {
    const KIND: &'static str = "lumi_ae_score";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Autoencoders + per-LS histograms -> reconstruction MSE per LS and ME, thresholds, flags, MSE-vs-LS plots";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "models, histograms";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![crate::lumi::tables::models_schema(), histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        validate_method(&self.method)?;
        validate_options(&self.threshold, self.moving_average)
    }
}

/// Raw scores per ME, and per ME its worst certified LS with the
/// reconstruction (histogram units) and MSE.
struct Scored {
    raw: RawScores,
    worst: BTreeMap<String, (LsHistogram, Vec<f64>, f64)>,
}

impl LumiAeScore {
    fn score(&self, ctx: &RunContext<'_>) -> Result<Scored> {
        let models = read_models(&ctx.inputs[0])?;
        let hist = read_histograms(&ctx.inputs[1])?;
        let by_me = by_me(&hist, &ctx.inputs[1].name)?;
        let device = self.device.resolve()?;
        let skip = self.threshold.calibration_runs();
        let mut scored = Scored {
            raw: BTreeMap::new(),
            worst: BTreeMap::new(),
        };
        for (me, rows) in by_me {
            let (card, weights) = models.get(me).ok_or_else(|| {
                StageError::data(format!(
                    "input `{}` has histograms of ME `{me}` but input `{}` has no model of it (models of {:?})",
                    ctx.inputs[1].name,
                    ctx.inputs[0].name,
                    models.keys().collect::<Vec<_>>()
                ))
            })?;
            if let Some(h) = rows.iter().find(|h| h.counts.len() != card.bins) {
                return Err(StageError::data(format!(
                    "input `{}`, column `counts`: ME `{me}` run {} LS {} has {} bins, its model {} (histograms binned otherwise than the training ones)",
                    ctx.inputs[1].name,
                    h.key.run,
                    h.key.ls,
                    h.counts.len(),
                    card.bins
                )));
            }
            let vs = tch::nn::VarStore::new(device);
            let model = LumiAe::new(&vs.root(), card.bins as i64, card.conditions(), &card.arch);
            load_weights(
                &vs,
                weights,
                &format!("input `{}`, ME `{me}`", ctx.inputs[0].name),
            )?;
            // Each LS's scale: the training ranges, or (lumisaver) its run's.
            let mut ranges: BTreeMap<i64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
            if card.per_run_scaling {
                let mut by_run: BTreeMap<i64, Vec<&[f64]>> = BTreeMap::new();
                for h in &rows {
                    by_run.entry(h.key.run).or_default().push(&h.counts);
                }
                for (run, counts) in by_run {
                    ranges.insert(run, bin_ranges(counts.into_iter()));
                }
            }
            let range_of = |h: &LsHistogram| match ranges.get(&h.key.run) {
                Some((lo, hi)) => (lo.as_slice(), hi.as_slice()),
                None => (card.min.as_slice(), card.max.as_slice()),
            };
            let scaled: Vec<Vec<f32>> = rows
                .iter()
                .map(|h| {
                    let (lo, hi) = range_of(h);
                    min_max_scaled(&h.counts, lo, hi)
                })
                .collect();
            let n = rows.len() as i64;
            let x: Vec<f32> = rows
                .iter()
                .zip(&scaled)
                .flat_map(|(h, s)| card.inputs(s.clone(), h.key.pileup))
                .collect();
            let x = Tensor::from_slice(&x)
                .view([n, card.bins as i64 + card.conditions()])
                .to_device(device);
            let y: Vec<f32> = scaled.concat();
            let y = Tensor::from_slice(&y)
                .view([n, card.bins as i64])
                .to_device(device);
            let recon = tch::no_grad(|| model.forward(&x).0);
            let mse = Vec::<f64>::try_from(
                (&recon - &y)
                    .square()
                    .mean_dim(1, false, Kind::Double)
                    .to_device(tch::Device::Cpu),
            )
            .map_err(anyhow::Error::from)?;
            let raw: Vec<_> = rows
                .iter()
                .zip(&mse)
                .map(|(h, &m)| (h.key.clone(), (h.entries > 0).then_some(m)))
                .collect();
            // The worst LS among those certified, for Fig. 6.
            if let Some((i, &m)) = rows
                .iter()
                .zip(&mse)
                .enumerate()
                .filter(|(_, (h, _))| h.entries > 0 && !skip.contains(&h.key.run))
                .map(|(i, (_, m))| (i, m))
                .max_by(|a, b| a.1.total_cmp(b.1))
            {
                let r = Vec::<f32>::try_from(recon.get(i as i64).to_device(tch::Device::Cpu))
                    .map_err(anyhow::Error::from)?;
                let (lo, hi) = range_of(rows[i]);
                let unscaled = LumiAeCard {
                    min: lo.to_vec(),
                    max: hi.to_vec(),
                    ..card.clone()
                }
                .unscale(&r);
                scored
                    .worst
                    .insert(me.to_string(), (rows[i].clone(), unscaled, m));
            }
            scored.raw.insert(me.to_string(), raw);
        }
        Ok(scored)
    }
}

fn plot_worst(
    path: &std::path::Path,
    worst: &BTreeMap<String, (LsHistogram, Vec<f64>, f64)>,
) -> Result<()> {
    let panels: Vec<LinePanel> = worst
        .iter()
        .map(|(me, (h, recon, mse))| {
            let bins = |v: &[f64]| v.iter().enumerate().map(|(b, &c)| (b as f64, c)).collect();
            LinePanel {
                title: format!(
                    "{me}: run {} LS {} ({}), MSE {mse:.3e}",
                    h.key.run, h.key.ls, h.key.truth
                ),
                x_label: "bin (0: underflow)".into(),
                y_label: "fraction".into(),
                series: vec![
                    Series {
                        name: "input".into(),
                        points: bins(&h.counts),
                    },
                    Series {
                        name: "reconstruction".into(),
                        points: bins(recon),
                    },
                ],
                shaded: Vec::new(),
                hline: None,
            }
        })
        .collect();
    line_panels(
        path,
        "Worst LS of each ME: input and reconstruction",
        &panels,
        3,
    )
}

impl Stage for LumiAeScore {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let why = "the models table of `lumi_ae_train`";
        crate::input::require_column(&inputs[0], "models", "me", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        require_models(&inputs[0], "models", why)?;
        require_histograms(&inputs[1], "histograms")?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: crate::lumi::tables::scores_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let scored = {
            let _torch = exclusive();
            let _threads = one_thread();
            self.score(ctx)?
        };
        if !scored.worst.is_empty() {
            plot_worst(&ctx.artifacts.join("worst_ls.png"), &scored.worst)?;
        }
        let options = ScoreOptions {
            method: &self.method,
            score_name: "MSE",
            threshold: &self.threshold,
            moving_average: self.moving_average,
            plot_runs: &self.plot_runs,
        };
        finish(scored.raw, &options, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::lumi::tables::read_scores;
    use crate::lumi::test_support::lumi_shapes;

    #[test]
    fn shifted_ls_score_high_and_foreign_histograms_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hist = lumi_shapes(dir.path(), &["a", "b"], 22);
        let train = crate::lumi::test_support::small_lumi_ae(60);
        let models = run_in_memory(&train, std::slice::from_ref(&hist))
            .unwrap()
            .table("main");
        let models = input_from_batch("ae", &models, &dir.path().join("m.parquet")).unwrap();
        // Thresholds from run 1's LS: the shifted run 9 is over in both MEs.
        let score = LumiAeScore {
            threshold: Threshold::Calibration {
                runs: vec![1],
                false_alarm_rate: 0.01,
                fit: crate::lumi::threshold::Fit::Empirical,
            },
            device: DeviceChoice::Cpu,
            ..Default::default()
        };
        let out = run_in_memory(&score, &[models.clone(), hist]).unwrap();
        let table = out.table("main");
        let scores =
            read_scores(&input_from_batch("s", &table, &dir.path().join("s.parquet")).unwrap())
                .unwrap();
        assert_eq!(scores.len(), 130 * 2);
        let run9: Vec<_> = scores.iter().filter(|r| r.key.run == 9).collect();
        assert!(run9.iter().all(|r| r.over), "shifted LS flagged");
        let good_over = scores.iter().filter(|r| r.key.run == 1 && r.over).count();
        assert!(good_over <= 4, "{good_over} good LS over");
        // A ME without a model, and histograms binned otherwise, are refused.
        let other = lumi_shapes(dir.path(), &["a", "c"], 22);
        let err = run_in_memory(&score, &[models.clone(), other])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ME `c`") && err.contains("no model"), "{err}");
        let rebinned = lumi_shapes(dir.path(), &["a"], 20);
        let err = run_in_memory(&score, &[models, rebinned])
            .unwrap_err()
            .to_string();
        assert!(err.contains("20 bins, its model 22"), "{err}");
    }

    /// MSE per LS of run 9 of [`pileup_shapes`] under an autoencoder
    /// trained with `train`, the LS's pile-up multiplied by `factor`.
    /// Run 9's raw scores by `train`'s models (trained once), with every
    /// LS's pile-up scaled by each of `factors`.
    fn run9_mse(train: &crate::lumi::lumi_ae_train::LumiAeTrain, factors: &[f64]) -> Vec<Vec<f64>> {
        let dir = tempfile::tempdir().unwrap();
        let hist = crate::lumi::test_support::pileup_shapes(dir.path());
        let models = run_in_memory(train, std::slice::from_ref(&hist))
            .unwrap()
            .table("main");
        let models = input_from_batch("ae", &models, &dir.path().join("m.parquet")).unwrap();
        let rows = crate::lumi::tables::read_histograms(&hist).unwrap();
        factors
            .iter()
            .enumerate()
            .map(|(k, &factor)| {
                let mut rows = rows.clone();
                rows.iter_mut().for_each(|h| h.key.pileup *= factor);
                let batch = crate::lumi::tables::histograms_batch(&rows).unwrap();
                let hist = input_from_batch(
                    "histograms",
                    &batch,
                    &dir.path().join(format!("h{k}.parquet")),
                )
                .unwrap();
                let score = LumiAeScore {
                    threshold: Threshold::RunQuantile { quantile: 0.5 },
                    device: DeviceChoice::Cpu,
                    ..Default::default()
                };
                let table = run_in_memory(&score, &[models.clone(), hist])
                    .unwrap()
                    .table("main");
                let scores = read_scores(
                    &input_from_batch("s", &table, &dir.path().join(format!("s{k}.parquet")))
                        .unwrap(),
                )
                .unwrap();
                scores
                    .iter()
                    .filter(|r| r.key.run == 9)
                    .map(|r| r.raw_score.unwrap())
                    .collect()
            })
            .collect()
    }

    /// The conditional autoencoder reads the LS's pile-up: the same
    /// histograms score otherwise when their pile-up is halved, and the
    /// plain autoencoder's scores do not move.
    #[test]
    fn the_conditional_autoencoder_reads_the_pileup() {
        let plain = crate::lumi::test_support::small_lumi_ae(150);
        let conditional = crate::lumi::lumi_ae_train::LumiAeTrain {
            condition_on_pileup: true,
            ..plain.clone()
        };
        let moved = |train: &crate::lumi::lumi_ae_train::LumiAeTrain| {
            let scores = run9_mse(train, &[1.0, 0.5]);
            let (a, b) = (&scores[0], &scores[1]);
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / x)
                .fold(0.0, f64::max)
        };
        assert_eq!(
            moved(&plain),
            0.0,
            "the plain autoencoder has no pile-up input"
        );
        // The plain model moves by exactly 0; the conditional one by how
        // much its training made it use the pile-up input (0.0024 to > 0.01
        // depending on the thread interleaving of the full suite).
        let conditional_moved = moved(&conditional);
        assert!(conditional_moved > 1e-4, "{conditional_moved}");
    }

    /// lumisaver's per-run scaling: a run scaled on its own LS scores the
    /// same whatever its counts' unit (raw counts ×10 give the same MSE),
    /// where the training-range scaling does not.
    #[test]
    fn per_run_scaling_scales_each_run_on_itself() {
        let dir = tempfile::tempdir().unwrap();
        let hist = lumi_shapes(dir.path(), &["a"], 22);
        let scores = |scaling: crate::lumi::lumi_ae_train::Scaling| {
            let train = crate::lumi::lumi_ae_train::LumiAeTrain {
                scaling,
                ..crate::lumi::test_support::small_lumi_ae(20)
            };
            let models = run_in_memory(&train, std::slice::from_ref(&hist))
                .unwrap()
                .table("main");
            let models = input_from_batch("ae", &models, &dir.path().join("m.parquet")).unwrap();
            let mut rows = crate::lumi::tables::read_histograms(&hist).unwrap();
            let plain = crate::lumi::tables::histograms_batch(&rows).unwrap();
            rows.iter_mut()
                .filter(|h| h.key.run == 9)
                .for_each(|h| h.counts.iter_mut().for_each(|c| *c *= 10.0));
            let tenfold = crate::lumi::tables::histograms_batch(&rows).unwrap();
            let score = LumiAeScore {
                threshold: Threshold::RunQuantile { quantile: 0.99 },
                device: DeviceChoice::Cpu,
                ..Default::default()
            };
            let run9 = |batch: &arrow::array::RecordBatch, name: &str| -> Vec<f64> {
                let h = input_from_batch("h", batch, &dir.path().join(name)).unwrap();
                let t = run_in_memory(&score, &[models.clone(), h])
                    .unwrap()
                    .table("main");
                let s = input_from_batch("s", &t, &dir.path().join(format!("s{name}"))).unwrap();
                read_scores(&s)
                    .unwrap()
                    .iter()
                    .filter(|r| r.key.run == 9)
                    .map(|r| r.raw_score.unwrap())
                    .collect()
            };
            (run9(&plain, "p.parquet"), run9(&tenfold, "t.parquet"))
        };
        let (a, b) = scores(crate::lumi::lumi_ae_train::Scaling::PerRun);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * x.max(1e-12), "{x} vs {y}");
        }
        let (a, b) = scores(crate::lumi::lumi_ae_train::Scaling::Training);
        assert!(
            a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3 * x),
            "{a:?} {b:?}"
        );
    }
}
