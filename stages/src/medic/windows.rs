//! `sliding_windows`: MEDIC's Algorithm 2 without materializing the windows.
//!
//! Events are shuffled with a seed; the shuffled sequence is cut into
//! contiguous train and test blocks *before* windowing (so no event is in
//! both a train and a test window, unlike the paper's random split of
//! overlapping windows); windows are `W` consecutive events, stride 1. The
//! window table stores only the window's block, start position, class
//! fractions and a sampling seed; [`EventStore::assemble`] rebuilds its
//! `[W, n_tracks, F_track]`, `[W, n_towers, F_tower]`, `[W, F_met]` tensors
//! deterministically, re-sampling each event's objects afresh per window.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int8Array,
    Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int8Type, Int64Type, Schema, SchemaRef};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{
    Input, OutputSpec, Result, RunContext, Stage, StageError, expect_inputs, require_column,
};
use crate::registry::StageConfig;
use dqm_schemas::{doc_field, events};

/// How windows are split into train and test blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Events cut into blocks before windowing: leak-free.
    #[default]
    Blocks,
    /// Windows split at random after windowing (medic.txt): leaky.
    Windows,
}

/// Builds the compact window table (and the shuffled event order) from events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SlidingWindows {
    /// Events per window (W).
    pub window: usize,
    /// Seed of the shuffle and of every window's object re-sampling.
    pub seed: u64,
    /// Tracks per event in a window: chosen uniformly without replacement, zero-padded.
    pub n_tracks: usize,
    /// Towers per event in a window, likewise.
    pub n_towers: usize,
    /// Fraction of the shuffled events in the train block; the rest is the test block.
    /// With `split: windows`, the fraction of windows in the train block.
    pub train_fraction: f64,
    /// `blocks`: cut the shuffled events into train and test blocks before
    /// windowing (no event in both). `windows`: the paper's protocol, a
    /// random split of the overlapping windows, so test windows share events
    /// with train windows (for comparison with the paper only).
    pub split: Split,
    /// Number of classes: the window label is p_0 .. p_{n_classes-1}.
    pub n_classes: usize,
    /// Also write each window's tensors as fixed-size list columns (small data, export).
    pub materialize: bool,
    /// Track features (columns `track_<feature>` of the events table), in tensor order.
    pub track_features: Vec<String>,
    /// Tower features (columns `tower_<feature>`), in tensor order.
    pub tower_features: Vec<String>,
    /// MET features (columns `met_<feature>`), in tensor order.
    pub met_features: Vec<String>,
}

impl Default for SlidingWindows {
    fn default() -> Self {
        let d = crate::medic::convert::DelphesConvert::default();
        Self {
            window: 30,
            seed: 0,
            n_tracks: 30,
            n_towers: 30,
            train_fraction: 0.8,
            split: Split::Blocks,
            n_classes: 4,
            materialize: false,
            track_features: d.track_features,
            tower_features: d.tower_features,
            met_features: d.met_features,
        }
    }
}

impl StageConfig for SlidingWindows {
    const KIND: &'static str = "sliding_windows";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "MEDIC windows of W shuffled events (stride 1) with class fractions; leak-free train/test blocks; tensors assembled on the fly";
    const INPUTS: (usize, usize) = (1, 1);

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![crate::medic::convert::DelphesConvert::default().events_schema()]
    }

    fn validate(&self) -> Result<()> {
        let bad = |param: &str, why: &str| {
            Err(StageError::Param {
                param: param.into(),
                why: why.into(),
            })
        };
        if self.window == 0 {
            return bad("window", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.train_fraction) {
            return bad("train_fraction", "must be in [0, 1]");
        }
        if self.n_classes == 0 || self.n_classes > 127 {
            return bad("n_classes", "must be 1 to 127");
        }
        Ok(())
    }
}

