//! `lumi_runs`: runs of lumisections (LS) built from real Delphes events.
//! Each LS draws ξ_s events (ξ following a luminosity that decays along the
//! run) from the `good` pool; the LS of a bad stretch draw theirs from a
//! glitch configuration's pool (or a mixture with the good one). Events are
//! drawn without reuse while a pool lasts (a shuffled pass through it), then
//! the pool is reshuffled and reused: the log says how often.

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
use crate::error::{Result, StageError, bad_param};
use crate::input::require_column;
use crate::lumi::tables::runs_schema;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig, expect_inputs};

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
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for LumiRuns {
    fn default() -> Self {
        Self {
            runs: vec![RunSpec {
                run: 1,
                n_ls: 100,
                bad: Vec::new(),
            }],
            good: "normal".into(),
            events_per_ls: 50,
            lumi_lifetime: 500.0,
            lumi_per_event: 0.002,
            seed: 1,
        }
    }
}

impl StageConfig for LumiRuns {
    const KIND: &'static str = "lumi_runs";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Delphes events -> runs of lumisections (events drawn per LS, bad stretches from glitch configurations), truth and luminosity per LS";
    const INPUTS: (usize, usize) = (1, 1);

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
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.runs.iter().enumerate() {
            if !seen.insert(r.run) {
                return bad_param(
                    &format!("runs[{i}].run"),
                    format!("run {} is listed twice", r.run),
                );
            }
            if r.n_ls == 0 {
                return bad_param(&format!("runs[{i}].n_ls"), "must be ≥ 1");
            }
            for (j, b) in r.bad.iter().enumerate() {
                let at = format!("runs[{i}].bad[{j}]");
                if b.first == 0 || b.first > b.last || b.last > r.n_ls {
                    return bad_param(&at, format!("need 1 ≤ first ≤ last ≤ n_ls = {}", r.n_ls));
                }
                if !(b.fraction > 0.0 && b.fraction <= 1.0) {
                    return bad_param(&format!("{at}.fraction"), "must be in (0, 1]");
                }
            }
        }
        Ok(())
    }
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
    pub lumi: f64,
    pub truth: String,
    pub event_ids: Vec<i64>,
}

impl LumiRuns {
    /// Event ids per label, in input order.
    fn pools(&self, ctx: &RunContext<'_>) -> Result<BTreeMap<String, Vec<i64>>> {
        let input = &ctx.inputs[0];
        let mut pools: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for batch in input.batches() {
            let batch = batch?;
            let ids = column_as(&batch, "event_id", &DataType::Int64, &input.name)?;
            let labels = column_as(&batch, "label", &DataType::Utf8, &input.name)?;
            let (ids, labels) = (ids.as_primitive::<Int64Type>(), labels.as_string::<i32>());
            for i in 0..batch.num_rows() {
                pools
                    .entry(labels.value(i).to_string())
                    .or_default()
                    .push(ids.value(i));
            }
        }
        Ok(pools)
    }

    /// Draws every LS of every run; returns them and, per pool, how many
    /// passes through it the draws took.
    pub fn draw(
        &self,
        pools: BTreeMap<String, Vec<i64>>,
    ) -> Result<(Vec<LsDraw>, BTreeMap<String, usize>)> {
        let mut needed: Vec<&str> = vec![&self.good];
        needed.extend(
            self.runs
                .iter()
                .flat_map(|r| r.bad.iter().map(|b| b.pool.as_str())),
        );
        for label in needed {
            if pools.get(label).is_none_or(Vec::is_empty) {
                return Err(StageError::data(format!(
                    "input `events` has no event labelled `{label}` (labels: {:?})",
                    pools.keys().collect::<Vec<_>>()
                )));
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut pools: BTreeMap<String, Pool> = pools
            .into_iter()
            .map(|(label, mut ids)| {
                ids.shuffle(&mut rng);
                (
                    label,
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
                    let pool = pools.get_mut(label).expect("checked");
                    event_ids.push(pool.draw(&mut rng));
                }
                draws.push(LsDraw {
                    run: run.run,
                    ls: ls as i64,
                    lumi: xi as f64 * self.lumi_per_event,
                    truth: stretch.map_or_else(|| "good".to_string(), |b| b.pool.clone()),
                    event_ids,
                });
            }
        }
        let passes = pools
            .into_iter()
            .filter(|(_, p)| p.passes > 1 || p.next > 0)
            .map(|(l, p)| (l, p.passes))
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
        expect_inputs(inputs.len(), 1)?;
        let why = "a `delphes_convert` events table";
        require_column(&inputs[0], "events", "event_id", why, "an integer", |t| {
            t.is_integer()
        })?;
        require_column(&inputs[0], "events", "label", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: runs_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let pools = self.pools(ctx)?;
        let sizes: BTreeMap<String, usize> =
            pools.iter().map(|(l, p)| (l.clone(), p.len())).collect();
        let (draws, passes) = self.draw(pools)?;
        ctx.reporter.info(&format!(
            "{} LS in {} runs; passes through each pool (1: no event reused): {}",
            draws.len(),
            self.runs.len(),
            passes
                .iter()
                .map(|(l, p)| format!("{l} {p} ({} events)", sizes[l]))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ctx.output.write("main", runs_batch(&draws)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(n: i64) -> BTreeMap<String, Vec<i64>> {
        BTreeMap::from([
            ("normal".to_string(), (0..n).collect()),
            (
                "hcal_barrel_off".to_string(),
                (1_000_000..1_000_000 + n).collect(),
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
                },
            ],
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
        assert_eq!(passes["normal"], 1);
        // A pool smaller than the draws is reused, pass by pass.
        let (_, passes) = stage().draw(pools(20)).unwrap();
        assert_eq!(passes["normal"], 5, "85 draws from 20 events: 5 passes");
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
    }
}
