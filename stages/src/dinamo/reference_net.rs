//! The DINAMO-ML network (dinamo.txt section 2.2, Figure 1, Algorithm 3):
//! a transformer encoder reads the last M good histograms (unit-normalized)
//! with their times relative to the current run, and predicts the reference
//! histogram μ̂ (softmax: sums to 1) and its per-bin uncertainty σ̂
//! (softplus: positive). The online-learning stage built on it is
//! `dinamo_ml` (`dinamo_ml.rs`); this module holds the network, the context
//! construction and the loss, each tested on its own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::nn::{SelfAttention, pytorch_linear};

/// Activation of the encoder's feed-forward blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// What the paper's text states (section 5).
    Gelu,
    /// What the paper's reference code runs (`activation="relu"`), and so
    /// what its published figures were measured with: the default here.
    Relu,
}

/// Network sizes; defaults are the paper's (section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlArch {
    pub n_bins: i64,
    /// M: good runs in the context.
    pub context: usize,
    pub d_model: i64,
    pub heads: i64,
    pub feed_forward: i64,
    pub layers: usize,
    pub dropout: f64,
    pub activation: Activation,
}

impl Default for MlArch {
    fn default() -> Self {
        Self {
            n_bins: 100,
            context: 20,
            d_model: 100,
            heads: 10,
            feed_forward: 100,
            layers: 3,
            dropout: 0.15,
            activation: Activation::Relu,
        }
    }
}

/// Presets of the network's size and the online schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Chosen on development datasets (seeds 100-107, BENCHMARKS.md) for
    /// 2 CPU cores: context 10, d_model 50, 5 heads, feed-forward 50,
    /// patience 2, at most 10 iterations. Stopping at 5 iterations kept the
    /// balanced accuracy but not the uncertainty σ̂ (the Jaccard distance
    /// doubled); half the context and width cost neither.
    Fast,
    /// The paper's (section 5) and its reference code's: context 20,
    /// d_model 100, 10 heads, feed-forward 100, patience 5.
    Paper,
}

/// The six values a [`Schedule`] presets, as in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub context: usize,
    pub d_model: i64,
    pub heads: i64,
    pub feed_forward: i64,
    pub patience: usize,
    pub max_iterations: usize,
}

impl Schedule {
    pub fn preset(self) -> Preset {
        match self {
            Schedule::Fast => Preset {
                context: 10,
                d_model: 50,
                heads: 5,
                feed_forward: 50,
                patience: 2,
                max_iterations: 10,
            },
            Schedule::Paper => {
                let arch = MlArch::default();
                Preset {
                    context: arch.context,
                    d_model: arch.d_model,
                    heads: arch.heads,
                    feed_forward: arch.feed_forward,
                    patience: 5,
                    max_iterations: 1000,
                }
            }
        }
    }
}

/// How an online update trains (Algorithm 3): on the K most recent good
/// runs, AdamW, until `patience` iterations without a lower loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// K.
    pub batch_runs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub patience: usize,
    pub max_iterations: usize,
}

/// Smallest variance σ̂² the loss divides by (`nn.GaussianNLLLoss(eps=1e-9)`
/// of the reference code): the value is clamped, the gradient is not.
pub const VAR_EPS: f64 = 1e-9;

/// Relative time of a padding token (the reference code's choice).
pub const PAD_TIME: f32 = -100.0;

/// Content of every bin of a padding histogram (the reference code pads
/// with 0.01 whatever the number of bins).
pub const PAD_VALUE: f32 = 0.01;

/// Linear → LayerNorm → ReLU → Linear: the embeddings and heads of Figure 1.
#[derive(Debug)]
struct Block {
    a: nn::Linear,
    norm: nn::LayerNorm,
    b: nn::Linear,
}

impl Block {
    fn new(p: nn::Path, input: i64, hidden: i64, output: i64) -> Self {
        Self {
            a: pytorch_linear(&p / "a", input, hidden),
            norm: nn::layer_norm(&p / "norm", vec![hidden], Default::default()),
            b: pytorch_linear(&p / "b", hidden, output),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.b
            .forward(&self.norm.forward(&self.a.forward(x)).relu())
    }
}

/// One post-norm encoder layer, as PyTorch's `TransformerEncoderLayer`
/// with `norm_first=False`.
#[derive(Debug)]
struct EncoderLayer {
    attention: SelfAttention,
    norm1: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
    norm2: nn::LayerNorm,
}

impl EncoderLayer {
    fn new(p: nn::Path, arch: &MlArch) -> Self {
        let d = arch.d_model;
        Self {
            attention: SelfAttention::pytorch_multihead(&p / "attention", d, arch.heads),
            norm1: nn::layer_norm(&p / "norm1", vec![d], Default::default()),
            ff1: pytorch_linear(&p / "ff1", d, arch.feed_forward),
            ff2: pytorch_linear(&p / "ff2", arch.feed_forward, d),
            norm2: nn::layer_norm(&p / "norm2", vec![d], Default::default()),
        }
    }

