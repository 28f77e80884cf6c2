//! `lumi_chi2_score`: the classical baseline the autoencoder is measured
//! against. Per ME, the reference shape is the mean histogram of the good LS
//! of reference runs (p_b, from the summed entries); an LS with N entries and
//! contents n_b scores Pearson's χ²/ndf = Σ_b (n_b − N p_b)² / (N p_b) /
//! (bins − 1). A bin the reference never filled counts with half a
//! reference entry, so an LS filling it is penalized rather than ignored.
//! Thresholds, flags and plots as in `lumi_ae_score`.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::lumi::scoring::{ScoreOptions, finish, validate_options};
use crate::lumi::tables::{
    LsHistogram, by_me, histograms_schema, read_histograms, require_histograms,
};
use crate::lumi::threshold::{RawScores, Threshold};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every LS of every ME with a χ² test against a reference shape.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiChi2Score {
    /// Good runs whose good LS make the reference shape (the autoencoder's
    /// training runs, for a like-for-like comparison).
    pub reference_runs: Vec<i64>,
    /// How each ME's threshold is set (as in `lumi_ae_score`).
    pub threshold: Threshold,
    /// LS in the centred moving average taken before the threshold (odd; 1: none).
    pub moving_average: usize,
    /// Runs plotted (χ²/ndf versus LS); empty: every run but the calibration ones.
    pub plot_runs: Vec<i64>,
}

impl Default for LumiChi2Score {
    fn default() -> Self {
        Self {
            reference_runs: vec![1],
            threshold: Threshold::default(),
            moving_average: 1,
            plot_runs: Vec::new(),
        }
    }
}

impl StageConfig for LumiChi2Score {
    const KIND: &'static str = "lumi_chi2_score";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Per-LS histograms -> χ²/ndf per LS and ME against the good runs' mean shape (the classical baseline), thresholds, flags, plots";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "histograms";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.reference_runs.is_empty() {
            return bad_param("reference_runs", "name at least one good run");
        }
        validate_options(&self.threshold, self.moving_average)
    }
}

/// Bin contents in entries (a unit-area histogram times its entries).
fn in_entries(h: &LsHistogram) -> Vec<f64> {
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

impl Stage for LumiChi2Score {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_histograms(&inputs[0], "histograms")?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: crate::lumi::tables::scores_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let hist = read_histograms(input)?;
        let mut raw: RawScores = BTreeMap::new();
        for (me, rows) in by_me(&hist, &input.name)? {
            let good: Vec<&LsHistogram> = rows
                .iter()
                .filter(|h| self.reference_runs.contains(&h.key.run) && !h.key.bad)
                .copied()
                .collect();
            let reference = Reference::new(&good).ok_or_else(|| {
                StageError::data(format!(
                    "input `{}`: ME `{me}` has no entries in the good LS of reference runs {:?}",
                    input.name, self.reference_runs
                ))
            })?;
            raw.insert(
                me.to_string(),
                rows.iter()
                    .map(|h| (h.key.clone(), reference.chi2_ndf(h)))
                    .collect(),
            );
        }
        let options = ScoreOptions {
            method: "chi2",
            score_name: "chi2/ndf",
            threshold: &self.threshold,
            moving_average: self.moving_average,
            plot_runs: &self.plot_runs,
        };
        finish(raw, &options, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lumi::tables::LsKey;

    fn hist(counts: &[f64], entries: i64) -> LsHistogram {
        LsHistogram {
            key: LsKey {
                run: 1,
                ls: 1,
                part: "train".into(),
                events: entries,
                lumi: 0.1,
                truth: "good".into(),
                bad: false,
            },
            me: "met".into(),
            counts: counts.to_vec(),
            entries,
        }
    }

    #[test]
    fn chi2_by_hand() {
        // Reference: unit-area shapes of 10 and 30 entries → summed entries
        // [2+6, 8+24, 0] = [8, 32, 0] of 40: p = [0.2, 0.8, 0].
        let a = hist(&[0.2, 0.8, 0.0], 10);
        let b = hist(&[0.2, 0.8, 0.0], 30);
        let r = Reference::new(&[&a, &b]).unwrap();
        assert_eq!(r.shape, [0.2, 0.8, 0.0]);
        // LS of 10 entries [4, 5, 1]: expected [2, 8, 10·0.5/40 = 0.125].
        let ls = hist(&[0.4, 0.5, 0.1], 10);
        let chi2 = (4.0f64 - 2.0).powi(2) / 2.0 + 9.0 / 8.0 + (1.0f64 - 0.125).powi(2) / 0.125;
        assert!((r.chi2_ndf(&ls).unwrap() - chi2 / 2.0).abs() < 1e-12);
        // Raw counts (not unit area) give the same.
        let raw = hist(&[4.0, 5.0, 1.0], 10);
        assert!((r.chi2_ndf(&raw).unwrap() - chi2 / 2.0).abs() < 1e-12);
        assert_eq!(r.chi2_ndf(&hist(&[0.0, 0.0, 0.0], 0)), None, "empty LS");
    }
}
