//! `ls_histograms`: the monitored elements (MEs) of every lumisection — the
//! per-LS histograms the poster's autoencoder reads — from the LS table of
//! `lumi_runs` and the Delphes events (with `met_met`, jets and `scalar_ht`).
//! Every histogram keeps an underflow and an overflow bin; `normalize` turns
//! each into a shape of unit area (the poster's inputs are shapes).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::{column_as, f64_lists, is_numeric_list};
use crate::error::{Result, StageError, bad_param};
use crate::input::{Input, require_column};
use crate::lumi::tables::{histograms_schema, runs_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// The quantity an ME histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Missing transverse energy (GeV), one value per event.
    Met,
    /// MET / √HT (√GeV): a proxy of the MET significance, one per event.
    MetSignificance,
    /// pT of the leading jet (GeV), events with a jet.
    LeadingJetPt,
    /// η of every jet.
    JetEta,
    /// φ of every jet.
    JetPhi,
    /// Number of jets per event.
    NJets,
}

/// One monitored element: a quantity and its binning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorElement {
    /// Name in the `me` column.
    pub name: String,
    /// What it histograms.
    pub quantity: Quantity,
    /// Bins between `range`'s edges (under- and overflow come on top).
    pub bins: usize,
    /// `[lo, hi)`.
    pub range: [f64; 2],
}

fn me(name: &str, quantity: Quantity, bins: usize, range: [f64; 2]) -> MonitorElement {
    MonitorElement {
        name: name.into(),
        quantity,
        bins,
        range,
    }
}

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
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "LS of runs + Delphes events -> per-LS histograms of monitored elements (MET, MET significance, jets), under/overflow kept";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "runs, events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![
            runs_schema(),
            dqm_schemas::events::schema_with_jets(
                &["PT".into()],
                &["Eta".into()],
                &["MET".into()],
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
            if m.bins == 0 || !(m.range[0] < m.range[1]) {
                return bad_param(
                    &format!("mes[{i}]"),
                    "need bins ≥ 1 and range [lo, hi) with lo < hi",
                );
            }
        }
        let mut names: Vec<&str> = self.mes.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return bad_param("mes", "two monitored elements share a name");
        }
        Ok(())
    }
}

/// What the MEs read of one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFeatures {
    pub met: f64,
    pub ht: f64,
    pub jet_pt: Vec<f64>,
    pub jet_eta: Vec<f64>,
    pub jet_phi: Vec<f64>,
}

impl EventFeatures {
    /// The values `quantity` takes in this event.
    pub fn values(&self, quantity: Quantity) -> Vec<f64> {
        match quantity {
            Quantity::Met => vec![self.met],
            Quantity::MetSignificance if self.ht > 0.0 => vec![self.met / self.ht.sqrt()],
            Quantity::MetSignificance => vec![],
            Quantity::LeadingJetPt => self
                .jet_pt
                .iter()
                .copied()
                .reduce(f64::max)
                .into_iter()
                .collect(),
            Quantity::JetEta => self.jet_eta.clone(),
            Quantity::JetPhi => self.jet_phi.clone(),
            Quantity::NJets => vec![self.jet_pt.len() as f64],
        }
    }
}

impl MonitorElement {
    /// The bin of `v`: 0 underflow, 1..=bins, bins + 1 overflow.
    pub fn bin(&self, v: f64) -> usize {
        let [lo, hi] = self.range;
        if v < lo {
            0
        } else if v >= hi {
            self.bins + 1
        } else {
            1 + (((v - lo) / (hi - lo) * self.bins as f64) as usize).min(self.bins - 1)
        }
    }
}

const EVENT_COLUMNS: [&str; 5] = ["met_met", "scalar_ht", "jet_pt", "jet_eta", "jet_phi"];

