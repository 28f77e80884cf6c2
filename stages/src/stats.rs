//! Classification and summary statistics shared by the monitoring stages.

/// ROC AUC of `scores` for the positive class (`positive[i]`), by the
/// Mann-Whitney rank sum with tied scores sharing their mean rank.
/// `None` when a class is absent.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Sorting (score, class) pairs in place: no indirection, and this runs
    // once per candidate alpha in DINAMO-S's scan.
    let mut pairs: Vec<(f64, bool)> = scores
        .iter()
        .copied()
        .zip(positive.iter().copied())
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * pairs[i..=j].iter().filter(|p| p.1).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Hanley & McNeil (1982) 95 % interval of an AUC from n₊ positives and n₋ negatives.
pub fn auc_interval(auc: f64, n_pos: usize, n_neg: usize) -> (f64, f64) {
    let (np, nn) = (n_pos as f64, n_neg as f64);
    let q1 = auc / (2.0 - auc);
    let q2 = 2.0 * auc * auc / (1.0 + auc);
    let var = (auc * (1.0 - auc) + (np - 1.0) * (q1 - auc * auc) + (nn - 1.0) * (q2 - auc * auc))
        / (np * nn);
    let se = var.max(0.0).sqrt();
    ((auc - 1.96 * se).max(0.0), (auc + 1.96 * se).min(1.0))
}

/// Sensitivity, specificity and balanced accuracy of `flagged` against
/// `positive` (bad). Each is `None` when its class is absent.
pub fn rates(flagged: &[bool], positive: &[bool]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (mut tp, mut p, mut tn, mut n) = (0usize, 0usize, 0usize, 0usize);
    for (&f, &pos) in flagged.iter().zip(positive) {
        if pos {
            p += 1;
            tp += usize::from(f);
        } else {
            n += 1;
            tn += usize::from(!f);
        }
    }
    let sens = (p > 0).then(|| tp as f64 / p as f64);
    let spec = (n > 0).then(|| tn as f64 / n as f64);
    let bal = sens.zip(spec).map(|(a, b)| (a + b) / 2.0);
    (sens, spec, bal)
}

/// The threshold `t` maximising balanced accuracy of `score > t`, taken
/// halfway between neighbouring scores; the lowest such `t` wins ties.
/// `None` when a class is absent.
pub fn best_threshold(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Threshold below every score: everything flagged.
    let (mut tp, mut tn) = (n_pos, 0.0);
    let first = scores[order[0]];
    let mut best = (0.5 * (tp / n_pos + tn / n_neg), first - 1.0);
    let mut i = 0;
    while i < order.len() {
        // Move the threshold past every run with this score.
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positive[order[i]] {
                tp -= 1.0;
            } else {
                tn += 1.0;
            }
            i += 1;
        }
        let t = if i < order.len() {
            0.5 * (s + scores[order[i]])
        } else {
            s + 1.0
        };
        let bal = 0.5 * (tp / n_pos + tn / n_neg);
        if bal > best.0 {
            best = (bal, t);
        }
    }
    Some(best.1)
}

