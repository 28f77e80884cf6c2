//! Score forms and baseline predictions beside the paper's Eq. 5, on plain
//! per-LS vectors of one fill.
//!
//! Eq. 5 averages |γ/ξ − prediction| over the window: the noise of every LS
//! enters with its sign thrown away, so a 20 % deficit that persists over T
//! LS grows like T while the noise floor grows like T too. Summing the
//! *signed* deviations first lets the noise cancel (√T) — the counting test a
//! DQM expert would write, z = Σ_w(γ − μ)/√Σ_w μ over the window (a Poisson
//! pull). Its RBX form sums channels of one readout box as well, for
//! anomalies that hit a whole RBX a little.
//!
//! The predictions μ (expected counts per channel and LS) come from the
//! model, from the rules a DQM expert would write (the reference map times
//! the LS's row medians, corrected per RBX by the median ratio of its
//! channels; a per-channel straight line in luminosity fitted on the
//! training maps), or from the generator's truth (the oracle).

use crate::hcal::renormalization::median;

/// Per-channel values of every LS of a fill.
pub type PerLs = Vec<Vec<f64>>;

/// The floor of a window's expected count under the √: a channel expected
/// to be empty would otherwise divide by zero.
const MIN_EXPECTED: f64 = 1.0;

/// Expected counts from a prediction in γ/ξ: μ = max(prediction, 0) · ξ.
pub fn counts(per_event: &[Vec<f64>], events: &[i64]) -> PerLs {
    per_event
        .iter()
        .zip(events)
        .map(|(p, &xi)| p.iter().map(|v| v.max(0.0) * xi.max(0) as f64).collect())
        .collect()
}

/// Σ over the window of `window` LS ending at each LS (fewer at the
/// fill's start) of per-channel values: a running sum, one pass.
pub fn window_sum<R: AsRef<[f64]>>(values: &[R], window: usize) -> PerLs {
    let m = values.first().map_or(0, |v| v.as_ref().len());
    let mut sum = vec![0.0; m];
    let mut out = Vec::with_capacity(values.len());
    for (s, v) in values.iter().enumerate() {
        for (acc, x) in sum.iter_mut().zip(v.as_ref()) {
            *acc += x;
        }
        if s >= window {
            for (acc, x) in sum.iter_mut().zip(values[s - window].as_ref()) {
                *acc -= x;
            }
        }
        out.push(sum.clone());
    }
    out
}

/// (Σ_w x, Σ_w μ) per channel and LS.
fn window_sums(x: &[&[f64]], mu: &[Vec<f64>], window: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    window_sum(x, window)
        .into_iter()
        .zip(window_sum(mu, window))
        .collect()
}

/// |Σ_w(γ − μ)| / √max(Σ_w μ, 1) per channel and LS: the signed window
/// score, two-sided (dead and hot channels both score high).
pub fn signed_window_score(x: &[&[f64]], mu: &[Vec<f64>], window: usize) -> PerLs {
    window_sums(x, mu, window)
        .into_iter()
        .map(|(sx, sm)| {
            sx.iter()
                .zip(&sm)
                .map(|(a, e)| (a - e).abs() / e.max(MIN_EXPECTED).sqrt())
                .collect()
        })
        .collect()
}

/// The same pull summed over each RBX (`rbx[c]` of every channel, `n_rbx`
/// boxes): every channel gets its RBX's score.
pub fn rbx_window_score(
    x: &[&[f64]],
    mu: &[Vec<f64>],
    window: usize,
    rbx: &[usize],
    n_rbx: usize,
) -> PerLs {
    window_sums(x, mu, window)
        .into_iter()
        .map(|(sx, sm)| {
            let (mut dx, mut de) = (vec![0.0; n_rbx], vec![0.0; n_rbx]);
            for (c, &r) in rbx.iter().enumerate() {
                dx[r] += sx[c] - sm[c];
                de[r] += sm[c];
            }
            let z: Vec<f64> = dx
                .iter()
                .zip(&de)
                .map(|(d, e)| d.abs() / e.max(MIN_EXPECTED).sqrt())
                .collect();
            rbx.iter().map(|&r| z[r]).collect()
        })
        .collect()
}

/// μ corrected per LS and RBX by the median of γ/μ over the RBX's channels
/// (those expected to see at least one hit): a gain change of a whole RBX
/// is absorbed, a few bad channels in it are not (the median ignores them).
pub fn rbx_median_corrected(x: &[&[f64]], mu: &[Vec<f64>], rbx: &[usize], n_rbx: usize) -> PerLs {
    mu.iter()
        .zip(x)
        .map(|(mu, x)| {
            let mut ratios = vec![Vec::new(); n_rbx];
            for (c, &r) in rbx.iter().enumerate() {
                if mu[c] >= MIN_EXPECTED {
                    ratios[r].push(x[c] / mu[c]);
                }
            }
            let gain: Vec<f64> = ratios
                .iter_mut()
                .map(|v| if v.is_empty() { 1.0 } else { median(v) })
                .collect();
            mu.iter().zip(rbx).map(|(m, &r)| m * gain[r]).collect()
        })
        .collect()
}

/// A per-channel straight line γ/ξ = a_i + b_i · L in the LS's luminosity
/// L, fitted by least squares on training maps: how an expert models a
/// channel whose occupancy grows with pile-up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LumiLine {
    pub intercept: Vec<f32>,
    pub slope: Vec<f32>,
}

