//! The DINAMO synthetic run generator (paper appendix A, Algorithm 1) with
//! the parameters of appendix A.1 as defaults, as a library: the
//! `synth_runs` stage writes its datasets, and environments that distort a
//! run the way its anomalies do (`rl`) draw through it.
//!
//! Each run is a histogram of a Gaussian whose mean drifts slowly, jumps at
//! rapid changes, and, for bad runs, is distorted further (mean and width
//! shifts, dead bins). Where the paper's text and pseudocode differ we follow
//! the text and say so on the parameter.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, StandardNormal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, bad_param};

/// How the sign of the binomial systematic is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignPer {
    /// One sign for the whole right half of a run (the paper's section 4 and
    /// its reference code: a correlated readout inefficiency or excess).
    Run,
    /// A sign per bin (the paper's Algorithm 1 pseudocode).
    Bin,
}

/// How bin contents are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Multinomial draw of the bin contents (conditional binomials):
    /// statistically identical to drawing events, and ~100x faster.
    Multinomial,
    /// Draw every event from the Gaussian and bin it (the reference code's way).
    Events,
}

/// How a run's bin contents and its systematic are drawn. Both are exact
/// draws from the same distributions; they consume the random stream
/// differently, so a dataset's counts depend on the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// `rand_distr::Binomial` (BTPE), the multinomial bin by bin from the
    /// lowest: the stream of every DINAMO and RL figure recorded in
    /// BENCHMARKS.md up to 2026-12-02, kept as the default so they reproduce.
    RandDistr,
    /// `sampling::binomial` (BTRS, inversion below a mean of 10), and the
    /// multinomial from the bin of the mean outwards on each side, so the
    /// empty tails beyond a run's outermost events cost neither a draw nor
    /// an `erfc`; the tails' probabilities come from the side's own tail
    /// function (no cancellation near 1). ~1.5x faster per run (bench).
    Fast,
}

impl Sampler {
    fn binomial(self, rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
        match self {
            Self::RandDistr => Binomial::new(n, p).expect("valid p").sample(rng),
            Self::Fast => crate::sampling::binomial(rng, n, p),
        }
    }
}

/// How rapid changes of the mean and of the width arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RapidChanges {
    /// The reference code: the mean and the width change independently
    /// (each with probability `p_rapid` per run, each with its own sign);
    /// a change replaces the previous shift of that parameter.
    Independent,
    /// Both change together at one draw of `p_rapid`; the mean's shift
    /// replaces the previous one, the width's accumulates (this project's
    /// reading of Algorithm 1 before the reference code was checked).
    Joint,
}

/// How the bad runs that get a mean (or width) distortion are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyDraw {
    /// Exactly round(p_anomaly * n_bad) bad runs, chosen without replacement
    /// (the reference code: 450 of 500).
    Exact,
    /// Each bad run independently with probability `p_anomaly` (Algorithm 1).
    Bernoulli,
}

