//! DINAMO-ML's dropout masks drawn in Rust, from one seeded stream per
//! dataset.
//!
//! libtorch draws dropout masks from its one global generator, element by
//! element on one core under a lock (a sixth of a training iteration on
//! 2 cores, measured). Worse, a dataset trained in a stack of several then
//! got masks that depended on the stack, and two stacks could not train on
//! two threads without racing for the generator. Here each dataset draws
//! from its own ChaCha8 stream keyed by (seed, dataset id), in the order of
//! its own training samples, so a dataset trains alike alone, in any group
//! and on any thread.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One dataset's stream of dropout multipliers: 0 with probability `p`,
/// 1 / (1 − p) otherwise (inverted dropout, as `torch.nn.Dropout`).
pub struct DropoutStream {
    rng: ChaCha8Rng,
    /// A 16-bit draw below this drops the element: p quantised to 2⁻¹⁶
    /// (0.15 is 0.149994). Half a word per element: the paper's network
    /// draws ~300k multipliers per training iteration, and generating them
    /// was ~7 % of an iteration at 32 bits each.
    drop_below: u32,
    keep: f32,
}

impl DropoutStream {
    /// The stream of dataset `dataset` under `seed`; `p` in [0, 1).
    pub fn new(seed: u64, dataset: i64, p: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Distinct datasets read distinct ChaCha streams of one key.
        rng.set_stream(dataset as u64);
        Self {
            rng,
            drop_below: (p * 65_536.0).round() as u32,
            keep: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// Fills `out` with the next multipliers, one 16-bit draw each, the
    /// low half of a 32-bit word first (drawn a block at a time, then
    /// compared without branches; an odd length leaves a half unused).
    pub fn fill(&mut self, out: &mut [f32]) {
        let (drop_below, keep) = (self.drop_below, self.keep);
        let mut words = [0u32; 1024];
        for chunk in out.chunks_mut(2 * words.len()) {
            let words = &mut words[..chunk.len().div_ceil(2)];
            self.rng.fill(words);
            let (pairs, odd) = chunk.as_chunks_mut::<2>();
            for (pair, &u) in pairs.iter_mut().zip(words.iter()) {
                pair[0] = if u & 0xFFFF < drop_below { 0.0 } else { keep };
                pair[1] = if u >> 16 < drop_below { 0.0 } else { keep };
            }
            if let (Some(o), Some(&u)) = (odd.first_mut(), words.last()) {
                *o = if u & 0xFFFF < drop_below { 0.0 } else { keep };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_a_fraction_p_and_scales_the_rest() {
        let mut s = DropoutStream::new(22, 7, 0.15);
        let mut out = vec![f32::NAN; 200_001];
        s.fill(&mut out);
        let dropped = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
        // Binomial standard error at n = 2e5: 0.0008 (p quantised: 0.149994).
        assert!((dropped - 0.15).abs() < 0.004, "dropped {dropped}");
        let keep = (1.0 / 0.85) as f32;
        assert!(out.iter().all(|&v| v == 0.0 || v == keep));
        // The mean multiplier is 1: dropout leaves activations unbiased.
        let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn each_dataset_has_its_own_reproducible_stream() {
        let draw = |seed, dataset| {
            let mut out = vec![0.0; 64];
            DropoutStream::new(seed, dataset, 0.5).fill(&mut out);
            out
        };
        assert_eq!(draw(1, 3), draw(1, 3));
        assert_ne!(draw(1, 3), draw(1, 4));
        assert_ne!(draw(1, 3), draw(2, 3));
        // An odd length draws the first of the even length's multipliers.
        let (mut five, mut six) = (vec![0.0; 2049], vec![0.0; 2050]);
        DropoutStream::new(1, 3, 0.5).fill(&mut five);
        DropoutStream::new(1, 3, 0.5).fill(&mut six);
        assert_eq!(five[..], six[..2049]);
        // p = 0 keeps everything at exactly 1.
        let mut out = vec![0.0; 65];
        DropoutStream::new(1, 3, 0.0).fill(&mut out);
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
