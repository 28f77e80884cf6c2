//! The figures of merit of medic.txt section 4 on a set of predictions, as
//! a library: accuracy of the majority vote (eq. 3.5), macro one-vs-rest ROC
//! AUC and Brier score of the ensemble mean (eq. 3.7), binary (normal vs any
//! glitch) figures, the tie ceiling and chance baselines, the paper's own
//! reporting protocol, moving-block bootstrap intervals and confusion
//! matrices. The `medic_metrics` stage writes them.

use crate::stats::{median_and_95, roc_auc};

/// The columns of a predictions table, in memory (read by
/// [`crate::medic::tables::read_predictions`]): per window, the soft label
/// `truth[c]`, its argmax class, the ensemble-mean probabilities `prob[c]`,
/// the majority vote, the position of its first event and its id.
pub struct Predictions {
    pub truth: Vec<Vec<f64>>,
    pub argmax: Vec<usize>,
    pub prob: Vec<Vec<f64>>,
    pub vote: Vec<usize>,
    /// Position of each window's first event: windows in time order.
    pub start: Vec<i64>,
    /// Each window's id in the window table.
    pub window_id: Vec<i64>,
}

/// The headline figures of one set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub accuracy: f64,
    pub auc: Option<f64>,
    pub brier: f64,
    pub binary_accuracy: f64,
    pub binary_auc: Option<f64>,
    pub binary_fpr: Option<f64>,
    pub binary_tpr: Option<f64>,
}

/// The figures given a bootstrap interval, in the order of
/// [`Figures::with_intervals`] and of the `<metric>_lo/_hi` columns.
pub const INTERVAL_METRICS: [&str; 5] =
    ["accuracy", "auc", "brier", "binary_accuracy", "binary_auc"];

impl Figures {
    /// The values of [`INTERVAL_METRICS`], `None` where undefined.
    pub fn with_intervals(&self) -> [Option<f64>; 5] {
        [
            Some(self.accuracy),
            self.auc,
            Some(self.brier),
            Some(self.binary_accuracy),
            self.binary_auc,
        ]
    }
}

/// Computes the figures of medic.txt section 4 (see the metrics table's docs).
pub fn figures(p: &Predictions, normal: usize) -> Figures {
    let n = p.len() as f64;
    let nc = p.prob.len();
    let accuracy = (0..p.len()).filter(|&i| p.vote[i] == p.argmax[i]).count() as f64 / n;
    let aucs: Vec<f64> = (0..nc)
        .filter_map(|c| {
            let positive: Vec<bool> = p.argmax.iter().map(|&a| a == c).collect();
            roc_auc(&p.prob[c], &positive)
        })
        .collect();
    let auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);
    let brier = (0..p.len())
        .map(|i| {
            (0..nc)
                .map(|c| (p.prob[c][i] - p.truth[c][i]).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n;
    let glitch: Vec<bool> = p.argmax.iter().map(|&a| a != normal).collect();
    let flagged: Vec<bool> = p.vote.iter().map(|&v| v != normal).collect();
    let binary_accuracy = glitch.iter().zip(&flagged).filter(|(a, b)| a == b).count() as f64 / n;
    let score: Vec<f64> = p.prob[normal].iter().map(|q| 1.0 - q).collect();
    let binary_auc = roc_auc(&score, &glitch);
    let (tpr, specificity, _) = crate::stats::rates(&flagged, &glitch);
    Figures {
        accuracy,
        auc,
        brier,
        binary_accuracy,
        binary_auc,
        binary_fpr: specificity.map(|s| 1.0 - s),
        binary_tpr: tpr,
    }
}

/// Accuracy ceiling of the argmax-of-counts label: the mean over windows of
/// 1 / (number of classes tied for the largest fraction).
pub fn tie_ceiling(truth: &[Vec<f64>]) -> f64 {
    let n = truth.first().map_or(0, Vec::len);
    if n == 0 {
        return 0.0;
    }
    (0..n)
        .map(|i| {
            let max = truth.iter().map(|c| c[i]).fold(f64::MIN, f64::max);
            let tied = truth.iter().filter(|c| (c[i] - max).abs() < 1e-9).count();
            1.0 / tied as f64
        })
        .sum::<f64>()
        / n as f64
}

/// The paper's reporting protocol: (accuracy of the argmax of the mean
/// probabilities on ≤ `per_class` random windows of each argmax class,
/// binary accuracy of that argmax on a 50/50 random subsample of normal and
/// glitch windows — `None` without both).
pub fn paper_protocol(
    p: &Predictions,
    normal: usize,
    per_class: usize,
    seed: u64,
) -> (f64, Option<f64>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9A9E5);
    let nc = p.prob.len();
    let predicted: Vec<usize> = (0..p.len())
        .map(|i| {
            (0..nc)
                .max_by(|&a, &b| p.prob[a][i].total_cmp(&p.prob[b][i]).then(b.cmp(&a)))
                .unwrap_or(0)
        })
        .collect();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); nc];
    for (i, &a) in p.argmax.iter().enumerate() {
        by_class[a].push(i);
    }
    let (mut right, mut n) = (0usize, 0usize);
    for members in &mut by_class {
        members.shuffle(&mut rng);
        for &i in members.iter().take(per_class) {
            right += usize::from(predicted[i] == p.argmax[i]);
            n += 1;
        }
    }
    let accuracy = right as f64 / n.max(1) as f64;
    let (mut normal_rows, mut glitch_rows): (Vec<usize>, Vec<usize>) =
        (0..p.len()).partition(|&i| p.argmax[i] == normal);
    let m = normal_rows.len().min(glitch_rows.len());
    let binary = (m > 0).then(|| {
        normal_rows.shuffle(&mut rng);
        glitch_rows.shuffle(&mut rng);
        let right = normal_rows[..m]
            .iter()
            .chain(&glitch_rows[..m])
            .filter(|&&i| (predicted[i] != normal) == (p.argmax[i] != normal))
            .count();
        right as f64 / (2 * m) as f64
    });
    (accuracy, binary)
}

