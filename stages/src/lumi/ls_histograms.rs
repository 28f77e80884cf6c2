//! `ls_histograms`: the monitored elements (MEs) of every lumisection — the
//! per-LS histograms the poster's autoencoder reads — from the LS table of
//! `lumi_runs` and the Delphes events (with `met_met`, jets and `scalar_ht`;
//! `met_phi` when pile-up is overlaid; towers for the tower MEs). How a
//! recorded event with pile-up fills an ME: [`crate::lumi::monitor`].
//! Every histogram keeps an underflow and an overflow bin; `normalize` turns
//! each into a shape of unit area (the poster's inputs are shapes).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::{column_as, f64_lists, is_numeric_list};
use crate::error::{Result, StageError, bad_param, within};
use crate::input::{Input, require_column};
use crate::lumi::monitor::{
    EventFeatures, Filling, MonitorElement, Prepared, Quantity, fill_recorded, me,
};
use crate::lumi::tables::{histograms_schema, runs_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Histograms every ME for every LS.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LsHistograms {
    /// The monitored elements.
    pub mes: Vec<MonitorElement>,
    /// Divide each histogram by its entries (unit area; empty stays 0).
    pub normalize: bool,
}

impl Default for LsHistograms {
    fn default() -> Self {
        Self {
            mes: vec![
                me("met", Quantity::Met, 40, [0.0, 200.0]),
                me(
                    "met_significance",
                    Quantity::MetSignificance,
                    40,
                    [0.0, 8.0],
                ),
                me("leading_jet_pt", Quantity::LeadingJetPt, 40, [0.0, 800.0]),
                me("jet_eta", Quantity::JetEta, 40, [-5.0, 5.0]),
                me(
                    "jet_phi",
                    Quantity::JetPhi,
                    36,
                    [-std::f64::consts::PI, std::f64::consts::PI],
                ),
                me("n_jets", Quantity::NJets, 20, [0.0, 20.0]),
            ],
            normalize: true,
        }
    }
}

impl StageConfig for LsHistograms {
    const KIND: &'static str = "ls_histograms";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "LS of runs + Delphes events -> per-LS histograms of monitored elements (MET, MET significance, jets, ECAL/HCAL tower occupancy per η ring, forward E_T), pile-up overlaid, under/overflow kept";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "runs, events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![
            runs_schema(),
            dqm_schemas::events::schema_with_jets(
                &["PT".into()],
                &["ET".into(), "Eta".into(), "Eem".into(), "Ehad".into()],
                &["MET".into(), "Phi".into()],
                &["PT".into(), "Eta".into(), "Phi".into()],
                true,
            ),
        ]
    }

    fn validate(&self) -> Result<()> {
        if self.mes.is_empty() {
            return bad_param("mes", "give at least one monitored element");
        }
        for (i, m) in self.mes.iter().enumerate() {
            within(&format!("mes[{i}]"), m.validate())?;
        }
        let mut names: Vec<&str> = self.mes.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return bad_param("mes", "two monitored elements share a name");
        }
        Ok(())
    }
}

/// Events-table columns every ME reads (MET, HT, jets); `met_phi` is read
/// when present (the MET vector sum under pile-up needs it).
const EVENT_COLUMNS: [&str; 5] = ["met_met", "scalar_ht", "jet_pt", "jet_eta", "jet_phi"];
/// Events-table columns of the tower MEs.
const TOWER_COLUMNS: [&str; 4] = ["tower_et", "tower_eta", "tower_eem", "tower_ehad"];

/// Every event prepared for the MEs, and the row of every `event_id`.
struct Events {
    prepared: Vec<Prepared>,
    row: HashMap<i64, usize>,
    has_met_phi: bool,
}

impl LsHistograms {
    fn needs_towers(&self) -> bool {
        self.mes.iter().any(|m| m.quantity.needs_towers())
    }

