//! `sliding_windows`: MEDIC's Algorithm 2 without materializing the windows.
//!
//! Physics events (the detector copies of one generated event, which share
//! their tracks, form one group) are shuffled with a seed and dealt into a
//! test block and `folds` contiguous train sub-blocks *before* windowing;
//! the events inside each are shuffled and windows, `W` consecutive events
//! with stride 1, never cross a block. So no event, nor a copy of one, is in
//! both a test and a train window, nor in both a fold's validation and
//! training windows — unlike the paper's random split of overlapping
//! windows (`split: windows`, kept for comparison). The
//! window table stores only the window's block, start position, class
//! fractions and a sampling seed; [`EventStore::assemble`](crate::medic::data::EventStore::assemble) rebuilds its
//! `[W, n_tracks, F_track]`, `[W, n_towers, F_tower]`, `[W, F_met]` tensors
//! deterministically, re-sampling each event's objects afresh per window.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int8Array, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt64Array,
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
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

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
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "MEDIC windows of W shuffled events (stride 1) with class fractions; physics events split into leak-free test and validation blocks; tensors assembled on the fly";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "events";

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
        if self.folds < 2 {
            return bad_param(
                "folds",
                "needs at least 2 folds (one validates, the others train)",
            );
        }
        Ok(())
    }
}

/// The shuffled event sequence cut into contiguous segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Event ids in sequence order.
    pub order: Vec<i64>,
    /// How many leading positions are the train block.
    pub n_train: usize,
    /// `split: blocks`: `(first, end, fold)` of each segment, in sequence
    /// order: the train folds (1-based) then the test block (`None`).
    /// Empty for `split: windows`, whose windows cross any cut.
    pub segments: Vec<(usize, usize, Option<i32>)>,
}

impl Layout {
    /// The fold of each position (`None` in the test block).
    pub fn fold_of_positions(&self) -> Vec<Option<i32>> {
        let mut out = vec![None; self.order.len()];
        for &(lo, hi, fold) in &self.segments {
            out[lo..hi].fill(fold);
        }
        out
    }
}

impl SlidingWindows {
    /// The shuffled event order and its train/test cut, events shuffled one
    /// by one (`split: windows`, whose windows then cross any cut).
    pub fn shuffle(&self, event_ids: &[i64]) -> (Vec<i64>, usize) {
        let mut order = event_ids.to_vec();
        order.sort_unstable();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let n_train = (self.train_fraction * order.len() as f64).round() as usize;
        (order, n_train)
    }

    /// `split: blocks`: physics-event groups shuffled and dealt into `folds`
    /// train sub-blocks and the test block (a fraction `train_fraction` of
    /// the groups trains); the events of each segment, shuffled, are laid
    /// out one segment after the other.
    pub fn blocks(&self, event_ids: &[i64], groups: &[i64]) -> Layout {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut keys: Vec<i64> = groups.to_vec();
        keys.sort_unstable();
        keys.dedup();
        keys.shuffle(&mut rng);
        let n_train = (self.train_fraction * keys.len() as f64).round() as usize;
        let k = self.folds;
        // Segment of each group: fold j of the train groups, or k for test.
        let segment_of: std::collections::HashMap<i64, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, &g)| (g, if i < n_train { i * k / n_train } else { k }))
            .collect();
        let mut events: Vec<(i64, i64)> = event_ids
            .iter()
            .copied()
            .zip(groups.iter().copied())
            .collect();
        events.sort_unstable();
        events.shuffle(&mut rng);
        let mut by_segment: Vec<Vec<i64>> = vec![Vec::new(); k + 1];
        for (id, g) in events {
            by_segment[segment_of[&g]].push(id);
        }
        let mut order = Vec::with_capacity(event_ids.len());
        let mut segments = Vec::with_capacity(k + 1);
        for (j, ids) in by_segment.into_iter().enumerate() {
            if j < k && n_train == 0 {
                continue; // `train_fraction: 0`: every window is scored, none trains.
            }
            let lo = order.len();
            order.extend(ids);
            segments.push((lo, order.len(), (j < k).then_some(j as i32 + 1)));
        }
        let n_train = segments
            .iter()
            .filter(|s| s.2.is_some())
            .map(|s| s.1)
            .max()
            .unwrap_or(0);
        Layout {
            order,
            n_train,
            segments,
        }
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
        if store.event_ids.len() < self.window {
            return Err(StageError::data(format!(
                "window {} is larger than the {} events",
                self.window,
                store.event_ids.len()
            )));
        }
        let (layout, windows) = self.layout(&store)?;
        ctx.output.write("order", order_batch(&layout)?)?;
        let order = &layout.order;
        let class_of: Vec<i8> = order
            .iter()
            .map(|&id| store.class_of(id))
            .collect::<Result<_>>()?;
        let schema = windows_schema(self);
        let mut window_id = 0i64;
        let progress = ctx.reporter.progress(0, "windows");
        // Windows in chunks, so memory stays bounded when materializing.
        for chunk in windows.chunks(4096) {
            let batch = self.window_batch(&store, order, &class_of, chunk, window_id, &schema)?;
            ctx.output.write("main", batch)?;
            progress.inc(chunk.len() as u64);
            window_id += chunk.len() as i64;
        }
        Ok(())
    }
}

