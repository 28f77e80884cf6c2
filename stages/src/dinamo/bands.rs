//! The Jaccard distance of the DINAMO paper (section 3) as its reference
//! code computes it (github.com/ArseniiGav/DINAMO, `jaccard_distance_evaluation`):
//! how well the reference's 1σ band covers the spread of the good runs,
//! both seen in the z-score space of each run's true (μ, σ).
//!
//! Per regime, over its good runs: each normalised histogram x is read as a
//! density in z = (bin centre − μ)/σ (density = x / Δz · Δbin = x σ) and
//! interpolated back onto the bin centres (`np.interp`: linear, flat beyond
//! the ends). The true band is the per-bin median of those densities ± their
//! per-bin standard deviation (over runs, ddof 0); the predicted band the
//! per-bin median of the references' densities ± the per-bin mean of the
//! references' σ densities. The distance is
//! 1 − Σ max(min(upper) − max(lower), 0) / Σ (max(upper) − min(lower)).
//!
//! Both bands are a few numbers per bin, so a reference stage writes them
//! (its `bands` output, [`super::tables::bands_batch`]) and `dqm_metrics`
//! reads them, or `dqm_metrics` builds them from per-run vectors; either way
//! one function does the sums.

/// The two 1σ bands of one regime of one dataset, per bin (on the bin centres).
#[derive(Debug, Clone, PartialEq)]
pub struct RegimeBands {
    /// Per-bin median of the good runs' z-space densities.
    pub true_median: Vec<f64>,
    /// Per-bin standard deviation (ddof 0) of those densities.
    pub true_std: Vec<f64>,
    /// Per-bin median of the references' z-space densities.
    pub ref_median: Vec<f64>,
    /// Per-bin mean of the references' σ in z-space density units.
    pub ref_sigma: Vec<f64>,
}

impl RegimeBands {
    /// The Jaccard distance between the true and the predicted band.
    pub fn jaccard(&self) -> f64 {
        let lower = |m: &[f64], s: &[f64]| m.iter().zip(s).map(|(a, b)| a - b).collect();
        let upper = |m: &[f64], s: &[f64]| m.iter().zip(s).map(|(a, b)| a + b).collect();
        let (tl, tu): (Vec<f64>, Vec<f64>) = (
            lower(&self.true_median, &self.true_std),
            upper(&self.true_median, &self.true_std),
        );
        let (pl, pu): (Vec<f64>, Vec<f64>) = (
            lower(&self.ref_median, &self.ref_sigma),
            upper(&self.ref_median, &self.ref_sigma),
        );
        jaccard_distance(&tl, &tu, &pl, &pu)
    }
}

/// 1 − Σ clip(min(upper) − max(lower), 0) / Σ (max(upper) − min(lower));
/// 1 when the union is empty.
pub fn jaccard_distance(
    true_lower: &[f64],
    true_upper: &[f64],
    pred_lower: &[f64],
    pred_upper: &[f64],
) -> f64 {
    let (mut inter, mut union) = (0.0, 0.0);
    for j in 0..true_lower.len() {
        inter += (true_upper[j].min(pred_upper[j]) - true_lower[j].max(pred_lower[j])).max(0.0);
        union += true_upper[j].max(pred_upper[j]) - true_lower[j].min(pred_lower[j]);
    }
    if union == 0.0 {
        1.0
    } else {
        1.0 - inter / union
    }
}

/// `np.interp(x, xp, fp)`: linear in increasing `xp`, flat beyond its ends.
/// (This one-point form is the test oracle of [`interp_sorted`].)
#[cfg(test)]
fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let last = xp.len() - 1;
    if x <= xp[0] {
        return fp[0];
    }
    if x >= xp[last] {
        return fp[last];
    }
    let k = xp.partition_point(|&v| v <= x);
    let (x0, x1) = (xp[k - 1], xp[k]);
    let slope = (fp[k] - fp[k - 1]) / (x1 - x0);
    slope * (x - x0) + fp[k - 1]
}

/// Where each bin centre falls on one run's z-grid: `np.interp`'s bracketing
/// point and weight, found once per run and applied to the three per-bin
/// vectors of that run (histogram, reference, reference σ).
#[derive(Default)]
struct Resampling {
    /// Per centre: index of the left grid point (the right one is +1), or
    /// a clamp to the first/last grid value beyond the grid's ends.
    at: Vec<Bracket>,
    /// x -> density: Δbin / Δz (the histogram read as a density in z).
    scale: f64,
}

#[derive(Clone, Copy)]
enum Bracket {
    First,
    Last,
    Between(usize, f64),
}

impl Resampling {
    /// For a grid `z` (increasing) and the points `xs` (increasing),
    /// reusing this one's storage.
    fn set(&mut self, xs: &[f64], z: &[f64], scale: f64) {
        let last = z.len() - 1;
        let mut k = 1;
        self.at.clear();
        self.at.extend(xs.iter().map(|&x| {
            if x <= z[0] {
                return Bracket::First;
            }
            if x >= z[last] {
                return Bracket::Last;
            }
            while z[k] <= x {
                k += 1;
            }
            Bracket::Between(k - 1, (x - z[k - 1]) / (z[k] - z[k - 1]))
        }));
        self.scale = scale;
    }

