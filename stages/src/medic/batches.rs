//! Windows as model input: the three tables `sliding_windows` and the event
//! filter leave behind (windows, their shuffled event order, the events)
//! turned into batches of tensors, assembled on a worker thread ahead of the
//! model so training and inference never wait for data.

use std::sync::mpsc::sync_channel;

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::{
    Array, ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, SchemaRef, UInt64Type};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::medic::data::{EventStore, WindowTensors};
use crate::medic::model::{Medic, consecutive_slots};
use crate::medic::tables::{Blocks, FeatureStats, WindowSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The inputs a MEDIC model stage takes, in this order.
pub const INPUT_NAMES: [&str; 3] = ["windows", "order", "events"];

/// One window of the window table.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub window_id: i64,
    pub test: bool,
    /// The train sub-block (1-based) the window lies in (`split: blocks`).
    pub fold: Option<usize>,
    pub start: usize,
    pub sample_seed: u64,
    /// Class fractions (the soft label).
    pub target: Vec<f32>,
    /// The class with the largest fraction.
    pub class: i64,
}

/// Checks at plan time that `schemas` are a window table, its order table and
/// an events table, and returns the window parameters.
pub fn check_inputs(schemas: &[SchemaRef]) -> Result<WindowSpec> {
    let cfg = WindowSpec::from_schema(&schemas[0], "windows")?;
    let why = "a MEDIC model reads the window table";
    let int64 = |t: &DataType| t == &DataType::Int64;
    for c in ["window_id", "start"] {
        require_column(&schemas[0], "windows", c, why, "Int64", int64)?;
    }
    require_column(&schemas[0], "windows", "block", why, "Utf8", |t| {
        t == &DataType::Utf8
    })?;
    require_column(&schemas[0], "windows", "sample_seed", why, "UInt64", |t| {
        t == &DataType::UInt64
    })?;
    require_column(&schemas[0], "windows", "fold", why, "Int32", |t| {
        t == &DataType::Int32
    })?;
    for c in 0..cfg.n_classes {
        require_column(
            &schemas[0],
            "windows",
            &format!("p_{c}"),
            why,
            "Float64",
            |t| t == &DataType::Float64,
        )?;
    }
    let why = "the shuffled event order of the windows (`<windows stage>.order`)";
    for c in ["position", "event_id"] {
        require_column(&schemas[1], "order", c, why, "Int64", int64)?;
    }
    require_column(&schemas[1], "order", "block", why, "Utf8", |t| {
        t == &DataType::Utf8
    })?;
    cfg.check_events_schema(&schemas[2], "events")?;
    Ok(cfg)
}

/// Everything needed to assemble any window's tensors.
pub struct WindowData {
    pub cfg: WindowSpec,
    pub store: EventStore,
    /// Event ids by position in the shuffled sequence.
    pub order: Vec<i64>,
    /// How many leading positions are the train block.
    pub n_train_events: usize,
    pub rows: Vec<WindowRow>,
    /// The own class of the event at each position (looked up once, for
    /// the per-event labels of every batch).
    position_class: Vec<i64>,
}

/// A batch of windows as tensors on the model's device.
pub struct Batch {
    /// `[B, W, n_tracks, F_track]`
    pub tracks: Tensor,
    /// `[B, W, n_towers, F_tower]`
    pub towers: Tensor,
    /// `[B, W, F_met]`
    pub met: Tensor,
    /// `[B, classes]` soft labels.
    pub target: Tensor,
    /// `[B]` argmax classes.
    pub class: Tensor,
    /// `[B, W]` each event's own class (for the per-event loss).
    pub event_class: Tensor,
    /// Indices into [`WindowData::rows`].
    pub rows: Vec<usize>,
}

/// A batch of windows in the encode-once mode: the distinct events of the
/// windows as single-event tensors (each drawn once, from its own stream),
/// and which of them fills each window slot.
pub struct EventBatch {
    /// `[M, n_tracks, F_track]`
    pub tracks: Tensor,
    /// `[M, n_towers, F_tower]`
    pub towers: Tensor,
    /// `[M, F_met]`
    pub met: Tensor,
    /// `[M]` each event's own class.
    pub event_class: Tensor,
    /// Positions (in the shuffled order) of the M events, ascending.
    pub positions: Vec<usize>,
    /// `[B, W]` index into the M events of each window slot.
    pub slots: Tensor,
    /// `[B, classes]` soft labels.
    pub target: Tensor,
    /// `[B]` argmax classes.
    pub class: Tensor,
    /// Indices into [`WindowData::rows`].
    pub rows: Vec<usize>,
}