    fn forward(&self, x: &Tensor, arch: &MlArch, train: bool) -> Tensor {
        let a = self.attention.forward(x, None, arch.dropout, train);
        let x = self.norm1.forward(&(x + a.dropout(arch.dropout, train)));
        let h = self.ff1.forward(&x);
        let h = match arch.activation {
            Activation::Gelu => h.gelu("none"),
            Activation::Relu => h.relu(),
        };
        let h = self.ff2.forward(&h.dropout(arch.dropout, train));
        self.norm2.forward(&(&x + h.dropout(arch.dropout, train)))
    }
}

/// Every parameter of an encoder layer, in a fixed order.
fn layer_params(l: &EncoderLayer) -> Vec<&Tensor> {
    let a = &l.attention;
    let mut v: Vec<&Tensor> = vec![&l.ff1.ws, &l.ff2.ws, &a.q.ws, &a.k.ws, &a.v.ws, &a.out.ws];
    for optional in [
        &l.norm1.ws,
        &l.norm1.bs,
        &l.norm2.ws,
        &l.norm2.bs,
        &l.ff1.bs,
        &l.ff2.bs,
        &a.q.bs,
        &a.k.bs,
        &a.v.bs,
        &a.out.bs,
    ] {
        v.extend(optional.iter());
    }
    v
}

/// The DINAMO-ML reference predictor, initialised as the reference code's
/// PyTorch modules are (`nn.Linear` and `nn.MultiheadAttention` defaults;
/// `nn.TransformerEncoder` deep-copies one layer, so every encoder layer
/// starts from the same parameters).
#[derive(Debug)]
pub struct ReferenceNet {
    pub arch: MlArch,
    histogram: Block,
    time: Block,
    layers: Vec<EncoderLayer>,
    mu: Block,
    sigma: Block,
}

impl ReferenceNet {
    pub fn new(p: &nn::Path, arch: MlArch) -> Self {
        let (nb, d) = (arch.n_bins, arch.d_model);
        let net = Self {
            histogram: Block::new(p / "histogram", nb, d, d),
            time: Block::new(p / "time", 1, d, d),
            layers: (0..arch.layers)
                .map(|i| EncoderLayer::new(p / format!("layer{i}"), &arch))
                .collect(),
            // The heads' hidden width is N_b (Linear(d, N_b), LayerNorm(N_b), ...).
            mu: Block::new(p / "mu", d, nb, nb),
            sigma: Block::new(p / "sigma", d, nb, nb),
            arch,
        };
        net.copy_first_layer();
        net
    }

    /// Every encoder layer's parameters set to the first layer's.
    fn copy_first_layer(&self) {
        let Some((first, rest)) = self.layers.split_first() else {
            return;
        };
        let source = layer_params(first);
        tch::no_grad(|| {
            for layer in rest {
                for (dst, src) in layer_params(layer).into_iter().zip(&source) {
                    let mut dst = dst.shallow_clone();
                    dst.copy_(src);
                }
            }
        });
    }

    /// (μ̂, σ̂), each `[B, N_b]`, from contexts `histograms` `[B, M, N_b]`
    /// and relative `times` `[B, M]`.
    pub fn forward(&self, histograms: &Tensor, times: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut x = self.histogram.forward(histograms) + self.time.forward(&times.unsqueeze(-1));
        for layer in &self.layers {
            x = layer.forward(&x, &self.arch, train);
        }
        let pooled = x.mean_dim(1, false, Kind::Float);
        let mu = self.mu.forward(&pooled).softmax(-1, Kind::Float);
        let sigma = self.sigma.forward(&pooled).softplus();
        (mu, sigma)
    }
}

/// The context of run `current`: the last `m` good runs before it (of
/// `good`, `(run, unit-normalized histogram)` in run order), oldest first,
/// as `[M, N_b]` histograms and `[M]` times relative to `current`. Missing
/// entries are padded at the front with [`PAD_VALUE`] in every bin at
/// [`PAD_TIME`].
pub fn build_context(
    good: &[(i64, Vec<f32>)],
    current: i64,
    m: usize,
    n_bins: usize,
) -> (Vec<f32>, Vec<f32>) {
    let before = good.partition_point(|(run, _)| *run < current);
    let used = &good[before.saturating_sub(m)..before];
    let pad = m - used.len();
    let mut hist = vec![PAD_VALUE; pad * n_bins];
    let mut time = vec![PAD_TIME; pad];
    for (run, h) in used {
        hist.extend_from_slice(h);
        time.push((run - current) as f32);
    }
    (hist, time)
}

/// The paper's Gaussian NLL per run and bin, as
/// `nn.GaussianNLLLoss(full=False, eps=1e-9, reduction='none')`:
/// ½[ln v + (x − μ̂)²/v], v = σ̂² clamped below at [`VAR_EPS`] in value only
/// (PyTorch clamps without a gradient).
pub fn nll_terms(x: &Tensor, mu: &Tensor, sigma: &Tensor) -> Tensor {
    let var = sigma.square();
    let clamped = var.clamp_min(VAR_EPS).detach() - var.detach() + &var;
    ((x - mu).square() / &clamped + clamped.log()) * 0.5
}

/// [`nll_terms`] averaged over runs and bins (`reduction='mean'`).
pub fn gaussian_nll(x: &Tensor, mu: &Tensor, sigma: &Tensor) -> Tensor {
    nll_terms(x, mu, sigma).mean(Kind::Float)
}

/// What one online training step did.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStats {
    pub batch_runs: usize,
    pub iterations: usize,
    pub first_loss: f64,
    pub best_loss: f64,
}

