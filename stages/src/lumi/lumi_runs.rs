//! `lumi_runs`: runs of lumisections (LS) built from real Delphes events.
//! Each LS draws ξ_s events (ξ following a luminosity that decays along the
//! run) from the `good` pool; the LS of a bad stretch draw theirs from a
//! glitch configuration's pool (or a mixture with the good one). Events are
//! drawn without reuse while a pool lasts (a shuffled pass through it), then
//! the pool is reshuffled and reused: the log says how often.
//!
//! With pile-up (`peak_pileup` > 0), every recorded event is one drawn event
//! plus a Poisson(μ_s) number of other events of the same configuration and
//! part overlaid on it (`ls_histograms` adds their towers, takes the vector
//! sum of their MET and the union of their jets). μ falls along the run
//! with the luminosity, μ_s = peak · exp(−s / lifetime), so shapes depend
//! on luminosity and no two LS hold the same set of events even when the
//! pools are passed through many times. A prescale change divides the
//! recorded events from an LS on, not the luminosity.
//!
//! The physics events are first split into disjoint parts (`train`,
//! `calibration`, `test` by default) by their `group_by` column, so the
//! copies of one generated event under every detector configuration land in
//! one part; a run draws only from its part. No event, nor a copy of one,
//! is both in a run a model trains or calibrates on and in a run it is
//! tested on.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, Int64Builder, ListBuilder,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::column_as;
use crate::error::{Result, StageError, bad_param, within};
use crate::input::require_column;
use crate::lumi::tables::runs_schema;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// A stretch of bad LS in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BadStretch {
    /// First bad LS (from 1).
    pub first: usize,
    /// Last bad LS (inclusive).
    pub last: usize,
    /// Configuration label whose events fill these LS (e.g. `hcal_barrel_off`).
    pub pool: String,
    /// Fraction of each LS's events from that pool, the rest from the good
    /// pool (1: all).
    #[serde(default = "one")]
    pub fraction: f64,
}

fn one() -> f64 {
    1.0
}

/// Where the overlaid pile-up events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PileupPool {
    /// Every event of the recorded event's configuration, whatever its
    /// part: one library for all runs, as the premixed pile-up libraries
    /// shared by all CMS samples. The recorded (hard-scatter) events stay
    /// split by part.
    Shared,
    /// Only the events of the run's part (hard-scatter and pile-up split
    /// alike). With ~10⁴ overlaid events per LS drawn from a few hundred,
    /// each part's LS converge to that part's own sample shape, and the
    /// parts differ by their sampling noise far more than two LS differ.
    Part,
}

/// A prescale change within a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrescaleChange {
    /// First LS (from 1) recorded with this prescale.
    pub from_ls: usize,
    /// The trigger records 1 in `factor` events from then on (≥ 1).
    pub factor: f64,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Run number.
    pub run: i64,
    /// Lumisections.
    pub n_ls: usize,
    /// Bad stretches (none: a good run).
    #[serde(default)]
    pub bad: Vec<BadStretch>,
    /// Part of the events the run draws from (a key of `parts`).
    #[serde(default = "test_part")]
    pub part: String,
    /// Mean pile-up at the run's first LS (default: the stage's `peak_pileup`).
    #[serde(default)]
    pub peak_pileup: Option<f64>,
    /// Prescale changes, in LS order (none: prescale 1 all along).
    #[serde(default)]
    pub prescale: Vec<PrescaleChange>,
}

impl RunSpec {
    /// Checks the run's own keys and its bad stretches.
    pub fn validate(&self) -> Result<()> {
        if self.n_ls == 0 {
            return bad_param("n_ls", "must be ≥ 1");
        }
        for (j, b) in self.bad.iter().enumerate() {
            within(&format!("bad[{j}]"), b.validate(self.n_ls))?;
        }
        if let Some(mu) = self.peak_pileup
            && !(mu >= 0.0 && mu.is_finite())
        {
            return bad_param("peak_pileup", format!("{mu}: must be a number ≥ 0"));
        }
        let mut previous = 0;
        for (j, p) in self.prescale.iter().enumerate() {
            if p.from_ls <= previous || p.from_ls > self.n_ls {
                let why = format!("need increasing LS numbers within 1..={}", self.n_ls);
                return within(&format!("prescale[{j}]"), bad_param("from_ls", why));
            }
            if !(p.factor >= 1.0 && p.factor.is_finite()) {
                return within(
                    &format!("prescale[{j}]"),
                    bad_param("factor", "must be ≥ 1"),
                );
            }
            previous = p.from_ls;
        }
        Ok(())
    }
}