/// The ROC curve of `scores` for `positive`: (threshold, false-positive
/// rate, true-positive rate) for "score >= threshold", one point per
/// distinct score from the highest down, starting at (inf, 0, 0).
/// Empty when a class is absent.
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64, f64)> {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut curve = vec![(f64::INFINITY, 0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positive[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        curve.push((s, fp / n_neg, tp / n_pos));
    }
    curve
}

/// Linear-interpolated quantile (numpy's default) of finite values; `None` if empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Median and the 2.5 and 97.5 percentiles (the "median with a 95%
/// interval" of the DINAMO paper's tables) of the finite `values`, which are
/// filtered and sorted in place.
pub fn median_and_95(values: &mut Vec<f64>) -> [Option<f64>; 3] {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    [
        quantile(values, 0.5),
        quantile(values, 0.025),
        quantile(values, 0.975),
    ]
}

/// Wilson score 95 % interval of a binomial proportion k / n; `None` if n = 0.
pub fn wilson(k: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_963_985);
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The mean of `values` and its two-sided 95 % Student-t interval (for a
/// handful of repeated runs, e.g. seeds); the interval is `None` with fewer
/// than two values.
pub fn mean_t95(values: &[f64]) -> (f64, Option<(f64, f64)>) {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t975(n - 1) * (var / n as f64).sqrt();
    (mean, Some((mean - half, mean + half)))
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (tabled
/// to 30; beyond, 1.96 + 2.4/df, within 0.003 of the exact value).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => 1.96 + 2.4 / df as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_interval_narrows_with_counts_and_stays_in_unit_range() {
        let (a, b) = auc_interval(0.9, 10, 10);
        let (c, d) = auc_interval(0.9, 1000, 1000);
        assert!(a < c && d < b && a < 0.9 && b > 0.9);
        assert_eq!(auc_interval(1.0, 50, 50), (1.0, 1.0));
    }

    #[test]
    fn the_t_interval_of_five_values_is_the_textbook_one() {
        // Mean 3, sample sd √2.5, t(4) = 2.776: half-width 2.776 · √0.5.
        let (mean, interval) = super::mean_t95(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let (lo, hi) = interval.unwrap();
        assert_eq!(mean, 3.0);
        assert!(
            (hi - 3.0 - 2.776 * 0.5f64.sqrt()).abs() < 1e-9
                && (3.0 - lo - (hi - 3.0)).abs() < 1e-12
        );
        assert!(super::mean_t95(&[1.0]).1.is_none());
        assert!((super::t975(60) - 2.000).abs() < 0.003 && (super::t975(31) - 2.040).abs() < 0.003);
    }

    #[test]
    fn wilson_by_hand() {
        // 8 of 10: the textbook interval [0.490, 0.943].
        let (lo, hi) = wilson(8, 10).unwrap();
        assert!(
            (lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(10, 10).unwrap();
        assert!(hi == 1.0 && (lo - 0.7225).abs() < 1e-4, "{lo}");
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn median_and_95_ignores_non_finite_values() {
        let mut v = vec![3.0, f64::NAN, 1.0, 2.0, f64::INFINITY];
        let [m, lo, hi] = median_and_95(&mut v);
        assert_eq!(v, [1.0, 2.0, 3.0]);
        assert_eq!(m, Some(2.0));
        assert!((lo.unwrap() - 1.05).abs() < 1e-12 && (hi.unwrap() - 2.95).abs() < 1e-12);
        assert_eq!(median_and_95(&mut vec![]), [None, None, None]);
    }

    #[test]
    fn auc_of_hand_made_scores() {
        // Perfect separation.
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        // Inverted.
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        // One mis-ordered pair out of four: 3/4.
        assert_eq!(
            roc_auc(&[0.1, 0.5, 0.4, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        // All tied: 1/2.
        assert_eq!(roc_auc(&[1.0, 1.0, 1.0], &[false, true, true]), Some(0.5));
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn threshold_maximises_balanced_accuracy() {
        let scores = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0];
        let bad = [false, false, false, false, true, true];
        let t = best_threshold(&scores, &bad).unwrap();
        assert_eq!(t, 6.5);
        let flagged: Vec<bool> = scores.iter().map(|&s| s > t).collect();
        assert_eq!(rates(&flagged, &bad), (Some(1.0), Some(1.0), Some(1.0)));
        // Overlapping classes: the best cut still beats flagging everything.
        let scores = [0.0, 1.0, 2.0, 1.5, 3.0];
        let bad = [false, false, true, false, true];
        let t = best_threshold(&scores, &bad).unwrap();
        assert_eq!(t, 1.75);
    }

    #[test]
    fn roc_curve_of_hand_made_scores() {
        let curve = roc_curve(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false]);
        assert_eq!(
            curve,
            vec![
                (f64::INFINITY, 0.0, 0.0),
                (0.9, 0.0, 0.5),
                (0.8, 0.5, 1.0),
                (0.1, 1.0, 1.0)
            ]
        );
        // The trapezoid area under it is the rank-sum AUC.
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1].1 - w[0].1) * (w[1].2 + w[0].2) / 2.0)
            .sum();
        let auc = roc_auc(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false]).unwrap();
        assert!((area - auc).abs() < 1e-12 && (auc - 0.875).abs() < 1e-12);
        assert!(roc_curve(&[0.5], &[true]).is_empty());
    }

    #[test]
    fn rates_and_quantiles() {
        let (sens, spec, bal) = rates(&[true, false, true, false], &[true, true, false, false]);
        assert_eq!((sens, spec, bal), (Some(0.5), Some(0.5), Some(0.5)));
        assert_eq!(rates(&[true], &[false]), (None, Some(0.0), None));
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.025), Some(1.1));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
