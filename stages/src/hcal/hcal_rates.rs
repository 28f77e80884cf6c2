//! `hcal_rates`: the hit probability per event of every HCAL channel,
//! measured on real Delphes events (the `events` table of
//! `delphes_convert`). These rates drive the lumisection map generator.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::{Geometry, Subdetector};
use crate::hcal::tables::{check_events, example_events_schema, for_each_event, rates_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Counts, per channel, the events with an HCAL tower in it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HcalRates {
    /// Only events of this configuration label (`normal`: a healthy
    /// detector); null: every event of the input.
    pub label: Option<String>,
    /// A tower is an HCAL hit when its Ehad (GeV) is above this (Delphes
    /// towers carry Eem or Ehad, never both).
    pub ehad_min: f64,
    /// Report each channel's rate as the mean over its ring (all iφ of one
    /// iη): the physics is symmetric in φ, so this is the same expectation
    /// with n_iφ times the statistics (500 events leave many single
    /// channels with no hit). `hits` stays the channel's own count.
    pub phi_symmetric: bool,
}

impl Default for HcalRates {
    fn default() -> Self {
        Self {
            label: Some("normal".into()),
            ehad_min: 0.0,
            phi_symmetric: true,
        }
    }
}

impl StageConfig for HcalRates {
    const KIND: &'static str = "hcal_rates";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Delphes events -> hit probability per event of every HCAL channel (barrel, endcap, forward)";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_events_schema()]
    }

    fn validate(&self) -> Result<()> {
        if !(self.ehad_min >= 0.0) {
            return bad_param("ehad_min", "must be ≥ 0 GeV");
        }
        Ok(())
    }
}

/// Hits per channel of each subdetector, and what could not be placed.
#[derive(Debug, Clone)]
pub struct RateCount {
    pub geometries: Vec<Geometry>,
    pub hits: Vec<Vec<u64>>,
    pub events: u64,
    /// HCAL towers (Ehad above threshold) counted.
    pub towers: u64,
    /// Of those, towers that landed in no channel (|η| ≥ 5).
    pub unplaced: u64,
}

impl RateCount {
    pub fn new() -> Self {
        let geometries: Vec<Geometry> = Subdetector::ALL.iter().map(|s| s.geometry()).collect();
        let hits = geometries.iter().map(|g| vec![0; g.n_channels()]).collect();
        Self {
            geometries,
            hits,
            events: 0,
            towers: 0,
            unplaced: 0,
        }
    }

    /// Adds one event's towers: a channel counts once per event.
    pub fn add_event(&mut self, eta: &[f32], phi: &[f32], ehad: &[f32], ehad_min: f64) {
        self.events += 1;
        let mut seen: Vec<Vec<bool>> = self.hits.iter().map(|h| vec![false; h.len()]).collect();
        for ((&eta, &phi), &e) in eta.iter().zip(phi).zip(ehad) {
            if !(f64::from(e) > ehad_min) {
                continue;
            }
            self.towers += 1;
            let place = self
                .geometries
                .iter()
                .enumerate()
                .find_map(|(s, g)| g.locate(f64::from(eta), f64::from(phi)).map(|c| (s, c)));
            match place {
                Some((s, c)) if !seen[s][c] => {
                    seen[s][c] = true;
                    self.hits[s][c] += 1;
                }
                Some(_) => {}
                None => self.unplaced += 1,
            }
        }
    }
}

impl Default for RateCount {
    fn default() -> Self {
        Self::new()
    }
}

impl HcalRates {
    fn count(&self, ctx: &RunContext<'_>) -> Result<RateCount> {
        let input = &ctx.inputs[0];
        let mut count = RateCount::new();
        for_each_event(input, self.label.is_some(), |towers| {
            if self
                .label
                .as_deref()
                .is_none_or(|want| towers.label == Some(want))
            {
                count.add_event(towers.eta, towers.phi, towers.ehad, self.ehad_min);
            }
            Ok(())
        })?;
        if count.events == 0 {
            return Err(StageError::data(format!(
                "input `{}` has no event{}",
                input.name,
                self.label
                    .as_ref()
                    .map(|l| format!(" labelled `{l}`"))
                    .unwrap_or_default()
            )));
        }
        Ok(count)
    }
}

