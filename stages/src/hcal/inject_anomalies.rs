//! `inject_anomalies`: the paper's synthetic channel anomalies (Eqs. 10-11)
//! injected into healthy maps, with the truth as columns.
//!
//! Per fill, `targets_per_fill` time windows of `window` LS are chosen at
//! random (separated so that no scoring window holds two), and for each a
//! set of channels: `channels` single channels and `rbxes` whole readout
//! boxes. The same windows and channels serve every case (the paper keeps
//! the spatial locations for all types), and the anomaly persists on each LS
//! of the window. Every case writes its own copy of the input maps:
//! - dead: γ_a = 0 (R_D = 0),
//! - degraded: γ_a = round(R_D γ_h), 0 < R_D < 1,
//! - noisy hot: γ_a = round(R_D γ_h), R_D > 1,
//! - fully hot: γ_a = ξ.
//!
//! A channel is only injected where the anomaly is one (Eq. 10): γ_h > 0 for
//! dead and degraded, R_D γ_h ≤ ξ for noisy hot, γ_h < ξ for fully hot;
//! the others keep their value and are not marked (paper Fig. 13).
//!
//! Beside the paper's, anomalies that need space or time (ours, issue 29):
//! - rbx_half_noisy: half the channels of each injected RBX (every other
//!   channel) noisy hot, γ_a = round(R γ_h) (1.3: a partial noise source),
//! - rbx_drop: every channel of each injected RBX degraded by R (0.9: a
//!   10 % gain loss of the box),
//! - ramp: the channels degrade linearly from 1 to R over `ls` LS ending at
//!   the target LS (a slow loss a model that adapts may follow),
//! - intermittent: each channel dead on a random `fraction` of the LS of
//!   the window (drawn per channel and LS, seeded), marked on all of them,
//! - hot_high_lumi: noisy hot by R only on LS whose luminosity exceeds
//!   `lumi_above` (the `lumi` column), marked only there.
//!
//! The RBX kinds touch only the injected RBXes; the others every placed
//! channel, as the paper's.

use arrow::datatypes::SchemaRef;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param, within};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::tables::{
    MapRow, check_maps, example_maps_schema, for_each_fill, injection_fields, with_fields,
    write_rows,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// One anomaly type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Anomaly {
    /// γ_a = 0.
    Dead,
    /// γ_a = round(factor · γ_h), factor in (0, 1).
    Degraded { factor: f64 },
    /// γ_a = round(factor · γ_h) ≤ ξ, factor > 1 (the paper: 2).
    NoisyHot { factor: f64 },
    /// γ_a = ξ.
    FullyHot,
    /// Every other channel of each injected RBX noisy hot by `factor` > 1.
    RbxHalfNoisy { factor: f64 },
    /// Every channel of each injected RBX degraded by `factor` in (0, 1).
    RbxDrop { factor: f64 },
    /// Degraded from 1 down to `to` in (0, 1), linearly over `ls` LS ending
    /// at the target LS.
    Ramp { to: f64, ls: usize },
    /// Dead on a random `fraction` in (0, 1] of the window's LS.
    Intermittent { fraction: f64 },
    /// Noisy hot by `factor` > 1 on LS with luminosity above `lumi_above`.
    HotHighLumi { factor: f64, lumi_above: f64 },
}

