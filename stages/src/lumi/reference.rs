//! Reference shapes of good LS and the χ²/ndf of an LS against them: one
//! reference (every good LS of the reference runs) or one matched in
//! pile-up (the k good reference LS nearest to the LS in μ). Shared by
//! `lumi_chi2_score` (per LS) and `remainder_check` (per run).

use crate::lumi::tables::LsHistogram;

/// Bin contents in entries (a unit-area histogram times its entries).
pub fn in_entries(h: &LsHistogram) -> Vec<f64> {
    let total: f64 = h.counts.iter().sum();
    let scale = if total > 0.0 {
        h.entries as f64 / total
    } else {
        0.0
    };
    h.counts.iter().map(|c| c * scale).collect()
}

/// Reference shape p_b of summed histograms and the entries it holds.
pub struct Reference {
    pub shape: Vec<f64>,
    pub entries: f64,
}

impl Reference {
    pub fn new(histograms: &[&LsHistogram]) -> Option<Reference> {
        let bins = histograms.first()?.counts.len();
        let mut sum = vec![0.0; bins];
        for h in histograms {
            for (s, n) in sum.iter_mut().zip(in_entries(h)) {
                *s += n;
            }
        }
        let entries: f64 = sum.iter().sum();
        (entries > 0.0).then(|| Reference {
            shape: sum.iter().map(|s| s / entries).collect(),
            entries,
        })
    }

    /// Pearson χ²/ndf of one LS; `None` when it has no entries.
    pub fn chi2_ndf(&self, h: &LsHistogram) -> Option<f64> {
        let n = in_entries(h);
        let total: f64 = n.iter().sum();
        if !(total > 0.0) {
            return None;
        }
        let floor = 0.5 / self.entries;
        let chi2: f64 = n
            .iter()
            .zip(&self.shape)
            .map(|(&n, &p)| {
                let e = total * p.max(floor);
                (n - e).powi(2) / e
            })
            .sum();
        Some(chi2 / (n.len() as f64 - 1.0).max(1.0))
    }
}

/// References matched in pile-up: the good reference LS sorted by pile-up.
pub struct PileupMatched<'a> {
    sorted: Vec<&'a LsHistogram>,
    k: usize,
}

impl<'a> PileupMatched<'a> {
    /// Refuses reference LS of unknown pile-up.
    pub fn new(good: &[&'a LsHistogram], k: usize) -> std::result::Result<Self, String> {
        if let Some(h) = good.iter().find(|h| !h.key.pileup.is_finite()) {
            return Err(format!(
                "reference run {} LS {} has no pile-up (column `pileup`): `pileup_neighbours` needs it",
                h.key.run, h.key.ls
            ));
        }
        let mut sorted = good.to_vec();
        sorted.sort_by(|a, b| a.key.pileup.total_cmp(&b.key.pileup));
        Ok(Self { sorted, k })
    }

    /// The reference of an LS at `pileup`: the k reference LS nearest to it
    /// (all of them when there are fewer); an LS of unknown pile-up gets
    /// the single reference.
    pub fn reference_for(&self, pileup: f64) -> Option<Reference> {
        let n = self.sorted.len();
        if !pileup.is_finite() || self.k >= n {
            return Reference::new(&self.sorted);
        }
        // The window of k consecutive LS (in pile-up) nearest to `pileup`.
        let at = self.sorted.partition_point(|h| h.key.pileup < pileup);
        let (mut lo, mut hi) = (at, at);
        while hi - lo < self.k {
            let take_low = lo > 0
                && (hi == n
                    || pileup - self.sorted[lo - 1].key.pileup
                        <= self.sorted[hi].key.pileup - pileup);
            if take_low {
                lo -= 1;
            } else {
                hi += 1;
            }
        }
        Reference::new(&self.sorted[lo..hi])
    }
}
