//! `lumi_maps`: digi-occupancy maps per lumisection (LS), generated from the
//! per-channel hit rates measured on real Delphes events.
//!
//! A fill starts at a peak luminosity that varies from fill to fill and
//! decays exponentially; occasional spikes multiply one LS's luminosity
//! (paper Fig. 4 shows why: γ/ξ alone does not remove them). The events
//! recorded per LS, ξ_s, follow the luminosity. Every recorded event
//! overlays pile-up interactions whose number follows the luminosity too, so
//! a channel's hit probability per event is p_i(s) = 1 − (1 − r_i)^m_s with
//! m_s = 1 + pileup · β_s · pileup_hit_fraction: γ/ξ itself drifts with β
//! (the non-linearity the renormalization and the model have to absorb).
//! Counts are drawn γ_i ~ Binomial(ξ_s, p_i(s)) (or Poisson). The pile-up
//! model is ours: the Delphes sample has no pile-up, and a pile-up
//! interaction hits fewer channels than a dijet event (`pileup_hit_fraction`).

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson, StandardNormal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param, within};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::geometry::Subdetector;
use crate::hcal::structure::{FillStructure, STRUCTURE_SALT, Structure};
use crate::hcal::tables::{
    MapRow, expected_field, maps_schema, rates_schema, with_fields, write_rows,
};
use crate::input::require_column;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// How channel counts are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CountSampling {
    /// Binomial(ξ_s, p): a channel fires at most once per event, γ ≤ ξ.
    Binomial,
    /// Poisson(ξ_s p), clipped to ξ_s.
    Poisson,
}

/// Generates fills of LS occupancy maps of one subdetector.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiMaps {
    /// Which channels: `barrel` (HB), `endcap` (HE) or `forward` (HF).
    pub subdetector: Subdetector,
    /// Number of fills.
    pub fills: usize,
    /// Number of the first fill; the others follow. Give train and test
    /// sets different numbers (and seeds) so no map is in both.
    pub first_fill: i64,
    /// LS per fill, drawn uniformly in `[min, max]`.
    pub ls_per_fill: [usize; 2],
    /// Events per LS at the fill's peak luminosity, drawn per fill uniformly
    /// in `[min, max]` (the paper's maps hold up to 2250 events).
    pub peak_events: [u64; 2],
    /// Luminosity lifetime in LS: β_s = exp(−s / lifetime) along the fill.
    pub lumi_lifetime: f64,
    /// Mean pile-up at the fill's peak luminosity (CMS 2018: about 30-35).
    pub pileup: f64,
    /// Hit probability of one pile-up interaction relative to one of the
    /// Delphes dijet events the rates come from (ours; 0 switches pile-up off).
    pub pileup_hit_fraction: f64,
    /// Probability per LS of a luminosity spike.
    pub spike_probability: f64,
    /// A spike multiplies the LS's luminosity by a factor uniform in `[1, max]`.
    pub spike_max: f64,
    /// Channel-to-channel response spread: each channel's rate is scaled
    /// by a fixed factor exp(spread · N(0, 1)) (ours: real channels differ
    /// in gain and threshold; φ-symmetric rates alone would make them equal).
    pub channel_spread: f64,
    /// Seed of the channel response factors: the detector, so keep it the
    /// same for the training and test maps of one detector.
    pub detector_seed: u64,
    /// How counts are drawn.
    pub sampling: CountSampling,
    /// Seed of every other random choice (fills, luminosity, counts).
    pub seed: u64,
    /// Depth segments per channel and the fraction of a tower's hit rate
    /// each sees (ours: Delphes towers have no depth; CMS HB has 4 depths,
    /// HE 7). The default, one depth seeing every hit, is the card's maps;
    /// e.g. [1.0, 0.6, 0.3, 0.15] for a shower dying out with depth.
    #[serde(skip_serializing_if = "one_depth")]
    pub depth_fractions: Vec<f64>,
    /// HCAL's structure: RBX gain drift, noise bursts, per-channel pile-up
    /// response, prescale changes, a counts scale (all off by default; the
    /// key is left out of the canonical parameters then).
    #[serde(skip_serializing_if = "Structure::is_off")]
    pub structure: Structure,
}

