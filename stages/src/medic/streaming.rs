//! MEDIC's trained network scoring a stream on the CPU: the set encoders
//! as Rust kernels ([`FusedEncoder`]), each event encoded once and, with
//! the event-mean window head, its class probabilities computed once, the
//! windows' scores in Rust. Equal to the network as trained
//! ([`Medic::encode`], [`Medic::score_windows`]) up to the order of
//! floating-point sums (tests below).

use tch::{Kind, Tensor};

use crate::medic::fused_encoder::FusedEncoder;
use crate::medic::model::{Medic, MedicArch};
use crate::simd::{Isa, PackedLinear};
use crate::vector_math;

/// A trained [`Medic`] scoring a stream: on the CPU the set encoders run
/// as Rust kernels ([`FusedEncoder`]: input projections folded into
/// attention, one pass per tile of events), and with the event-mean window
/// head each event's class probabilities are computed once rather than
/// once per window it is in. Equal to [`Medic::encode`] and
/// [`Medic::score_windows`] up to the order of floating-point sums.
pub struct StreamingMedic<'a> {
    model: &'a Medic,
    /// Tracks' and towers' kernels (none off the CPU: the network as is).
    fused: Option<(FusedEncoder, FusedEncoder)>,
    /// The event-mean window head's layer, on the CPU: windows scored in
    /// Rust ([`event_mean_scores`]).
    event_mean: Option<PackedLinear>,
    isa: Isa,
}

impl<'a> StreamingMedic<'a> {
    pub fn new(model: &'a Medic) -> Self {
        Self::with_isa(model, Isa::detect())
    }

    /// [`Self::new`] with the kernels compiled for `isa` (tests compare
    /// every instruction set the CPU has).
    pub fn with_isa(model: &'a Medic, isa: Isa) -> Self {
        let on_cpu = model.on_cpu();
        let fused = on_cpu.then(|| {
            let [tracks, towers] = model.encoder_weights();
            (
                FusedEncoder::with_isa(&tracks, isa),
                FusedEncoder::with_isa(&towers, isa),
            )
        });
        let k = 3 * model.arch.embed as usize;
        let event_mean = model
            .event_mean_head()
            .filter(|_| on_cpu)
            .map(|(weight, bias)| PackedLinear::new(&weight, &bias, k, k));
        Self {
            model,
            fused,
            event_mean,
            isa,
        }
    }

    pub fn arch(&self) -> &MedicArch {
        &self.model.arch
    }

    /// [`Medic::encode`] in inference: embeddings `[M, 3, E]`.
    pub fn encode(&self, tracks: &Tensor, towers: &Tensor, met: &Tensor) -> Tensor {
        let m = self.model;
        match &self.fused {
            Some((t, w)) => Tensor::stack(
                &[
                    run_fused(t, tracks, m.arch.embed),
                    run_fused(w, towers, m.arch.embed),
                    m.encode_met(met),
                ],
                1,
            ),
            None => m.encode(tracks, towers, met, false),
        }
    }

    /// Log-probabilities `[B, classes]` of the windows whose slots `[B, W]`
    /// index `events` `[M, 3, E]` (see [`Medic::score_windows`]).
    pub fn score_windows(&self, events: &Tensor, slots: &Tensor) -> Tensor {
        let m = self.model;
        if let Some(head) = &self.event_mean {
            return event_mean_scores(head, self.isa, m.arch.classes as usize, events, slots);
        }
        m.event_mean_scores(events, slots)
            .unwrap_or_else(|| m.score_windows(events, slots, false).windows)
    }
}

