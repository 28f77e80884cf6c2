//! MEDIC's set encoder (`model.rs`) for inference on a CPU as one kernel:
//! the same function of the same weights, with the algebra done once at
//! load time and the per-event work written out in Rust, tiles of events
//! at a time, so the weights stay in cache and no libtorch call is paid
//! per small operation (issue 32; BENCHMARKS.md).
//!
//! What the folding uses (post-norm block: attention reads the input
//! projection h = W_in x + b_in of the raw features x):
//! - q, k, v are affine in x. A query's score for key j, q·k_j/√d, is then
//!   `(M x_i + u)·x_j` plus terms that do not depend on j, which softmax
//!   drops: per head an F × F matrix M and an F-vector u replace both
//!   projections.
//! - Attention's weights sum to 1, so head h's output, through the output
//!   projection, is `W_o^h V^h y_i^h` plus a constant, where y_i^h is the
//!   attention-weighted mean of the raw x_j: the residual h_i + attn_i is
//!   one E × F(H+1) layer of `[x_i, y_i^1, …, y_i^H]`.
//! - Padding objects (all features 0) are identical, so they are computed
//!   once and counted with their multiplicity; with `mask_padding` they are
//!   left out (their attention and pooling weights are exactly 0 in the
//!   network), unless an event has nothing else.
//!
//! - The feed-forward's first layer reads n1 = γ ⊙ (r − μ)/σ + β, with
//!   r = R z + c the residual, so W₁ n1 equals
//!   (W₁ diag(γ) R z + W₁ diag(γ) c − μ W₁ γ)/σ plus W₁ β. One layer of z
//!   (F(H+1) = 40 inputs) gives both r and the first layer's pre-activation
//!   up to two scalars per row: 40 instead of E = 128 multiply-adds per
//!   hidden unit (a third of the arithmetic left).
//!
//! What remains is that layer, the second feed-forward layer (most of the
//! arithmetic: [`crate::simd`]), two LayerNorms and the attention pooling,
//! with fused multiply-adds where the CPU has them.

use rayon::prelude::*;

use crate::simd::{Isa, PackedLinear, padded};
#[cfg(target_arch = "x86_64")]
use crate::vector_math::Avx2;
use crate::vector_math::{MulAdd, Separate, exp, max, moments};

/// A layer's weight `[out][in]` (row-major, PyTorch's layout) and bias.
pub struct Dense {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A trained set encoder's parameters as plain numbers (PyTorch's layouts).
pub struct EncoderWeights {
    pub features: usize,
    pub embed: usize,
    pub heads: usize,
    pub input: Dense,
    pub q: Dense,
    pub k: Dense,
    pub v: Dense,
    pub out: Dense,
    /// LayerNorms as (γ, β) with their ε.
    pub norm1: (Vec<f32>, Vec<f32>),
    pub ff1: Dense,
    pub ff2: Dense,
    pub norm2: (Vec<f32>, Vec<f32>),
    pub eps: f64,
    /// The pooling score's weights `[embed]` (its bias cancels in softmax).
    pub pool: Vec<f32>,
    /// Keep all-zero objects out of attention and pooling.
    pub mask_padding: bool,
}

/// Events per tile: their activations (≤ 8 × 30 rows × 640 floats of
/// `front`, `n1`, `hidden` and `n2` at width 128, ≈ 0.6 MB; 16 events
/// overflowed a 512 kB L2) stay near the core between the layers.
const TILE: usize = 8;

/// A set encoder folded for [`FusedEncoder::encode`].
pub struct FusedEncoder {
    features: usize,
    embed: usize,
    heads: usize,
    mask_padding: bool,
    eps: f32,
    /// Per head `[F][F]` (row b: the weights of x's features in g_b) and
    /// `[F]`: a query's key-scoring vector g = M x + u.
    score: Vec<f32>,
    score_bias: Vec<f32>,
    /// `[x, y^1 … y^H]` → [h + attention, pad, the feed-forward's first
    /// layer before LayerNorm's scale], see [`FusedEncoder::with_isa`].
    front: PackedLinear,
    norm1: (Vec<f32>, Vec<f32>),
    /// `a = W₁ γ` and `b' = W₁ β + b₁` of the first feed-forward layer.
    ff1_shift: Vec<f32>,
    ff1_bias: Vec<f32>,
    ff2: PackedLinear,
    norm2: (Vec<f32>, Vec<f32>),
    pool: Vec<f32>,
    isa: Isa,
}

