//! PyTorch's AdamW step on stacked parameter rows in three passes over
//! memory instead of eleven.
//!
//! `batched_reference.rs` keeps D datasets' parameters, gradients and
//! moments as [D, P] tensors (P ≈ 255k for the paper's network). Written as
//! libtorch operations the step is eleven passes over such tensors, five
//! of them into fresh temporaries: ~400 MB of memory traffic per iteration
//! of a 16-dataset stack, 36 % of an iteration with the paper's schedule
//! (measured, BENCHMARKS.md). Here: the moments in one pass, libtorch's
//! own square root of v, the parameters in one pass — in PyTorch's
//! operation order and f32 arithmetic, with a fused multiply-add exactly
//! where libtorch's build has one (its vectorized `lerp`; GCC contracts
//! `addcmul`'s vector multiply and add). On a CPU with AVX2 and FMA the
//! numbers are libtorch's to the bit (tested), so every figure trained with
//! the libtorch step reproduces. The square root stays libtorch's because
//! its MKL kernel is not correctly rounded (it differs from IEEE `sqrt` in
//! ~18 % of values), and a bit changed there changes a training run.

use tch::{Device, Kind, Tensor};

use crate::simd::Isa;

/// AdamW's constants (PyTorch's and tch's defaults).
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

/// Learning rate and decoupled weight decay of an AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    pub lr: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// Row r's bias corrections after `steps[r]` steps: (1 − β1^t,
    /// √(1 − β2^t)), as the libtorch path computes them (f64, then f32).
    pub fn corrections(steps: &[i32]) -> (Vec<f32>, Vec<f32>) {
        steps
            .iter()
            .map(|&t| {
                (
                    (1.0 - BETA1.powi(t)) as f32,
                    (1.0 - BETA2.powi(t)).sqrt() as f32,
                )
            })
            .unzip()
    }

    /// One step on the `[rows][P]` tensors `p` (parameters, in place), `g`
    /// (their gradient), `m` and `v` (moments, in place), row r with
    /// corrections `(c1[r], c2[r])` ([`Self::corrections`]): the passes
    /// below where all four are contiguous f32 on the CPU, libtorch's
    /// operations elsewhere (CUDA).
    pub fn step(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        c: (&[f32], &[f32]),
    ) {
        if !self.step_in_place(p, g, m, v, c) {
            self.libtorch_step(p, g, m, v, c);
        }
    }

    /// PyTorch's AdamW as its libtorch operations (on any device).
    fn libtorch_step(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        (c1, c2): (&[f32], &[f32]),
    ) {
        let column = |c: &[f32]| {
            Tensor::from_slice(c)
                .view([c.len() as i64, 1])
                .to_device(p.device())
        };
        let (bc1, bc2) = (column(c1), column(c2));
        let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
        let _ = m.lerp_(g, 1.0 - BETA1);
        let _ = v.g_mul_scalar_(BETA2);
        let _ = v.addcmul_(&(g * (1.0 - BETA2)), g);
        let denom = v.sqrt() / &bc2 + EPS;
        let _ = p.addcdiv_(&(&*m / &bc1 * -self.lr), &denom);
    }

    /// The two passes around libtorch's square root; false, and nothing
    /// done, unless all four tensors are contiguous f32 on the CPU.
    fn step_in_place(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        (c1, c2): (&[f32], &[f32]),
    ) -> bool {
        let size = p.size();
        let fits = |t: &Tensor| {
            t.device() == Device::Cpu
                && t.kind() == Kind::Float
                && t.is_contiguous()
                && t.size() == size
        };
        if ![&*p, g, &*m, &*v].into_iter().all(fits) || size.len() != 2 {
            return false;
        }
        let (rows, n) = (size[0] as usize, p.numel());
        assert_eq!(c1.len(), rows, "one correction per row");
        assert_eq!(c2.len(), rows, "one correction per row");
        // SAFETY: distinct contiguous f32 CPU tensors of n elements each
        // (parameters, gradient, two moments and the fresh root, each
        // allocated by its own operation), alive for the whole call; no
        // other reference to their storage is used meanwhile.
        unsafe {
            let slice = |t: &Tensor| std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n);
            match Isa::detect() {
                // `detect` gives these only where the CPU has AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx2 => moments_fma(slice(g), slice(m), slice(v)),
                _ => moments::<false>(slice(g), slice(m), slice(v)),
            }
            let root = v.sqrt();
            self.parameters(slice(p), slice(m), slice(&root), c1, c2);
        }
        true
    }

    /// p ← p(1 − lr·wd) + (m/c1 · −lr) / (√v/c2 + ε), row by row.
    fn parameters(&self, p: &mut [f32], m: &[f32], root: &[f32], c1: &[f32], c2: &[f32]) {
        let width = p.len() / c1.len().max(1);
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let (neg_lr, eps) = (-self.lr as f32, EPS as f32);
        for (r, (&c1, &c2)) in c1.iter().zip(c2).enumerate() {
            let span = r * width..(r + 1) * width;
            let (p, m, root) = (&mut p[span.clone()], &m[span.clone()], &root[span]);
            for ((p, &m), &root) in p.iter_mut().zip(m).zip(root) {
                *p = *p * decay + m / c1 * neg_lr / (root / c2 + eps);
            }
        }
    }
}

