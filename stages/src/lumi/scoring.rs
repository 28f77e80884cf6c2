//! What the scoring stages of the family share after each has computed its
//! raw per-LS scores: thresholds and flags ([`crate::lumi::threshold`]),
//! the log, the score-versus-LS plots per run, and the scores table.

use std::collections::BTreeSet;

use crate::error::{Result, bad_param, within};
use crate::lumi::tables::{LsScore, scores_batch};
use crate::lumi::threshold::{RawScores, Threshold, apply};
use crate::plots::{LinePanel, Series, line_panels};
use crate::stage::RunContext;

/// The scoring parameters every scoring stage has.
pub struct ScoreOptions<'a> {
    /// `method` column value.
    pub method: &'a str,
    /// What the score is, for plot axes.
    pub score_name: &'a str,
    pub threshold: &'a Threshold,
    pub moving_average: usize,
    pub plot_runs: &'a [i64],
}

/// A `method` name: a word, not one certify reserves for its bounds.
pub fn validate_method(method: &str) -> Result<()> {
    let word = !method.is_empty()
        && method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !word || method.starts_with("flag_") {
        return bad_param(
            "method",
            format!("`{method}`: give a word of letters, digits, _ or - not starting with flag_"),
        );
    }
    Ok(())
}

pub fn validate_options(threshold: &Threshold, moving_average: usize) -> Result<()> {
    within("threshold", threshold.validate())?;
    if moving_average == 0 || moving_average.is_multiple_of(2) {
        return bad_param(
            "moving_average",
            format!("{moving_average}: give an odd number of LS (1: none)"),
        );
    }
    Ok(())
}

/// The truly bad LS of a run as shaded intervals [first − ½, last + ½].
fn bad_intervals(rows: &[&LsScore]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for r in rows.iter().filter(|r| r.key.bad) {
        let ls = r.key.ls as f64;
        match out.last_mut() {
            Some(last) if (last.1 - (ls - 0.5)).abs() < 1e-9 => last.1 = ls + 0.5,
            _ => out.push((ls - 0.5, ls + 0.5)),
        }
    }
    out
}

/// One PNG per plotted run: log10 score versus LS, one panel per ME, the
/// truly bad LS shaded and the threshold dashed.
fn plot_runs(rows: &[LsScore], options: &ScoreOptions<'_>, ctx: &RunContext<'_>) -> Result<()> {
    let runs: BTreeSet<i64> = rows.iter().map(|r| r.key.run).collect();
    let calibration = options.threshold.calibration_runs();
    for run in runs {
        let wanted = if options.plot_runs.is_empty() {
            !calibration.contains(&run)
        } else {
            options.plot_runs.contains(&run)
        };
        if !wanted {
            continue;
        }
        let mes: BTreeSet<&str> = rows.iter().map(|r| r.me.as_str()).collect();
        let panels: Vec<LinePanel> = mes
            .into_iter()
            .map(|me| {
                let of_me: Vec<&LsScore> = rows
                    .iter()
                    .filter(|r| r.key.run == run && r.me == me)
                    .collect();
                let threshold = of_me.first().map_or(f64::NAN, |r| r.threshold);
                LinePanel {
                    title: format!("{me} (flagged {})", of_me.iter().filter(|r| r.over).count()),
                    x_label: "LS".into(),
                    y_label: format!("log10 {}", options.score_name),
                    series: vec![Series {
                        name: options.score_name.to_string(),
                        points: of_me
                            .iter()
                            .filter_map(|r| r.score.map(|s| (r.key.ls as f64, s.log10())))
                            .collect(),
                    }],
                    shaded: bad_intervals(&of_me),
                    hline: Some(threshold.log10()),
                }
            })
            .collect();
        line_panels(
            &ctx.artifacts.join(format!("run_{run}.png")),
            &format!(
                "Run {run}: {} per LS ({}), truly bad LS shaded, threshold dashed",
                options.score_name, options.method
            ),
            &panels,
            3,
        )?;
    }
    Ok(())
}

/// Thresholds, flags, log, plots, and the `main` table.
pub fn finish(raw: RawScores, options: &ScoreOptions<'_>, ctx: &mut RunContext<'_>) -> Result<()> {
    let applied = apply(
        raw,
        options.method,
        options.threshold,
        options.moving_average,
    );
    let (rows, log) = within("threshold", applied)?;
    for line in &log {
        ctx.reporter.info(line);
    }
    plot_runs(&rows, options, ctx)?;
    ctx.output.write("main", scores_batch(&rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lumi::tables::LsKey;

    #[test]
    fn consecutive_bad_ls_shade_as_one_interval() {
        let row = |ls: i64, bad: bool| LsScore {
            key: LsKey {
                run: 1,
                ls,
                part: "test".into(),
                events: 1,
                lumi: 0.1,
                truth: "x".into(),
                bad,
                pileup: 0.0,
            },
            me: "met".into(),
            method: "ae".into(),
            raw_score: Some(1.0),
            score: Some(1.0),
            threshold: 2.0,
            over: false,
        };
        let rows: Vec<LsScore> = [(1, false), (2, true), (3, true), (4, false), (5, true)]
            .into_iter()
            .map(|(l, b)| row(l, b))
            .collect();
        let refs: Vec<&LsScore> = rows.iter().collect();
        assert_eq!(bad_intervals(&refs), [(1.5, 3.5), (4.5, 5.5)]);
        assert!(validate_options(&Threshold::RunMad { k: 2.0 }, 4).is_err());
    }
}
