//! The paper's renormalizations (sec. 4.1.1) on plain maps: N_1 divides an
//! LS's occupancy by its events, γ/ξ (Eq. 2); N_2 divides every (iη, depth)
//! row by its median along iφ, and [`denormalize`] undoes N_2, so a model's
//! output maps back to γ/ξ. The `renormalize_occupancy` stage applies them
//! to a maps table.

use crate::hcal::geometry::MapGeometry;

/// The median of `v` (mean of the two middle values for even lengths),
/// sorting it in place.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (norm, divisors) of one map: norm = (γ/ξ) / divisor of the channel's
/// (iη, depth) row; divisor = median along iφ of γ/ξ, or 1 where it is 0.
pub fn renormalize(occupancy: &[f64], events: i64, geometry: &MapGeometry) -> (Vec<f64>, Vec<f64>) {
    let [n_ieta, n_iphi, n_depth] = geometry.shape;
    let xi = events as f64;
    let mut divisors = vec![1.0; n_ieta * n_depth];
    let mut norm = vec![0.0; occupancy.len()];
    let at = |ieta: usize, iphi: usize, depth: usize| (ieta * n_iphi + iphi) * n_depth + depth;
    for ieta in 0..n_ieta {
        for depth in 0..n_depth {
            let mut row: Vec<f64> = (0..n_iphi)
                .map(|iphi| occupancy[at(ieta, iphi, depth)] / xi)
                .collect();
            let m = median(&mut row);
            let d = if m > 0.0 { m } else { 1.0 };
            divisors[ieta * n_depth + depth] = d;
            for iphi in 0..n_iphi {
                let c = at(ieta, iphi, depth);
                norm[c] = occupancy[c] / xi / d;
            }
        }
    }
    (norm, divisors)
}

/// The inverse of N_2: γ/ξ of every channel from renormalized values.
pub fn denormalize(norm: &[f64], divisors: &[f64], geometry: &MapGeometry) -> Vec<f64> {
    let [_, n_iphi, n_depth] = geometry.shape;
    norm.iter()
        .enumerate()
        .map(|(c, &v)| {
            let depth = c % n_depth;
            let ieta = c / n_depth / n_iphi;
            v * divisors[ieta * n_depth + depth]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::geometry::Subdetector;
    use rand::{Rng, SeedableRng};

    #[test]
    fn median_along_iphi_by_hand() {
        // A 2-ring × 4-φ × 1-depth map is not a real geometry; the forward
        // one (4 rings × 18 φ) is the smallest: fill ring 0 by hand.
        let g = MapGeometry::of(Subdetector::Forward);
        let mut occ = vec![0.0; g.n_channels()];
        for (iphi, v) in occ.iter_mut().take(18).enumerate() {
            *v = (iphi + 1) as f64; // ring 0: 1..=18, median 9.5
        }
        for v in occ[18..36].iter_mut() {
            *v = 4.0;
        }
        let (norm, div) = renormalize(&occ, 2, &g);
        assert_eq!(div[0], 9.5 / 2.0);
        assert_eq!(div[1], 2.0);
        assert_eq!(div[2], 1.0, "an empty ring keeps divisor 1");
        assert_eq!(norm[0], 0.5 / 4.75);
        assert_eq!(norm[18], 1.0);
        assert_eq!(norm[40], 0.0);
    }

    #[test]
    fn round_trip_is_exact() {
        let g = MapGeometry::of(Subdetector::Barrel);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for events in [1, 37, 2250] {
            let occ: Vec<f64> = (0..g.n_channels())
                .map(|_| rng.random_range(0..=events) as f64)
                .collect();
            let (norm, div) = renormalize(&occ, events, &g);
            let back: Vec<f64> = denormalize(&norm, &div, &g)
                .iter()
                .map(|v| v * events as f64)
                .collect();
            for (a, b) in occ.iter().zip(&back) {
                assert!((a - b).abs() <= 1e-12 * a.max(1.0), "{a} vs {b}");
                assert_eq!(b.round(), *a, "counts come back exactly");
            }
        }
    }
}