    fn load_events(&self, input: &Input) -> Result<Events> {
        let f32_list = dqm_schemas::events::f32_list();
        let has_met_phi = input.schema.column_with_name("met_phi").is_some();
        let towers = self.needs_towers();
        let mut events = Events {
            prepared: Vec::new(),
            row: HashMap::new(),
            has_met_phi,
        };
        for batch in input.batches() {
            let batch = batch?;
            let col = |n: &str, t: &DataType| column_as(&batch, n, t, &input.name);
            let ids = col("event_id", &DataType::Int64)?;
            let met = col("met_met", &DataType::Float64)?;
            let ht = col("scalar_ht", &DataType::Float64)?;
            let phi = if has_met_phi {
                Some(col("met_phi", &DataType::Float64)?)
            } else {
                None
            };
            let lists: Vec<ArrayRef> = EVENT_COLUMNS[2..]
                .iter()
                .chain(if towers { &TOWER_COLUMNS[..] } else { &[] })
                .map(|c| col(c, &f32_list))
                .collect::<Result<_>>()?;
            let (ids, met, ht) = (
                ids.as_primitive::<Int64Type>(),
                met.as_primitive::<Float64Type>(),
                ht.as_primitive::<Float64Type>(),
            );
            for i in 0..batch.num_rows() {
                let v = |k: usize| -> Vec<f64> {
                    lists.get(k).map_or_else(Vec::new, |l| {
                        l.as_list::<i32>()
                            .value(i)
                            .as_primitive::<Float32Type>()
                            .values()
                            .iter()
                            .map(|&x| f64::from(x))
                            .collect()
                    })
                };
                let positive = |k: usize| -> Vec<bool> { v(k).iter().map(|&e| e > 0.0).collect() };
                let event = EventFeatures {
                    met: met.value(i),
                    met_phi: phi
                        .as_ref()
                        .map_or(0.0, |p| p.as_primitive::<Float64Type>().value(i)),
                    ht: ht.value(i),
                    jet_pt: v(0),
                    jet_eta: v(1),
                    jet_phi: v(2),
                    tower_et: v(3),
                    tower_eta: v(4),
                    tower_ecal: positive(5),
                    tower_hcal: positive(6),
                };
                events.row.insert(ids.value(i), events.prepared.len());
                events.prepared.push(Prepared::new(&event, &self.mes));
            }
        }
        Ok(events)
    }

    /// The histograms of one LS: its recorded events (rows of `events`),
    /// each with the rows overlaid on it.
    fn histograms_of_ls(&self, events: &Events, recorded: &[(usize, Vec<usize>)]) -> Vec<Filling> {
        let mut fillings: Vec<Filling> = self
            .mes
            .iter()
            .map(|m| Filling {
                counts: vec![0.0; m.bins + 2],
                entries: 0,
            })
            .collect();
        let mut overlaid: Vec<&Prepared> = Vec::new();
        for (primary, overlay) in recorded {
            overlaid.clear();
            overlaid.extend(overlay.iter().map(|&r| &events.prepared[r]));
            fill_recorded(
                &self.mes,
                &mut fillings,
                &events.prepared[*primary],
                &overlaid,
            );
        }
        if self.normalize {
            for f in fillings.iter_mut().filter(|f| f.entries > 0) {
                let entries = f.entries as f64;
                f.counts.iter_mut().for_each(|c| *c /= entries);
            }
        }
        fillings
    }
}

/// The recorded events of row `i` of a runs batch as rows of `events`:
/// (primary, overlaid), or an error naming the missing event.
fn recorded_rows(
    events: &Events,
    ids: &arrow::array::ListArray,
    pileup: &arrow::array::ListArray,
    i: usize,
    what: &dyn Fn(i64) -> String,
) -> Result<Vec<(usize, Vec<usize>)>> {
    let row = |id: i64| -> Result<usize> {
        events
            .row
            .get(&id)
            .copied()
            .ok_or_else(|| StageError::data(what(id)))
    };
    let primaries = ids.value(i);
    let primaries = primaries.as_primitive::<Int64Type>().values();
    let overlays = pileup.value(i);
    let overlays = overlays.as_list::<i32>();
    if overlays.len() != primaries.len() {
        return Err(StageError::data(what(-1)));
    }
    let flat = overlays.values().as_primitive::<Int64Type>().values();
    let offsets = overlays.value_offsets();
    primaries
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let over = flat[offsets[k] as usize..offsets[k + 1] as usize]
                .iter()
                .map(|&o| row(o))
                .collect::<Result<Vec<usize>>>()?;
            Ok((row(id)?, over))
        })
        .collect()
}