impl BadStretch {
    /// Checks the stretch against a run of `n_ls` LS.
    pub fn validate(&self, n_ls: usize) -> Result<()> {
        let why = format!("need 1 ≤ first ≤ last ≤ n_ls = {n_ls}");
        if self.first == 0 || self.first > self.last {
            return bad_param("first", why);
        }
        if self.last > n_ls {
            return bad_param("last", why);
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return bad_param("fraction", "must be in (0, 1]");
        }
        Ok(())
    }
}

fn test_part() -> String {
    "test".into()
}

/// Builds runs of LS from the events of each configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiRuns {
    /// The runs.
    pub runs: Vec<RunSpec>,
    /// Label of the good pool.
    pub good: String,
    /// Events per LS at the run's start (ξ); it follows the luminosity.
    pub events_per_ls: usize,
    /// Luminosity lifetime in LS: ξ_s = events_per_ls · exp(−s / lifetime).
    pub lumi_lifetime: f64,
    /// Integrated luminosity per recorded event at prescale 1 (pb⁻¹).
    pub lumi_per_event: f64,
    /// Mean pile-up μ at a run's first LS (0: no overlay, every recorded
    /// event is one simulated event); it falls with the luminosity.
    pub peak_pileup: f64,
    /// Where overlaid events come from (`shared`: the configuration's
    /// whole sample; `part`: the run's part). Drawn uniformly with
    /// replacement, independently for every recorded event.
    pub pileup_pool: PileupPool,
    /// Disjoint parts of the events and their fractions (summing to 1).
    pub parts: BTreeMap<String, f64>,
    /// Events-table column (integer) equal for the copies of one event
    /// under different configurations (Delphes: `entry`).
    pub group_by: String,
    /// Seed of the parts and of the draws.
    pub seed: u64,
}

impl Default for LumiRuns {
    fn default() -> Self {
        Self {
            runs: vec![RunSpec {
                run: 1,
                n_ls: 100,
                bad: Vec::new(),
                part: test_part(),
                peak_pileup: None,
                prescale: Vec::new(),
            }],
            good: "normal".into(),
            events_per_ls: 50,
            lumi_lifetime: 500.0,
            lumi_per_event: 0.002,
            peak_pileup: 0.0,
            pileup_pool: PileupPool::Shared,
            parts: BTreeMap::from([
                ("train".into(), 0.4),
                ("calibration".into(), 0.2),
                ("test".into(), 0.4),
            ]),
            group_by: "entry".into(),
            seed: 1,
        }
    }
}

impl StageConfig for LumiRuns {
    const KIND: &'static str = "lumi_runs";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "Delphes events -> runs of lumisections (events drawn per LS with pile-up overlaid, bad stretches from glitch configurations, prescale changes), truth, luminosity and pile-up per LS";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::events::schema(
            &["PT".into()],
            &["Eta".into()],
            &["MET".into()],
        )]
    }

    fn validate(&self) -> Result<()> {
        if self.runs.is_empty() {
            return bad_param("runs", "give at least one run");
        }
        if self.events_per_ls == 0 {
            return bad_param("events_per_ls", "must be ≥ 1");
        }
        if !(self.lumi_lifetime > 0.0) || !(self.lumi_per_event > 0.0) {
            return bad_param(
                "lumi_lifetime",
                "lumi_lifetime and lumi_per_event must be > 0",
            );
        }
        if !(self.peak_pileup >= 0.0 && self.peak_pileup.is_finite()) {
            return bad_param("peak_pileup", "must be a number ≥ 0");
        }
        let total: f64 = self.parts.values().sum();
        if self.parts.values().any(|&f| !(f > 0.0)) || (total - 1.0).abs() > 1e-9 {
            return bad_param(
                "parts",
                format!("fractions must be > 0 and sum to 1 (they sum to {total})"),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.runs.iter().enumerate() {
            let at = format!("runs[{i}]");
            if !self.parts.contains_key(&r.part) {
                let parts: Vec<&String> = self.parts.keys().collect();
                let why = format!("`{}` is not one of parts {parts:?}", r.part);
                return within(&at, bad_param("part", why));
            }
            if !seen.insert(r.run) {
                let why = format!("run {} is listed twice", r.run);
                return within(&at, bad_param("run", why));
            }
            within(&at, r.validate())?;
        }
        Ok(())
    }
}

/// How a pool (`label/part`) was used by the draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Passes through it (1: no event reused; 0: a pile-up library, drawn
    /// with replacement).
    pub passes: usize,
    /// Events in it.
    pub events: usize,
    /// Events drawn from it.
    pub draws: usize,
}

