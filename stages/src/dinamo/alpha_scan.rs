//! DINAMO-S's α scan (`alpha: auto`) with several α values per pass: the
//! runs are read once for [`LANES`] references, whose per-bin state sits
//! side by side so that each bin's arithmetic is one AVX2 vector operation
//! over the α values. Every lane does the scalar [`Reference`]'s operations
//! in its order (Rust never fuses a multiply and an add on its own), so the
//! χ² of each α are those of [`pass`] to the bit — tested below — and the
//! chosen α cannot change. The scan is a hundred passes over the
//! historical runs per dataset, most of the 1000-dataset study's scoring
//! time; the divisions, one by one, were its bound. CPUs without AVX2 run
//! [`pass`] once per α (the compiler's own vectorization of the lane loops
//! was no faster than that).

use super::reference::{Constants, Keep, NormRun, pass};
use crate::simd::Isa;
use crate::stats::roc_auc;

/// α values per pass: two AVX2 vectors of f64.
pub const LANES: usize = 8;

/// The χ² of every run for each of `alphas`: `out[l][i]` is run i's χ²
/// against the reference with α = `alphas[l]`, equal to
/// `pass(.., alphas[l], Keep::Chi2).chi2[i]`.
pub fn chi2_per_alpha(
    constants: Constants,
    runs: &[NormRun],
    good: &[bool],
    alphas: &[f64],
) -> Vec<Vec<f64>> {
    chi2_with(Isa::detect(), constants, runs, good, alphas)
}

/// [`chi2_per_alpha`] on the instruction set `isa` (tests compare them).
fn chi2_with(
    isa: Isa,
    constants: Constants,
    runs: &[NormRun],
    good: &[bool],
    alphas: &[f64],
) -> Vec<Vec<f64>> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return alphas
            .chunks(LANES)
            .flat_map(|chunk| {
                // Spare lanes repeat the chunk's last α; their results are dropped.
                let lanes = std::array::from_fn(|l| chunk[l.min(chunk.len() - 1)]);
                // SAFETY: `Isa::detect` and `Isa::available` name AVX2 (or
                // AVX-512, which includes it) only on CPUs that run it.
                let mut out = unsafe { avx2::pass(constants, runs, good, lanes) };
                out.truncate(chunk.len());
                out
            })
            .collect();
    }
    let _ = isa;
    alphas
        .iter()
        .map(|&a| pass(constants, runs, good, a, Keep::Chi2).chi2)
        .collect()
}

