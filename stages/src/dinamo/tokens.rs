//! DINAMO-ML's training batches: the K most recent good runs of a dataset
//! and their contexts, each distinct histogram and relative time once (a
//! K = 10, M = 20 batch holds 29 histograms, not 200), which both network
//! paths (`batched_reference.rs`, `cpu_network.rs`) embed once per
//! iteration.

use super::reference_net::{PAD_TIME, PAD_VALUE};

/// One dataset's tokens, B samples of M: the distinct histograms
/// ([U, N_b], row-major) and relative times ([T]) they are drawn from, and
/// for each token (sample-major) which histogram and which time it is.
/// A training batch of K = 10 samples of M = 20 tokens holds K + M − 1
/// distinct histograms and about as many distinct times, not 200: the
/// embeddings run on those and are gathered per token.
#[derive(Debug, Clone, PartialEq)]
pub struct DistinctTokens {
    pub histograms: Vec<f32>,
    pub times: Vec<f32>,
    pub histogram_of: Vec<i64>,
    pub time_of: Vec<i64>,
}

impl DistinctTokens {
    /// Every token its own histogram and time (a prediction's context).
    pub fn dense(histograms: Vec<f32>, times: Vec<f32>) -> Self {
        let tokens = times.len() as i64;
        Self {
            histograms,
            times,
            histogram_of: (0..tokens).collect(),
            time_of: (0..tokens).collect(),
        }
    }

    /// Every token's histogram and time, row-major ([B·M, N_b] and [B·M]):
    /// the dense contexts `build_context` makes.
    pub fn expand(&self, n_bins: usize) -> (Vec<f32>, Vec<f32>) {
        let histograms = self
            .histogram_of
            .iter()
            .flat_map(|&j| &self.histograms[j as usize * n_bins..][..n_bins])
            .copied()
            .collect();
        let times = self
            .time_of
            .iter()
            .map(|&j| self.times[j as usize])
            .collect();
        (histograms, times)
    }

    pub fn distinct_histograms(&self, n_bins: usize) -> usize {
        self.histograms.len() / n_bins.max(1)
    }
}

/// One dataset's training batch: the K most recent good runs (targets,
/// row-major) and their contexts as distinct tokens (`expand` gives the
/// dense contexts `ReferenceNet` reads).
pub struct TrainBatch {
    pub runs: usize,
    pub targets: Vec<f32>,
    pub tokens: DistinctTokens,
}

impl TrainBatch {
    /// The batch of the last `k` of `good` (run, histogram), contexts of `m`.
    pub fn of(good: &[(i64, Vec<f32>)], k: usize, m: usize, n_bins: usize) -> Self {
        let first = good.len().saturating_sub(k);
        let recent = &good[first..];
        Self {
            runs: recent.len(),
            targets: recent.iter().flat_map(|(_, x)| x.iter().copied()).collect(),
            tokens: distinct_contexts(good, first, m, n_bins),
        }
    }
}

/// The contexts of `good[first..]` (each run's last `m` good runs before
/// it, padded in front as `build_context` does) as distinct tokens: the
/// histograms of `good[first − m .. len − 1]` and the padding histogram,
/// each relative time once.
fn distinct_contexts(
    good: &[(i64, Vec<f32>)],
    first: usize,
    m: usize,
    n_bins: usize,
) -> DistinctTokens {
    let start = first.saturating_sub(m);
    let window = &good[start..good.len().saturating_sub(1).max(start)];
    let pad_row = window.len() as i64;
    let mut histograms = Vec::with_capacity((window.len() + 1) * n_bins);
    for (_, h) in window {
        histograms.extend_from_slice(h);
    }
    histograms.extend(std::iter::repeat_n(PAD_VALUE, n_bins));
    let (mut times, mut histogram_of, mut time_of) = (Vec::new(), Vec::new(), Vec::new());
    let time_row = |t: f32, times: &mut Vec<f32>| match times.iter().position(|&x| x == t) {
        Some(j) => j as i64,
        None => {
            times.push(t);
            times.len() as i64 - 1
        }
    };
    for p in first..good.len() {
        let used = p.min(m);
        for _ in used..m {
            histogram_of.push(pad_row);
            time_of.push(time_row(PAD_TIME, &mut times));
        }
        for q in p - used..p {
            histogram_of.push((q - start) as i64);
            time_of.push(time_row((good[q].0 - good[p].0) as f32, &mut times));
        }
    }
    DistinctTokens {
        histograms,
        times,
        histogram_of,
        time_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dinamo::reference_net::build_context;

    /// The distinct tokens, expanded, are exactly the dense contexts (runs
    /// with gaps, batches shorter and longer than the context, padding).
    #[test]
    fn distinct_tokens_expand_to_the_dense_contexts() {
        let n_bins = 3;
        let good: Vec<(i64, Vec<f32>)> = [0, 1, 3, 4, 8, 9, 10, 15, 16, 20]
            .iter()
            .map(|&r| (r, vec![r as f32, 1.0, -(r as f32)]))
            .collect();
        for len in 1..=good.len() {
            for (k, m) in [(1, 1), (2, 3), (4, 2), (10, 20), (3, 5)] {
                let batch = TrainBatch::of(&good[..len], k, m, n_bins);
                let t = &batch.tokens;
                let (mut dense_h, mut dense_t) = (Vec::new(), Vec::new());
                for (run, _) in &good[len.saturating_sub(k)..len] {
                    let (h, tt) = build_context(&good[..len], *run, m, n_bins);
                    dense_h.extend(h);
                    dense_t.extend(tt);
                }
                let (histograms, times) = t.expand(n_bins);
                assert_eq!(histograms, dense_h, "len {len}, k {k}, m {m}");
                assert_eq!(times, dense_t, "len {len}, k {k}, m {m}");
                // Each distinct time once; at most K + M - 1 histograms + padding.
                let mut sorted = t.times.clone();
                sorted.sort_by(f32::total_cmp);
                sorted.dedup();
                assert_eq!(sorted.len(), t.times.len());
                assert!(t.histograms.len() / n_bins <= k + m);
            }
        }
    }
}