/// The generator's parameters: which datasets (one per seed) and how
/// each run of a dataset is drawn.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunGenerator {
    /// Seeds, one dataset per seed (the dataset id is the seed).
    pub seeds: Option<Vec<u64>>,
    /// Alternative to `seeds`: the half-open seed range `[a, b)`.
    pub seed_range: Option<[u64; 2]>,
    /// Runs per dataset (N_runs).
    pub n_runs: usize,
    /// Runs labelled bad per dataset, chosen uniformly at random.
    pub n_bad: usize,
    /// Histogram bins (N_b).
    pub n_bins: usize,
    /// Histogram range `[lo, hi)`; events outside it are lost.
    pub range: [f64; 2],
    /// Base mean of the Gaussian (mu_base).
    pub mu_base: f64,
    /// Base width of the Gaussian (sigma_base).
    pub sigma_base: f64,
    /// Amplitude of the sinusoidal slow drift of the mean (A_drift).
    pub drift_amplitude: f64,
    /// Period of the slow drift in runs: 0.5 sin(pi t / 500) has period 1000.
    pub drift_period: f64,
    /// Events per run, an integer drawn uniformly from `[min, max)` (I_min, I_max).
    pub events: [u64; 2],
    /// Probability per run of a rapid change (of each parameter, for
    /// `rapid_changes: independent`).
    pub p_rapid: f64,
    /// How rapid changes of the mean and the width arrive.
    pub rapid_changes: RapidChanges,
    /// Range `[min, max)` of the mean's shift at a rapid change (random sign).
    pub rapid_mu_shift: [f64; 2],
    /// Range `[min, max)` of the width's shift at a rapid change (random sign).
    pub rapid_sigma_shift: [f64; 2],
    /// Smallest allowed width: a width shift that would go below it takes
    /// the other sign (never reached with the default shifts).
    pub sigma_min: f64,
    /// Fraction of bad runs with a mean distortion and, chosen independently,
    /// fraction with a width distortion.
    pub p_anomaly: f64,
    /// How those bad runs are chosen.
    pub anomaly_draw: AnomalyDraw,
    /// Range `[min, max)` of a bad run's extra mean shift (random sign).
    pub anomaly_mu_shift: [f64; 2],
    /// Range `[min, max)` of a bad run's extra width shift (random sign).
    pub anomaly_sigma_shift: [f64; 2],
    /// Probability that a bad run has dead bins (the reference code: every bad run).
    pub p_dead_bins: f64,
    /// Number of dead (zeroed) bins of such a run, uniform in `[min, max]`,
    /// distinct bins.
    pub dead_bins: [usize; 2],
    /// Binomial systematic on the upper half of the bins (n_bins/2..): each
    /// bin n gets +-Binomial(n, p).
    pub p_binomial: f64,
    /// Whether the systematic's sign is drawn per run (reference code) or per bin.
    pub binomial_sign: SignPer,
    /// How bin contents are drawn.
    pub sampling: Sampling,
    /// How `multinomial` counts and the systematic are drawn (`fast`, or
    /// the default `rand_distr` that keeps the recorded figures' stream).
    pub sampler: Sampler,
}

impl Default for RunGenerator {
    /// The reference code's generator (`dinamo/datasets/toy_dataset.py` of
    /// github.com/ArseniiGav/DINAMO), which made the paper's datasets.
    fn default() -> Self {
        Self {
            seeds: None,
            seed_range: None,
            n_runs: 5000,
            n_bad: 500,
            n_bins: 100,
            range: [-5.0, 5.0],
            mu_base: 0.0,
            sigma_base: 1.0,
            drift_amplitude: 0.5,
            drift_period: 1000.0,
            events: [2000, 20000],
            p_rapid: 0.005,
            rapid_changes: RapidChanges::Independent,
            rapid_mu_shift: [0.5, 1.5],
            rapid_sigma_shift: [0.1, 0.4],
            sigma_min: 0.05,
            p_anomaly: 0.9,
            anomaly_draw: AnomalyDraw::Exact,
            anomaly_mu_shift: [0.25, 0.75],
            anomaly_sigma_shift: [0.05, 0.2],
            p_dead_bins: 1.0,
            dead_bins: [1, 19],
            p_binomial: 0.4,
            binomial_sign: SignPer::Run,
            sampling: Sampling::Multinomial,
            sampler: Sampler::RandDistr,
        }
    }
}

/// One generated run before it becomes a table row.
#[derive(Debug, Clone)]
pub struct SynthRun {
    pub label: i8,
    pub counts: Vec<f64>,
    pub mu: f64,
    pub sigma: f64,
    pub rapid_change: bool,
    pub n_dead_bins: i32,
}

