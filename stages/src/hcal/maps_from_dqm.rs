//! `maps_from_dqm`: HCAL occupancy maps from DQM histograms (the histograms
//! table of `dqm_root` or `dqm_dataframe`): one TH2 (x iη, y iφ) per depth,
//! or one TH3 (x iη, y iφ, z depth), per LS or per run, into the maps table
//! `renormalize_occupancy` and `graphstad_*` read. The channels are CMS's:
//! the geometry comes from the parameters (|iη| range, iφ bins, depths),
//! and every histogram's axes are checked against it, so `plan` knows the
//! maps' shape before a file is read.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::histogram::Axis;
use crate::dqm::tables::{
    Consistency, HistogramRow, Luminosity, histograms_schema as dqm_histograms_schema,
    read_histograms, read_luminosity, require_histograms, require_luminosity,
};
use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::{CmsRegion, MapGeometry, Subdetector};
use crate::hcal::tables::{MapRow, maps_schema, write_rows};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Builds occupancy maps from DQM occupancy histograms.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MapsFromDqm {
    /// Occupancy MEs (as in the histograms table): one TH2 per depth in
    /// depth order (`Hcal/DigiTask/Occupancy/depth/depth1`, ...), or a
    /// single TH3 whose z bins are the depths.
    pub mes: Vec<String>,
    /// Depths of the maps: null for one TH2 per depth (the number of
    /// `mes`); for a TH3, how many of its z bins (from the first) to read.
    pub depths: Option<usize>,
    /// ME whose entries count each map's events (ξ_s, the divisor of the
    /// renormalization): any ME filled once per event.
    pub events_me: String,
    /// The subdetector the maps are labelled as (a model refuses maps of
    /// another one).
    pub subdetector: Subdetector,
    /// |iη| of the channels, inclusive (both signs, no iη 0); null: the
    /// subdetector's (HB 1-16, HE 16-29, HF 29-41).
    pub ieta: Option<[i64; 2]>,
    /// iφ bins of every occupancy histogram (its y axis): 72 for HCAL.
    pub iphi: usize,
    /// Runs to read; empty: every run of the input.
    pub runs: Vec<i64>,
}

impl Default for MapsFromDqm {
    fn default() -> Self {
        Self {
            mes: Vec::new(),
            depths: None,
            events_me: String::new(),
            subdetector: Subdetector::Barrel,
            ieta: None,
            iphi: 72,
            runs: Vec::new(),
        }
    }
}

impl StageConfig for MapsFromDqm {
    const KIND: &'static str = "maps_from_dqm";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "HCAL occupancy TH2 per depth or TH3 (iη × iφ × depth) per LS or run (dqm_root/dqm_dataframe) -> the maps table, CMS channels from the axes, events from an ME, luminosity from brilcalc";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str =
        "histograms (dqm_root, dqm_dataframe), then optionally per-LS luminosity (brilcalc_lumi)";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.mes.is_empty() {
            return bad_param(
                "mes",
                "name the occupancy MEs: one TH2 per depth, or one TH3",
            );
        }
        if self.events_me.is_empty() {
            return bad_param(
                "events_me",
                "name an ME filled once per event: its entries are each map's events",
            );
        }
        match self.depths {
            Some(0) => return bad_param("depths", "must be at least 1"),
            Some(d) if self.mes.len() > 1 && d != self.mes.len() => {
                return bad_param(
                    "depths",
                    format!(
                        "{d} depths from {} TH2 MEs: leave it null (one depth per ME)",
                        self.mes.len()
                    ),
                );
            }
            _ => {}
        }
        let [lo, hi] = self.region().ieta;
        if !(1 <= lo && lo <= hi && hi <= 41) {
            return bad_param(
                "ieta",
                format!("[{lo}, {hi}] is not a |iη| range within 1-41"),
            );
        }
        if self.iphi == 0 {
            return bad_param("iphi", "must be at least 1");
        }
        Ok(())
    }
}

