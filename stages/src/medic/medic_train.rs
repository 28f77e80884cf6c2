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
//!
//! With a fourth input, a trained ensemble's models table, the stage
//! distills it (ours): the per-event head learns the teacher ensemble's
//! mean per-event probabilities mixed with the events' own classes, and
//! `only_fold` trains a single student whose inference costs one model
//! instead of k.

use std::time::Instant;

use arrow::datatypes::SchemaRef;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError, bad_param};
use crate::medic::batches::{self, Encode, WindowData, prefetched};
use crate::medic::data::event_draw_seed;
use crate::medic::ensemble::{Teacher, check_teacher};
use crate::medic::folds::{contiguous_folds, stratified_folds};
use crate::medic::model::{Medic, WindowHead, kl_per_window};
use crate::medic::tables::{
    FeatureStats, ModelCard, ModelSpec, Split, WindowSpec, example_window_inputs, folds_schema,
    log_schema, models_schema,
};
use crate::medic::training::{
    EpochLog, EventTerm, Figures, FoldResult, LrSchedule, Tally, class_weights, folds_batch,
    log_batch, models_batch, training_loss,
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
/// windows were built from; optionally a teacher: the models table of an
/// ensemble trained on the same windows.
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
    /// With a teacher input: the share of the teacher's mean per-event
    /// probabilities in each event's target of the per-event loss (the
    /// rest is the event's own class); in (0, 1]. Needs
    /// `event_loss_weight` > 0. Ours (knowledge distillation at
    /// temperature 1).
    #[serde(skip_serializing_if = "is_zero")]
    pub distill_weight: f64,
    /// Train only this fold (1 to k): one model, trained on the other
    /// folds' windows and stopped early on this fold's. With a teacher,
    /// the single student that replaces the ensemble in inference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_fold: Option<usize>,
}

/// Parameters added later serialize only when set, so the cache keys of
/// pipelines written before them stay the same.
fn is_zero(x: &f64) -> bool {
    *x == 0.0
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
            distill_weight: 0.0,
            only_fold: None,
        }
    }
}

impl StageConfig for MedicTrain {
    const KIND: &'static str = "medic_train";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "MEDIC k-fold ensemble training (Adam, class-weighted KL, early stopping on validation KL): models table + per-epoch log";
    const INPUTS: (usize, usize) = (3, 4);
    const INPUT_ROLES: &'static str = "windows, windows.order, events, optional teacher models";

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
        if !(0.0..=1.0).contains(&self.distill_weight) {
            return bad_param("distill_weight", "must be in [0, 1]");
        }
        if self.distill_weight > 0.0 && self.event_loss_weight == 0.0 {
            return bad_param(
                "distill_weight",
                "distills into the per-event head: needs event_loss_weight > 0",
            );
        }
        if self.only_fold == Some(0) {
            return bad_param("only_fold", "folds are numbered from 1");
        }
        Ok(())
    }
}

/// What every fold of one training run shares.
#[derive(Clone, Copy)]
struct Ensemble<'a> {
    data: &'a WindowData,
    spec: &'a ModelSpec,
    normalization: &'a Option<FeatureStats>,
    device: Device,
    teacher: Option<&'a Teacher>,
}

