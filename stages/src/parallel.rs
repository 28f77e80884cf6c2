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

/// Maps `work` over `items` on as many threads as the rayon pool has and
/// hands each result to `sink`, in input order, on the calling thread while
/// later items are still being worked on. Unlike chunks of
/// [`par_map_counted`] with [`overlapped`], no worker waits at a chunk's
/// end for the slowest item of the chunk: a worker takes the next item as
/// soon as it is done, as long as fewer than `window` results are ahead of
/// the sink (which bounds the memory). For items of uneven cost (the
/// generator's datasets) with a serial sink (Parquet encoding). A sink
/// error stops the workers and is returned; a worker's panic is re-raised.
pub fn streamed_in_order<T: Sync, R: Send>(
    items: &[T],
    window: usize,
    progress: &dyn Progress,
    work: impl Fn(&T) -> R + Sync,
    mut sink: impl FnMut(R) -> Result<()>,
) -> Result<()> {
    use std::collections::BTreeMap;
    use std::sync::{Condvar, Mutex, MutexGuard};

    struct State<R> {
        /// The next item a worker takes.
        next: usize,
        /// Items handed to the sink.
        sunk: usize,
        done: BTreeMap<usize, R>,
        stop: bool,
    }
    /// Stops everyone if its worker unwinds, so the sink does not wait for
    /// a result that will never come.
    struct StopOnPanic<'a, R>(&'a Mutex<State<R>>, &'a Condvar);
    impl<R> Drop for StopOnPanic<'_, R> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                lock(self.0).stop = true;
                self.1.notify_all();
            }
        }
    }
    fn lock<R>(m: &Mutex<State<R>>) -> MutexGuard<'_, State<R>> {
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    let window = window.max(1);
    let state = Mutex::new(State {
        next: 0,
        sunk: 0,
        done: BTreeMap::new(),
        stop: false,
    });
    let changed = Condvar::new();
    let workers = rayon::current_num_threads().clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let _guard = StopOnPanic(&state, &changed);
                    loop {
                        let i = {
                            let mut s = lock(&state);
                            while !s.stop && s.next < items.len() && s.next >= s.sunk + window {
                                s = changed.wait(s).unwrap_or_else(|p| p.into_inner());
                            }
                            if s.stop || s.next >= items.len() {
                                return;
                            }
                            s.next += 1;
                            s.next - 1
                        };
                        let result = work(&items[i]);
                        progress.inc(1);
                        lock(&state).done.insert(i, result);
                        changed.notify_all();
                    }
                })
            })
            .collect();
        let mut sink_all = || -> Result<()> {
            for k in 0..items.len() {
                let result = {
                    let mut s = lock(&state);
                    loop {
                        if let Some(result) = s.done.remove(&k) {
                            s.sunk = k + 1;
                            break result;
                        }
                        if s.stop {
                            // A worker panicked; re-raised below.
                            return Ok(());
                        }
                        s = changed.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                };
                changed.notify_all();
                sink(result)?;
            }
            Ok(())
        };
        let result = sink_all();
        if result.is_err() {
            lock(&state).stop = true;
            changed.notify_all();
        }
        // A worker's panic goes on with its own message (the scope's own
        // would only say that a thread panicked).
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        result
    })
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

    struct Count(std::sync::atomic::AtomicU64);
    impl Progress for Count {
        fn inc(&self, n: u64) {
            self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Items of uneven cost come out in order, every one counted, never
    /// more than `window` ahead of the sink; a sink error stops the rest.
    #[test]
    fn streamed_in_order_sinks_in_order_within_the_window_and_stops_at_an_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let items: Vec<u64> = (0..40).collect();
            let (started, sunk) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let most_ahead = AtomicUsize::new(0);
            let progress = Count(0.into());
            let mut seen = Vec::new();
            streamed_in_order(
                &items,
                4,
                &progress,
                |&i| {
                    let ahead =
                        started.fetch_add(1, Ordering::SeqCst) + 1 - sunk.load(Ordering::SeqCst);
                    most_ahead.fetch_max(ahead, Ordering::SeqCst);
                    // Uneven: every fifth item is slow.
                    std::thread::sleep(std::time::Duration::from_millis(if i % 5 == 0 {
                        8
                    } else {
                        1
                    }));
                    i * i
                },
                |r| {
                    seen.push(r);
                    sunk.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, items.iter().map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(progress.0.load(Ordering::SeqCst), 40);
            let ahead = most_ahead.load(Ordering::SeqCst);
            // The window is 4 items past those handed to the sink; the
            // sink's own count lags by the one it is being handed.
            assert!((2..=5).contains(&ahead), "{ahead} items ahead of the sink");

            let worked = AtomicUsize::new(0);
            let err = streamed_in_order(
                &items,
                4,
                &progress,
                |&i| {
                    worked.fetch_add(1, Ordering::SeqCst);
                    i
                },
                |r| {
                    if r == 3 {
                        Err(crate::error::StageError::data("item 3 cannot be written"))
                    } else {
                        Ok(())
                    }
                },
            )
            .unwrap_err();
            assert!(err.to_string().contains("item 3"));
            assert!(
                worked.load(Ordering::SeqCst) <= 4 + 4,
                "workers went on after the error"
            );
        });
    }

    #[test]
    #[should_panic(expected = "item 7 panicked")]
    fn streamed_in_order_re_raises_a_workers_panic() {
        let items: Vec<u32> = (0..20).collect();
        let progress = Count(0.into());
        let _ = streamed_in_order(
            &items,
            4,
            &progress,
            |&i| {
                assert!(i != 7, "item 7 panicked");
                i
            },
            |_| Ok(()),
        );
    }
}