/// The event-mean head's window log-probabilities `[B, classes]` (as
/// [`Medic::score_windows`]): each of the M events' class log-probabilities
/// once (`head` on its `[3E]` embeddings, log-softmax), then per window ln
/// of the mean over its W slots of the probabilities. In Rust: libtorch's
/// eight small operations per batch cost ~3 µs per event, this ~0.9 (the
/// encoders ~50; alternated in one bench process).
fn event_mean_scores(
    head: &PackedLinear,
    isa: Isa,
    classes: usize,
    events: &Tensor,
    slots: &Tensor,
) -> Tensor {
    let (m, three, e) = events.size3().expect("events: [M, 3, E]");
    let (b, w) = slots.size2().expect("slots: [B, W]");
    let (m, k, w) = (m as usize, (three * e) as usize, w as usize);
    let events = events.to_kind(Kind::Float).contiguous();
    let slots = Vec::<i64>::try_from(slots.contiguous().view([-1])).expect("Int64 slots");
    let n_pad = head.padded_outputs();
    let mut log_probs = vec![0f32; m * n_pad];
    // SAFETY: a contiguous f32 CPU tensor of m·k numbers, alive for the call.
    let x = unsafe { std::slice::from_raw_parts(events.data_ptr() as *const f32, m * k) };
    head.apply(isa, x, m, &mut log_probs, false);
    // Softmax per event (`probs`) and its logarithm, in place: one
    // exponential per class.
    let mut probs = vec![0f32; m * classes];
    for (row, p) in log_probs
        .chunks_exact_mut(n_pad)
        .zip(probs.chunks_exact_mut(classes))
    {
        let row = &mut row[..classes];
        let max = vector_math::max(row);
        for (p, &v) in p.iter_mut().zip(row.iter()) {
            *p = (v - max).exp();
        }
        let total: f32 = p.iter().sum();
        let shift = max + total.ln();
        for (v, p) in row.iter_mut().zip(p) {
            *v -= shift;
            *p /= total;
        }
    }
    let mut out = vec![0f32; b as usize * classes];
    for (window, out) in slots.chunks_exact(w).zip(out.chunks_exact_mut(classes)) {
        for (c, out) in out.iter_mut().enumerate() {
            let mean = window
                .iter()
                .map(|&s| probs[s as usize * classes + c])
                .sum::<f32>()
                / w as f32;
            *out = if mean > 1e-30 {
                mean.ln()
            } else {
                // Every slot's probability underflows: log-sum-exp of the
                // log-probabilities, as libtorch.
                let lp = |s: i64| log_probs[s as usize * n_pad + c];
                let max = window
                    .iter()
                    .map(|&s| lp(s))
                    .fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = window.iter().map(|&s| (lp(s) - max).exp()).sum();
                max + total.ln() - (w as f32).ln()
            };
        }
    }
    Tensor::from_slice(&out).view([b, classes as i64])
}

