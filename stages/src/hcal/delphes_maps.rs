//! `delphes_maps`: LS occupancy maps made directly from real Delphes events,
//! per detector configuration, for validation: the three glitch
//! configurations are real, large-region anomalies (a whole subdetector
//! without HCAL towers), scored like the injected ones.
//!
//! A recorded event overlays `overlay` Delphes events of one configuration
//! (our stand-in for pile-up: the sample has none, and a single dijet event
//! leaves too few HCAL hits per channel to see anything per LS); an LS holds
//! `events_per_ls` recorded events. The bundled files have 500 events per
//! configuration, so events are drawn with replacement and reused across
//! LS (said in the log). Keep `events_per_ls × overlay` at most the pool:
//! an event drawn k times in one LS adds k to each of its channels, and a
//! single tower that differs then moves a count far beyond its Poisson
//! spread. Event i is the same physics event in every configuration and
//! every configuration draws the same indices; outside a dead region the
//! towers are nearly the same (Delphes' random stream within an event shifts
//! when a region is off, so a few towers differ).
//!
//! The truth columns make the maps a drop-in for `channel_metrics`: `case`
//! is the configuration, `injected` marks the channels of its dead region
//! (`dead_regions`), `target` every LS that ends a full window.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::geometry::Subdetector;
use crate::hcal::tables::{
    MapRow, check_events, example_events_schema, for_each_event, injection_fields, maps_schema,
    with_fields, write_rows,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Builds LS maps of one subdetector from the events of every configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DelphesMaps {
    /// Which channels.
    pub subdetector: Subdetector,
    /// Recorded events per LS (ξ); 125 × 4 overlaid: each of 500 events once per LS.
    pub events_per_ls: usize,
    /// Delphes events overlaid in one recorded event.
    pub overlay: usize,
    /// LS per configuration.
    pub ls_per_label: usize,
    /// The scoring window T: LS from the T-th on are `target`.
    pub window: usize,
    /// A tower is a hit when its Ehad (GeV) is above this.
    pub ehad_min: f64,
    /// The dead subdetector of each glitch configuration (truth of `injected`).
    pub dead_regions: BTreeMap<String, Subdetector>,
    /// Number of the first configuration's fill (one fill per configuration).
    pub first_fill: i64,
    /// Seed of the event draws (the same draws for every configuration).
    pub seed: u64,
}

impl Default for DelphesMaps {
    fn default() -> Self {
        Self {
            subdetector: Subdetector::Barrel,
            events_per_ls: 125,
            overlay: 4,
            ls_per_label: 10,
            window: 5,
            ehad_min: 0.0,
            dead_regions: BTreeMap::from([
                ("hcal_barrel_off".into(), Subdetector::Barrel),
                ("hcal_endcap_off".into(), Subdetector::Endcap),
                ("hcal_forward_off".into(), Subdetector::Forward),
            ]),
            first_fill: 9001,
            seed: 3,
        }
    }
}

impl StageConfig for DelphesMaps {
    const KIND: &'static str = "delphes_maps";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Delphes events of each configuration -> LS occupancy maps (overlaid events, drawn with replacement), glitch regions as truth: real large-region anomalies for validation";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_events_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.events_per_ls == 0 || self.overlay == 0 || self.ls_per_label == 0 {
            return bad_param(
                "events_per_ls",
                "events_per_ls, overlay and ls_per_label must be ≥ 1",
            );
        }
        if self.window == 0 || self.window > self.ls_per_label {
            return bad_param("window", "must be in [1, ls_per_label]");
        }
        if !(self.ehad_min >= 0.0) {
            return bad_param("ehad_min", "must be ≥ 0 GeV");
        }
        Ok(())
    }
}

/// Salt of the event draws.
const DRAW_SALT: u64 = 0x0044_454c_5048_4553;

impl DelphesMaps {
    fn schema(&self) -> SchemaRef {
        with_fields(
            &maps_schema(MapGeometry::of(self.subdetector)),
            injection_fields(),
        )
    }

