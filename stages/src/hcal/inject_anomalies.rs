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
}

impl Anomaly {
    /// Checks the factor; errors name their key in the case's block.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            Anomaly::Degraded { factor } => factor > 0.0 && factor < 1.0,
            Anomaly::NoisyHot { factor } => factor > 1.0 && factor.is_finite(),
            _ => true,
        };
        if !ok {
            return bad_param(
                "factor",
                "degraded needs 0 < factor < 1, noisy_hot factor > 1",
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
        }
    }

    /// The anomalous value of a channel with healthy value `h` in an LS of
    /// `xi` events, or `None` where this anomaly cannot occur (Eq. 10).
    pub fn apply(&self, h: f64, xi: f64) -> Option<f64> {
        match *self {
            Anomaly::Dead => (h > 0.0).then_some(0.0),
            Anomaly::Degraded { factor } => (h > 0.0).then(|| (factor * h).round()),
            Anomaly::NoisyHot { factor } => {
                (h > 0.0 && (factor * h).round() <= xi).then(|| (factor * h).round())
            }
            Anomaly::FullyHot => (h < xi).then_some(xi),
        }
    }
}

/// Injects anomalies into copies of the input maps, one copy per case.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InjectAnomalies {
    /// The cases (the paper's Table 7: degraded 0.8/0.6/0.4/0.2, dead,
    /// noisy hot ×2, fully hot), each `{type: dead | degraded | noisy_hot |
    /// fully_hot, factor: R_D}`.
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

/// Where anomalies go in one fill: (last LS index of the window, channels).
pub type Placement = Vec<(usize, Vec<usize>)>;

impl InjectAnomalies {
    /// Windows and channels for a fill of `n_ls` maps.
    pub fn placement(&self, geometry: &MapGeometry, fill: i64, n_ls: usize) -> Result<Placement> {
        let t = self.window;
        // Window k occupies slot [k·2T, k·2T + T) plus a T gap, shifted at
        // random inside its slot: a scoring window never sees two targets.
        let slots = n_ls / (2 * t);
        if slots < self.targets_per_fill {
            return Err(StageError::data(format!(
                "fill {fill}: {n_ls} LS hold at most {slots} anomalous windows of {t} LS, {} asked (`targets_per_fill`)",
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
            let start = slot * 2 * t + rng.random_range(0..=t);
            let mut channels: Vec<usize> =
                sample(&mut rng, g.n_channels(), self.channels.min(g.n_channels())).into_vec();
            for r in sample(&mut rng, g.n_rbx(), self.rbxes.min(g.n_rbx())) {
                channels.extend((0..g.n_channels()).filter(|&c| rbx_map[c] == r));
            }
            channels.sort_unstable();
            channels.dedup();
            placement.push((start + t - 1, channels));
        }
        Ok(placement)
    }

    /// The maps of one fill with `case` injected at `placement`.
    pub fn inject(&self, fill: &[MapRow], case: &Anomaly, placement: &Placement) -> Vec<MapRow> {
        let n = fill[0].occupancy.len();
        fill.iter()
            .enumerate()
            .map(|(s, row)| {
                let mut out = row.clone();
                let mut injected = vec![false; n];
                let mut target = false;
                for (last, channels) in placement {
                    if s + self.window > *last && s <= *last {
                        target |= s == *last;
                        for &c in channels {
                            if let Some(v) = case.apply(row.occupancy[c], row.events as f64) {
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
        let placement: Placement = vec![(3, vec![0, 1, 2])];
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
            assert!(w[1].0 >= w[0].0 + stage.window, "{:?}", (w[0].0, w[1].0));
        }
        let rbx = geometry.geometry().rbx_map();
        for (last, channels) in &a {
            assert!(*last >= stage.window - 1 && *last < 150);
            // One whole RBX (76 barrel channels) plus up to 20 single channels.
            assert!(
                channels.len() >= 76 && channels.len() <= 96,
                "{}",
                channels.len()
            );
            let mut per_rbx = std::collections::HashMap::new();
            for &c in channels {
                *per_rbx.entry(rbx[c]).or_insert(0) += 1;
            }
            assert!(per_rbx.values().any(|&n| n == 76));
        }
        let err = stage.placement(&geometry, 3, 30).unwrap_err().to_string();
        assert!(err.contains("targets_per_fill"), "{err}");
    }

    #[test]
    fn bad_factors_are_refused() {
        let stage = InjectAnomalies {
            cases: vec![Anomaly::Dead, Anomaly::Degraded { factor: 1.2 }],
            ..Default::default()
        };
        let err = stage.validate().unwrap_err().to_string();
        assert!(err.contains("cases[1].factor"), "{err}");
    }
}
