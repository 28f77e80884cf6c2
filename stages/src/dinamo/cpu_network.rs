//! DINAMO-ML's network, forward and backward, written out for the CPU.
//!
//! A training iteration of the paper's network (K = 10 samples of M = 20
//! tokens, d_model 100, three post-norm layers, the two heads and the
//! Gaussian NLL) is ~240 MFLOP of products over a few hundred rows. In
//! libtorch the products were a third of an iteration's time and the rest
//! per-operation work: copies of permuted views, one pass over memory per
//! element-wise operation, autograd's bookkeeping (BENCHMARKS.md). Here one
//! dataset's iteration runs start to end on one core: the products through
//! the packed dense kernel (`simd.rs`), everything between them one pass
//! per row, the backward pass written out layer by layer. Same function as
//! the stacked libtorch network (`batched_reference.rs`), which stays the
//! network on other devices and this one's reference in the tests.
//!
//! Activations are [`Mat`]s: rows padded to whole vectors, so a layer's
//! output is the next product's input as it lies.

use std::collections::HashMap;

use super::cpu_layers::{
    Buffer, Linear, Mat, Norm, add, linear, linear_backward, masked, nll_gradient, norm_backward,
    norm_forward, residual, softmax,
};
use super::reference_net::{Activation, MlArch};
use super::tokens::DistinctTokens;
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::vector_math::Avx2;
use crate::vector_math::{MulAdd, Separate};

/// Rows padded for vector loads in the attention's small products.
const VEC: usize = 8;

/// Linear → LayerNorm → ReLU → Linear (the embeddings and the heads).
#[derive(Debug, Clone, Copy)]
struct Block {
    a: Linear,
    norm: Norm,
    b: Linear,
}

/// One post-norm encoder layer (q, k, v fused, q first).
#[derive(Debug, Clone, Copy)]
struct Layer {
    qkv: Linear,
    out: Linear,
    norm1: Norm,
    ff1: Linear,
    ff2: Linear,
    norm2: Norm,
}

/// The network over one dataset's flat parameter row.
#[derive(Debug, Clone)]
pub struct CpuNetwork {
    arch: MlArch,
    histogram: Block,
    time: Block,
    layers: Vec<Layer>,
    mu: Block,
    sigma: Block,
    params: usize,
    isa: Isa,
    /// Ones, as many as the largest dropout site (`Masks` without dropout).
    ones: Vec<f32>,
}

/// One iteration's dropout multipliers of a dataset, as `draw_masks` lays
/// them out: sample by sample, layer by layer, the attention weights
/// `[H][M][M]`, the attention output `[M][E]`, the hidden layer `[M][F]`,
/// the feed-forward output `[M][E]`.
/// Without dropout every site reads ones (a product by 1 is exact), so
/// one branch-free path serves both.
#[derive(Clone, Copy)]
struct Masks<'a> {
    all: Option<&'a [f32]>,
    ones: &'a [f32],
    per_sample: usize,
    per_layer: usize,
    sizes: [usize; 4],
}

impl<'a> Masks<'a> {
    fn site(&self, sample: usize, layer: usize, site: usize) -> &'a [f32] {
        let Some(all) = self.all else {
            return &self.ones[..self.sizes[site]];
        };
        let start = sample * self.per_sample
            + layer * self.per_layer
            + self.sizes[..site].iter().sum::<usize>();
        &all[start..][..self.sizes[site]]
    }

    /// Token `t`'s row of `site` (1-3), `width` numbers.
    fn row(&self, t: usize, m: usize, layer: usize, site: usize, width: usize) -> &'a [f32] {
        &self.site(t / m, layer, site)[(t % m) * width..][..width]
    }
}

/// What a block's backward pass needs of its forward pass.
struct BlockCache {
    input: Mat,
    hat: Mat,
    rstd: Vec<f32>,
    relu: Mat,
    out: Mat,
}

