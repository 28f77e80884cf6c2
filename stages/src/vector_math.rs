//! Element-wise arithmetic shared by the hand-written CPU kernels (MEDIC's
//! set encoders, DINAMO-ML's network): a multiply-add that is fused where
//! the CPU has FMA, row sums in vector registers, LayerNorm's moments and a
//! vectorizable e^x. The kernels are generic over [`MulAdd`] and compiled
//! twice: once inside a function with AVX2 + FMA enabled ([`Avx2`]), once
//! portable ([`Separate`]).

#[cfg(target_arch = "x86_64")]
use crate::simd::{Lanes, Term, row_sum};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256;

/// How the kernel computes `a · b + c` and the sums over a row:
/// [`Avx2`] (fused multiply-adds, reductions in AVX2 registers) in the
/// tiles compiled for AVX2 or AVX-512, [`Separate`] elsewhere
/// (`f32::mul_add` without FMA hardware is a libm call per number).
///
/// The reductions are written out because the compiler leaves them scalar:
/// it may not reorder a float sum, and it did not pack sixteen partial sums
/// into vectors itself (measured: a scalar add per number in LayerNorm's
/// moments and the pooling scores).
pub(crate) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;

    /// Σ x.
    #[inline(always)]
    fn sum(x: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (chunks, tail) = x.as_chunks::<LANES>();
        let tail: f32 = tail.iter().sum();
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// Σ a·b over the shorter of the two.
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [0f32; LANES];
        let ((ca, ta), (cb, tb)) = (a[..n].as_chunks::<LANES>(), b[..n].as_chunks::<LANES>());
        let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
        for (x, y) in ca.iter().zip(cb) {
            for l in 0..LANES {
                acc[l] = Self::mul_add(x[l], y[l], acc[l]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// `out = Σ_c coefs[c·step] · rows[c·stride ..][..out.len()]` over `n`
    /// rows: a small product's output row (DINAMO-ML's attention).
    #[inline(always)]
    fn combine(coefs: &[f32], step: usize, n: usize, rows: &[f32], stride: usize, out: &mut [f32]) {
        let w = out.len();
        out.fill(0.0);
        for c in 0..n {
            let a = coefs[c * step];
            for (o, &x) in out.iter_mut().zip(&rows[c * stride..][..w]) {
                *o = Self::mul_add(a, x, *o);
            }
        }
    }

    /// Σ (x − mean)².
    #[inline(always)]
    fn centred_squares(x: &[f32], mean: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let (chunks, tail) = x.as_chunks::<LANES>();
        let tail: f32 = tail.iter().map(|&v| (v - mean) * (v - mean)).sum();
        for c in chunks {
            for l in 0..LANES {
                let d = c[l] - mean;
                acc[l] = Self::mul_add(d, d, acc[l]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// Portable code: a separate multiply and add.
pub(crate) struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Only in [`tile_avx2`] and [`tile_avx512`], whose CPUs have AVX2 and
/// FMA: its reductions are [`row_sum`] in AVX2 registers (a private type,
/// so nothing else can call them).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Avx2 {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn sum(x: &[f32]) -> f32 {
        // SAFETY: the tiles that use this type run only on AVX2 + FMA CPUs.
        unsafe { row_sum::<__m256>(x, x, 0.0, Term::Value) }
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: as in `sum`.
        unsafe { row_sum::<__m256>(&a[..n], &b[..n], 0.0, Term::Product) }
    }

    /// The output row in AVX2 registers, up to four vectors at a time
    /// (`out.len()` a multiple of 8).
    #[inline(always)]
    fn combine(coefs: &[f32], step: usize, n: usize, rows: &[f32], stride: usize, out: &mut [f32]) {
        let w = out.len();
        assert_eq!(w % 8, 0, "whole vectors");
        if n == 0 {
            out.fill(0.0);
            return;
        }
        assert!(coefs.len() > (n - 1) * step, "coefficients");
        assert!(rows.len() >= (n - 1) * stride + w, "rows");
        let mut at = 0;
        while at < w {
            let vectors = ((w - at) / 8).min(4);
            let (r, o) = (&rows[at..], &mut out[at..]);
            // SAFETY: the lengths asserted above; AVX2 + FMA as in `sum`.
            unsafe {
                match vectors {
                    4 => combine_vectors::<__m256, 4>(coefs, step, n, r, stride, o),
                    3 => combine_vectors::<__m256, 3>(coefs, step, n, r, stride, o),
                    2 => combine_vectors::<__m256, 2>(coefs, step, n, r, stride, o),
                    _ => combine_vectors::<__m256, 1>(coefs, step, n, r, stride, o),
                }
            }
            at += vectors * 8;
        }
    }

    #[inline(always)]
    fn centred_squares(x: &[f32], mean: f32) -> f32 {
        // SAFETY: as in `sum`.
        unsafe { row_sum::<__m256>(x, x, mean, Term::CentredSquare) }
    }
}

/// [`MulAdd::combine`] for `NV` vectors of `L` lanes, the sums in registers.
///
/// # Safety
/// `coefs` readable at `c·step` for c < n; `rows` for `NV` vectors at
/// `c·stride`; `out` writable for `NV` vectors; the CPU has `L`'s
/// instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn combine_vectors<L: Lanes, const NV: usize>(
    coefs: &[f32],
    step: usize,
    n: usize,
    rows: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    // Even and odd rows into separate sums: one chain of n fused
    // multiply-adds per vector waits on each one's latency. Pointers are
    // bumped (an index times a stride is an overflow check per row in
    // builds with overflow checks).
    unsafe {
        let (mut even, mut odd) = ([L::splat(0.0); NV], [L::splat(0.0); NV]);
        let (mut pc, mut pr) = (coefs.as_ptr(), rows.as_ptr());
        for _ in 0..n / 2 {
            let (a, b) = (L::broadcast(pc), L::broadcast(pc.wrapping_add(step)));
            let next = pr.wrapping_add(stride);
            for v in 0..NV {
                even[v] = L::fma(a, L::load(pr.wrapping_add(v * L::N)), even[v]);
                odd[v] = L::fma(b, L::load(next.wrapping_add(v * L::N)), odd[v]);
            }
            pc = pc.wrapping_add(2 * step);
            pr = pr.wrapping_add(2 * stride);
        }
        if n % 2 == 1 {
            let a = L::broadcast(pc);
            for (v, acc) in even.iter_mut().enumerate() {
                *acc = L::fma(a, L::load(pr.wrapping_add(v * L::N)), *acc);
            }
        }
        for v in 0..NV {
            L::add(even[v], odd[v]).store(out.as_mut_ptr().add(v * L::N));
        }
    }
}

/// Lanes of the partial sums below: the compiler keeps them in one vector
/// (a single running sum would be a chain it may not reorder).
pub(crate) const LANES: usize = 16;

/// The largest number of `x` (−∞ for none; NaNs skipped, as a fold of
/// `f32::max`), eight lanes at a time: such a fold compiles to one chain
/// of compare-and-blend, a number at a time.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let bigger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (chunks, tail) = x.as_chunks::<8>();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = bigger(*l, v);
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| bigger(m, v))
}

/// LayerNorm's mean and 1/√(var + ε) of `x` (var from the centred values,
/// as PyTorch: no cancellation of a large mean).
#[inline(always)]
pub(crate) fn moments<M: MulAdd>(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = M::sum(x) / n;
    let var = M::centred_squares(x, mean) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Softmax weights relative to the largest below e^CUTOFF (≈ 9e-27) are
/// taken as 0: next to the largest (1) they change no f32 sum, and the
/// products of such weights with the features are subnormal numbers, which
/// the CPU computes ~100× slower (measured: 25× slower encoders).
pub(crate) const CUTOFF: f32 = -60.0;

/// e^x for x ≤ 0 (softmax's shifted scores) to ~1 ulp, 0 below
/// [`CUTOFF`]: Cephes' expf polynomial on a range reduction the compiler
/// can vectorize (libm's is a call per number).
#[inline(always)]
pub(crate) fn exp<M: MulAdd>(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer n, held in the low bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = if x > CUTOFF { x } else { CUTOFF };
    let v = xc * std::f32::consts::LOG2_E + ROUND;
    let n = v - ROUND;
    // Wrapping: overflow checks (debug builds) would keep this loop scalar.
    let biased = (v.to_bits() as i32)
        .wrapping_sub(ROUND.to_bits() as i32)
        .wrapping_add(127);
    let two_n = f32::from_bits((biased << 23) as u32);
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = M::mul_add(p, r, c);
    }
    let e = (M::mul_add(p, r * r, r) + 1.0) * two_n;
    if x < CUTOFF { 0.0 } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;

    /// The lane-wise maximum equals the fold of `f32::max` for every
    /// length (tails included), NaNs skipped, −∞ for none.
    #[test]
    fn max_equals_the_fold_of_f32_max() {
        for n in 0..40 {
            let mut x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 97) as f32 - 50.0) / 7.0)
                .collect();
            if n > 3 {
                x[n / 2] = f32::NAN;
            }
            let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), want, "length {n}");
        }
    }

    #[test]
    fn exp_is_libm_s_within_2_ulp_and_0_past_the_cutoff() {
        // Both ways of multiply-adding (the fused one is a libm call here).
        let mut kinds = vec![(exp::<Separate> as fn(f32) -> f32, "separate")];
        #[cfg(target_arch = "x86_64")]
        kinds.push((exp::<Avx2>, "fused"));
        for (exp, how) in kinds {
            assert_eq!(exp(CUTOFF - 1e-3), 0.0);
            assert_eq!(exp(f32::NEG_INFINITY), 0.0);
            for i in 0..=60_000 {
                let x = -(i as f32) / 1000.0;
                let (got, want) = (exp(x), x.exp());
                assert!(
                    ((got - want) / want).abs() < 2.5e-7,
                    "exp({x}) = {got} ({how}), libm {want}"
                );
            }
        }
    }

    /// The row sums in AVX2 registers equal the portable ones (both in
    /// f64 within f32 rounding), tails of every length 0–15 included.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_reductions_equal_the_portable_ones() {
        use rand::{Rng, SeedableRng};
        if !Isa::available().contains(&Isa::Avx2) {
            // Nothing to compare on this CPU: say so, and check that the
            // tiles cannot pick the AVX2 kernel here.
            eprintln!("no AVX2 on this CPU: only the portable reductions run");
            assert_ne!(Isa::detect(), Isa::Avx2);
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(32);
        for n in (0..40).chain([128, 129, 143, 256]) {
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..5.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            let mean = 0.7f32;
            let exact = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>();
            let cases = [
                (Separate::sum(&a), Avx2::sum(&a), exact(&|i| a[i] as f64)),
                (
                    Separate::dot(&a, &b),
                    Avx2::dot(&a, &b),
                    exact(&|i| (a[i] * b[i]) as f64),
                ),
                (
                    Separate::centred_squares(&a, mean),
                    Avx2::centred_squares(&a, mean),
                    exact(&|i| ((a[i] - mean) as f64).powi(2)),
                ),
            ];
            for (k, (portable, avx2, want)) in cases.into_iter().enumerate() {
                let tol = 1e-5 * (1.0 + (0..n).map(|i| (a[i] as f64).powi(2)).sum::<f64>());
                assert!(
                    (portable as f64 - want).abs() < tol,
                    "n {n} case {k}: {portable} vs {want}"
                );
                assert!(
                    (avx2 as f64 - want).abs() < tol,
                    "n {n} case {k}: avx2 {avx2} vs {want}"
                );
            }
        }
    }
}
