//! `ls_from_dqm`: real per-LS monitoring elements (the histograms table of
//! `dqm_root` or `dqm_dataframe`) as this family's per-LS histograms, so
//! `lumi_ae_train`, `lumi_ae_score`, `lumi_chi2_score` and `certify` run on
//! them as on the histograms `ls_histograms` makes.
//!
//! The MEs to certify on are chosen by name, renamed and rebinned in YAML;
//! each run's part (training, calibration, test) comes from run lists. A
//! good-LS list (`cms_json` of the Golden JSON) labels the LS it leaves out
//! bad — the certifiers' decision the methods are compared with; without
//! one every LS is `unlabelled`. Luminosity comes from the luminosity
//! tool's table (`brilcalc_lumi`), in its unit, or is `lumi_per_ls` per LS.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::ls_ranges::LsRanges;
use crate::dqm::tables::{
    Luminosity, histograms_schema as dqm_histograms_schema, read_histograms as read_dqm,
    read_ls_lists, read_luminosity, require_histograms as require_dqm, require_ls_lists,
};
use crate::error::{Result, StageError, bad_param, within};
use crate::input::Input;
use crate::lumi::tables::{LsHistogram, LsKey, histograms_batch, histograms_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// One ME to certify on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeChoice {
    /// Its name in the histograms table (`JetMET/MET/MET`).
    pub me: String,
    /// Its name downstream (scores, plots); default: `me`.
    #[serde(default)]
    pub name: Option<String>,
    /// Adjacent bins merged into one (1: as read); a 1-D ME's bins must be
    /// a multiple. Under- and overflow stay apart.
    #[serde(default = "one")]
    pub rebin: usize,
}

fn one() -> usize {
    1
}

impl MeChoice {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.me)
    }

    fn validate(&self) -> Result<()> {
        if self.me.is_empty() {
            return bad_param("me", "name the ME");
        }
        if self.rebin == 0 {
            return bad_param("rebin", "must be at least 1");
        }
        Ok(())
    }
}

/// Builds per-LS histograms for certification from real DQM MEs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LsFromDqm {
    /// The MEs to certify on.
    pub mes: Vec<MeChoice>,
    /// Runs of each part (`train`, `calibration`, ...); a run in none is
    /// `default_part`.
    pub parts: BTreeMap<String, Vec<i64>>,
    /// The part of runs `parts` does not list.
    pub default_part: String,
    /// Divide every LS's histogram by its entries (unit area), as
    /// `ls_histograms` does: the shape, not the rate, is compared.
    pub normalize: bool,
    /// Luminosity of an LS when no luminosity table is given.
    pub lumi_per_ls: f64,
    /// The ME (as in the table) whose entries count an LS's events (one
    /// value per event, such as MET); `null`: the first of `mes`.
    pub events_me: Option<String>,
}

impl Default for LsFromDqm {
    fn default() -> Self {
        Self {
            mes: Vec::new(),
            parts: BTreeMap::new(),
            default_part: "test".into(),
            normalize: true,
            lumi_per_ls: 1.0,
            events_me: None,
        }
    }
}

impl StageConfig for LsFromDqm {
    const KIND: &'static str = "ls_from_dqm";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Real per-LS MEs (dqm_root/dqm_dataframe) as per-LS histograms for certification: MEs chosen, renamed and rebinned, parts by run, bad = not in a good-LS list, luminosity from brilcalc";
    const INPUTS: (usize, usize) = (1, 3);
    const INPUT_ROLES: &'static str = "histograms (dqm_root, dqm_dataframe), then optionally luminosity (brilcalc_lumi) and a good-LS list (cms_json)";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.mes.is_empty() {
            return bad_param("mes", "choose at least one ME (`{me: JetMET/MET/MET}`)");
        }
        for (k, m) in self.mes.iter().enumerate() {
            within(&format!("mes[{k}]"), m.validate())?;
        }
        let mut names: Vec<&str> = self.mes.iter().map(MeChoice::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return bad_param("mes", format!("two MEs are named `{}`", w[0]));
        }
        let mut seen = HashMap::new();
        for (part, runs) in &self.parts {
            for run in runs {
                if let Some(other) = seen.insert(*run, part) {
                    return bad_param(
                        "parts",
                        format!("run {run} is in both `{other}` and `{part}`"),
                    );
                }
            }
        }
        if let Some(e) = &self.events_me
            && !self.mes.iter().any(|m| &m.me == e)
        {
            return bad_param("events_me", format!("`{e}` is not one of `mes`"));
        }
        if !(self.lumi_per_ls >= 0.0 && self.lumi_per_ls.is_finite()) {
            return bad_param("lumi_per_ls", "must be a number ≥ 0");
        }
        Ok(())
    }
}