impl Anomaly {
    /// Checks the factor; errors name their key in the case's block.
    pub fn validate(&self) -> Result<()> {
        let below_one = |f: f64| f > 0.0 && f < 1.0;
        let above_one = |f: f64| f > 1.0 && f.is_finite();
        let (ok, key, why) = match *self {
            Anomaly::Degraded { factor } | Anomaly::RbxDrop { factor } => {
                (below_one(factor), "factor", "needs 0 < factor < 1")
            }
            Anomaly::NoisyHot { factor } | Anomaly::RbxHalfNoisy { factor } => {
                (above_one(factor), "factor", "needs factor > 1")
            }
            Anomaly::Ramp { to, ls } => {
                if ls == 0 {
                    return bad_param("ls", "a ramp lasts at least 1 LS");
                }
                (below_one(to), "to", "needs 0 < to < 1")
            }
            Anomaly::Intermittent { fraction } => (
                fraction > 0.0 && fraction <= 1.0,
                "fraction",
                "needs 0 < fraction ≤ 1",
            ),
            Anomaly::HotHighLumi { factor, lumi_above } => {
                if !(lumi_above >= 0.0 && lumi_above.is_finite()) {
                    return bad_param("lumi_above", "needs a luminosity ≥ 0");
                }
                (above_one(factor), "factor", "needs factor > 1")
            }
            Anomaly::Dead | Anomaly::FullyHot => (true, "", ""),
        };
        if !ok {
            return bad_param(
                key,
                format!(
                    "{why} ({}: degraded, rbx_drop, ramp below 1; noisy_hot, rbx_half_noisy, hot_high_lumi above)",
                    self.name()
                ),
            );
        }
        Ok(())
    }

    /// The case name written in the `case` column.
    pub fn name(&self) -> String {
        match self {
            Anomaly::Dead => "dead".into(),
            Anomaly::Degraded { factor } => format!("degraded_{factor}"),
            Anomaly::NoisyHot { factor } => format!("noisy_hot_{factor}"),
            Anomaly::FullyHot => "fully_hot".into(),
            Anomaly::RbxHalfNoisy { factor } => format!("rbx_half_noisy_{factor}"),
            Anomaly::RbxDrop { factor } => format!("rbx_drop_{factor}"),
            Anomaly::Ramp { to, ls } => format!("ramp_{to}_{ls}"),
            Anomaly::Intermittent { fraction } => format!("intermittent_{fraction}"),
            Anomaly::HotHighLumi { factor, lumi_above } => {
                format!("hot_high_lumi_{factor}_{lumi_above}")
            }
        }
    }

    /// LS the anomaly lasts, ending at the target LS, for scoring windows
    /// of `window` LS.
    pub fn span(&self, window: usize) -> usize {
        match *self {
            Anomaly::Ramp { ls, .. } => ls.max(window),
            _ => window,
        }
    }

    /// Whether it touches only the injected RBXes (not the single channels).
    pub fn rbx_only(&self) -> bool {
        matches!(self, Anomaly::RbxHalfNoisy { .. } | Anomaly::RbxDrop { .. })
    }

    /// The anomalous value of a channel with healthy value `h` in an LS of
    /// `xi` events, or `None` where this anomaly cannot occur (Eq. 10).
    /// For the kinds that change along their span, see [`Anomaly::at`].
    pub fn apply(&self, h: f64, xi: f64) -> Option<f64> {
        match *self {
            Anomaly::Dead => (h > 0.0).then_some(0.0),
            Anomaly::Degraded { factor } | Anomaly::RbxDrop { factor } => {
                (h > 0.0).then(|| (factor * h).round())
            }
            Anomaly::NoisyHot { factor }
            | Anomaly::RbxHalfNoisy { factor }
            | Anomaly::HotHighLumi { factor, .. } => {
                (h > 0.0 && (factor * h).round() <= xi).then(|| (factor * h).round())
            }
            Anomaly::FullyHot => (h < xi).then_some(xi),
            Anomaly::Ramp { to, .. } => Anomaly::Degraded { factor: to }.apply(h, xi),
            Anomaly::Intermittent { .. } => Anomaly::Dead.apply(h, xi),
        }
    }

    /// The value on LS `k` of the anomaly's `span` LS (the last is the
    /// target), with the LS's luminosity and a uniform draw in [0, 1).
    pub fn at(&self, h: f64, xi: f64, (k, span): (usize, usize), lumi: f64, u: f64) -> Option<f64> {
        match *self {
            Anomaly::Ramp { to, .. } => {
                let factor = 1.0 - (1.0 - to) * (k + 1) as f64 / span as f64;
                (h > 0.0).then(|| (factor * h).round())
            }
            Anomaly::Intermittent { fraction } => {
                (h > 0.0).then_some(if u < fraction { 0.0 } else { h })
            }
            Anomaly::HotHighLumi { lumi_above, .. } if lumi <= lumi_above => None,
            _ => self.apply(h, xi),
        }
    }
}