impl Default for LumiMaps {
    fn default() -> Self {
        Self {
            subdetector: Subdetector::Barrel,
            fills: 4,
            first_fill: 1,
            ls_per_fill: [120, 160],
            peak_events: [1800, 2250],
            lumi_lifetime: 300.0,
            pileup: 32.0,
            pileup_hit_fraction: 0.1,
            spike_probability: 0.02,
            spike_max: 1.5,
            channel_spread: 0.1,
            detector_seed: 1,
            sampling: CountSampling::Binomial,
            seed: 1,
            depth_fractions: vec![1.0],
            structure: Structure::default(),
        }
    }
}

impl StageConfig for LumiMaps {
    const KIND: &'static str = "lumi_maps";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Channel hit rates -> occupancy maps per lumisection along LHC fills (luminosity decay, spikes, pile-up, binomial counts), seeded";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "rates";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![rates_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.fills == 0 {
            return bad_param("fills", "must be ≥ 1");
        }
        let [a, b] = self.ls_per_fill;
        if a == 0 || a > b {
            return bad_param("ls_per_fill", "need 1 ≤ min ≤ max");
        }
        let [a, b] = self.peak_events;
        if a == 0 || a > b {
            return bad_param("peak_events", "need 1 ≤ min ≤ max");
        }
        if !(self.lumi_lifetime > 0.0) {
            return bad_param("lumi_lifetime", "must be > 0");
        }
        if !(self.pileup >= 0.0) || !(self.pileup_hit_fraction >= 0.0) {
            return bad_param("pileup", "pileup and pileup_hit_fraction must be ≥ 0");
        }
        if !(0.0..=1.0).contains(&self.spike_probability) {
            return bad_param("spike_probability", "must be in [0, 1]");
        }
        if !(self.channel_spread >= 0.0) {
            return bad_param("channel_spread", "must be ≥ 0");
        }
        if !(self.spike_max >= 1.0) {
            return bad_param("spike_max", "must be ≥ 1");
        }
        if self.depth_fractions.is_empty()
            || self.depth_fractions.len() > 7
            || self
                .depth_fractions
                .iter()
                .any(|f| !(*f > 0.0 && *f <= 1.0))
        {
            return bad_param(
                "depth_fractions",
                "give 1 to 7 depths (CMS has up to 7), each fraction in (0, 1]",
            );
        }
        within("structure", self.structure.validate())?;
        let n = self.geometry().n_channels();
        if let Some(c) = self.structure.dead_channels.iter().find(|&&c| c >= n) {
            return within(
                "structure",
                bad_param(
                    "dead_channels",
                    format!(
                        "channel {c} does not exist ({} has 0..{n})",
                        self.subdetector.name()
                    ),
                ),
            );
        }
        Ok(())
    }
}

/// The card's single depth seeing every hit (left out of the canonical
/// parameters, so maps made before the option keep their cache key).
fn one_depth(fractions: &[f64]) -> bool {
    fractions == [1.0]
}

/// Salt of the channel response factors.
const DETECTOR_SALT: u64 = 0x4445_5445_4354_4f52;
/// Salt of a fill's random stream, so fills are independent of each other.
const FILL_SALT: u64 = 0x4843_414c_4649_4c4c;

impl LumiMaps {
    /// The maps' channels: the card's, with `depth_fractions` depths.
    pub fn geometry(&self) -> MapGeometry {
        MapGeometry::with_depths(self.subdetector, self.depth_fractions.len())
    }

