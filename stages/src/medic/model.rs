//! The MEDIC classifier (medic.txt section 3) in libtorch via tch, with the
//! sizes of the published reference implementation: per-event set
//! encoders for tracks and towers (a post-norm transformer block and
//! attention pooling), an MLP for MET, then a CNN over (object type x window)
//! and a classification head giving log-probabilities of the 4 classes.

use tch::nn::{self, Module, ModuleT};

use crate::medic::fused_encoder::{Dense, EncoderWeights};
use crate::nn::SelfAttention;
use tch::{Kind, Tensor};

/// Architecture parameters (saved next to the weights as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MedicArch {
    pub track_features: i64,
    pub tower_features: i64,
    pub met_features: i64,
    pub embed: i64,
    pub heads: i64,
    pub feed_forward: i64,
    pub dropout: f64,
    pub classes: i64,
    /// Keep zero-padded objects out of attention and pooling (the reference
    /// lets them take part).
    pub mask_padding: bool,
    /// A per-event head (linear, on the three embeddings of one event) that
    /// predicts the event's own configuration, for the auxiliary loss of
    /// `medic_train` (`event_loss_weight`; our extension, not the paper's).
    /// Absent from models trained without it.
    #[serde(default)]
    pub event_head: bool,
    /// How a window's class probabilities come from its events'
    /// embeddings: the paper's CNN and head, or the mean of the per-event
    /// head's probabilities (needs `event_head`; ours).
    #[serde(default)]
    pub window_head: WindowHead,
}

/// The window part of the network.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WindowHead {
    /// A 3-layer CNN over (object type × window) and a 256→128→64 head (the paper).
    #[default]
    Cnn,
    /// The mean over the window of the per-event head's class
    /// probabilities: the window's label is the fraction of its events of
    /// each class, so a per-event classifier and counting is all it takes
    /// (ours; no CNN parameters).
    EventMean,
}

impl MedicArch {
    /// Whether the network has the per-event head: asked for, or needed by
    /// the event-mean window head.
    pub fn has_event_head(&self) -> bool {
        self.event_head || self.window_head == WindowHead::EventMean
    }
}

impl Default for MedicArch {
    fn default() -> Self {
        Self {
            track_features: 7,
            tower_features: 8,
            met_features: 3,
            embed: 128,
            heads: 4,
            feed_forward: 128,
            dropout: 0.1,
            classes: 4,
            mask_padding: false,
            event_head: false,
            window_head: WindowHead::Cnn,
        }
    }
}

/// One set encoder: input projection, post-norm transformer block, attention pooling.
#[derive(Debug)]
struct SetEncoder {
    input: nn::Linear,
    attention: SelfAttention,
    norm1: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
    norm2: nn::LayerNorm,
    pool: nn::Linear,
}

impl SetEncoder {
    fn new(p: nn::Path, features: i64, arch: &MedicArch) -> Self {
        let e = arch.embed;
        Self {
            input: nn::linear(&p / "input", features, e, Default::default()),
            attention: SelfAttention::new(&p / "attention", e, arch.heads),
            norm1: nn::layer_norm(&p / "norm1", vec![e], Default::default()),
            ff1: nn::linear(&p / "ff1", e, arch.feed_forward, Default::default()),
            ff2: nn::linear(&p / "ff2", arch.feed_forward, e, Default::default()),
            norm2: nn::layer_norm(&p / "norm2", vec![e], Default::default()),
            pool: nn::linear(&p / "pool", e, 1, Default::default()),
        }
    }

    /// `x`: [M events, N objects, F] -> [M, embed].
    fn forward(&self, flat: &Tensor, arch: &MedicArch, train: bool) -> Tensor {
        let padded = arch
            .mask_padding
            .then(|| flat.abs().sum_dim_intlist(-1, false, Kind::Float).eq(0.0));
        let dropout = arch.dropout;
        let h = self.input.forward(flat);
        let a = self.attention.forward(&h, padded.as_ref(), dropout, train);
        let h = self.norm1.forward(&(h + a.dropout(dropout, train)));
        let ff = self.ff2.forward(&self.ff1.forward(&h).relu());
        let h = self.norm2.forward(&(&h + ff.dropout(dropout, train)));
        let mut scores = self.pool.forward(&h);
        if let Some(padded) = &padded {
            scores = scores.masked_fill(&padded.unsqueeze(-1), -1e9);
        }
        let weights = scores.softmax(1, Kind::Float);
        (weights * h).sum_dim_intlist(1, false, Kind::Float)
    }