/// Share of the most frequent value of `labels` (the always-guess-it baseline).
pub fn majority_share(labels: impl Iterator<Item = usize>) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
        n += 1;
    }
    counts.values().max().map_or(0.0, |&m| m as f64 / n as f64)
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.vote.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vote.is_empty()
    }

    /// The predictions at rows `idx` (with repeats).
    pub fn subset(&self, idx: &[usize]) -> Predictions {
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Predictions {
            truth: self.truth.iter().map(|c| pick(c)).collect(),
            argmax: idx.iter().map(|&i| self.argmax[i]).collect(),
            prob: self.prob.iter().map(|c| pick(c)).collect(),
            vote: idx.iter().map(|&i| self.vote[i]).collect(),
            start: idx.iter().map(|&i| self.start[i]).collect(),
            window_id: idx.iter().map(|&i| self.window_id[i]).collect(),
        }
    }
}

/// Calls `visit` with each of `n` moving-block bootstrap resamples (row
/// indices) of windows whose first events are at `start`: the windows in
/// time order are cut into blocks of `block` consecutive ones, and as many
/// blocks as there are are drawn with replacement.
fn for_each_block_resample(
    start: &[i64],
    block: usize,
    n: usize,
    seed: u64,
    mut visit: impl FnMut(&[usize]),
) {
    use rand::{Rng, SeedableRng};
    let mut order: Vec<usize> = (0..start.len()).collect();
    order.sort_by_key(|&i| start[i]);
    let blocks: Vec<&[usize]> = order.chunks(block.max(1)).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx = Vec::with_capacity(start.len());
    for _ in 0..n {
        idx.clear();
        for _ in 0..blocks.len() {
            idx.extend_from_slice(blocks[rng.random_range(0..blocks.len())]);
        }
        visit(&idx);
    }
}

/// The 2.5 and 97.5 percentiles of `n` resampled values of a figure: an
/// interval only when every resample defines the figure.
fn interval(mut values: Vec<f64>, n: usize) -> [Option<f64>; 2] {
    if values.len() < n || n == 0 {
        return [None, None];
    }
    let [_, lo, hi] = median_and_95(&mut values);
    [lo, hi]
}

