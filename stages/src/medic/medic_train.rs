//! `medic_train`: MEDIC's Algorithm 1, k-fold cross-validated training of an
//! ensemble (medic.txt section 3.2–3.4).
//!
//! The train block's windows come in k contiguous sub-blocks of physics
//! events (`sliding_windows`, `split: blocks`; with the paper's `split:
//! windows`, k folds of random windows stratified by argmax class); fold j's model trains on the other k−1 folds with Adam,
//! minimizing the class-weighted KL divergence, and keeps the parameters of
//! its epoch with the lowest validation KL (early stopping after `patience`
//! epochs without improvement). The models travel as a Parquet table (one
//! row per fold: model card JSON + safetensors bytes), so any stage or a
//! `read_parquet` of a model trained elsewhere can feed inference; the same
//! files are also written as `fold_<j>.safetensors` + `fold_<j>.json`
//! artifacts, loadable with `safetensors.torch.load_file`.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::SchemaRef;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError, bad_param};
use crate::medic::batches::{self, Encode, ModelBatch, WindowData, prefetched};
use crate::medic::data::event_draw_seed;
use crate::medic::folds::{contiguous_folds, stratified_folds};
use crate::medic::model::{Medic, WindowHead, kl_per_window};
use crate::medic::tables::{
    FeatureStats, ModelCard, ModelSpec, Split, WindowSpec, example_window_inputs, folds_schema,
    log_schema, models_schema,
};
use crate::nn::{Checkpoint, DeviceChoice};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Salt of the batch-order shuffle, so it is not the stream the fold
/// assignment draws from the same `seed`.
const BATCH_ORDER_SALT: u64 = 0xF01D << 32;
/// Salt of the encode-once object draws.
const DRAW_SALT: u64 = 0xD2A3 << 32;

/// Trains the k-fold MEDIC ensemble on the train block of a window table.
///
/// Inputs: the window table, its `.order` table and the events table the
/// windows were built from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MedicTrain {
    /// Upper limit on epochs per fold.
    pub max_epochs: usize,
    /// Stop a fold after this many epochs without a lower validation KL.
    pub patience: usize,
    /// Windows per optimizer step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of fold assignment, initialization, dropout and batch order.
    pub seed: u64,
    /// Standardize every feature with the mean and standard deviation of the
    /// train block's objects. The reference feeds raw features; on held-out
    /// windows standardizing was better (BENCHMARKS.md), hence the default.
    pub normalize_features: bool,
    /// Keep zero-padded objects out of attention and pooling (the reference
    /// lets them take part).
    pub mask_padding: bool,
    /// Where to train: auto (CUDA if available), cpu or cuda.
    pub device: DeviceChoice,
    /// Batches assembled ahead of the model on a worker thread.
    pub prefetch: usize,
    /// `event`: each event's objects are drawn and encoded once per epoch
    /// and windows slide over the embeddings (ours, ~W times fewer encoder
    /// passes); `window`: every window re-draws and re-encodes its events
    /// (the paper's).
    pub encode: Encode,
    /// In `encode: event`, batches are made of runs of this many
    /// consecutive windows (shuffled runs), so a batch of B windows encodes
    /// about B/run·(run + W − 1) events instead of B·W.
    pub contiguous_windows: usize,
    /// Weight of the per-event auxiliary loss: the cross-entropy of each
    /// event's own configuration predicted from its embeddings, added to the
    /// window KL. 0 = off (the paper); our extension.
    pub event_loss_weight: f64,
    /// Compress energies and momenta (P, PT, ET, E, Eem, Ehad, MET) with
    /// ln(1 + x) before standardization (ours; the reference feeds them raw).
    pub log_energies: bool,
    /// Learning rate over the epochs: `constant` (the paper) or `cosine`
    /// (from learning_rate down to 0 at max_epochs).
    pub lr_schedule: LrSchedule,
    /// `cnn`: the paper's CNN over (object type × window) and head;
    /// `event_mean`: a window's probabilities are the mean of its events'
    /// per-event-head probabilities (ours; counting, no CNN).
    pub window_head: WindowHead,
    /// Width of the set encoders' embeddings (the reference: 128; a
    /// multiple of the 4 attention heads). Smaller is faster per event.
    pub embed: usize,
    /// Width of the set encoders' feed-forward layer (the reference: 128).
    pub feed_forward: usize,
}

