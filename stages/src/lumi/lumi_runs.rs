//! `lumi_runs`: runs of lumisections (LS) built from real Delphes events.
//! Each LS draws ξ_s events (ξ following a luminosity that decays along the
//! run) from the `good` pool; the LS of a bad stretch draw theirs from a
//! glitch configuration's pool (or a mixture with the good one). Events are
//! drawn without reuse while a pool lasts (a shuffled pass through it), then
//! the pool is reshuffled and reused: the log says how often.
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
    /// Integrated luminosity per recorded event (pb⁻¹).
    pub lumi_per_event: f64,
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
            }],
            good: "normal".into(),
            events_per_ls: 50,
            lumi_lifetime: 500.0,
            lumi_per_event: 0.002,
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
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Delphes events -> runs of lumisections (events drawn per LS, bad stretches from glitch configurations), truth and luminosity per LS";
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
    /// Passes through it (1: no event reused).
    pub passes: usize,
    /// Events in it.
    pub events: usize,
}

/// A pool of event ids, drawn in shuffled passes.
struct Pool {
    ids: Vec<i64>,
    next: usize,
    passes: usize,
}

impl Pool {
    fn draw(&mut self, rng: &mut ChaCha8Rng) -> i64 {
        if self.next == self.ids.len() {
            self.ids.shuffle(rng);
            self.next = 0;
            self.passes += 1;
        }
        self.next += 1;
        self.ids[self.next - 1]
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
    pub event_ids: Vec<i64>,
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
                    },
                )
            })
            .collect();
        let mut draws = Vec::new();
        for run in &self.runs {
            for s in 0..run.n_ls {
                let ls = s + 1;
                let stretch = run.bad.iter().find(|b| b.first <= ls && ls <= b.last);
                let xi = ((self.events_per_ls as f64) * (-(s as f64) / self.lumi_lifetime).exp())
                    .round()
                    .max(1.0) as usize;
                let mut event_ids = Vec::with_capacity(xi);
                for _ in 0..xi {
                    let label = match stretch {
                        Some(b) if b.fraction >= 1.0 || rng.random::<f64>() < b.fraction => {
                            b.pool.as_str()
                        }
                        _ => self.good.as_str(),
                    };
                    let pool = pools
                        .get_mut(&format!("{label}/{}", run.part))
                        .expect("checked");
                    event_ids.push(pool.draw(&mut rng));
                }
                draws.push(LsDraw {
                    run: run.run,
                    ls: ls as i64,
                    part: run.part.clone(),
                    lumi: xi as f64 * self.lumi_per_event,
                    truth: stretch.map_or_else(|| "good".to_string(), |b| b.pool.clone()),
                    event_ids,
                });
            }
        }
        let passes = pools
            .into_iter()
            .filter(|(_, p)| p.passes > 1 || p.next > 0)
            .map(|(l, p)| {
                let usage = PoolUsage {
                    passes: p.passes,
                    events: p.ids.len(),
                };
                (l, usage)
            })
            .collect();
        Ok((draws, passes))
    }
}

/// The `lumi_runs` table of draws.
pub fn runs_batch(draws: &[LsDraw]) -> Result<RecordBatch> {
    let mut ids = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int64,
        false,
    )));
    for d in draws {
        ids.values().append_slice(&d.event_ids);
        ids.append(true);
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
        Arc::new(ids.finish()),
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
        let (draws, passes) = self.draw(pools)?;
        ctx.reporter.info(&format!(
            "{} LS in {} runs; passes through each pool (1: no event reused): {}",
            draws.len(),
            self.runs.len(),
            passes
                .iter()
                .map(|(l, p)| format!("{l} {} ({} events)", p.passes, p.events))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ctx.output.write("main", runs_batch(&draws)?)
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