/// A named list of good LS (the Golden JSON's).
type GoodList = (String, LsRanges);

/// What the optional inputs are, by their columns.
enum Extra {
    Luminosity,
    GoodList,
}

fn extra_kind(schema: &SchemaRef, input: &str) -> Result<Extra> {
    if schema.index_of("recorded").is_ok() {
        return Ok(Extra::Luminosity);
    }
    require_ls_lists(
        schema,
        input,
        "a luminosity table (`brilcalc_lumi`) or a good-LS list (`cms_json`)",
    )?;
    Ok(Extra::GoodList)
}

/// Merges `rebin` adjacent bins of a 1-D ME (under/overflow apart).
fn rebinned(contents: &[f64], rebin: usize) -> Vec<f64> {
    if rebin == 1 {
        return contents.to_vec();
    }
    let inner = &contents[1..contents.len() - 1];
    let mut out = vec![contents[0]];
    out.extend(inner.chunks(rebin).map(|c| c.iter().sum::<f64>()));
    out.push(contents[contents.len() - 1]);
    out
}

impl LsFromDqm {
    /// The part of `run`.
    fn part_of(&self, run: i64) -> &str {
        self.parts
            .iter()
            .find(|(_, runs)| runs.contains(&run))
            .map_or(self.default_part.as_str(), |(p, _)| p.as_str())
    }

    /// The optional inputs: luminosity and the good-LS list.
    fn extras(&self, inputs: &[Input]) -> Result<(Option<Luminosity>, Option<GoodList>)> {
        let (mut lumi, mut good) = (None, None);
        for input in inputs {
            match extra_kind(&input.schema, &input.name)? {
                Extra::Luminosity => lumi = Some(read_luminosity(input)?),
                Extra::GoodList => {
                    let mut lists = read_ls_lists(input, "a good-LS list (`cms_json`)")?;
                    if lists.len() != 1 {
                        return Err(StageError::data(format!(
                            "input `{}` holds {} lists; give one good-LS list",
                            input.name,
                            lists.len()
                        )));
                    }
                    good = lists.pop_first();
                }
            }
        }
        Ok((lumi, good))
    }
}