/// `a` `[n][k]` times `b` `[k][m]`, in f64.
fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for l in 0..k {
            let x = a[i * k + l];
            for j in 0..m {
                out[i * m + j] += x * b[l * m + j];
            }
        }
    }
    out
}

fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

impl FusedEncoder {
    /// Folds `w` (in f64) for the fastest instruction set of this CPU.
    pub fn new(w: &EncoderWeights) -> Self {
        Self::with_isa(w, Isa::detect())
    }

    /// Folds `w` for `isa` (tests compare every instruction set).
    pub fn with_isa(w: &EncoderWeights, isa: Isa) -> Self {
        let (f, e, heads) = (w.features, w.embed, w.heads);
        assert_eq!(e % heads, 0, "embed divisible by heads");
        let d = e / heads;
        let w_in = wide(&w.input.weight);
        let b_in = wide(&w.input.bias);
        // Q = Wq W_in ([E][F]) and c_q = Wq b_in + b_q; likewise K, V.
        let project = |l: &Dense| {
            let wl = wide(&l.weight);
            let m = matmul(&wl, &w_in, e, e, f);
            let c: Vec<f64> = (0..e)
                .map(|o| l.bias[o] as f64 + (0..e).map(|i| wl[o * e + i] * b_in[i]).sum::<f64>())
                .collect();
            (m, c)
        };
        let ((q, cq), (k, _), (v, cv)) = (project(&w.q), project(&w.k), project(&w.v));
        let scale = 1.0 / (d as f64).sqrt();
        let mut score = vec![0f32; heads * f * f];
        let mut score_bias = vec![0f32; heads * f];
        for h in 0..heads {
            for b in 0..f {
                for a in 0..f {
                    let s: f64 = (h * d..(h + 1) * d)
                        .map(|c| k[c * f + b] * q[c * f + a])
                        .sum();
                    score[(h * f + b) * f + a] = (s * scale) as f32;
                }
                let s: f64 = (h * d..(h + 1) * d).map(|c| k[c * f + b] * cq[c]).sum();
                score_bias[h * f + b] = (s * scale) as f32;
            }
        }
        // Residual R z + c = [W_in | W_o^1 V^1 | … | W_o^H V^H] z + (b_in + W_o c_v + b_o).
        let w_o = wide(&w.out.weight);
        let kz = f * (heads + 1); // [`Self::z_width`]
        let mut r = vec![0f64; e * kz];
        let mut c = vec![0f64; e];
        for o in 0..e {
            r[o * kz..o * kz + f].copy_from_slice(&w_in[o * f..(o + 1) * f]);
            for h in 0..heads {
                for a in 0..f {
                    r[o * kz + f * (1 + h) + a] = (h * d..(h + 1) * d)
                        .map(|i| w_o[o * e + i] * v[i * f + a])
                        .sum();
                }
            }
            let s: f64 = (0..e).map(|i| w_o[o * e + i] * cv[i]).sum();
            c[o] = b_in[o] + s + w.out.bias[o] as f64;
        }
        // The feed-forward's first layer on n1 = γ ⊙ (r − μ)/σ + β is
        // (A z + A_c − μ a)/σ + b', A = W₁ diag(γ) R (FF × kz, not FF × E),
        // A_c = W₁ diag(γ) c, a = W₁ γ, b' = W₁ β + b₁: one layer `front`
        // computes r and A z + A_c from z, rows [0, E) and [ep, ep + FF).
        let ff = w.ff1.bias.len();
        let (w1, gamma) = (wide(&w.ff1.weight), wide(&w.norm1.0));
        let w1_gamma = |j: usize, i: usize| w1[j * e + i] * gamma[i];
        let ep = padded(e);
        let mut front = vec![0f32; (ep + ff) * kz];
        let mut front_bias = vec![0f32; ep + ff];
        let mut ff1_shift = vec![0f32; ff];
        let mut ff1_bias = vec![0f32; ff];
        for o in 0..e {
            for a in 0..kz {
                front[o * kz + a] = r[o * kz + a] as f32;
            }
            front_bias[o] = c[o] as f32;
        }
        for j in 0..ff {
            let row = &mut front[(ep + j) * kz..(ep + j + 1) * kz];
            for (a, out) in row.iter_mut().enumerate() {
                *out = (0..e).map(|i| w1_gamma(j, i) * r[i * kz + a]).sum::<f64>() as f32;
            }
            front_bias[ep + j] = (0..e).map(|i| w1_gamma(j, i) * c[i]).sum::<f64>() as f32;
            ff1_shift[j] = (0..e).map(|i| w1_gamma(j, i)).sum::<f64>() as f32;
            let beta: f64 = (0..e).map(|i| w1[j * e + i] * w.norm1.1[i] as f64).sum();
            ff1_bias[j] = (beta + w.ff1.bias[j] as f64) as f32;
        }
        let front = PackedLinear::new(&front, &front_bias, kz, kz);
        let ff2 = PackedLinear::new(&w.ff2.weight, &w.ff2.bias, ff, padded(ff));
        Self {
            features: f,
            embed: e,
            heads,
            mask_padding: w.mask_padding,
            eps: w.eps as f32,
            score,
            score_bias,
            front,
            norm1: w.norm1.clone(),
            ff1_shift,
            ff1_bias,
            ff2,
            norm2: w.norm2.clone(),
            pool: w.pool.clone(),
            isa,
        }
    }

