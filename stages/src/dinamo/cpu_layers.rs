//! The layers of `cpu_network.rs`, forward and backward, on rows of one
//! dataset's activations: linear layers through the packed dense kernel
//! (`simd.rs`), LayerNorm, the residual connections after dropout, the
//! softmax and the Gaussian NLL.

use super::reference_net::VAR_EPS;
use crate::simd::{self, Isa, PackedLinear, padded};
use crate::vector_math::{MulAdd, exp, moments};

/// PyTorch's LayerNorm ε.
const NORM_EPS: f32 = 1e-5;

/// `rows` rows of `cols` numbers, each row `stride` apart (`cols` padded
/// to a multiple of [`simd::PAD`], padding 0).
#[derive(Debug, Clone, Default)]
pub(super) struct Mat {
    pub(super) data: Vec<f32>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) stride: usize,
}

impl Mat {
    pub(super) fn zeros(rows: usize, cols: usize) -> Self {
        let stride = padded(cols);
        Self {
            data: vec![0.0; rows * stride],
            rows,
            cols,
            stride,
        }
    }

    pub(super) fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride..][..self.cols]
    }

    pub(super) fn row_mut(&mut self, r: usize) -> &mut [f32] {
        let (s, c) = (self.stride, self.cols);
        &mut self.data[r * s..][..c]
    }
}

/// Where a linear layer's weight `[out][inp]` and bias lie in a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Linear {
    pub(super) w: usize,
    pub(super) b: usize,
    pub(super) out: usize,
    pub(super) inp: usize,
}

/// Where a LayerNorm's γ and β lie.
#[derive(Debug, Clone, Copy)]
pub(super) struct Norm {
    pub(super) g: usize,
    pub(super) b: usize,
    pub(super) width: usize,
}

/// Softmax of a row in place.
#[inline(always)]
pub(super) fn softmax<M: MulAdd>(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp::<M>(*v - max);
    }
    let total = M::sum(row);
    for v in row.iter_mut() {
        *v /= total;
    }
}

/// `y ← x + y·mask` (a residual connection after dropout).
#[inline(always)]
pub(super) fn residual(y: &mut [f32], x: &[f32], mask: &[f32]) {
    for ((y, &x), &k) in y.iter_mut().zip(x).zip(mask) {
        *y = x + *y * k;
    }
}

/// `d` times each row's dropout mask.
#[inline(always)]
pub(super) fn masked<'a>(d: &Mat, mask: impl Fn(usize) -> &'a [f32]) -> Mat {
    let mut out = d.clone();
    for t in 0..out.rows {
        for (v, &k) in out.row_mut(t).iter_mut().zip(mask(t)) {
            *v *= k;
        }
    }
    out
}

/// `a ← a + b`, row by row.
pub(super) fn add(a: &mut Mat, b: &Mat) {
    for (x, &y) in a.data.iter_mut().zip(&b.data) {
        *x += y;
    }
}

/// `x Wᵀ + b` for the rows of `x`.
pub(super) fn linear(isa: Isa, p: &[f32], l: Linear, x: &Mat) -> Mat {
    assert_eq!(x.cols, l.inp, "inputs of a linear layer");
    let packed = PackedLinear::new(
        &p[l.w..][..l.out * l.inp],
        &p[l.b..][..l.out],
        l.inp,
        x.stride,
    );
    let mut y = Mat::zeros(x.rows, l.out);
    packed.apply(isa, &x.data, x.rows, &mut y.data, false);
    y
}

/// A linear layer's weight and bias gradients (added to `g`) from its
/// input `x` and its output's gradient `dy`; the input's gradient if `dx`.
pub(super) fn linear_backward(
    isa: Isa,
    p: &[f32],
    l: Linear,
    x: &Mat,
    dy: &Mat,
    g: &mut [f32],
    dx: bool,
) -> Option<Mat> {
    let t = dy.rows;
    let gb = &mut g[l.b..][..l.out];
    for r in 0..t {
        for (a, &d) in gb.iter_mut().zip(dy.row(r)) {
            *a += d;
        }
    }
    // dW = dyᵀ · x: x's rows, padded, are the packed right-hand side.
    let mut dyt = vec![0.0f32; l.out * t];
    for r in 0..t {
        for (o, &d) in dy.row(r).iter().enumerate() {
            dyt[o * t + r] = d;
        }
    }
    let mut dw = vec![0.0f32; l.out * x.stride];
    simd::product(isa, &dyt, l.out, t, &x.data, x.stride, &mut dw);
    for o in 0..l.out {
        let row = &mut g[l.w + o * l.inp..][..l.inp];
        for (a, &d) in row.iter_mut().zip(&dw[o * x.stride..][..l.inp]) {
            *a += d;
        }
    }
    dx.then(|| {
        let packed =
            PackedLinear::from_input_rows(&p[l.w..][..l.out * l.inp], l.out, l.inp, dy.stride);
        let mut out = Mat::zeros(t, l.inp);
        packed.apply(isa, &dy.data, t, &mut out.data, false);
        out
    })
}