/// How a model sees its windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encode {
    /// Each event is drawn and encoded once (per epoch in training); windows
    /// slide over the events' embeddings. Our mode: ~W times fewer encoder
    /// passes per window.
    #[default]
    Event,
    /// Every window re-draws and re-encodes all of its events (the paper's
    /// and its reference code's way).
    Window,
}

/// Salt of the object draws of inference in the encode-once mode.
const INFERENCE_DRAW_SALT: u64 = 0x1AFE_2E4C_E000_0000;

/// The seed of inference's per-event object draws for windows made with
/// `cfg`: fixed by the window table, like the per-window mode's draws.
pub fn inference_draws(cfg: &WindowSpec) -> u64 {
    cfg.seed ^ INFERENCE_DRAW_SALT
}

/// Either kind of batch, as the model consumes it.
pub enum ModelBatch {
    Windows(Batch),
    Events(EventBatch),
}

/// What one forward pass over a batch gives.
pub struct Forward {
    /// `[B, classes]` window log-probabilities.
    pub log_probs: Tensor,
    /// `[N, classes]` log-probabilities of the own class of each event the
    /// pass encoded, with an event head.
    pub per_event: Option<Tensor>,
    /// `[N]` those events' own classes.
    pub event_class: Tensor,
}

impl ModelBatch {
    /// Runs `model` over the batch: encodes its events and scores its
    /// windows from their slots.
    pub fn forward(&self, model: &Medic, train: bool) -> Forward {
        let (events, slots, event_class) = match self {
            ModelBatch::Windows(b) => {
                let events = model.encode_windows(&b.tracks, &b.towers, &b.met, train);
                let (n, w) = b.event_class.size2().expect("[B, W]");
                let slots = consecutive_slots(n, w, events.device());
                (events, slots, b.event_class.view([-1]))
            }
            ModelBatch::Events(b) => (
                model.encode(&b.tracks, &b.towers, &b.met, train),
                b.slots.shallow_clone(),
                b.event_class.shallow_clone(),
            ),
        };
        let scores = model.score_windows(&events, &slots, train);
        Forward {
            log_probs: scores.windows,
            per_event: scores.per_event,
            event_class,
        }
    }

    pub fn target(&self) -> &Tensor {
        match self {
            ModelBatch::Windows(b) => &b.target,
            ModelBatch::Events(b) => &b.target,
        }
    }

    pub fn class(&self) -> &Tensor {
        match self {
            ModelBatch::Windows(b) => &b.class,
            ModelBatch::Events(b) => &b.class,
        }
    }

    pub fn rows(&self) -> &[usize] {
        match self {
            ModelBatch::Windows(b) => &b.rows,
            ModelBatch::Events(b) => &b.rows,
        }
    }
}

impl WindowData {
    /// Reads the three input tables (windows, order, events).
    pub fn load(inputs: &[Input]) -> Result<Self> {
        let schemas: Vec<SchemaRef> = inputs.iter().map(|i| i.schema.clone()).collect();
        let cfg = check_inputs(&schemas)?;
        let (windows, order_input, events) = (&inputs[0], &inputs[1], &inputs[2]);

        let mut order = Vec::new();
        let mut n_train_events = 0;
        for batch in order_input.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("checked");
            let pos = col("position").as_primitive::<Int64Type>().clone();
            let ids = col("event_id").as_primitive::<Int64Type>().clone();
            let block = col("block").as_string::<i32>().clone();
            for i in 0..batch.num_rows() {
                if pos.value(i) != order.len() as i64 {
                    return Err(StageError::data(format!(
                        "input `{}`: position {} where {} was expected (not an order table of `sliding_windows`?)",
                        order_input.name,
                        pos.value(i),
                        order.len()
                    )));
                }
                order.push(ids.value(i));
                n_train_events += usize::from(block.value(i) == "train");
            }
        }