/// A pool of event ids, drawn in shuffled passes.
struct Pool {
    ids: Vec<i64>,
    next: usize,
    passes: usize,
    draws: usize,
}

impl Pool {
    fn draw(&mut self, rng: &mut ChaCha8Rng) -> i64 {
        if self.next == self.ids.len() {
            self.ids.shuffle(rng);
            self.next = 0;
            self.passes += 1;
        }
        self.next += 1;
        self.draws += 1;
        self.ids[self.next - 1]
    }

    /// A pile-up library: events drawn uniformly with replacement, each
    /// draw independent of the others (no pass structure that would make
    /// every LS hold each event the same number of times).
    fn draw_with_replacement(&mut self, rng: &mut ChaCha8Rng) -> i64 {
        self.draws += 1;
        self.ids[rng.random_range(0..self.ids.len())]
    }
}

/// One LS as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct LsDraw {
    pub run: i64,
    pub ls: i64,
    pub part: String,
    pub lumi: f64,
    pub truth: String,
    /// Mean pile-up of the LS.
    pub pileup: f64,
    pub event_ids: Vec<i64>,
    /// Per recorded event, the events overlaid on it.
    pub pileup_ids: Vec<Vec<i64>>,
}

impl LumiRuns {
    /// (event id, group) per label, in input order.
    fn pools(&self, ctx: &RunContext<'_>) -> Result<BTreeMap<String, Vec<(i64, i64)>>> {
        let input = &ctx.inputs[0];
        let mut pools: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for batch in input.batches() {
            let batch = batch?;
            let ids = column_as(&batch, "event_id", &DataType::Int64, &input.name)?;
            let groups = column_as(&batch, &self.group_by, &DataType::Int64, &input.name)?;
            let labels = column_as(&batch, "label", &DataType::Utf8, &input.name)?;
            let (ids, groups, labels) = (
                ids.as_primitive::<Int64Type>(),
                groups.as_primitive::<Int64Type>(),
                labels.as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                pools
                    .entry(labels.value(i).to_string())
                    .or_default()
                    .push((ids.value(i), groups.value(i)));
            }
        }
        Ok(pools)
    }