impl RunGenerator {
    /// Checks the parameters; each error names its YAML key.
    pub fn validate(&self) -> Result<()> {
        match (&self.seeds, &self.seed_range) {
            (Some(_), Some(_)) => {
                return bad_param("seeds", "give `seeds` or `seed_range`, not both");
            }
            (None, None) => {
                return bad_param("seeds", "give `seeds: [..]` or `seed_range: [a, b)`");
            }
            (Some(s), None) if s.is_empty() => return bad_param("seeds", "is empty"),
            (None, Some([a, b])) if a >= b => {
                return bad_param("seed_range", format!("[{a}, {b}) is empty"));
            }
            _ => {}
        }
        if self.n_bad > self.n_runs {
            return bad_param(
                "n_bad",
                format!("{} exceeds n_runs {}", self.n_bad, self.n_runs),
            );
        }
        if self.n_bins < 2 {
            return bad_param("n_bins", "needs at least 2 bins");
        }
        if self.range[0].partial_cmp(&self.range[1]) != Some(std::cmp::Ordering::Less) {
            return bad_param(
                "range",
                format!("{:?} is not an increasing interval", self.range),
            );
        }
        if self.events[0] >= self.events[1] {
            return bad_param(
                "events",
                format!(
                    "{:?} is not a range [min, max) of event counts",
                    self.events
                ),
            );
        }
        if self.dead_bins[0] > self.dead_bins[1] || self.dead_bins[1] > self.n_bins {
            return bad_param(
                "dead_bins",
                format!(
                    "{:?} is not a range within 0..={}",
                    self.dead_bins, self.n_bins
                ),
            );
        }
        for (name, p) in [
            ("p_rapid", self.p_rapid),
            ("p_anomaly", self.p_anomaly),
            ("p_dead_bins", self.p_dead_bins),
            ("p_binomial", self.p_binomial),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad_param(name, format!("{p} is not a probability"));
            }
        }
        for (name, r) in [
            ("rapid_mu_shift", self.rapid_mu_shift),
            ("rapid_sigma_shift", self.rapid_sigma_shift),
            ("anomaly_mu_shift", self.anomaly_mu_shift),
            ("anomaly_sigma_shift", self.anomaly_sigma_shift),
        ] {
            if !(r[0] <= r[1]) || r[0] < 0.0 {
                return bad_param(
                    name,
                    format!("{r:?} must be a non-negative range [min, max)"),
                );
            }
        }
        if !(self.sigma_base >= self.sigma_min && self.sigma_min > 0.0) {
            return bad_param("sigma_min", "needs 0 < sigma_min <= sigma_base");
        }
        if !(self.drift_period > 0.0) {
            return bad_param("drift_period", "must be positive");
        }
        Ok(())
    }

    /// The dataset seeds, in output order.
    pub fn seed_list(&self) -> Vec<u64> {
        match (&self.seeds, self.seed_range) {
            (Some(s), _) => s.clone(),
            (None, Some([a, b])) => (a..b).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// Generates one dataset; depends only on `seed` and the parameters.
    pub fn generate(&self, seed: u64) -> Vec<SynthRun> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bad_runs = rand::seq::index::sample(&mut rng, self.n_runs, self.n_bad).into_vec();
        let mut is_bad = vec![false; self.n_runs];
        for &i in &bad_runs {
            is_bad[i] = true;
        }
        // Which bad runs get a mean and which a width distortion, each chosen
        // on its own (as in the reference code).
        let mut mu_anomaly = vec![false; self.n_runs];
        let mut sigma_anomaly = vec![false; self.n_runs];
        for flags in [&mut mu_anomaly, &mut sigma_anomaly] {
            match self.anomaly_draw {
                AnomalyDraw::Exact => {
                    let k = (self.p_anomaly * self.n_bad as f64).round() as usize;
                    for j in rand::seq::index::sample(&mut rng, self.n_bad, k.min(self.n_bad)) {
                        flags[bad_runs[j]] = true;
                    }
                }
                AnomalyDraw::Bernoulli => {
                    for &i in &bad_runs {
                        flags[i] = rng.random_bool(self.p_anomaly);
                    }
                }
            }
        }
        let uniform = |rng: &mut ChaCha8Rng, r: [f64; 2]| {
            if r[0] < r[1] {
                rng.random_range(r[0]..r[1])
            } else {
                r[0]
            }
        };
        let sign = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        // A width shift that would fall below sigma_min takes the other sign.
        let shift_sigma = |sigma: f64, delta: f64| {
            if sigma + delta >= self.sigma_min {
                sigma + delta
            } else {
                sigma - delta
            }
        };
        let mut sigma_current = self.sigma_base;
        let mut mu_jump = 0.0;
        let mut runs = Vec::with_capacity(self.n_runs);
        for (i, &bad) in is_bad.iter().enumerate() {
            let drift = self.mu_base
                + self.drift_amplitude
                    * (2.0 * std::f64::consts::PI * i as f64 / self.drift_period).sin();
            let rapid_change = match self.rapid_changes {
                RapidChanges::Independent => {
                    let mu_change = rng.random_bool(self.p_rapid);
                    if mu_change {
                        mu_jump = sign(&mut rng) * uniform(&mut rng, self.rapid_mu_shift);
                    }
                    let sigma_change = rng.random_bool(self.p_rapid);
                    if sigma_change {
                        let delta = sign(&mut rng) * uniform(&mut rng, self.rapid_sigma_shift);
                        sigma_current = shift_sigma(self.sigma_base, delta);
                    }
                    mu_change || sigma_change
                }
                RapidChanges::Joint => {
                    let change = rng.random_bool(self.p_rapid);
                    if change {
                        mu_jump = sign(&mut rng) * uniform(&mut rng, self.rapid_mu_shift);
                        let delta = sign(&mut rng) * uniform(&mut rng, self.rapid_sigma_shift);
                        sigma_current = shift_sigma(sigma_current, delta);
                    }
                    change
                }
            };
            let mut mu = drift + mu_jump;
            let mut sigma = sigma_current;
            let mut dead = Vec::new();
            if bad {
                if mu_anomaly[i] {
                    mu += sign(&mut rng) * uniform(&mut rng, self.anomaly_mu_shift);
                }
                if sigma_anomaly[i] {
                    let delta = sign(&mut rng) * uniform(&mut rng, self.anomaly_sigma_shift);
                    sigma = shift_sigma(sigma, delta);
                }
                if rng.random_bool(self.p_dead_bins) {
                    let n = rng.random_range(self.dead_bins[0]..=self.dead_bins[1]);
                    dead = rand::seq::index::sample(&mut rng, self.n_bins, n).into_vec();
                }
            }
            let n_events = rng.random_range(self.events[0]..self.events[1]);
            let counts = self.sample_counts(&mut rng, n_events, mu, sigma, &dead);
            runs.push(SynthRun {
                label: i8::from(bad),
                counts,
                mu,
                sigma,
                rapid_change,
                n_dead_bins: dead.len() as i32,
            });
        }
        runs
    }

    /// One run's bin contents: `n_events` from the Gaussian (mu, sigma), the
    /// binomial systematic on the upper half, then the `dead` bins zeroed —
    /// the generator's draws in its order, shared with environments that
    /// distort a run the way the generator's anomalies do.
    pub fn sample_counts(
        &self,
        rng: &mut ChaCha8Rng,
        n_events: u64,
        mu: f64,
        sigma: f64,
        dead: &[usize],
    ) -> Vec<f64> {
        let sign = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let mut counts = match self.sampling {
            Sampling::Multinomial => self.sample_multinomial(rng, n_events, mu, sigma),
            Sampling::Events => sample_events(rng, n_events, mu, sigma, self.n_bins, self.range),
        };
        let run_sign = sign(rng);
        for c in &mut counts[self.n_bins / 2..] {
            if *c > 0.0 {
                let s = match self.binomial_sign {
                    SignPer::Run => run_sign,
                    SignPer::Bin => sign(rng),
                };
                let delta = self.sampler.binomial(rng, *c as u64, self.p_binomial);
                *c = (*c + s * delta as f64).max(0.0);
            }
        }
        for &j in dead {
            counts[j] = 0.0;
        }
        counts
    }

    /// A run's bin contents as a multinomial draw of `n_events`, by the
    /// configured [`Sampler`].
    fn sample_multinomial(
        &self,
        rng: &mut ChaCha8Rng,
        n_events: u64,
        mu: f64,
        sigma: f64,
    ) -> Vec<f64> {
        match self.sampler {
            Sampler::RandDistr => {
                sample_multinomial_in_order(rng, n_events, &self.bin_probabilities(mu, sigma))
            }
            Sampler::Fast => sample_multinomial_outwards(self, rng, n_events, (mu, sigma)),
        }
    }

    /// Probability of each bin, plus a last entry for events outside the range.
    pub fn bin_probabilities(&self, mu: f64, sigma: f64) -> Vec<f64> {
        let [lo, hi] = self.range;
        let width = (hi - lo) / self.n_bins as f64;
        let cdf = |x: f64| 0.5 * libm::erfc(-(x - mu) / (sigma * std::f64::consts::SQRT_2));
        // The CDF at each of the n_bins + 1 edges, once (erfc is most of the cost).
        let edges: Vec<f64> = (0..=self.n_bins)
            .map(|k| cdf(lo + k as f64 * width))
            .collect();
        let mut probs: Vec<f64> = edges.windows(2).map(|e| (e[1] - e[0]).max(0.0)).collect();
        let inside: f64 = probs.iter().sum();
        probs.push((1.0 - inside).max(0.0));
        probs
    }
}

