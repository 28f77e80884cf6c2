//! How `rl_evaluate` compares a policy with the baselines: its metrics
//! against DINAMO-S's rule, and against the frontier of a family of rules
//! interpolated between them (a mixture of two rules lands on the line
//! between their points), with bootstrap intervals.

use arrow::array::RecordBatch;

use super::env_config::Regime;
use super::frontier::{Frontier, Mix};
use super::totals::Totals;
use crate::error::Result;
use crate::stats::quantile;

/// The metrics of the summary, from a policy's totals and the baseline's.
pub fn metrics(s: &Totals, base: Option<&Totals>) -> [Option<f64>; 6] {
    let ratio = base.and_then(|b| (b.calls > 0.0).then(|| s.calls / b.calls));
    let diff = base.and_then(|b| Some(s.missed_rate()? - b.missed_rate()?));
    [
        s.reward_per_run(),
        s.calls_per_1000(),
        s.missed_rate(),
        s.efficiency(),
        ratio,
        diff,
    ]
}

/// The mixture of the rules `family` with the highest good efficiency
/// calling at most `calls` per 1000 (the frontier between them,
/// interpolated); its `a` and `b` index into `family`, so any other figure
/// of the rules mixes the same way.
pub fn mix_at_calls(sums: &[Totals], family: &[usize], calls: f64) -> Option<Mix> {
    let points: Vec<(f64, f64)> = family
        .iter()
        .map(|&k| {
            let s = &sums[k];
            (
                s.calls_per_1000().unwrap_or(f64::NAN),
                s.efficiency().unwrap_or(f64::NAN),
            )
        })
        .collect();
    Frontier::new(&points)?.at(calls)
}

/// The highest good efficiency of a mixture of the rules `family` calling
/// at most `calls` per 1000.
pub fn efficiency_at_calls(sums: &[Totals], family: &[usize], calls: f64) -> Option<f64> {
    let efficiency: Vec<f64> = family
        .iter()
        .map(|&k| sums[k].efficiency().unwrap_or(f64::NAN))
        .collect();
    Some(mix_at_calls(sums, family, calls)?.of(&efficiency))
}

/// The fewest calls per 1000 of a mixture of the rules `family` missing at
/// most a fraction `missed` of the bad runs.
pub fn calls_at_missed(sums: &[Totals], family: &[usize], missed: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = family
        .iter()
        .map(|&k| {
            let s = &sums[k];
            (
                s.calls_per_1000().unwrap_or(f64::NAN),
                -s.missed_rate().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let calls: Vec<f64> = points.iter().map(|p| p.0).collect();
    Some(Frontier::new(&points)?.effort_for(-missed)?.of(&calls))
}

/// The comparisons with the expert frontier: calls over the frontier's at
/// the same missed-bad rate, efficiency minus the frontier's at the same
/// calls.
pub fn expert_comparison(sums: &[Totals], family: &[usize], k: usize) -> [Option<f64>; 2] {
    let s = &sums[k];
    let ratio = s.missed_rate().and_then(|m| {
        let frontier = calls_at_missed(sums, family, m)?;
        (frontier > 0.0).then(|| s.calls_per_1000().unwrap_or(0.0) / frontier)
    });
    let diff = s
        .calls_per_1000()
        .and_then(|c| Some(s.efficiency()? - efficiency_at_calls(sums, family, c)?));
    [ratio, diff]
}

/// 95 % percentile interval of bootstrap replicas; none when fewer than
/// half the resamples give a value or there is no point estimate.
pub fn interval(mut replicas: Vec<f64>, bootstrap: usize, point: Option<f64>) -> [Option<f64>; 2] {
    replicas.sort_by(f64::total_cmp);
    if replicas.len() * 2 >= bootstrap && point.is_some() {
        [quantile(&replicas, 0.025), quantile(&replicas, 0.975)]
    } else {
        [None, None]
    }
}

/// Each policy's operating point: calls per 1000 runs against the
/// missed-bad rate (offline) or the good-data efficiency (online); the
/// threshold rules as one line per streak length, ordered by calls.
pub fn effort_plot(summary: &RecordBatch, regime: Regime, path: &std::path::Path) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let floats = |c: &str| {
        summary
            .column_by_name(c)
            .expect("summary schema")
            .as_primitive::<Float64Type>()
            .clone()
    };
    let (calls, y_col) = (
        floats("calls_per_1000"),
        floats(match regime {
            Regime::Offline => "missed_bad_rate",
            Regime::Online => "good_efficiency",
        }),
    );
    let policy = summary.column(0).as_string::<i32>();
    let streak = summary
        .column_by_name("consecutive")
        .expect("summary schema")
        .as_primitive::<Int64Type>();
    let mut series: Vec<crate::plots::Series> = Vec::new();
    for i in 0..summary.num_rows() {
        if calls.is_null(i) || y_col.is_null(i) {
            continue;
        }
        let name = if streak.is_null(i) {
            policy.value(i).to_string()
        } else {
            format!("threshold, {} in a row", streak.value(i))
        };
        let point = (calls.value(i), y_col.value(i));
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(crate::plots::Series {
                name,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let y_label = match regime {
        Regime::Offline => "missed-bad rate",
        Regime::Online => "good-data efficiency",
    };
    crate::plots::lines(
        path,
        &format!("{} regime: shifter effort against {y_label}", regime.name()),
        "shifter calls per 1000 runs",
        y_label,
        &series,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Totals of a rule calling `calls` per 1000 runs, missing a fraction
    /// `missed` of the bad runs, keeping a fraction `kept` of the runs.
    fn point(calls: f64, missed: f64, kept: f64) -> Totals {
        Totals {
            runs: 1000.0,
            calls,
            bad: 100.0,
            missed: 100.0 * missed,
            kept: 1000.0 * kept,
            ..Default::default()
        }
    }

    #[test]
    fn frontier_of_a_rule_family_by_hand() {
        let sums = [
            point(10.0, 0.5, 0.6),
            point(20.0, 0.3, 0.8),
            point(40.0, 0.1, 0.7),
        ];
        let family = [0, 1, 2];
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        // Efficiency at 15 calls: half of rule 0 and half of rule 1.
        assert!(close(efficiency_at_calls(&sums, &family, 15.0), 0.7));
        // More calls than rule 1 buy no efficiency (rule 2 keeps less).
        assert!(close(efficiency_at_calls(&sums, &family, 100.0), 0.8));
        assert!(efficiency_at_calls(&sums, &family, 5.0).is_none());
        // Missing at most 0.2: half-way between rules 1 and 2, 30 calls.
        assert!(close(calls_at_missed(&sums, &family, 0.2), 30.0));
        assert!(close(calls_at_missed(&sums, &family, 0.6), 10.0));
        assert!(calls_at_missed(&sums, &family, 0.05).is_none());
        // A policy calling 15 per 1000 and missing 0.2: 0.5 of the
        // frontier's calls at its missed rate; 0.75 kept is 0.05 over the
        // frontier's 0.7 at its calls.
        let with_policy = [sums[0], sums[1], sums[2], point(15.0, 0.2, 0.75)];
        let [ratio, diff] = expert_comparison(&with_policy, &family, 3);
        assert!(close(ratio, 0.5) && close(diff, 0.05));
    }
}
