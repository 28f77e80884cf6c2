//! DINAMO-S's reference (paper section 2.1, Algorithm 2) as a library on
//! plain numbers: runs normalised with their Poisson variances, the EWMA
//! reference with per-bin weights, the reduced χ² and pulls of a run
//! against it, and a pass over a dataset's runs (updated on good runs). The
//! `dinamo_s` stage tunes and writes it; the RL environment scores its run
//! stream with it.

/// The constant ε in the update weight ω = 1/(σ_x² + ε): `dinamo_s`'s
/// default, and what environments built on DINAMO-S use.
pub const EPSILON: f64 = 1e-9;

/// Events per bin the uniform starting reference stands for (the reference
/// code: 100): `dinamo_s`'s default.
pub const PRIOR_EVENTS_PER_BIN: f64 = 100.0;

/// Step of the grid `alpha: auto` searches (0.00, 0.01, ..., 0.99):
/// `dinamo_s`'s default.
pub const ALPHA_STEP: f64 = 0.01;

/// The constants of a reference besides α.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constants {
    /// ε of the update weight.
    pub epsilon: f64,
    /// Events per bin of the uniform starting reference.
    pub prior_events_per_bin: f64,
}

impl Default for Constants {
    fn default() -> Self {
        Self {
            epsilon: EPSILON,
            prior_events_per_bin: PRIOR_EVENTS_PER_BIN,
        }
    }
}

/// A run normalised to unit integral with its per-bin Poisson variance and
/// the update weight derived from it (computed once per run, reused by every
/// pass of the alpha scan).
#[derive(Debug, Clone)]
pub struct NormRun {
    pub integral: f64,
    pub x: Vec<f64>,
    pub var: Vec<f64>,
    /// omega = 1/(var + epsilon), the bin's weight in a reference update.
    pub omega: Vec<f64>,
}

impl NormRun {
    /// x~ = x/I and sigma^2 = x~/I - x~^2/I, with sigma = 1/I for empty bins.
    /// An empty run (I = 0) has x~ = 0 and no statistical uncertainty.
    pub fn new(counts: &[f64], epsilon: f64) -> Self {
        let integral: f64 = counts.iter().sum();
        let n = counts.len();
        if integral <= 0.0 {
            return Self {
                integral: 0.0,
                x: vec![0.0; n],
                var: vec![0.0; n],
                omega: vec![1.0 / epsilon; n],
            };
        }
        // The reference code's operations in its order, so that scores
        // agree with it to the last bit, not just to rounding.
        let x: Vec<f64> = counts.iter().map(|c| c / integral).collect();
        let var: Vec<f64> = x
            .iter()
            .map(|&p| {
                if p > 0.0 {
                    p / integral - p * p / integral
                } else {
                    1.0 / (integral * integral)
                }
            })
            .collect();
        let omega = var.iter().map(|v| 1.0 / (v + epsilon)).collect();
        Self {
            integral,
            x,
            var,
            omega,
        }
    }
}

/// ln(chi2), finite even for a perfect match.
pub fn score_of(chi2: f64) -> f64 {
    chi2.max(f64::MIN_POSITIVE).ln()
}

/// The evolving DINAMO-S reference and its EWMA accumulators. The
/// uncertainty is kept squared (`var_mu`); `sigma()` takes the root only
/// when a reference is reported.
#[derive(Debug, Clone)]
pub struct Reference {
    pub mu: Vec<f64>,
    pub var_mu: Vec<f64>,
    pub(super) w: Vec<f64>,
    pub(super) s_mu: Vec<f64>,
    pub(super) s_sigma: Vec<f64>,
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

/// What a pass keeps of every run besides its χ².
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only the χ² (tuning, benchmarks).
    Chi2,
    /// The reference each run was scored against (the Jaccard bands).
    References,
    /// The references and the run's pulls (per-run vectors written out).
    ReferencesAndPulls,
}

/// Per-run results of one pass over a dataset.
pub struct Pass {
    pub chi2: Vec<f64>,
    pub pulls: Vec<Vec<f64>>,
    pub ref_mu: Vec<Vec<f64>>,
    pub ref_sigma: Vec<Vec<f64>>,
    /// The reference after the last run.
    pub last: Reference,
}