/// The pass over [`LANES`] α at once on AVX2 vectors of 4 α values: each
/// intrinsic is the scalar operation lane by lane (`max` included: it
/// returns its second operand, MIN_POSITIVE, for a NaN as `f64::max` does).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use crate::dinamo::reference::{Constants, NormRun, Reference};
    use std::arch::x86_64::*;

    const HALVES: usize = LANES / 4;

    /// The EWMA state of [`LANES`] references, bin-major: `mu[j][l]` is
    /// bin j's mean for lane l's α.
    struct LaneReferences {
        a: [f64; LANES],
        b: [f64; LANES],
        mu: Vec<[f64; LANES]>,
        var_mu: Vec<[f64; LANES]>,
        w: Vec<[f64; LANES]>,
        s_mu: Vec<[f64; LANES]>,
        s_sigma: Vec<[f64; LANES]>,
    }

    impl LaneReferences {
        /// `Reference::uniform` of each lane's α, side by side.
        fn uniform(n_bins: usize, alphas: [f64; LANES], constants: Constants) -> Self {
            let starts = alphas.map(|a| {
                Reference::uniform(n_bins, a, constants.epsilon, constants.prior_events_per_bin)
            });
            let side_by_side = |field: fn(&Reference) -> &[f64]| -> Vec<[f64; LANES]> {
                (0..n_bins)
                    .map(|j| std::array::from_fn(|l| field(&starts[l])[j]))
                    .collect()
            };
            Self {
                a: alphas,
                b: alphas.map(|a| 1.0 - a),
                mu: side_by_side(|r| &r.mu),
                var_mu: side_by_side(|r| &r.var_mu),
                w: side_by_side(|r| &r.w),
                s_mu: side_by_side(|r| &r.s_mu),
                s_sigma: side_by_side(|r| &r.s_sigma),
            }
        }
    }

    /// `reference::pass` with `Keep::Chi2` for each lane's α.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pass(
        constants: Constants,
        runs: &[NormRun],
        good: &[bool],
        alphas: [f64; LANES],
    ) -> Vec<Vec<f64>> {
        let n_bins = runs.first().map_or(0, |r| r.x.len());
        let mut references = LaneReferences::uniform(n_bins, alphas, constants);
        let mut out: Vec<Vec<f64>> = (0..LANES).map(|_| Vec::with_capacity(runs.len())).collect();
        for (run, &is_good) in runs.iter().zip(good) {
            // The loads below read n_bins values of each run.
            assert!(run.x.len() == n_bins && run.var.len() == n_bins && run.omega.len() == n_bins);
            // SAFETY: this function's own target feature; sizes checked.
            let chi2 = unsafe { chi2(&references, run) };
            for (o, c) in out.iter_mut().zip(chi2) {
                o.push(c);
            }
            if is_good && run.integral > 0.0 {
                // SAFETY: as above.
                unsafe { update(&mut references, run) };
            }
        }
        out
    }

    /// `Reference::chi2` in every lane: the same four partial sums (bin j
    /// into sum j mod 4), unrolled by four so they stay in registers.
    #[target_feature(enable = "avx2")]
    unsafe fn chi2(r: &LaneReferences, run: &NormRun) -> [f64; LANES] {
        let n = r.mu.len();
        let min_positive = _mm256_set1_pd(f64::MIN_POSITIVE);
        let mut acc = [[_mm256_setzero_pd(); HALVES]; 4];
        let (x, v) = (&run.x[..n], &run.var[..n]);
        let (mu, var_mu) = (&r.mu[..n], &r.var_mu[..n]);
        let term = |j: usize, acc: &mut [__m256d; HALVES]| {
            let (xj, vj) = (_mm256_set1_pd(x[j]), _mm256_set1_pd(v[j]));
            for (h, acc) in acc.iter_mut().enumerate() {
                // SAFETY: lanes 4h..4h + 4 of an [f64; LANES].
                let (m, vm) = unsafe {
                    (
                        _mm256_loadu_pd(mu[j].as_ptr().add(4 * h)),
                        _mm256_loadu_pd(var_mu[j].as_ptr().add(4 * h)),
                    )
                };
                let d = _mm256_sub_pd(xj, m);
                let den = _mm256_max_pd(_mm256_add_pd(vj, vm), min_positive);
                *acc = _mm256_add_pd(*acc, _mm256_div_pd(_mm256_mul_pd(d, d), den));
            }
        };
        let whole = n / 4 * 4;
        for j in (0..whole).step_by(4) {
            let [a0, a1, a2, a3] = &mut acc;
            term(j, a0);
            term(j + 1, a1);
            term(j + 2, a2);
            term(j + 3, a3);
        }
        for j in whole..n {
            term(j, &mut acc[j % 4]);
        }
        let mut chi2 = [0.0; LANES];
        let nf = _mm256_set1_pd(n as f64);
        for (h, lanes) in chi2.chunks_exact_mut(4).enumerate() {
            let sum = _mm256_add_pd(
                _mm256_add_pd(_mm256_add_pd(acc[0][h], acc[1][h]), acc[2][h]),
                acc[3][h],
            );
            // SAFETY: a chunk of 4 f64.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_div_pd(sum, nf)) };
        }
        chi2
    }

    /// `Reference::update` in every lane.
    #[target_feature(enable = "avx2")]
    unsafe fn update(r: &mut LaneReferences, run: &NormRun) {
        let n = r.mu.len();
        let one = _mm256_set1_pd(1.0);
        for j in 0..n {
            let (xj, oj) = (_mm256_set1_pd(run.x[j]), _mm256_set1_pd(run.omega[j]));
            for at in (0..LANES).step_by(4) {
                // SAFETY: lanes at..at + 4 of [f64; LANES] arrays.
                unsafe {
                    let a = _mm256_loadu_pd(r.a.as_ptr().add(at));
                    let b = _mm256_loadu_pd(r.b.as_ptr().add(at));
                    let d = _mm256_sub_pd(xj, _mm256_loadu_pd(r.mu[j].as_ptr().add(at)));
                    let bo = _mm256_mul_pd(b, oj);
                    let w = _mm256_add_pd(
                        _mm256_mul_pd(a, _mm256_loadu_pd(r.w[j].as_ptr().add(at))),
                        bo,
                    );
                    let s_mu = _mm256_add_pd(
                        _mm256_mul_pd(a, _mm256_loadu_pd(r.s_mu[j].as_ptr().add(at))),
                        _mm256_mul_pd(bo, xj),
                    );
                    let s_sigma = _mm256_add_pd(
                        _mm256_mul_pd(a, _mm256_loadu_pd(r.s_sigma[j].as_ptr().add(at))),
                        _mm256_mul_pd(_mm256_mul_pd(bo, d), d),
                    );
                    let inv = _mm256_div_pd(one, w);
                    _mm256_storeu_pd(r.w[j].as_mut_ptr().add(at), w);
                    _mm256_storeu_pd(r.s_mu[j].as_mut_ptr().add(at), s_mu);
                    _mm256_storeu_pd(r.s_sigma[j].as_mut_ptr().add(at), s_sigma);
                    _mm256_storeu_pd(r.mu[j].as_mut_ptr().add(at), _mm256_mul_pd(s_mu, inv));
                    _mm256_storeu_pd(
                        r.var_mu[j].as_mut_ptr().add(at),
                        _mm256_mul_pd(s_sigma, inv),
                    );
                }
            }
        }
    }
}

