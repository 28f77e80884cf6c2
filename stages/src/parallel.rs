//! Data parallelism for stages that process datasets independently.

use crate::stage::Progress;

/// Maps `f` over `items` on the rayon pool, counting each finished item on
/// `progress`; results come back in input order, so stages that process
/// datasets in parallel still write them deterministically.
pub fn par_map_counted<T: Sync, R: Send>(
    items: &[T],
    progress: &dyn Progress,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use rayon::prelude::*;
    items
        .par_iter()
        .map(|item| {
            let r = f(item);
            progress.inc(1);
            r
        })
        .collect()
}