/// How the learning rate moves over the epochs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// lr · (1 + cos(π (epoch − 1) / max_epochs)) / 2.
    Cosine,
}

impl LrSchedule {
    /// The learning rate of `epoch` (1-based) of `max_epochs`.
    pub fn rate(self, base: f64, epoch: usize, max_epochs: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let x = (epoch - 1) as f64 / max_epochs.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            }
        }
    }
}

impl Default for MedicTrain {
    fn default() -> Self {
        Self {
            max_epochs: 100,
            patience: 20,
            batch_size: 64,
            learning_rate: 1e-3,
            seed: 0,
            normalize_features: true,
            mask_padding: false,
            device: DeviceChoice::Auto,
            prefetch: 4,
            encode: Encode::Event,
            contiguous_windows: 16,
            event_loss_weight: 0.0,
            log_energies: false,
            lr_schedule: LrSchedule::Constant,
            window_head: WindowHead::Cnn,
            embed: 128,
            feed_forward: 128,
        }
    }
}

impl StageConfig for MedicTrain {
    const KIND: &'static str = "medic_train";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "MEDIC k-fold ensemble training (Adam, class-weighted KL, early stopping on validation KL): models table + per-epoch log";
    const INPUTS: (usize, usize) = (3, 3);
    const INPUT_ROLES: &'static str = "windows, windows.order, events";

    fn doc_inputs() -> Vec<SchemaRef> {
        example_window_inputs()
    }

    fn validate(&self) -> Result<()> {
        if self.max_epochs == 0 {
            return bad_param("max_epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad_param("batch_size", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad_param("learning_rate", "must be a positive number");
        }
        if self.embed == 0 || !self.embed.is_multiple_of(4) {
            return bad_param(
                "embed",
                "must be a positive multiple of the 4 attention heads",
            );
        }
        if self.feed_forward == 0 {
            return bad_param("feed_forward", "must be at least 1");
        }
        if self.contiguous_windows == 0 {
            return bad_param("contiguous_windows", "must be at least 1");
        }
        if !(self.event_loss_weight >= 0.0 && self.event_loss_weight.is_finite()) {
            return bad_param("event_loss_weight", "must be a number >= 0");
        }
        Ok(())
    }
}

/// Sums over the windows of one pass, turned into means by [`Tally::mean`].
#[derive(Default)]
struct Tally {
    kl: f64,
    correct: f64,
    brier: f64,
    n: f64,
    events_correct: f64,
    events: f64,
}

impl Tally {
    fn add(&mut self, batch: &ModelBatch, log_probs: &Tensor, kl_sum: f64) {
        let probs = log_probs.detach().exp();
        self.kl += kl_sum;
        self.correct += probs
            .argmax(-1, false)
            .eq_tensor(batch.class())
            .sum(Kind::Float)
            .double_value(&[]);
        self.brier += (probs - batch.target())
            .square()
            .sum(Kind::Float)
            .double_value(&[]);
        self.n += batch.rows().len() as f64;
    }

    /// Counts the events whose per-event head names their class.
    fn add_events(&mut self, log_probs: &Tensor, class: &Tensor) {
        self.events_correct += log_probs
            .argmax(-1, false)
            .eq_tensor(class)
            .sum(Kind::Float)
            .double_value(&[]);
        self.events += class.numel() as f64;
    }

    /// Means over the windows (events) of the pass.
    fn mean(&self) -> Figures {
        let n = self.n.max(1.0);
        Figures {
            kl: self.kl / n,
            accuracy: self.correct / n,
            brier: self.brier / n,
            event_accuracy: (self.events > 0.0).then(|| self.events_correct / self.events),
        }
    }
}

/// Class weights ∝ 1/count over `rows`, normalized to sum to the number of
/// classes; an absent class gets 0.
pub fn class_weights(classes: impl Iterator<Item = i64>, n_classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n_classes];
    for c in classes {
        counts[c as usize] += 1;
    }
    let inv: Vec<f64> = counts
        .iter()
        .map(|&n| if n > 0 { 1.0 / n as f64 } else { 0.0 })
        .collect();
    let total: f64 = inv.iter().sum();
    inv.iter()
        .map(|w| {
            if total > 0.0 {
                w * n_classes as f64 / total
            } else {
                0.0
            }
        })
        .collect()
}