/// Every event's features, by `event_id`.
fn load_events(input: &Input) -> Result<HashMap<i64, EventFeatures>> {
    let f32_list = dqm_schemas::events::f32_list();
    let mut events = HashMap::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str, t: &DataType| column_as(&batch, n, t, &input.name);
        let ids = col("event_id", &DataType::Int64)?;
        let met = col("met_met", &DataType::Float64)?;
        let ht = col("scalar_ht", &DataType::Float64)?;
        let lists: Vec<ArrayRef> = ["jet_pt", "jet_eta", "jet_phi"]
            .iter()
            .map(|c| col(c, &f32_list))
            .collect::<Result<_>>()?;
        let (ids, met, ht) = (
            ids.as_primitive::<Int64Type>(),
            met.as_primitive::<Float64Type>(),
            ht.as_primitive::<Float64Type>(),
        );
        for i in 0..batch.num_rows() {
            let v = |l: &ArrayRef| -> Vec<f64> {
                l.as_list::<i32>()
                    .value(i)
                    .as_primitive::<Float32Type>()
                    .values()
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            };
            events.insert(
                ids.value(i),
                EventFeatures {
                    met: met.value(i),
                    ht: ht.value(i),
                    jet_pt: v(&lists[0]),
                    jet_eta: v(&lists[1]),
                    jet_phi: v(&lists[2]),
                },
            );
        }
    }
    Ok(events)
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
        Ok(vec![OutputSpec {
            name: "main",
            schema: histograms_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let events = load_events(&ctx.inputs[1])?;
        let runs = &ctx.inputs[0];
        let mut n = 0;
        for batch in runs.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("planned");
            let (run, ls, part, nev, lumi, truth, bad, ids) = (
                col("run"),
                col("ls"),
                col("part"),
                col("events"),
                col("lumi"),
                col("truth"),
                col("bad"),
                col("event_ids"),
            );
            let ids = ids.as_list::<i32>();
            let mut rows: Vec<(usize, String, Vec<f64>, i64)> = Vec::new();
            for i in 0..batch.num_rows() {
                let list = ids.value(i);
                let list = list.as_primitive::<Int64Type>();
                let features: Vec<&EventFeatures> = list
                    .values()
                    .iter()
                    .map(|id| {
                        events.get(id).ok_or_else(|| {
                            StageError::data(format!(
                                "input `{}`: event {id} of LS {} is not in input `{}`",
                                runs.name,
                                ls.as_primitive::<Int64Type>().value(i),
                                ctx.inputs[1].name
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                for m in &self.mes {
                    let mut counts = vec![0.0; m.bins + 2];
                    let mut entries = 0i64;
                    for e in &features {
                        for v in e.values(m.quantity) {
                            counts[m.bin(v)] += 1.0;
                            entries += 1;
                        }
                    }
                    if self.normalize && entries > 0 {
                        counts.iter_mut().for_each(|c| *c /= entries as f64);
                    }
                    rows.push((i, m.name.clone(), counts, entries));
                }
            }
            let take = |a: &ArrayRef| -> Result<ArrayRef> {
                let idx =
                    arrow::array::UInt32Array::from_iter_values(rows.iter().map(|r| r.0 as u32));
                Ok(arrow::compute::take(a.as_ref(), &idx, None)?)
            };
            let columns: Vec<ArrayRef> = vec![
                take(run)?,
                take(ls)?,
                take(part)?,
                take(nev)?,
                take(lumi)?,
                take(truth)?,
                take(bad)?,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
                Arc::new(f64_lists(rows.iter().map(|r| r.2.as_slice()))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ];
            n += rows.len();
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

    #[test]
    fn bins_keep_under_and_overflow() {
        let m = me("x", Quantity::Met, 4, [0.0, 8.0]);
        let bins: Vec<usize> = [-1.0, 0.0, 1.9, 2.0, 7.99, 8.0, 100.0]
            .iter()
            .map(|&v| m.bin(v))
            .collect();
        assert_eq!(bins, [0, 1, 1, 2, 4, 5, 5]);
    }

    #[test]
    fn each_quantity_by_hand() {
        let e = EventFeatures {
            met: 30.0,
            ht: 900.0,
            jet_pt: vec![120.0, 340.0],
            jet_eta: vec![0.5, -1.0],
            jet_phi: vec![1.0, -2.0],
        };
        assert_eq!(e.values(Quantity::Met), [30.0]);
        assert_eq!(e.values(Quantity::MetSignificance), [1.0]);
        assert_eq!(e.values(Quantity::LeadingJetPt), [340.0]);
        assert_eq!(e.values(Quantity::JetEta), [0.5, -1.0]);
        assert_eq!(e.values(Quantity::NJets), [2.0]);
        let none = EventFeatures::default();
        assert!(none.values(Quantity::LeadingJetPt).is_empty());
        assert!(
            none.values(Quantity::MetSignificance).is_empty(),
            "HT = 0: undefined"
        );
    }

    /// Real events -> runs -> histograms: unit-area shapes, and the barrel
    /// glitch's MET (twice the normal's on average, DATA.md) shows in its LS.
    #[test]
    fn real_runs_histogram_the_glitch_where_it_is() {
        use crate::in_memory::{input_from_batch, run_in_memory};
        use crate::lumi::lumi_runs::{BadStretch, LumiRuns, RunSpec};
        use crate::medic::delphes_convert::DelphesConvert;
        use crate::medic::test_support::{bundled_convert, converted};
        let dir = tempfile::tempdir().unwrap();
        let convert = DelphesConvert {
            jet_features: vec!["PT".into(), "Eta".into(), "Phi".into()],
            scalar_ht: true,
            ..bundled_convert(&["normal", "hcal_barrel_off"])
        };
        let events = converted(dir.path(), &convert);
        let runs = LumiRuns {
            runs: vec![RunSpec {
                run: 7,
                n_ls: 12,
                bad: vec![BadStretch {
                    first: 5,
                    last: 8,
                    pool: "hcal_barrel_off".into(),
                    fraction: 1.0,
                }],
                part: "test".into(),
            }],
            events_per_ls: 40,
            ..Default::default()
        };
        let table = run_in_memory(&runs, std::slice::from_ref(&events))
            .unwrap()
            .table("main");
        let runs_in = input_from_batch("runs", &table, &dir.path().join("r.parquet")).unwrap();
        let stage = LsHistograms::default();
        let h = run_in_memory(&stage, &[runs_in, events])
            .unwrap()
            .table("main");
        assert_eq!(h.num_rows(), 12 * 6);
        let col = |n: &str| h.column_by_name(n).unwrap().clone();
        let (me_col, counts, bad) = (col("me"), col("counts"), col("bad"));
        let (me_col, counts, bad) = (
            me_col.as_string::<i32>(),
            counts.as_list::<i32>(),
            bad.as_boolean(),
        );
        let (mut good_met, mut bad_met) = (Vec::new(), Vec::new());
        let met = &stage.mes[0];
        for i in 0..h.num_rows() {
            let c = counts.value(i);
            let c = c.as_primitive::<Float64Type>().values().to_vec();
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-9, "unit area");
            if me_col.value(i) == "met" {
                // Mean MET from the bin centres (overflow at the upper edge).
                let width = (met.range[1] - met.range[0]) / met.bins as f64;
                let mean: f64 = c
                    .iter()
                    .enumerate()
                    .map(|(b, w)| w * (met.range[0] + (b.max(1) as f64 - 0.5) * width))
                    .sum();
                if bad.value(i) {
                    bad_met.push(mean)
                } else {
                    good_met.push(mean)
                }
            }
        }
        assert_eq!((good_met.len(), bad_met.len()), (8, 4));
        let lowest_bad = bad_met.iter().copied().fold(f64::MAX, f64::min);
        let highest_good = good_met.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            lowest_bad > highest_good,
            "bad {bad_met:?} vs good {good_met:?}"
        );
    }
}