/// A window: (position of its first event, block, fold).
type Span = (usize, &'static str, Option<i32>);

/// The `order` table: every event's position, block and fold.
fn order_batch(layout: &Layout) -> Result<RecordBatch> {
    let order = &layout.order;
    let block_of = |p: usize| if p < layout.n_train { "train" } else { "test" };
    Ok(RecordBatch::try_new(
        order_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..order.len() as i64)),
            Arc::new(Int64Array::from(order.clone())),
            Arc::new(StringArray::from_iter_values(
                (0..order.len()).map(block_of),
            )),
            Arc::new(Int32Array::from(layout.fold_of_positions())),
        ],
    )?)
}

impl SlidingWindows {
    /// The event order with its blocks, and every window in window-id order.
    fn layout(&self, store: &EventStore) -> Result<(Layout, Vec<Span>)> {
        let mut windows: Vec<Span> = Vec::new();
        let layout = match self.split {
            Split::Blocks => {
                let layout = self.blocks(&store.event_ids, &store.groups);
                for &(lo, hi, fold) in &layout.segments {
                    let name = match fold {
                        Some(j) => format!("train fold {j}"),
                        None => "test block".into(),
                    };
                    if hi - lo < self.window && (hi > lo || fold.is_some()) {
                        return Err(StageError::data(format!(
                            "window {} is larger than the {} events of the {name} (lower `window` or `folds`, or give more events)",
                            self.window,
                            hi - lo
                        )));
                    }
                    if hi - lo >= self.window {
                        let block = if fold.is_some() { "train" } else { "test" };
                        windows.extend((lo..=hi - self.window).map(|s| (s, block, fold)));
                    }
                }
                layout
            }
            Split::Windows => {
                let (order, _) = self.shuffle(&store.event_ids);
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
                windows.extend((0..n).map(|s| (s, if train[s] { "train" } else { "test" }, None)));
                Layout {
                    // Every event is in some train window.
                    n_train: order.len(),
                    order,
                    segments: Vec::new(),
                }
            }
        };
        Ok((layout, windows))
    }