/// 95 % percentile intervals of the figures over `n` moving-block bootstrap
/// resamples (`for_each_block_resample`). Per figure of
/// [`INTERVAL_METRICS`]: `[lo, hi]`, `None` where a resample leaves the
/// figure undefined.
pub fn bootstrap_intervals(
    p: &Predictions,
    normal: usize,
    block: usize,
    n: usize,
    seed: u64,
) -> [[Option<f64>; 2]; 5] {
    let mut samples: [Vec<f64>; 5] = Default::default();
    for_each_block_resample(&p.start, block, n, seed, |idx| {
        let values = figures(&p.subset(idx), normal).with_intervals();
        for (sample, v) in samples.iter_mut().zip(values) {
            sample.extend(v);
        }
    });
    samples.map(|v| interval(v, n))
}

/// One figure of two sets of predictions of the same windows: each, their
/// difference `model − reference`, and its 95 % interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub model: Option<f64>,
    pub reference: Option<f64>,
    pub difference: Option<f64>,
    pub interval: [Option<f64>; 2],
}

/// The figures of [`INTERVAL_METRICS`] of `model` and `reference`,
/// predictions of the same windows row by row, with intervals of their
/// differences over moving-block bootstrap resamples that draw the same
/// windows for both: the windows' own difficulty cancels, so the interval
/// is that of the difference, narrower than the two figures' intervals
/// side by side.
pub fn paired_differences(
    model: &Predictions,
    reference: &Predictions,
    normal: usize,
    block: usize,
    n: usize,
    seed: u64,
) -> [Paired; 5] {
    let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    let mut samples: [Vec<f64>; 5] = Default::default();
    for_each_block_resample(&model.start, block, n, seed, |idx| {
        let a = figures(&model.subset(idx), normal).with_intervals();
        let b = figures(&reference.subset(idx), normal).with_intervals();
        for ((sample, a), b) in samples.iter_mut().zip(a).zip(b) {
            sample.extend(diff(a, b));
        }
    });
    let (a, b) = (
        figures(model, normal).with_intervals(),
        figures(reference, normal).with_intervals(),
    );
    let mut samples = samples.into_iter();
    std::array::from_fn(|i| Paired {
        model: a[i],
        reference: b[i],
        difference: diff(a[i], b[i]),
        interval: interval(samples.next().expect("five figures"), n),
    })
}