    /// The trained parameters as plain numbers, for
    /// [`FusedEncoder`](crate::medic::fused_encoder::FusedEncoder).
    fn weights(&self, arch: &MedicArch) -> EncoderWeights {
        let dense = |l: &nn::Linear| Dense {
            weight: numbers(&l.ws),
            bias: numbers(l.bs.as_ref().expect("layers with biases")),
        };
        let norm = |l: &nn::LayerNorm| {
            let affine = |t: &Option<Tensor>| numbers(t.as_ref().expect("affine LayerNorm"));
            (affine(&l.ws), affine(&l.bs))
        };
        let a = &self.attention;
        EncoderWeights {
            features: self.input.ws.size()[1] as usize,
            embed: arch.embed as usize,
            heads: arch.heads as usize,
            input: dense(&self.input),
            q: dense(&a.q),
            k: dense(&a.k),
            v: dense(&a.v),
            out: dense(&a.out),
            norm1: norm(&self.norm1),
            ff1: dense(&self.ff1),
            ff2: dense(&self.ff2),
            norm2: norm(&self.norm2),
            // The norms are built with tch's default configuration.
            eps: nn::LayerNormConfig::default().eps,
            pool: numbers(&self.pool.ws),
            mask_padding: arch.mask_padding,
        }
    }
}

/// A parameter tensor's numbers (f32, row-major).
fn numbers(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).contiguous().view([-1]))
        .expect("f32 parameters")
}

/// The whole classifier.
#[derive(Debug)]
pub struct Medic {
    pub arch: MedicArch,
    tracks: SetEncoder,
    towers: SetEncoder,
    met1: nn::Linear,
    met2: nn::Linear,
    /// The CNN and head (`WindowHead::Cnn`).
    window: Option<(nn::SequentialT, nn::SequentialT)>,
    event_head: Option<nn::Linear>,
}

impl Medic {
    pub fn new(p: &nn::Path, arch: MedicArch) -> Self {
        let e = arch.embed;
        let conv = |p: nn::Path, i, o| {
            nn::conv2d(
                p,
                i,
                o,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            )
        };
        let cnn = || {
            nn::seq_t()
                .add(conv(p / "conv1", e, 64))
                .add(nn::batch_norm2d(p / "bn1", 64, Default::default()))
                .add_fn(|x| x.relu())
                .add(conv(p / "conv2", 64, 128))
                .add(nn::batch_norm2d(p / "bn2", 128, Default::default()))
                .add_fn(|x| x.relu())
                .add(conv(p / "conv3", 128, 256))
                .add(nn::batch_norm2d(p / "bn3", 256, Default::default()))
                .add_fn(|x| x.relu())
                .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        };
        let head = || {
            nn::seq_t()
                .add(nn::linear(p / "fc1", 256, 128, Default::default()))
                .add_fn(|x| x.relu())
                .add_fn_t(|x, train| x.dropout(0.3, train))
                .add(nn::linear(p / "fc2", 128, 64, Default::default()))
                .add_fn(|x| x.relu())
                .add_fn_t(|x, train| x.dropout(0.2, train))
                .add(nn::linear(p / "fc3", 64, arch.classes, Default::default()))
        };
        let window = (arch.window_head == WindowHead::Cnn).then(|| (cnn(), head()));
        let event_head = arch
            .has_event_head()
            .then(|| nn::linear(p / "event_head", 3 * e, arch.classes, Default::default()));
        Self {
            tracks: SetEncoder::new(p / "tracks", arch.track_features, &arch),
            towers: SetEncoder::new(p / "towers", arch.tower_features, &arch),
            met1: nn::linear(p / "met1", arch.met_features, e, Default::default()),
            met2: nn::linear(p / "met2", e, e, Default::default()),
            window,
            event_head,
            arch,
        }
    }

    /// Log-probabilities [B, classes] of windows: tracks [B,W,Nt,Ft],
    /// towers [B,W,Nw,Fw], met [B,W,Fm]. Every event of every window is
    /// encoded (the paper's per-window mode).
    pub fn forward(&self, tracks: &Tensor, towers: &Tensor, met: &Tensor, train: bool) -> Tensor {
        let (b, w) = (tracks.size()[0], tracks.size()[1]);
        let events = self.encode_windows(tracks, towers, met, train);
        self.score_windows(&events, &consecutive_slots(b, w, events.device()), train)
            .windows
    }