/// Where a map's values come from: one TH2 per depth, or depths of a TH3.
#[derive(Clone, Copy)]
enum Layout {
    PerDepth,
    Cube,
}

/// One map being assembled.
struct Partial {
    occupancy: Vec<f64>,
    /// Depths filled so far.
    depths: Vec<bool>,
    events: Option<f64>,
}

impl MapsFromDqm {
    fn region(&self) -> CmsRegion {
        CmsRegion {
            ieta: self.ieta.unwrap_or(self.subdetector.cms_ieta()),
        }
    }

    fn n_depth(&self) -> usize {
        self.depths.unwrap_or(self.mes.len())
    }

    fn geometry(&self) -> MapGeometry {
        MapGeometry::cms(self.subdetector, self.region(), self.iphi, self.n_depth())
    }

    fn layout(&self) -> Layout {
        if self.mes.len() == 1 && self.depths.is_some_and(|d| d > 1) {
            Layout::Cube
        } else {
            Layout::PerDepth
        }
    }

    /// The x bin (1-based) of every iη of the region, in ring order.
    fn ieta_bins(&self, x: &Axis, at: &dyn Fn(String) -> StageError) -> Result<Vec<usize>> {
        self.region()
            .ietas()
            .into_iter()
            .map(|ieta| {
                (1..=x.bins)
                    .find(|&b| {
                        let (lo, hi) = edges(x, b);
                        (((lo + hi) / 2.0) - ieta as f64).abs() < 0.25
                    })
                    .ok_or_else(|| {
                        at(format!(
                            "the x axis ({} bins in ({}, {})) has no bin centred on iη {ieta}: x must be iη",
                            x.bins, x.low, x.high
                        ))
                    })
            })
            .collect()
    }

    /// Adds one occupancy histogram to its map.
    fn add(
        &self,
        h: &HistogramRow,
        depth: usize,
        partial: &mut Partial,
        at: &dyn Fn(String) -> StageError,
    ) -> Result<()> {
        let histogram = &h.histogram;
        let want = match self.layout() {
            Layout::PerDepth => 2,
            Layout::Cube => 3,
        };
        if histogram.dimension() != want || histogram.bin_entries.is_some() {
            return Err(at(format!(
                "a {}, expected a {want}-D occupancy histogram ({})",
                histogram.class,
                match self.layout() {
                    Layout::PerDepth => "one TH2 iη × iφ per depth",
                    Layout::Cube => "a TH3 iη × iφ × depth, `depths` > 1",
                }
            )));
        }
        let (x, y) = (&histogram.axes[0], &histogram.axes[1]);
        if y.bins != self.iphi {
            return Err(at(format!(
                "{} iφ bins (y axis), the maps have {} (parameter `iphi`)",
                y.bins, self.iphi
            )));
        }
        let depth_bins: Vec<usize> = match self.layout() {
            Layout::PerDepth => vec![0],
            Layout::Cube => {
                let z = &histogram.axes[2];
                if z.bins < self.n_depth() {
                    return Err(at(format!(
                        "{} depth bins (z axis), `depths` asks for {}",
                        z.bins,
                        self.n_depth()
                    )));
                }
                (1..=self.n_depth()).collect()
            }
        };
        let bins = self.ieta_bins(x, at)?;
        let (nx, ny) = (x.bins + 2, y.bins + 2);
        let n_depth = self.n_depth();
        for (d_index, &bz) in depth_bins.iter().enumerate() {
            let depth = depth + d_index;
            for (ring, &bx) in bins.iter().enumerate() {
                for iphi in 0..self.iphi {
                    let global = bx + nx * ((iphi + 1) + ny * bz);
                    let v = histogram.contents[global];
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(at(format!(
                            "occupancy {v} at iη bin {bx}, iφ {}: counts must be finite and ≥ 0",
                            iphi + 1
                        )));
                    }
                    partial.occupancy[(ring * self.iphi + iphi) * n_depth + depth] = v;
                }
            }
            if std::mem::replace(&mut partial.depths[depth], true) {
                return Err(at(format!("depth {} given twice", depth + 1)));
            }
        }
        Ok(())
    }
}