impl Stage for LsHistograms {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        for f in runs_schema().fields() {
            require_column(
                &inputs[0],
                "runs",
                f.name(),
                "the LS table of `lumi_runs`",
                "its type",
                |t| t == f.data_type(),
            )?;
        }
        let why = "MET, HT and jets (`delphes_convert` with `jet_features: [PT, Eta, Phi]`, `scalar_ht: true`)";
        require_column(&inputs[1], "events", "event_id", why, "an integer", |t| {
            t.is_integer()
        })?;
        for c in EVENT_COLUMNS {
            let list = c.starts_with("jet_");
            require_column(
                &inputs[1],
                "events",
                c,
                why,
                if list { "a numeric list" } else { "a number" },
                |t| {
                    if list {
                        is_numeric_list(t)
                    } else {
                        t.is_numeric()
                    }
                },
            )?;
        }
        if self.needs_towers() {
            let why = "towers for the tower MEs (`delphes_convert` with `tower_features: [ET, Eta, Eem, Ehad]`)";
            for c in TOWER_COLUMNS {
                require_column(
                    &inputs[1],
                    "events",
                    c,
                    why,
                    "a numeric list",
                    is_numeric_list,
                )?;
            }
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: histograms_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let events = self.load_events(&ctx.inputs[1])?;
        let (runs, events_name) = (&ctx.inputs[0], ctx.inputs[1].name.clone());
        let mut n = 0;
        for batch in runs.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("planned");
            let (ls, ids, pileup) = (
                col("ls").as_primitive::<Int64Type>().clone(),
                col("event_ids").as_list::<i32>().clone(),
                col("pileup_ids").as_list::<i32>().clone(),
            );
            let run = col("run").as_primitive::<Int64Type>().clone();
            let overlays = pileup.values().as_list::<i32>().values().len();
            if overlays > 0 && !events.has_met_phi {
                return Err(StageError::data(format!(
                    "input `{events_name}` has no column `met_phi`: the MET of overlaid events adds as vectors (`delphes_convert` with `met_features: [MET, Phi]`)"
                )));
            }
            let what = |i: usize| {
                let (run, ls) = (run.value(i), ls.value(i));
                let (runs_name, events_name) = (runs.name.clone(), events_name.clone());
                move |id: i64| {
                    if id < 0 {
                        format!(
                            "input `{runs_name}`: run {run} LS {ls}: `pileup_ids` must hold one list per recorded event"
                        )
                    } else {
                        format!(
                            "input `{runs_name}`: event {id} of run {run} LS {ls} is not in input `{events_name}`"
                        )
                    }
                }
            };
            let rows: Vec<usize> = (0..batch.num_rows()).collect();
            let per_ls: Vec<Result<Vec<Filling>>> = {
                use rayon::prelude::*;
                rows.par_iter()
                    .map(|&i| {
                        let recorded = recorded_rows(&events, &ids, &pileup, i, &what(i))?;
                        Ok(self.histograms_of_ls(&events, &recorded))
                    })
                    .collect()
            };
            let mut out: Vec<(usize, &str, Filling)> = Vec::new();
            for (i, fillings) in per_ls.into_iter().enumerate() {
                for (m, f) in self.mes.iter().zip(fillings?) {
                    out.push((i, m.name.as_str(), f));
                }
            }
            let idx = arrow::array::UInt32Array::from_iter_values(out.iter().map(|r| r.0 as u32));
            let take = |name: &str| -> Result<ArrayRef> {
                Ok(arrow::compute::take(col(name).as_ref(), &idx, None)?)
            };
            let mut columns: Vec<ArrayRef> = [
                "run", "ls", "part", "events", "lumi", "truth", "bad", "pileup",
            ]
            .into_iter()
            .map(take)
            .collect::<Result<_>>()?;
            columns.extend([
                Arc::new(StringArray::from_iter_values(out.iter().map(|r| r.1))) as ArrayRef,
                Arc::new(f64_lists(out.iter().map(|r| r.2.counts.as_slice()))),
                Arc::new(Int64Array::from_iter_values(
                    out.iter().map(|r| r.2.entries),
                )),
            ]);
            n += out.len();
            ctx.output
                .write("main", RecordBatch::try_new(histograms_schema(), columns)?)?;
        }
        ctx.reporter
            .info(&format!("{n} histograms ({} MEs per LS)", self.mes.len()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::lumi::lumi_runs::{BadStretch, LumiRuns, RunSpec};
    use crate::medic::delphes_convert::DelphesConvert;
    use crate::medic::test_support::{bundled_convert, converted};
    use arrow::datatypes::Float64Type;

    /// Real events of `glitch` and `normal` -> a 12-LS run with LS 5–8 from
    /// the glitch pool -> histograms of `stage`: (ME, LS, bad, counts, entries).
    fn histograms(
        glitch: &str,
        peak_pileup: f64,
        stage: &LsHistograms,
    ) -> Vec<(String, i64, bool, Vec<f64>, i64)> {
        let dir = tempfile::tempdir().unwrap();
        let convert = DelphesConvert {
            jet_features: vec!["PT".into(), "Eta".into(), "Phi".into()],
            met_features: vec!["MET".into(), "Phi".into()],
            tower_features: vec!["ET".into(), "Eta".into(), "Eem".into(), "Ehad".into()],
            scalar_ht: true,
            ..bundled_convert(&["normal", glitch])
        };
        let events = converted(dir.path(), &convert);
        let runs = LumiRuns {
            runs: vec![RunSpec {
                run: 7,
                n_ls: 12,
                bad: vec![BadStretch {
                    first: 5,
                    last: 8,
                    pool: glitch.into(),
                    fraction: 1.0,
                }],
                part: "test".into(),
                peak_pileup: None,
                prescale: Vec::new(),
            }],
            events_per_ls: 40,
            lumi_lifetime: 6.0,
            peak_pileup,
            ..Default::default()
        };
        let table = run_in_memory(&runs, std::slice::from_ref(&events))
            .unwrap()
            .table("main");
        let runs_in = input_from_batch("runs", &table, &dir.path().join("r.parquet")).unwrap();
        let h = run_in_memory(stage, &[runs_in, events])
            .unwrap()
            .table("main");
        assert_eq!(h.num_rows(), 12 * stage.mes.len());
        let col = |n: &str| h.column_by_name(n).unwrap().clone();
        let (me_col, ls, counts, bad, entries) = (
            col("me"),
            col("ls"),
            col("counts"),
            col("bad"),
            col("entries"),
        );
        (0..h.num_rows())
            .map(|i| {
                let c = counts.as_list::<i32>().value(i);
                (
                    me_col.as_string::<i32>().value(i).to_string(),
                    ls.as_primitive::<Int64Type>().value(i),
                    bad.as_boolean().value(i),
                    c.as_primitive::<Float64Type>().values().to_vec(),
                    entries.as_primitive::<Int64Type>().value(i),
                )
            })
            .collect()
    }

    /// Mean of a histogram from its bin centres (outer bins at the edges).
    fn mean(m: &MonitorElement, c: &[f64]) -> f64 {
        let width = (m.range[1] - m.range[0]) / m.bins as f64;
        c.iter()
            .enumerate()
            .map(|(b, w)| w * (m.range[0] + (b.clamp(1, m.bins) as f64 - 0.5) * width))
            .sum()
    }

    /// Real events -> runs -> histograms: unit-area shapes, and the barrel
    /// glitch's MET (twice the normal's on average, DATA.md) shows in its LS.
    #[test]
    fn real_runs_histogram_the_glitch_where_it_is() {
        let stage = LsHistograms::default();
        let rows = histograms("hcal_barrel_off", 0.0, &stage);
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (me, _, is_bad, c, _) in &rows {
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-9, "unit area");
            if me == "met" {
                let m = mean(&stage.mes[0], c);
                if *is_bad { bad.push(m) } else { good.push(m) }
            }
        }
        assert_eq!((good.len(), bad.len()), (8, 4));
        let lowest_bad = bad.iter().copied().fold(f64::MAX, f64::min);
        let highest_good = good.iter().copied().fold(f64::MIN, f64::max);
        assert!(lowest_bad > highest_good, "bad {bad:?} vs good {good:?}");
    }

    /// Pile-up on real events: the forward HCAL rings empty in the
    /// forward-off LS (and the forward E_T sum falls), the jets per
    /// recorded event follow μ as it falls along the run.
    #[test]
    fn pileup_shapes_follow_mu_and_forward_off_shows_in_the_forward_rings() {
        let forward = MonitorElement {
            abs_eta: Some([4.525, 5.0]),
            ..me("hf_et", Quantity::TowerSumEt, 40, [0.0, 400.0])
        };
        let stage = LsHistograms {
            mes: vec![
                me("hcal_eta", Quantity::HcalTowerEta, 20, [-5.0, 5.0]),
                me("n_jets", Quantity::NJets, 20, [0.0, 100.0]),
                forward.clone(),
            ],
            normalize: true,
        };
        let rows = histograms("hcal_forward_off", 4.0, &stage);
        fn of<'a>(
            rows: &'a [(String, i64, bool, Vec<f64>, i64)],
            me: &'a str,
        ) -> impl Iterator<Item = &'a (String, i64, bool, Vec<f64>, i64)> {
            rows.iter().filter(move |r| r.0 == me)
        }
        // Bins 1 and 20 (plus under/overflow offset) are |η| in [4.5, 5).
        let edge = |c: &[f64]| c[1] + c[20];
        let good_min = of(&rows, "hcal_eta")
            .filter(|r| !r.2)
            .map(|r| edge(&r.3))
            .fold(f64::MAX, f64::min);
        let bad_max = of(&rows, "hcal_eta")
            .filter(|r| r.2)
            .map(|r| edge(&r.3))
            .fold(0.0, f64::max);
        assert!(
            bad_max < 0.6 * good_min,
            "forward rings: bad {bad_max} vs good {good_min}"
        );
        let et = |r: &(String, i64, bool, Vec<f64>, i64)| mean(&forward, &r.3);
        let good_et = of(&rows, "hf_et")
            .filter(|r| !r.2)
            .map(et)
            .fold(f64::MAX, f64::min);
        let bad_et = of(&rows, "hf_et")
            .filter(|r| r.2)
            .map(et)
            .fold(0.0, f64::max);
        assert!(
            bad_et < good_et,
            "forward E_T: bad {bad_et} vs good {good_et}"
        );
        // μ falls from 4 to 4·e^(−11/6) ≈ 0.6: fewer jets per recorded event.
        let jets: Vec<f64> = of(&rows, "n_jets")
            .map(|r| mean(&stage.mes[1], &r.3))
            .collect();
        assert!(
            jets[0] > jets[11] + 4.0,
            "jets per event along the run: {jets:?}"
        );
        // Each recorded event fills n_jets once.
        let first = of(&rows, "n_jets").next().unwrap();
        assert_eq!(first.4, 40, "one entry per recorded event");
    }

    #[test]
    fn tower_mes_need_towers_at_plan() {
        let stage = LsHistograms {
            mes: vec![me("hcal_eta", Quantity::HcalTowerEta, 20, [-5.0, 5.0])],
            normalize: true,
        };
        let events = dqm_schemas::events::schema_with_jets(
            &["PT".into()],
            &["Eta".into()],
            &["MET".into()],
            &["PT".into(), "Eta".into(), "Phi".into()],
            true,
        );
        let err = stage
            .outputs(&[runs_schema(), events])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tower_et"), "{err}");
        let mut bad = stage.clone();
        bad.mes[0].abs_eta = Some([4.5, 5.0]);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("mes[0].abs_eta"), "{err}");
    }
}