    /// Embeddings `[B·W, 3, E]` of the events of B windows given as
    /// tracks [B,W,Nt,Ft], towers [B,W,Nw,Fw], met [B,W,Fm], window after
    /// window (their slots: [`consecutive_slots`]).
    pub fn encode_windows(
        &self,
        tracks: &Tensor,
        towers: &Tensor,
        met: &Tensor,
        train: bool,
    ) -> Tensor {
        let events = |x: &Tensor| x.flatten(0, 1);
        self.encode(&events(tracks), &events(towers), &events(met), train)
    }

    /// Embeddings `[M, 3, E]` (tracks, towers, MET) of M single events:
    /// tracks [M,Nt,Ft], towers [M,Nw,Fw], met [M,Fm]. The part of the
    /// network that sees one event at a time, so an event shared by many
    /// windows can be encoded once.
    pub fn encode(&self, tracks: &Tensor, towers: &Tensor, met: &Tensor, train: bool) -> Tensor {
        let t = self.tracks.forward(tracks, &self.arch, train);
        let w = self.towers.forward(towers, &self.arch, train);
        let m = self.met2.forward(&self.met1.forward(met).relu());
        Tensor::stack(&[t, w, m], 1)
    }

    /// Whether the network lives on the CPU (where [`StreamingMedic`]'s
    /// kernels run).
    ///
    /// [`StreamingMedic`]: crate::medic::streaming::StreamingMedic
    pub(crate) fn on_cpu(&self) -> bool {
        self.met1.ws.device() == tch::Device::Cpu
    }

    /// The tracks' and towers' set encoders as plain numbers.
    pub(crate) fn encoder_weights(&self) -> [EncoderWeights; 2] {
        [
            self.tracks.weights(&self.arch),
            self.towers.weights(&self.arch),
        ]
    }

    /// The event-mean window head's layer (weight `[classes][3E]`, bias),
    /// none with the CNN head.
    pub(crate) fn event_mean_head(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        match (&self.window, &self.event_head) {
            (None, Some(head)) => {
                let bias = head.bs.as_ref().expect("the event head has a bias");
                Some((numbers(&head.ws), numbers(bias)))
            }
            _ => None,
        }
    }

    /// The MET embeddings `[M, E]` of `met` `[M, F]`.
    pub(crate) fn encode_met(&self, met: &Tensor) -> Tensor {
        self.met2.forward(&self.met1.forward(met).relu())
    }

    /// With the event-mean head, the windows' log-probabilities `[B,
    /// classes]` with each of the M events' probabilities computed once
    /// (libtorch; [`Self::score_windows`] computes them per slot).
    pub(crate) fn event_mean_scores(&self, events: &Tensor, slots: &Tensor) -> Option<Tensor> {
        let head = self.event_head.as_ref().filter(|_| self.window.is_none())?;
        let (b, w) = slots.size2().expect("slots: [B, W]");
        Some(
            head.forward(&events.flatten(-2, -1))
                .log_softmax(-1, Kind::Float)
                .index_select(0, &slots.view([-1]))
                .view([b, w, self.arch.classes])
                .logsumexp([1], false)
                - (w as f64).ln(),
        )
    }

    /// The windows made of encoded events: `events` `[M, 3, E]`, window
    /// b's slot w holding event `slots[b, w]` (`[B, W]`, Int64). The CNN
    /// head reads each window's `[E, 3, W]` block; the event-mean head
    /// averages the per-event probabilities of the window's slots. Also the
    /// per-event log-probabilities of the M events, with an event head.
    pub fn score_windows(&self, events: &Tensor, slots: &Tensor, train: bool) -> Scores {
        let (b, w) = slots.size2().expect("slots: [B, W]");
        let windows = events
            .index_select(0, &slots.view([-1]))
            .view([b, w, 3, self.arch.embed]);
        let event_log_probs = |x: &Tensor| {
            self.event_head.as_ref().map(|head| {
                head.forward(&x.flatten(-2, -1))
                    .log_softmax(-1, Kind::Float)
            })
        };
        let scores = match &self.window {
            Some((cnn, head)) => {
                // [B, W, 3, E] -> [B, E, 3, W]: embedding dimensions become channels.
                let x = windows.permute([0, 3, 2, 1]);
                head.forward_t(&cnn.forward_t(&x, train), train)
                    .log_softmax(-1, Kind::Float)
            }
            // ln of the mean over W of the slots' probabilities. The head
            // runs per slot rather than per distinct event: the same
            // values, in the floating-point order every recorded figure
            // was trained with (BENCHMARKS.md).
            None => {
                event_log_probs(&windows)
                    .expect("an event-mean window head comes with an event head")
                    .logsumexp([1], false)
                    - (w as f64).ln()
            }
        };
        Scores {
            windows: scores,
            per_event: event_log_probs(events),
        }
    }
}