/// The loss minimized: the mean of the class-weighted window KLs `kl`
/// `[B]`, plus, with the per-event head, `weight` × the mean cross-entropy
/// of the events' own classes `[N]` under their log-probabilities `[N, C]`.
pub fn training_loss(kl: &Tensor, events: Option<&(Tensor, Tensor, f64)>) -> Tensor {
    let loss = kl.mean(Kind::Float);
    match events {
        Some((log_probs, class, weight)) => loss + log_probs.nll_loss(class) * *weight,
        None => loss,
    }
}

/// Mean KL, accuracy and Brier score of one pass over some windows.
#[derive(Debug, Clone, Copy)]
struct Figures {
    kl: f64,
    accuracy: f64,
    brier: f64,
    /// Accuracy of the per-event head on the events of the pass, if any.
    event_accuracy: Option<f64>,
}

/// One row of the `log` output: a fold's epoch.
struct EpochLog {
    fold: usize,
    epoch: usize,
    train: Figures,
    val: Figures,
    improved: bool,
}

/// What every fold of one training run shares.
#[derive(Clone, Copy)]
struct Ensemble<'a> {
    data: &'a WindowData,
    spec: &'a ModelSpec,
    normalization: &'a Option<FeatureStats>,
    device: Device,
}

/// What a trained fold leaves behind.
struct FoldResult {
    best_epoch: usize,
    epochs: usize,
    /// Validation figures at `best_epoch`.
    best: Figures,
    train_windows: usize,
    val_windows: usize,
    card: ModelCard,
    weights: Vec<u8>,
}

impl MedicTrain {
    fn spec(&self, windows: &WindowSpec) -> ModelSpec {
        let mut spec = ModelSpec::new(
            windows.clone(),
            self.mask_padding,
            self.normalize_features,
            windows.folds,
        );
        spec.arch.event_head = self.event_loss_weight > 0.0;
        spec.arch.window_head = self.window_head;
        spec.arch.embed = self.embed as i64;
        spec.arch.feed_forward = self.feed_forward as i64;
        spec.log_energies = self.log_energies;
        spec
    }

