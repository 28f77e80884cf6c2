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
use crate::medic::tables::{Blocks, FeatureStats, WindowSpec};

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
    if schemas.len() != 3 {
        return Err(StageError::InputCount {
            expected: "3 (windows, windows.order, events)".into(),
            found: schemas.len(),
        });
    }
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
    /// Indices into [`WindowData::rows`].
    pub rows: Vec<usize>,
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
            let col = |n: &str| batch.column(batch.schema().index_of(n).expect("checked"));
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
            let col = |n: &str| batch.column(batch.schema().index_of(n).expect("checked"));
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
        Ok(Self {
            cfg,
            store,
            order,
            n_train_events,
            rows,
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
        let b = rows.len() as i64;
        let (w, ft, fw, fm) = (
            cfg.window as i64,
            cfg.track_features.len() as i64,
            cfg.tower_features.len() as i64,
            cfg.met_features.len() as i64,
        );
        let cat = |f: fn(&WindowTensors) -> &Vec<f32>| {
            let mut v = Vec::with_capacity(parts.iter().map(|p| f(p).len()).sum());
            for p in &parts {
                v.extend_from_slice(f(p));
            }
            Tensor::from_slice(&v)
        };
        let tracks = cat(|p| &p.tracks).view([b, w, cfg.n_tracks as i64, ft]);
        let towers = cat(|p| &p.towers).view([b, w, cfg.n_towers as i64, fw]);
        let met = cat(|p| &p.met).view([b, w, fm]);
        let target: Vec<f32> = rows
            .iter()
            .flat_map(|&r| self.rows[r].target.iter().copied())
            .collect();
        let class: Vec<i64> = rows.iter().map(|&r| self.rows[r].class).collect();
        Ok(Batch {
            tracks: tracks.to_device(device),
            towers: towers.to_device(device),
            met: met.to_device(device),
            target: Tensor::from_slice(&target)
                .view([b, cfg.n_classes as i64])
                .to_device(device),
            class: Tensor::from_slice(&class).to_device(device),
            rows: rows.to_vec(),
        })
    }

    /// Assembles `batches` on a worker thread, at most `depth` ahead, and
    /// hands them to `consume` in order. An error on either side stops both.
    pub fn for_each_batch(
        &self,
        batches: &[Vec<usize>],
        device: Device,
        depth: usize,
        mut consume: impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (tx, rx) = sync_channel::<Result<Batch>>(depth.max(1));
            let producer = scope.spawn(move || {
                for rows in batches {
                    let batch = self.batch(rows, device);
                    let failed = batch.is_err();
                    // The consumer hung up (it failed): stop assembling.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            });
            let mut result = Ok(());
            for batch in rx.iter() {
                result = batch.and_then(&mut consume);
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