/// A fused encoder over `x` `[M, N, F]` (f32 on the CPU): `[M, E]`,
/// read from and written to the tensors' own memory.
fn run_fused(encoder: &FusedEncoder, x: &Tensor, embed: i64) -> Tensor {
    let (m, n, f) = x.size3().expect("objects: [M, N, F]");
    let x = x.to_kind(Kind::Float).contiguous();
    if m == 0 {
        return Tensor::zeros([0, embed], (Kind::Float, tch::Device::Cpu));
    }
    // Every element is written by the kernel: no zeroing pass.
    let out = Tensor::empty([m, embed], (Kind::Float, tch::Device::Cpu));
    // SAFETY: both are contiguous f32 CPU tensors of these sizes, alive
    // for the call; `out` is fresh, so nothing else reads or writes it.
    unsafe {
        let input = std::slice::from_raw_parts(x.data_ptr() as *const f32, (m * n * f) as usize);
        let output =
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, (m * embed) as usize);
        encoder.encode_into(input, n as usize, output);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medic::model::{WindowHead, consecutive_slots};
    use crate::medic::test_support::medic as model;
    use tch::{Device, nn};

    /// The streaming path (input projections folded into attention, the
    /// event-mean head once per event) against the trained network's, for
    /// both window heads, with and without masked padding; padded objects
    /// (all-zero rows) included.
    #[test]
    fn streaming_equals_the_network_within_1e_5() {
        // (LayerNorms made as a trained network's below.)
        let _torch = crate::nn::exclusive();
        for (window_head, mask_padding) in [
            (WindowHead::Cnn, false),
            (WindowHead::EventMean, false),
            (WindowHead::EventMean, true),
        ] {
            let (vs, m) = model(MedicArch {
                window_head,
                mask_padding,
                ..Default::default()
            });
            assert_eq!(trained_norms(&vs), 8);
            let opts = (Kind::Float, Device::Cpu);
            let (events, w) = (12, 5);
            // Six of 30 tracks and ten towers are padding.
            let keep = |n: i64, real: i64| Tensor::arange(n, (Kind::Int64, Device::Cpu)).lt(real);
            let tracks = Tensor::randn([events, 30, 7], opts) * keep(30, 24).view([1, 30, 1]);
            let towers = Tensor::randn([events, 30, 8], opts) * keep(30, 20).view([1, 30, 1]);
            let met = Tensor::randn([events, 3], opts);
            let slots = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11])
                .view([3, w]);
            tch::no_grad(|| {
                let want = m.encode(&tracks, &towers, &met, false);
                let fast = StreamingMedic::new(&m);
                let got = fast.encode(&tracks, &towers, &met);
                let diff = f64::try_from((&got - &want).abs().max()).unwrap();
                assert!(diff < 1e-5, "{window_head:?}: embeddings differ by {diff}");
                let want = m.score_windows(&want, &slots, false).windows;
                let got = fast.score_windows(&got, &slots);
                let diff = f64::try_from((got.exp() - want.exp()).abs().max()).unwrap();
                assert!(
                    diff < 1e-5,
                    "{window_head:?}: probabilities differ by {diff}"
                );
            });
        }
    }

    /// The event-mean head's Rust scoring against libtorch's operations
    /// ([`Medic::score_windows`]'s formula) where it matters: windows
    /// sharing events, and a class whose probability underflows f32 in
    /// every event of a window (ln of the mean would be −∞; log-sum-exp
    /// is not).
    #[test]
    fn event_mean_scores_equal_libtorch_s_even_when_probabilities_underflow() {
        let (classes, k, m) = (4usize, 6usize, 5i64);
        // Class 3's logit 150 below class 0's in events 0-2, not in 3-4.
        let weight: Vec<f32> = (0..classes * k)
            .map(|i| ((i * 7) % 5) as f32 * 0.1 - 0.2)
            .collect();
        let bias = [0.0f32, 0.3, -0.2, 0.0];
        let mut x: Vec<f32> = (0..m as usize * k)
            .map(|i| ((i * 3) % 7) as f32 * 0.2 - 0.6)
            .collect();
        let mut w = weight.clone();
        w[3 * k] = -150.0; // class 3 reads feature 0 ...
        for e in 0..m as usize {
            x[e * k] = if e < 3 { 1.0 } else { 0.0 }; // ... which is 1 in events 0-2
        }
        let head = PackedLinear::new(&w, &bias, k, k);
        let events = Tensor::from_slice(&x).view([m, 3, 2]);
        let slots = Tensor::from_slice(&[0i64, 1, 2, 1, 2, 3, 3, 4, 0]).view([3, 3]);
        for isa in Isa::available() {
            let got = event_mean_scores(&head, isa, classes, &events, &slots);
            let logits = events
                .view([m, 6])
                .matmul(&Tensor::from_slice(&w).view([classes as i64, 6]).tr())
                + Tensor::from_slice(&bias);
            let want = logits
                .log_softmax(-1, Kind::Float)
                .index_select(0, &slots.view([-1]))
                .view([3, 3, classes as i64])
                .logsumexp([1], false)
                - 3f64.ln();
            let underflow = f64::try_from(want.get(0).get(3)).unwrap();
            assert!(
                underflow < -140.0 && underflow.is_finite(),
                "window 0, class 3: {underflow}"
            );
            let diff = f64::try_from((&got - &want).abs().max()).unwrap();
            assert!(diff < 1e-4, "{isa:?}: log-probabilities differ by {diff}");
        }
    }

    /// LayerNorms as a trained network has them — γ ≈ 1 + 0.5 N(0, 1),
    /// β ≈ 0.5 N(0, 1) — where initialized ones (γ = 1, β = 0) would leave
    /// the kernels' folding of γ and β into the feed-forward untested.
    /// Returns how many tensors it changed.
    fn trained_norms(vs: &nn::VarStore) -> usize {
        let mut changed = 0;
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                if name.contains("norm") {
                    let noise = Tensor::randn_like(&v) * 0.5;
                    let _ = v.g_add_(&noise);
                    changed += 1;
                }
            }
        });
        changed
    }

    /// The CPU kernels of every instruction set this machine has against
    /// the network as trained, on real events: the bundled `_tiny` files
    /// and every fourth event of the `_small` ones (standardized as the
    /// stages feed them, real padding), both padding modes, attention made
    /// peaked. (`medic_infer`'s test checks a trained network through the
    /// stage.)
    #[test]
    fn kernels_equal_libtorch_on_real_events_for_every_instruction_set() {
        let _torch = crate::nn::exclusive();
        use crate::medic::data::EventStore;
        use crate::medic::delphes_convert::DelphesConvert;
        use crate::medic::sliding_windows::SlidingWindows;
        use crate::medic::tables::WindowSpec;
        let dir = tempfile::tempdir().unwrap();
        let cfg = SlidingWindows(WindowSpec {
            window: 10,
            seed: 5,
            ..Default::default()
        });
        let isas = Isa::available();
        for (size, step) in [("tiny", 1), ("small", 4)] {
            let convert = DelphesConvert {
                pattern: Some(format!(
                    "{}/../data/delphes/dijet13_{{label}}_{size}.root",
                    env!("CARGO_MANIFEST_DIR")
                )),
                ..Default::default()
            };
            let input = crate::medic::test_support::converted(dir.path(), &convert);
            let mut store = EventStore::load(&cfg, &input).unwrap();
            // Standardized as the stages feed the network.
            let stats = store.feature_stats(&store.event_ids.clone()).unwrap();
            store.standardize(&stats);
            let ids: Vec<i64> = store.event_ids.iter().copied().step_by(step).collect();
            let t = store.assemble(&cfg, &ids, 3).unwrap();
            let m = ids.len() as i64;
            let tracks = Tensor::from_slice(&t.tracks).view([m, 30, 7]);
            let towers = Tensor::from_slice(&t.towers).view([m, 30, 8]);
            let met = Tensor::from_slice(&t.met).view([m, 3]);
            let padded = f64::try_from(
                tracks
                    .abs()
                    .sum_dim_intlist(-1, false, Kind::Float)
                    .eq(0.0)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float),
            )
            .unwrap();
            assert!(padded > 0.01, "{size}: the events have padding ({padded})");
            for mask_padding in [false, true] {
                tch::manual_seed(7);
                let (vs, net) = model(MedicArch {
                    window_head: WindowHead::EventMean,
                    mask_padding,
                    ..Default::default()
                });
                // q and k × 4: scores 16× larger, attention as peaked as a
                // trained network's.
                let mut scaled = 0;
                tch::no_grad(|| {
                    for (name, mut v) in vs.variables() {
                        if name.contains("attention.q.") || name.contains("attention.k.") {
                            let _ = v.g_mul_scalar_(4.0);
                            scaled += 1;
                        }
                    }
                });
                assert_eq!(scaled, 8, "q and k weights and biases of both encoders");
                assert_eq!(trained_norms(&vs), 8, "two LayerNorms' γ, β per encoder");
                tch::no_grad(|| {
                    let want = net.encode(&tracks, &towers, &met, false);
                    let slots = consecutive_slots(m, 1, Device::Cpu);
                    let want_p = net.score_windows(&want, &slots, false).windows.exp();
                    for &isa in &isas {
                        let fast = StreamingMedic::with_isa(&net, isa);
                        let got = fast.encode(&tracks, &towers, &met);
                        let diff = f64::try_from((&got - &want).abs().max()).unwrap();
                        assert!(
                            diff < 1e-4,
                            "{size} {isa:?} mask {mask_padding}: embeddings differ by {diff}"
                        );
                        let p = fast.score_windows(&got, &slots).exp();
                        let diff = f64::try_from((p - &want_p).abs().max()).unwrap();
                        assert!(
                            diff < 1e-4,
                            "{size} {isa:?} mask {mask_padding}: probabilities differ by {diff}"
                        );
                    }
                });
            }
        }
    }
}