impl MedicTrain {
    fn spec(&self, windows: &WindowSpec) -> ModelSpec {
        let mut spec = ModelSpec::new(
            windows.clone(),
            self.mask_padding,
            self.normalize_features,
            // A single fold is one model, not an ensemble.
            if self.only_fold.is_some() {
                1
            } else {
                windows.folds
            },
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
            teacher,
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
                    .map(|log_probs| EventTerm {
                        log_probs,
                        class: out.event_class,
                        weight: self.event_loss_weight,
                        teacher: teacher.map(|t| (t.event_probs(&b), self.distill_weight)),
                    });
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
                spec.windows.folds,
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
        if let Some(fold) = self.only_fold.filter(|&f| f > windows.folds) {
            return bad_param(
                "only_fold",
                format!("fold {fold}, but the windows have {} folds", windows.folds),
            );
        }
        match (inputs.get(3), self.distill_weight > 0.0) {
            (Some(teacher), true) => check_teacher(
                &ModelSpec::from_schema(teacher, "teacher")?,
                &windows,
                (self.normalize_features, self.log_energies),
            )?,
            (Some(_), false) => {
                return bad_param(
                    "distill_weight",
                    "a teacher input needs distill_weight > 0 (the share of its probabilities in the per-event targets)",
                );
            }
            (None, true) => {
                return bad_param(
                    "distill_weight",
                    "distills a teacher: add the teacher's models table as the fourth input",
                );
            }
            (None, false) => {}
        }
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
        // Building a network draws from libtorch's global generator: the
        // teacher is loaded under the lock that keeps seeded training runs
        // of other stages reproducible.
        let _torch = crate::nn::exclusive();
        let teacher = match ctx.inputs.get(3) {
            Some(input) => Some(Teacher::load(input, &data.cfg, device)?),
            None => None,
        };
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
        if let Some(t) = &teacher
            && t.standardization() != (normalization.as_ref(), self.log_energies)
        {
            return Err(StageError::data(format!(
                "input `{}`: the teacher standardizes its inputs differently from this training (other train-block events, or other `normalize_features` / `log_energies`)",
                ctx.inputs[3].name
            )));
        }
        let rows = data.block(false);
        let k = data.cfg.folds;
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
        let trained: Vec<usize> = (1..=k)
            .filter(|&f| self.only_fold.is_none_or(|only| only == f))
            .collect();
        ctx.reporter.info(&format!(
            "training {} of {k} folds on {} train-block windows (W={}) on {device:?}{}",
            trained.len(),
            rows.len(),
            data.cfg.window,
            if teacher.is_some() {
                ", distilling the teacher"
            } else {
                ""
            }
        ));
        let job = Ensemble {
            data: &data,
            spec: &spec,
            normalization: &normalization,
            device,
            teacher: teacher.as_ref(),
        };
        let mut log = Vec::new();
        let mut results = Vec::new();
        for fold in trained {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use crate::medic::tables::example_window_inputs;
    use crate::medic::test_support::{model_inputs, model_inputs_with};
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    use std::collections::HashMap;
    use std::sync::Arc;

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

    /// Mean KL(teacher ‖ student) of the per-event probabilities on every
    /// event of the train block (the teacher's standardization, one draw).
    fn disagreement(inputs: &[Input], teacher: &Input, student: &RecordBatch) -> f64 {
        let dir = tempfile::tempdir().unwrap();
        let student = input_from_batch("student", student, &dir.path().join("s.parquet")).unwrap();
        let _torch = crate::nn::exclusive();
        let mut data = WindowData::load(&inputs[..3]).unwrap();
        let teacher = Teacher::load(teacher, &data.cfg, Device::Cpu).unwrap();
        let student = Teacher::load(&student, &data.cfg, Device::Cpu).unwrap();
        let (stats, log) = teacher.standardization();
        if log {
            data.store.log_energies(&data.cfg);
        }
        data.store.standardize(stats.unwrap());
        let batch = data
            .model_batch(&data.block(false), Encode::Event, 99, Device::Cpu)
            .unwrap();
        let t = teacher.event_probs(&batch);
        let s = student.event_probs(&batch);
        (&t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log()))
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    }

    /// A narrow student of one fold, distilled from a trained ensemble,
    /// follows the ensemble's per-event probabilities more closely than the
    /// same student trained on the events' own classes (here 0.068 against
    /// 0.093 in KL; the window term pulls both towards the labels).
    #[test]
    fn a_single_student_learns_the_teachers_event_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = model_inputs(dir.path(), 5, 0.4, 2);
        let teacher_stage = MedicTrain {
            event_loss_weight: 1.0,
            window_head: WindowHead::EventMean,
            log_energies: true,
            contiguous_windows: 4,
            // A teacher one epoch in: its probabilities are far from the
            // events' own classes, so the two students can tell.
            max_epochs: 1,
            ..quick()
        };
        let teacher = run_in_memory(&teacher_stage, &inputs)
            .unwrap()
            .table("main");
        let teacher = input_from_batch("teacher", &teacher, &dir.path().join("t.parquet")).unwrap();
        let plain = MedicTrain {
            embed: 16,
            feed_forward: 16,
            only_fold: Some(2),
            seed: 5,
            max_epochs: 12,
            patience: 12,
            ..teacher_stage.clone()
        };
        let distilled = MedicTrain {
            distill_weight: 1.0,
            ..plain.clone()
        };
        let plain = run_in_memory(&plain, &inputs).unwrap().table("main");
        inputs.push(teacher.clone());
        let out = run_in_memory(&distilled, &inputs).unwrap();
        let models = out.table("main");
        assert_eq!(models.num_rows(), 1, "one student");
        assert_eq!(models.column(0).as_primitive::<Int32Type>().value(0), 2);
        let card: ModelCard =
            serde_json::from_str(models.column(8).as_string::<i32>().value(0)).unwrap();
        assert_eq!(
            (card.fold, card.spec.folds, card.spec.arch.embed),
            (2, 1, 16)
        );
        let log = out.table("log");
        let folds = log.column(0).as_primitive::<Int32Type>();
        assert!(log.num_rows() > 0 && folds.iter().all(|f| f == Some(2)));
        let (with, without) = (
            disagreement(&inputs, &teacher, &models),
            disagreement(&inputs, &teacher, &plain),
        );
        assert!(
            with < 0.9 * without,
            "KL(teacher ‖ student): distilled {with}, trained on the classes {without}"
        );
    }

    /// `plan` refuses a teacher that cannot teach this student, naming why.
    #[test]
    fn plan_refuses_a_teacher_that_cannot_teach() {
        let inputs = example_window_inputs();
        let windows = WindowSpec::default();
        let mut good = ModelSpec::new(windows.clone(), false, true, 5);
        good.arch.event_head = true;
        let with_teacher = |spec: &ModelSpec| {
            let mut v = inputs.clone();
            v.push(models_schema(spec));
            v
        };
        let student = MedicTrain {
            event_loss_weight: 1.0,
            distill_weight: 0.5,
            embed: 32,
            only_fold: Some(1),
            ..Default::default()
        };
        let refused = |stage: &MedicTrain, inputs: &[SchemaRef]| {
            stage.outputs(inputs).unwrap_err().to_string()
        };
        let models = &student.outputs(&with_teacher(&good)).unwrap()[0].schema;
        assert_eq!(ModelSpec::from_schema(models, "m").unwrap().folds, 1);

        let other_windows = ModelSpec::new(
            WindowSpec {
                seed: windows.seed + 1,
                ..windows.clone()
            },
            false,
            true,
            5,
        );
        let mut other_windows = other_windows;
        other_windows.arch.event_head = true;
        let e = refused(&student, &with_teacher(&other_windows));
        assert!(e.contains("`seed`") && e.contains("test block"), "{e}");
        let headless = ModelSpec::new(windows.clone(), false, true, 5);
        let e = refused(&student, &with_teacher(&headless));
        assert!(e.contains("per-event head"), "{e}");
        let mut logged = good.clone();
        logged.log_energies = true;
        let e = refused(&student, &with_teacher(&logged));
        assert!(e.contains("log_energies = true"), "{e}");
        let e = refused(&student, &inputs);
        assert!(
            e.contains("distill_weight") && e.contains("fourth input"),
            "{e}"
        );
        let undistilled = MedicTrain {
            distill_weight: 0.0,
            ..student.clone()
        };
        let e = refused(&undistilled, &with_teacher(&good));
        assert!(e.contains("distill_weight"), "{e}");
        let beyond = MedicTrain {
            only_fold: Some(6),
            ..student.clone()
        };
        let e = refused(&beyond, &with_teacher(&good));
        assert!(e.contains("only_fold") && e.contains("5 folds"), "{e}");
        // Without a per-event loss there is nothing to distill into.
        let e = MedicTrain {
            event_loss_weight: 0.0,
            ..student
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("event_loss_weight"), "{e}");
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
            err.contains(
                "takes 3 to 4 inputs (windows, windows.order, events, optional teacher models), got 2"
            ),
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