/// The rates table of a count; `phi_symmetric`: rates averaged over each ring.
pub fn rates_batch(count: &RateCount, phi_symmetric: bool) -> Result<RecordBatch> {
    let mut sub = Vec::new();
    let mut ints: [Vec<i64>; 5] = Default::default();
    let (mut lo, mut hi, mut hits, mut events, mut rate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (g, h) in count.geometries.iter().zip(&count.hits) {
        let per_ring = g.n_iphi * g.n_depth;
        for (i, &n) in h.iter().enumerate() {
            let c = g.channel(i);
            let ring = &h[c.ieta * per_ring..(c.ieta + 1) * per_ring];
            let ring_mean = ring.iter().sum::<u64>() as f64 / per_ring as f64;
            sub.push(g.subdetector.name());
            for (col, v) in ints.iter_mut().zip([i, c.ieta, c.iphi, c.depth, g.rbx(i)]) {
                col.push(v as i64);
            }
            lo.push(g.rings[c.ieta].0);
            hi.push(g.rings[c.ieta].1);
            hits.push(n as i64);
            events.push(count.events as i64);
            rate.push(if phi_symmetric {
                ring_mean / count.events as f64
            } else {
                n as f64 / count.events as f64
            });
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(sub))];
    for col in ints {
        columns.push(Arc::new(Int64Array::from(col)));
    }
    columns.push(Arc::new(Float64Array::from(lo)));
    columns.push(Arc::new(Float64Array::from(hi)));
    columns.push(Arc::new(Int64Array::from(hits)));
    columns.push(Arc::new(Int64Array::from(events)));
    columns.push(Arc::new(Float64Array::from(rate)));
    Ok(RecordBatch::try_new(rates_schema(), columns)?)
}

impl Stage for HcalRates {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        check_events(&inputs[0], self.label.is_some())?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: rates_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let count = self.count(ctx)?;
        ctx.reporter.info(&format!(
            "{} events, {} HCAL towers, {} outside |η| < 5; mean hits per event: {}",
            count.events,
            count.towers,
            count.unplaced,
            count
                .geometries
                .iter()
                .zip(&count.hits)
                .map(|(g, h)| format!(
                    "{} {:.1}",
                    g.subdetector.name(),
                    h.iter().sum::<u64>() as f64 / count.events as f64
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ctx.output
            .write("main", rates_batch(&count, self.phi_symmetric)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::test_support::bundled_events;
    use crate::in_memory::run_in_memory;
    use arrow::array::AsArray;

    /// Counts the bundled file of `label` with every tower's channel checked.
    fn count_of(label: &str) -> RateCount {
        let dir = tempfile::tempdir().unwrap();
        let input = bundled_events(dir.path(), &[label]);
        let stage = HcalRates {
            label: Some(label.into()),
            ..Default::default()
        };
        let mut out = crate::in_memory::MemoryOutput::default();
        let ctx = RunContext {
            inputs: std::slice::from_ref(&input),
            output: &mut out,
            reporter: &crate::stage::Silent,
            artifacts: dir.path(),
            shard: crate::stage::Shard::WHOLE,
        };
        stage.count(&ctx).unwrap()
    }

    #[test]
    fn every_hcal_tower_lands_in_exactly_one_channel() {
        let count = count_of("normal");
        assert_eq!(count.events, 500);
        assert_eq!(count.unplaced, 0, "every tower is inside |η| < 5");
        // No two subdetectors claim one tower: each η lies in one ring.
        let dir = tempfile::tempdir().unwrap();
        let input = bundled_events(dir.path(), &["normal"]);
        let mut towers = 0;
        crate::hcal::tables::for_each_event(&input, false, |event| {
            for (e, p) in event.hcal(0.0) {
                towers += 1;
                let homes = count
                    .geometries
                    .iter()
                    .filter(|g| g.locate(e, p).is_some())
                    .count();
                assert_eq!(homes, 1, "tower at η {e} φ {p}");
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(towers, count.towers);
        // One Delphes tower per channel per event: hits equal towers.
        let hits: u64 = count.hits.iter().flatten().sum();
        assert_eq!(hits, count.towers);
    }

    #[test]
    fn dead_regions_of_the_glitch_configs_have_no_hits_and_only_there() {
        let normal = count_of("normal");
        for (label, dead) in [
            ("hcal_barrel_off", 0),
            ("hcal_endcap_off", 1),
            ("hcal_forward_off", 2),
        ] {
            let c = count_of(label);
            for s in 0..3 {
                let total: u64 = c.hits[s].iter().sum();
                if s == dead {
                    assert_eq!(total, 0, "{label}: region {s} must be empty");
                } else {
                    let reference: u64 = normal.hits[s].iter().sum();
                    assert!(
                        total > reference / 2,
                        "{label}: region {s} has {total} hits"
                    );
                }
            }
        }
    }

    #[test]
    fn rates_table_is_hits_over_events_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let input = bundled_events(dir.path(), &["normal", "hcal_barrel_off"]);
        let stage = HcalRates {
            phi_symmetric: false,
            ..Default::default()
        };
        let out = run_in_memory(&stage, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        assert_eq!(out.num_rows(), 2736 + 1368 + 72);
        let rate = crate::hcal::tables::f64_column(&out, "rate");
        let hits = out
            .column_by_name("hits")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let events = out
            .column_by_name("events")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        // The label filter kept the 500 normal events only.
        assert!(events.values().iter().all(|&e| e == 500));
        for (i, r) in rate.iter().enumerate() {
            assert_eq!(*r, hits.value(i) as f64 / 500.0);
        }
        let barrel_hits: i64 = hits.values()[..2736].iter().sum();
        assert!(barrel_hits > 1000, "normal events fill the barrel");
        // φ-symmetric rates: every channel of a ring has the ring's mean.
        let sym = run_in_memory(&HcalRates::default(), &[input])
            .unwrap()
            .table("main");
        let sym_rate = crate::hcal::tables::f64_column(&sym, "rate");
        for ring in 0..38 {
            let own = &rate[ring * 72..(ring + 1) * 72];
            let mean = own.iter().sum::<f64>() / 72.0;
            for &r in &sym_rate[ring * 72..(ring + 1) * 72] {
                assert!((r - mean).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn missing_tower_columns_fail_at_planning() {
        let schema = dqm_schemas::events::schema(&[], &["Eta".into()], &[]);
        let err = HcalRates::default()
            .outputs(&[schema])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tower_phi"), "{err}");
    }
}
