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

use crate::nn::SelfAttention;

/// Activation of the encoder's feed-forward blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// What the paper states.
    Gelu,
    /// What the reference implementation uses.
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
            activation: Activation::Gelu,
        }
    }
}

/// Added to σ̂ so that a collapsing softplus cannot make the NLL or χ²
/// infinite; far below any bin's Poisson uncertainty.
pub const SIGMA_FLOOR: f64 = 1e-7;

/// Relative time of a padding token (the reference implementation's choice).
pub const PAD_TIME: f32 = -100.0;

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
            a: nn::linear(&p / "a", input, hidden, Default::default()),
            norm: nn::layer_norm(&p / "norm", vec![hidden], Default::default()),
            b: nn::linear(&p / "b", hidden, output, Default::default()),
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
            attention: SelfAttention::new(&p / "attention", d, arch.heads),
            norm1: nn::layer_norm(&p / "norm1", vec![d], Default::default()),
            ff1: nn::linear(&p / "ff1", d, arch.feed_forward, Default::default()),
            ff2: nn::linear(&p / "ff2", arch.feed_forward, d, Default::default()),
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

/// The DINAMO-ML reference predictor.
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
        Self {
            histogram: Block::new(p / "histogram", nb, d, d),
            time: Block::new(p / "time", 1, d, d),
            layers: (0..arch.layers)
                .map(|i| EncoderLayer::new(p / format!("layer{i}"), &arch))
                .collect(),
            mu: Block::new(p / "mu", d, d, nb),
            sigma: Block::new(p / "sigma", d, d, nb),
            arch,
        }
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
        let sigma = self.sigma.forward(&pooled).softplus() + SIGMA_FLOOR;
        (mu, sigma)
    }
}

/// The context of run `current`: the last `m` good runs before it (of
/// `good`, `(run, unit-normalized histogram)` in run order), oldest first,
/// as `[M, N_b]` histograms and `[M]` times relative to `current`. Missing
/// entries are padded at the front with the flat histogram 1/N_b at
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
    let mut hist = vec![1.0 / n_bins as f32; pad * n_bins];
    let mut time = vec![PAD_TIME; pad];
    for (run, h) in used {
        hist.extend_from_slice(h);
        time.push((run - current) as f32);
    }
    (hist, time)
}

/// The paper's Gaussian NLL: mean over runs and bins of
/// ½[((x − μ̂)/σ̂)² + ln σ̂²].
pub fn gaussian_nll(x: &Tensor, mu: &Tensor, sigma: &Tensor) -> Tensor {
    let z = (x - mu) / sigma;
    (z.square() + sigma.square().log()).mean(Kind::Float) * 0.5
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
        // Run 3 sees only run 2: one pad token first.
        let (h, t) = build_context(&good, 3, 3, 2);
        assert_eq!(h, vec![0.5, 0.5, 0.5, 0.5, 2.0, 0.0]);
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
    fn nll_by_hand() {
        let x = Tensor::from_slice(&[0.3f32, 0.7]).view([1, 2]);
        let mu = Tensor::from_slice(&[0.5f32, 0.5]).view([1, 2]);
        let sigma = Tensor::from_slice(&[0.1f32, 0.2]).view([1, 2]);
        // ½·mean(((−0.2/0.1)² + ln 0.01), ((0.2/0.2)² + ln 0.04))
        let want = 0.5 * ((4.0 + 0.01f64.ln()) + (1.0 + 0.04f64.ln())) / 2.0;
        let got = gaussian_nll(&x, &mu, &sigma).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