impl AdamW {
    /// One step on one row `p` with its gradient `g`, moments `m` and `v`
    /// and corrections `(c1, c2)`, in a single pass over memory with IEEE
    /// square roots: the step of `cpu_network.rs`'s training, whose
    /// gradients differ from libtorch's in rounding anyway (libtorch's
    /// square root, kept in [`Self::step`], was a third of the step's time).
    pub fn step_row(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: (f32, f32)) {
        let n = p.len();
        assert!(g.len() == n && m.len() == n && v.len() == n, "one row each");
        match Isa::detect() {
            // SAFETY: `detect` gives these only where the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { row_fma(self, p, g, m, v, c) },
            _ => self.row::<false>(p, g, m, v, c),
        }
    }

    #[inline(always)]
    fn row<const FMA: bool>(
        &self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        (c1, c2): (f32, f32),
    ) {
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let (neg_lr, eps) = (-self.lr as f32, EPS as f32);
        let (w1, b2, w2) = ((1.0 - BETA1) as f32, BETA2 as f32, (1.0 - BETA2) as f32);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let decayed = *v * b2;
            if FMA {
                *m = w1.mul_add(g - *m, *m);
                *v = (g * w2).mul_add(g, decayed);
            } else {
                *m += w1 * (g - *m);
                *v = decayed + g * w2 * g;
            }
            *p = *p * decay + *m / c1 * neg_lr / (v.sqrt() / c2 + eps);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_fma(
    opt: &AdamW,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    c: (f32, f32),
) {
    opt.row::<true>(p, g, m, v, c)
}

/// m ← m + (1 − β1)(g − m) (libtorch's lerp for a weight below 0.5);
/// v ← vβ2 + (g(1 − β2))·g (its `addcmul`), element-wise; `FMA` where
/// libtorch's kernels fuse them. Plain loops: closures would not inherit
/// the caller's target features.
#[inline(always)]
fn moments<const FMA: bool>(g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let (w1, b2, w2) = ((1.0 - BETA1) as f32, BETA2 as f32, (1.0 - BETA2) as f32);
    for ((&g, m), v) in g.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
        let decayed = *v * b2;
        if FMA {
            *m = w1.mul_add(g - *m, *m);
            *v = (g * w2).mul_add(g, decayed);
        } else {
            *m += w1 * (g - *m);
            *v = decayed + g * w2 * g;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn moments_fma(g: &[f32], m: &mut [f32], v: &mut [f32]) {
    moments::<true>(g, m, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor")
    }

    #[test]
    fn steps_equal_libtorch_s_operations_over_many_steps() {
        let (rows, width) = (3usize, 1000usize);
        let opt = AdamW {
            lr: 1e-3,
            weight_decay: 0.01,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut draw = |scale: f32| -> Vec<f32> {
            (0..rows * width)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect()
        };
        let p0 = draw(1.0);
        let shape = [rows as i64, width as i64];
        // Ours (p, m, v) and libtorch's (pt, mt, vt), from the same start.
        let mut p = Tensor::from_slice(&p0).view(shape);
        let (mut m, mut v) = (p.zeros_like(), p.zeros_like());
        let mut pt = p.copy();
        let (mut mt, mut vt) = (pt.zeros_like(), pt.zeros_like());
        // And row by row in one pass (`step_row`).
        let (mut pr, mut mr, mut vr) =
            (p0.clone(), vec![0.0; rows * width], vec![0.0; rows * width]);
        // Rows at different step counts, as datasets in a stack are.
        let mut steps = vec![0, 7, 300];
        for _ in 0..50 {
            // Gradients over six decades, some exactly 0.
            let mut g = draw(1.0);
            for (i, x) in g.iter_mut().enumerate() {
                *x *= 10f32.powi((i % 6) as i32 - 4);
                if i % 97 == 0 {
                    *x = 0.0;
                }
            }
            for t in &mut steps {
                *t += 1;
            }
            let (c1, c2) = AdamW::corrections(&steps);
            let gt = Tensor::from_slice(&g).view(shape);
            assert!(opt.step_in_place(&mut p, &gt, &mut m, &mut v, (&c1, &c2)));
            opt.libtorch_step(&mut pt, &gt, &mut mt, &mut vt, (&c1, &c2));
            for r in 0..rows {
                let row = r * width..(r + 1) * width;
                opt.step_row(
                    &mut pr[row.clone()],
                    &g[row.clone()],
                    &mut mr[row.clone()],
                    &mut vr[row],
                    (c1[r], c2[r]),
                );
            }
        }
        assert_eq!(pt.kind(), Kind::Float);
        // Element i's gradients are of size s_i = 10^(i % 6 - 4): m is
        // compared at the scale of s_i, v of s_i², p of 1.
        let scale = |i: usize| 10f32.powi((i % 6) as i32 - 4);
        let arrays = [
            ("p", values(&p), values(&pt), 0),
            ("m", values(&m), values(&mt), 1),
            ("v", values(&v), values(&vt), 2),
        ];
        // The single pass: libtorch's moments, its parameters to the
        // rounding of a square root (MKL's is not correctly rounded).
        let relative = |ours: &[f32], theirs: &[f32], power: i32| {
            ours.iter()
                .zip(theirs)
                .enumerate()
                .map(|(i, (a, b))| (a - b).abs() / (b.abs() + scale(i).powi(power)))
                .fold(0f32, f32::max)
        };
        for (name, ours, power) in [("p", &pr, 0), ("m", &mr, 1), ("v", &vr, 2)] {
            let theirs = &arrays[power as usize].2;
            let worst = relative(ours, theirs, power);
            assert!(
                worst < 1e-5,
                "one pass, {name}: relative difference {worst}"
            );
        }
        for (name, ours, theirs, power) in arrays {
            let worst = ours
                .iter()
                .zip(&theirs)
                .enumerate()
                .map(|(i, (a, b))| (a - b).abs() / (b.abs() + scale(i).powi(power)))
                .fold(0f32, f32::max);
            // With FMA, libtorch's numbers to the bit; without, lerp's
            // and addcmul's roundings differ.
            if Isa::detect() == Isa::Scalar {
                assert!(worst < 1e-5, "{name}: relative difference {worst}");
            } else {
                assert_eq!(worst, 0.0, "{name}: libtorch's numbers to the bit");
            }
        }
        // The steps moved the parameters (a no-op would also "agree").
        let moved = values(&p)
            .iter()
            .zip(&p0)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
        assert!(moved > rows * width / 2, "{moved} parameters moved");
    }
}
