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
use crate::lumi::reference::{PileupMatched, Reference};
use crate::lumi::scoring::{ScoreOptions, finish, validate_method, validate_options};
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
    /// 0: one reference, every good LS of the reference runs. k > 0: a
    /// reference matched in pile-up — for each LS, the sum of the k good
    /// reference LS nearest to it in pile-up (the classical answer to
    /// shapes that change with luminosity).
    pub pileup_neighbours: usize,
    /// Name in the `method` column.
    pub method: String,
}

impl Default for LumiChi2Score {
    fn default() -> Self {
        Self {
            reference_runs: vec![1],
            threshold: Threshold::default(),
            moving_average: 1,
            plot_runs: Vec::new(),
            pileup_neighbours: 0,
            method: "chi2".into(),
        }
    }
}

impl StageConfig for LumiChi2Score {
    const KIND: &'static str = "lumi_chi2_score";
    const VERSION: u32 = 2;
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
        validate_method(&self.method)?;
        validate_options(&self.threshold, self.moving_average)
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
            let missing = || {
                StageError::data(format!(
                    "input `{}`: ME `{me}` has no entries in the good LS of reference runs {:?}",
                    input.name, self.reference_runs
                ))
            };
            let scores = if self.pileup_neighbours == 0 {
                let reference = Reference::new(&good).ok_or_else(missing)?;
                rows.iter()
                    .map(|h| (h.key.clone(), reference.chi2_ndf(h)))
                    .collect()
            } else {
                let matched = PileupMatched::new(&good, self.pileup_neighbours).map_err(|why| {
                    StageError::data(format!("input `{}`: ME `{me}`: {why}", input.name))
                })?;
                rows.iter()
                    .map(|h| {
                        let reference = matched.reference_for(h.key.pileup);
                        let reference = reference.ok_or_else(missing)?;
                        Ok((h.key.clone(), reference.chi2_ndf(h)))
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            raw.insert(me.to_string(), scores);
        }
        let options = ScoreOptions {
            method: &self.method,
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
                pileup: 0.0,
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

    /// The matched reference of an LS is the sum of the k reference LS
    /// nearest in pile-up, by hand; unknown pile-up in a reference is refused.
    #[test]
    fn pileup_matched_reference_by_hand() {
        let at = |mu: f64, counts: &[f64]| {
            let mut h = hist(counts, 10);
            h.key.pileup = mu;
            h
        };
        let good = [
            at(10.0, &[1.0, 0.0]),
            at(20.0, &[0.0, 1.0]),
            at(30.0, &[0.5, 0.5]),
            at(40.0, &[1.0, 0.0]),
        ];
        let refs: Vec<&LsHistogram> = good.iter().collect();
        let matched = PileupMatched::new(&refs, 2).unwrap();
        // μ 24: the LS at 20 and 30 → shape (0.25, 0.75).
        let r = matched.reference_for(24.0).unwrap();
        assert_eq!(r.shape, [0.25, 0.75]);
        // μ 100: the two highest, 30 and 40 → (0.75, 0.25); μ 0: 10 and 20.
        assert_eq!(matched.reference_for(100.0).unwrap().shape, [0.75, 0.25]);
        assert_eq!(matched.reference_for(0.0).unwrap().shape, [0.5, 0.5]);
        // Unknown pile-up of the tested LS: the single reference.
        let all = Reference::new(&refs).unwrap();
        assert_eq!(matched.reference_for(f64::NAN).unwrap().shape, all.shape);
        let unknown = at(f64::NAN, &[1.0, 0.0]);
        let err = PileupMatched::new(&[&good[0], &unknown], 1).err().unwrap();
        assert!(err.contains("no pile-up"), "{err}");
        let bad_name = LumiChi2Score {
            method: "flag_nothing".into(),
            ..Default::default()
        };
        assert!(
            bad_name
                .validate()
                .unwrap_err()
                .to_string()
                .contains("method")
        );
    }
}