    /// The rows of the windows `chunk`, ids from `first_id`: soft labels,
    /// argmax class, seeds and (materialized) tensors.
    fn window_batch(
        &self,
        store: &EventStore,
        order: &[i64],
        class_of: &[i8],
        chunk: &[Span],
        first_id: i64,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let n = chunk.len();
        let ids: Vec<i64> = (first_id..first_id + n as i64).collect();
        let mut p = vec![Vec::with_capacity(n); self.n_classes];
        let mut argmax = Vec::with_capacity(n);
        for &(s, _, _) in chunk {
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
                chunk.iter().map(|&(s, _, _)| s as i64),
            )),
            Arc::new(Int32Array::from_iter(chunk.iter().map(|w| w.2))),
        ];
        for col in p {
            columns.push(Arc::new(Float64Array::from(col)));
        }
        columns.push(Arc::new(Int8Array::from(argmax)));
        columns.push(Arc::new(UInt64Array::from(seeds.clone())));
        if self.materialize {
            let (mut tr, mut tw, mut me) = (Vec::new(), Vec::new(), Vec::new());
            for (&(s, _, _), &seed) in chunk.iter().zip(&seeds) {
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
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use crate::input::Input;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type, UInt64Type};
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
        let col = |name: &str| windows.column_by_name(name).unwrap().clone();
        // 500 physics events x 2 copies: 400 train groups in 5 folds of 160
        // events (151 windows each), 200 test events (191 windows).
        assert_eq!(windows.num_rows(), 5 * 151 + 191);
        // Probabilities sum to 1.
        let p: Vec<_> = (0..4)
            .map(|c| col(&format!("p_{c}")).as_primitive::<Float64Type>().clone())
            .collect();
        for i in 0..windows.num_rows() {
            let sum: f64 = p.iter().map(|c| c.value(i)).sum();
            assert!((sum - 1.0).abs() < 1e-12);
            assert!(
                p[0].value(i) + p[1].value(i) > 0.999,
                "only classes 0 and 1 are present"
            );
        }
        // Every window lies inside one segment: a train fold or the test block.
        let blocks = col("block");
        let blocks = blocks.as_string::<i32>();
        let starts = col("start");
        let starts = starts.as_primitive::<Int64Type>();
        let folds = col("fold");
        let folds = folds.as_primitive::<Int32Type>();
        let ids = order.column(1).as_primitive::<Int64Type>();
        let order_folds = order.column(3).as_primitive::<Int32Type>();
        let entry_of: std::collections::HashMap<i64, i64> = {
            let b = &input.read_all().unwrap()[0];
            let id = b
                .column_by_name("event_id")
                .unwrap()
                .as_primitive::<Int64Type>();
            let entry = b
                .column_by_name("entry")
                .unwrap()
                .as_primitive::<Int64Type>();
            (0..b.num_rows())
                .map(|i| (id.value(i), entry.value(i)))
                .collect()
        };
        // Physics events (entries) of each segment: 0 = test, 1..5 = folds.
        let mut entries = vec![HashSet::new(); 6];
        let mut events_seen = HashSet::new();
        for i in 0..windows.num_rows() {
            let s = starts.value(i) as usize;
            let fold = folds.is_valid(i).then(|| folds.value(i));
            assert_eq!(fold.is_none(), blocks.value(i) == "test");
            for k in s..s + 10 {
                let ok = order_folds.is_valid(k).then(|| order_folds.value(k));
                assert_eq!(ok, fold, "window {i} crosses a segment boundary");
                entries[fold.unwrap_or(0) as usize].insert(entry_of[&ids.value(k)]);
                events_seen.insert(ids.value(k));
            }
        }
        assert_eq!(events_seen.len(), 1000);
        // Both detector copies of a physics event are in the same segment.
        for a in 0..6 {
            for b in a + 1..6 {
                assert!(entries[a].is_disjoint(&entries[b]), "segments {a} and {b}");
            }
        }
        assert_eq!(entries[0].len(), 100);
        assert!(entries[1..].iter().all(|e| e.len() == 80));
        // Same seed, same tensors.
        let again = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        assert_eq!(windows, again);
        // The stored tensors equal the on-the-fly assembly.
        let store = EventStore::load(&cfg, &input).unwrap();
        let order_ids: Vec<i64> = ids.values().to_vec();
        let seed = col("sample_seed").as_primitive::<UInt64Type>().value(5);
        let s = starts.value(5) as usize;
        let t = store.assemble(&cfg, &order_ids[s..s + 10], seed).unwrap();
        let tracks = col("tracks").as_fixed_size_list().value(5);
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
        // Without grouping, copies of one physics event are split apart.
        let ungrouped = SlidingWindows(WindowSpec {
            group_by: None,
            ..cfg.0.clone()
        });
        let store = EventStore::load(&ungrouped, &input).unwrap();
        let layout = ungrouped.blocks(&store.event_ids, &store.groups);
        let test_entries: HashSet<i64> = layout.order[layout.n_train..]
            .iter()
            .map(|id| entry_of[id])
            .collect();
        assert!(test_entries.len() > 150, "{}", test_entries.len());
    }

    #[test]
    fn train_fraction_zero_makes_every_window_a_test_window() {
        // How new files are scored by a model trained elsewhere.
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows(WindowSpec {
            window: 10,
            train_fraction: 0.0,
            ..Default::default()
        });
        let windows = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        assert_eq!(windows.num_rows(), 1000 - 9);
        let blocks = windows.column_by_name("block").unwrap().as_string::<i32>();
        let folds = windows.column_by_name("fold").unwrap();
        assert!((0..windows.num_rows()).all(|i| blocks.value(i) == "test" && folds.is_null(i)));
    }

    #[test]
    fn a_missing_group_column_is_refused_at_plan_time() {
        let cfg = SlidingWindows(WindowSpec {
            group_by: Some("event_number".into()),
            ..Default::default()
        });
        let err = cfg
            .outputs(&[example_events_schema()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("event_number") && err.contains("group_by"),
            "{err}"
        );
        let too_few = SlidingWindows(WindowSpec {
            folds: 1,
            ..Default::default()
        });
        assert!(
            too_few
                .validate()
                .unwrap_err()
                .to_string()
                .contains("folds")
        );
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
            err.contains("larger than the 160 events of the train fold 1"),
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
