//! `medic_infer`: the ensemble's predictions per window (medic.txt eq. 3.4,
//! 3.6): every fold's class probabilities, their mean, and the majority vote.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int8Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError};
use crate::medic::batches::{
    self, Encode, EventBatch, WindowData, argmax, inference_draws, prefetched, to_vec_f32,
};
use crate::medic::ensemble::{LoadedFold, load_models};
use crate::medic::model::WindowHead;
use crate::medic::streaming::StreamingMedic;
use crate::medic::tables::{
    Blocks, ModelSpec, carried_metadata, example_models_schema, example_window_inputs,
    predictions_schema,
};
use crate::nn::DeviceChoice;
use crate::stage::{OutputSpec, Progress, RunContext, Stage, StageConfig};
use dqm_schemas::column;

/// Scores windows with every fold of a trained MEDIC ensemble.
///
/// Inputs: the window table, its `.order` table, the events table, and the
/// models table of `medic_train`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MedicInfer {
    /// Which windows to score: test, train or all.
    pub blocks: Blocks,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Where to run: auto (CUDA if available), cpu or cuda.
    pub device: DeviceChoice,
    /// Batches assembled ahead of the models on a worker thread.
    pub prefetch: usize,
    /// Class index of the normal detector configuration: the anomaly score
    /// of a window is 1 − p(normal).
    pub normal_class: usize,
    /// `event` (streaming): windows are scored in the order of their first
    /// event; each event is drawn once (from the window table's seed),
    /// encoded once per model and kept in a rolling buffer of embeddings
    /// while it is inside a window, so the cost per event does not grow
    /// with W. `window`: every window re-draws and re-encodes its events
    /// (the paper's way).
    pub encode: Encode,
}

impl Default for MedicInfer {
    fn default() -> Self {
        Self {
            blocks: Blocks::Test,
            batch_size: 256,
            device: DeviceChoice::Auto,
            prefetch: 4,
            normal_class: 0,
            encode: Encode::Event,
        }
    }
}

impl StageConfig for MedicInfer {
    const KIND: &'static str = "medic_infer";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "MEDIC ensemble inference: per-fold probabilities, ensemble mean, majority vote and anomaly score per window";
    const INPUTS: (usize, usize) = (4, 4);
    const INPUT_ROLES: &'static str = "windows, windows.order, events, models";