/// What [`Medic::score_windows`] gives.
pub struct Scores {
    /// `[B, classes]` log-probabilities of the windows.
    pub windows: Tensor,
    /// `[M, classes]` log-probabilities of each event's own class, with an
    /// event head.
    pub per_event: Option<Tensor>,
}

/// Slots `[B, W]` of B windows of W events laid out one window after the
/// other (event b·W + w in slot (b, w)).
pub fn consecutive_slots(b: i64, w: i64, device: tch::Device) -> Tensor {
    Tensor::arange(b * w, (Kind::Int64, device)).view([b, w])
}

/// Per-window KL(target || prediction), summed over classes: the MEDIC loss
/// (before class weights). `target`: [B, classes] fractions; `log_probs`: the
/// model output. Classes absent from a target contribute 0 (0 ln 0 = 0).
pub fn kl_per_window(target: &Tensor, log_probs: &Tensor) -> Tensor {
    let log_target = target.clamp_min(1e-12).log();
    (target * (log_target - log_probs)).sum_dim_intlist(-1, false, Kind::Float)
}

/// Trainable parameters of a variable store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    use crate::medic::test_support::medic as model;

    #[test]
    fn reference_sizes_give_704k_parameters_and_the_right_shapes() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        let (vs, m) = model(MedicArch::default());
        // Set encoders 100,737 + 100,865, MET 17,024, CNN 443,712, head 41,412.
        assert_eq!(parameter_count(&vs), 703_750);
        let (b, w) = (2, 30);
        let out = m.forward(
            &Tensor::randn([b, w, 30, 7], (Kind::Float, Device::Cpu)),
            &Tensor::randn([b, w, 30, 8], (Kind::Float, Device::Cpu)),
            &Tensor::randn([b, w, 3], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), [b, 4]);
        let total = out.exp().sum_dim_intlist(-1, false, Kind::Float);
        assert!(total.allclose(
            &Tensor::ones([b], (Kind::Float, Device::Cpu)),
            1e-5,
            1e-5,
            false
        ));
    }

    /// The block (libtorch's fused attention) against softmax(QK^T/sqrt(d))V
    /// written out, with and without a padding mask.
    #[test]
    fn attention_matches_a_manual_computation() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = SelfAttention::new(vs.root(), 16, 4);
        let x = Tensor::randn([3, 5, 16], (Kind::Float, Device::Cpu));
        let padded = Tensor::from_slice(&[
            false, false, false, true, true, false, false, false, false, false, false, true, true,
            true, true,
        ])
        .view([3, 5]);
        let split = |l: &nn::Linear| l.forward(&x).view([3, 5, 4, 4]).transpose(1, 2);
        for mask in [None, Some(&padded)] {
            let ours = attn.forward(&x, mask, 0.0, false);
            let mut scores = split(&attn.q).matmul(&split(&attn.k).transpose(-2, -1)) / 2.0;
            if let Some(m) = mask {
                scores = scores.masked_fill(&m.view([3, 1, 1, 5]), -1e9);
            }
            let manual = scores.softmax(-1, Kind::Float).matmul(&split(&attn.v));
            let manual = attn
                .out
                .forward(&manual.transpose(1, 2).contiguous().view([3, 5, 16]));
            assert!(
                ours.allclose(&manual, 1e-5, 1e-5, false),
                "mask: {}",
                mask.is_some()
            );
        }
    }

    #[test]
    fn set_encoders_are_permutation_invariant() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        for mask_padding in [false, true] {
            let (_vs, m) = model(MedicArch {
                mask_padding,
                ..Default::default()
            });
            let tracks = Tensor::randn([2, 30, 7], (Kind::Float, Device::Cpu));
            let perm = Tensor::randperm(30, (Kind::Int64, Device::Cpu));
            let shuffled = tracks.index_select(1, &perm);
            let a = m.tracks.forward(&tracks, &m.arch, false);
            let b = m.tracks.forward(&shuffled, &m.arch, false);
            assert!(
                a.allclose(&b, 1e-5, 1e-5, false),
                "mask_padding={mask_padding}"
            );
        }
    }

    /// The event-mean window head: a window's probabilities are the mean of
    /// its events' per-event-head probabilities, and the CNN is absent.
    #[test]
    fn event_mean_window_head_averages_the_events_probabilities() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        let (vs, m) = model(MedicArch {
            window_head: WindowHead::EventMean,
            ..Default::default()
        });
        // Encoders 201,602 + MET 17,024 + event head 384·4 + 4.
        assert_eq!(parameter_count(&vs), 100_737 + 100_865 + 17_024 + 1_540);
        let events = Tensor::randn([10, 3, 128], (Kind::Float, Device::Cpu));
        let scores = m.score_windows(&events, &consecutive_slots(2, 5, Device::Cpu), false);
        let window = scores.windows.exp();
        let per_event = scores.per_event.unwrap().exp().view([2, 5, 4]);
        let mean = per_event.mean_dim([1].as_slice(), false, Kind::Float);
        assert!(window.allclose(&mean, 1e-6, 1e-6, false));
    }

    #[test]
    fn kl_loss_by_hand() {
        let t = Tensor::from_slice(&[0.5f32, 0.5, 0.0, 0.0]).view([1, 4]);
        let p = Tensor::from_slice(&[0.25f32, 0.25, 0.25, 0.25])
            .view([1, 4])
            .log();
        // 0.5 ln(0.5/0.25) * 2 = ln 2.
        let kl = kl_per_window(&t, &p).double_value(&[0]);
        assert!((kl - std::f64::consts::LN_2).abs() < 1e-6, "{kl}");
        assert!(
            kl_per_window(&t, &t.clamp_min(1e-12).log())
                .double_value(&[0])
                .abs()
                < 1e-6
        );
    }

    /// A few optimizer steps on windows of the bundled Delphes sample reduce
    /// the KL loss: the data path (convert, windows, assembly) and the model
    /// fit together.
    #[test]
    fn training_on_bundled_windows_reduces_the_loss() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        use crate::medic::data::EventStore;
        use crate::medic::sliding_windows::SlidingWindows;
        use crate::medic::tables::WindowSpec;
        use tch::nn::OptimizerConfig;

        let dir = tempfile::tempdir().unwrap();
        let input = crate::medic::test_support::bundled_events(
            dir.path(),
            &[
                "normal",
                "hcal_barrel_off",
                "hcal_endcap_off",
                "hcal_forward_off",
            ],
        );
        let cfg = SlidingWindows(WindowSpec {
            window: 10,
            seed: 5,
            ..Default::default()
        });
        let store = EventStore::load(&cfg, &input).unwrap();
        let (order, _) = cfg.shuffle(&store.event_ids);
        // 32 windows at starts 0, 10, 20, ...: targets from class fractions.
        let (mut tr, mut tw, mut me, mut target) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let class_of: std::collections::HashMap<i64, i8> = store
            .event_ids
            .iter()
            .copied()
            .zip(store.classes.iter().copied())
            .collect();
        for k in 0..32 {
            let ids = &order[k * 10..k * 10 + 10];
            let t = store
                .assemble(&cfg, ids, cfg.sample_seed(k as i64))
                .unwrap();
            tr.extend(t.tracks);
            tw.extend(t.towers);
            me.extend(t.met);
            let mut p = [0f32; 4];
            for id in ids {
                p[class_of[id] as usize] += 0.1;
            }
            target.extend(p);
        }
        let tracks = Tensor::from_slice(&tr).view([32, 10, 30, 7]);
        let towers = Tensor::from_slice(&tw).view([32, 10, 30, 8]);
        let met = Tensor::from_slice(&me).view([32, 10, 3]);
        let target = Tensor::from_slice(&target).view([32, 4]);

        let (vs, m) = model(MedicArch::default());
        let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
        let loss = |train| {
            kl_per_window(&target, &m.forward(&tracks, &towers, &met, train)).mean(Kind::Float)
        };
        let before = tch::no_grad(|| loss(false)).double_value(&[]);
        for _ in 0..30 {
            opt.backward_step(&loss(true));
        }
        let after = tch::no_grad(|| loss(false)).double_value(&[]);
        assert!(after < 0.7 * before, "KL {before} -> {after}");
    }

    #[test]
    fn masking_ignores_padded_objects() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        let (_vs, m) = model(MedicArch {
            mask_padding: true,
            ..Default::default()
        });
        let real = Tensor::randn([1, 10, 7], (Kind::Float, Device::Cpu));
        let padded = Tensor::cat(
            &[
                real.shallow_clone(),
                Tensor::zeros([1, 20, 7], (Kind::Float, Device::Cpu)),
            ],
            1,
        );
        let a = m.tracks.forward(&real, &m.arch, false);
        let b = m.tracks.forward(&padded, &m.arch, false);
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
    }
}