/// Runs DINAMO-S over `runs` (in order) from the uniform start, updating
/// the reference on good non-empty runs; keeps what `keep` says.
pub fn pass(constants: Constants, runs: &[NormRun], good: &[bool], alpha: f64, keep: Keep) -> Pass {
    let n_bins = runs.first().map_or(0, |r| r.x.len());
    let mut reference = Reference::uniform(
        n_bins,
        alpha,
        constants.epsilon,
        constants.prior_events_per_bin,
    );
    let cap = if keep == Keep::Chi2 { 0 } else { runs.len() };
    let mut out = Pass {
        chi2: Vec::with_capacity(runs.len()),
        pulls: Vec::with_capacity(cap),
        ref_mu: Vec::with_capacity(cap),
        ref_sigma: Vec::with_capacity(cap),
        last: reference.clone(),
    };
    for (run, &is_good) in runs.iter().zip(good) {
        out.chi2.push(reference.chi2(run));
        if keep != Keep::Chi2 {
            // Pulls are only ever written out; the bands need the references.
            if keep == Keep::ReferencesAndPulls {
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
pub fn chi2_sequence(
    constants: Constants,
    runs: &[NormRun],
    good: &[bool],
    alpha: f64,
) -> Vec<f64> {
    pass(constants, runs, good, alpha, Keep::Chi2).chi2
}

/// The same pass, returning also the reference it ends with (what a run
/// after `runs` is scored against).
pub fn evolve(
    constants: Constants,
    runs: &[NormRun],
    good: &[bool],
    alpha: f64,
) -> (Reference, Vec<f64>) {
    let p = pass(constants, runs, good, alpha, Keep::Chi2);
    (p.last, p.chi2)
}

/// The α grid `0, step, 2 step, ...` below 1.
pub fn alpha_grid(step: f64) -> Vec<f64> {
    let n = (1.0 / step).round() as usize;
    (0..n)
        .map(|k| k as f64 * step)
        .filter(|&a| a < 1.0)
        .collect()
}

/// χ²_ν and pulls of `run` against (μ̂, σ̂): the run's Poisson variance plus σ̂².
pub fn chi2_and_pulls(run: &NormRun, mu: &[f64], sigma: &[f64]) -> (f64, Vec<f64>) {
    let pulls: Vec<f64> = (0..mu.len())
        .map(|j| {
            (run.x[j] - mu[j])
                / (run.var[j] + sigma[j] * sigma[j])
                    .max(f64::MIN_POSITIVE)
                    .sqrt()
        })
        .collect();
    let chi2 = pulls.iter().map(|p| p * p).sum::<f64>() / mu.len().max(1) as f64;
    (chi2, pulls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_uses_poisson_and_predicted_variances() {
        let run = NormRun::new(&[3.0, 1.0], 1e-9);
        // x~ = [0.75, 0.25], var = (p - p^2)/4 = 0.046875 each.
        let (chi2, pulls) = chi2_and_pulls(&run, &[0.5, 0.5], &[0.1, 0.2]);
        let p0 = 0.25 / (0.046875f64 + 0.01).sqrt();
        let p1 = -0.25 / (0.046875f64 + 0.04).sqrt();
        assert!((pulls[0] - p0).abs() < 1e-12 && (pulls[1] - p1).abs() < 1e-12);
        assert!((chi2 - (p0 * p0 + p1 * p1) / 2.0).abs() < 1e-12);
    }

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
        let out = pass(
            Constants::default(),
            &[empty],
            &[true],
            0.3,
            Keep::ReferencesAndPulls,
        );
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
        let out = pass(
            Constants::default(),
            &runs,
            &good,
            0.5,
            Keep::ReferencesAndPulls,
        );
        let last = out.ref_mu.last().unwrap();
        assert!((last[2] - 0.6).abs() < 1e-6, "{last:?}");
        // Bad runs score far above good ones once the reference has converged.
        assert!(out.chi2[49] > 100.0 * out.chi2[48]);
    }
}