/// Injects anomalies into copies of the input maps, one copy per case.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InjectAnomalies {
    /// The cases (the paper's Table 7: degraded 0.8/0.6/0.4/0.2, dead,
    /// noisy hot ×2, fully hot), each `{type: dead | degraded | noisy_hot |
    /// fully_hot, factor: R_D}`, or one of ours: `{type: rbx_half_noisy,
    /// factor}`, `{type: rbx_drop, factor}`, `{type: ramp, to, ls}`,
    /// `{type: intermittent, fraction}`, `{type: hot_high_lumi, factor,
    /// lumi_above}`.
    pub cases: Vec<Anomaly>,
    /// LS an anomaly persists: the scoring window T.
    pub window: usize,
    /// Anomalous windows per fill.
    pub targets_per_fill: usize,
    /// Single channels per window, chosen uniformly.
    pub channels: usize,
    /// Whole RBXes per window.
    pub rbxes: usize,
    /// Seed of the windows and channels.
    pub seed: u64,
}

impl Default for InjectAnomalies {
    fn default() -> Self {
        Self {
            cases: vec![
                Anomaly::Degraded { factor: 0.8 },
                Anomaly::Degraded { factor: 0.6 },
                Anomaly::Degraded { factor: 0.4 },
                Anomaly::Degraded { factor: 0.2 },
                Anomaly::Dead,
                Anomaly::NoisyHot { factor: 2.0 },
                Anomaly::FullyHot,
            ],
            window: 5,
            targets_per_fill: 4,
            channels: 20,
            rbxes: 1,
            seed: 7,
        }
    }
}

impl StageConfig for InjectAnomalies {
    const KIND: &'static str = "inject_anomalies";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Healthy LS maps -> one copy per anomaly case (dead, degraded, noisy hot, fully hot) on chosen windows, channels and RBXes, with the truth mask";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "maps";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_maps_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.cases.is_empty() {
            return bad_param("cases", "give at least one case");
        }
        for (i, c) in self.cases.iter().enumerate() {
            within(&format!("cases[{i}]"), c.validate())?;
        }
        let mut names: Vec<String> = self.cases.iter().map(Anomaly::name).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return bad_param("cases", "a case is listed twice");
        }
        if self.window == 0 {
            return bad_param("window", "must be ≥ 1");
        }
        if self.channels == 0 && self.rbxes == 0 {
            return bad_param("channels", "inject into at least one channel or RBX");
        }
        Ok(())
    }
}

/// Salt of a fill's placement stream.
const PLACE_SALT: u64 = 0x494e_4a45_4354;
/// Salt of the intermittent anomaly's draws.
const DRAW_SALT: u64 = 0x494e_5445_524d;

/// One anomalous window of a fill: where it ends and which channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// LS index (in the fill) of the target LS, the anomaly's last.
    pub last: usize,
    /// Single channels, chosen uniformly.
    pub singles: Vec<usize>,
    /// The channels of each injected RBX, in channel order.
    pub rbxes: Vec<Vec<usize>>,
}