    fn doc_inputs() -> Vec<SchemaRef> {
        let mut inputs = example_window_inputs();
        inputs.push(example_models_schema());
        inputs
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(StageError::param("batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

fn fold_schema(n_classes: usize) -> SchemaRef {
    let mut fields = vec![
        column("window_id", DataType::Int64, "Window id"),
        column("fold", DataType::Int32, "Fold of the model, 1 to k"),
    ];
    for c in 0..n_classes {
        fields.push(column(
            &format!("prob_{c}"),
            DataType::Float64,
            &format!("This fold's predicted probability of class {c}"),
        ));
    }
    fields.push(column(
        "predicted",
        DataType::Int8,
        "This fold's argmax class",
    ));
    Arc::new(Schema::new(fields))
}

/// The majority vote of `votes` (class per fold); ties go to the class with
/// the larger `mean` probability, then the lower index. Returns (class, share).
pub fn majority_vote(votes: &[usize], mean: &[f32]) -> (usize, f64) {
    let mut counts = vec![0usize; mean.len()];
    for &v in votes {
        counts[v] += 1;
    }
    let mut best = 0;
    for c in 1..counts.len() {
        if counts[c] > counts[best] || (counts[c] == counts[best] && mean[c] > mean[best]) {
            best = c;
        }
    }
    (best, counts[best] as f64 / votes.len().max(1) as f64)
}

/// The embeddings of the events of the last batch, by position in the
/// event sequence: a batch of windows re-uses those of its events that the
/// previous batch already encoded (with stride-1 windows in start order,
/// the W − 1 events the batches share), so every event is encoded once.
#[derive(Default)]
pub struct RollingEmbeddings {
    positions: Vec<usize>,
    events: Option<Tensor>,
}

impl RollingEmbeddings {
    /// Embeddings `[M, 3, E]` of the batch's events, encoding only those
    /// not in the buffer, which then holds this batch's; also how many were
    /// encoded.
    pub fn embed(&mut self, model: &StreamingMedic<'_>, batch: &EventBatch) -> (Tensor, usize) {
        self.embed_with(model.arch().embed, |t, w, m| model.encode(t, w, m), batch)
    }

    /// [`Self::embed`] with any encoder of width `embed` (tracks, towers,
    /// MET -> `[M, 3, embed]`).
    pub fn embed_with(
        &mut self,
        embed: i64,
        encode: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        batch: &EventBatch,
    ) -> (Tensor, usize) {
        let mut fresh = Vec::new();
        let mut kept = Vec::new();
        let mut kept_from = Vec::new();
        for (i, p) in batch.positions.iter().enumerate() {
            match self.positions.binary_search(p) {
                Ok(j) => {
                    kept.push(i as i64);
                    kept_from.push(j as i64);
                }
                Err(_) => fresh.push(i as i64),
            }
        }
        let device = batch.tracks.device();
        let index = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let mut events = Tensor::zeros(
            [batch.positions.len() as i64, 3, embed],
            (Kind::Float, device),
        );
        if !fresh.is_empty() {
            let f = index(&fresh);
            let new = encode(
                &batch.tracks.index_select(0, &f),
                &batch.towers.index_select(0, &f),
                &batch.met.index_select(0, &f),
            );
            events = events.index_copy(0, &f, &new);
        }
        if let Some(previous) = self.events.as_ref().filter(|_| !kept.is_empty()) {
            let from = previous.index_select(0, &index(&kept_from));
            events = events.index_copy(0, &index(&kept), &from);
        }
        self.positions = batch.positions.clone();
        self.events = Some(events.shallow_clone());
        (events, fresh.len())
    }
}

impl Stage for MedicInfer {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let windows = batches::check_inputs(&inputs[..3])?;
        let spec = ModelSpec::from_schema(&inputs[3], "models")?;
        spec.check_windows(&windows, "windows")?;
        if self.normal_class >= windows.n_classes {
            return Err(StageError::param(
                "normal_class",
                format!("must be below n_classes = {}", windows.n_classes),
            ));
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: predictions_schema(
                    windows.n_classes,
                    carried_metadata(&inputs[0], &inputs[3]),
                ),
            },
            OutputSpec {
                name: "folds",
                schema: fold_schema(windows.n_classes),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let device = self.device.resolve()?;
        let mut data = WindowData::load(&ctx.inputs[..3])?;
        let _torch = crate::nn::exclusive();
        let folds = load_models(&ctx.inputs[3], &data.cfg, device)?;
        if folds[0].card.spec.log_energies {
            data.store.log_energies(&data.cfg);
        }
        if let Some(stats) = &folds[0].card.normalization {
            data.store.standardize(stats);
        }
        let mut rows = data.scored_rows(self.blocks, &ctx.inputs[0].name)?;
        if self.encode == Encode::Event {
            rows.sort_by_key(|&r| (data.rows[r].start, data.rows[r].window_id));
        }
        let k = folds.len();
        let nc = data.cfg.n_classes;
        let progress = ctx.reporter.progress(rows.len() as u64, "windows");
        let started = Instant::now();
        let (probs, encoded) =
            self.probabilities(&data, &folds, &rows, device, progress.as_ref())?;
        let seconds = started.elapsed().as_secs_f64();
        ctx.reporter.info(&format!(
            "{} windows x {k} folds in {seconds:.2} s (encode: {}): {:.0} windows/s, {encoded} events encoded per model ({:.0}/s)",
            rows.len(),
            match self.encode {
                Encode::Event => "event, streaming",
                Encode::Window => "window",
            },
            rows.len() as f64 / seconds,
            encoded as f64 / seconds
        ));

        let (mean, vote, share) = ensemble(&probs, rows.len(), nc);
        let schema = predictions_schema(
            nc,
            carried_metadata(&ctx.inputs[0].schema, &ctx.inputs[3].schema),
        );
        let batch = data.predictions(schema, &rows, &mean, (vote, share), self.normal_class)?;
        ctx.output.write("main", batch)?;

        for (f, fold) in folds.iter().enumerate() {
            let batch = fold_batch(&data, &rows, fold.fold, &probs[f], nc)?;
            ctx.output.write("folds", batch)?;
        }
        Ok(())
    }
}

impl MedicInfer {
    /// Every fold's class probabilities of `rows` (row-major, `n_classes`
    /// per row), and the events each model encoded.
    fn probabilities(
        &self,
        data: &WindowData,
        folds: &[LoadedFold],
        rows: &[usize],
        device: tch::Device,
        progress: &dyn Progress,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        let k = folds.len();
        let nc = data.cfg.n_classes;
        let mut probs: Vec<Vec<f32>> = vec![Vec::with_capacity(rows.len() * nc); k];
        let batches: Vec<Vec<usize>> = rows
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let mut encoded = 0usize;
        tch::no_grad(|| match self.encode {
            Encode::Window => data.for_each_batch(&batches, device, self.prefetch, |b| {
                for (f, fold) in folds.iter().enumerate() {
                    let p = fold
                        .model
                        .forward(&b.tracks, &b.towers, &b.met, false)
                        .exp();
                    probs[f].extend(to_vec_f32(&p));
                }
                encoded += b.rows.len() * data.cfg.window;
                progress.inc(b.rows.len() as u64);
                Ok(())
            }),
            Encode::Event => {
                let seed = inference_draws(&data.cfg);
                let mut buffers: Vec<RollingEmbeddings> =
                    folds.iter().map(|_| RollingEmbeddings::default()).collect();
                let streaming: Vec<StreamingMedic<'_>> = folds
                    .iter()
                    .map(|f| StreamingMedic::new(&f.model))
                    .collect();
                // With the event-mean head, what libtorch still runs (MET,
                // the buffer's copies) is small: on one thread, its idle pool does not
                // spin against the kernels' rayon workers (2.2× in the bench).
                let event_mean = folds
                    .iter()
                    .all(|f| f.model.arch.window_head == WindowHead::EventMean);
                let _one = (event_mean && device == Device::Cpu).then(crate::nn::one_thread);
                prefetched(
                    &batches,
                    self.prefetch,
                    |rows| data.event_batch(rows, seed, device),
                    |b| {
                        for (f, model) in streaming.iter().enumerate() {
                            let (events, fresh) = buffers[f].embed(model, &b);
                            let p = model.score_windows(&events, &b.slots).exp();
                            probs[f].extend(to_vec_f32(&p));
                            if f == 0 {
                                encoded += fresh;
                            }
                        }
                        progress.inc(b.rows.len() as u64);
                        Ok(())
                    },
                )
            }
        })?;
        Ok((probs, encoded))
    }
}

/// The ensemble over folds of `n` rows: mean probabilities, and the
/// majority vote with the share of folds behind it.
fn ensemble(probs: &[Vec<f32>], n: usize, nc: usize) -> (Vec<f64>, Vec<i8>, Vec<f64>) {
    let k = probs.len();
    let mut mean = vec![0f32; n * nc];
    for p in probs {
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / k as f32;
        }
    }
    let mut vote = Vec::with_capacity(n);
    let mut share = Vec::with_capacity(n);
    for i in 0..n {
        let votes: Vec<usize> = probs
            .iter()
            .map(|p| argmax(&p[i * nc..(i + 1) * nc]))
            .collect();
        let (v, s) = majority_vote(&votes, &mean[i * nc..(i + 1) * nc]);
        vote.push(v as i8);
        share.push(s);
    }
    let mean: Vec<f64> = mean.iter().map(|&m| m as f64).collect();
    (mean, vote, share)
}

/// One fold's rows of the `folds` table.
fn fold_batch(
    data: &WindowData,
    rows: &[usize],
    fold: i32,
    p: &[f32],
    nc: usize,
) -> Result<RecordBatch> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&r| data.rows[r].window_id),
        )),
        Arc::new(Int32Array::from(vec![fold; n])),
    ];
    for c in 0..nc {
        columns.push(Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| p[i * nc + c] as f64),
        )));
    }
    columns.push(Arc::new(Int8Array::from_iter_values(
        (0..n).map(|i| argmax(&p[i * nc..(i + 1) * nc]) as i8),
    )));
    Ok(RecordBatch::try_new(fold_schema(nc), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use crate::medic::medic_train::MedicTrain;
    use crate::medic::model::Medic;
    use crate::medic::test_support::model_inputs;
    use crate::nn::load_weights;
    use arrow::array::{AsArray, BinaryArray};
    use arrow::datatypes::{Float64Type, Int8Type, Int64Type};
    use std::collections::HashMap;
    use tch::nn;

    fn quick_train() -> MedicTrain {
        MedicTrain {
            max_epochs: 1,
            batch_size: 32,
            seed: 5,
            device: DeviceChoice::Cpu,
            ..Default::default()
        }
    }

    #[test]
    fn majority_vote_breaks_ties_by_mean_probability() {
        assert_eq!(
            majority_vote(&[1, 1, 2], &[0.1, 0.5, 0.4, 0.0]),
            (1, 2.0 / 3.0)
        );
        assert_eq!(majority_vote(&[1, 2], &[0.1, 0.3, 0.6, 0.0]), (2, 0.5));
        assert_eq!(majority_vote(&[0, 3, 3, 0, 2], &[0.4, 0.0, 0.1, 0.5]).0, 3);
    }

    #[test]
    fn safetensors_round_trip_restores_the_model() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let arch = crate::medic::model::MedicArch::default();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let a = Medic::new(&vs.root(), arch.clone());
        let path = dir.path().join("m.safetensors");
        vs.save(&path).unwrap();
        tch::manual_seed(2);
        let vs2 = nn::VarStore::new(Device::Cpu);
        let b = Medic::new(&vs2.root(), arch);
        let x = |s: &[i64]| Tensor::randn(s, (tch::Kind::Float, Device::Cpu));
        let (tr, tw, me) = (x(&[2, 4, 30, 7]), x(&[2, 4, 30, 8]), x(&[2, 4, 3]));
        let before = b.forward(&tr, &tw, &me, false);
        load_weights(&vs2, &std::fs::read(&path).unwrap(), "test").unwrap();
        let want = a.forward(&tr, &tw, &me, false);
        assert!(!before.allclose(&want, 1e-6, 1e-6, false));
        assert!(
            b.forward(&tr, &tw, &me, false)
                .allclose(&want, 1e-6, 1e-6, false)
        );
    }

    /// Trains a 3-fold ensemble on W=5 windows and scores the test block.
    #[test]
    fn ensemble_predictions_and_bad_models() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = model_inputs(dir.path(), 5, 0.3, 3);
        let models = run_in_memory(&quick_train(), &inputs)
            .unwrap()
            .table("main");
        let models_path = dir.path().join("models.parquet");
        inputs.push(input_from_batch("models", &models, &models_path).unwrap());
        // The paper's per-window path here; the streaming path below.
        let stage = MedicInfer {
            device: DeviceChoice::Cpu,
            encode: Encode::Window,
            ..Default::default()
        };
        let schemas: Vec<SchemaRef> = inputs.iter().map(|i| i.schema.clone()).collect();
        stage.outputs(&schemas).unwrap();
        let out = run_in_memory(&stage, &inputs).unwrap();
        let p = out.table("main");
        let n_test = inputs[0]
            .read_all()
            .unwrap()
            .iter()
            .map(|b| {
                let block = b.column(1).as_string::<i32>();
                (0..b.num_rows())
                    .filter(|&i| block.value(i) == "test")
                    .count()
            })
            .sum::<usize>();
        assert_eq!(p.num_rows(), n_test);
        let col = |name: &str| p.column_by_name(name).unwrap().clone();
        for i in 0..p.num_rows() {
            let total: f64 = (0..4)
                .map(|c| {
                    col(&format!("prob_{c}"))
                        .as_primitive::<Float64Type>()
                        .value(i)
                })
                .sum();
            assert!((total - 1.0).abs() < 1e-5, "row {i}: {total}");
            let p0 = col("prob_0").as_primitive::<Float64Type>().value(i);
            let score = col("anomaly_score").as_primitive::<Float64Type>().value(i);
            assert!((score - (1.0 - p0)).abs() < 1e-12);
        }
        // The vote agrees with the per-fold table.
        let folds = out.table("folds");
        assert_eq!(folds.num_rows(), 3 * n_test);
        let predicted = folds.column(6).as_primitive::<Int8Type>();
        let vote = col("vote");
        let vote = vote.as_primitive::<Int8Type>();
        for i in 0..n_test {
            let votes: Vec<usize> = (0..3)
                .map(|f| predicted.value(f * n_test + i) as usize)
                .collect();
            let mean: Vec<f32> = (0..4)
                .map(|c| {
                    col(&format!("prob_{c}"))
                        .as_primitive::<Float64Type>()
                        .value(i) as f32
                })
                .collect();
            assert_eq!(majority_vote(&votes, &mean).0, vote.value(i) as usize);
        }

        // Windows of another W than the model's: refused at plan time.
        let other = model_inputs(&dir.path().join("w6").tap_mkdir(), 6, 0.3, 3);
        let mut mixed: Vec<SchemaRef> = other.iter().map(|i| i.schema.clone()).collect();
        mixed.push(schemas[3].clone());
        let err = stage.outputs(&mixed).unwrap_err().to_string();
        assert!(
            err.contains("W (window) = 6") && err.contains("trained with W (window) = 5"),
            "{err}"
        );

        // Corrupt or foreign weights: a clear error naming the fold.
        let with_weights = |weights: Vec<Vec<u8>>, name: &str| -> Vec<Input> {
            let mut columns = models.columns().to_vec();
            columns[9] = Arc::new(BinaryArray::from_iter_values(
                weights.iter().map(|w| w.as_slice()),
            ));
            let batch = RecordBatch::try_new(models.schema(), columns).unwrap();
            let mut v = inputs[..3].to_vec();
            v.push(input_from_batch("models", &batch, &dir.path().join(name)).unwrap());
            v
        };
        let good = models.column(9).as_binary::<i32>().value(0).to_vec();
        let err = run_in_memory(
            &stage,
            &with_weights(
                vec![good.clone(), good[..100].to_vec(), good.clone()],
                "cut.parquet",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("fold 2") && err.contains("not a safetensors file"),
            "{err}"
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "other", 2, 2, Default::default());
        let foreign = dir.path().join("foreign.safetensors");
        vs.save(&foreign).unwrap();
        let err = run_in_memory(
            &stage,
            &with_weights(
                vec![good.clone(), good.clone(), std::fs::read(&foreign).unwrap()],
                "foreign.parquet",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("fold 3") && err.contains("weights have no tensor `"),
            "{err}"
        );
    }

    /// Streaming scores (each event encoded once, windows from a rolling
    /// buffer) equal the per-window network run on windows assembled from
    /// the same per-event draws; and the buffer encodes every event once.
    #[test]
    fn streaming_scores_equal_per_window_scores_of_the_same_draws() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = model_inputs(dir.path(), 5, 0.3, 2);
        let models = run_in_memory(&quick_train(), &inputs)
            .unwrap()
            .table("main");
        inputs.push(input_from_batch("models", &models, &dir.path().join("m.parquet")).unwrap());
        let stage = MedicInfer {
            device: DeviceChoice::Cpu,
            batch_size: 7,
            ..Default::default()
        };
        let p = run_in_memory(&stage, &inputs).unwrap().table("main");
        let ids = p.column(0).as_primitive::<Int64Type>();

        let _torch = crate::nn::exclusive();
        let data = WindowData::load(&inputs[..3]).unwrap();
        let folds = load_models(&inputs[3], &data.cfg, Device::Cpu).unwrap();
        let mut data = data;
        data.store
            .standardize(folds[0].card.normalization.as_ref().unwrap());
        let row_of: HashMap<i64, usize> = data
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.window_id, i))
            .collect();
        let seed = inference_draws(&data.cfg);
        let w = data.cfg.window as i64;
        let mut checked = 0;
        for i in (0..p.num_rows()).step_by(5) {
            let r = &data.rows[row_of[&ids.value(i)]];
            let t = data
                .store
                .assemble_events(&data.cfg, &data.order[r.start..r.start + w as usize], seed)
                .unwrap();
            let mut mean = [0f64; 4];
            tch::no_grad(|| {
                for f in &folds {
                    let lp = f.model.forward(
                        &Tensor::from_slice(&t.tracks).view([1, w, 30, 7]),
                        &Tensor::from_slice(&t.towers).view([1, w, 30, 8]),
                        &Tensor::from_slice(&t.met).view([1, w, 3]),
                        false,
                    );
                    for (c, v) in to_vec_f32(&lp.exp()).iter().enumerate() {
                        mean[c] += *v as f64 / folds.len() as f64;
                    }
                }
            });
            for (c, want) in mean.iter().enumerate() {
                let got = p
                    .column(p.schema().index_of(&format!("prob_{c}")).unwrap())
                    .as_primitive::<Float64Type>()
                    .value(i);
                assert!(
                    (got - want).abs() < 1e-5,
                    "window {i} class {c}: {got} vs {want}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 5);

        // Consecutive batches of stride-1 windows: every event encoded once.
        let rows = data.block(true);
        let mut buffer = RollingEmbeddings::default();
        let mut encoded = 0;
        let mut distinct = std::collections::BTreeSet::new();
        tch::no_grad(|| {
            for chunk in rows.chunks(7) {
                let b = data.event_batch(chunk, seed, Device::Cpu).unwrap();
                distinct.extend(b.positions.iter().copied());
                let (events, fresh) = buffer.embed(&StreamingMedic::new(&folds[0].model), &b);
                let all = folds[0].model.encode(&b.tracks, &b.towers, &b.met, false);
                assert!(events.allclose(&all, 1e-5, 1e-5, false));
                encoded += fresh;
            }
        });
        assert_eq!(encoded, distinct.len());
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }
    impl TapMkdir for std::path::PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