    /// The part of every group: the distinct groups, sorted then shuffled,
    /// cut by the fractions of `parts`.
    pub fn part_of_groups(&self, groups: impl Iterator<Item = i64>) -> BTreeMap<i64, String> {
        let mut groups: Vec<i64> = groups
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        groups.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed_9a27));
        let n = groups.len() as f64;
        let mut parts = BTreeMap::new();
        let (mut start, mut cumulative) = (0, 0.0);
        let last = self.parts.len() - 1;
        for (k, (name, fraction)) in self.parts.iter().enumerate() {
            cumulative += fraction;
            let end = if k == last {
                groups.len()
            } else {
                ((cumulative * n).round() as usize).min(groups.len())
            };
            for &g in &groups[start..end.max(start)] {
                parts.insert(g, name.clone());
            }
            start = end.max(start);
        }
        parts
    }

    /// Draws every LS of every run; returns them and the use of every pool
    /// drawn from, by `label/part`.
    pub fn draw(
        &self,
        labelled: BTreeMap<String, Vec<(i64, i64)>>,
    ) -> Result<(Vec<LsDraw>, BTreeMap<String, PoolUsage>)> {
        let mut all = Vec::new();
        let passes = self.draw_runs(labelled, &mut |run| {
            all.extend(run);
            Ok(())
        })?;
        Ok((all, passes))
    }

    /// Draws every LS of every run, handing each run's LS to `sink` as
    /// soon as drawn (a run with pile-up holds ~10⁷ event ids); returns the
    /// use of every pool drawn from, by `label/part`.
    pub fn draw_runs(
        &self,
        labelled: BTreeMap<String, Vec<(i64, i64)>>,
        sink: &mut dyn FnMut(Vec<LsDraw>) -> Result<()>,
    ) -> Result<BTreeMap<String, PoolUsage>> {
        let part_of = self.part_of_groups(labelled.values().flatten().map(|e| e.1));
        // Pools by "label/part", ids in input order.
        let mut by_part: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (label, events) in &labelled {
            for &(id, group) in events {
                by_part
                    .entry(format!("{label}/{}", part_of[&group]))
                    .or_default()
                    .push(id);
            }
        }
        for run in &self.runs {
            let labels = std::iter::once(&self.good).chain(run.bad.iter().map(|b| &b.pool));
            for label in labels {
                if labelled.get(label).is_none_or(Vec::is_empty) {
                    return Err(StageError::data(format!(
                        "input `events` has no event labelled `{label}` (labels: {:?})",
                        labelled.keys().collect::<Vec<_>>()
                    )));
                }
                if !by_part.contains_key(&format!("{label}/{}", run.part)) {
                    return Err(StageError::data(format!(
                        "run {}: no `{label}` event falls in part `{}` (too few events for parts {:?})",
                        run.run, run.part, self.parts
                    )));
                }
            }
        }
        // Pile-up libraries, by label (shared) or by "label/part".
        let mut libraries: BTreeMap<String, Pool> = BTreeMap::new();
        if self.peak_pileup > 0.0 || self.runs.iter().any(|r| r.peak_pileup > Some(0.0)) {
            for (key, ids) in &by_part {
                let library = match self.pileup_pool {
                    PileupPool::Part => key.clone(),
                    PileupPool::Shared => key.split('/').next().expect("label").to_string(),
                };
                let pool = libraries.entry(library).or_insert(Pool {
                    ids: Vec::new(),
                    next: 0,
                    passes: 0,
                    draws: 0,
                });
                pool.ids.extend(ids);
            }
            libraries.values_mut().for_each(|p| p.ids.sort_unstable());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut pools: BTreeMap<String, Pool> = by_part
            .into_iter()
            .map(|(key, mut ids)| {
                ids.shuffle(&mut rng);
                (
                    key,
                    Pool {
                        ids,
                        next: 0,
                        passes: 1,
                        draws: 0,
                    },
                )
            })
            .collect();
        for run in &self.runs {
            let mut draws = Vec::with_capacity(run.n_ls);
            let peak = run.peak_pileup.unwrap_or(self.peak_pileup);
            for s in 0..run.n_ls {
                let ls = s + 1;
                let stretch = run.bad.iter().find(|b| b.first <= ls && ls <= b.last);
                let decay = (-(s as f64) / self.lumi_lifetime).exp();
                let delivered = ((self.events_per_ls as f64) * decay).round().max(1.0);
                let prescale = run
                    .prescale
                    .iter()
                    .rfind(|p| p.from_ls <= ls)
                    .map_or(1.0, |p| p.factor);
                let xi = (delivered / prescale).round().max(1.0) as usize;
                let mu = peak * decay;
                let overlay = (mu > 0.0).then(|| rand_distr::Poisson::new(mu).expect("μ > 0"));
                let mut event_ids = Vec::with_capacity(xi);
                let mut pileup_ids = Vec::with_capacity(xi);
                for _ in 0..xi {
                    let label = match stretch {
                        Some(b) if b.fraction >= 1.0 || rng.random::<f64>() < b.fraction => {
                            b.pool.as_str()
                        }
                        _ => self.good.as_str(),
                    };
                    let key = format!("{label}/{}", run.part);
                    let pool = pools.get_mut(&key).expect("checked");
                    event_ids.push(pool.draw(&mut rng));
                    // The overlaid events come from the same configuration:
                    // the detector's state is the recorded event's.
                    let overlaid = match &overlay {
                        Some(poisson) => {
                            let n = rng.sample(poisson) as usize;
                            let library = match self.pileup_pool {
                                PileupPool::Part => key.as_str(),
                                PileupPool::Shared => label,
                            };
                            let library = libraries.get_mut(library).expect("built");
                            (0..n)
                                .map(|_| library.draw_with_replacement(&mut rng))
                                .collect()
                        }
                        None => Vec::new(),
                    };
                    pileup_ids.push(overlaid);
                }
                draws.push(LsDraw {
                    run: run.run,
                    ls: ls as i64,
                    part: run.part.clone(),
                    lumi: delivered * self.lumi_per_event,
                    truth: stretch.map_or_else(|| "good".to_string(), |b| b.pool.clone()),
                    pileup: mu,
                    event_ids,
                    pileup_ids,
                });
            }
            sink(draws)?;
        }
        let libraries = libraries
            .into_iter()
            .map(|(l, p)| (format!("{l} (pile-up)"), p));
        let passes = pools
            .into_iter()
            .chain(libraries)
            .filter(|(_, p)| p.draws > 0)
            .map(|(l, p)| {
                let usage = PoolUsage {
                    passes: p.passes,
                    events: p.ids.len(),
                    draws: p.draws,
                };
                (l, usage)
            })
            .collect();
        Ok(passes)
    }
}