/// LayerNorm with its affine map, row by row: (x̂, 1/σ, x̂·γ + β).
#[inline(always)]
pub(super) fn norm_forward<M: MulAdd>(p: &[f32], n: Norm, y: &Mat) -> (Mat, Vec<f32>, Mat) {
    let (gamma, beta) = (&p[n.g..][..n.width], &p[n.b..][..n.width]);
    let mut hat = Mat::zeros(y.rows, n.width);
    let mut out = Mat::zeros(y.rows, n.width);
    let mut rstd = Vec::with_capacity(y.rows);
    for r in 0..y.rows {
        let (mean, rs) = moments::<M>(y.row(r), NORM_EPS);
        rstd.push(rs);
        let h = hat.row_mut(r);
        for (h, &x) in h.iter_mut().zip(y.row(r)) {
            *h = (x - mean) * rs;
        }
        for (((o, &h), &g), &b) in out
            .row_mut(r)
            .iter_mut()
            .zip(hat.row(r))
            .zip(gamma)
            .zip(beta)
        {
            *o = h * g + b;
        }
    }
    (hat, rstd, out)
}

/// LayerNorm's backward pass: γ's and β's gradients into `g`, the input's
/// returned.
#[inline(always)]
pub(super) fn norm_backward<M: MulAdd>(
    p: &[f32],
    n: Norm,
    hat: &Mat,
    rstd: &[f32],
    d_out: &Mat,
    g: &mut [f32],
) -> Mat {
    let w = n.width;
    let gamma = &p[n.g..][..w];
    let mut dx = Mat::zeros(hat.rows, w);
    let mut dg = vec![0.0f32; w];
    let mut db = vec![0.0f32; w];
    let mut dh = vec![0.0f32; w];
    for (r, &rs) in rstd.iter().enumerate() {
        let (h, d) = (hat.row(r), d_out.row(r));
        for ((((dg, db), dh), &d), (&h, &gm)) in dg
            .iter_mut()
            .zip(db.iter_mut())
            .zip(dh.iter_mut())
            .zip(d)
            .zip(h.iter().zip(gamma))
        {
            *dg = M::mul_add(d, h, *dg);
            *db += d;
            *dh = d * gm;
        }
        let mean = M::sum(&dh) / w as f32;
        let mean_h = M::dot(&dh, h) / w as f32;
        for ((o, &dh), &h) in dx.row_mut(r).iter_mut().zip(&dh).zip(h) {
            *o = rs * (dh - mean - h * mean_h);
        }
    }
    for (a, b) in g[n.g..][..w].iter_mut().zip(&dg) {
        *a += b;
    }
    for (a, b) in g[n.b..][..w].iter_mut().zip(&db) {
        *a += b;
    }
    dx
}

/// The loss (Gaussian NLL averaged over the samples' runs and bins, as
/// `reference_net::nll_terms`: the variance clamped at [`VAR_EPS`] in
/// value, not in gradient) and its gradients with respect to μ̂ and σ̂.
pub(super) fn nll_gradient(
    mu: &Mat,
    sigma: &Mat,
    targets: &[f32],
    samples: usize,
) -> (f64, Mat, Mat) {
    let nb = mu.cols;
    let weight = 1.0 / (samples * nb) as f32;
    let (mut d_mu, mut d_sigma) = (Mat::zeros(samples, nb), Mat::zeros(samples, nb));
    let mut loss = 0.0f64;
    let eps = VAR_EPS as f32;
    for s in 0..samples {
        let x = &targets[s * nb..][..nb];
        let (m, sg) = (mu.row(s), sigma.row(s));
        for j in 0..nb {
            let var = sg[j] * sg[j];
            let c = var.max(eps);
            let diff = x[j] - m[j];
            let term = (diff * diff / c + c.ln()) * 0.5;
            loss += f64::from(term * weight);
            d_mu.row_mut(s)[j] = -diff / c * weight;
            let d_var = 0.5 * (1.0 / c - diff * diff / (c * c)) * weight;
            d_sigma.row_mut(s)[j] = d_var * 2.0 * sg[j];
        }
    }
    (loss, d_mu, d_sigma)
}