    /// The hit rates of this subdetector's channels, in channel order.
    fn rates(&self, ctx: &RunContext<'_>) -> Result<Vec<f64>> {
        let input = &ctx.inputs[0];
        let geometry = self.subdetector.geometry();
        let mut rates = vec![f64::NAN; geometry.n_channels()];
        for batch in input.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("planned");
            let sub = col("subdetector").as_string::<i32>();
            let channel = col("channel").as_primitive::<Int64Type>();
            let rate = col("rate").as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                if sub.value(i) != self.subdetector.name() {
                    continue;
                }
                let c = channel.value(i);
                let r = rate.value(i);
                if c < 0 || c as usize >= rates.len() {
                    return Err(StageError::data(format!(
                        "input `{}`: {} channel {c} does not exist (0..{})",
                        input.name,
                        self.subdetector.name(),
                        rates.len()
                    )));
                }
                if !(0.0..=1.0).contains(&r) {
                    return Err(StageError::data(format!(
                        "input `{}`: {} channel {c} has rate {r}, not a probability",
                        input.name,
                        self.subdetector.name()
                    )));
                }
                rates[c as usize] = r;
            }
        }
        if let Some(c) = rates.iter().position(|r| r.is_nan()) {
            return Err(StageError::data(format!(
                "input `{}` has no rate for {} channel {c}",
                input.name,
                self.subdetector.name()
            )));
        }
        // Each tower's rate split into its depths (the identity for one).
        let depths = &self.depth_fractions;
        let mut rates: Vec<f64> = rates
            .iter()
            .flat_map(|r| depths.iter().map(move |f| r * f))
            .collect();
        let mut detector = ChaCha8Rng::seed_from_u64(self.detector_seed ^ DETECTOR_SALT);
        for r in &mut rates {
            let z: f64 = detector.sample(StandardNormal);
            *r = (*r * (self.channel_spread * z).exp()).min(1.0);
        }
        Ok(rates)
    }

    /// Each channel's pile-up sensitivity k_i (all 1 when off), fixed per
    /// detector.
    fn sensitivity(&self, n: usize) -> Vec<f64> {
        let spread = self.structure.pileup_sensitivity_spread;
        if spread == 0.0 {
            return vec![1.0; n];
        }
        let mut detector =
            ChaCha8Rng::seed_from_u64(self.detector_seed ^ DETECTOR_SALT ^ STRUCTURE_SALT);
        (0..n)
            .map(|_| (spread * detector.sample::<f64, _>(StandardNormal)).exp())
            .collect()
    }

    /// The maps of fill number `k` (0-based), for channels of hit rates
    /// `rates` and pile-up sensitivities `sensitivity`.
    pub fn fill(&self, rates: &[f64], sensitivity: &[f64], k: usize) -> Vec<MapRow> {
        let fill = self.first_fill + k as i64;
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ FILL_SALT ^ (fill as u64).rotate_left(20));
        let st = &self.structure;
        let structured = !st.is_off();
        let mut structure = structured.then(|| {
            let fill_seed = self.seed ^ FILL_SALT ^ (fill as u64).rotate_left(28);
            FillStructure::new(st, &self.geometry(), self.pileup, fill_seed)
        });
        let pileup = structure.as_ref().map_or(self.pileup, |f| f.peak_pileup);
        let n_ls = rng.random_range(self.ls_per_fill[0]..=self.ls_per_fill[1]);
        let peak = rng.random_range(self.peak_events[0]..=self.peak_events[1]) as f64;
        let mut rows = Vec::with_capacity(n_ls);
        for s in 0..n_ls {
            let mut beta = (-(s as f64) / self.lumi_lifetime).exp();
            if rng.random::<f64>() < self.spike_probability {
                beta *= rng.random_range(1.0..=self.spike_max);
            }
            let mut events = (peak * beta).round().max(1.0) as u64;
            let pileup_term = pileup * beta * self.pileup_hit_fraction;
            let mut probability: Vec<f64> = rates
                .iter()
                .zip(sensitivity)
                .map(|(&r, &k)| 1.0 - (1.0 - r).powf(1.0 + pileup_term * k))
                .collect();
            if let Some(f) = structure.as_mut() {
                if s > 0 {
                    f.step(st);
                }
                f.apply(st, &mut probability);
                events = (events as f64 * st.counts_scale * f.prescale)
                    .round()
                    .max(1.0) as u64;
            }
            let mut occupancy: Vec<f64> = probability
                .iter()
                .map(|&p| match self.sampling {
                    CountSampling::Binomial => Binomial::new(events, p)
                        .expect("p is a probability")
                        .sample(&mut rng) as f64,
                    CountSampling::Poisson if p > 0.0 => Poisson::new(events as f64 * p)
                        .expect("positive mean")
                        .sample(&mut rng)
                        .min(events as f64),
                    CountSampling::Poisson => 0.0,
                })
                .collect();
            for &c in &st.dead_channels {
                occupancy[c] = 0.0;
            }
            rows.push(MapRow {
                case: None,
                fill,
                ls: s as i64 + 1,
                lumi: beta,
                events: events as i64,
                occupancy,
                target: None,
                injected: None,
                norm: None,
                median: None,
                expected: Some(probability.iter().map(|p| events as f64 * p).collect()),
            });
        }
        rows
    }
}

