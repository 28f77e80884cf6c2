//! `dinamo_s`: DINAMO-S (paper section 2.1, Algorithm 2), an EWMA reference
//! with per-bin Poisson weights, scored by the reduced chi-square.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DatasetGroups;
use super::scores::{
    DatasetRuns, NormRun, ScoreBatches, Scored, score_of, score_outputs, score_schema,
};
use crate::error::{Result, StageError};
use crate::parallel::{overlapped, par_map_counted};
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig, expect_inputs};
use crate::stats::roc_auc;

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
            alpha_step: 0.01,
            epsilon: 1e-9,
            prior_events_per_bin: 100.0,
            per_run_vectors: true,
        }
    }
}

impl StageConfig for DinamoS {
    const KIND: &'static str = "dinamo_s";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "DINAMO-S: EWMA reference with Poisson weights, reduced chi2 and pulls per run, per dataset";
    const INPUTS: (usize, usize) = (1, 1);

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

/// The evolving DINAMO-S reference and its EWMA accumulators. The
/// uncertainty is kept squared (`var_mu`); `sigma()` takes the root only
/// when a reference is reported.
#[derive(Debug, Clone)]
pub struct Reference {
    pub mu: Vec<f64>,
    pub var_mu: Vec<f64>,
    w: Vec<f64>,
    s_mu: Vec<f64>,
    s_sigma: Vec<f64>,
    alpha: f64,
}

impl Reference {
    /// The starting reference: uniform, mu0 = 1/N_b, with the Poisson
    /// uncertainty of an integral I = `events_per_bin` x N_b, and the EWMA
    /// accumulators seeded with it as one earlier run (weight 1 - alpha).
    pub fn uniform(n_bins: usize, alpha: f64, epsilon: f64, events_per_bin: f64) -> Self {
        let integral = events_per_bin * n_bins as f64;
        let mu0 = 1.0 / n_bins as f64;
        let var0 = mu0 / integral - mu0 * mu0 / integral;
        let omega0 = 1.0 / (var0 + epsilon);
        Self {
            mu: vec![mu0; n_bins],
            var_mu: vec![var0; n_bins],
            w: vec![(1.0 - alpha) * omega0; n_bins],
            s_mu: vec![(1.0 - alpha) * omega0 * mu0; n_bins],
            s_sigma: vec![(1.0 - alpha) * omega0 * var0; n_bins],
            alpha,
        }
    }

    /// Per-bin uncertainty sigma_mu.
    pub fn sigma(&self) -> Vec<f64> {
        self.var_mu.iter().map(|v| v.sqrt()).collect()
    }

    /// Reduced chi-square of `run` against this reference.
    pub fn chi2(&self, run: &NormRun) -> f64 {
        // Four partial sums let the compiler vectorize the loop.
        let mut acc = [0.0f64; 4];
        let n = self.mu.len();
        let (x, v, m, vm) = (&run.x[..n], &run.var[..n], &self.mu[..n], &self.var_mu[..n]);
        for j in 0..n {
            let d = x[j] - m[j];
            acc[j % 4] += d * d / (v[j] + vm[j]).max(f64::MIN_POSITIVE);
        }
        (acc[0] + acc[1] + acc[2] + acc[3]) / n as f64
    }

    /// Per-bin pulls of `run` against this reference.
    pub fn pulls(&self, run: &NormRun) -> Vec<f64> {
        (0..self.mu.len())
            .map(|j| {
                (run.x[j] - self.mu[j])
                    / (run.var[j] + self.var_mu[j]).max(f64::MIN_POSITIVE).sqrt()
            })
            .collect()
    }