/// Multinomial draw of `n` events over `probs` by conditional binomials
/// from the lowest bin; the last category (outside the range) is dropped
/// from the result.
fn sample_multinomial_in_order(rng: &mut ChaCha8Rng, n: u64, probs: &[f64]) -> Vec<f64> {
    let sampler = Sampler::RandDistr;
    let mut remaining = n;
    let mut mass = 1.0;
    let mut counts = Vec::with_capacity(probs.len() - 1);
    for &p in &probs[..probs.len() - 1] {
        let k = if remaining == 0 || p <= 0.0 {
            0
        } else if p >= mass {
            remaining
        } else {
            sampler.binomial(rng, remaining, (p / mass).min(1.0))
        };
        counts.push(k as f64);
        remaining -= k;
        mass -= p;
    }
    counts
}

/// Multinomial draw of `n` Gaussian (mu, sigma) events over `n_bins` equal
/// bins of `range` (events outside are lost), exact, from the mean
/// outwards: the events below and above the edge nearest the mean are
/// drawn first, then each side bin by bin away from that edge by
/// conditional binomials, until the side has no events left. Probabilities
/// below the split come from the CDF and above it from the survival
/// function, each a difference of small numbers in its own tail.
fn sample_multinomial_outwards(
    generator: &RunGenerator,
    rng: &mut ChaCha8Rng,
    n: u64,
    (mu, sigma): (f64, f64),
) -> Vec<f64> {
    let (n_bins, range) = (generator.n_bins, generator.range);
    let width = (range[1] - range[0]) / n_bins as f64;
    let edge = |k: usize| range[0] + k as f64 * width;
    let scale = 1.0 / (sigma * std::f64::consts::SQRT_2);
    let cdf = |k: usize| 0.5 * system_erfc((mu - edge(k)) * scale);
    let sf = |k: usize| 0.5 * system_erfc((edge(k) - mu) * scale);
    let split = (((mu - range[0]) / width).round().max(1.0) as usize).min(n_bins - 1);
    let binomial =
        |rng: &mut ChaCha8Rng, n: u64, p: f64| crate::sampling::binomial(rng, n, p.clamp(0.0, 1.0));
    let (cdf_low, cdf_split) = (cdf(0), cdf(split));
    let (sf_split, sf_high) = (sf(split), sf(n_bins));
    let below = (cdf_split - cdf_low).max(0.0);
    let above = (sf_split - sf_high).max(0.0);
    let n_below = binomial(rng, n, below);
    let rest = 1.0 - below;
    let n_above = if rest > 0.0 {
        binomial(rng, n - n_below, above / rest)
    } else {
        0
    };
    let mut counts = vec![0.0; n_bins];
    // Below the split, from bin split-1 down to bin 0; `upper` is the CDF
    // at the current bin's upper edge, the side's mass is upper - cdf_low.
    let (mut remaining, mut upper) = (n_below, cdf_split);
    for k in (1..split).rev() {
        if remaining == 0 {
            break;
        }
        let lower = cdf(k);
        let mass = upper - cdf_low;
        let taken = if mass > 0.0 {
            binomial(rng, remaining, (upper - lower) / mass)
        } else {
            0
        };
        counts[k] = taken as f64;
        remaining -= taken;
        upper = lower;
    }
    counts[0] += remaining as f64;
    // Above the split, from bin split up to the last; `lower` is the
    // survival function at the current bin's lower edge.
    let (mut remaining, mut lower) = (n_above, sf_split);
    for (k, count) in counts.iter_mut().enumerate().take(n_bins - 1).skip(split) {
        if remaining == 0 {
            break;
        }
        let upper = sf(k + 1);
        let mass = lower - sf_high;
        let taken = if mass > 0.0 {
            binomial(rng, remaining, (lower - upper) / mass)
        } else {
            0
        };
        *count = taken as f64;
        remaining -= taken;
        lower = upper;
    }
    counts[n_bins - 1] += remaining as f64;
    counts
}

