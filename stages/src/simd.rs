//! Dense layers `out = act(a Wᵀ + b)` on f32 rows, written for small
//! networks run event by event on a CPU, where libtorch's per-operation
//! overhead costs more than the arithmetic (MEDIC's set encoders:
//! BENCHMARKS.md). One register-blocked kernel, compiled three times and
//! chosen at run time: AVX-512, AVX2 with FMA, and portable scalar code —
//! the same binary runs fast on a recent Xeon and correctly anywhere.
//!
//! Weights are packed once ([`PackedLinear`]; a caller that packs at every
//! step does it into its own buffers: [`pack`], [`Packed`]) as
//! `[k_in][n_pad]`: row `kk` holds input `kk`'s weight to every output,
//! zero-padded to a multiple of 16 outputs so every column block is whole
//! vectors. The kernel walks column blocks of up to 64 outputs (a block's
//! weights, 32 kB for k = 128, stay in the L1 cache) and within a block row
//! blocks of a few rows whose accumulators stay in registers.

/// The instruction sets the kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 16 lanes, 32 registers: 6 rows × 4 vectors of accumulators.
    Avx512,
    /// 8 lanes with FMA, 16 registers: 6 rows × 2 vectors (12
    /// accumulators, two weight vectors, one broadcast input; 4 rows were
    /// 8-11 % slower on MEDIC's layers: BENCHMARKS.md).
    Avx2,
    /// Plain Rust (what the compiler makes of it for the target).
    Scalar,
}

impl Isa {
    /// The fastest this CPU runs.
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// Every instruction set this CPU runs, fastest first (tests compare
    /// them all).
    pub fn available() -> Vec<Self> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Self::Avx2);
            }
        }
        isas.push(Self::Scalar);
        isas
    }
}

/// Outputs are padded to a multiple of this (one AVX-512 vector).
pub const PAD: usize = 16;

/// `n` rounded up to a multiple of [`PAD`].
pub fn padded(n: usize) -> usize {
    n.div_ceil(PAD) * PAD
}