    /// The density of `values` at point `i`.
    #[inline]
    fn at(&self, values: &[f64], i: usize) -> f64 {
        self.scale
            * match self.at[i] {
                Bracket::First => values[0],
                Bracket::Last => values[values.len() - 1],
                Bracket::Between(k, t) => values[k] + t * (values[k + 1] - values[k]),
            }
    }
}

/// [`interp`] at every point of the increasing `xs`, in one sweep.
#[cfg(test)]
fn interp_sorted(xs: &[f64], xp: &[f64], fp: &[f64]) -> Vec<f64> {
    let mut resampling = Resampling::default();
    resampling.set(xs, xp, 1.0);
    (0..xs.len()).map(|i| resampling.at(fp, i)).collect()
}

/// Runs resampled into a block, run-major, before they join the per-bin
/// columns: writing each run's 3 × n_bins values straight into 3 × n_bins
/// growing columns scattered the stores over hundreds of streams (the most
/// expensive part of the bands); a block of runs is written in order, then
/// moved into the columns a bin at a time.
const BLOCK_RUNS: usize = 64;

/// Collects the good runs of one regime and reduces them to [`RegimeBands`].
/// The per-run densities are kept by bin (one column per bin), as the
/// reduction reads them.
pub struct BandBuilder {
    centers: Vec<f64>,
    /// Per quantity (histogram, reference, reference σ), per bin, the
    /// densities of the runs added so far (in run order).
    columns: [Vec<Vec<f64>>; 3],
    /// Per quantity, the densities of the runs not yet in `columns`,
    /// run-major.
    block: [Vec<f64>; 3],
    /// Scratch for one run: its z-grid and its resampling.
    z: Vec<f64>,
    resampling: Resampling,
}

impl BandBuilder {
    /// For histograms of `n_bins` equal bins on `[lo, hi)`.
    pub fn new(lo: f64, hi: f64, n_bins: usize) -> Self {
        let width = (hi - lo) / n_bins as f64;
        let columns = || vec![Vec::new(); n_bins];
        let block = || Vec::with_capacity(BLOCK_RUNS * n_bins);
        Self {
            centers: (0..n_bins).map(|j| lo + (j as f64 + 0.5) * width).collect(),
            columns: [columns(), columns(), columns()],
            block: [block(), block(), block()],
            z: Vec::with_capacity(n_bins),
            resampling: Resampling::default(),
        }
    }

    /// Room for `runs` more runs in every column.
    pub fn reserve(&mut self, runs: usize) {
        for column in self.columns.iter_mut().flatten() {
            column.reserve(runs);
        }
    }

    /// Adds one good run: its normalised histogram, the reference and its σ
    /// it was scored against, and its true (μ, σ). Each is read as a density
    /// in the z-space of (μ, σ) and interpolated back onto the bin centres
    /// (`np.interp`, to rounding). A run without a positive finite σ has no
    /// z-space and is skipped.
    pub fn add(&mut self, x: &[f64], ref_mu: &[f64], ref_sigma: &[f64], mu: f64, sigma: f64) {
        if !(sigma > 0.0 && sigma.is_finite() && mu.is_finite()) || self.centers.len() < 2 {
            return;
        }
        self.z.clear();
        self.z.extend(self.centers.iter().map(|c| (c - mu) / sigma));
        let scale = (self.centers[1] - self.centers[0]) / (self.z[1] - self.z[0]);
        self.resampling.set(&self.centers, &self.z, scale);
        for (block, values) in self.block.iter_mut().zip([x, ref_mu, ref_sigma]) {
            block.extend((0..self.centers.len()).map(|j| self.resampling.at(values, j)));
        }
        if self.block[0].len() == BLOCK_RUNS * self.centers.len() {
            self.flush();
        }
    }

    /// Moves the block's runs into the per-bin columns.
    fn flush(&mut self) {
        let n_bins = self.centers.len();
        for (columns, block) in self.columns.iter_mut().zip(&mut self.block) {
            for (j, column) in columns.iter_mut().enumerate() {
                column.extend(block.iter().skip(j).step_by(n_bins));
            }
            block.clear();
        }
    }

    /// The bands, or `None` without any run.
    pub fn finish(mut self) -> Option<RegimeBands> {
        self.flush();
        let [x, reference, sigma] = &mut self.columns;
        let n = x.first().map_or(0, Vec::len);
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let n_bins = self.centers.len();
        let mut bands = RegimeBands {
            true_median: Vec::with_capacity(n_bins),
            true_std: Vec::with_capacity(n_bins),
            ref_median: Vec::with_capacity(n_bins),
            ref_sigma: Vec::with_capacity(n_bins),
        };
        for j in 0..n_bins {
            let xs = &mut x[j];
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            bands.true_std.push(var.sqrt());
            bands.true_median.push(median(xs));
            bands.ref_median.push(median(&mut reference[j]));
            bands.ref_sigma.push(sigma[j].iter().sum::<f64>() / n);
        }
        Some(bands)
    }
}