/// Counts[true][predicted].
pub fn confusion(truth: &[usize], predicted: &[usize], n: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; n]; n];
    for (&t, &p) in truth.iter().zip(predicted) {
        m[t][p] += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medic::test_support::hand_made_predictions as hand_made;

    /// Paired differences by hand: a model right on one more window than
    /// the reference is never worse in any resample; the same predictions
    /// differ by exactly 0.
    #[test]
    fn paired_differences_by_hand() {
        let reference = hand_made();
        let mut model = hand_made();
        model.vote[1] = 0;
        let [accuracy, ..] = paired_differences(&model, &reference, 0, 1, 400, 3);
        assert_eq!(accuracy.model, Some(1.0));
        assert_eq!(accuracy.reference, Some(0.75));
        assert_eq!(accuracy.difference, Some(0.25));
        let [lo, hi] = accuracy.interval.map(Option::unwrap);
        // Window 1 is left out of a resample with probability (3/4)^4.
        assert!(lo == 0.0 && hi > 0.25 && hi <= 1.0, "[{lo}, {hi}]");
        let same = paired_differences(&reference, &reference, 0, 2, 50, 3);
        // Accuracy, Brier and binary accuracy are defined on every
        // resample; an AUC is not where a resample holds one class only.
        for i in [0, 2, 3] {
            assert_eq!(same[i].difference, Some(0.0));
            assert_eq!(same[i].interval, [Some(0.0), Some(0.0)]);
        }
        assert!(same[1].interval.iter().all(|v| v.is_none_or(|v| v == 0.0)));
    }

    #[test]
    fn papers_protocol_by_hand() {
        // Argmax of the mean: 0, 1, 1, 1 → right on windows 0, 2, 3.
        let p = hand_made();
        let (acc, binary) = paper_protocol(&p, 0, 3000, 1);
        assert!((acc - 0.75).abs() < 1e-12);
        assert_eq!(binary, Some(0.75), "2 normal + 2 glitch windows, all kept");
        // One window per class: class 0 keeps window 0 (right) or 1 (wrong),
        // class 1 keeps a right one; over seeds both happen.
        let seen: std::collections::BTreeSet<u64> = (0..20)
            .map(|seed| (paper_protocol(&p, 0, 1, seed).0 * 100.0).round() as u64)
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![50, 100]);
        // 3 glitch windows, 1 normal: 50/50 keeps 1 of each.
        let mut q = hand_made();
        q.argmax = vec![0, 1, 1, 1];
        let (_, binary) = paper_protocol(&q, 0, 3000, 1);
        assert_eq!(binary, Some(1.0));
        q.argmax = vec![1, 1, 1, 1];
        assert_eq!(paper_protocol(&q, 0, 3000, 1).1, None);
    }

    #[test]
    fn tie_ceiling_and_baselines_by_hand() {
        // Windows of W = 4: (2,2,0) two-way tie, (1,1,1,1) four-way, (3,1) none.
        let truth = vec![
            vec![0.5, 0.25, 0.75],
            vec![0.5, 0.25, 0.25],
            vec![0.0, 0.25, 0.0],
            vec![0.0, 0.25, 0.0],
        ];
        let want = (0.5 + 0.25 + 1.0) / 3.0;
        assert!((tie_ceiling(&truth) - want).abs() < 1e-12);
        assert!((majority_share([1, 0, 1, 1].into_iter()) - 0.75).abs() < 1e-12);
        assert_eq!(majority_share(std::iter::empty()), 0.0);
    }

    #[test]
    fn block_bootstrap_intervals_bracket_the_figures_and_are_seeded() {
        // 400 windows in time order; the first 200 are right, the rest 50/50.
        let n = 400;
        let p = Predictions {
            truth: vec![
                (0..n).map(|i| (i % 2) as f64).collect(),
                (0..n).map(|i| 1.0 - (i % 2) as f64).collect(),
            ],
            argmax: (0..n).map(|i| 1 - i % 2).collect(),
            prob: vec![
                (0..n)
                    .map(|i| {
                        if i < 200 {
                            (i % 2) as f64 * 0.8 + 0.1
                        } else {
                            0.5
                        }
                    })
                    .collect(),
                (0..n)
                    .map(|i| {
                        if i < 200 {
                            0.9 - (i % 2) as f64 * 0.8
                        } else {
                            0.5
                        }
                    })
                    .collect(),
            ],
            vote: (0..n)
                .map(|i| if i < 200 { 1 - i % 2 } else { (i / 2) % 2 })
                .collect(),
            start: (0..n as i64).rev().collect(),
            window_id: (0..n as i64).collect(),
        };
        let f = figures(&p, 0);
        let iv = bootstrap_intervals(&p, 0, 10, 300, 1);
        let [lo, hi] = iv[0];
        let (lo, hi) = (lo.unwrap(), hi.unwrap());
        assert!(
            lo < f.accuracy && f.accuracy < hi,
            "{lo} {} {hi}",
            f.accuracy
        );
        // Wide enough to reflect 40 blocks: not a point.
        assert!(hi - lo > 0.03 && hi - lo < 0.3, "{lo} {hi}");
        assert_eq!(iv, bootstrap_intervals(&p, 0, 10, 300, 1));
        assert_ne!(iv, bootstrap_intervals(&p, 0, 10, 300, 2));
        // Other block lengths bracket it too.
        let wide = bootstrap_intervals(&p, 0, 40, 300, 1)[0];
        assert!(wide[0].unwrap() < f.accuracy && f.accuracy < wide[1].unwrap());
        assert_eq!(bootstrap_intervals(&p, 0, 10, 0, 1)[0], [None, None]);
    }

    #[test]
    fn figures_of_hand_made_predictions() {
        let f = figures(&hand_made(), 0);
        assert!((f.accuracy - 0.75).abs() < 1e-12);
        // Brier: 2*(0.01) + 2*(0.04) + 2*(0.01) + 2*(0.04) = 0.2, / 4.
        assert!((f.brier - 0.05).abs() < 1e-12, "{}", f.brier);
        // Class 0 scores 0.9, 0.4 vs 0.3, 0.2: perfectly ranked; likewise class 1.
        assert_eq!(f.auc, Some(1.0));
        assert_eq!(f.binary_auc, Some(1.0));
        assert!((f.binary_accuracy - 0.75).abs() < 1e-12);
        assert_eq!(f.binary_fpr, Some(0.5));
        assert_eq!(f.binary_tpr, Some(1.0));
        let m = confusion(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
        assert_eq!(m, vec![vec![1, 1], vec![0, 2]]);
    }
}
