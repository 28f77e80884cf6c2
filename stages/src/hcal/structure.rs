//! HCAL's structure beside the luminosity, for the generated maps of
//! `lumi_maps` (issue 29): RBX gain drift, noise bursts, per-channel pile-up
//! response, prescale changes, a counts scale and dead channels, every
//! effect off by default. Its random streams are its own, so switching an
//! effect on leaves the plain generator's draws where they were.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, bad_param};
use crate::hcal::geometry::MapGeometry;

/// HCAL's structure beside the luminosity, every effect off by default (so
/// maps made before it stay the same, to the byte). Ours, after how HCAL
/// behaves (readout boxes share electronics and a gain; noise comes in
/// bursts of an RBX; a channel's occupancy grows with pile-up at its own
/// pace; the trigger's prescale changes the recorded events, not the
/// rates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Structure {
    /// RBX gain drift: every RBX's log-gain follows an AR(1) process along
    /// the fill with this stationary standard deviation (0: off; issue 29
    /// suggests 0.1-0.2). A channel's hit probability is multiplied by
    /// exp(log-gain).
    pub rbx_gain_sigma: f64,
    /// Lag-1 correlation ρ of the gain drift from LS to LS.
    pub rbx_gain_rho: f64,
    /// Standard deviation of a per-fill, per-RBX log-gain offset (0: off).
    pub rbx_fill_offset: f64,
    /// Probability per LS and RBX of a noise burst (0: off).
    pub burst_probability: f64,
    /// A burst adds a hit probability per event drawn log-uniformly in
    /// `[min, max]`…
    pub burst_rate: [f64; 2],
    /// …to a fraction of the RBX's channels drawn uniformly in `[min, max]`.
    pub burst_coverage: [f64; 2],
    /// Per-channel pile-up sensitivity: channel i's pile-up term is
    /// multiplied by k_i = exp(spread · N(0, 1)), fixed per detector (0: all
    /// channels grow alike).
    pub pileup_sensitivity_spread: f64,
    /// Peak pile-up drawn per fill uniformly in `[min, max]` (absent: the
    /// fixed `pileup`).
    pub peak_pileup: Option<[f64; 2]>,
    /// Probability per LS of a prescale change: from that LS on, the
    /// recorded events are multiplied by a factor log-uniform in [1/2, 2]
    /// (0: off).
    pub prescale_probability: f64,
    /// Multiplies the events per LS, so the hits per channel per LS scale
    /// with it (the paper's AUCs imply ≳ 100 hits per channel per LS; the
    /// default maps have ~34 in the barrel).
    pub counts_scale: f64,
    /// Channels dead in every LS: real dead channels contaminating the
    /// maps (the paper's Fig. 14). `expected` keeps their healthy value, so
    /// the oracle sees them; a model trained on these maps may learn them
    /// as normal.
    pub dead_channels: Vec<usize>,
}

impl Default for Structure {
    fn default() -> Self {
        Self {
            rbx_gain_sigma: 0.0,
            rbx_gain_rho: 0.95,
            rbx_fill_offset: 0.0,
            burst_probability: 0.0,
            burst_rate: [1e-3, 3e-2],
            burst_coverage: [0.3, 1.0],
            pileup_sensitivity_spread: 0.0,
            peak_pileup: None,
            prescale_probability: 0.0,
            counts_scale: 1.0,
            dead_channels: Vec::new(),
        }
    }
}