    /// The training batches of one epoch: shuffled windows (`encode:
    /// window`), or shuffled runs of `contiguous_windows` consecutive
    /// windows (`encode: event`), so events are shared within a batch.
    pub fn epoch_batches(
        &self,
        data: &WindowData,
        rows: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Vec<Vec<usize>> {
        match self.encode {
            Encode::Window => self.batches(rows, Some(rng)),
            Encode::Event => {
                let mut sorted = rows.to_vec();
                sorted.sort_by_key(|&r| data.rows[r].start);
                let mut runs: Vec<&[usize]> = sorted.chunks(self.contiguous_windows).collect();
                runs.shuffle(rng);
                self.batches(&runs.concat(), None)
            }
        }
    }

    fn batches(&self, rows: &[usize], shuffle: Option<&mut ChaCha8Rng>) -> Vec<Vec<usize>> {
        let mut rows = rows.to_vec();
        if let Some(rng) = shuffle {
            rows.shuffle(rng);
        }
        rows.chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Trains fold `fold` on `train` rows, validating on `val` rows; every
    /// epoch's figures are appended to `log`.
    fn train_fold(
        &self,
        ctx: &mut RunContext<'_>,
        job: &Ensemble<'_>,
        fold: usize,
        (train, val): (&[usize], &[usize]),
        log: &mut Vec<EpochLog>,
    ) -> Result<FoldResult> {
        let Ensemble {
            data,
            spec,
            normalization,
            device,
        } = *job;
        let progress = ctx.reporter.progress(self.max_epochs as u64, "epochs");
        tch::manual_seed(self.seed.wrapping_add(fold as u64) as i64);
        let vs = nn::VarStore::new(device);
        let model = Medic::new(&vs.root(), spec.arch.clone());
        let mut opt = nn::Adam::default()
            .build(&vs, self.learning_rate)
            .map_err(anyhow::Error::from)?;
        let weights = class_weights(
            train.iter().map(|&r| data.rows[r].class),
            data.cfg.n_classes,
        );
        let weights = Tensor::from_slice(&weights)
            .to_kind(Kind::Float)
            .to_device(device);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ BATCH_ORDER_SALT ^ fold as u64);
        let mut checkpoint =
            Checkpoint::new(ctx.artifacts.join(format!("fold_{fold}.safetensors")));
        let mut best = Figures {
            kl: f64::INFINITY,
            accuracy: 0.0,
            brier: 0.0,
            event_accuracy: None,
        };
        let mut epochs = 0;
        let mut val_rows = val.to_vec();
        val_rows.sort_by_key(|&r| data.rows[r].start);
        let draws = self.seed ^ DRAW_SALT ^ fold as u64;
        // Validation draws stay the same every epoch, so its KL compares.
        let val_batches: Vec<(Vec<usize>, u64)> = self
            .batches(&val_rows, None)
            .into_iter()
            .map(|b| (b, event_draw_seed(draws, 0)))
            .collect();
        let make =
            |(rows, seed): &(Vec<usize>, u64)| data.model_batch(rows, self.encode, *seed, device);
        for epoch in 1..=self.max_epochs {
            let started = Instant::now();
            opt.set_lr(
                self.lr_schedule
                    .rate(self.learning_rate, epoch, self.max_epochs),
            );
            let mut tally = Tally::default();
            let epoch_draws = event_draw_seed(draws, epoch as i64);
            let batches: Vec<(Vec<usize>, u64)> = self
                .epoch_batches(data, train, &mut rng)
                .into_iter()
                .map(|b| (b, epoch_draws))
                .collect();
            prefetched(&batches, self.prefetch, make, |b| {
                let out = b.forward(&model, true);
                let kl =
                    kl_per_window(b.target(), &out.log_probs) * weights.index_select(0, b.class());
                let events = (self.event_loss_weight > 0.0)
                    .then_some(out.per_event)
                    .flatten()
                    .map(|p| (p, out.event_class, self.event_loss_weight));
                opt.backward_step(&training_loss(&kl, events.as_ref()));
                let sum = kl.detach().sum(Kind::Float).double_value(&[]);
                if !sum.is_finite() {
                    return Err(StageError::data(format!(
                        "fold {fold}, epoch {epoch}: the training loss is not finite (inputs with huge values? try normalize_features: true)"
                    )));
                }
                tally.add(&b, &out.log_probs, sum);
                Ok(())
            })?;
            let mut vtally = Tally::default();
            tch::no_grad(|| {
                prefetched(&val_batches, self.prefetch, make, |b| {
                    let out = b.forward(&model, false);
                    let sum = kl_per_window(b.target(), &out.log_probs)
                        .sum(Kind::Float)
                        .double_value(&[]);
                    vtally.add(&b, &out.log_probs, sum);
                    if let Some(p) = &out.per_event {
                        vtally.add_events(p, &out.event_class);
                    }
                    Ok(())
                })
            })?;
            let (train_figures, val_figures) = (tally.mean(), vtally.mean());
            let improved = checkpoint.observe(epoch, val_figures.kl, &vs)?;
            if improved {
                best = val_figures;
            }
            epochs = epoch;
            log.push(EpochLog {
                fold,
                epoch,
                train: train_figures,
                val: val_figures,
                improved,
            });
            ctx.reporter.info(&format!(
                "fold {fold}/{} epoch {epoch}: train KL {:.4} acc {:.3} | val KL {:.4} acc {:.3} Brier {:.4}{} ({:.1} s){}",
                spec.folds,
                train_figures.kl,
                train_figures.accuracy,
                val_figures.kl,
                val_figures.accuracy,
                val_figures.brier,
                val_figures
                    .event_accuracy
                    .map_or(String::new(), |a| format!(" event acc {a:.3}")),
                started.elapsed().as_secs_f64(),
                if improved { " *" } else { "" }
            ));
            progress.inc(1);
            if checkpoint.waited >= self.patience.max(1) && epoch < self.max_epochs {
                progress.inc((self.max_epochs - epoch) as u64);
                break;
            }
        }
        let card = ModelCard {
            spec: spec.clone(),
            fold,
            normalization: normalization.clone(),
        };
        let card_path = ctx.artifacts.join(format!("fold_{fold}.json"));
        let card_json = serde_json::to_string_pretty(&card).expect("plain data serializes");
        std::fs::write(&card_path, &card_json).map_err(|e| StageError::io(card_path, e))?;
        let weights = checkpoint.bytes()?;
        Ok(FoldResult {
            best_epoch: checkpoint.best_epoch,
            epochs,
            best,
            train_windows: train.len(),
            val_windows: val.len(),
            card,
            weights,
        })
    }
}

impl Stage for MedicTrain {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let windows = batches::check_inputs(inputs)?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: models_schema(&self.spec(&windows)),
            },
            OutputSpec {
                name: "log",
                schema: log_schema(),
            },
            OutputSpec {
                name: "folds",
                schema: folds_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let device = self.device.resolve()?;
        let mut data = WindowData::load(ctx.inputs)?;
        let spec = self.spec(&data.cfg);
        if self.log_energies {
            data.store.log_energies(&data.cfg);
        }
        let normalization = if self.normalize_features {
            let stats = data.train_stats()?;
            data.store.standardize(&stats);
            Some(stats)
        } else {
            None
        };
        let rows = data.block(false);
        let k = spec.folds;
        if rows.len() < k {
            return Err(StageError::data(format!(
                "input `{}`: {} train-block windows cannot be split into {} folds",
                ctx.inputs[0].name,
                rows.len(),
                k
            )));
        }
        let fold_of = match data.cfg.split {
            Split::Blocks => contiguous_folds(&data, &rows, k, &ctx.inputs[0].name)?,
            Split::Windows => stratified_folds(&data, &rows, k, self.seed),
        };
        ctx.output
            .write("folds", folds_batch(&data, &rows, &fold_of)?)?;
        ctx.reporter.info(&format!(
            "training {k} folds on {} train-block windows (W={}) on {device:?}",
            rows.len(),
            data.cfg.window
        ));
        let _torch = crate::nn::exclusive();
        let job = Ensemble {
            data: &data,
            spec: &spec,
            normalization: &normalization,
            device,
        };
        let mut log = Vec::new();
        let mut results = Vec::new();
        for fold in 1..=k {
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (&r, &f) in rows.iter().zip(&fold_of) {
                if f + 1 == fold { &mut val } else { &mut train }.push(r);
            }
            results.push(self.train_fold(ctx, &job, fold, (&train, &val), &mut log)?);
        }

        ctx.output.write("log", log_batch(&log)?)?;
        ctx.output.write("main", models_batch(&spec, &results)?)?;
        Ok(())
    }
}