/// The early stopping of one online update: iterate until `patience`
/// consecutive iterations without a lower loss (each iteration's own loss,
/// as the reference code), at most `max_iterations`.
pub struct EarlyStop {
    pub stats: UpdateStats,
    stale: usize,
    patience: usize,
    max_iterations: usize,
}

impl EarlyStop {
    pub fn new(batch_runs: usize, patience: usize, max_iterations: usize) -> Self {
        Self {
            stats: UpdateStats {
                batch_runs,
                iterations: 0,
                first_loss: f64::NAN,
                best_loss: f64::INFINITY,
            },
            stale: 0,
            patience,
            max_iterations,
        }
    }

    /// Records one iteration's loss; true when training should stop.
    pub fn record(&mut self, loss: f64) -> bool {
        let s = &mut self.stats;
        s.iterations += 1;
        if s.iterations == 1 {
            s.first_loss = loss;
        }
        if loss < s.best_loss {
            s.best_loss = loss;
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        self.stale >= self.patience || s.iterations >= self.max_iterations
    }
}

/// Contexts of several runs as batch tensors on `device`.
pub fn context_batch(
    contexts: &[(Vec<f32>, Vec<f32>)],
    arch: &MlArch,
    device: Device,
) -> (Tensor, Tensor) {
    let b = contexts.len() as i64;
    let m = arch.context as i64;
    let hist: Vec<f32> = contexts.iter().flat_map(|c| c.0.iter().copied()).collect();
    let time: Vec<f32> = contexts.iter().flat_map(|c| c.1.iter().copied()).collect();
    (
        Tensor::from_slice(&hist)
            .view([b, m, arch.n_bins])
            .to_device(device),
        Tensor::from_slice(&time).view([b, m]).to_device(device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_takes_the_last_m_good_runs_and_pads_in_front() {
        let good: Vec<(i64, Vec<f32>)> = [2, 5, 6, 9]
            .iter()
            .map(|&r| (r, vec![r as f32, 0.0]))
            .collect();
        // Run 7 sees runs 2, 5, 6 (not 9); M = 2 keeps 5 and 6.
        let (h, t) = build_context(&good, 7, 2, 2);
        assert_eq!(h, vec![5.0, 0.0, 6.0, 0.0]);
        assert_eq!(t, vec![-2.0, -1.0]);
        // Run 3 sees only run 2: pad tokens of 0.01 per bin first.
        let (h, t) = build_context(&good, 3, 3, 2);
        assert_eq!(h, vec![0.01, 0.01, 0.01, 0.01, 2.0, 0.0]);
        assert_eq!(t, vec![PAD_TIME, PAD_TIME, -1.0]);
        // No good run yet: all padding.
        let (_, t) = build_context(&good, 1, 2, 2);
        assert_eq!(t, vec![PAD_TIME, PAD_TIME]);
    }

    #[test]
    fn heads_give_a_normalized_reference_and_positive_uncertainty() {
        let _torch = crate::nn::exclusive();
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        for activation in [Activation::Gelu, Activation::Relu] {
            let arch = MlArch {
                n_bins: 12,
                context: 5,
                activation,
                ..Default::default()
            };
            let net = ReferenceNet::new(&(vs.root() / format!("{activation:?}")), arch.clone());
            let contexts: Vec<_> = (0..3)
                .map(|k| {
                    let good: Vec<(i64, Vec<f32>)> =
                        (0..k).map(|r| (r, vec![1.0 / 12.0; 12])).collect();
                    build_context(&good, 10, 5, 12)
                })
                .collect();
            let (h, t) = context_batch(&contexts, &arch, Device::Cpu);
            let (mu, sigma) = net.forward(&h, &t, false);
            assert_eq!(mu.size(), [3, 12]);
            let sums = mu.sum_dim_intlist(-1, false, Kind::Float);
            assert!(sums.allclose(
                &Tensor::ones([3], (Kind::Float, Device::Cpu)),
                1e-5,
                1e-5,
                false
            ));
            assert!(sigma.min().double_value(&[]) > 0.0);
        }
    }

    #[test]
    fn early_stop_counts_iterations_without_a_lower_loss() {
        let mut stop = EarlyStop::new(3, 2, 10);
        assert!(!stop.record(1.0));
        assert!(!stop.record(0.5));
        assert!(!stop.record(0.7));
        assert!(stop.record(0.5), "two iterations without going below 0.5");
        assert_eq!(stop.stats.iterations, 4);
        assert_eq!((stop.stats.first_loss, stop.stats.best_loss), (1.0, 0.5));
        let mut capped = EarlyStop::new(1, 5, 2);
        assert!(!capped.record(3.0));
        assert!(capped.record(2.0));
    }

    #[test]
    fn nll_by_hand() {
        let x = Tensor::from_slice(&[0.3f32, 0.7]).view([1, 2]);
        let mu = Tensor::from_slice(&[0.5f32, 0.5]).view([1, 2]);
        let sigma = Tensor::from_slice(&[0.1f32, 0.2]).view([1, 2]);
        // ½·mean(((−0.2/0.1)² + ln 0.01), ((0.2/0.2)² + ln 0.04))
        let want = 0.5 * ((4.0 + 0.01f64.ln()) + (1.0 + 0.04f64.ln())) / 2.0;
        let got = gaussian_nll(&x, &mu, &sigma).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    /// The network starts where the reference code's PyTorch modules do:
    /// linear layers within ±1/sqrt(fan_in), attention projections
    /// Xavier-uniform with zero biases, heads N_b wide inside, and every
    /// encoder layer a copy of the first.
    #[test]
    fn initialised_as_pytorch_modules_are() {
        let _torch = crate::nn::exclusive();
        tch::manual_seed(22);
        let vs = nn::VarStore::new(Device::Cpu);
        let arch = MlArch {
            n_bins: 40,
            ..Default::default()
        };
        let net = ReferenceNet::new(&vs.root(), arch);
        let max_abs = |t: &Tensor| t.abs().max().double_value(&[]);
        let vars = vs.variables();
        // The heads: Linear(d_model=100, N_b=40) then Linear(40, 40).
        assert_eq!(vars["mu.a.weight"].size(), [40, 100]);
        assert_eq!(vars["sigma.b.weight"].size(), [40, 40]);
        for (name, fan_in) in [("histogram.a", 40.0), ("mu.b", 40.0), ("layer0.ff1", 100.0)] {
            let bound = 1.0 / f64::sqrt(fan_in);
            for part in ["weight", "bias"] {
                let m = max_abs(&vars[&format!("{name}.{part}")]);
                assert!(
                    m <= bound && m > 0.8 * bound,
                    "{name}.{part}: {m} vs {bound}"
                );
            }
        }
        let xavier = (6.0f64 / 400.0).sqrt();
        let q = max_abs(&vars["layer0.attention.q.weight"]);
        assert!(q <= xavier && q > 0.8 * xavier, "{q}");
        assert_eq!(max_abs(&vars["layer0.attention.q.bias"]), 0.0);
        assert_eq!(max_abs(&vars["layer0.attention.out.bias"]), 0.0);
        for l in 1..3 {
            for (a, b) in layer_params(&net.layers[0])
                .iter()
                .zip(layer_params(&net.layers[l]))
            {
                assert!(a.equal(b), "layer {l} differs from layer 0 at init");
            }
        }
    }

    /// σ̂² below 1e-9 enters the loss as 1e-9 (PyTorch's eps), while its
    /// gradient is that of the unclamped variance.
    #[test]
    fn nll_clamps_the_variance_in_value_only() {
        let x = Tensor::from_slice(&[0.5f32]).view([1, 1]);
        let mu = Tensor::from_slice(&[0.5f32]).view([1, 1]);
        let sigma = Tensor::from_slice(&[1e-6f32])
            .view([1, 1])
            .set_requires_grad(true);
        let loss = gaussian_nll(&x, &mu, &sigma);
        let want = 0.5 * 1e-9f64.ln();
        assert!((loss.double_value(&[]) - want).abs() < 1e-4);
        loss.backward();
        // d/dσ ½ ln v through v = σ² with the clamp's gradient = identity:
        // ½ (1/1e-9) 2σ = 1e-6 / 1e-9 = 1000.
        let g = sigma.grad().double_value(&[0, 0]);
        assert!((g - 1000.0).abs() < 1.0, "{g}");
    }
}