impl Structure {
    /// Every effect off: the maps of the plain generator.
    pub fn is_off(&self) -> bool {
        self == &Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        let [lo, hi] = self.burst_rate;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad_param("burst_rate", "need 0 < min ≤ max ≤ 1");
        }
        let [lo, hi] = self.burst_coverage;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad_param("burst_coverage", "need 0 < min ≤ max ≤ 1");
        }
        if let Some([lo, hi]) = self.peak_pileup
            && !(lo >= 0.0 && lo <= hi)
        {
            return bad_param("peak_pileup", "need 0 ≤ min ≤ max");
        }
        for (name, p) in [
            ("burst_probability", self.burst_probability),
            ("prescale_probability", self.prescale_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad_param(name, "must be in [0, 1]");
            }
        }
        if !(self.rbx_gain_rho.abs() < 1.0) {
            return bad_param("rbx_gain_rho", "must be in (−1, 1)");
        }
        for (name, v) in [
            ("rbx_gain_sigma", self.rbx_gain_sigma),
            ("rbx_fill_offset", self.rbx_fill_offset),
            ("pileup_sensitivity_spread", self.pileup_sensitivity_spread),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad_param(name, "must be ≥ 0");
            }
        }
        if !(self.counts_scale > 0.0 && self.counts_scale.is_finite()) {
            return bad_param("counts_scale", "must be > 0");
        }
        Ok(())
    }
}

/// Salt of the structure's own streams (per detector and per fill), apart
/// from the plain generator's so switching an effect on leaves the others'
/// draws where they were.
pub const STRUCTURE_SALT: u64 = 0x5354_5255_4354;
/// What the plain generator does not have, for one fill.
pub struct FillStructure {
    rbx: Vec<usize>,
    pub peak_pileup: f64,
    /// Per-RBX log-gain: the AR(1) state and the fill's offset.
    gain: Vec<f64>,
    offset: Vec<f64>,
    pub prescale: f64,
    rng: ChaCha8Rng,
}

impl FillStructure {
    /// The fill's structure; `fill_seed` is the generator's seed of the
    /// fill, salted here so the streams stay apart.
    pub fn new(st: &Structure, geometry: &MapGeometry, pileup: f64, fill_seed: u64) -> Self {
        let g = geometry.geometry();
        let n_rbx = g.n_rbx();
        let mut rng = ChaCha8Rng::seed_from_u64(fill_seed ^ STRUCTURE_SALT);
        let peak_pileup = match st.peak_pileup {
            Some([lo, hi]) => rng.random_range(lo..=hi),
            None => pileup,
        };
        let mut normal = |scale: f64| -> Vec<f64> {
            (0..n_rbx)
                .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
                .collect()
        };
        let gain = normal(st.rbx_gain_sigma);
        let offset = normal(st.rbx_fill_offset);
        Self {
            rbx: g.rbx_map(),
            peak_pileup,
            gain,
            offset,
            prescale: 1.0,
            rng,
        }
    }

    /// Moves to the next LS: the gains drift, the prescale may change.
    pub fn step(&mut self, st: &Structure) {
        let innovation = st.rbx_gain_sigma * (1.0 - st.rbx_gain_rho.powi(2)).sqrt();
        for a in &mut self.gain {
            let e: f64 = self.rng.sample(StandardNormal);
            *a = st.rbx_gain_rho * *a + innovation * e;
        }
        if self.rng.random::<f64>() < st.prescale_probability {
            self.prescale = (self.rng.random_range(-1.0..=1.0) * std::f64::consts::LN_2).exp();
        }
    }

    /// The hit probability of every channel on this LS: the plain
    /// probabilities times each RBX's gain, then the bursts.
    pub fn apply(&mut self, st: &Structure, probability: &mut [f64]) {
        let n_rbx = self.gain.len();
        let mut burst = vec![None; n_rbx];
        for b in &mut burst {
            if self.rng.random::<f64>() < st.burst_probability {
                let [lo, hi] = st.burst_rate;
                let rate = (self.rng.random_range(lo.ln()..=hi.ln())).exp();
                let [c_lo, c_hi] = st.burst_coverage;
                *b = Some((rate, self.rng.random_range(c_lo..=c_hi)));
            }
        }
        for (c, p) in probability.iter_mut().enumerate() {
            let r = self.rbx[c];
            if st.rbx_gain_sigma > 0.0 || st.rbx_fill_offset > 0.0 {
                *p = (*p * (self.gain[r] + self.offset[r]).exp()).min(1.0);
            }
            if let Some((rate, coverage)) = burst[r]
                && self.rng.random::<f64>() < coverage
            {
                *p = 1.0 - (1.0 - *p) * (1.0 - rate);
            }
        }
    }
}