/// A dense layer packed for [`PackedLinear::apply`].
#[derive(Debug, Clone)]
pub struct PackedLinear {
    /// Inputs per row of `a` (its row stride; inputs past the layer's own
    /// are not read).
    k: usize,
    /// The layer's own inputs, the first of each row (what the kernel
    /// sums over).
    k_in: usize,
    /// Outputs padded to a multiple of [`PAD`] (`out`'s row stride).
    n_pad: usize,
    /// `[k_in][n_pad]`.
    weights: Vec<f32>,
    /// `[n_pad]`.
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs `weight` `[n][k_in]` (row-major, PyTorch's layout) and `bias`
    /// `[n]` for input rows of stride `k ≥ k_in`.
    pub fn new(weight: &[f32], bias: &[f32], k_in: usize, k: usize) -> Self {
        let n = bias.len();
        assert!(k >= k_in, "row stride below the layer's inputs");
        let n_pad = padded(n);
        let mut weights = vec![0.0; k_in * n_pad];
        pack(weight, n, k_in, &mut weights);
        let mut b = vec![0.0; n_pad];
        b[..n].copy_from_slice(bias);
        Self {
            k,
            k_in,
            n_pad,
            weights,
            bias: b,
        }
    }

    /// `out`'s row stride.
    pub fn padded_outputs(&self) -> usize {
        self.n_pad
    }

    /// `out[r] = bias + W a[r]` (ReLU'd if `relu`) for the `rows` rows of
    /// `a` (stride `k`); `out` has stride [`Self::padded_outputs`], the
    /// padding columns come out 0.
    pub fn apply(&self, isa: Isa, a: &[f32], rows: usize, out: &mut [f32], relu: bool) {
        Packed::new(&self.weights, Some(&self.bias), self.k_in, self.k)
            .apply(isa, a, rows, out, relu);
    }
}

/// Packs `weight` `[n][k_in]` (PyTorch's layout) into `dst` `[k_in][n_pad]`
/// (n_pad = [`padded`]`(n)`), every number of `dst` written (padding 0):
/// [`Packed`]'s weights.
pub fn pack(weight: &[f32], n: usize, k_in: usize, dst: &mut [f32]) {
    let n_pad = padded(n);
    assert_eq!(weight.len(), n * k_in, "weight [n][k_in]");
    assert_eq!(dst.len(), k_in * n_pad, "packed [k_in][n_pad]");
    // 8 × 8 blocks through a local array, bounds known at compile time in
    // whole blocks (a loop over one input of eight outputs at a time cost
    // ~1 ns a number; DINAMO-ML packs every layer at every iteration).
    for o0 in (0..n).step_by(8) {
        let outs = (n - o0).min(8);
        for i0 in (0..k_in).step_by(8) {
            let ins = (k_in - i0).min(8);
            let mut block = [[0f32; 8]; 8];
            if outs == 8 && ins == 8 {
                for (o, col) in block.iter_mut().enumerate() {
                    *col = weight[(o0 + o) * k_in + i0..][..8].try_into().expect("8");
                }
            } else {
                for (o, col) in block.iter_mut().enumerate().take(outs) {
                    col[..ins].copy_from_slice(&weight[(o0 + o) * k_in + i0..][..ins]);
                }
            }
            // block[o][i] → dst[i0 + i][o0 + o] (o0 + 8 ≤ n_pad).
            for i in 0..ins {
                let d: &mut [f32; 8] = (&mut dst[(i0 + i) * n_pad + o0..][..8])
                    .try_into()
                    .expect("8");
                for (o, d) in d.iter_mut().enumerate() {
                    *d = block[o][i];
                }
            }
        }
    }
    for row in dst.chunks_exact_mut(n_pad) {
        row[n..].fill(0.0);
    }
}

/// Copies `rows` `[k_in][n]` (row-major: row `kk` holds input `kk`'s
/// weight to every output, the transpose of PyTorch's layout) into `dst`
/// `[k_in][n_pad]`, padding 0: a weight packed for `a · rows`. A backward
/// pass multiplies by a weight this way (`dx = dy · W`).
pub fn pack_input_rows(rows: &[f32], k_in: usize, n: usize, dst: &mut [f32]) {
    let n_pad = padded(n);
    assert_eq!(rows.len(), k_in * n, "rows [k_in][n]");
    assert_eq!(dst.len(), k_in * n_pad, "packed [k_in][n_pad]");
    for (d, src) in dst.chunks_exact_mut(n_pad).zip(rows.chunks_exact(n)) {
        d[..n].copy_from_slice(src);
        d[n..].fill(0.0);
    }
}

/// A dense layer's packed weights in borrowed storage (a caller that packs
/// at every step keeps its buffers): what the kernel multiplies by.
#[derive(Debug, Clone, Copy)]
pub struct Packed<'a> {
    /// Inputs per row of `a` (its row stride).
    k: usize,
    /// The layer's own inputs, the first of each row (what is summed).
    k_in: usize,
    /// Outputs padded to a multiple of [`PAD`].
    n_pad: usize,
    /// `[k_in][n_pad]` (more rows are not read).
    weights: &'a [f32],
    /// `[n_pad]`; none: no bias.
    bias: Option<&'a [f32]>,
}

impl<'a> Packed<'a> {
    /// `weights` `[k_in][n_pad]` (n_pad a multiple of [`PAD`], from the
    /// length of `bias` or, without one, of `weights`' rows) for input
    /// rows of stride `k ≥ k_in`.
    pub fn new(weights: &'a [f32], bias: Option<&'a [f32]>, k_in: usize, k: usize) -> Self {
        assert!(k >= k_in && k_in > 0, "row stride below the layer's inputs");
        let n_pad = bias.map_or(weights.len() / k_in, <[f32]>::len);
        assert_eq!(n_pad % PAD, 0, "outputs padded to whole vectors");
        assert!(weights.len() >= k_in * n_pad, "weights [k_in][n_pad]");
        Self {
            k,
            k_in,
            n_pad,
            weights,
            bias,
        }
    }