/// The maps with the truth an oracle would know.
fn generated_schema(geometry: MapGeometry) -> SchemaRef {
    with_fields(&maps_schema(geometry), vec![expected_field()])
}

impl Stage for LumiMaps {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let why = "a rates table (`hcal_rates`)";
        require_column(&inputs[0], "rates", "subdetector", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        require_column(&inputs[0], "rates", "channel", why, "Int64", |t| {
            t == &DataType::Int64
        })?;
        require_column(&inputs[0], "rates", "rate", why, "Float64", |t| {
            t == &DataType::Float64
        })?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: generated_schema(self.geometry()),
        }])
    }

    fn shardable(&self) -> bool {
        true
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let rates = self.rates(ctx)?;
        let sensitivity = self.sensitivity(rates.len());
        let schema = generated_schema(self.geometry());
        // Fills are independent streams: a shard makes its block of them.
        let fills = ctx.shard.range(self.fills);
        let progress = ctx.reporter.progress(fills.len() as u64, "fills");
        let mut n_ls = 0;
        for k in fills.clone() {
            let rows = self.fill(&rates, &sensitivity, k);
            n_ls += rows.len();
            ctx.output.write("main", write_rows(&schema, &rows)?)?;
            progress.inc(1);
        }
        ctx.reporter.info(&format!(
            "{n_ls} LS maps of {} {} channels in {} fills",
            rates.len(),
            self.subdetector.name(),
            fills.len()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::tables::read_all_rows;
    use crate::hcal::test_support::flat_rates;
    use crate::in_memory::{input_from_batch, run_in_memory};

    fn generate(stage: &LumiMaps, rate: f64) -> Vec<MapRow> {
        let dir = tempfile::tempdir().unwrap();
        let input =
            input_from_batch("rates", &flat_rates(rate), &dir.path().join("r.parquet")).unwrap();
        let out = run_in_memory(stage, &[input]).unwrap().table("main");
        let maps = input_from_batch("maps", &out, &dir.path().join("m.parquet")).unwrap();
        let geometry = crate::hcal::tables::read_geometry(&maps.schema, "maps").unwrap();
        assert_eq!(geometry, MapGeometry::of(stage.subdetector));
        read_all_rows(&maps, &geometry).unwrap()
    }

    #[test]
    fn fills_decay_and_counts_follow_the_binomial_mean() {
        let stage = LumiMaps {
            fills: 2,
            spike_probability: 0.0,
            channel_spread: 0.0,
            ..Default::default()
        };
        let rows = generate(&stage, 0.01);
        let fills: Vec<i64> = rows.iter().map(|r| r.fill).collect();
        assert_eq!(fills.first(), Some(&1));
        assert_eq!(fills.last(), Some(&2));
        for r in &rows {
            assert_eq!(r.occupancy.len(), 2736);
            assert!(
                r.occupancy
                    .iter()
                    .all(|&g| g >= 0.0 && g <= r.events as f64)
            );
            let beta = (-((r.ls - 1) as f64) / stage.lumi_lifetime).exp();
            assert!((r.lumi - beta).abs() < 1e-12);
            let m = 1.0 + 32.0 * beta * 0.1;
            let p = 1.0 - 0.99f64.powf(m);
            let mean = r.occupancy.iter().sum::<f64>() / 2736.0;
            let expect = r.events as f64 * p;
            // The mean of 2736 binomials: within 5 standard errors.
            let se = (expect * (1.0 - p) / 2736.0).sqrt();
            assert!(
                (mean - expect).abs() < 5.0 * se,
                "LS {}: {mean} vs {expect}",
                r.ls
            );
        }
        let first = rows.iter().find(|r| r.ls == 1).unwrap();
        let late = rows.iter().find(|r| r.ls == 100).unwrap();
        assert!(
            late.events < first.events,
            "ξ follows the decaying luminosity"
        );
    }

    #[test]
    fn same_seed_same_maps_other_seed_other_maps() {
        let stage = LumiMaps {
            fills: 1,
            ls_per_fill: [5, 5],
            ..Default::default()
        };
        let a = generate(&stage, 0.02);
        assert_eq!(a, generate(&stage, 0.02));
        let b = generate(&LumiMaps { seed: 2, ..stage }, 0.02);
        assert_ne!(a[0].occupancy, b[0].occupancy);
    }

    #[test]
    fn shards_concatenate_to_the_whole() {
        use crate::in_memory::run_shard_in_memory;
        use crate::stage::Shard;
        let dir = tempfile::tempdir().unwrap();
        let input =
            input_from_batch("rates", &flat_rates(0.01), &dir.path().join("r.parquet")).unwrap();
        let stage = LumiMaps {
            fills: 3,
            ls_per_fill: [4, 6],
            ..Default::default()
        };
        let whole = run_in_memory(&stage, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        let parts: Vec<_> = (0..2)
            .map(|index| {
                run_shard_in_memory(
                    &stage,
                    std::slice::from_ref(&input),
                    Shard { index, count: 2 },
                )
                .unwrap()
                .table("main")
            })
            .collect();
        let joined = arrow::compute::concat_batches(&whole.schema(), &parts).unwrap();
        assert_eq!(joined, whole);
    }

    /// Per LS and RBX: Σ γ / Σ (plain expected counts), the plain expected
    /// being ξ p with p from the rate and the plain pile-up term.
    fn rbx_ratios(stage: &LumiMaps, rows: &[MapRow], rate: f64) -> Vec<f64> {
        let g = stage.subdetector.geometry();
        let rbx = g.rbx_map();
        let mut out = Vec::new();
        for r in rows {
            let m = 1.0 + stage.pileup * r.lumi * stage.pileup_hit_fraction;
            let plain = r.events as f64 * (1.0 - (1.0 - rate).powf(m));
            let (mut sum, mut n) = (vec![0.0; g.n_rbx()], vec![0.0; g.n_rbx()]);
            for (c, &b) in rbx.iter().enumerate() {
                sum[b] += r.occupancy[c];
                n[b] += plain;
            }
            out.extend(sum.iter().zip(&n).map(|(s, n)| s / n));
        }
        out
    }

    fn spread(v: &[f64]) -> f64 {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x.ln() - mean.ln()).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    fn plain() -> LumiMaps {
        LumiMaps {
            fills: 2,
            ls_per_fill: [60, 60],
            spike_probability: 0.0,
            channel_spread: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn structure_is_off_by_default_and_out_of_the_canonical_parameters() {
        let stage = plain();
        assert!(stage.structure.is_off());
        let params = serde_json::to_value(&stage).unwrap();
        assert!(params.get("structure").is_none(), "{params}");
        let on = LumiMaps {
            structure: Structure {
                counts_scale: 2.0,
                ..Default::default()
            },
            ..plain()
        };
        assert!(
            serde_json::to_value(&on)
                .unwrap()
                .get("structure")
                .is_some()
        );
        // Plain maps carry the generator's expectation ξ p.
        for r in generate(&stage, 0.01) {
            let m = 1.0 + 32.0 * r.lumi * 0.1;
            let p = 1.0 - 0.99f64.powf(m);
            let e = r.expected.as_ref().unwrap();
            assert!(e.iter().all(|&v| (v - r.events as f64 * p).abs() < 1e-9));
        }
    }

    #[test]
    fn rbx_gain_drift_moves_whole_rbxes_and_the_truth_follows() {
        let off = plain();
        let on = LumiMaps {
            structure: Structure {
                rbx_gain_sigma: 0.2,
                ..Default::default()
            },
            ..plain()
        };
        let (a, b) = (generate(&off, 0.01), generate(&on, 0.01));
        let (s_off, s_on) = (
            spread(&rbx_ratios(&off, &a, 0.01)),
            spread(&rbx_ratios(&on, &b, 0.01)),
        );
        // Off: counting noise of ~76 × 30 hits (≈ 2 %); on: the gain's 0.2.
        assert!(s_off < 0.04, "{s_off}");
        assert!((0.14..0.26).contains(&s_on), "{s_on}");
        // Consecutive LS share most of their gain (ρ = 0.95).
        let r = rbx_ratios(&on, &b, 0.01);
        let n_rbx = 36;
        let lag: Vec<(f64, f64)> = (0..59)
            .flat_map(|s| (0..n_rbx).map(move |k| (s, k)))
            .map(|(s, k)| (r[s * n_rbx + k].ln(), r[(s + 1) * n_rbx + k].ln()))
            .collect();
        let mean =
            |f: &dyn Fn(&(f64, f64)) -> f64| lag.iter().map(f).sum::<f64>() / lag.len() as f64;
        let (mx, my) = (mean(&|p| p.0), mean(&|p| p.1));
        let cov = mean(&|p| (p.0 - mx) * (p.1 - my));
        let corr = cov / (mean(&|p| (p.0 - mx).powi(2)) * mean(&|p| (p.1 - my).powi(2))).sqrt();
        assert!(corr > 0.8, "lag-1 correlation {corr}");
        // The expected counts carry the drift: observed / expected per RBX
        // is back to counting noise.
        for row in &b {
            let e = row.expected.as_ref().unwrap();
            let (o, x): (f64, f64) = (row.occupancy.iter().sum(), e.iter().sum());
            assert!((o / x - 1.0).abs() < 0.03, "LS {}: {o} vs {x}", row.ls);
        }
    }

    #[test]
    fn bursts_counts_scale_and_prescale_change_what_they_should() {
        let burst = LumiMaps {
            structure: Structure {
                burst_probability: 1.0,
                burst_rate: [0.05, 0.05],
                burst_coverage: [1.0, 1.0],
                ..Default::default()
            },
            ..plain()
        };
        for r in generate(&burst, 0.01) {
            let m = 1.0 + 32.0 * r.lumi * 0.1;
            let p = 1.0 - 0.99f64.powf(m);
            let want = r.events as f64 * (1.0 - (1.0 - p) * 0.95);
            let e = r.expected.as_ref().unwrap();
            assert!(
                e.iter().all(|&v| (v - want).abs() < 1e-6),
                "{} vs {want}",
                e[0]
            );
        }
        let base = generate(&plain(), 0.01);
        let scaled = generate(
            &LumiMaps {
                structure: Structure {
                    counts_scale: 3.0,
                    ..Default::default()
                },
                ..plain()
            },
            0.01,
        );
        for (a, b) in base.iter().zip(&scaled) {
            assert_eq!(b.events, (a.events as f64 * 3.0).round() as i64);
        }
        let prescaled = generate(
            &LumiMaps {
                structure: Structure {
                    prescale_probability: 0.2,
                    ..Default::default()
                },
                ..plain()
            },
            0.01,
        );
        let factors: Vec<f64> = base
            .iter()
            .zip(&prescaled)
            .map(|(a, b)| b.events as f64 / a.events as f64)
            .collect();
        assert!(factors.iter().all(|f| (0.49..=2.01).contains(f)));
        assert!(
            factors.iter().any(|f| (f - 1.0).abs() > 0.05),
            "a prescale changed"
        );
        // A fill's prescale holds from LS to LS until it changes again.
        let changes = factors
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() > 0.02)
            .count();
        assert!(changes < 60, "{changes}");
    }

    #[test]
    fn pileup_sensitivity_spreads_channels_at_high_luminosity_only() {
        let stage = LumiMaps {
            pileup: 300.0,
            lumi_lifetime: 15.0,
            structure: Structure {
                pileup_sensitivity_spread: 0.5,
                ..Default::default()
            },
            ..plain()
        };
        let rows = generate(&stage, 0.002);
        let cv = |r: &MapRow| {
            let e = r.expected.as_ref().unwrap();
            let mean = e.iter().sum::<f64>() / e.len() as f64;
            (e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt() / mean
        };
        let (first, last) = (&rows[0], &rows[59]);
        assert!(first.lumi > last.lumi);
        // The pile-up term dominates at the peak: channels differ more.
        assert!(
            cv(first) > 0.3 && cv(first) > cv(last),
            "{} {}",
            cv(first),
            cv(last)
        );
    }

    #[test]
    fn dead_channels_are_empty_in_every_ls_and_keep_their_healthy_expectation() {
        let base = generate(&plain(), 0.01);
        let dead = generate(
            &LumiMaps {
                structure: Structure {
                    dead_channels: vec![5, 700],
                    ..Default::default()
                },
                ..plain()
            },
            0.01,
        );
        for (a, b) in base.iter().zip(&dead) {
            assert_eq!((b.occupancy[5], b.occupancy[700]), (0.0, 0.0));
            assert_eq!(b.expected, a.expected, "the truth is the healthy rate");
            // Every other channel is drawn as without the dead ones.
            for c in [0, 6, 699, 701] {
                assert_eq!(a.occupancy[c], b.occupancy[c]);
            }
        }
        let bad = LumiMaps {
            structure: Structure {
                dead_channels: vec![2736],
                ..Default::default()
            },
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("structure.dead_channels") && err.contains("2736"),
            "{err}"
        );
    }

    #[test]
    fn depths_split_each_tower_and_flow_through_renormalization_and_injection() {
        use crate::hcal::inject_anomalies::InjectAnomalies;
        use crate::hcal::renormalize_occupancy::RenormalizeOccupancy;
        let stage = LumiMaps {
            depth_fractions: vec![1.0, 0.5],
            ..plain()
        };
        assert_eq!(stage.geometry().shape, [38, 72, 2]);
        let params = serde_json::to_value(&stage).unwrap();
        assert!(params.get("depth_fractions").is_some());
        assert!(
            serde_json::to_value(plain())
                .unwrap()
                .get("depth_fractions")
                .is_none()
        );
        let dir = tempfile::tempdir().unwrap();
        let rates =
            input_from_batch("rates", &flat_rates(0.01), &dir.path().join("r.parquet")).unwrap();
        let maps = run_in_memory(&stage, &[rates]).unwrap().table("main");
        let maps = input_from_batch("maps", &maps, &dir.path().join("m.parquet")).unwrap();
        let geometry = crate::hcal::tables::read_geometry(&maps.schema, "maps").unwrap();
        assert_eq!(geometry, stage.geometry());
        let rows = read_all_rows(&maps, &geometry).unwrap();
        // Depth 1 sees about half the hits of depth 0, channel by channel.
        let (mut d0, mut d1) = (0.0, 0.0);
        for r in &rows {
            assert_eq!(r.occupancy.len(), 38 * 72 * 2);
            let e = r.expected.as_ref().unwrap();
            for c in (0..e.len()).step_by(2) {
                assert!(e[c + 1] < e[c]);
            }
            d0 += r.occupancy.iter().step_by(2).sum::<f64>();
            d1 += r.occupancy.iter().skip(1).step_by(2).sum::<f64>();
        }
        assert!((d1 / d0 - 0.5).abs() < 0.03, "{}", d1 / d0);
        // The family's next stages take the deeper maps as they are.
        let injected = run_in_memory(
            &InjectAnomalies {
                targets_per_fill: 2,
                ..Default::default()
            },
            std::slice::from_ref(&maps),
        )
        .unwrap()
        .table("main");
        let injected = input_from_batch("inj", &injected, &dir.path().join("i.parquet")).unwrap();
        let norm = run_in_memory(&RenormalizeOccupancy::default(), &[injected])
            .unwrap()
            .table("main");
        let norm = input_from_batch("norm", &norm, &dir.path().join("n.parquet")).unwrap();
        let rows = read_all_rows(&norm, &geometry).unwrap();
        // One median per (iη, depth) row.
        assert_eq!(rows[0].median.as_ref().unwrap().len(), 38 * 2);
        // An injected RBX spans both depths: 76 channels × 2.
        let target = rows.iter().find(|r| r.target == Some(true)).unwrap();
        let marked = target
            .injected
            .as_ref()
            .unwrap()
            .iter()
            .filter(|&&b| b)
            .count();
        assert!(marked >= 152, "{marked}");
        let bad = LumiMaps {
            depth_fractions: vec![1.0, 0.0],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("depth_fractions")
        );
    }

    #[test]
    fn bad_structure_is_refused_by_key() {
        let bad = LumiMaps {
            structure: Structure {
                rbx_gain_rho: 1.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("structure.rbx_gain_rho"), "{err}");
    }

    #[test]
    fn bad_rates_are_refused_with_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let rates = flat_rates(1.5);
        let input = input_from_batch("rates", &rates, &dir.path().join("r.parquet")).unwrap();
        let err = run_in_memory(&LumiMaps::default(), &[input])
            .unwrap_err()
            .to_string();
        assert!(err.contains("barrel channel 0 has rate 1.5"), "{err}");
    }
}