    /// Numbers per row of the residual layer's input `[x, y^1 … y^H]`.
    fn z_width(&self) -> usize {
        self.features * (self.heads + 1)
    }

    /// Embeddings `[events][embed]` of `events` sets of `objects` objects
    /// of `features` numbers (`x`: `[events][objects][features]`) into
    /// `out`, tiles of events on the rayon pool.
    pub fn encode_into(&self, x: &[f32], objects: usize, out: &mut [f32]) {
        assert!(objects > 0, "sets of at least one object");
        let per_event = objects * self.features;
        let events = out.len() / self.embed;
        assert_eq!(out.len(), events * self.embed, "out: [events][embed]");
        assert_eq!(
            x.len(),
            events * per_event,
            "x: [events][objects][features]"
        );
        out.par_chunks_mut(TILE * self.embed)
            .zip(x.par_chunks(TILE * per_event))
            .for_each(|(out, x)| {
                SCRATCH.with_borrow_mut(|s| {
                    s.load(self, x, objects);
                    match self.isa {
                        // SAFETY: `Isa::detect`/`available` give these only where the CPU has them.
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => unsafe { tile_avx512(self, s, out) },
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => unsafe { tile_avx2(self, s, out) },
                        _ => self.encode_tile::<Separate>(s, out),
                    }
                })
            });
    }

    /// The block on the tile loaded in `s`; written as plain loops the
    /// compiler vectorizes for the instruction set of its caller, `M`
    /// saying whether that has fused multiply-adds.
    #[inline(always)]
    fn encode_tile<M: MulAdd>(&self, s: &mut Scratch, out: &mut [f32]) {
        let (e, isa) = (self.embed, self.isa);
        let rows = s.mult.len();
        for ev in 0..s.starts.len() - 1 {
            self.attend::<M>(s, ev);
        }
        let ep = padded(e);
        let Scratch {
            z,
            front,
            n1,
            hidden,
            n2,
            mult,
            starts,
            pooling,
            ..
        } = s;
        let (fw, ff) = (self.front.padded_outputs(), self.ff1_bias.len());
        let hp = fw - ep;
        front.resize(rows * fw, 0.0);
        self.front.apply(isa, z, rows, front, false);
        n1.resize(rows * ep, 0.0);
        // Its padding columns stay 0 (the second layer's zero weights must
        // meet finite numbers).
        hidden.resize(rows * hp, 0.0);
        let (gamma, beta) = &self.norm1;
        for ((row, n1), hidden) in front
            .chunks_exact(fw)
            .zip(n1.chunks_exact_mut(ep))
            .zip(hidden.chunks_exact_mut(hp))
        {
            let (r, a) = (&row[..e], &row[ep..ep + ff]);
            let (mean, scale) = moments::<M>(r, self.eps);
            for (((n, &x), &g), &b) in n1.iter_mut().zip(r).zip(gamma).zip(beta) {
                *n = M::mul_add((x - mean) * scale, g, b);
            }
            for (((h, &x), &s), &b) in hidden
                .iter_mut()
                .zip(a)
                .zip(&self.ff1_shift)
                .zip(&self.ff1_bias)
            {
                *h = M::mul_add(M::mul_add(-mean, s, x), scale, b).max(0.0);
            }
        }
        n2.resize(rows * ep, 0.0);
        self.ff2.apply(isa, hidden, rows, n2, false);
        for (row, skip) in n2.chunks_exact_mut(ep).zip(n1.chunks_exact(ep)) {
            for (y, s) in row[..e].iter_mut().zip(&skip[..e]) {
                *y += s;
            }
            layer_norm::<M>(&mut row[..e], &self.norm2, self.eps);
        }
        // Attention pooling: softmax over the event's objects of pool·n2.
        for (ev, out) in out.chunks_exact_mut(e).enumerate() {
            let (r0, r1) = (starts[ev], starts[ev + 1]);
            let rows = &n2[r0 * ep..r1 * ep];
            // A plain loop, not `extend(map(..))`: the iterator's fold is
            // compiled apart from this function, without its instruction set.
            pooling.clear();
            for row in rows.chunks_exact(ep) {
                pooling.push(M::dot(&row[..e], &self.pool));
            }
            softmax::<M>(pooling, &mult[r0..r1]);
            out.fill(0.0);
            for (row, &w) in rows.chunks_exact(ep).zip(pooling.iter()) {
                for (o, &x) in out.iter_mut().zip(&row[..e]) {
                    *o = M::mul_add(w, x, *o);
                }
            }
        }
    }