impl LumiLine {
    /// Fits every channel on maps given as (luminosity, γ/ξ per channel).
    /// With one luminosity value only, the slope is 0 and the line the mean.
    pub fn fit(maps: &[(f64, Vec<f64>)]) -> Self {
        let m = maps.first().map_or(0, |r| r.1.len());
        let n = maps.len() as f64;
        let mean_l = maps.iter().map(|r| r.0).sum::<f64>() / n;
        let sll: f64 = maps.iter().map(|r| (r.0 - mean_l).powi(2)).sum();
        let (mut intercept, mut slope) = (Vec::with_capacity(m), Vec::with_capacity(m));
        for c in 0..m {
            let mean_y = maps.iter().map(|r| r.1[c]).sum::<f64>() / n;
            let sly: f64 = maps
                .iter()
                .map(|r| (r.0 - mean_l) * (r.1[c] - mean_y))
                .sum();
            let b = if sll > 0.0 { sly / sll } else { 0.0 };
            intercept.push((mean_y - b * mean_l) as f32);
            slope.push(b as f32);
        }
        Self { intercept, slope }
    }

    /// Whether the line was fitted (cards written before it have none).
    pub fn is_fitted(&self) -> bool {
        !self.intercept.is_empty()
    }

    /// γ/ξ predicted at luminosity `lumi`.
    pub fn predict(&self, lumi: f64) -> Vec<f64> {
        self.intercept
            .iter()
            .zip(&self.slope)
            .map(|(&a, &b)| f64::from(a) + f64::from(b) * lumi)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[Vec<f64>]) -> Vec<&[f64]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn signed_score_by_hand_lets_noise_cancel() {
        // Channel 0: +3 then −3 around μ = 9 (Eq. 5 would average 3; the
        // signed sum is 0). Channel 1: 6 twice against μ = 9: |−6|/√18.
        let x = vec![vec![12.0, 6.0], vec![6.0, 6.0]];
        let mu = vec![vec![9.0, 9.0], vec![9.0, 9.0]];
        let z = signed_window_score(&rows(&x), &mu, 2);
        assert_eq!(z[0], vec![3.0 / 3.0, 3.0 / 3.0]);
        assert_eq!(z[1][0], 0.0);
        assert!((z[1][1] - 6.0 / 18f64.sqrt()).abs() < 1e-12);
        // Window 1: only the LS itself.
        let z = signed_window_score(&rows(&x), &mu, 1);
        assert_eq!(z[1], vec![1.0, 1.0]);
    }

    #[test]
    fn window_drops_the_ls_that_left_it() {
        let x = vec![vec![0.0], vec![4.0], vec![4.0]];
        let mu = vec![vec![4.0]; 3];
        let z = signed_window_score(&rows(&x), &mu, 2);
        // LS 2 sees LS 1 and 2 only: no deviation.
        assert_eq!(z[2], vec![0.0]);
        assert_eq!(z[1], vec![4.0 / 8f64.sqrt()]);
    }

    #[test]
    fn rbx_score_sums_channels_of_a_box() {
        // Two boxes of two channels; box 0 is 1 low in each channel.
        let x = vec![vec![3.0, 3.0, 4.0, 5.0]];
        let mu = vec![vec![4.0; 4]];
        let z = rbx_window_score(&rows(&x), &mu, 1, &[0, 0, 1, 1], 2);
        let want = [2.0, 2.0, 1.0, 1.0].map(|d: f64| d / 8f64.sqrt());
        for (a, b) in z[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{:?}", z[0]);
        }
    }

    #[test]
    fn rbx_median_absorbs_a_box_gain_and_keeps_a_single_bad_channel() {
        // Box 0 (3 channels) at 1.2 × μ with channel 2 dead; box 1 as μ.
        let x = vec![vec![12.0, 12.0, 0.0, 10.0]];
        let mu = vec![vec![10.0; 4]];
        let c = rbx_median_corrected(&rows(&x), &mu, &[0, 0, 0, 1], 2);
        assert_eq!(c[0], vec![12.0, 12.0, 12.0, 10.0]);
    }

    #[test]
    fn lumi_line_recovers_a_line() {
        let maps: Vec<(f64, Vec<f64>)> = [0.2, 0.5, 1.0]
            .iter()
            .map(|&l| (l, vec![0.01 + 0.02 * l, 0.3]))
            .collect();
        let line = LumiLine::fit(&maps);
        assert!((line.intercept[0] - 0.01).abs() < 1e-7);
        assert!((line.slope[0] - 0.02).abs() < 1e-7);
        assert!(line.slope[1].abs() < 1e-7);
        let p = line.predict(0.75);
        assert!((p[0] - 0.025).abs() < 1e-7 && (p[1] - 0.3).abs() < 1e-7);
        let flat = LumiLine::fit(&[(1.0, vec![0.5]), (1.0, vec![0.7])]);
        assert_eq!(flat.slope, vec![0.0]);
        assert!((flat.intercept[0] - 0.6).abs() < 1e-7);
    }

    #[test]
    fn counts_floor_negative_predictions() {
        assert_eq!(counts(&[vec![-0.1, 0.5]], &[10]), vec![vec![0.0, 5.0]]);
    }
}