/// `np.median`: the middle value, or the mean of the two middle values
/// (found by selection, not a full sort).
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + mid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_is_numpys_flat_beyond_the_ends() {
        let (xp, fp) = ([0.0, 1.0, 3.0], [1.0, 3.0, 7.0]);
        let xs = [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 9.0];
        let want = [1.0, 1.0, 2.0, 3.0, 5.0, 7.0, 7.0];
        assert_eq!(interp_sorted(&xs, &xp, &fp), want);
        for (x, w) in xs.iter().zip(want) {
            assert_eq!(interp(*x, &xp, &fp), w);
        }
    }

    /// The shared bracketing agrees with the one-point `np.interp` formula
    /// (slope form) to rounding on a skewed grid, inside and beyond its ends.
    #[test]
    fn resampling_agrees_with_the_one_point_interp() {
        let centers: Vec<f64> = (0..40).map(|j| -5.0 + (j as f64 + 0.5) * 0.25).collect();
        let (mu, sigma) = (0.7, 1.9);
        let z: Vec<f64> = centers.iter().map(|c| (c - mu) / sigma).collect();
        let fp: Vec<f64> = (0..40).map(|j| ((j * 7919) % 13) as f64 * 0.01).collect();
        let fast = interp_sorted(&centers, &z, &fp);
        for (c, f) in centers.iter().zip(&fast) {
            let slow = interp(*c, &z, &fp);
            assert!((f - slow).abs() <= 1e-14, "at {c}: {f} vs {slow}");
        }
    }

    #[test]
    fn median_is_numpys() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
    }

    /// Two 4-bin runs worked by hand: centres -1.5, -0.5, 0.5, 1.5.
    #[test]
    fn bands_and_distance_by_hand() {
        let mut b = BandBuilder::new(-2.0, 2.0, 4);
        // Run A: mu 0, sigma 1 -> z = centres, density = x (dz = dc = 1).
        b.add(
            &[0.1, 0.4, 0.4, 0.1],
            &[0.1, 0.4, 0.4, 0.1],
            &[0.0; 4],
            0.0,
            1.0,
        );
        // Run B: mu 0, sigma 2 -> z = centres/2, density = 2x, read back at
        // the centres: +-1.5 lies beyond z's ends (+-0.75) -> the end values;
        // +-0.5 between z = -0.75 and -0.25 (or 0.25 and 0.75).
        b.add(
            &[0.2, 0.3, 0.3, 0.2],
            &[0.25, 0.25, 0.25, 0.25],
            &[0.05; 4],
            0.0,
            2.0,
        );
        let bands = b.finish().unwrap();
        // B's densities: z = [-0.75, -0.25, 0.25, 0.75], d = [0.4, 0.6, 0.6, 0.4];
        // at -0.5: 0.5; at -1.5: 0.4.
        let b_x = [0.4, 0.5, 0.5, 0.4];
        let a_x = [0.1, 0.4, 0.4, 0.1];
        for j in 0..4 {
            let med = 0.5 * (a_x[j] + b_x[j]);
            assert!((bands.true_median[j] - med).abs() < 1e-12);
            assert!((bands.true_std[j] - 0.5 * (b_x[j] - a_x[j]).abs()).abs() < 1e-12);
        }
        // References: A 0.1/0.4, B 0.5 everywhere; sigma: A 0, B 0.1 -> mean 0.05.
        assert!((bands.ref_median[0] - 0.3).abs() < 1e-12);
        assert!((bands.ref_sigma[2] - 0.05).abs() < 1e-12);
        // Bin 0: true [0.25-0.15, 0.25+0.15] = [0.1, 0.4]; predicted [0.25, 0.35]
        // (ref_median 0.3 -+ 0.05): overlap 0.1, union 0.3. Bin 1: true
        // [0.45-0.05, 0.5], predicted [0.4, 0.5] (0.45 -+ 0.05): identical, 0.1/0.1.
        let d = bands.jaccard();
        let want = 1.0 - (0.1 + 0.1 + 0.1 + 0.1) / (0.3 + 0.1 + 0.1 + 0.3);
        assert!((d - want).abs() < 1e-12, "{d} vs {want}");
    }

    #[test]
    fn distance_is_zero_for_equal_bands_one_for_empty_and_counts_gaps() {
        let lo = [0.0, 1.0];
        let hi = [1.0, 2.0];
        assert_eq!(jaccard_distance(&lo, &hi, &lo, &hi), 0.0);
        assert_eq!(jaccard_distance(&[0.0], &[0.0], &[0.0], &[0.0]), 1.0);
        // Disjoint bands with a gap: the union spans the gap too.
        let d = jaccard_distance(&[0.0], &[1.0], &[2.0], &[3.0]);
        assert_eq!(d, 1.0);
        let half = jaccard_distance(&[0.0], &[2.0], &[1.0], &[2.0]);
        assert_eq!(half, 0.5);
    }
}