    /// Event `ev`'s `[x, y^1 … y^H]` rows of `s.z`: each head's
    /// attention-weighted mean of the objects' raw features. Written with
    /// queries in the vector lanes, 32 at a time: every step (their
    /// key-scoring vectors, one key's scores, softmax, the means) is then
    /// whole vectors, whatever the number of features and objects.
    #[inline(always)]
    fn attend<M: MulAdd>(&self, s: &mut Scratch, ev: usize) {
        let (f, kz) = (self.features, self.z_width());
        let (r0, r1) = (s.starts[ev], s.starts[ev + 1]);
        let n = r1 - r0;
        let Scratch {
            z,
            mult,
            objects: rows,
            columns,
            g,
            weights,
            means,
            ..
        } = s;
        // The objects `[n][F]`, and feature-major in query blocks
        // `[block][F][Q]` (0 past the last object).
        rows.clear();
        columns.clear();
        columns.resize(n.div_ceil(Q) * f, [0.0; Q]);
        for j in 0..n {
            let x = &z[(r0 + j) * kz..(r0 + j) * kz + f];
            rows.extend_from_slice(x);
            for (a, &v) in x.iter().enumerate() {
                columns[(j / Q) * f + a][j % Q] = v;
            }
        }
        let mult = &mult[r0..r1];
        // Per query lane: g_b (key-scoring vector), one row per key of
        // scores then weights, the running max and total, the means.
        g.resize(f, [0.0; Q]);
        weights.resize(n, [0.0; Q]);
        means.resize(f.next_multiple_of(2), [0.0; Q]);
        for h in 0..self.heads {
            let m = &self.score[h * f * f..(h + 1) * f * f];
            let u = &self.score_bias[h * f..(h + 1) * f];
            for (block, x) in columns.chunks_exact(f).enumerate() {
                for (b, gb) in g.iter_mut().enumerate() {
                    // In registers, stored once (accumulating in `g` itself
                    // was a store and reload per multiply-add).
                    let mut acc = [u[b]; Q];
                    for (&mba, xa) in m[b * f..(b + 1) * f].iter().zip(x) {
                        for l in 0..Q {
                            acc[l] = M::mul_add(mba, xa[l], acc[l]);
                        }
                    }
                    *gb = acc;
                }
                let mut max = [f32::NEG_INFINITY; Q];
                for (w, xj) in weights.iter_mut().zip(rows.chunks_exact(f)) {
                    let mut s = [0f32; Q];
                    for (&xb, gb) in xj.iter().zip(g.iter()) {
                        for l in 0..Q {
                            s[l] = M::mul_add(xb, gb[l], s[l]);
                        }
                    }
                    for l in 0..Q {
                        max[l] = max[l].max(s[l]);
                    }
                    *w = s;
                }
                let mut total = [0f32; Q];
                for (w, &mj) in weights.iter_mut().zip(mult) {
                    exp_weights::<M, Q>(w, &max, mj, &mut total);
                }
                let inverse = total.map(|t| 1.0 / t);
                // Two features at a time: eight independent chains of
                // multiply-adds instead of four (one feature's lanes).
                for (a, pair) in means.chunks_exact_mut(2).enumerate() {
                    let (a0, a1) = (2 * a, (2 * a + 1).min(f - 1));
                    let mut y = [[0f32; Q]; 2];
                    for (w, xj) in weights.iter().zip(rows.chunks_exact(f)) {
                        let (x0, x1) = (xj[a0], xj[a1]);
                        for l in 0..Q {
                            y[0][l] = M::mul_add(w[l], x0, y[0][l]);
                            y[1][l] = M::mul_add(w[l], x1, y[1][l]);
                        }
                    }
                    for (mean, y) in pair.iter_mut().zip(&y) {
                        for l in 0..Q {
                            mean[l] = y[l] * inverse[l];
                        }
                    }
                }
                // Back to rows: query i's F means of this head.
                let queries = (n - block * Q).min(Q);
                for l in 0..queries {
                    let i = r0 + block * Q + l;
                    let out = &mut z[i * kz + f * (1 + h)..i * kz + f * (2 + h)];
                    for (o, mean) in out.iter_mut().zip(means.iter()) {
                        *o = mean[l];
                    }
                }
            }
        }
    }
}