/// The `folds` table: the fold (from 1) that validates each train window.
fn folds_batch(data: &WindowData, rows: &[usize], fold_of: &[usize]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        folds_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|&r| data.rows[r].window_id),
            )),
            Arc::new(Int32Array::from_iter_values(
                fold_of.iter().map(|&f| f as i32 + 1),
            )),
        ],
    )?)
}

/// The `log` table: every fold's epochs.
fn log_batch(log: &[EpochLog]) -> Result<RecordBatch> {
    let float = |f: fn(&EpochLog) -> f64| Float64Array::from_iter_values(log.iter().map(f));
    let int =
        |f: fn(&EpochLog) -> usize| Int32Array::from_iter_values(log.iter().map(|r| f(r) as i32));
    Ok(RecordBatch::try_new(
        log_schema(),
        vec![
            Arc::new(int(|r| r.fold)),
            Arc::new(int(|r| r.epoch)),
            Arc::new(float(|r| r.train.kl)),
            Arc::new(float(|r| r.train.accuracy)),
            Arc::new(float(|r| r.train.brier)),
            Arc::new(float(|r| r.val.kl)),
            Arc::new(float(|r| r.val.accuracy)),
            Arc::new(float(|r| r.val.brier)),
            Arc::new(Float64Array::from_iter(
                log.iter().map(|r| r.val.event_accuracy),
            )),
            Arc::new(BooleanArray::from_iter(
                log.iter().map(|r| Some(r.improved)),
            )),
        ],
    )?)
}

