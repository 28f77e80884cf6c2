//! Data parallelism for stages that process datasets independently.

use crate::error::Result;
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

/// Runs a serial producer, a (parallel) worker and a serial sink as a
/// pipeline: while `work` computes chunk k, the sink takes chunk k-1's
/// results and the producer reads chunk k+1. Stages whose reading (Parquet
/// decoding) or writing (encoding, compression) is serial keep both cores
/// busy this way instead of alternating. The sink sees results in order.
pub fn overlapped<C: Send, R: Send>(
    mut produce: impl FnMut() -> Result<Option<C>> + Send,
    work: impl Fn(C) -> R + Sync,
    mut sink: impl FnMut(R) -> Result<()> + Send,
) -> Result<()> {
    let mut current = produce()?;
    let mut finished: Option<R> = None;
    while let Some(chunk) = current {
        let (result, next) = rayon::join(
            || work(chunk),
            || -> Result<Option<C>> {
                if let Some(done) = finished.take() {
                    sink(done)?;
                }
                produce()
            },
        );
        current = next?;
        finished = Some(result);
    }
    if let Some(done) = finished {
        sink(done)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapped_sinks_every_chunk_in_order_and_stops_at_an_error() {
        let mut chunks = (0..5).map(|k| vec![k; 3]).collect::<Vec<_>>().into_iter();
        let mut seen = Vec::new();
        overlapped(
            || Ok(chunks.next()),
            |c: Vec<i32>| c.iter().sum::<i32>(),
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, vec![0, 3, 6, 9, 12]);
        let mut k = 0;
        let err = overlapped(
            || {
                k += 1;
                if k == 3 {
                    Err(crate::error::StageError::data("chunk 3 is unreadable"))
                } else {
                    Ok(Some(k))
                }
            },
            |c: i32| c,
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("chunk 3"));
    }
}
