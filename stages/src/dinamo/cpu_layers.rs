//! The layers of `cpu_network.rs`, forward and backward, on rows of one
//! dataset's activations: linear layers through the packed dense kernel
//! (`simd.rs`), LayerNorm, the residual connections after dropout, the
//! softmax and the Gaussian NLL.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use super::reference_net::VAR_EPS;
use crate::simd::{self, Isa, Packed, padded};
use crate::vector_math::{MulAdd, exp, max, moments};

/// PyTorch's LayerNorm ε.
const NORM_EPS: f32 = 1e-5;

/// Spare buffers a thread keeps, at most (an iteration of the paper's
/// network has some 100 live at its peak).
const SPARES: usize = 256;

thread_local! {
    /// The storage of this thread's dropped [`Buffer`]s, for the next ones.
    /// An iteration allocates ~200 activations, gradients and packed
    /// weights of 10-300 kB; fresh from the allocator, their pages were
    /// mapped, zeroed and unmapped by the kernel at every iteration (a
    /// sixth of the time: BENCHMARKS.md). Kept for the thread's life: about
    /// an iteration's peak (~10 MB at the paper's size, estimated from the
    /// shapes), never more than [`SPARES`] vectors.
    static SPARE: RefCell<Spares> = const { RefCell::new(Spares::new()) };
}

/// Spare vectors by capacity.
struct Spares {
    by_capacity: BTreeMap<usize, Vec<Vec<f32>>>,
    count: usize,
}

impl Spares {
    const fn new() -> Self {
        Self {
            by_capacity: BTreeMap::new(),
            count: 0,
        }
    }

    /// The smallest spare holding `len` numbers.
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let (&capacity, list) = self.by_capacity.range_mut(len..).next()?;
        let v = list.pop().expect("no empty lists");
        if list.is_empty() {
            self.by_capacity.remove(&capacity);
        }
        self.count -= 1;
        Some(v)
    }

    /// Keeps `v`; when full, the smallest spare makes room (a larger one
    /// serves its sizes too: batches grow over the first updates).
    fn keep(&mut self, v: Vec<f32>) {
        if self.count == SPARES {
            let mut smallest = self.by_capacity.first_entry().expect("full");
            if *smallest.key() >= v.capacity() {
                return;
            }
            smallest.get_mut().pop();
            if smallest.get().is_empty() {
                smallest.remove();
            }
            self.count -= 1;
        }
        self.by_capacity.entry(v.capacity()).or_default().push(v);
        self.count += 1;
    }
}

/// f32s whose storage goes back to this thread's spares when dropped.
#[derive(Debug)]
pub(super) struct Buffer(Vec<f32>);

impl Buffer {
    /// `len` zeros.
    pub(super) fn zeros(len: usize) -> Self {
        let mut v = spare(len);
        v.clear();
        v.resize(len, 0.0);
        Self(v)
    }

    /// `len` numbers for the caller to write before reading them (what an
    /// earlier use left there: no pass clearing them).
    pub(super) fn for_overwrite(len: usize) -> Self {
        let mut v = spare(len);
        v.resize(len, 0.0);
        Self(v)
    }
}

/// The smallest spare vector holding `len` numbers, or a new one.
fn spare(len: usize) -> Vec<f32> {
    SPARE
        .try_with(|s| s.borrow_mut().take(len))
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(len))
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() > 0 {
            // During the thread's teardown the spares may be gone: then the
            // vector is freed.
            let _ = SPARE.try_with(|s| s.borrow_mut().keep(v));
        }
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        let mut b = Self::for_overwrite(self.len());
        b.copy_from_slice(self);
        b
    }
}

impl Deref for Buffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// `rows` rows of `cols` numbers, each row [`Mat::stride`] apart (`cols`
/// padded to a multiple of [`simd::PAD`], padding 0).
#[derive(Debug, Clone)]
pub(super) struct Mat {
    pub(super) data: Buffer,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

impl Mat {
    pub(super) fn zeros(rows: usize, cols: usize) -> Self {
        let data = Buffer::zeros(rows * padded(cols));
        Self { data, rows, cols }
    }

    /// A matrix whose every row the caller writes in full (the padding
    /// comes 0).
    pub(super) fn for_overwrite(rows: usize, cols: usize) -> Self {
        let mut m = Self {
            data: Buffer::for_overwrite(rows * padded(cols)),
            rows,
            cols,
        };
        let stride = m.stride();
        for row in m.data.chunks_exact_mut(stride) {
            row[cols..].fill(0.0);
        }
        m
    }

    /// Numbers from one row's start to the next's.
    pub(super) fn stride(&self) -> usize {
        padded(self.cols)
    }