    /// Folds a good, non-empty run into the reference.
    pub fn update(&mut self, run: &NormRun) {
        let (a, b) = (self.alpha, 1.0 - self.alpha);
        let n = self.mu.len();
        let (x, omega) = (&run.x[..n], &run.omega[..n]);
        let (w, s_mu, s_sigma) = (
            &mut self.w[..n],
            &mut self.s_mu[..n],
            &mut self.s_sigma[..n],
        );
        let (mu, var_mu) = (&mut self.mu[..n], &mut self.var_mu[..n]);
        for j in 0..n {
            let d = x[j] - mu[j];
            w[j] = a * w[j] + b * omega[j];
            s_mu[j] = a * s_mu[j] + b * omega[j] * x[j];
            s_sigma[j] = a * s_sigma[j] + b * omega[j] * d * d;
            let inv = 1.0 / w[j];
            mu[j] = s_mu[j] * inv;
            var_mu[j] = s_sigma[j] * inv;
        }
    }
}

/// Per-run results of one pass over a dataset.
struct Pass {
    chi2: Vec<f64>,
    pulls: Vec<Vec<f64>>,
    ref_mu: Vec<Vec<f64>>,
    ref_sigma: Vec<Vec<f64>>,
    /// The reference after the last run.
    last: Reference,
}

/// Runs DINAMO-S over `runs` (in order); keeps the references if `keep`,
/// and the pulls too if they are written (`per_run_vectors`).
fn pass(cfg: &DinamoS, runs: &[NormRun], good: &[bool], alpha: f64, keep: bool) -> Pass {
    let n_bins = runs.first().map_or(0, |r| r.x.len());
    let mut reference = Reference::uniform(n_bins, alpha, cfg.epsilon, cfg.prior_events_per_bin);
    let cap = if keep { runs.len() } else { 0 };
    let mut out = Pass {
        chi2: Vec::with_capacity(runs.len()),
        pulls: Vec::with_capacity(cap),
        ref_mu: Vec::with_capacity(cap),
        ref_sigma: Vec::with_capacity(cap),
        last: reference.clone(),
    };
    for (run, &is_good) in runs.iter().zip(good) {
        out.chi2.push(reference.chi2(run));
        if keep {
            // Pulls are only ever written out; the bands need the references.
            if cfg.per_run_vectors {
                out.pulls.push(reference.pulls(run));
            }
            out.ref_mu.push(reference.mu.clone());
            out.ref_sigma.push(reference.sigma());
        }
        if is_good && run.integral > 0.0 {
            reference.update(run);
        }
    }
    out.last = reference;
    out
}

/// Reduced chi-square of every run (in order) against the evolving reference,
/// updated on good runs: DINAMO-S's core loop, exposed for benchmarks.
pub fn chi2_sequence(cfg: &DinamoS, runs: &[NormRun], good: &[bool], alpha: f64) -> Vec<f64> {
    pass(cfg, runs, good, alpha, false).chi2
}

/// The same pass, returning also the reference it ends with (what a run
/// after `runs` is scored against).
pub fn evolve(cfg: &DinamoS, runs: &[NormRun], good: &[bool], alpha: f64) -> (Reference, Vec<f64>) {
    let p = pass(cfg, runs, good, alpha, false);
    (p.last, p.chi2)
}

impl DinamoS {
    fn alpha_grid(&self) -> Vec<f64> {
        let n = (1.0 / self.alpha_step).round() as usize;
        (0..n)
            .map(|k| k as f64 * self.alpha_step)
            .filter(|&a| a < 1.0)
            .collect()
    }