/// The `windows` table's columns.
fn windows_schema(cfg: &SlidingWindows) -> SchemaRef {
    let mut fields = vec![
        doc_field(
            "window_id",
            DataType::Int64,
            false,
            "Window id, unique over both blocks",
        ),
        doc_field(
            "block",
            DataType::Utf8,
            false,
            "train or test: the contiguous block of the shuffled sequence the window lies in",
        ),
        doc_field(
            "start",
            DataType::Int64,
            false,
            "Position of the window's first event in the shuffled order (table `<stage>_order`)",
        ),
    ];
    for c in 0..cfg.n_classes {
        fields.push(doc_field(
            &format!("p_{c}"),
            DataType::Float64,
            false,
            &format!("Fraction of the window's events of class {c}"),
        ));
    }
    fields.push(doc_field(
        "argmax_class",
        DataType::Int8,
        false,
        "Class with the largest fraction (lowest index on ties)",
    ));
    fields.push(doc_field(
        "sample_seed",
        DataType::UInt64,
        false,
        "Seed of this window's object re-sampling",
    ));
    if cfg.materialize {
        let fsl = |n: usize| {
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                n as i32,
            )
        };
        let (w, ft, fw, fm) = (
            cfg.window,
            cfg.track_features.len(),
            cfg.tower_features.len(),
            cfg.met_features.len(),
        );
        fields.push(doc_field(
            "tracks",
            fsl(w * cfg.n_tracks * ft),
            false,
            "Track tensor [W, n_tracks, F_track], row-major",
        ));
        fields.push(doc_field(
            "towers",
            fsl(w * cfg.n_towers * fw),
            false,
            "Tower tensor [W, n_towers, F_tower], row-major",
        ));
        fields.push(doc_field(
            "met",
            fsl(w * fm),
            false,
            "MET tensor [W, F_met], row-major",
        ));
    }
    let spec = serde_json::to_string(cfg).expect("plain data serializes");
    Arc::new(Schema::new(fields).with_metadata(HashMap::from([(WINDOWS_KEY.to_string(), spec)])))
}

/// Schema-metadata key of the window table holding the `sliding_windows`
/// parameters (JSON), so a model trained on it can check W, the object
/// counts and the feature lists, and rebuild identical tensors.
pub const WINDOWS_KEY: &str = "dqm.medic.windows";

fn order_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        doc_field(
            "position",
            DataType::Int64,
            false,
            "Position in the shuffled event sequence",
        ),
        doc_field(
            "event_id",
            DataType::Int64,
            false,
            "The event at this position",
        ),
        doc_field("block", DataType::Utf8, false, "train or test"),
    ]))
}

/// One event's objects, row-major (object x feature).
#[derive(Debug, Clone)]
struct Objects {
    n: usize,
    values: Vec<f32>,
}

/// Events in memory, in a form the window assembler can index quickly.
#[derive(Debug, Clone)]
pub struct EventStore {
    pub event_ids: Vec<i64>,
    pub classes: Vec<i8>,
    tracks: Vec<Objects>,
    towers: Vec<Objects>,
    met: Vec<Vec<f32>>,
    index: HashMap<i64, usize>,
    n_track_features: usize,
    n_tower_features: usize,
}

/// The tensors of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTensors {
    /// `[W, n_tracks, F_track]`, row-major.
    pub tracks: Vec<f32>,
    /// `[W, n_towers, F_tower]`, row-major.
    pub towers: Vec<f32>,
    /// `[W, F_met]`, row-major.
    pub met: Vec<f32>,
}