/// The α on `grid` whose pass over `runs` gives the score the highest ROC
/// AUC for telling `bad` runs (the first grid value among equals); `None`
/// when the runs lack good or bad examples.
pub fn best_alpha(
    constants: Constants,
    grid: &[f64],
    runs: &[NormRun],
    good: &[bool],
    bad: &[bool],
) -> Option<f64> {
    let mut best: Option<(f64, f64)> = None;
    for (chi2, &a) in chi2_per_alpha(constants, runs, good, grid).iter().zip(grid) {
        // The AUC only needs the order of the scores, and
        // ln(max(chi2, MIN_POSITIVE)) keeps that of max(chi2, MIN_POSITIVE).
        let ranked: Vec<f64> = chi2.iter().map(|c| c.max(f64::MIN_POSITIVE)).collect();
        let auc = roc_auc(&ranked, bad)?;
        if best.is_none_or(|(b, _)| auc > b) {
            best = Some((auc, a));
        }
    }
    best.map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dinamo::generator::RunGenerator;
    use crate::dinamo::reference::alpha_grid;

    /// Every lane's χ² equals the one-α pass to the bit, for every
    /// instruction set of this CPU, on generated runs with bad runs (not
    /// folded in), an empty run and a partly filled last group of lanes.
    #[test]
    fn lanes_equal_the_one_alpha_pass_to_the_bit() {
        let generator = RunGenerator {
            n_runs: 300,
            n_bad: 40,
            ..Default::default()
        };
        let runs = generator.generate(3);
        let mut norm: Vec<NormRun> = runs.iter().map(|r| NormRun::new(&r.counts, 1e-9)).collect();
        norm[17] = NormRun::new(&vec![0.0; 100], 1e-9);
        let good: Vec<bool> = runs.iter().map(|r| r.label == 0).collect();
        let constants = Constants::default();
        // A full group of eight and a partly filled one.
        let alphas = [0.0, 0.13, 0.5, 0.76, 0.99, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8];
        for isa in Isa::available() {
            let out = chi2_with(isa, constants, &norm, &good, &alphas);
            assert_eq!(out.len(), alphas.len());
            for (chi2, &a) in out.iter().zip(&alphas) {
                let one = pass(constants, &norm, &good, a, Keep::Chi2).chi2;
                assert_eq!(chi2, &one, "{isa:?}, alpha {a}");
            }
        }
    }

    /// The scan picks the α the one-at-a-time scan picks, and an AUC
    /// that is a function of α (the data can tell the α apart).
    #[test]
    fn the_scan_picks_the_one_alpha_scans_choice() {
        let generator = RunGenerator {
            n_runs: 1000,
            n_bad: 100,
            ..Default::default()
        };
        let constants = Constants::default();
        for seed in [70, 71] {
            let runs = generator.generate(seed);
            let norm: Vec<NormRun> = runs.iter().map(|r| NormRun::new(&r.counts, 1e-9)).collect();
            let good: Vec<bool> = runs.iter().map(|r| r.label == 0).collect();
            let bad: Vec<bool> = good.iter().map(|g| !g).collect();
            let grid = alpha_grid(0.01);
            let aucs: Vec<f64> = grid
                .iter()
                .map(|&a| {
                    let chi2 = pass(constants, &norm, &good, a, Keep::Chi2).chi2;
                    roc_auc(&chi2, &bad).unwrap()
                })
                .collect();
            let first_best = aucs
                .iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > aucs[b] { i } else { b });
            assert!(aucs[first_best] > aucs[0] + 1e-3, "{aucs:?}");
            let chosen = best_alpha(constants, &grid, &norm, &good, &bad).unwrap();
            assert_eq!(chosen, grid[first_best], "seed {seed}");
        }
        let no_bad = vec![false; 10];
        let runs: Vec<NormRun> = (0..10).map(|_| NormRun::new(&[1.0; 4], 1e-9)).collect();
        assert_eq!(
            best_alpha(constants, &[0.5], &runs, &[true; 10], &no_bad),
            None
        );
    }
}
