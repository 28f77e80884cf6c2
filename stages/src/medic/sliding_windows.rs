//! `sliding_windows`: MEDIC's Algorithm 2 without materializing the windows.
//!
//! Events are shuffled with a seed; the shuffled sequence is cut into
//! contiguous train and test blocks *before* windowing (so no event is in
//! both a train and a test window, unlike the paper's random split of
//! overlapping windows); windows are `W` consecutive events, stride 1. The
//! window table stores only the window's block, start position, class
//! fractions and a sampling seed; [`EventStore::assemble`](crate::medic::data::EventStore::assemble) rebuilds its
//! `[W, n_tracks, F_track]`, `[W, n_towers, F_tower]`, `[W, F_met]` tensors
//! deterministically, re-sampling each event's objects afresh per window.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int8Array, Int64Array, RecordBatch,
    StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, SchemaRef};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::medic::data::EventStore;
use crate::medic::tables::{
    Split, WindowSpec, example_events_schema, order_schema, windows_schema,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig, expect_inputs};

/// Salt of the window shuffle of `split: windows`, so it differs from the
/// event shuffle drawn from the same `seed`.
const WINDOW_SPLIT_SALT: u64 = 0x5711_7000;

/// Builds the compact window table (and the shuffled event order) from events.
///
/// The parameters are a [`WindowSpec`], written as they are into the window
/// table's metadata for the model stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SlidingWindows(pub WindowSpec);

impl std::ops::Deref for SlidingWindows {
    type Target = WindowSpec;
    fn deref(&self) -> &WindowSpec {
        &self.0
    }
}

impl StageConfig for SlidingWindows {
    const KIND: &'static str = "sliding_windows";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "MEDIC windows of W shuffled events (stride 1) with class fractions; leak-free train/test blocks; tensors assembled on the fly";
    const INPUTS: (usize, usize) = (1, 1);

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_events_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.window == 0 {
            return bad_param("window", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.train_fraction) {
            return bad_param("train_fraction", "must be in [0, 1]");
        }
        if self.n_classes == 0 || self.n_classes > 127 {
            return bad_param("n_classes", "must be 1 to 127");
        }
        Ok(())
    }
}

impl SlidingWindows {
    /// The shuffled event order and its train/test cut.
    pub fn shuffle(&self, event_ids: &[i64]) -> (Vec<i64>, usize) {
        let mut order = event_ids.to_vec();
        order.sort_unstable();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let n_train = (self.train_fraction * order.len() as f64).round() as usize;
        (order, n_train)
    }