fn objects(
    batch: &RecordBatch,
    input: &str,
    columns: &[String],
    n_rows: usize,
) -> Result<Vec<Objects>> {
    let lists: Vec<_> = columns
        .iter()
        .map(|c| {
            let idx = batch
                .schema()
                .index_of(c)
                .map_err(|_| StageError::MissingColumn {
                    input: input.into(),
                    column: c.clone(),
                    why: "a window tensor feature".into(),
                })?;
            Ok(batch.column(idx).as_list::<i32>().clone())
        })
        .collect::<Result<_>>()?;
    let f = columns.len();
    let mut out = Vec::with_capacity(n_rows);
    for row in 0..n_rows {
        let per: Vec<ArrayRef> = lists.iter().map(|l| l.value(row)).collect();
        let n = per[0].len();
        if let Some(k) = per.iter().position(|a| a.len() != n) {
            return Err(StageError::Data(format!(
                "input `{input}`: row {row}: column `{}` has {} objects, `{}` has {n}",
                columns[k],
                per[k].len(),
                columns[0]
            )));
        }
        let mut values = vec![0.0f32; n * f];
        for (j, a) in per.iter().enumerate() {
            let a = a.as_primitive::<Float32Type>();
            for i in 0..n {
                values[i * f + j] = a.value(i);
            }
        }
        out.push(Objects { n, values });
    }
    Ok(out)
}

impl SlidingWindows {
    /// The parameters a window table was made with, from its schema metadata.
    pub fn from_schema(schema: &SchemaRef, input: &str) -> Result<Self> {
        let spec = schema.metadata().get(WINDOWS_KEY).ok_or_else(|| {
            StageError::Data(format!(
                "input `{input}` is not a `sliding_windows` table: its schema has no `{WINDOWS_KEY}` metadata"
            ))
        })?;
        serde_json::from_str(spec).map_err(|e| {
            StageError::Data(format!(
                "input `{input}`: unreadable `{WINDOWS_KEY}` metadata: {e}"
            ))
        })
    }

    fn column_names(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            self.track_features
                .iter()
                .map(|f| events::column("Track", f))
                .collect(),
            self.tower_features
                .iter()
                .map(|f| events::column("Tower", f))
                .collect(),
            self.met_features
                .iter()
                .map(|f| format!("met_{}", f.to_lowercase()))
                .collect(),
        )
    }

    /// Checks that an events table has every column the windows are built from.
    pub fn check_events_schema(&self, schema: &SchemaRef, input: &str) -> Result<()> {
        let why = "sliding_windows reads the events table";
        require_column(schema, input, "event_id", why, "Int64", |t| {
            t == &DataType::Int64
        })?;
        require_column(schema, input, "class", why, "Int8", |t| {
            t == &DataType::Int8
        })?;
        let (tr, tw, met) = self.column_names();
        for c in tr.iter().chain(&tw) {
            require_column(schema, input, c, why, "List<Float32>", |t| {
                t == &events::f32_list()
            })?;
        }
        for c in &met {
            require_column(schema, input, c, why, "Float32", |t| {
                t == &DataType::Float32
            })?;
        }
        Ok(())
    }

    /// Loads the events table into memory for window assembly.
    pub fn load(&self, input: &Input) -> Result<EventStore> {
        self.check_events_schema(&input.schema, &input.name)?;
        let batch = arrow::compute::concat_batches(&input.schema, &input.read_all()?)?;
        let n = batch.num_rows();
        let col = |name: &str| batch.column(batch.schema().index_of(name).expect("checked"));
        let event_ids = col("event_id")
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let classes = col("class").as_primitive::<Int8Type>().values().to_vec();
        if let Some(c) = classes
            .iter()
            .find(|&&c| c < 0 || c as usize >= self.n_classes)
        {
            return Err(StageError::Data(format!(
                "input `{}`: class {c} outside 0..{}",
                input.name, self.n_classes
            )));
        }
        let (tr, tw, met) = self.column_names();
        let met_cols: Vec<Float32Array> = met
            .iter()
            .map(|c| col(c).as_primitive::<Float32Type>().clone())
            .collect();
        let mut index = HashMap::with_capacity(n);
        for (i, &id) in event_ids.iter().enumerate() {
            if index.insert(id, i).is_some() {
                return Err(StageError::Data(format!(
                    "input `{}`: event_id {id} appears twice",
                    input.name
                )));
            }
        }
        Ok(EventStore {
            tracks: objects(&batch, &input.name, &tr, n)?,
            towers: objects(&batch, &input.name, &tw, n)?,
            met: (0..n)
                .map(|i| met_cols.iter().map(|c| c.value(i)).collect())
                .collect(),
            event_ids,
            classes,
            index,
            n_track_features: tr.len(),
            n_tower_features: tw.len(),
        })
    }

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