/// The `main` table: one row per fold's model, card and weights.
fn models_batch(spec: &ModelSpec, results: &[FoldResult]) -> Result<RecordBatch> {
    let cards: Vec<String> = results
        .iter()
        .map(|r| serde_json::to_string(&r.card).expect("plain data serializes"))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(1..=results.len() as i32)),
        Arc::new(Int32Array::from_iter_values(
            results.iter().map(|r| r.best_epoch as i32),
        )),
        Arc::new(Int32Array::from_iter_values(
            results.iter().map(|r| r.epochs as i32),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.kl),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.accuracy),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.brier),
        )),
        Arc::new(Int64Array::from_iter_values(
            results.iter().map(|r| r.train_windows as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            results.iter().map(|r| r.val_windows as i64),
        )),
        Arc::new(StringArray::from(cards)),
        Arc::new(BinaryArray::from_iter_values(
            results.iter().map(|r| r.weights.as_slice()),
        )),
    ];
    Ok(RecordBatch::try_new(models_schema(spec), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use crate::medic::test_support::{model_inputs, model_inputs_with};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    use std::collections::HashMap;

    pub(crate) fn quick() -> MedicTrain {
        MedicTrain {
            max_epochs: 2,
            batch_size: 32,
            seed: 3,
            device: DeviceChoice::Cpu,
            ..Default::default()
        }
    }

    #[test]
    fn the_event_loss_is_added_by_hand() {
        let kl = Tensor::from_slice(&[0.2f32, 0.4]);
        let p = Tensor::from_slice(&[0.5f32, 0.25, 0.25, 1e-9, 0.1, 0.25, 0.6, 0.05])
            .view([2, 4])
            .log();
        let class = Tensor::from_slice(&[0i64, 1]);
        let without = training_loss(&kl, None).double_value(&[]);
        assert!((without - 0.3).abs() < 1e-6, "{without}");
        // 0.3 + 0.5 · (−ln 0.5 − ln 0.25) / 2
        let with = training_loss(&kl, Some(&(p, class, 0.5))).double_value(&[]);
        let want = 0.3 + 0.5 * (2f64.ln() + 4f64.ln()) / 2.0;
        assert!((with - want).abs() < 1e-5, "{with} vs {want}");
    }

    #[test]
    fn cosine_schedule_by_hand() {
        let r = |e| LrSchedule::Cosine.rate(1e-3, e, 10);
        assert!((r(1) - 1e-3).abs() < 1e-15);
        assert!((r(6) - 0.5e-3).abs() < 1e-12, "{}", r(6));
        assert!(r(10) > 0.0 && r(10) < 0.03e-3);
        assert_eq!(LrSchedule::Constant.rate(1e-3, 7, 10), 1e-3);
    }

    /// Encode-once training with the per-event head, log energies and the
    /// cosine schedule: seeded, and the head travels with the weights.
    #[test]
    fn encode_once_training_with_the_event_head() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = model_inputs(dir.path(), 5, 0.4, 2);
        let stage = MedicTrain {
            event_loss_weight: 1.0,
            log_energies: true,
            lr_schedule: LrSchedule::Cosine,
            contiguous_windows: 4,
            ..quick()
        };
        let models = run_in_memory(&stage, &inputs).unwrap().table("main");
        let card: ModelCard =
            serde_json::from_str(models.column(8).as_string::<i32>().value(0)).unwrap();
        assert!(card.spec.arch.event_head && card.spec.log_energies);
        let weights = models.column(9).as_binary::<i32>();
        let st = safetensors::SafeTensors::deserialize(weights.value(0)).unwrap();
        assert!(st.names().iter().any(|n| n.as_str() == "event_head.weight"));
        let again = run_in_memory(&stage, &inputs).unwrap().table("main");
        assert_eq!(again.column(9), models.column(9));
        // The per-window mode trains other weights from the same seed.
        let paper = MedicTrain {
            encode: Encode::Window,
            ..stage
        };
        let other = run_in_memory(&paper, &inputs).unwrap().table("main");
        assert_ne!(other.column(9), models.column(9));
    }

    #[test]
    fn class_weights_are_inverse_counts_summing_to_the_class_count() {
        let w = class_weights([0, 0, 0, 1].into_iter(), 3);
        // 1/3 and 1/1, scaled to sum to 3; the absent class gets 0.
        assert!((w[0] - 0.75).abs() < 1e-12 && (w[1] - 2.25).abs() < 1e-12 && w[2] == 0.0);
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn training_is_seeded_logged_and_yields_one_model_per_fold() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = model_inputs(dir.path(), 5, 0.4, 2);
        let stage = quick();
        let out = run_in_memory(&stage, &inputs).unwrap();
        let models = out.table("main");
        assert_eq!(models.num_rows(), 2);
        let log = out.table("log");
        assert_eq!(
            log.num_rows(),
            4,
            "2 folds x 2 epochs (patience not reached)"
        );
        let val_kl = log.column(5).as_primitive::<Float64Type>();
        assert!((0..4).all(|i| val_kl.value(i).is_finite() && val_kl.value(i) >= 0.0));
        let best = models.column(1).as_primitive::<Int32Type>();
        assert!((0..2).all(|i| (1..=2).contains(&best.value(i))));
        // Folds are the window table's train sub-blocks.
        let folds = out.table("folds");
        let f = folds.column(1).as_primitive::<Int32Type>();
        let fold_of_window: HashMap<i64, i32> = {
            let w = &inputs[0].read_all().unwrap()[0];
            let id = w
                .column_by_name("window_id")
                .unwrap()
                .as_primitive::<Int64Type>();
            let fold = w
                .column_by_name("fold")
                .unwrap()
                .as_primitive::<Int32Type>();
            (0..w.num_rows())
                .filter(|&i| fold.is_valid(i))
                .map(|i| (id.value(i), fold.value(i)))
                .collect()
        };
        let ids = folds.column(0).as_primitive::<Int64Type>();
        assert_eq!(folds.num_rows(), fold_of_window.len());
        assert!((0..folds.num_rows()).all(|i| fold_of_window[&ids.value(i)] == f.value(i)));
        let n1 = (0..folds.num_rows()).filter(|&i| f.value(i) == 1).count();
        assert!(n1 > 0 && n1 < folds.num_rows());
        // The card describes the windows; the weights are a safetensors file.
        let card: ModelCard =
            serde_json::from_str(models.column(8).as_string::<i32>().value(0)).unwrap();
        assert_eq!(
            (card.fold, card.spec.windows.window, card.spec.folds),
            (1, 5, 2)
        );
        let weights = models.column(9).as_binary::<i32>();
        let st = safetensors::SafeTensors::deserialize(weights.value(0)).unwrap();
        assert!(
            st.names()
                .iter()
                .any(|n| n.as_str() == "tracks.attention.q.weight")
        );
        // Same seed on the CPU: the same weights, byte for byte.
        let again = run_in_memory(&stage, &inputs).unwrap().table("main");
        assert_eq!(again.column(9), models.column(9));
        // Another seed: other weights.
        let other = run_in_memory(&MedicTrain { seed: 4, ..quick() }, &inputs)
            .unwrap()
            .table("main");
        assert_ne!(other.column(9), models.column(9));
    }

    #[test]
    fn inputs_that_are_not_windows_are_refused_at_plan_time() {
        let mut inputs = example_window_inputs();
        let stage = quick();
        stage.outputs(&inputs).unwrap();
        // A window table without its parameters (e.g. hand-made).
        let bare = Arc::new(inputs[0].as_ref().clone().with_metadata(HashMap::new()));
        let err = stage
            .outputs(&[bare, inputs[1].clone(), inputs[2].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a `sliding_windows` table"), "{err}");
        // Order and events swapped.
        inputs.swap(1, 2);
        let err = stage.outputs(&inputs).unwrap_err().to_string();
        assert!(
            err.contains("input `order` has no column `position`"),
            "{err}"
        );
        // Too few inputs: the engine's count check, before `outputs`.
        let err = crate::stage::check_input_count(MedicTrain::INPUTS, MedicTrain::INPUT_ROLES, 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("takes 3 inputs (windows, windows.order, events), got 2"),
            "{err}"
        );
    }

    #[test]
    fn too_few_windows_for_the_folds_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // The paper's split: 8 train windows cannot make 10 folds.
        let inputs = model_inputs_with(
            dir.path(),
            WindowSpec {
                window: 5,
                train_fraction: 0.008,
                split: Split::Windows,
                folds: 10,
                ..Default::default()
            },
        );
        let err = run_in_memory(&quick(), &inputs).unwrap_err().to_string();
        assert!(err.contains("cannot be split into 10 folds"), "{err}");
    }
}