impl Target {
    /// The channels `anomaly` touches, sorted: the RBX kinds only their
    /// RBXes (every other channel for the half-RBX noise), the others all.
    pub fn channels(&self, anomaly: &Anomaly) -> Vec<usize> {
        let mut out: Vec<usize> = match anomaly {
            Anomaly::RbxHalfNoisy { .. } => self
                .rbxes
                .iter()
                .flat_map(|r| r.iter().step_by(2).copied())
                .collect(),
            Anomaly::RbxDrop { .. } => self.rbxes.concat(),
            _ => self
                .singles
                .iter()
                .copied()
                .chain(self.rbxes.iter().flatten().copied())
                .collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Where anomalies go in one fill.
pub type Placement = Vec<Target>;

impl InjectAnomalies {
    /// LS the longest case lasts.
    fn span(&self) -> usize {
        self.cases
            .iter()
            .map(|c| c.span(self.window))
            .max()
            .unwrap_or(self.window)
    }

    /// Windows and channels for a fill of `n_ls` maps.
    pub fn placement(&self, geometry: &MapGeometry, fill: i64, n_ls: usize) -> Result<Placement> {
        let t = self.window;
        let span = self.span();
        // Target k's anomaly occupies `span` LS of slot [k·L, (k+1)·L),
        // L = span + T, shifted at random by up to T inside its slot: a
        // scoring window never sees two targets (L = 2T for the paper's).
        let slot_len = span + t;
        let slots = n_ls / slot_len;
        if slots < self.targets_per_fill {
            return Err(StageError::data(format!(
                "fill {fill}: {n_ls} LS hold at most {slots} anomalous windows of {span} LS, {} asked (`targets_per_fill`)",
                self.targets_per_fill
            )));
        }
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ PLACE_SALT ^ (fill as u64).rotate_left(24));
        let g = geometry.geometry();
        let rbx_map = g.rbx_map();
        let mut chosen: Vec<usize> = sample(&mut rng, slots, self.targets_per_fill).into_vec();
        chosen.sort_unstable();
        let mut placement = Vec::new();
        for slot in chosen {
            let start = slot * slot_len + rng.random_range(0..=t);
            let singles: Vec<usize> =
                sample(&mut rng, g.n_channels(), self.channels.min(g.n_channels())).into_vec();
            let rbxes = sample(&mut rng, g.n_rbx(), self.rbxes.min(g.n_rbx()))
                .into_iter()
                .map(|r| (0..g.n_channels()).filter(|&c| rbx_map[c] == r).collect())
                .collect();
            placement.push(Target {
                last: start + span - 1,
                singles,
                rbxes,
            });
        }
        Ok(placement)
    }

    /// The maps of one fill with `case` injected at `placement`.
    pub fn inject(&self, fill: &[MapRow], case: &Anomaly, placement: &Placement) -> Vec<MapRow> {
        let n = fill[0].occupancy.len();
        let span = case.span(self.window);
        let mut draws = ChaCha8Rng::seed_from_u64(
            self.seed ^ DRAW_SALT ^ (fill[0].fill as u64).rotate_left(24),
        );
        let targets: Vec<(usize, Vec<usize>)> = placement
            .iter()
            .map(|t| (t.last, t.channels(case)))
            .collect();
        fill.iter()
            .enumerate()
            .map(|(s, row)| {
                let mut out = row.clone();
                let mut injected = vec![false; n];
                let mut target = false;
                for (last, channels) in &targets {
                    if s + span > *last && s <= *last {
                        target |= s == *last;
                        let k = s + span - 1 - last;
                        for &c in channels {
                            let u: f64 = draws.random();
                            if let Some(v) =
                                case.at(row.occupancy[c], row.events as f64, (k, span), row.lumi, u)
                            {
                                out.occupancy[c] = v;
                                injected[c] = true;
                            }
                        }
                    }
                }
                out.case = Some(case.name());
                out.target = Some(target);
                out.injected = Some(injected);
                // Any renormalization of the healthy maps no longer holds.
                out.norm = None;
                out.median = None;
                out
            })
            .collect()
    }
}

impl Stage for InjectAnomalies {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        check_maps(&inputs[0], "maps")?;
        if inputs[0].index_of("case").is_ok() || inputs[0].index_of("norm").is_ok() {
            return Err(StageError::data(
                "input `maps` already has `case` or `norm` columns: inject into healthy maps straight from `lumi_maps`, then renormalize",
            ));
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: with_fields(&inputs[0], injection_fields()),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let geometry = check_maps(&input.schema, &input.name)?;
        let schema = with_fields(&input.schema, injection_fields());
        let (mut targets, mut marked) = (0usize, vec![0usize; self.cases.len()]);
        for_each_fill(input, &geometry, |fill| {
            let placement = self.placement(&geometry, fill[0].fill, fill.len())?;
            targets += placement.len();
            for (k, case) in self.cases.iter().enumerate() {
                let rows = self.inject(&fill, case, &placement);
                marked[k] += rows
                    .iter()
                    .filter(|r| r.target == Some(true))
                    .map(|r| {
                        r.injected
                            .as_ref()
                            .map_or(0, |m| m.iter().filter(|&&b| b).count())
                    })
                    .sum::<usize>();
                ctx.output.write("main", write_rows(&schema, &rows)?)?;
            }
            Ok(())
        })?;
        ctx.reporter.info(&format!(
            "{targets} anomalous windows; injected channels on target LS per case: {}",
            self.cases
                .iter()
                .zip(&marked)
                .map(|(c, m)| format!("{} {m}", c.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::geometry::Subdetector;

    fn row(ls: i64, occupancy: Vec<f64>, events: i64) -> MapRow {
        MapRow {
            case: None,
            fill: 1,
            ls,
            lumi: 1.0,
            events,
            occupancy,
            target: None,
            injected: None,
            norm: None,
            median: None,
            expected: None,
        }
    }

    #[test]
    fn each_type_by_hand() {
        // Eq. 10-11 on γ_h = 10 in an LS of 15 events.
        assert_eq!(Anomaly::Dead.apply(10.0, 15.0), Some(0.0));
        assert_eq!(
            Anomaly::Degraded { factor: 0.6 }.apply(10.0, 15.0),
            Some(6.0)
        );
        assert_eq!(
            Anomaly::Degraded { factor: 0.25 }.apply(10.0, 15.0),
            Some(3.0)
        );
        assert_eq!(Anomaly::FullyHot.apply(10.0, 15.0), Some(15.0));
        // Noisy hot ×2 would exceed ξ: not an anomaly of this type here.
        assert_eq!(Anomaly::NoisyHot { factor: 2.0 }.apply(10.0, 15.0), None);
        assert_eq!(
            Anomaly::NoisyHot { factor: 2.0 }.apply(7.0, 15.0),
            Some(14.0)
        );
        // Nothing to kill in an empty channel, nothing to heat in a full one.
        assert_eq!(Anomaly::Dead.apply(0.0, 15.0), None);
        assert_eq!(Anomaly::FullyHot.apply(15.0, 15.0), None);
    }

    #[test]
    fn injection_persists_over_the_window_and_marks_exactly_the_changed_channels() {
        let stage = InjectAnomalies {
            window: 2,
            ..Default::default()
        };
        let fill: Vec<MapRow> = (1..=5)
            .map(|ls| row(ls, vec![4.0, 0.0, 6.0, 9.0], 10))
            .collect();
        let placement: Placement = vec![Target {
            last: 3,
            singles: vec![0, 1, 2],
            rbxes: vec![],
        }];
        let out = stage.inject(&fill, &Anomaly::NoisyHot { factor: 2.0 }, &placement);
        let marks: Vec<Vec<bool>> = out.iter().map(|r| r.injected.clone().unwrap()).collect();
        let none = vec![false; 4];
        // Window = LS indices 2 and 3; channel 1 is empty, 2 would exceed ξ.
        assert_eq!(
            marks,
            vec![
                none.clone(),
                none.clone(),
                vec![true, false, false, false],
                vec![true, false, false, false],
                none
            ]
        );
        assert_eq!(out[2].occupancy, vec![8.0, 0.0, 6.0, 9.0]);
        assert_eq!(out[0].occupancy, fill[0].occupancy);
        let targets: Vec<bool> = out.iter().map(|r| r.target.unwrap()).collect();
        assert_eq!(targets, [false, false, false, true, false]);
        assert!(out.iter().all(|r| r.case.as_deref() == Some("noisy_hot_2")));
    }

    #[test]
    fn placement_is_seeded_separated_and_includes_whole_rbxes() {
        let stage = InjectAnomalies::default();
        let geometry = MapGeometry::of(Subdetector::Barrel);
        let a = stage.placement(&geometry, 3, 150).unwrap();
        assert_eq!(a, stage.placement(&geometry, 3, 150).unwrap());
        assert_ne!(a, stage.placement(&geometry, 4, 150).unwrap());
        assert_eq!(a.len(), 4);
        for w in a.windows(2) {
            // The scoring window of a target holds no LS of another anomaly.
            assert!(
                w[1].last >= w[0].last + stage.window,
                "{:?}",
                (w[0].last, w[1].last)
            );
        }
        let rbx = geometry.geometry().rbx_map();
        for t in &a {
            let (last, channels) = (&t.last, t.channels(&Anomaly::Dead));
            assert!(*last >= stage.window - 1 && *last < 150);
            // One whole RBX (76 barrel channels) plus up to 20 single channels.
            assert!(
                channels.len() >= 76 && channels.len() <= 96,
                "{}",
                channels.len()
            );
            let mut per_rbx = std::collections::HashMap::new();
            for &c in &channels {
                *per_rbx.entry(rbx[c]).or_insert(0) += 1;
            }
            assert!(per_rbx.values().any(|&n| n == 76));
        }
        let err = stage.placement(&geometry, 3, 30).unwrap_err().to_string();
        assert!(err.contains("targets_per_fill"), "{err}");
    }

    /// A fill of `n` LS of 8 channels with γ = 10 of ξ = 100, luminosity
    /// falling from 1 by 0.1 per LS.
    fn fill_of(n: i64) -> Vec<MapRow> {
        (1..=n)
            .map(|ls| {
                let mut r = row(ls, vec![10.0; 8], 100);
                r.lumi = 1.0 - 0.1 * (ls - 1) as f64;
                r
            })
            .collect()
    }

    fn one_target(last: usize) -> Placement {
        vec![Target {
            last,
            singles: vec![0],
            rbxes: vec![vec![4, 5, 6, 7]],
        }]
    }

    #[test]
    fn rbx_kinds_touch_only_their_rbx_and_the_half_is_every_other_channel() {
        let stage = InjectAnomalies {
            window: 2,
            ..Default::default()
        };
        let fill = fill_of(4);
        let half = stage.inject(
            &fill,
            &Anomaly::RbxHalfNoisy { factor: 1.3 },
            &one_target(2),
        );
        assert_eq!(
            half[2].occupancy,
            vec![10.0, 10.0, 10.0, 10.0, 13.0, 10.0, 13.0, 10.0]
        );
        let marked: Vec<usize> = (0..8)
            .filter(|&c| half[2].injected.as_ref().unwrap()[c])
            .collect();
        assert_eq!(marked, [4, 6]);
        let drop = stage.inject(&fill, &Anomaly::RbxDrop { factor: 0.9 }, &one_target(2));
        assert_eq!(
            drop[1].occupancy,
            vec![10.0, 10.0, 10.0, 10.0, 9.0, 9.0, 9.0, 9.0]
        );
        assert_eq!(drop[0].occupancy, fill[0].occupancy);
        assert_eq!(drop[3].occupancy, fill[3].occupancy);
    }

    #[test]
    fn a_ramp_degrades_linearly_to_its_end_over_its_own_span() {
        let ramp = Anomaly::Ramp { to: 0.7, ls: 3 };
        let stage = InjectAnomalies {
            window: 2,
            cases: vec![Anomaly::Dead, ramp],
            ..Default::default()
        };
        assert_eq!(stage.span(), 3);
        let fill = fill_of(6);
        let out = stage.inject(&fill, &ramp, &one_target(4));
        // LS indices 2, 3, 4: factors 0.9, 0.8, 0.7 of γ = 10.
        let c0: Vec<f64> = out.iter().map(|r| r.occupancy[0]).collect();
        assert_eq!(c0, [10.0, 10.0, 9.0, 8.0, 7.0, 10.0]);
        assert!(out[4].target.unwrap() && !out[3].target.unwrap());
        assert_eq!(ramp.name(), "ramp_0.7_3");
        // Slots hold the longest case: span 3 + window 2 per target.
        let geometry = MapGeometry::of(Subdetector::Forward);
        let p = InjectAnomalies {
            targets_per_fill: 4,
            ..stage.clone()
        }
        .placement(&geometry, 1, 20)
        .unwrap();
        for w in p.windows(2) {
            // Spans never overlap (so no scoring window sees two anomalies).
            assert!(w[1].last >= w[0].last + 3, "{:?}", (w[0].last, w[1].last));
        }
    }

    #[test]
    fn intermittent_channels_are_marked_all_window_and_dead_on_some_ls() {
        let case = Anomaly::Intermittent { fraction: 0.3 };
        let stage = InjectAnomalies {
            window: 20,
            ..Default::default()
        };
        let fill = fill_of(20);
        let out = stage.inject(&fill, &case, &one_target(19));
        let (mut dead, mut n) = (0, 0);
        for r in &out {
            let mask = r.injected.as_ref().unwrap();
            assert_eq!(
                mask.iter().filter(|&&b| b).count(),
                5,
                "every placed channel"
            );
            for c in [0, 4, 5, 6, 7] {
                n += 1;
                dead += usize::from(r.occupancy[c] == 0.0);
                assert!(r.occupancy[c] == 0.0 || r.occupancy[c] == 10.0);
            }
        }
        // 100 draws at 0.3: between 15 and 45 dead.
        assert!((15..=45).contains(&dead), "{dead} of {n}");
        assert_eq!(out, stage.inject(&fill, &case, &one_target(19)), "seeded");
    }

    #[test]
    fn hot_at_high_luminosity_only_where_the_luminosity_is_high() {
        let case = Anomaly::HotHighLumi {
            factor: 2.0,
            lumi_above: 0.75,
        };
        let stage = InjectAnomalies {
            window: 5,
            ..Default::default()
        };
        // Luminosity 1.0, 0.9, 0.8, 0.7, 0.6 on the window's LS.
        let out = stage.inject(&fill_of(5), &case, &one_target(4));
        let c0: Vec<f64> = out.iter().map(|r| r.occupancy[0]).collect();
        assert_eq!(c0, [20.0, 20.0, 20.0, 10.0, 10.0]);
        let marked: Vec<bool> = out
            .iter()
            .map(|r| r.injected.as_ref().unwrap()[0])
            .collect();
        assert_eq!(marked, [true, true, true, false, false]);
    }

    #[test]
    fn bad_factors_are_refused() {
        let stage = InjectAnomalies {
            cases: vec![Anomaly::Dead, Anomaly::Degraded { factor: 1.2 }],
            ..Default::default()
        };
        let err = stage.validate().unwrap_err().to_string();
        assert!(err.contains("cases[1].factor"), "{err}");
        for (bad, key) in [
            (Anomaly::RbxDrop { factor: 1.1 }, "factor"),
            (Anomaly::Ramp { to: 0.7, ls: 0 }, "ls"),
            (Anomaly::Ramp { to: 1.5, ls: 30 }, "to"),
            (Anomaly::Intermittent { fraction: 0.0 }, "fraction"),
            (
                Anomaly::HotHighLumi {
                    factor: 2.0,
                    lumi_above: -1.0,
                },
                "lumi_above",
            ),
        ] {
            let stage = InjectAnomalies {
                cases: vec![bad],
                ..Default::default()
            };
            let err = stage.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("cases[0].{key}")), "{err}");
        }
    }
}