impl Stage for LsFromDqm {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_dqm(
            &inputs[0],
            "histograms",
            "real MEs (`dqm_root`, `dqm_dataframe`)",
        )?;
        let kinds: Vec<Extra> = inputs[1..]
            .iter()
            .enumerate()
            .map(|(k, s)| extra_kind(s, &format!("input {}", k + 2)))
            .collect::<Result<_>>()?;
        let lumis = kinds
            .iter()
            .filter(|k| matches!(k, Extra::Luminosity))
            .count();
        if lumis > 1 || kinds.len() - lumis > 1 {
            return Err(StageError::data(
                "give at most one luminosity table and one good-LS list",
            ));
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: histograms_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (lumi, good) = self.extras(&ctx.inputs[1..])?;
        let input = &ctx.inputs[0];
        let wanted: HashMap<&str, &MeChoice> =
            self.mes.iter().map(|m| (m.me.as_str(), m)).collect();
        let mut rows: Vec<LsHistogram> = Vec::new();
        let mut found: HashMap<&str, usize> = HashMap::new();
        let mut no_lumi = 0;
        for batch in input.batches() {
            for h in read_dqm(&batch?, &input.name)? {
                let Some(choice) = wanted.get(h.me.as_str()) else {
                    continue;
                };
                let at = |why: String| {
                    StageError::data(format!(
                        "input `{}`, run {} ME `{}`: {why}",
                        input.name, h.run, h.me
                    ))
                };
                let ls = h.ls.ok_or_else(|| {
                    at("a run histogram (no LS): per-LS certification needs per-LS MEs".into())
                })?;
                let axes = &h.histogram.axes;
                if choice.rebin > 1 && (axes.len() != 1 || axes[0].bins % choice.rebin != 0) {
                    return Err(at(format!(
                        "rebin {} needs a 1-D ME whose bins are a multiple of it ({:?} bins)",
                        choice.rebin,
                        axes.iter().map(|a| a.bins).collect::<Vec<_>>()
                    )));
                }
                let mut counts = rebinned(&h.histogram.contents, choice.rebin);
                if let Some(c) = counts.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
                    return Err(at(format!(
                        "LS {ls} has a bin of {c}: counts must be finite and ≥ 0"
                    )));
                }
                let total: f64 = counts.iter().sum();
                if self.normalize && total > 0.0 {
                    counts.iter_mut().for_each(|c| *c /= total);
                }
                // (luminosity, mean pile-up): the pile-up only from the table.
                let (lumi_ls, pileup) = match &lumi {
                    Some(l) => l.by_ls.get(&(h.run, ls)).copied().unwrap_or_else(|| {
                        no_lumi += 1;
                        (0.0, f64::NAN)
                    }),
                    None => (self.lumi_per_ls, f64::NAN),
                };
                let (truth, bad) = match &good {
                    Some((name, list)) if !list.contains(h.run, ls) => {
                        (format!("not in {name}"), true)
                    }
                    Some(_) => ("good".to_string(), false),
                    None => ("unlabelled".to_string(), false),
                };
                *found.entry(choice.me.as_str()).or_default() += 1;
                rows.push(LsHistogram {
                    key: LsKey {
                        run: h.run,
                        ls,
                        part: self.part_of(h.run).to_string(),
                        events: h.histogram.entries.round() as i64,
                        lumi: lumi_ls,
                        truth,
                        bad,
                        pileup,
                    },
                    me: choice.name().to_string(),
                    counts,
                    entries: h.histogram.entries.round() as i64,
                });
            }
        }
        if let Some(m) = self.mes.iter().find(|m| !found.contains_key(m.me.as_str())) {
            return Err(StageError::data(format!(
                "input `{}` has no ME `{}` (parameter `mes`)",
                input.name, m.me
            )));
        }
        rows.sort_by(|a, b| (a.key.run, a.key.ls, &a.me).cmp(&(b.key.run, b.key.ls, &b.me)));
        // Every row of an LS gets the events of the counting ME's histogram.
        let counter = self.events_me.as_deref().unwrap_or(&self.mes[0].me);
        let counter = wanted[counter].name();
        let events: HashMap<(i64, i64), i64> = rows
            .iter()
            .filter(|r| r.me == counter)
            .map(|r| ((r.key.run, r.key.ls), r.entries))
            .collect();
        for r in &mut rows {
            r.key.events = events.get(&(r.key.run, r.key.ls)).copied().unwrap_or(0);
        }
        let bad = rows.iter().filter(|r| r.key.bad).count();
        ctx.reporter.info(&format!(
            "{} histograms of {} MEs; {} labelled bad{}{}",
            rows.len(),
            self.mes.len(),
            bad,
            lumi.as_ref()
                .map_or(String::new(), |l| format!("; luminosity in {}", l.unit)),
            if no_lumi > 0 {
                format!(" ({no_lumi} histograms of LS absent from the luminosity table: 0)")
            } else {
                String::new()
            }
        ));
        for chunk in rows.chunks(4096) {
            ctx.output.write("main", histograms_batch(chunk)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebinning_keeps_under_and_overflow_apart() {
        assert_eq!(
            rebinned(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2),
            [1.0, 5.0, 9.0, 6.0]
        );
        assert_eq!(rebinned(&[1.0, 2.0, 3.0], 1), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn bad_parameters_are_named() {
        let me = |m: &str| MeChoice {
            me: m.into(),
            name: None,
            rebin: 1,
        };
        let ok = LsFromDqm {
            mes: vec![me("A/x"), me("B/y")],
            ..Default::default()
        };
        ok.validate().unwrap();
        let e = LsFromDqm {
            mes: vec![],
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.as_param().unwrap().0, "mes");
        let mut zero = ok.clone();
        zero.mes[1].rebin = 0;
        assert_eq!(
            zero.validate().unwrap_err().as_param().unwrap().0,
            "mes[1].rebin"
        );
        let twice = LsFromDqm {
            parts: BTreeMap::from([("train".into(), vec![1, 2]), ("test".into(), vec![2])]),
            ..ok
        };
        assert!(
            twice
                .validate()
                .unwrap_err()
                .to_string()
                .contains("run 2 is in both")
        );
    }
}