/// `[lo, hi)` of bin `b` (1-based) of an axis.
fn edges(axis: &Axis, b: usize) -> (f64, f64) {
    match &axis.edges {
        Some(e) => (e[b - 1], e[b]),
        None => {
            let w = (axis.high - axis.low) / axis.bins as f64;
            (axis.low + (b - 1) as f64 * w, axis.low + b as f64 * w)
        }
    }
}

impl Stage for MapsFromDqm {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_histograms(
            &inputs[0],
            "histograms",
            "DQM occupancy histograms (`dqm_root`, `dqm_dataframe`)",
        )?;
        if let Some(lumi) = inputs.get(1) {
            require_luminosity(lumi, "luminosity")?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: maps_schema(self.geometry()),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let geometry = self.geometry();
        let luminosity: Option<Luminosity> = match ctx.inputs.get(1) {
            Some(input) => Some(read_luminosity(input)?),
            None => None,
        };
        let input = &ctx.inputs[0];
        let n_channels = geometry.n_channels();
        let mut maps: BTreeMap<(i64, Option<i64>), Partial> = BTreeMap::new();
        let mut consistency = Consistency::default();
        let mut per_ls: Option<bool> = None;
        for batch in input.batches() {
            for h in read_histograms(&batch?, &input.name)? {
                let depth = self.mes.iter().position(|m| *m == h.me);
                let events = h.me == self.events_me;
                if (depth.is_none() && !events)
                    || !(self.runs.is_empty() || self.runs.contains(&h.run))
                {
                    continue;
                }
                let at = |why: String| {
                    StageError::data(format!(
                        "file `{}`, run {}{} ME `{}`: {why}",
                        h.file,
                        h.run,
                        h.ls.map_or(String::new(), |ls| format!(" LS {ls}")),
                        h.me
                    ))
                };
                consistency.check(&h).map_err(at)?;
                if *per_ls.get_or_insert(h.ls.is_some()) != h.ls.is_some() {
                    return Err(at(
                        "per-LS and per-run histograms mixed: give one kind (select runs or MEs)"
                            .into(),
                    ));
                }
                let partial = maps.entry((h.run, h.ls)).or_insert_with(|| Partial {
                    occupancy: vec![0.0; n_channels],
                    depths: vec![false; self.n_depth()],
                    events: None,
                });
                if events {
                    partial.events = Some(h.histogram.entries);
                }
                if let Some(depth) = depth {
                    self.add(&h, depth, partial, &at)?;
                }
            }
        }
        if maps.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no histogram of {:?} or `{}`{}",
                input.name,
                self.mes,
                self.events_me,
                if self.runs.is_empty() {
                    String::new()
                } else {
                    format!(" in runs {:?}", self.runs)
                }
            )));
        }
        let rows = self.rows(maps, luminosity.as_ref(), &input.name)?;
        ctx.reporter.info(&format!(
            "{} maps of {} channels ({}), {} runs",
            rows.len(),
            n_channels,
            geometry.describe(),
            rows.iter()
                .map(|r| r.fill)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        ));
        ctx.output
            .write("main", write_rows(&maps_schema(geometry), &rows)?)
    }
}