    /// Alpha for one dataset: the parameter itself, or (auto) the grid value
    /// that maximises the ROC AUC of the score on its first `historical`
    /// runs (also what environments built on DINAMO-S tune with).
    pub fn alpha_for(&self, data: &DatasetRuns, historical: usize) -> Result<f64> {
        let (norm, good) = (&data.norm, &data.good);
        let bad_hist = data.bad_among_first(historical);
        match self.alpha {
            AutoOr::Value(a) => Ok(a),
            AutoOr::Auto => {
                let mut best: Option<(f64, f64)> = None;
                for a in self.alpha_grid() {
                    let p = pass(self, &norm[..historical], &good[..historical], a, false);
                    // The AUC only needs the order of the scores, and
                    // ln(max(chi2, MIN_POSITIVE)) keeps that of max(chi2, MIN_POSITIVE).
                    let ranked: Vec<f64> =
                        p.chi2.iter().map(|c| c.max(f64::MIN_POSITIVE)).collect();
                    let auc = roc_auc(&ranked, &bad_hist)
                        .ok_or_else(|| data.cannot_tune("alpha", historical))?;
                    if best.is_none_or(|(b, _)| auc > b) {
                        best = Some((auc, a));
                    }
                }
                best.map(|(_, a)| a)
                    .ok_or_else(|| data.cannot_tune("alpha", historical))
            }
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
        let data = DatasetRuns::parse(dataset, batch, input, self.epsilon)?;
        let (norm, good) = (&data.norm, &data.good);
        let historical = self.historical_runs.min(data.len());
        let alpha = self.alpha_for(&data, historical)?;
        let full = pass(self, norm, good, alpha, true);
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
        expect_inputs(inputs.len(), 1)?;
        score_outputs(&inputs[0], "input", self.per_run_vectors)
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let schema = score_schema(&input.schema, &input.name, self.per_run_vectors)?;
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let progress = ctx.reporter.progress(0, "datasets");
        let chunk = 8 * rayon::current_num_threads();
        let output = &mut *ctx.output;
        // Reading (Parquet decoding) and writing overlap the scoring.
        overlapped(
            || {
                let datasets = groups.next_chunk(chunk)?;
                Ok((!datasets.is_empty()).then_some(datasets))
            },
            |datasets: Vec<(i64, RecordBatch)>| {
                par_map_counted(&datasets, progress.as_ref(), |(id, batch)| {
                    self.score_dataset(*id, batch, &schema, &input.name)
                })
            },
            |scored| {
                for batches in scored {
                    let batches = batches?;
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

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    /// A 3-bin example worked by hand.
    #[test]
    fn three_bin_chi2_and_update_by_hand() {
        let alpha = 0.5;
        let eps = 1e-9;
        let mut r = Reference::uniform(3, alpha, eps, 100.0);
        // mu0 = 1/3 standing for I = 100 x 3 events:
        // var0 = (1/3)/300 - (1/9)/300 = 2/2700.
        let var0: f64 = 2.0 / 2700.0;
        assert!(close(r.mu[0], 1.0 / 3.0));
        assert!(close(r.sigma()[0], var0.sqrt()));

        // Run x = [2, 1, 1]: I = 4, x~ = [1/2, 1/4, 1/4], var = x~/4 - x~^2/4.
        let run = NormRun::new(&[2.0, 1.0, 1.0], eps);
        let var_x = [
            0.5 / 4.0 - 0.25 / 4.0,
            0.25 / 4.0 - 0.0625 / 4.0,
            0.25 / 4.0 - 0.0625 / 4.0,
        ];
        for (v, expected) in run.var.iter().zip(var_x) {
            assert!(close(*v, expected));
        }
        let expected_chi2 = ((0.5 - 1.0 / 3.0_f64).powi(2) / (var_x[0] + var0)
            + 2.0 * (0.25 - 1.0 / 3.0_f64).powi(2) / (var_x[1] + var0))
            / 3.0;
        assert!(close(r.chi2(&run), expected_chi2));
        let pull = r.pulls(&run);
        assert!(close(pull[0], (0.5 - 1.0 / 3.0) / (var_x[0] + var0).sqrt()));

        // Update: W1 = a W0 + (1-a) w, S_mu, S_sigma with (x~ - mu_before)^2.
        let omega0 = 1.0 / (var0 + eps);
        let omega = 1.0 / (var_x[0] + eps);
        let w1 = alpha * (1.0 - alpha) * omega0 + (1.0 - alpha) * omega;
        let s_mu = alpha * (1.0 - alpha) * omega0 / 3.0 + (1.0 - alpha) * omega * 0.5;
        let s_sig = alpha * (1.0 - alpha) * omega0 * var0
            + (1.0 - alpha) * omega * (0.5 - 1.0 / 3.0_f64).powi(2);
        r.update(&run);
        assert!(close(r.mu[0], s_mu / w1));
        assert!(close(r.sigma()[0], (s_sig / w1).sqrt()));
    }

    #[test]
    fn empty_bin_uses_one_over_integral() {
        let run = NormRun::new(&[4.0, 0.0, 6.0], 1e-9);
        assert!(close(run.var[1], 1.0 / 100.0));
        assert!(run.var[0] > 0.0);
    }

    #[test]
    fn zero_integral_run_gives_a_finite_score_and_no_update() {
        let r = Reference::uniform(4, 0.3, 1e-9, 100.0);
        let empty = NormRun::new(&[0.0; 4], 1e-9);
        assert_eq!(empty.integral, 0.0);
        let chi2 = r.chi2(&empty);
        assert!(chi2.is_finite() && chi2 > 0.0);
        // mu0^2 / sigma0^2 per bin, I = 400: (1/16) / ((1/4)/400 - (1/16)/400) = 400/3.
        assert!(close(chi2, 400.0 / 3.0));
        let before = r.mu.clone();
        let out = pass(&DinamoS::default(), &[empty], &[true], 0.3, true);
        assert!(out.chi2[0].is_finite());
        r.chi2(&NormRun::new(&[1.0; 4], 1e-9));
        assert_eq!(r.mu, before);
    }

    #[test]
    fn reference_tracks_good_runs_not_bad_ones() {
        let good_shape = [10.0, 30.0, 60.0];
        let bad_shape = [60.0, 30.0, 10.0];
        let runs: Vec<NormRun> = (0..50)
            .map(|i| NormRun::new(if i % 5 == 4 { &bad_shape } else { &good_shape }, 1e-9))
            .collect();
        let good: Vec<bool> = (0..50).map(|i| i % 5 != 4).collect();
        let out = pass(&DinamoS::default(), &runs, &good, 0.5, true);
        let last = out.ref_mu.last().unwrap();
        assert!((last[2] - 0.6).abs() < 1e-6, "{last:?}");
        // Bad runs score far above good ones once the reference has converged.
        assert!(out.chi2[49] > 100.0 * out.chi2[48]);
    }
}