    /// Seed of a window's re-sampling: a SplitMix64 mix of the stage seed and window id.
    pub fn sample_seed(&self, window_id: i64) -> u64 {
        let mut z = self.seed ^ (window_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Stage for SlidingWindows {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        expect_inputs(inputs.len(), 1)?;
        self.check_events_schema(&inputs[0], "input")?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: windows_schema(self),
            },
            OutputSpec {
                name: "order",
                schema: order_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let store = EventStore::load(self, &ctx.inputs[0])?;
        let (order, n_train) = self.shuffle(&store.event_ids);
        if order.len() < self.window {
            return Err(StageError::data(format!(
                "window {} is larger than the {} events",
                self.window,
                order.len()
            )));
        }
        // (start, block) of every window, in window-id order.
        let mut windows: Vec<(usize, &str)> = Vec::new();
        let n_train = match self.split {
            Split::Blocks => {
                for (name, lo, hi) in [("train", 0, n_train), ("test", n_train, order.len())] {
                    if hi - lo < self.window && hi > lo {
                        return Err(StageError::data(format!(
                            "window {} is larger than the {} events of the {name} block",
                            self.window,
                            hi - lo
                        )));
                    }
                    if hi - lo >= self.window {
                        windows.extend((lo..=hi - self.window).map(|s| (s, name)));
                    }
                }
                n_train
            }
            Split::Windows => {
                let n = order.len() - self.window + 1;
                let mut picked: Vec<usize> = (0..n).collect();
                picked.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    self.seed ^ WINDOW_SPLIT_SALT,
                ));
                let n_train_windows = (self.train_fraction * n as f64).round() as usize;
                let mut train = vec![false; n];
                for &w in &picked[..n_train_windows] {
                    train[w] = true;
                }
                windows.extend((0..n).map(|s| (s, if train[s] { "train" } else { "test" })));
                // Every event is in some train window.
                order.len()
            }
        };
        let block_of = |p: usize| if p < n_train { "train" } else { "test" };
        ctx.output.write(
            "order",
            RecordBatch::try_new(
                order_schema(),
                vec![
                    Arc::new(Int64Array::from_iter_values(0..order.len() as i64)),
                    Arc::new(Int64Array::from(order.clone())),
                    Arc::new(StringArray::from_iter_values(
                        (0..order.len()).map(block_of),
                    )),
                ],
            )?,
        )?;
        let class_of: Vec<i8> = order
            .iter()
            .map(|&id| store.class_of(id))
            .collect::<Result<_>>()?;
        let schema = windows_schema(self);
        let mut window_id = 0i64;
        let progress = ctx.reporter.progress(0, "windows");
        // Windows in chunks, so memory stays bounded when materializing.
        for chunk in windows.chunks(4096) {
            {
                let n = chunk.len();
                let ids: Vec<i64> = (window_id..window_id + n as i64).collect();
                let mut p = vec![Vec::with_capacity(n); self.n_classes];
                let mut argmax = Vec::with_capacity(n);
                for &(s, _) in chunk {
                    let mut counts = vec![0usize; self.n_classes];
                    for &c in &class_of[s..s + self.window] {
                        counts[c as usize] += 1;
                    }
                    let best = (0..self.n_classes)
                        .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
                        .unwrap_or(0);
                    argmax.push(best as i8);
                    for (c, col) in p.iter_mut().enumerate() {
                        col.push(counts[c] as f64 / self.window as f64);
                    }
                }
                let seeds: Vec<u64> = ids.iter().map(|&id| self.sample_seed(id)).collect();
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|w| w.1))),
                    Arc::new(Int64Array::from_iter_values(
                        chunk.iter().map(|&(s, _)| s as i64),
                    )),
                ];
                for col in p {
                    columns.push(Arc::new(Float64Array::from(col)));
                }
                columns.push(Arc::new(Int8Array::from(argmax)));
                columns.push(Arc::new(UInt64Array::from(seeds.clone())));
                if self.materialize {
                    let (mut tr, mut tw, mut me) = (Vec::new(), Vec::new(), Vec::new());
                    for (&(s, _), &seed) in chunk.iter().zip(&seeds) {
                        let t = store.assemble(self, &order[s..s + self.window], seed)?;
                        tr.extend(t.tracks);
                        tw.extend(t.towers);
                        me.extend(t.met);
                    }
                    for (values, field) in [(tr, "tracks"), (tw, "towers"), (me, "met")] {
                        let DataType::FixedSizeList(item, size) =
                            schema.field_with_name(field)?.data_type().clone()
                        else {
                            unreachable!("declared above")
                        };
                        columns.push(Arc::new(FixedSizeListArray::try_new(
                            item,
                            size,
                            Arc::new(Float32Array::from(values)),
                            None,
                        )?));
                    }
                }
                ctx.output
                    .write("main", RecordBatch::try_new(schema.clone(), columns)?)?;
                progress.inc(n as u64);
                window_id += n as i64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use crate::input::Input;
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, Int64Type};
    use std::collections::HashSet;

    fn events(dir: &std::path::Path) -> Input {
        crate::medic::test_support::bundled_events(dir, &["normal", "hcal_barrel_off"])
    }

    #[test]
    fn windows_are_labelled_leak_free_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows(WindowSpec {
            window: 10,
            seed: 3,
            materialize: true,
            ..Default::default()
        });
        let out = run_in_memory(&cfg, std::slice::from_ref(&input)).unwrap();
        let windows = out.table("main");
        let order = out.table("order");
        // 1000 events, 800 train / 200 test: 791 + 191 windows.
        assert_eq!(windows.num_rows(), 791 + 191);
        // Probabilities sum to 1.
        let p0 = windows
            .column(3)
            .as_primitive::<arrow::datatypes::Float64Type>();
        let p1 = windows
            .column(4)
            .as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..windows.num_rows() {
            let sum: f64 = (3..7)
                .map(|c| {
                    windows
                        .column(c)
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .value(i)
                })
                .sum();
            assert!((sum - 1.0).abs() < 1e-12);
            assert!(
                p0.value(i) + p1.value(i) > 0.999,
                "only classes 0 and 1 are present"
            );
        }
        // No event is in both a train and a test window.
        let blocks = windows.column(1).as_string::<i32>();
        let starts = windows.column(2).as_primitive::<Int64Type>();
        let ids = order.column(1).as_primitive::<Int64Type>();
        let mut train = HashSet::new();
        let mut test = HashSet::new();
        for i in 0..windows.num_rows() {
            let s = starts.value(i) as usize;
            let set = if blocks.value(i) == "train" {
                &mut train
            } else {
                &mut test
            };
            set.extend((s..s + 10).map(|k| ids.value(k)));
        }
        assert!(train.is_disjoint(&test));
        assert_eq!(train.len() + test.len(), 1000);
        // Same seed, same tensors.
        let again = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        assert_eq!(windows, again);
        // The stored tensors equal the on-the-fly assembly.
        let store = EventStore::load(&cfg, &input).unwrap();
        let order_ids: Vec<i64> = ids.values().to_vec();
        let seed = windows
            .column(8)
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .value(5);
        let s = starts.value(5) as usize;
        let t = store.assemble(&cfg, &order_ids[s..s + 10], seed).unwrap();
        let tracks = windows.column(9).as_fixed_size_list().value(5);
        assert_eq!(
            tracks.as_primitive::<Float32Type>().values().to_vec(),
            t.tracks
        );
        assert_eq!(t.tracks.len(), 10 * 30 * 7);
        assert_eq!(t.met.len(), 10 * 3);
        // An event shared by two windows is re-sampled differently in each.
        let (a, b) = (starts.value(0) as usize, starts.value(1) as usize);
        assert_eq!(b, a + 1);
        let wa = store
            .assemble(&cfg, &order_ids[a..a + 10], cfg.sample_seed(0))
            .unwrap();
        let wb = store
            .assemble(&cfg, &order_ids[b..b + 10], cfg.sample_seed(1))
            .unwrap();
        let per_event = 30 * 8;
        let shared_in_a = &wa.towers[per_event..2 * per_event]; // event at a+1
        let shared_in_b = &wb.towers[..per_event];
        assert_ne!(shared_in_a, shared_in_b, "fresh re-sampling per window");
        let dense = |v: &[f32]| v.iter().filter(|x| **x != 0.0).count();
        assert!(dense(shared_in_a) > 0 && dense(shared_in_b) > 0);
    }

    #[test]
    fn the_papers_window_split_mixes_train_and_test_events() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows(WindowSpec {
            window: 10,
            seed: 3,
            split: Split::Windows,
            ..Default::default()
        });
        let out = run_in_memory(&cfg, std::slice::from_ref(&input)).unwrap();
        let windows = out.table("main");
        // 1000 events: 991 windows over the whole sequence, 20% of them test.
        assert_eq!(windows.num_rows(), 991);
        let blocks = windows.column(1).as_string::<i32>();
        let starts = windows.column(2).as_primitive::<Int64Type>();
        let test: Vec<usize> = (0..991).filter(|&i| blocks.value(i) == "test").collect();
        assert_eq!(test.len(), 991 - 793);
        // Windows are in time order and a test window overlaps train windows.
        assert!((1..991).all(|i| starts.value(i) == starts.value(i - 1) + 1));
        let leaky = test
            .iter()
            .filter(|&&i| {
                (i.saturating_sub(9)..(i + 10).min(991)).any(|j| blocks.value(j) == "train")
            })
            .count();
        assert!(leaky > test.len() / 2, "{leaky} of {}", test.len());
        assert_eq!(
            run_in_memory(&cfg, &[input]).unwrap().table("main"),
            windows
        );
    }

    #[test]
    fn a_window_larger_than_a_block_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows(WindowSpec {
            window: 300,
            ..Default::default()
        });
        let err = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("larger than the 200 events of the test block"),
            "{err}"
        );
        let cfg = SlidingWindows(WindowSpec {
            window: 5000,
            ..Default::default()
        });
        let err = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