/// The `lumi_runs` table of draws.
pub fn runs_batch(draws: &[LsDraw]) -> Result<RecordBatch> {
    let mut ids = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int64,
        false,
    )));
    let inner = Arc::new(Field::new("item", DataType::Int64, false));
    let mut pileup_ids =
        ListBuilder::new(ListBuilder::new(Int64Builder::new()).with_field(inner.clone()))
            .with_field(Arc::new(Field::new("item", DataType::List(inner), false)));
    for d in draws {
        ids.values().append_slice(&d.event_ids);
        ids.append(true);
        for overlaid in &d.pileup_ids {
            pileup_ids.values().values().append_slice(overlaid);
            pileup_ids.values().append(true);
        }
        pileup_ids.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(draws.iter().map(|d| d.run))),
        Arc::new(Int64Array::from_iter_values(draws.iter().map(|d| d.ls))),
        Arc::new(StringArray::from_iter_values(
            draws.iter().map(|d| d.part.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            draws.iter().map(|d| d.event_ids.len() as i64),
        )),
        Arc::new(Float64Array::from_iter_values(draws.iter().map(|d| d.lumi))),
        Arc::new(StringArray::from_iter_values(
            draws.iter().map(|d| d.truth.as_str()),
        )),
        Arc::new(BooleanArray::from(
            draws.iter().map(|d| d.truth != "good").collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(
            draws.iter().map(|d| d.pileup),
        )),
        Arc::new(ids.finish()),
        Arc::new(pileup_ids.finish()),
    ];
    Ok(RecordBatch::try_new(runs_schema(), columns)?)
}