/// What a layer's backward pass needs of its forward pass.
struct LayerCache {
    qkv: Mat,
    /// Softmax of the scores, `[samples][H][M][mp]` (mp = M padded).
    probs: Buffer,
    heads: Mat,
    hat1: Mat,
    rstd1: Vec<f32>,
    x1: Mat,
    /// ReLU of the hidden layer times its dropout mask: ff2's input.
    hidden: Mat,
    hat2: Mat,
    rstd2: Vec<f32>,
}

/// A forward pass's caches and outputs.
struct Forward {
    histogram: BlockCache,
    time: BlockCache,
    /// Each layer's input, then the last layer's output.
    xs: Vec<Mat>,
    layers: Vec<LayerCache>,
    mu: BlockCache,
    sigma: BlockCache,
    /// μ̂ and σ̂, `[samples][N_b]`.
    mu_hat: Mat,
    sigma_hat: Mat,
}

impl CpuNetwork {
    /// The network of `arch` over rows laid out as `entries` (names and
    /// shapes in row order, `batched_reference.rs`'s layout); `None` for
    /// what is not written here (the GELU activation).
    pub fn new(arch: &MlArch, entries: &[(String, Vec<i64>)]) -> Option<Self> {
        if arch.activation != Activation::Relu || arch.heads <= 0 {
            return None;
        }
        let mut at: HashMap<&str, (usize, &[i64])> = HashMap::new();
        let mut offset = 0;
        for (name, shape) in entries {
            at.insert(name, (offset, shape));
            offset += shape.iter().product::<i64>() as usize;
        }
        let get = |name: String| at.get(name.as_str()).copied();
        let linear = |name: &str| {
            let (w, shape) = get(format!("{name}.weight"))?;
            let (b, _) = get(format!("{name}.bias"))?;
            Some(Linear {
                w,
                b,
                out: shape[0] as usize,
                inp: shape[1] as usize,
            })
        };
        let norm = |name: &str| {
            let (g, shape) = get(format!("{name}.weight"))?;
            let (b, _) = get(format!("{name}.bias"))?;
            Some(Norm {
                g,
                b,
                width: shape[0] as usize,
            })
        };
        let block = |name: &str| {
            Some(Block {
                a: linear(&format!("{name}.a"))?,
                norm: norm(&format!("{name}.norm"))?,
                b: linear(&format!("{name}.b"))?,
            })
        };
        let layers = (0..arch.layers)
            .map(|i| {
                let l = format!("layer{i}");
                Some(Layer {
                    qkv: linear(&format!("{l}.attention.qkv"))?,
                    out: linear(&format!("{l}.attention.out"))?,
                    norm1: norm(&format!("{l}.norm1"))?,
                    ff1: linear(&format!("{l}.ff1"))?,
                    ff2: linear(&format!("{l}.ff2"))?,
                    norm2: norm(&format!("{l}.norm2"))?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let a = arch;
        let (h, m) = (a.heads as usize, a.context);
        let widest = (h * m * m).max(m * a.d_model.max(a.feed_forward) as usize);
        Some(Self {
            ones: vec![1.0; widest],
            arch: arch.clone(),
            histogram: block("histogram")?,
            time: block("time")?,
            layers,
            mu: block("mu")?,
            sigma: block("sigma")?,
            params: offset,
            isa: Isa::detect(),
        })
    }

    /// The same network run with `isa`'s kernels (tests compare them all).
    #[cfg(test)]
    pub fn with_isa(self, isa: Isa) -> Self {
        Self { isa, ..self }
    }

    /// Numbers in a parameter row.
    pub fn params(&self) -> usize {
        self.params
    }

    /// Numbers of dropout multipliers one sample draws per iteration.
    pub fn masks_per_sample(&self) -> usize {
        self.mask_sizes().iter().sum::<usize>() * self.arch.layers
    }

    fn mask_sizes(&self) -> [usize; 4] {
        let a = &self.arch;
        let (h, m, e, f) = (
            a.heads as usize,
            a.context,
            a.d_model as usize,
            a.feed_forward as usize,
        );
        [h * m * m, m * e, m * f, m * e]
    }

    fn masks<'a>(&'a self, all: Option<&'a [f32]>) -> Masks<'a> {
        let sizes = self.mask_sizes();
        let per_layer: usize = sizes.iter().sum();
        Masks {
            all,
            ones: &self.ones,
            per_sample: per_layer * self.arch.layers,
            per_layer,
            sizes,
        }
    }

    /// (μ̂, σ̂), `N_b` each, in evaluation mode, from one context (M
    /// tokens).
    pub fn predict(&self, p: &[f32], context: &DistinctTokens) -> (Vec<f32>, Vec<f32>) {
        assert_eq!(p.len(), self.params, "a parameter row");
        let f = match self.isa {
            // SAFETY: `Isa::detect` gives these only on CPUs with AVX2 + FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { forward_avx2(self, p, context, 1, None) },
            _ => self.forward::<Separate>(p, context, 1, None),
        };
        (f.mu_hat.row(0).to_vec(), f.sigma_hat.row(0).to_vec())
    }

    /// One training iteration of one dataset: its loss (the Gaussian NLL
    /// averaged over its `samples` runs and bins, `targets` row-major) and
    /// the loss's gradient written to `grad` (one parameter row), dropout
    /// `masks` as `draw_masks` lays them out (`None`: no dropout).
    pub fn loss_and_gradient(
        &self,
        p: &[f32],
        batch: (&DistinctTokens, &[f32], usize),
        masks: Option<&[f32]>,
        grad: &mut [f32],
    ) -> f64 {
        assert_eq!(p.len(), self.params, "a parameter row");
        assert_eq!(grad.len(), self.params, "a gradient row");
        assert_eq!(batch.1.len(), batch.2 * self.arch.n_bins as usize);
        if let Some(m) = masks {
            assert_eq!(m.len(), batch.2 * self.masks_per_sample(), "masks");
        }
        match self.isa {
            // SAFETY: as in `predict`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { train_avx2(self, p, batch, masks, grad) },
            _ => self.train::<Separate>(p, batch, masks, grad),
        }
    }

    #[inline(always)]
    fn train<M: MulAdd>(
        &self,
        p: &[f32],
        (tokens, targets, samples): (&DistinctTokens, &[f32], usize),
        masks: Option<&[f32]>,
        grad: &mut [f32],
    ) -> f64 {
        grad.fill(0.0);
        let f = self.forward::<M>(p, tokens, samples, masks);
        let (loss, d_mu, d_sigma) = nll_gradient(&f.mu_hat, &f.sigma_hat, targets, samples);
        // Softmax and softplus backward, to the heads' outputs.
        let mut dz_mu = d_mu;
        for r in 0..samples {
            let (mu, d) = (f.mu_hat.row(r), dz_mu.row_mut(r));
            let dot = M::dot(mu, d);
            for (d, &m) in d.iter_mut().zip(mu) {
                *d = m * (*d - dot);
            }
        }
        let mut dz_sigma = d_sigma;
        for r in 0..samples {
            let (z, d) = (f.sigma.out.row(r), dz_sigma.row_mut(r));
            for (d, &z) in d.iter_mut().zip(z) {
                if z <= 20.0 {
                    let e = z.exp();
                    *d = *d * e / (e + 1.0);
                }
            }
        }
        let mut d_pooled = self
            .block_backward::<M>(p, &self.mu, &f.mu, &dz_mu, grad, true)
            .expect("asked for");
        let d2 = self
            .block_backward::<M>(p, &self.sigma, &f.sigma, &dz_sigma, grad, true)
            .expect("asked for");
        add(&mut d_pooled, &d2);
        // The mean over each sample's tokens.
        let (m, e) = (self.arch.context, self.arch.d_model as usize);
        let mut dx = Mat::for_overwrite(samples * m, e);
        let inv = 1.0 / m as f32;
        for s in 0..samples {
            let d: Vec<f32> = d_pooled.row(s).iter().map(|&v| v * inv).collect();
            for i in 0..m {
                dx.row_mut(s * m + i).copy_from_slice(&d);
            }
        }
        let masks = self.masks(masks);
        for (l, (layer, cache)) in self.layers.iter().zip(&f.layers).enumerate().rev() {
            dx = self.layer_backward::<M>(p, layer, cache, &f.xs[l], &dx, masks, l, grad);
        }
        // Each token's embedding is its histogram's plus its time's.
        let mut dh = Mat::zeros(f.histogram.out.rows, e);
        let mut dt = Mat::zeros(f.time.out.rows, e);
        for t in 0..samples * m {
            let d = dx.row(t);
            for (a, &b) in dh
                .row_mut(tokens.histogram_of[t] as usize)
                .iter_mut()
                .zip(d)
            {
                *a += b;
            }
            for (a, &b) in dt.row_mut(tokens.time_of[t] as usize).iter_mut().zip(d) {
                *a += b;
            }
        }
        self.block_backward::<M>(p, &self.histogram, &f.histogram, &dh, grad, false);
        self.block_backward::<M>(p, &self.time, &f.time, &dt, grad, false);
        loss
    }

    #[inline(always)]
    fn forward<M: MulAdd>(
        &self,
        p: &[f32],
        tokens: &DistinctTokens,
        samples: usize,
        masks: Option<&[f32]>,
    ) -> Forward {
        let a = &self.arch;
        let (nb, m, e) = (a.n_bins as usize, a.context, a.d_model as usize);
        let mut hin = Mat::for_overwrite(tokens.histograms.len() / nb, nb);
        for (r, h) in tokens.histograms.chunks_exact(nb).enumerate() {
            hin.row_mut(r).copy_from_slice(h);
        }
        let mut tin = Mat::for_overwrite(tokens.times.len(), 1);
        for (r, &t) in tokens.times.iter().enumerate() {
            tin.row_mut(r)[0] = t;
        }
        let histogram = self.block_forward::<M>(p, &self.histogram, hin);
        let time = self.block_forward::<M>(p, &self.time, tin);
        let mut x = Mat::for_overwrite(samples * m, e);
        for t in 0..samples * m {
            let (h, tt) = (
                histogram.out.row(tokens.histogram_of[t] as usize),
                time.out.row(tokens.time_of[t] as usize),
            );
            for ((x, &h), &tt) in x.row_mut(t).iter_mut().zip(h).zip(tt) {
                *x = h + tt;
            }
        }
        let masks = self.masks(masks);
        let mut xs = vec![x];
        let mut layers = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let (cache, out) =
                self.layer_forward::<M>(p, layer, xs.last().expect("input"), masks, l);
            layers.push(cache);
            xs.push(out);
        }
        let last = xs.last().expect("output");
        let mut pooled = Mat::zeros(samples, e);
        for s in 0..samples {
            let row = pooled.row_mut(s);
            for i in 0..m {
                for (a, &b) in row.iter_mut().zip(last.row(s * m + i)) {
                    *a += b;
                }
            }
            for v in row.iter_mut() {
                *v /= m as f32;
            }
        }
        let mu = self.block_forward::<M>(p, &self.mu, pooled.clone());
        let sigma = self.block_forward::<M>(p, &self.sigma, pooled);
        let mut mu_hat = mu.out.clone();
        for r in 0..samples {
            softmax::<M>(mu_hat.row_mut(r));
        }
        let mut sigma_hat = sigma.out.clone();
        for r in 0..samples {
            for v in sigma_hat.row_mut(r) {
                // PyTorch's softplus: x past its threshold 20.
                if *v <= 20.0 {
                    *v = v.exp().ln_1p();
                }
            }
        }
        Forward {
            histogram,
            time,
            xs,
            layers,
            mu,
            sigma,
            mu_hat,
            sigma_hat,
        }
    }

    #[inline(always)]
    fn block_forward<M: MulAdd>(&self, p: &[f32], b: &Block, input: Mat) -> BlockCache {
        let a = linear(self.isa, p, b.a, &input);
        let (hat, rstd, mut relu) = norm_forward::<M>(p, b.norm, &a);
        for r in 0..relu.rows {
            for v in relu.row_mut(r) {
                *v = v.max(0.0);
            }
        }
        let out = linear(self.isa, p, b.b, &relu);
        BlockCache {
            input,
            hat,
            rstd,
            relu,
            out,
        }
    }

    /// The block's gradients into `g`; the gradient of its input if `dx`.
    #[inline(always)]
    fn block_backward<M: MulAdd>(
        &self,
        p: &[f32],
        b: &Block,
        c: &BlockCache,
        d_out: &Mat,
        g: &mut [f32],
        dx: bool,
    ) -> Option<Mat> {
        let mut d = linear_backward(self.isa, p, b.b, &c.relu, d_out, g, true).expect("asked for");
        for r in 0..d.rows {
            for (d, &y) in d.row_mut(r).iter_mut().zip(c.relu.row(r)) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        let d = norm_backward::<M>(p, b.norm, &c.hat, &c.rstd, &d, g);
        linear_backward(self.isa, p, b.a, &c.input, &d, g, dx)
    }

    #[inline(always)]
    fn layer_forward<M: MulAdd>(
        &self,
        p: &[f32],
        layer: &Layer,
        x: &Mat,
        masks: Masks<'_>,
        l: usize,
    ) -> (LayerCache, Mat) {
        let (m, e) = (self.arch.context, self.arch.d_model as usize);
        let qkv = linear(self.isa, p, layer.qkv, x);
        let (probs, heads) = self.attention_forward::<M>(&qkv, masks, l);
        let mut y = linear(self.isa, p, layer.out, &heads);
        for t in 0..y.rows {
            residual(y.row_mut(t), x.row(t), masks.row(t, m, l, 1, e));
        }
        let (hat1, rstd1, x1) = norm_forward::<M>(p, layer.norm1, &y);
        let mut hidden = linear(self.isa, p, layer.ff1, &x1);
        let f = layer.ff1.out;
        for t in 0..hidden.rows {
            let mask = masks.row(t, m, l, 2, f);
            for (v, &k) in hidden.row_mut(t).iter_mut().zip(mask) {
                *v = v.max(0.0) * k;
            }
        }
        let mut y = linear(self.isa, p, layer.ff2, &hidden);
        for t in 0..y.rows {
            residual(y.row_mut(t), x1.row(t), masks.row(t, m, l, 3, e));
        }
        let (hat2, rstd2, out) = norm_forward::<M>(p, layer.norm2, &y);
        let cache = LayerCache {
            qkv,
            probs,
            heads,
            hat1,
            rstd1,
            x1,
            hidden,
            hat2,
            rstd2,
        };
        (cache, out)
    }

    /// The gradient of the layer's input, its parameters' into `g`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn layer_backward<M: MulAdd>(
        &self,
        p: &[f32],
        layer: &Layer,
        c: &LayerCache,
        x: &Mat,
        d_out: &Mat,
        masks: Masks<'_>,
        l: usize,
        g: &mut [f32],
    ) -> Mat {
        let (m, e, f) = (self.arch.context, self.arch.d_model as usize, layer.ff1.out);
        let isa = self.isa;
        let dy2 = norm_backward::<M>(p, layer.norm2, &c.hat2, &c.rstd2, d_out, g);
        let df = masked(&dy2, |t| masks.row(t, m, l, 3, e));
        let mut dh = linear_backward(isa, p, layer.ff2, &c.hidden, &df, g, true).expect("asked");
        for t in 0..dh.rows {
            let (mask, h) = (masks.row(t, m, l, 2, f), c.hidden.row(t));
            for ((d, &h), &k) in dh.row_mut(t).iter_mut().zip(h).zip(mask) {
                // h = ReLU(z)·mask: its gradient is mask where h > 0 (where
                // the mask is 0 the gradient is 0 whatever z).
                *d = if h > 0.0 { *d * k } else { 0.0 };
            }
        }
        let mut dx1 = linear_backward(isa, p, layer.ff1, &c.x1, &dh, g, true).expect("asked");
        add(&mut dx1, &dy2);
        let dy1 = norm_backward::<M>(p, layer.norm1, &c.hat1, &c.rstd1, &dx1, g);
        let da = masked(&dy1, |t| masks.row(t, m, l, 1, e));
        let d_heads = linear_backward(isa, p, layer.out, &c.heads, &da, g, true).expect("asked");
        let d_qkv = self.attention_backward::<M>(c, &d_heads, masks, l);
        let mut dx = linear_backward(isa, p, layer.qkv, x, &d_qkv, g, true).expect("asked");
        add(&mut dx, &dy1);
        dx
    }

    /// softmax(q kᵀ/√d_head)·mask·v per sample and head: the weights
    /// (before the mask, for the backward pass) and the heads' outputs.
    #[inline(always)]
    fn attention_forward<M: MulAdd>(&self, qkv: &Mat, masks: Masks<'_>, l: usize) -> (Buffer, Mat) {
        let g = Geometry::of(&self.arch);
        let samples = qkv.rows / g.m;
        let mut probs = Buffer::for_overwrite(samples * g.h * g.m * g.mp);
        let mut heads = Mat::for_overwrite(qkv.rows, g.e);
        let mut sc = Scratch::new(&g);
        let (mut o, mut pd) = (vec![0.0f32; g.dp], vec![0.0f32; g.mp]);
        for s in 0..samples {
            for h in 0..g.h {
                sc.gather(&g, qkv, s, h, g.scale);
                let weights = &masks.site(s, l, 0)[h * g.m * g.m..][..g.m * g.m];
                let base = (s * g.h + h) * g.m * g.mp;
                for i in 0..g.m {
                    let row = &mut probs[base + i * g.mp..][..g.mp];
                    // Scores: q_i/√d_head against every key, the keys' rows
                    // transposed.
                    M::combine(&sc.q[i * g.dp..], 1, g.dh, &sc.kt, g.mp, row);
                    let row = &mut row[..g.m];
                    softmax::<M>(row);
                    let kept = &weights[i * g.m..][..g.m];
                    for ((d, &pr), &k) in pd.iter_mut().zip(row.iter()).zip(kept) {
                        *d = pr * k;
                    }
                    M::combine(&pd, 1, g.m, &sc.v, g.dp, &mut o);
                    heads.row_mut(s * g.m + i)[h * g.dh..][..g.dh].copy_from_slice(&o[..g.dh]);
                }
            }
        }
        (probs, heads)
    }

    /// The gradient of q, k and v (one `[T][3E]` matrix) from the heads'.
    #[inline(always)]
    fn attention_backward<M: MulAdd>(
        &self,
        c: &LayerCache,
        d_heads: &Mat,
        masks: Masks<'_>,
        l: usize,
    ) -> Mat {
        let g = Geometry::of(&self.arch);
        let samples = c.qkv.rows / g.m;
        let mut d_qkv = Mat::for_overwrite(c.qkv.rows, 3 * g.e);
        let mut sc = Scratch::new(&g);
        let [mut d_o, mut dq, mut dk, mut dv] = [(); 4].map(|_| vec![0.0f32; g.m * g.dp]);
        // This sample's and head's masked weights and score gradients, [M][M].
        let (mut pd, mut ds) = (vec![0.0f32; g.m * g.m], vec![0.0f32; g.m * g.m]);
        let mut d_p = vec![0.0f32; g.mp];
        for s in 0..samples {
            for h in 0..g.h {
                sc.gather(&g, &c.qkv, s, h, 1.0);
                for i in 0..g.m {
                    d_o[i * g.dp..][..g.dh]
                        .copy_from_slice(&d_heads.row(s * g.m + i)[h * g.dh..][..g.dh]);
                }
                let weights = &masks.site(s, l, 0)[h * g.m * g.m..][..g.m * g.m];
                let base = (s * g.h + h) * g.m * g.mp;
                for i in 0..g.m {
                    let pr = &c.probs[base + i * g.mp..][..g.m];
                    // The masked weights' gradient, then the mask's.
                    M::combine(&d_o[i * g.dp..], 1, g.dh, &sc.vt, g.mp, &mut d_p);
                    let (pdi, dsi) = (&mut pd[i * g.m..][..g.m], &mut ds[i * g.m..][..g.m]);
                    let kept = &weights[i * g.m..][..g.m];
                    for (((pd, dp), &p), &k) in pdi.iter_mut().zip(d_p.iter_mut()).zip(pr).zip(kept)
                    {
                        *pd = p * k;
                        *dp *= k;
                    }
                    // Softmax's backward pass, the scale folded in.
                    let dot = M::dot(pr, &d_p[..g.m]);
                    for ((ds, &p), &dp) in dsi.iter_mut().zip(pr).zip(d_p.iter()) {
                        *ds = p * (dp - dot) * g.scale;
                    }
                    M::combine(dsi, 1, g.m, &sc.k, g.dp, &mut dq[i * g.dp..][..g.dp]);
                }
                for j in 0..g.m {
                    let row = j * g.dp..(j + 1) * g.dp;
                    M::combine(&pd[j..], g.m, g.m, &d_o, g.dp, &mut dv[row.clone()]);
                    M::combine(&ds[j..], g.m, g.m, &sc.q, g.dp, &mut dk[row]);
                }
                for i in 0..g.m {
                    let row = d_qkv.row_mut(s * g.m + i);
                    for (part, d) in [&dq, &dk, &dv].into_iter().enumerate() {
                        row[part * g.e + h * g.dh..][..g.dh]
                            .copy_from_slice(&d[i * g.dp..][..g.dh]);
                    }
                }
            }
        }
        d_qkv
    }
}

/// Attention's sizes: M tokens (padded to `mp`), H heads of `dh` numbers
/// (padded to `dp`), width E, and the scores' scale 1/√dh.
struct Geometry {
    m: usize,
    mp: usize,
    h: usize,
    dh: usize,
    dp: usize,
    e: usize,
    scale: f32,
}

impl Geometry {
    fn of(a: &MlArch) -> Self {
        let (e, h) = (a.d_model as usize, a.heads as usize);
        let dh = e / h;
        Self {
            m: a.context,
            mp: a.context.next_multiple_of(VEC),
            h,
            dh,
            dp: dh.next_multiple_of(VEC),
            e,
            scale: (1.0 / (dh as f64).sqrt()) as f32,
        }
    }
}

/// One sample's and head's q, k, v (`[M][dp]`) and k, v transposed
/// (`[dh][mp]`), padding 0.
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geometry) -> Self {
        let rows = vec![0.0; g.m * g.dp];
        let cols = vec![0.0; g.dh * g.mp];
        Self {
            q: rows.clone(),
            k: rows.clone(),
            v: rows,
            kt: cols.clone(),
            vt: cols,
        }
    }

    /// Sample `s`'s head `h`, q times `q_scale`.
    #[inline(always)]
    fn gather(&mut self, g: &Geometry, qkv: &Mat, s: usize, h: usize, q_scale: f32) {
        for i in 0..g.m {
            let row = qkv.row(s * g.m + i);
            let at = |part: usize| &row[part * g.e + h * g.dh..][..g.dh];
            for (q, &x) in self.q[i * g.dp..][..g.dh].iter_mut().zip(at(0)) {
                *q = x * q_scale;
            }
            self.k[i * g.dp..][..g.dh].copy_from_slice(at(1));
            self.v[i * g.dp..][..g.dh].copy_from_slice(at(2));
            for c in 0..g.dh {
                self.kt[c * g.mp + i] = at(1)[c];
                self.vt[c * g.mp + i] = at(2)[c];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(
    net: &CpuNetwork,
    p: &[f32],
    tokens: &DistinctTokens,
    samples: usize,
    masks: Option<&[f32]>,
) -> Forward {
    net.forward::<Avx2>(p, tokens, samples, masks)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn train_avx2(
    net: &CpuNetwork,
    p: &[f32],
    batch: (&DistinctTokens, &[f32], usize),
    masks: Option<&[f32]>,
    grad: &mut [f32],
) -> f64 {
    net.train::<Avx2>(p, batch, masks, grad)
}