        let mut rows = Vec::new();
        for batch in windows.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("checked");
            let ids = col("window_id").as_primitive::<Int64Type>().clone();
            let starts = col("start").as_primitive::<Int64Type>().clone();
            let seeds = col("sample_seed").as_primitive::<UInt64Type>().clone();
            let block = col("block").as_string::<i32>().clone();
            let folds = col("fold").as_primitive::<Int32Type>().clone();
            let p: Vec<_> = (0..cfg.n_classes)
                .map(|c| col(&format!("p_{c}")).as_primitive::<Float64Type>().clone())
                .collect();
            for i in 0..batch.num_rows() {
                let start = starts.value(i);
                if start < 0 || start as usize + cfg.window > order.len() {
                    return Err(StageError::data(format!(
                        "input `{}`: window {} starts at {start}, outside the {} ordered events",
                        windows.name,
                        ids.value(i),
                        order.len()
                    )));
                }
                let target: Vec<f32> = p.iter().map(|c| c.value(i) as f32).collect();
                if target.iter().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err(StageError::data(format!(
                        "input `{}`: window {} has a class fraction that is negative or not finite",
                        windows.name,
                        ids.value(i)
                    )));
                }
                let class = argmax(&target) as i64;
                rows.push(WindowRow {
                    window_id: ids.value(i),
                    test: match block.value(i) {
                        "train" => false,
                        "test" => true,
                        other => {
                            return Err(StageError::data(format!(
                                "input `{}`: window {} has block `{other}` (train or test expected)",
                                windows.name,
                                ids.value(i)
                            )));
                        }
                    },
                    fold: folds
                        .is_valid(i)
                        .then(|| folds.value(i).max(0) as usize),
                    start: start as usize,
                    sample_seed: seeds.value(i),
                    target,
                    class,
                });
            }
        }
        if rows.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no windows",
                windows.name
            )));
        }
        let store = EventStore::load(&cfg, events)?;
        let position_class = order
            .iter()
            .map(|&id| store.class_of(id).map(i64::from))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            store,
            order,
            n_train_events,
            rows,
            position_class,
        })
    }

    /// Feature statistics of the train block's events.
    pub fn train_stats(&self) -> Result<FeatureStats> {
        self.store.feature_stats(&self.order[..self.n_train_events])
    }

    /// Indices of the rows of one block.
    pub fn block(&self, test: bool) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].test == test)
            .collect()
    }

    /// The rows of the windows a scoring stage scores; none is an error.
    pub fn scored_rows(&self, blocks: Blocks, input: &str) -> Result<Vec<usize>> {
        let rows: Vec<usize> = match blocks {
            Blocks::Test => self.block(true),
            Blocks::Train => self.block(false),
            Blocks::All => (0..self.rows.len()).collect(),
        };
        if rows.is_empty() {
            return Err(StageError::data(format!(
                "input `{input}` has no {blocks:?} windows to score"
            )));
        }
        Ok(rows)
    }

    /// The predictions table of the windows `rows`: their truth next to the
    /// predicted class probabilities `prob` (`rows.len()` × classes,
    /// row-major), votes and vote shares.
    pub fn predictions(
        &self,
        schema: SchemaRef,
        rows: &[usize],
        prob: &[f64],
        (vote, share): (Vec<i8>, Vec<f64>),
        normal_class: usize,
    ) -> Result<RecordBatch> {
        let nc = self.cfg.n_classes;
        let n = rows.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|&r| self.rows[r].window_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|&r| if self.rows[r].test { "test" } else { "train" }),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|&r| self.rows[r].start as i64),
            )),
        ];
        for c in 0..nc {
            columns.push(Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|&r| self.rows[r].target[c] as f64),
            )));
        }
        columns.push(Arc::new(Int8Array::from_iter_values(
            rows.iter().map(|&r| self.rows[r].class as i8),
        )));
        for c in 0..nc {
            columns.push(Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| prob[i * nc + c]),
            )));
        }
        columns.push(Arc::new(Int8Array::from(vote)));
        columns.push(Arc::new(Float64Array::from(share)));
        columns.push(Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| 1.0 - prob[i * nc + normal_class]),
        )));
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Assembles the windows `rows` (indices into [`Self::rows`]) on the
    /// rayon pool.
    pub fn batch(&self, rows: &[usize], device: Device) -> Result<Batch> {
        let cfg = &self.cfg;
        let parts = rows
            .par_iter()
            .map(|&r| {
                let row = &self.rows[r];
                self.store.assemble(
                    cfg,
                    &self.order[row.start..row.start + cfg.window],
                    row.sample_seed,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let (b, w) = (rows.len() as i64, cfg.window as i64);
        let [tracks, towers, met] = self.object_tensors(&parts, &[b, w], device);
        let event_class: Vec<i64> = rows
            .iter()
            .flat_map(|&r| self.window_positions(r))
            .map(|p| self.position_class[p])
            .collect();
        let (target, class) = self.labels(rows, device);
        Ok(Batch {
            tracks,
            towers,
            met,
            target,
            class,
            event_class: Tensor::from_slice(&event_class)
                .view([b, w])
                .to_device(device),
            rows: rows.to_vec(),
        })
    }

    /// Assembles the windows `rows` for the encode-once mode: each distinct
    /// event once, drawn from `event_draw_seed(seed, id)`.
    pub fn event_batch(&self, rows: &[usize], seed: u64, device: Device) -> Result<EventBatch> {
        let mut positions: Vec<usize> = rows
            .iter()
            .flat_map(|&r| self.window_positions(r))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        let ids: Vec<i64> = positions.iter().map(|&p| self.order[p]).collect();
        let parts = ids
            .par_chunks(16)
            .map(|chunk| self.store.assemble_events(&self.cfg, chunk, seed))
            .collect::<Result<Vec<_>>>()?;
        let [tracks, towers, met] = self.object_tensors(&parts, &[ids.len() as i64], device);
        let slot_of = |p: usize| positions.binary_search(&p).expect("collected above") as i64;
        let slots: Vec<i64> = rows
            .iter()
            .flat_map(|&r| self.window_positions(r).map(slot_of))
            .collect();
        let event_class: Vec<i64> = positions.iter().map(|&p| self.position_class[p]).collect();
        let (target, class) = self.labels(rows, device);
        Ok(EventBatch {
            tracks,
            towers,
            met,
            event_class: Tensor::from_slice(&event_class).to_device(device),
            slots: Tensor::from_slice(&slots)
                .view([rows.len() as i64, self.cfg.window as i64])
                .to_device(device),
            positions,
            target,
            class,
            rows: rows.to_vec(),
        })
    }

    /// Positions (in the shuffled order) of the events of window row `r`.
    fn window_positions(&self, r: usize) -> std::ops::Range<usize> {
        let start = self.rows[r].start;
        start..start + self.cfg.window
    }

    /// The assembled `parts` concatenated into tracks `[lead.., n_tracks,
    /// F_track]`, towers `[lead.., n_towers, F_tower]` and met `[lead..,
    /// F_met]` on `device`.
    fn object_tensors(&self, parts: &[WindowTensors], lead: &[i64], device: Device) -> [Tensor; 3] {
        let cfg = &self.cfg;
        let tensor = |f: fn(&WindowTensors) -> &Vec<f32>, tail: &[i64]| {
            let mut v = Vec::with_capacity(parts.iter().map(|p| f(p).len()).sum());
            for p in parts {
                v.extend_from_slice(f(p));
            }
            let shape: Vec<i64> = lead.iter().chain(tail).copied().collect();
            Tensor::from_slice(&v)
                .view(shape.as_slice())
                .to_device(device)
        };
        [
            tensor(
                |p| &p.tracks,
                &[cfg.n_tracks as i64, cfg.track_features.len() as i64],
            ),
            tensor(
                |p| &p.towers,
                &[cfg.n_towers as i64, cfg.tower_features.len() as i64],
            ),
            tensor(|p| &p.met, &[cfg.met_features.len() as i64]),
        ]
    }

    /// Soft labels `[B, classes]` and argmax classes `[B]` of the windows `rows`.
    fn labels(&self, rows: &[usize], device: Device) -> (Tensor, Tensor) {
        let target: Vec<f32> = rows
            .iter()
            .flat_map(|&r| self.rows[r].target.iter().copied())
            .collect();
        let class: Vec<i64> = rows.iter().map(|&r| self.rows[r].class).collect();
        (
            Tensor::from_slice(&target)
                .view([rows.len() as i64, self.cfg.n_classes as i64])
                .to_device(device),
            Tensor::from_slice(&class).to_device(device),
        )
    }

    /// The batch of `rows` in mode `encode` (`seed`: the event draws of the
    /// encode-once mode; the per-window mode uses each window's own seed).
    pub fn model_batch(
        &self,
        rows: &[usize],
        encode: Encode,
        seed: u64,
        device: Device,
    ) -> Result<ModelBatch> {
        Ok(match encode {
            Encode::Window => ModelBatch::Windows(self.batch(rows, device)?),
            Encode::Event => ModelBatch::Events(self.event_batch(rows, seed, device)?),
        })
    }

    /// Assembles `batches` on a worker thread, at most `depth` ahead, and
    /// hands them to `consume` in order. An error on either side stops both.
    pub fn for_each_batch(
        &self,
        batches: &[Vec<usize>],
        device: Device,
        depth: usize,
        consume: impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        prefetched(batches, depth, |rows| self.batch(rows, device), consume)
    }
}

/// Makes `make(job)` for every job on a worker thread, at most `depth`
/// ahead, and hands the results to `consume` in order. An error on either
/// side stops both.
pub fn prefetched<J: Sync, T: Send>(
    jobs: &[J],
    depth: usize,
    make: impl Fn(&J) -> Result<T> + Sync,
    mut consume: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<T>>(depth.max(1));
        let make = &make;
        let producer = scope.spawn(move || {
            for job in jobs {
                let made = make(job);
                let failed = made.is_err();
                // The consumer hung up (it failed): stop assembling.
                if tx.send(made).is_err() || failed {
                    return;
                }
            }
        });
        let mut result = Ok(());
        for made in rx.iter() {
            result = made.and_then(&mut consume);
            if result.is_err() {
                break;
            }
        }
        drop(rx);
        producer
            .join()
            .map_err(|p| StageError::from_panic(p.as_ref()))?;
        result
    })
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Converts a float tensor to a flat `Vec<f32>` on the CPU.
pub fn to_vec_f32(t: &Tensor) -> Vec<f32> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut out = vec![0f32; n];
    t.view([-1]).copy_data(&mut out, n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medic::model::MedicArch;
    use crate::medic::test_support::model_inputs;
    use tch::nn;

    /// The encode-once path (each distinct event encoded once, windows
    /// gathered from the embeddings) gives the per-window path's
    /// probabilities when every window is assembled from the same draws.
    #[test]
    fn encode_once_equals_per_window_assembly_of_the_same_draws() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let data = WindowData::load(&model_inputs(dir.path(), 6, 0.5, 2)).unwrap();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Medic::new(&vs.root(), MedicArch::default());
        // Overlapping windows of the train block and a few far apart.
        let train = data.block(false);
        let rows: Vec<usize> = train[..8].iter().chain(&train[40..43]).copied().collect();
        let seed = 99;
        let batch = data.event_batch(&rows, seed, Device::Cpu).unwrap();
        // 8 consecutive stride-1 windows of 6 share events: 13 + 3·6 or fewer.
        assert!(
            batch.positions.len() <= 13 + 18,
            "{}",
            batch.positions.len()
        );
        assert!(batch.positions.windows(2).all(|p| p[0] < p[1]));
        let once = ModelBatch::Events(batch).forward(&model, false);

        let w = data.cfg.window;
        let mut tr = Vec::new();
        let mut tw = Vec::new();
        let mut me = Vec::new();
        for &r in &rows {
            let start = data.rows[r].start;
            let t = data
                .store
                .assemble_events(&data.cfg, &data.order[start..start + w], seed)
                .unwrap();
            tr.extend(t.tracks);
            tw.extend(t.towers);
            me.extend(t.met);
        }
        let b = rows.len() as i64;
        let per_window = model.forward(
            &Tensor::from_slice(&tr).view([b, w as i64, 30, 7]),
            &Tensor::from_slice(&tw).view([b, w as i64, 30, 8]),
            &Tensor::from_slice(&me).view([b, w as i64, 3]),
            false,
        );
        assert_eq!(once.log_probs.size(), [b, 4]);
        assert!(
            once.log_probs.allclose(&per_window, 1e-5, 1e-5, false),
            "{once:?} vs {per_window:?}",
            once = once.log_probs
        );
        // Another seed draws other objects: other probabilities.
        let other = ModelBatch::Events(data.event_batch(&rows, seed + 1, Device::Cpu).unwrap())
            .forward(&model, false);
        assert!(!other.log_probs.allclose(&per_window, 1e-5, 1e-5, false));
    }

    #[test]
    fn an_event_is_drawn_alike_in_any_batch_and_unlike_other_events() {
        let dir = tempfile::tempdir().unwrap();
        let data = WindowData::load(&model_inputs(dir.path(), 4, 0.5, 2)).unwrap();
        let ids = &data.order[..6];
        let all = data.store.assemble_events(&data.cfg, ids, 5).unwrap();
        let one = data
            .store
            .assemble_events(&data.cfg, &ids[3..4], 5)
            .unwrap();
        let per = 30 * 7;
        assert_eq!(all.tracks[3 * per..4 * per], one.tracks[..]);
        let again = data
            .store
            .assemble_events(&data.cfg, &ids[3..4], 6)
            .unwrap();
        assert_ne!(one.tracks, again.tracks, "a new seed draws other tracks");
    }
}