impl Stage for LumiRuns {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let why = "a `delphes_convert` events table";
        require_column(&inputs[0], "events", "event_id", why, "an integer", |t| {
            t.is_integer()
        })?;
        require_column(&inputs[0], "events", "label", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        require_column(
            &inputs[0],
            "events",
            &self.group_by,
            "`group_by`: copies of one event share it",
            "Int64",
            |t| t == &DataType::Int64,
        )?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: runs_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let pools = self.pools(ctx)?;
        let mut n_ls = 0;
        let output = &mut ctx.output;
        let passes = self.draw_runs(pools, &mut |draws| {
            n_ls += draws.len();
            output.write("main", runs_batch(&draws)?)
        })?;
        ctx.reporter.info(&format!(
            "{} LS in {} runs; passes through each pool (1: no event reused), draws per event of each pile-up library: {}",
            n_ls,
            self.runs.len(),
            passes
                .iter()
                .map(|(l, p)| {
                    let per_event = p.draws as f64 / p.events as f64;
                    if p.passes == 0 {
                        format!("{l} {per_event:.1} per event ({} events)", p.events)
                    } else {
                        format!("{l} {} passes ({} events)", p.passes, p.events)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` events per configuration; the copies of event g share group g.
    fn pools(n: i64) -> BTreeMap<String, Vec<(i64, i64)>> {
        BTreeMap::from([
            ("normal".to_string(), (0..n).map(|g| (g, g)).collect()),
            (
                "hcal_barrel_off".to_string(),
                (0..n).map(|g| (1_000_000 + g, g)).collect(),
            ),
        ])
    }

    fn stage() -> LumiRuns {
        LumiRuns {
            runs: vec![
                RunSpec {
                    run: 1,
                    n_ls: 10,
                    bad: vec![],
                    part: "train".into(),
                    peak_pileup: None,
                    prescale: Vec::new(),
                },
                RunSpec {
                    run: 2,
                    n_ls: 10,
                    bad: vec![BadStretch {
                        first: 4,
                        last: 6,
                        pool: "hcal_barrel_off".into(),
                        fraction: 1.0,
                    }],
                    part: "test".into(),
                    peak_pileup: None,
                    prescale: Vec::new(),
                },
            ],
            parts: BTreeMap::from([("train".into(), 0.5), ("test".into(), 0.5)]),
            events_per_ls: 5,
            lumi_lifetime: 1e9,
            ..Default::default()
        }
    }

    #[test]
    fn bad_stretches_draw_from_their_pool_and_nothing_is_reused_while_it_lasts() {
        let (draws, passes) = stage().draw(pools(500)).unwrap();
        assert_eq!(draws.len(), 20);
        let mut seen = std::collections::HashSet::new();
        for d in &draws {
            assert_eq!(d.event_ids.len(), 5);
            assert!((d.lumi - 5.0 * 0.002).abs() < 1e-12);
            let bad = d.run == 2 && (4..=6).contains(&d.ls);
            assert_eq!(d.truth, if bad { "hcal_barrel_off" } else { "good" });
            for &id in &d.event_ids {
                assert_eq!(
                    id >= 1_000_000,
                    bad,
                    "run {} LS {}: event {id}",
                    d.run,
                    d.ls
                );
                assert!(seen.insert(id), "event {id} reused");
            }
        }
        assert_eq!(passes["normal/test"].passes, 1);
        // The two runs' parts share no event, nor a copy of one.
        let groups = |run: i64| -> std::collections::HashSet<i64> {
            draws
                .iter()
                .filter(|d| d.run == run)
                .flat_map(|d| d.event_ids.iter().map(|id| id % 1_000_000))
                .collect()
        };
        assert!(groups(1).is_disjoint(&groups(2)));
        assert!(
            draws
                .iter()
                .all(|d| d.part == if d.run == 1 { "train" } else { "test" })
        );
        // A pool smaller than the draws is reused, pass by pass: 40 events,
        // 20 per part; run 2 draws 35 normal events from its 20.
        let (_, passes) = stage().draw(pools(40)).unwrap();
        assert_eq!(
            passes["normal/test"].passes, 2,
            "35 draws from 20 events: 2 passes"
        );
        assert_eq!(
            passes["normal/train"].passes, 3,
            "50 draws from 20 events: 3 passes"
        );
        assert_eq!(stage().draw(pools(500)).unwrap().0, draws, "seeded");
    }

    #[test]
    fn luminosity_decays_and_mixed_stretches_mix() {
        let mut s = stage();
        s.lumi_lifetime = 10.0;
        s.events_per_ls = 100;
        s.runs[1].bad[0].fraction = 0.5;
        let (draws, _) = s.draw(pools(5000)).unwrap();
        assert!(draws[9].event_ids.len() < draws[0].event_ids.len());
        let mixed: Vec<i64> = draws
            .iter()
            .filter(|d| d.run == 2 && d.ls == 4)
            .flat_map(|d| d.event_ids.clone())
            .collect();
        let from_glitch = mixed.iter().filter(|&&id| id >= 1_000_000).count();
        assert!(
            from_glitch > 10 && from_glitch < mixed.len() - 10,
            "{from_glitch} of {}",
            mixed.len()
        );
    }

    /// Pile-up: μ falls with the luminosity, the overlaid events come from
    /// the recorded event's configuration and part and number Poisson(μ) on
    /// average; a prescale change divides the recorded events, not the
    /// luminosity; no two LS hold the same events.
    #[test]
    fn pileup_follows_the_luminosity_and_stays_in_configuration_and_part() {
        let mut s = stage();
        s.peak_pileup = 20.0;
        s.lumi_lifetime = 10.0;
        s.events_per_ls = 40;
        s.runs[1].peak_pileup = Some(40.0);
        s.runs[1].prescale = vec![PrescaleChange {
            from_ls: 8,
            factor: 2.0,
        }];
        s.pileup_pool = PileupPool::Part;
        let (draws, passes) = s.draw(pools(400)).unwrap();
        let part_of = s.part_of_groups(0..400);
        for d in &draws {
            let peak = if d.run == 1 { 20.0 } else { 40.0 };
            let expected = peak * (-((d.ls - 1) as f64) / 10.0).exp();
            assert!((d.pileup - expected).abs() < 1e-12);
            assert_eq!(d.pileup_ids.len(), d.event_ids.len());
            let overlaid: Vec<i64> = d.pileup_ids.iter().flatten().copied().collect();
            let mean = overlaid.len() as f64 / d.event_ids.len() as f64;
            // Poisson mean over ≥ 10 recorded events: within 5 σ.
            let sigma = (expected / d.event_ids.len() as f64).sqrt();
            assert!(
                (mean - expected).abs() < 5.0 * sigma,
                "run {} LS {}: {mean} vs μ {expected}",
                d.run,
                d.ls
            );
            for (&id, over) in d.event_ids.iter().zip(&d.pileup_ids) {
                for &o in over {
                    assert_eq!(o >= 1_000_000, id >= 1_000_000, "configuration");
                    assert_eq!(part_of[&(o % 1_000_000)], d.part, "part");
                }
            }
        }
        let run2: Vec<&LsDraw> = draws.iter().filter(|d| d.run == 2).collect();
        // LS 7 and 8 deliver about the same luminosity; 8 records half.
        let (ls7, ls8) = (run2[6], run2[7]);
        assert!((ls8.lumi / ls7.lumi - (-0.1f64).exp()).abs() < 0.05);
        let ratio = ls8.event_ids.len() as f64 / ls7.event_ids.len() as f64;
        assert!((ratio - 0.5 * (-0.1f64).exp()).abs() < 0.06, "{ratio}");
        // Reused events, yet every LS is a different set.
        let library = passes["normal/test (pile-up)"];
        assert!(library.draws > 5 * library.events, "{library:?}");
        let sets: std::collections::HashSet<Vec<i64>> = draws
            .iter()
            .map(|d| {
                let mut all: Vec<i64> = d.pileup_ids.iter().flatten().copied().collect();
                all.extend(&d.event_ids);
                all.sort_unstable();
                all
            })
            .collect();
        assert_eq!(sets.len(), draws.len());
        assert_eq!(library.passes, 0, "a library");
        // A shared library: overlaid events of every part, hard-scatter
        // events still of the run's part only.
        s.pileup_pool = PileupPool::Shared;
        let (shared, passes) = s.draw(pools(400)).unwrap();
        let parts: std::collections::BTreeSet<&String> = shared
            .iter()
            .filter(|d| d.run == 2)
            .flat_map(|d| d.pileup_ids.iter().flatten())
            .map(|o| &part_of[&(o % 1_000_000)])
            .collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(shared.iter().all(|d| {
            d.event_ids
                .iter()
                .all(|e| part_of[&(e % 1_000_000)] == d.part)
        }));
        assert_eq!(passes["normal (pile-up)"].events, 400);
        // Without pile-up the draws are today's, to the event.
        let mut plain = stage();
        plain.events_per_ls = 40;
        let (before, _) = plain.draw(pools(400)).unwrap();
        assert!(
            before
                .iter()
                .all(|d| d.pileup == 0.0 && d.pileup_ids.iter().all(Vec::is_empty))
        );
        let mut bad = s.clone();
        bad.runs[1].prescale[0].from_ls = 11;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("runs[1].prescale[0].from_ls"), "{err}");
    }

    #[test]
    fn bad_parameters_and_missing_pools_are_named() {
        let mut s = stage();
        s.runs[1].bad[0].last = 11;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("runs[1].bad[0]")
        );
        let mut s = stage();
        s.runs[1].bad[0].pool = "hcal_endcap_off".into();
        let err = s.draw(pools(50)).unwrap_err().to_string();
        assert!(err.contains("no event labelled `hcal_endcap_off`"), "{err}");
        let mut s = stage();
        s.runs[0].part = "validation".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("runs[0].part") && err.contains("validation"),
            "{err}"
        );
        let mut s = stage();
        s.parts.insert("spare".into(), 0.2);
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("sum to 1"), "{err}");
    }
}