    /// Channels hit by each event, per configuration label in input order.
    fn pools(&self, ctx: &RunContext<'_>) -> Result<Vec<(String, Vec<Vec<u32>>)>> {
        let input = &ctx.inputs[0];
        let geometry = self.subdetector.geometry();
        let mut pools: Vec<(String, Vec<Vec<u32>>)> = Vec::new();
        for_each_event(input, true, |towers| {
            let mut hits: Vec<u32> = towers
                .hcal(self.ehad_min)
                .filter_map(|(eta, phi)| geometry.locate(eta, phi))
                .map(|c| c as u32)
                .collect();
            hits.sort_unstable();
            hits.dedup();
            let name = towers.label.unwrap_or_default();
            match pools.iter_mut().find(|(l, _)| l == name) {
                Some((_, pool)) => pool.push(hits),
                None => pools.push((name.to_string(), vec![hits])),
            }
            Ok(())
        })?;
        if pools.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no event",
                input.name
            )));
        }
        Ok(pools)
    }

    /// The maps of one configuration from its pool of per-event hits.
    pub fn maps(&self, label: &str, pool: &[Vec<u32>], fill: i64, n_pool: usize) -> Vec<MapRow> {
        let geometry = self.subdetector.geometry();
        let n = geometry.n_channels();
        let dead = self.dead_regions.get(label) == Some(&self.subdetector);
        // The same draws for every configuration (indices into pools of one size).
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ DRAW_SALT);
        let mut stamp = vec![usize::MAX; n];
        (0..self.ls_per_label)
            .map(|s| {
                let mut occupancy = vec![0.0; n];
                for recorded in 0..self.events_per_ls {
                    let id = s * self.events_per_ls + recorded;
                    for _ in 0..self.overlay {
                        let event = rng.random_range(0..n_pool);
                        for &c in &pool[event] {
                            let c = c as usize;
                            if stamp[c] != id {
                                stamp[c] = id;
                                occupancy[c] += 1.0;
                            }
                        }
                    }
                }
                MapRow {
                    case: Some(label.to_string()),
                    fill,
                    ls: s as i64 + 1,
                    lumi: 1.0,
                    events: self.events_per_ls as i64,
                    occupancy,
                    target: Some(s + 1 >= self.window),
                    injected: Some(vec![dead; n]),
                    norm: None,
                    median: None,
                    expected: None,
                }
            })
            .collect()
    }
}

impl Stage for DelphesMaps {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        check_events(&inputs[0], true)?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: self.schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let pools = self.pools(ctx)?;
        let n_pool = pools.iter().map(|(_, p)| p.len()).min().unwrap_or(0);
        if let Some((label, p)) = pools.iter().find(|(_, p)| p.len() != n_pool) {
            return Err(StageError::data(format!(
                "configuration `{label}` has {} events, another {n_pool}: give every configuration the same events",
                p.len()
            )));
        }
        let schema = self.schema();
        let draws = self.ls_per_label * self.events_per_ls * self.overlay;
        ctx.reporter.info(&format!(
            "{} configurations of {n_pool} events: {draws} draws per configuration, each event used {:.1} times on average{}",
            pools.len(),
            draws as f64 / n_pool as f64,
            if self.events_per_ls * self.overlay > n_pool {
                " (more draws per LS than events: counts are amplified copies)"
            } else {
                ""
            }
        ));
        for (k, (label, pool)) in pools.iter().enumerate() {
            let rows = self.maps(label, pool, self.first_fill + k as i64, n_pool);
            ctx.output.write("main", write_rows(&schema, &rows)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::test_support::bundled_events;
    use crate::in_memory::{input_from_batch, run_in_memory};

    #[test]
    fn glitch_maps_are_empty_exactly_in_their_dead_region() {
        let dir = tempfile::tempdir().unwrap();
        let events = bundled_events(
            dir.path(),
            &[
                "normal",
                "hcal_barrel_off",
                "hcal_endcap_off",
                "hcal_forward_off",
            ],
        );
        let stage = DelphesMaps {
            events_per_ls: 125,
            ls_per_label: 3,
            window: 2,
            ..Default::default()
        };
        let out = run_in_memory(&stage, &[events]).unwrap().table("main");
        let maps = input_from_batch("maps", &out, &dir.path().join("m.parquet")).unwrap();
        let geometry = MapGeometry::of(Subdetector::Barrel);
        let rows = crate::hcal::tables::read_all_rows(&maps, &geometry).unwrap();
        let labels: Vec<_> = rows
            .iter()
            .map(|r| (r.case.clone(), r.fill, r.ls))
            .collect();
        assert_eq!(rows.len(), 12, "{labels:?}");
        let of = |label: &str| -> Vec<&MapRow> {
            rows.iter()
                .filter(|r| r.case.as_deref() == Some(label))
                .collect()
        };
        for (n, b, e) in itertools3(of("normal"), of("hcal_barrel_off"), of("hcal_endcap_off")) {
            assert!(
                n.occupancy.iter().sum::<f64>() > 1000.0,
                "normal barrel has hits"
            );
            assert!(
                b.occupancy.iter().all(|&v| v == 0.0),
                "barrel off: no barrel hit"
            );
            // Same physics events; Delphes' per-event random stream shifts when
            // a region is switched off, so a few barrel towers differ.
            let (tn, te): (f64, f64) = (n.occupancy.iter().sum(), e.occupancy.iter().sum());
            assert!(
                (tn - te).abs() < 0.05 * tn,
                "endcap off keeps the barrel: {tn} vs {te}"
            );
            assert!(b.injected.as_ref().unwrap().iter().all(|&d| d));
            assert!(n.injected.as_ref().unwrap().iter().all(|&d| !d));
            assert!(e.injected.as_ref().unwrap().iter().all(|&d| !d));
            assert_eq!(n.target, Some(n.ls >= 2));
            assert!(n.occupancy.iter().all(|&v| v <= 125.0));
        }
    }

    fn itertools3<'a>(
        a: Vec<&'a MapRow>,
        b: Vec<&'a MapRow>,
        c: Vec<&'a MapRow>,
    ) -> Vec<(&'a MapRow, &'a MapRow, &'a MapRow)> {
        a.into_iter()
            .zip(b)
            .zip(c)
            .map(|((a, b), c)| (a, b, c))
            .collect()
    }
}