    /// `out[r] = bias + W a[r]` (ReLU'd if `relu`) for the `rows` rows of
    /// `a` (stride `k`); `out` has stride `n_pad`.
    pub fn apply(self, isa: Isa, a: &[f32], rows: usize, out: &mut [f32], relu: bool) {
        assert!(a.len() >= rows * self.k, "input rows");
        assert!(out.len() >= rows * self.n_pad, "output rows");
        let job = Job {
            a,
            rows,
            walk: Walk {
                row: self.k,
                input: 1,
                len: self.k_in,
            },
            w: self.weights,
            n_pad: self.n_pad,
            bias: self.bias,
            out,
            relu,
        };
        run(isa, job);
    }
}

/// `out = aᵀ · w`: `out[r] = Σ_kk a[kk][r] · w[kk]` for the first `rows`
/// columns of the `k` rows of `a` (stride `a_stride`) and the `k` rows of
/// `w` (`n_pad` numbers each, a multiple of [`PAD`]); `out` has stride
/// `n_pad`. Both sides used as they lie: a weight's gradient `dyᵀ · x`
/// over a batch of activation rows, `dy` read down its columns.
#[allow(clippy::too_many_arguments)]
pub fn product_transposed(
    isa: Isa,
    (a, a_stride): (&[f32], usize),
    rows: usize,
    k: usize,
    w: &[f32],
    n_pad: usize,
    out: &mut [f32],
) {
    assert_eq!(n_pad % PAD, 0, "rows of w padded to whole vectors");
    assert!(rows <= a_stride, "columns of a within its stride");
    assert!(k == 0 || a.len() >= (k - 1) * a_stride + rows, "rows of a");
    assert!(w.len() >= k * n_pad, "right-hand rows");
    assert!(out.len() >= rows * n_pad, "output rows");
    let job = Job {
        a,
        rows,
        walk: Walk {
            row: 1,
            input: a_stride,
            len: k,
        },
        w,
        n_pad,
        bias: None,
        out,
        relu: false,
    };
    run(isa, job);
}

fn run(isa: Isa, job: Job<'_>) {
    match isa {
        // SAFETY: `Isa::available` lists these only where the CPU has them.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::gemm_avx512(job) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::gemm_avx2(job) },
        _ => gemm::<f32, 4, 4>(job),
    }
}

/// One call's operands (slices checked by [`PackedLinear::apply`]).
struct Job<'a> {
    a: &'a [f32],
    rows: usize,
    /// How `a` is read.
    walk: Walk,
    w: &'a [f32],
    n_pad: usize,
    /// None: no bias.
    bias: Option<&'a [f32]>,
    out: &'a mut [f32],
    relu: bool,
}

/// Where input `kk` of row `r` of a product's left side lies: at
/// `r · row + kk · input`, for `kk` below `len`.
#[derive(Debug, Clone, Copy)]
struct Walk {
    row: usize,
    input: usize,
    len: usize,
}