/// Per-feature mean and standard deviation of real objects (padding excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub track_mean: Vec<f32>,
    pub track_std: Vec<f32>,
    pub tower_mean: Vec<f32>,
    pub tower_std: Vec<f32>,
    pub met_mean: Vec<f32>,
    pub met_std: Vec<f32>,
}

/// Mean and standard deviation (a constant feature gets 1) of row-major
/// `values` with `f` features.
fn moments<'a>(rows: impl Iterator<Item = &'a [f32]>, f: usize) -> (Vec<f32>, Vec<f32>) {
    if f == 0 {
        return (Vec::new(), Vec::new());
    }
    let (mut n, mut sum, mut sq) = (0f64, vec![0f64; f], vec![0f64; f]);
    for values in rows {
        for obj in values.chunks_exact(f) {
            n += 1.0;
            for j in 0..f {
                let v = obj[j] as f64;
                sum[j] += v;
                sq[j] += v * v;
            }
        }
    }
    let n = n.max(1.0);
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = (q / n - m * m).max(0.0);
            if var > 1e-12 { var.sqrt() as f32 } else { 1.0 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

impl EventStore {
    /// Feature statistics over the objects of `events` (e.g. the train block).
    pub fn feature_stats(&self, events: &[i64]) -> Result<FeatureStats> {
        let idx: Vec<usize> = events
            .iter()
            .map(|id| {
                self.index.get(id).copied().ok_or_else(|| {
                    StageError::Data(format!("event_id {id} is not in the events table"))
                })
            })
            .collect::<Result<_>>()?;
        let (track_mean, track_std) = moments(
            idx.iter().map(|&e| self.tracks[e].values.as_slice()),
            self.n_track_features,
        );
        let (tower_mean, tower_std) = moments(
            idx.iter().map(|&e| self.towers[e].values.as_slice()),
            self.n_tower_features,
        );
        let fm = self.met.first().map_or(0, Vec::len);
        let (met_mean, met_std) = moments(idx.iter().map(|&e| self.met[e].as_slice()), fm);
        Ok(FeatureStats {
            track_mean,
            track_std,
            tower_mean,
            tower_std,
            met_mean,
            met_std,
        })
    }

    /// Standardizes every real object in place, so padding stays exactly zero.
    pub fn standardize(&mut self, stats: &FeatureStats) {
        let apply = |values: &mut [f32], mean: &[f32], std: &[f32]| {
            if mean.is_empty() {
                return;
            }
            for obj in values.chunks_exact_mut(mean.len()) {
                for ((v, m), s) in obj.iter_mut().zip(mean).zip(std) {
                    *v = (*v - m) / s;
                }
            }
        };
        for o in &mut self.tracks {
            apply(&mut o.values, &stats.track_mean, &stats.track_std);
        }
        for o in &mut self.towers {
            apply(&mut o.values, &stats.tower_mean, &stats.tower_std);
        }
        for m in &mut self.met {
            apply(m, &stats.met_mean, &stats.met_std);
        }
    }

    /// Assembles a window's tensors from its events (in window order) and
    /// sampling seed: each event keeps up to n objects chosen uniformly
    /// without replacement, zero-padded.
    pub fn assemble(
        &self,
        cfg: &SlidingWindows,
        events: &[i64],
        sample_seed: u64,
    ) -> Result<WindowTensors> {
        let mut rng = ChaCha8Rng::seed_from_u64(sample_seed);
        let (ft, fw, fm) = (
            self.n_track_features,
            self.n_tower_features,
            cfg.met_features.len(),
        );
        let mut out = WindowTensors {
            tracks: vec![0.0; events.len() * cfg.n_tracks * ft],
            towers: vec![0.0; events.len() * cfg.n_towers * fw],
            met: Vec::with_capacity(events.len() * fm),
        };
        let pick =
            |objs: &Objects, keep: usize, f: usize, dst: &mut [f32], rng: &mut ChaCha8Rng| {
                let m = objs.n.min(keep);
                for (slot, i) in rand::seq::index::sample(rng, objs.n, m)
                    .into_iter()
                    .enumerate()
                {
                    dst[slot * f..(slot + 1) * f].copy_from_slice(&objs.values[i * f..(i + 1) * f]);
                }
            };
        for (k, id) in events.iter().enumerate() {
            let &e = self.index.get(id).ok_or_else(|| {
                StageError::Data(format!("event_id {id} is not in the events table"))
            })?;
            let t = cfg.n_tracks * ft;
            pick(
                &self.tracks[e],
                cfg.n_tracks,
                ft,
                &mut out.tracks[k * t..(k + 1) * t],
                &mut rng,
            );
            let w = cfg.n_towers * fw;
            pick(
                &self.towers[e],
                cfg.n_towers,
                fw,
                &mut out.towers[k * w..(k + 1) * w],
                &mut rng,
            );
            out.met.extend_from_slice(&self.met[e]);
        }
        Ok(out)
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
        let store = self.load(&ctx.inputs[0])?;
        let (order, n_train) = self.shuffle(&store.event_ids);
        if order.len() < self.window {
            return Err(StageError::Data(format!(
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
                        return Err(StageError::Data(format!(
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
                picked.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed ^ 0x5711_7000));
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
            .map(|id| store.classes[store.index[id]])
            .collect();
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
    use crate::api::run_in_memory;
    use std::collections::HashSet;

    fn events(dir: &std::path::Path) -> Input {
        crate::medic::test_support::bundled_events(dir, &["normal", "hcal_barrel_off"])
    }

    #[test]
    fn windows_are_labelled_leak_free_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows {
            window: 10,
            seed: 3,
            materialize: true,
            ..Default::default()
        };
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
        let store = cfg.load(&input).unwrap();
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
    fn standardization_centres_real_objects_and_keeps_padding_zero() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows {
            window: 4,
            ..Default::default()
        };
        let mut store = cfg.load(&input).unwrap();
        let ids = store.event_ids.clone();
        let stats = store.feature_stats(&ids).unwrap();
        assert_eq!(stats.track_mean.len(), 7);
        assert!(stats.tower_std.iter().all(|s| *s > 0.0));
        store.standardize(&stats);
        let after = store.feature_stats(&ids).unwrap();
        for (m, s) in after.track_mean.iter().zip(&after.track_std) {
            assert!(m.abs() < 1e-3 && (s - 1.0).abs() < 1e-3, "{m} {s}");
        }
        // Padding slots of an assembled window stay exactly zero.
        let t = store.assemble(&cfg, &ids[..4], 9).unwrap();
        let per_event = 30 * 8;
        for (e, id) in ids[..4].iter().enumerate() {
            let n = store.towers[store.index[id]].n.min(30);
            assert!(
                t.towers[e * per_event + n * 8..(e + 1) * per_event]
                    .iter()
                    .all(|v| *v == 0.0)
            );
        }
    }

    #[test]
    fn the_papers_window_split_mixes_train_and_test_events() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let cfg = SlidingWindows {
            window: 10,
            seed: 3,
            split: Split::Windows,
            ..Default::default()
        };
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
        let cfg = SlidingWindows {
            window: 300,
            ..Default::default()
        };
        let err = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("larger than the 200 events of the test block"),
            "{err}"
        );
        let cfg = SlidingWindows {
            window: 5000,
            ..Default::default()
        };
        let err = run_in_memory(&cfg, std::slice::from_ref(&input))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