/// Queries per vector block in attention.
const Q: usize = 32;

thread_local! {
    /// Each worker's buffers, reused tile after tile (fresh ones were
    /// fresh pages each time: page faults cost more than the arithmetic).
    static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
}

/// A tile's objects as rows and the buffers of its layers: `z`'s first F
/// numbers of a row are the object's features (the heads' means filled in
/// by `attend`), rows of event k are `starts[k]..starts[k + 1]`, each
/// counting `mult` times.
#[derive(Default)]
struct Scratch {
    z: Vec<f32>,
    front: Vec<f32>,
    mult: Vec<f32>,
    starts: Vec<usize>,
    n1: Vec<f32>,
    hidden: Vec<f32>,
    n2: Vec<f32>,
    pooling: Vec<f32>,
    objects: Vec<f32>,
    columns: Vec<[f32; Q]>,
    g: Vec<[f32; Q]>,
    weights: Vec<[f32; Q]>,
    means: Vec<[f32; Q]>,
}

impl Scratch {
    /// The distinct objects of the events in `x` (`[events][objects][F]`).
    fn load(&mut self, enc: &FusedEncoder, x: &[f32], objects: usize) {
        let (f, kz) = (enc.features, enc.z_width());
        let Self {
            z, mult, starts, ..
        } = self;
        z.clear();
        mult.clear();
        starts.clear();
        starts.push(0);
        for event in x.chunks_exact(objects * f) {
            let mut padding = 0usize;
            for object in event.chunks_exact(f) {
                // The network's test for padding: |x| sums to 0.
                if object.iter().map(|v| v.abs()).sum::<f32>() == 0.0 {
                    padding += 1;
                } else {
                    z.extend_from_slice(object);
                    z.resize(z.len() + kz - f, 0.0);
                    mult.push(1.0);
                }
            }
            let real = mult.len() - starts[starts.len() - 1];
            if padding > 0 && (!enc.mask_padding || real == 0) {
                z.resize(z.len() + kz, 0.0);
                mult.push(padding as f32);
            }
            starts.push(mult.len());
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(enc: &FusedEncoder, s: &mut Scratch, out: &mut [f32]) {
    // AVX-512F implies AVX2 and FMA.
    enc.encode_tile::<Avx2>(s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(enc: &FusedEncoder, s: &mut Scratch, out: &mut [f32]) {
    enc.encode_tile::<Avx2>(s, out)
}

/// PyTorch's LayerNorm of one row in place: (x − mean)/√(var + ε)·γ + β,
/// var the biased variance.
#[inline(always)]
fn layer_norm<M: MulAdd>(x: &mut [f32], (gamma, beta): &(Vec<f32>, Vec<f32>), eps: f32) {
    let (mean, scale) = moments::<M>(x, eps);
    for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = M::mul_add((*v - mean) * scale, *g, *b);
    }
}

/// Softmax of `s` in place, entry j counting `mult[j]` times.
#[inline(always)]
fn softmax<M: MulAdd>(s: &mut [f32], mult: &[f32]) {
    let max = max(s);
    for (v, &m) in s.iter_mut().zip(mult) {
        *v = exp::<M>(*v - max) * m;
    }
    let scale = 1.0 / M::sum(s);
    for v in s.iter_mut() {
        *v *= scale;
    }
}

/// `w ← e^(w − max) · mult`, added to `total` (one key's weights for
/// every query lane).
#[inline(always)]
fn exp_weights<M: MulAdd, const Q: usize>(
    w: &mut [f32; Q],
    max: &[f32; Q],
    mult: f32,
    total: &mut [f32; Q],
) {
    for l in 0..Q {
        let e = exp::<M>(w[l] - max[l]) * mult;
        w[l] = e;
        total[l] += e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_counts_multiplicities() {
        // [a, b] with b twice = [a, b, b].
        let mut w = [0.5, -1.0];
        softmax::<Separate>(&mut w, &[1.0, 2.0]);
        let z = 0.5f32.exp() + 2.0 * (-1.0f32).exp();
        assert!((w[0] - 0.5f32.exp() / z).abs() < 1e-6);
        assert!((w[1] - 2.0 * (-1.0f32).exp() / z).abs() < 1e-6);
    }
}