/// A vector of f32 lanes: what the kernels need of a SIMD register (the
/// dense layers here, [`row_sum`] for MEDIC's set encoders).
pub(crate) trait Lanes: Copy {
    const N: usize;
    /// # Safety
    /// `p` readable for `N` floats; the CPU has the instruction set.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` readable; the CPU has the instruction set.
    unsafe fn broadcast(p: *const f32) -> Self;
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn splat(x: f32) -> Self;
    /// `a · b + c`. # Safety: as [`Lanes::splat`].
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// max(self, 0). # Safety: as [`Lanes::splat`].
    unsafe fn relu(self) -> Self;
    /// `a + b`. # Safety: as [`Lanes::splat`].
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a − b`. # Safety: as [`Lanes::splat`].
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// The sum of the lanes. # Safety: as [`Lanes::splat`].
    unsafe fn sum_lanes(self) -> f32;
    /// # Safety
    /// `p` writable for `N` floats; the CPU has the instruction set.
    unsafe fn store(self, p: *mut f32);
}

impl Lanes for f32 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> Self {
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // Not `mul_add`: without FMA hardware that is a libm call.
        a * b + c
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        self.max(0.0)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        a - b
    }
    #[inline(always)]
    unsafe fn sum_lanes(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { p.write_unaligned(self) }
    }
}

/// What [`row_sum`] adds up.
#[derive(Clone, Copy)]
pub(crate) enum Term {
    /// a_i
    Value,
    /// a_i · b_i
    Product,
    /// (a_i − mean)²
    CentredSquare,
}

/// Σ of `term` over `a` (and `b`, as long as `a`; only products read it):
/// two vectors of partial sums, the tail one number at a time. The
/// compiler leaves such sums scalar (it may not reorder a float sum).
///
/// # Safety
/// The CPU has `L`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn row_sum<L: Lanes>(a: &[f32], b: &[f32], mean: f32, term: Term) -> f32 {
    assert_eq!(a.len(), b.len(), "row_sum: rows of one length");
    let (n, step) = (a.len(), 2 * L::N);
    let whole = n - n % step;
    // SAFETY: every load is below `whole` ≤ n in both rows; the caller
    // vouches for the instruction set.
    unsafe {
        let m = L::splat(mean);
        let (mut s0, mut s1) = (L::splat(0.0), L::splat(0.0));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < whole {
            let (x0, x1) = (L::load(pa.add(i)), L::load(pa.add(i + L::N)));
            match term {
                Term::Value => {
                    s0 = L::add(s0, x0);
                    s1 = L::add(s1, x1);
                }
                Term::Product => {
                    let (y0, y1) = (L::load(pb.add(i)), L::load(pb.add(i + L::N)));
                    s0 = L::fma(x0, y0, s0);
                    s1 = L::fma(x1, y1, s1);
                }
                Term::CentredSquare => {
                    let (d0, d1) = (L::sub(x0, m), L::sub(x1, m));
                    s0 = L::fma(d0, d0, s0);
                    s1 = L::fma(d1, d1, s1);
                }
            }
            i += step;
        }
        let mut total = L::add(s0, s1).sum_lanes();
        for j in whole..n {
            total += match term {
                Term::Value => a[j],
                Term::Product => a[j] * b[j],
                Term::CentredSquare => (a[j] - mean) * (a[j] - mean),
            };
        }
        total
    }
}

/// The whole product; rows read along (every dense layer) compiled with
/// their step 1 known.
#[inline(always)]
fn gemm<L: Lanes, const R: usize, const NV: usize>(job: Job<'_>) {
    if job.walk.input == 1 {
        let walk = Walk {
            input: 1,
            ..job.walk
        };
        blocks::<L, R, NV>(Job { walk, ..job });
    } else {
        blocks::<L, R, NV>(job);
    }
}

/// The product in column blocks of `NV` vectors and row blocks of `R`
/// rows (remainders one vector or one row at a time).
#[inline(always)]
fn blocks<L: Lanes, const R: usize, const NV: usize>(job: Job<'_>) {
    let Job {
        a,
        rows,
        walk,
        w,
        n_pad,
        bias,
        out,
        relu,
    } = job;
    let vectors = n_pad / L::N;
    let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    // Column `c` of the bias, null for none (what `tile` reads as zeros).
    let bias_at = |c: usize| {
        if bias.is_null() {
            bias
        } else {
            bias.wrapping_add(c)
        }
    };
    let (a, w, out) = (a.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut v0 = 0;
    while v0 < vectors {
        let nv = (vectors - v0).min(NV);
        let c0 = v0 * L::N;
        let mut r0 = 0;
        // SAFETY: rows r0..r0 + R of `a` and `out` and columns c0.. of one
        // block are inside the slices `apply` checked.
        unsafe {
            let at = |r0: usize| (a.add(r0 * walk.row), out.add(r0 * n_pad + c0));
            // Block column `o`'s weights and bias.
            let wb = |o: usize| (w.add(c0 + o), bias_at(c0 + o));
            while r0 + R <= rows {
                let (ar, or) = at(r0);
                if nv == NV {
                    tile::<L, R, NV>(ar, walk, wb(0), n_pad, or, relu);
                } else {
                    for v in 0..nv {
                        let o = v * L::N;
                        tile::<L, R, 1>(ar, walk, wb(o), n_pad, or.add(o), relu);
                    }
                }
                r0 += R;
            }
            for r in r0..rows {
                let (ar, or) = at(r);
                for v in 0..nv {
                    let o = v * L::N;
                    tile::<L, 1, 1>(ar, walk, wb(o), n_pad, or.add(o), relu);
                }
            }
        }
        v0 += nv;
    }
}

/// `R` rows × `NV` vectors of outputs, accumulated in registers over the
/// `walk.len` inputs of each row.
///
/// # Safety
/// `a` readable for `R` rows and `walk.len` inputs as `walk` lays them
/// out; `w` for `walk.len` rows of stride `n_pad` and `NV · L::N` columns;
/// `bias` null or readable for those columns; `out` writable for `R` rows
/// of stride `n_pad` and those columns; the CPU has `L`'s instruction set.
#[inline(always)]
unsafe fn tile<L: Lanes, const R: usize, const NV: usize>(
    a: *const f32,
    walk: Walk,
    (w, bias): (*const f32, *const f32),
    n_pad: usize,
    out: *mut f32,
    relu: bool,
) {
    // Debug builds check every multiplication and every plain load for
    // faults, which keeps the accumulators out of registers: pointers are
    // bumped, and loads go through `Lanes` (masked loads, unchecked).
    unsafe {
        let mut acc = [[L::splat(0.0); NV]; R];
        if !bias.is_null() {
            for v in 0..NV {
                let b = L::load(bias.wrapping_add(v * L::N));
                for row in acc.iter_mut() {
                    row[v] = b;
                }
            }
        }
        let (mut ak, mut wk) = (a, w);
        for _ in 0..walk.len {
            let mut wv = [L::splat(0.0); NV];
            for (v, x) in wv.iter_mut().enumerate() {
                *x = L::load(wk.wrapping_add(v * L::N));
            }
            let mut ar = ak;
            for row in acc.iter_mut() {
                let x = L::broadcast(ar);
                ar = ar.wrapping_add(walk.row);
                for v in 0..NV {
                    row[v] = L::fma(x, wv[v], row[v]);
                }
            }
            ak = ak.wrapping_add(walk.input);
            wk = wk.wrapping_add(n_pad);
        }
        let mut o = out;
        for row in acc.iter() {
            for (v, &x) in row.iter().enumerate() {
                let y = if relu { x.relu() } else { x };
                y.store(o.wrapping_add(v * L::N));
            }
            o = o.wrapping_add(n_pad);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, Lanes, gemm};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_avx512(job: Job<'_>) {
        gemm::<__m512, 6, 4>(job)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2(job: Job<'_>) {
        gemm::<__m256, 6, 2>(job)
    }

    impl Lanes for __m512 {
        const N: usize = 16;
        // Masked with every lane on: the same instruction as `loadu`,
        // without the null check debug builds put in `loadu`.
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_maskz_loadu_ps(0xFFFF, p) }
        }
        #[inline(always)]
        unsafe fn broadcast(p: *const f32) -> Self {
            unsafe { _mm512_broadcastss_ps(_mm_load_ss(p)) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { _mm512_max_ps(self, _mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum_lanes(self) -> f32 {
            unsafe { _mm512_reduce_add_ps(self) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_mask_storeu_ps(p, 0xFFFF, self) }
        }
    }

    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_maskload_ps(p, _mm256_set1_epi32(-1)) }
        }
        #[inline(always)]
        unsafe fn broadcast(p: *const f32) -> Self {
            unsafe { _mm256_broadcastss_ps(_mm_load_ss(p)) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { _mm256_max_ps(self, _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum_lanes(self) -> f32 {
            unsafe {
                let q = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps(self, 1));
                let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
                _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_maskstore_ps(p, _mm256_set1_epi32(-1), self) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by definition, in f64.
    fn reference(w: &[f32], b: &[f32], a: &[f32], rows: usize, k_in: usize, k: usize) -> Vec<f64> {
        let n = b.len();
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for o in 0..n {
                let mut s = b[o] as f64;
                for i in 0..k_in {
                    s += w[o * k_in + i] as f64 * a[r * k + i] as f64;
                }
                out[r * n + o] = s;
            }
        }
        out
    }

    /// [`row_sum`] of each kind for every vector width this CPU has
    /// (scalar always), tails of every length included, against f64.
    #[test]
    fn row_sums_equal_the_sums_in_f64_for_every_instruction_set() {
        let value = |i: usize, s: f32| ((i * 7919 % 97) as f32 / 48.5 - 1.0) * s + 0.5;
        for n in (0..70).chain([128, 129, 143, 256]) {
            let a: Vec<f32> = (0..n).map(|i| value(i, 3.0)).collect();
            let b: Vec<f32> = (0..n).map(|i| value(i + 13, 2.0)).collect();
            let mean = 0.7f32;
            let exact = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>();
            let want = [
                exact(&|i| a[i] as f64),
                exact(&|i| a[i] as f64 * b[i] as f64),
                exact(&|i| ((a[i] - mean) as f64).powi(2)),
            ];
            let tol = 1e-5 * (1.0 + exact(&|i| (a[i] as f64).powi(2) + (b[i] as f64).powi(2)));
            for isa in Isa::available() {
                for (k, term) in [Term::Value, Term::Product, Term::CentredSquare]
                    .into_iter()
                    .enumerate()
                {
                    // SAFETY: `Isa::available` lists only what the CPU has.
                    let got = unsafe {
                        match isa {
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512 => row_sum::<std::arch::x86_64::__m512>(&a, &b, mean, term),
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 => row_sum::<std::arch::x86_64::__m256>(&a, &b, mean, term),
                            _ => row_sum::<f32>(&a, &b, mean, term),
                        }
                    };
                    assert!(
                        (got as f64 - want[k]).abs() < tol,
                        "{isa:?} n {n} term {k}: {got} vs {}",
                        want[k]
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_computes_the_product_with_remainders() {
        // Sizes off every block: 13 rows (6 + 6 + 1, 4 + 4 + 4 + 1),
        // 37 outputs (3 vectors of 16: a partial column block), 11 inputs
        // in rows of stride 12.
        let (rows, k_in, k, n) = (13, 11, 12, 37);
        let value = |i: usize, s: f32| ((i * 7919 % 97) as f32 / 48.5 - 1.0) * s;
        let w: Vec<f32> = (0..n * k_in).map(|i| value(i, 0.5)).collect();
        let b: Vec<f32> = (0..n).map(|i| value(i + 5, 1.0)).collect();
        let mut a: Vec<f32> = (0..rows * k).map(|i| value(i + 11, 2.0)).collect();
        // The stride's extra input must not count (zero weights): poison it.
        for r in 0..rows {
            a[r * k + k_in] = 1e6;
        }
        let packed = PackedLinear::new(&w, &b, k_in, k);
        assert_eq!(packed.padded_outputs(), 48);
        let want = reference(&w, &b, &a, rows, k_in, k);
        let isas = Isa::available();
        assert!(isas.contains(&Isa::Scalar));
        for isa in isas {
            for relu in [false, true] {
                let mut out = vec![f32::NAN; rows * 48];
                packed.apply(isa, &a, rows, &mut out, relu);
                for r in 0..rows {
                    for o in 0..48 {
                        let got = out[r * 48 + o] as f64;
                        let expected = if o >= n {
                            0.0
                        } else if relu {
                            want[r * n + o].max(0.0)
                        } else {
                            want[r * n + o]
                        };
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "{isa:?} relu {relu} row {r} output {o}: {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    /// The borrowed form over buffers left dirty (NaN) by an earlier use:
    /// packing writes every number, so the products equal the owned
    /// layer's and, without a bias, the product by definition.
    #[test]
    fn packing_into_dirty_buffers_equals_the_packed_layer() {
        let (rows, k_in, k, n) = (13, 11, 16, 37);
        let n_pad = padded(n);
        let value = |i: usize, s: f32| ((i * 7919 % 97) as f32 / 48.5 - 1.0) * s;
        let w: Vec<f32> = (0..n * k_in).map(|i| value(i, 0.5)).collect();
        let b: Vec<f32> = (0..n).map(|i| value(i + 5, 1.0)).collect();
        let a: Vec<f32> = (0..rows * k).map(|i| value(i + 11, 2.0)).collect();
        let mut packed = vec![f32::NAN; k_in * n_pad];
        pack(&w, n, k_in, &mut packed);
        let mut bias = vec![0.0; n_pad];
        bias[..n].copy_from_slice(&b);
        // `w` read as `[k_in][n]` rows: `a · rows`, inputs on the left.
        let mut rows_packed = vec![f32::NAN; k_in * n_pad];
        pack_input_rows(&w, k_in, n, &mut rows_packed);
        let zero = vec![0.0; n];
        for isa in Isa::available() {
            let mut want = vec![f32::NAN; rows * n_pad];
            PackedLinear::new(&w, &b, k_in, k).apply(isa, &a, rows, &mut want, false);
            let mut got = vec![f32::NAN; rows * n_pad];
            Packed::new(&packed, Some(&bias), k_in, k).apply(isa, &a, rows, &mut got, false);
            assert_eq!(got, want, "{isa:?}: packed into a buffer");
            let mut got = vec![f32::NAN; rows * n_pad];
            Packed::new(&rows_packed, None, k_in, k).apply(isa, &a, rows, &mut got, false);
            // The reference multiplies by `[n][k_in]`: transpose the rows.
            let wt: Vec<f32> = (0..n * k_in)
                .map(|i| w[(i % k_in) * n + i / k_in])
                .collect();
            let exact = reference(&wt, &zero, &a, rows, k_in, k);
            for r in 0..rows {
                for o in 0..n_pad {
                    let expected = if o < n { exact[r * n + o] } else { 0.0 };
                    let g = got[r * n_pad + o] as f64;
                    assert!(
                        (g - expected).abs() < 1e-5,
                        "{isa:?} row {r} output {o}: {g}"
                    );
                }
            }
        }
    }

    /// `aᵀ · w` with `a` read down its columns (a gradient's rows in a
    /// padded matrix), sizes off every block, against f64.
    #[test]
    fn transposed_product_reads_down_columns() {
        let (k, rows, a_stride, n_pad) = (29, 13, 16, 48);
        let value = |i: usize, s: f32| ((i * 7919 % 97) as f32 / 48.5 - 1.0) * s;
        let mut a: Vec<f32> = (0..k * a_stride).map(|i| value(i, 1.5)).collect();
        // Columns past `rows` must not count: poison them.
        for kk in 0..k {
            a[kk * a_stride + rows..][..a_stride - rows].fill(f32::NAN);
        }
        let w: Vec<f32> = (0..k * n_pad).map(|i| value(i + 3, 0.7)).collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; rows * n_pad];
            product_transposed(isa, (&a, a_stride), rows, k, &w, n_pad, &mut out);
            for r in 0..rows {
                for c in 0..n_pad {
                    let want: f64 = (0..k)
                        .map(|kk| a[kk * a_stride + r] as f64 * w[kk * n_pad + c] as f64)
                        .sum();
                    let got = out[r * n_pad + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{isa:?} {r} {c}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