impl MapsFromDqm {
    /// The assembled maps as rows: per LS, `fill` is the run; per run,
    /// `fill` is 0 and `ls` the run. β_s is the recorded luminosity (or the
    /// events) relative to the run's (or sequence's) highest.
    fn rows(
        &self,
        maps: BTreeMap<(i64, Option<i64>), Partial>,
        luminosity: Option<&Luminosity>,
        input: &str,
    ) -> Result<Vec<MapRow>> {
        let mut rows = Vec::with_capacity(maps.len());
        let mut scale_by: Vec<f64> = Vec::with_capacity(maps.len());
        for ((run, ls), partial) in maps {
            let at = |why: String| {
                StageError::data(format!(
                    "input `{input}`, run {run}{}: {why}",
                    ls.map_or(String::new(), |ls| format!(" LS {ls}"))
                ))
            };
            if let Some(missing) = partial.depths.iter().position(|d| !d) {
                return Err(at(match self.layout() {
                    Layout::PerDepth => format!("no histogram of ME `{}`", self.mes[missing]),
                    Layout::Cube => format!("no histogram of ME `{}`", self.mes[0]),
                }));
            }
            let events = partial
                .events
                .ok_or_else(|| at(format!("no histogram of `{}` (events_me)", self.events_me)))?;
            if !(events >= 0.0 && events.fract() == 0.0) {
                return Err(at(format!(
                    "`{}` has {events} entries: events must be a whole number ≥ 0",
                    self.events_me
                )));
            }
            let beta_source = match (luminosity, ls) {
                (Some(l), Some(ls)) => l
                    .by_ls
                    .get(&(run, ls))
                    .map(|v| v.0)
                    .ok_or_else(|| at("not in the luminosity table".into()))?,
                _ => events,
            };
            scale_by.push(beta_source);
            rows.push(MapRow {
                case: None,
                fill: if ls.is_some() { run } else { 0 },
                ls: ls.unwrap_or(run),
                lumi: 0.0,
                events: events as i64,
                occupancy: partial.occupancy,
                target: None,
                injected: None,
                norm: None,
                median: None,
                expected: None,
            });
        }
        // β relative to the highest of each fill.
        let mut peak: BTreeMap<i64, f64> = BTreeMap::new();
        for (r, &v) in rows.iter().zip(&scale_by) {
            let p = peak.entry(r.fill).or_insert(0.0);
            *p = p.max(v);
        }
        for (r, v) in rows.iter_mut().zip(scale_by) {
            let p = peak[&r.fill];
            r.lumi = if p > 0.0 { v / p } else { 0.0 };
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqm::brilcalc;
    use crate::dqm::histogram::Histogram;
    use crate::dqm::tables::{histograms_batch, luminosity_batch};
    use crate::hcal::renormalize_occupancy::RenormalizeOccupancy;
    use crate::hcal::tables::{read_all_rows, read_geometry};
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;

    fn axis(bins: usize, low: f64, high: f64) -> Axis {
        Axis {
            bins,
            low,
            high,
            edges: None,
        }
    }

    /// The occupancy written at (iη, iφ from 1, depth from 1), LS `ls`.
    fn value(ieta: i64, iphi: usize, depth: usize, ls: i64) -> f64 {
        (1000 * ls + 100 * depth as i64 + 10 * (ieta + 5) + iphi as i64) as f64
    }

    /// A histogram row; `fill(global bin) -> value`.
    fn row(
        run: i64,
        ls: Option<i64>,
        me: &str,
        class: &str,
        axes: Vec<Axis>,
        entries: f64,
        fill: impl Fn(&[usize]) -> f64,
    ) -> HistogramRow {
        let sizes: Vec<usize> = axes.iter().map(|a| a.bins + 2).collect();
        let n: usize = sizes.iter().product();
        let contents = (0..n)
            .map(|g| {
                let mut rest = g;
                let idx: Vec<usize> = sizes
                    .iter()
                    .map(|s| {
                        let i = rest % s;
                        rest /= s;
                        i
                    })
                    .collect();
                fill(&idx)
            })
            .collect();
        HistogramRow {
            file: format!("run{run}.root"),
            run,
            ls,
            me: me.into(),
            histogram: Histogram {
                class: class.into(),
                axes,
                contents,
                entries,
                sum_w: 0.0,
                sumw2: vec![],
                bin_entries: None,
            },
        }
    }

    /// x: iη −2…2 (5 bins), y: iφ 1…3; in-range bins hold [`value`].
    fn depth_map(run: i64, ls: i64, depth: usize) -> HistogramRow {
        let axes = vec![axis(5, -2.5, 2.5), axis(3, 0.5, 3.5)];
        row(
            run,
            Some(ls),
            &format!("Hcal/depth{depth}"),
            "TH2F",
            axes,
            0.0,
            |i| {
                if (1..=5).contains(&i[0]) && (1..=3).contains(&i[1]) {
                    value(i[0] as i64 - 3, i[1], depth, ls)
                } else {
                    7.0 // flow: never read
                }
            },
        )
    }

    fn cube(run: i64, ls: i64) -> HistogramRow {
        let axes = vec![axis(5, -2.5, 2.5), axis(3, 0.5, 3.5), axis(4, 0.5, 4.5)];
        row(run, Some(ls), "Hcal/occupancy", "TH3F", axes, 0.0, |i| {
            if (1..=5).contains(&i[0]) && (1..=3).contains(&i[1]) && (1..=4).contains(&i[2]) {
                value(i[0] as i64 - 3, i[1], i[2], ls)
            } else {
                7.0
            }
        })
    }

    fn events(run: i64, ls: i64, n: f64) -> HistogramRow {
        row(
            run,
            Some(ls),
            "Hcal/events",
            "TH1F",
            vec![axis(1, 0.0, 1.0)],
            n,
            |_| 0.0,
        )
    }

    fn input(rows: &[HistogramRow], dir: &std::path::Path, name: &str) -> Input {
        input_from_batch(
            name,
            &histograms_batch(rows).unwrap(),
            &dir.join(format!("{name}.parquet")),
        )
        .unwrap()
    }

    fn per_depth() -> MapsFromDqm {
        MapsFromDqm {
            mes: vec!["Hcal/depth1".into(), "Hcal/depth2".into()],
            events_me: "Hcal/events".into(),
            ieta: Some([1, 2]),
            iphi: 3,
            ..Default::default()
        }
    }

    /// Every channel lands where its (iη, iφ, depth) says, from TH2s per
    /// depth and from a TH3 alike, in LS order whatever the input order;
    /// iη 0 is no channel; β from the events, or from the luminosity file.
    #[test]
    fn channels_land_by_ieta_iphi_and_depth_from_th2s_or_a_th3() {
        let dir = tempfile::tempdir().unwrap();
        let th2 = input(
            &[
                depth_map(7, 2, 2),
                depth_map(7, 2, 1),
                events(7, 2, 25.0),
                depth_map(7, 1, 1),
                depth_map(7, 1, 2),
                events(7, 1, 50.0),
            ],
            dir.path(),
            "th2",
        );
        let th3 = input(
            &[
                cube(7, 1),
                events(7, 1, 50.0),
                cube(7, 2),
                events(7, 2, 25.0),
            ],
            dir.path(),
            "th3",
        );
        let stage = per_depth();
        let maps = run_in_memory(&stage, std::slice::from_ref(&th2))
            .unwrap()
            .table("main");
        let geometry = read_geometry(&maps.schema(), "maps").unwrap();
        assert_eq!(geometry.shape, [4, 3, 2]);
        assert_eq!(geometry.cms, Some(CmsRegion { ieta: [1, 2] }));
        let maps_input = input_from_batch("maps", &maps, &dir.path().join("maps.parquet")).unwrap();
        let rows = read_all_rows(&maps_input, &geometry).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.fill, r.ls, r.events))
                .collect::<Vec<_>>(),
            [(7, 1, 50), (7, 2, 25)]
        );
        assert_eq!(rows.iter().map(|r| r.lumi).collect::<Vec<_>>(), [1.0, 0.5]);
        let g = geometry.geometry();
        for r in &rows {
            for (ring, ieta) in [-2i64, -1, 1, 2].into_iter().enumerate() {
                for iphi in 0..3 {
                    for depth in 0..2 {
                        let c = g.index(crate::hcal::geometry::Channel {
                            ieta: ring,
                            iphi,
                            depth,
                        });
                        assert_eq!(
                            r.occupancy[c],
                            value(ieta, iphi + 1, depth + 1, r.ls),
                            "iη {ieta} iφ {iphi} depth {depth}"
                        );
                    }
                }
            }
        }
        let cube_stage = MapsFromDqm {
            mes: vec!["Hcal/occupancy".into()],
            depths: Some(2),
            ..per_depth()
        };
        let from_cube = run_in_memory(&cube_stage, &[th3]).unwrap().table("main");
        assert_eq!(from_cube, maps, "a TH3 gives the maps of one TH2 per depth");
        // The family's next stage reads them.
        run_in_memory(&RenormalizeOccupancy::default(), &[maps_input]).unwrap();
        // β from the recorded luminosity.
        let lumi = brilcalc::parse(
            "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n\
             7:100,1:1,t,STABLE BEAMS,6800,1,0.2,30,HFOC\n7:100,2:2,t,STABLE BEAMS,6800,1,0.8,30,HFOC\n",
        )
        .unwrap();
        let lumi = input_from_batch(
            "lumi",
            &luminosity_batch(&lumi).unwrap(),
            &dir.path().join("l.parquet"),
        )
        .unwrap();
        let with_lumi = run_in_memory(&stage, &[th2, lumi]).unwrap().table("main");
        let beta = crate::hcal::tables::f64_column(&with_lumi, "lumi");
        assert_eq!(beta, [0.25, 1.0]);
    }

    /// What does not make a map is refused, naming file or run, LS and ME.
    #[test]
    fn incomplete_or_misshapen_histograms_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let message = |stage: &MapsFromDqm, rows: &[HistogramRow]| {
            run_in_memory(stage, &[input(rows, dir.path(), "h")])
                .unwrap_err()
                .to_string()
        };
        let stage = per_depth();
        let e = message(&stage, &[depth_map(7, 1, 1), events(7, 1, 5.0)]);
        assert!(e.contains("run 7 LS 1") && e.contains("Hcal/depth2"), "{e}");
        let e = message(&stage, &[depth_map(7, 1, 1), depth_map(7, 1, 2)]);
        assert!(e.contains("Hcal/events"), "{e}");
        let mut shifted = depth_map(7, 1, 1);
        shifted.histogram.axes[0] = axis(5, 0.0, 5.0);
        let e = message(&stage, &[shifted, depth_map(7, 1, 2), events(7, 1, 5.0)]);
        assert!(
            e.contains("run7.root") && e.contains("no bin centred on iη -2"),
            "{e}"
        );
        let e = message(
            &MapsFromDqm {
                iphi: 72,
                ..per_depth()
            },
            &[depth_map(7, 1, 1)],
        );
        assert!(e.contains("3 iφ bins"), "{e}");
        let mut run_level = depth_map(8, 1, 1);
        run_level.ls = None;
        let e = message(&stage, &[depth_map(7, 1, 1), run_level]);
        assert!(e.contains("mixed"), "{e}");
        let e = message(
            &MapsFromDqm {
                mes: vec!["Hcal/occupancy".into()],
                depths: Some(2),
                ..per_depth()
            },
            &[depth_map(7, 1, 1), events(7, 1, 5.0)],
        );
        assert!(e.contains("no histogram of"), "{e}");
        let e = message(
            &stage,
            &[events(7, 1, 2.5), depth_map(7, 1, 1), depth_map(7, 1, 2)],
        );
        assert!(e.contains("whole number"), "{e}");
        for (bad, param) in [
            (
                MapsFromDqm {
                    mes: vec![],
                    ..per_depth()
                },
                "mes",
            ),
            (
                MapsFromDqm {
                    events_me: String::new(),
                    ..per_depth()
                },
                "events_me",
            ),
            (
                MapsFromDqm {
                    depths: Some(3),
                    ..per_depth()
                },
                "depths",
            ),
            (
                MapsFromDqm {
                    ieta: Some([0, 16]),
                    ..per_depth()
                },
                "ieta",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().as_param().unwrap().0, param);
        }
    }
}