/// The C library's `erfc` (C99 `<math.h>`, in the libm every Rust program
/// on Linux, macOS and Windows links): 14 ns against the `libm` crate's
/// 22 ns here, where its two `exp` calls run the system's FMA `exp`
/// instead of a portable one; both within an ulp or so of each other.
fn system_erfc(x: f64) -> f64 {
    unsafe extern "C" {
        fn erfc(x: f64) -> f64;
    }
    // SAFETY: a pure function of one double: no pointers, no shared state.
    unsafe { erfc(x) }
}

/// Draws `n` Gaussian events and bins them (the reference generator's way).
fn sample_events(
    rng: &mut ChaCha8Rng,
    n: u64,
    mu: f64,
    sigma: f64,
    n_bins: usize,
    range: [f64; 2],
) -> Vec<f64> {
    let mut counts = vec![0.0; n_bins];
    let scale = n_bins as f64 / (range[1] - range[0]);
    for _ in 0..n {
        let x: f64 = mu + sigma * rng.sample::<f64, _>(StandardNormal);
        let bin = ((x - range[0]) * scale).floor();
        if bin >= 0.0 && (bin as usize) < n_bins {
            counts[bin as usize] += 1.0;
        } else if x == range[1] {
            counts[n_bins - 1] += 1.0; // numpy.histogram closes the last bin
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seeds: Vec<u64>) -> RunGenerator {
        RunGenerator {
            seeds: Some(seeds),
            n_runs: 1000,
            n_bad: 100,
            ..Default::default()
        }
    }

    #[test]
    fn ten_percent_bad_and_dead_bins_on_every_bad_run_only() {
        let stage = RunGenerator {
            seeds: Some(vec![70]),
            ..Default::default()
        };
        let runs = stage.generate(70);
        assert_eq!(runs.len(), 5000);
        assert_eq!(runs.iter().filter(|r| r.label == 1).count(), 500);
        // The reference code kills 1-19 distinct bins of every bad run.
        assert!(
            runs.iter()
                .filter(|r| r.label == 1)
                .all(|r| (1..=19).contains(&r.n_dead_bins))
        );
        assert!(
            runs.iter()
                .filter(|r| r.label == 0)
                .all(|r| r.n_dead_bins == 0)
        );
        // Dead bins are really empty: a bad run with k dead bins has at least k zeros.
        for r in runs.iter().filter(|r| r.n_dead_bins > 0) {
            assert!(r.counts.iter().filter(|&&c| c == 0.0).count() >= r.n_dead_bins as usize);
        }
        // Rapid changes of the mean and of the width, p = 0.005 each: about
        // 2 * 0.005 * 5000 = 50 runs with a change.
        let changes = runs.iter().filter(|r| r.rapid_change).count();
        assert!((25..=80).contains(&changes), "{changes} rapid changes");
    }

    /// Without drift and rapid changes every good run is N(0, 1); exactly
    /// 450 of the 500 bad runs have their mean moved, and 450 chosen on
    /// their own have their width moved (so ~405, not 450, have both).
    #[test]
    fn exactly_ninety_percent_of_bad_runs_get_each_distortion_independently() {
        let stage = RunGenerator {
            seeds: Some(vec![3]),
            drift_amplitude: 0.0,
            p_rapid: 0.0,
            ..Default::default()
        };
        let runs = stage.generate(3);
        let good = runs.iter().filter(|r| r.label == 0);
        assert!(good.clone().all(|r| r.mu == 0.0 && r.sigma == 1.0));
        let bad: Vec<&SynthRun> = runs.iter().filter(|r| r.label == 1).collect();
        let moved_mu = bad.iter().filter(|r| r.mu != 0.0).count();
        let moved_sigma = bad.iter().filter(|r| r.sigma != 1.0).count();
        let both = bad.iter().filter(|r| r.mu != 0.0 && r.sigma != 1.0).count();
        assert_eq!((moved_mu, moved_sigma), (450, 450));
        assert!((380..=430).contains(&both), "{both} runs with both shifts");
        // Shifts stay in their ranges: |d mu| in [0.25, 0.75), |d sigma| in [0.05, 0.2).
        for r in &bad {
            assert!(
                r.mu == 0.0 || (0.25..0.75).contains(&r.mu.abs()),
                "{}",
                r.mu
            );
            let ds = (r.sigma - 1.0).abs();
            assert!(r.sigma == 1.0 || (0.05..0.2).contains(&ds), "{}", r.sigma);
        }
        // The Algorithm 1 variant draws each bad run with probability 0.9.
        let bernoulli = RunGenerator {
            anomaly_draw: AnomalyDraw::Bernoulli,
            ..stage.clone()
        };
        let moved = bernoulli
            .generate(3)
            .iter()
            .filter(|r| r.label == 1 && r.mu != 0.0)
            .count();
        assert!((420..=480).contains(&moved), "{moved}");
    }

    /// A rapid change of the width replaces the previous one (the width stays
    /// within sigma_base -+ 0.4); the `joint` variant accumulates them.
    #[test]
    fn width_changes_replace_each_other() {
        let stage = RunGenerator {
            seeds: Some(vec![9]),
            n_bad: 0,
            p_rapid: 0.05,
            ..Default::default()
        };
        let runs = stage.generate(9);
        assert!(runs.iter().all(|r| (r.sigma - 1.0).abs() < 0.4));
        let changes = runs.iter().filter(|r| r.rapid_change).count();
        assert!(changes > 300, "{changes}");
        let joint = RunGenerator {
            rapid_changes: RapidChanges::Joint,
            ..stage
        };
        let widest = joint
            .generate(9)
            .iter()
            .map(|r| (r.sigma - 1.0).abs())
            .fold(0.0, f64::max);
        assert!(widest > 0.4, "accumulated shifts reach {widest}");
    }

    /// Events per run are integers in [2000, 20000): the upper end is open.
    #[test]
    fn event_counts_are_half_open() {
        let stage = RunGenerator {
            n_bins: 4,
            events: [5, 6],
            p_binomial: 0.0,
            n_bad: 0,
            range: [-50.0, 50.0],
            n_runs: 50,
            ..Default::default()
        };
        for r in stage.generate(1) {
            assert_eq!(r.counts.iter().sum::<f64>(), 5.0);
        }
        let empty = RunGenerator {
            events: [5, 5],
            seeds: Some(vec![1]),
            ..stage
        };
        assert!(empty.validate().unwrap_err().to_string().contains("events"));
    }

    #[test]
    fn counts_stay_within_the_event_budget_plus_systematic() {
        let stage = small(vec![5]);
        for run in stage.generate(5) {
            let total: f64 = run.counts.iter().sum();
            assert!((0.0..=1.4 * 20000.0 + 1.0).contains(&total), "{total}");
            assert!(run.counts.iter().all(|c| c.fract() == 0.0 && *c >= 0.0));
        }
    }

    /// Multinomial bin sampling is the same distribution as binning events,
    /// with either binomial sampler: per-bin means and variances over many
    /// runs agree within their errors.
    #[test]
    fn multinomial_sampling_matches_event_sampling() {
        for sampler in [Sampler::RandDistr, Sampler::Fast] {
            // A mean inside the range, and one beyond its upper end (the
            // split edge clamped, most events lost).
            for (mu, sigma) in [(0.3, 0.8), (3.4, 0.8)] {
                multinomial_matches_events(sampler, mu, sigma);
            }
        }
    }

    fn multinomial_matches_events(sampler: Sampler, mu: f64, sigma: f64) {
        let stage = RunGenerator {
            n_bins: 20,
            range: [-3.0, 3.0],
            sampler,
            ..Default::default()
        };
        let probs = stage.bin_probabilities(mu, sigma);
        let (n, reps) = (2000_u64, 4000);
        let mut rng_a = ChaCha8Rng::seed_from_u64(1);
        let mut rng_b = ChaCha8Rng::seed_from_u64(2);
        let stats = |draws: &[Vec<f64>], j: usize| {
            let m = draws.iter().map(|d| d[j]).sum::<f64>() / reps as f64;
            let v = draws.iter().map(|d| (d[j] - m).powi(2)).sum::<f64>() / (reps - 1) as f64;
            (m, v)
        };
        let a: Vec<Vec<f64>> = (0..reps)
            .map(|_| stage.sample_multinomial(&mut rng_a, n, mu, sigma))
            .collect();
        let b: Vec<Vec<f64>> = (0..reps)
            .map(|_| sample_events(&mut rng_b, n, mu, sigma, 20, [-3.0, 3.0]))
            .collect();
        for (j, &p) in probs.iter().enumerate().take(20) {
            let (ma, va) = stats(&a, j);
            let (mb, vb) = stats(&b, j);
            let expected = n as f64 * p;
            // Means: difference within 5 standard errors; both near n p.
            let se = ((va + vb) / reps as f64).sqrt().max(1e-9);
            assert!(
                (ma - mb).abs() < 5.0 * se,
                "{sampler:?} bin {j}: means {ma} vs {mb} (se {se})"
            );
            // Variances: both match the binomial n p (1-p) within 15%.
            let binom = expected * (1.0 - p);
            assert!(
                (ma - expected).abs() < 5.0 * (va.max(binom) / reps as f64).sqrt() + 1e-9,
                "{sampler:?} bin {j}: mean {ma} vs n p {expected}"
            );
            if binom > 1.0 {
                assert!(
                    (va / binom - 1.0).abs() < 0.15,
                    "{sampler:?} bin {j}: var {va} vs {binom}"
                );
                assert!(
                    (vb / binom - 1.0).abs() < 0.15,
                    "bin {j}: var {vb} vs {binom}"
                );
            }
        }
        // The bins' covariances: the sums of the lower bins (either side of
        // the fast sampler's split) and of all bins have the binomial
        // variance of their total probability.
        for upto in [6, 11, 14, 20] {
            let sums = |draws: &[Vec<f64>]| -> Vec<Vec<f64>> {
                draws.iter().map(|d| vec![d[..upto].iter().sum()]).collect()
            };
            let (ma, va) = stats(&sums(&a), 0);
            let (mb, _) = stats(&sums(&b), 0);
            let p: f64 = probs[..upto].iter().sum();
            let binom = n as f64 * p * (1.0 - p);
            assert!(
                (ma - mb).abs() < 5.0 * (2.0 * binom.max(1e-9) / reps as f64).sqrt(),
                "{sampler:?} bins ..{upto}: mean {ma} vs {mb}"
            );
            if binom > 1.0 {
                assert!(
                    (va / binom - 1.0).abs() < 0.15,
                    "{sampler:?} bins ..{upto}: var {va} vs {binom}"
                );
            }
        }
    }

    #[test]
    fn rejects_inconsistent_parameters() {
        let both = RunGenerator {
            seeds: Some(vec![1]),
            seed_range: Some([0, 3]),
            ..Default::default()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let none = RunGenerator::default();
        assert!(none.validate().is_err());
        let too_bad = RunGenerator {
            n_bad: 6000,
            ..small(vec![1])
        };
        assert!(
            too_bad
                .validate()
                .unwrap_err()
                .to_string()
                .contains("n_bad")
        );
        let range = RunGenerator {
            seed_range: Some([3, 3]),
            ..Default::default()
        };
        assert!(range.validate().unwrap_err().to_string().contains("empty"));
    }
}