    pub(super) fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride()..][..self.cols]
    }

    pub(super) fn row_mut(&mut self, r: usize) -> &mut [f32] {
        let (s, c) = (self.stride(), self.cols);
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
    let max = max(row);
    for v in row.iter_mut() {
        *v = exp::<M>(*v - max);
    }
    let inv = 1.0 / M::sum(row);
    for v in row.iter_mut() {
        *v *= inv;
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
    let mut out = Mat::for_overwrite(d.rows, d.cols);
    for t in 0..out.rows {
        for ((o, &v), &k) in out.row_mut(t).iter_mut().zip(d.row(t)).zip(mask(t)) {
            *o = v * k;
        }
    }
    out
}

/// `a ← a + b`, row by row.
pub(super) fn add(a: &mut Mat, b: &Mat) {
    for (x, &y) in a.data.iter_mut().zip(b.data.iter()) {
        *x += y;
    }
}

/// `x Wᵀ + b` for the rows of `x`.
pub(super) fn linear(isa: Isa, p: &[f32], l: Linear, x: &Mat) -> Mat {
    assert_eq!(x.cols, l.inp, "inputs of a linear layer");
    let n_pad = padded(l.out);
    let mut w = Buffer::for_overwrite(l.inp * n_pad);
    simd::pack(&p[l.w..][..l.out * l.inp], l.out, l.inp, &mut w);
    let mut b = Buffer::zeros(n_pad);
    b[..l.out].copy_from_slice(&p[l.b..][..l.out]);
    let mut y = Mat::for_overwrite(x.rows, l.out);
    Packed::new(&w, Some(&b), l.inp, x.stride()).apply(isa, &x.data, x.rows, &mut y.data, false);
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
    // dW = dyᵀ · x: x's rows, padded, are the packed right-hand side; dy
    // is read down its columns.
    let mut dw = Buffer::for_overwrite(l.out * x.stride());
    let dy_rows = (&dy.data[..], dy.stride());
    simd::product_transposed(isa, dy_rows, l.out, t, &x.data, x.stride(), &mut dw);
    for o in 0..l.out {
        let row = &mut g[l.w + o * l.inp..][..l.inp];
        for (a, &d) in row.iter_mut().zip(&dw[o * x.stride()..][..l.inp]) {
            *a += d;
        }
    }
    dx.then(|| {
        let mut w = Buffer::for_overwrite(l.out * padded(l.inp));
        simd::pack_input_rows(&p[l.w..][..l.out * l.inp], l.out, l.inp, &mut w);
        let mut out = Mat::for_overwrite(t, l.inp);
        Packed::new(&w, None, l.out, dy.stride()).apply(isa, &dy.data, t, &mut out.data, false);
        out
    })
}

/// LayerNorm with its affine map, row by row: (x̂, 1/σ, x̂·γ + β).
#[inline(always)]
pub(super) fn norm_forward<M: MulAdd>(p: &[f32], n: Norm, y: &Mat) -> (Mat, Vec<f32>, Mat) {
    let (gamma, beta) = (&p[n.g..][..n.width], &p[n.b..][..n.width]);
    let mut hat = Mat::for_overwrite(y.rows, n.width);
    let mut out = Mat::for_overwrite(y.rows, n.width);
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
    let mut dx = Mat::for_overwrite(hat.rows, w);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped buffer's storage comes back dirty; what is promised
    /// still holds: zeros are zeros, a matrix's padding is 0, the spares
    /// stay bounded.
    #[test]
    fn spare_buffers_come_back_as_promised() {
        let dirty = |len: usize| {
            let mut b = Buffer::for_overwrite(len);
            b.fill(f32::NAN);
            drop(b);
        };
        dirty(1000);
        let z = Buffer::zeros(900);
        assert_eq!(z.len(), 900);
        assert!(z.iter().all(|&v| v == 0.0), "zeros from a dirty spare");
        drop(z);
        dirty(1000);
        let m = Mat::for_overwrite(7, 20);
        assert_eq!((m.stride(), m.data.len()), (32, 7 * 32));
        for r in 0..7 {
            assert!(
                m.data[r * 32 + 20..][..12].iter().all(|&v| v == 0.0),
                "padding 0"
            );
        }
        let c = m.clone();
        assert_eq!(c.data[..].len(), m.data[..].len());
        drop((m, c));
        let held: Vec<Buffer> = (0..SPARES + 10).map(|_| Buffer::zeros(8)).collect();
        drop(held);
        assert_eq!(
            SPARE.with_borrow(|s| s.count),
            SPARES,
            "at most SPARES kept"
        );
        // Full of small spares, a larger buffer takes the smallest's place.
        drop(Buffer::zeros(5000));
        assert_eq!(SPARE.with_borrow(|s| s.count), SPARES);
        let b = Buffer::for_overwrite(4000);
        assert!(
            b.0.capacity() >= 5000,
            "the large spare was kept and reused"
        );
    }
}
