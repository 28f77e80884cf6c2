//! `lumi_ae_train`: the poster's dense under-complete autoencoder, one per
//! monitored element, trained on the per-LS histograms of good runs. The
//! defaults are the poster authors' public code (lumisaver,
//! `utils/training.py`): inputs min-max scaled per bin; Dense(115, ReLU,
//! L2 activity regularizer 1e-7) → Dense(167, sigmoid) → Dense(115, sigmoid)
//! → Dense(n_bins, sigmoid); Adam, MSE, batch 46, 500 epochs. Ours: early
//! stopping on the last `validation_fraction` of the training LS.
//!
//! Output `main`: one row per ME (card JSON + safetensors weights); `log`:
//! per ME and epoch, training and validation MSE.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::error::{Result, StageError, bad_param, within};
use crate::lumi::model::{LumiAe, LumiAeArch};
use crate::lumi::tables::{
    LumiAeCard, bin_ranges, by_me, histograms_schema, min_max_scaled, models_schema,
    read_histograms, require_histograms,
};
use crate::nn::{Checkpoint, DeviceChoice, exclusive, one_thread};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

/// How histograms are min-max scaled, per bin, into the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// With the training LS's min and max, for every run scored (ours: a
    /// run unlike the training ones stays unlike them).
    #[default]
    Training,
    /// lumisaver (`utils/preprocessing.py`): every run on its own LS, the
    /// training runs and each scored run alike.
    PerRun,
}

/// Trains one autoencoder per ME on the LS of good runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiAeTrain {
    /// Runs to train on (their bad LS, if any, are left out).
    pub train_runs: Vec<i64>,
    /// Layer sizes.
    pub arch: LumiAeArch,
    /// Epochs at most (lumisaver: 500).
    pub epochs: usize,
    /// Stop after this many epochs without a better validation MSE.
    pub patience: usize,
    /// Batch size (lumisaver: 46).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Fraction of the training LS, at the end, used for validation.
    pub validation_fraction: f64,
    /// Seed of initialization and batch order.
    pub seed: u64,
    /// Give the network the LS's pile-up as one more input (a conditional
    /// autoencoder: the shape expected at that pile-up). Ours, beyond the
    /// poster.
    pub condition_on_pileup: bool,
    /// How histograms are scaled into the network.
    pub scaling: Scaling,
    /// Where to train: auto, cpu or cuda.
    pub device: DeviceChoice,
}

impl Default for LumiAeTrain {
    fn default() -> Self {
        Self {
            train_runs: vec![1],
            arch: LumiAeArch::default(),
            epochs: 500,
            patience: 20,
            batch_size: 46,
            learning_rate: 1e-3,
            validation_fraction: 0.2,
            seed: 1,
            condition_on_pileup: false,
            scaling: Scaling::Training,
            device: DeviceChoice::Auto,
        }
    }
}

impl StageConfig for LumiAeTrain {
    const KIND: &'static str = "lumi_ae_train";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Per-LS histograms of good runs -> one dense autoencoder per monitored element (lumisaver's layers), early stopping";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "histograms";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.train_runs.is_empty() {
            return bad_param("train_runs", "name at least one good run");
        }
        if self.epochs == 0 || self.batch_size == 0 || self.patience == 0 {
            return bad_param("epochs", "epochs, batch_size and patience must be ≥ 1");
        }
        if !(self.learning_rate > 0.0) {
            return bad_param("learning_rate", "must be > 0");
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad_param("validation_fraction", "must be in (0, 1)");
        }
        within("arch", self.arch.validate())
    }
}

fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("me", DataType::Utf8, "Monitored element"),
        column("epoch", DataType::Int64, "Epoch, from 1"),
        column(
            "train_mse",
            DataType::Float64,
            "Mean training MSE of the epoch",
        ),
        column("val_mse", DataType::Float64, "Validation MSE"),
        column("improved", DataType::Boolean, "Best validation MSE so far"),
    ]))
}

/// One training LS of one ME.
struct TrainingLs {
    run: i64,
    counts: Vec<f64>,
    pileup: f64,
}

/// The training histograms of every ME, in run and LS order.
fn training_histograms(
    input: &crate::input::Input,
    runs: &[i64],
) -> Result<BTreeMap<String, Vec<TrainingLs>>> {
    let histograms = read_histograms(input)?;
    let mut per_me = BTreeMap::new();
    for (me, mut rows) in by_me(&histograms, &input.name)? {
        rows.retain(|h| runs.contains(&h.key.run) && !h.key.bad);
        rows.sort_by_key(|h| (h.key.run, h.key.ls));
        if !rows.is_empty() {
            let rows = rows.iter().map(|h| TrainingLs {
                run: h.key.run,
                counts: h.counts.clone(),
                pileup: h.key.pileup,
            });
            per_me.insert(me.to_string(), rows.collect());
        }
    }
    if per_me.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no good LS in runs {runs:?}",
            input.name
        )));
    }
    Ok(per_me)
}

/// One epoch: (epoch, training MSE, validation MSE, improved).
type EpochLog = (usize, f64, f64, bool);

struct Trained {
    card: LumiAeCard,
    weights: Vec<u8>,
    log: Vec<EpochLog>,
}

impl LumiAeTrain {
    fn train_me(&self, me: &str, rows: &[TrainingLs], dir: &std::path::Path) -> Result<Trained> {
        let bins = rows[0].counts.len(); // equal for every LS: checked by `by_me`
        // Validation: the last `validation_fraction` of each training run.
        let mut is_val = vec![false; rows.len()];
        let mut start = 0;
        for run in rows.chunk_by(|a, b| a.run == b.run) {
            let n_val = ((run.len() as f64) * self.validation_fraction).round() as usize;
            if n_val == 0 || n_val >= run.len() {
                return Err(StageError::data(format!(
                    "ME `{me}`: run {} has {} good LS, too few to keep a validation part",
                    run[0].run,
                    run.len()
                )));
            }
            is_val[start + run.len() - n_val..start + run.len()].fill(true);
            start += run.len();
        }
        let (mut train, mut val): (Vec<&TrainingLs>, Vec<&TrainingLs>) = (Vec::new(), Vec::new());
        for (r, v) in rows.iter().zip(&is_val) {
            if *v { val.push(r) } else { train.push(r) }
        }
        let (min, max) = bin_ranges(train.iter().map(|r| r.counts.as_slice()));
        let pileup_scale = if self.condition_on_pileup {
            let top = train.iter().map(|r| r.pileup).fold(0.0, f64::max);
            if !(top > 0.0 && top.is_finite()) {
                return Err(StageError::data(format!(
                    "ME `{me}`: `condition_on_pileup` needs the training LS's pile-up (column `pileup` > 0), found none"
                )));
            }
            Some(top)
        } else {
            None
        };
        let card = LumiAeCard {
            me: me.to_string(),
            arch: self.arch.clone(),
            bins,
            min,
            max,
            best_epoch: 0,
            val_mse: f64::INFINITY,
            train_ls: train.len(),
            val_ls: val.len(),
            pileup_scale,
            per_run_scaling: self.scaling == Scaling::PerRun,
        };
        // Scaled histograms: with the training ranges, or each run on its own.
        let mut scaled: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
        for run in rows.chunk_by(|a, b| a.run == b.run) {
            let (lo, hi) = match self.scaling {
                Scaling::Training => (card.min.clone(), card.max.clone()),
                Scaling::PerRun => bin_ranges(run.iter().map(|r| r.counts.as_slice())),
            };
            scaled.extend(run.iter().map(|r| min_max_scaled(&r.counts, &lo, &hi)));
        }
        let device = self.device.resolve()?;
        let width = bins as i64 + card.conditions();
        // (inputs, targets) of the LS whose `is_val` is `want`.
        let tensors = |want: bool| {
            let picked: Vec<usize> = (0..rows.len()).filter(|&i| is_val[i] == want).collect();
            let x: Vec<f32> = picked
                .iter()
                .flat_map(|&i| card.inputs(scaled[i].clone(), rows[i].pileup))
                .collect();
            let y: Vec<f32> = picked.iter().flat_map(|&i| scaled[i].clone()).collect();
            let n = picked.len() as i64;
            (
                Tensor::from_slice(&x).view([n, width]).to_device(device),
                Tensor::from_slice(&y)
                    .view([n, bins as i64])
                    .to_device(device),
            )
        };
        let ((x_train, y_train), (x_val, y_val)) = (tensors(false), tensors(true));
        let mut card = card;
        tch::manual_seed(self.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = LumiAe::new(&vs.root(), bins as i64, card.conditions(), &self.arch);
        let mut opt = nn::Adam::default()
            .build(&vs, self.learning_rate)
            .map_err(anyhow::Error::from)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut order: Vec<i64> = (0..train.len() as i64).collect();
        let mut best = Checkpoint::new(dir.join(format!("{me}.safetensors")));
        let mut log = Vec::new();
        for epoch in 1..=self.epochs {
            order.shuffle(&mut rng);
            let mut sum = 0.0;
            for chunk in order.chunks(self.batch_size) {
                let index = Tensor::from_slice(chunk).to_device(device);
                let x = x_train.index_select(0, &index);
                let y = y_train.index_select(0, &index);
                let (recon, activity) = model.forward(&x);
                let mse = recon.mse_loss(&y, tch::Reduction::Mean);
                let loss = &mse
                    + activity.square().sum(Kind::Float)
                        * (self.arch.activity_l2 / chunk.len() as f64);
                opt.backward_step(&loss);
                sum += mse.double_value(&[]) * chunk.len() as f64;
            }
            let val_mse = tch::no_grad(|| {
                model
                    .forward(&x_val)
                    .0
                    .mse_loss(&y_val, tch::Reduction::Mean)
            })
            .double_value(&[]);
            let improved = best.observe(epoch, val_mse, &vs)?;
            log.push((epoch, sum / train.len() as f64, val_mse, improved));
            if best.waited >= self.patience {
                break;
            }
        }
        (card.val_mse, card.best_epoch) = (best.best, best.best_epoch);
        let weights = best.bytes()?;
        Ok(Trained { card, weights, log })
    }
}

impl Stage for LumiAeTrain {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_histograms(&inputs[0], "histograms")?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: models_schema(),
            },
            OutputSpec {
                name: "log",
                schema: log_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let per_me = training_histograms(&ctx.inputs[0], &self.train_runs)?;
        let _torch = exclusive();
        let _threads = one_thread();
        let mut trained = Vec::new();
        for (me, rows) in &per_me {
            let t = self.train_me(me, rows, ctx.artifacts)?;
            ctx.reporter.info(&format!(
                "{me}: {} training LS, best epoch {} of {}, validation MSE {:.3e}",
                t.card.train_ls,
                t.card.best_epoch,
                t.log.len(),
                t.card.val_mse
            ));
            trained.push(t);
        }
        let cards: Vec<String> = trained
            .iter()
            .map(|t| serde_json::to_string(&t.card).expect("plain data serializes"))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                trained.iter().map(|t| t.card.me.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                trained.iter().map(|t| t.card.best_epoch as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                trained.iter().map(|t| t.card.val_mse),
            )),
            Arc::new(StringArray::from_iter_values(
                cards.iter().map(String::as_str),
            )),
            Arc::new(BinaryArray::from_iter_values(
                trained.iter().map(|t| t.weights.as_slice()),
            )),
        ];
        ctx.output
            .write("main", RecordBatch::try_new(models_schema(), columns)?)?;
        let rows: Vec<(&str, &EpochLog)> = trained
            .iter()
            .flat_map(|t| t.log.iter().map(move |l| (t.card.me.as_str(), l)))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.1.0 as i64),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1.2))),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.1.3).collect::<Vec<_>>(),
            )),
        ];
        ctx.output
            .write("log", RecordBatch::try_new(log_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use arrow::array::AsArray;

    #[test]
    fn learns_the_good_shapes_and_not_the_shifted_ones_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        let input = crate::lumi::test_support::lumi_shapes(dir.path(), &["a", "b"], 22);
        let stage = crate::lumi::test_support::small_lumi_ae(150);
        let out = run_in_memory(&stage, std::slice::from_ref(&input)).unwrap();
        let models = out.table("main");
        assert_eq!(models.num_rows(), 2, "one model per ME");
        let card: LumiAeCard =
            serde_json::from_str(models.column(3).as_string::<i32>().value(0)).unwrap();
        assert_eq!(
            (card.me.as_str(), card.bins, card.train_ls, card.val_ls),
            ("a", 22, 96, 24)
        );
        // The kept model reconstructs unseen good LS far better than shifted ones.
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let model = LumiAe::new(&vs.root(), 22, 0, &card.arch);
        crate::nn::load_weights(&vs, models.column(4).as_binary::<i32>().value(0), "test").unwrap();
        let mse = |centre: f64| {
            let h: Vec<f64> = (0..22)
                .map(|b| (-(b as f64 - centre).powi(2) / 8.0).exp())
                .collect();
            let total: f64 = h.iter().sum();
            let x =
                Tensor::from_slice(&card.scale(&h.iter().map(|v| v / total).collect::<Vec<_>>()))
                    .view([1, 22]);
            tch::no_grad(|| model.forward(&x).0.mse_loss(&x, tch::Reduction::Mean))
                .double_value(&[])
        };
        let (good, shifted) = (mse(8.2), mse(13.0));
        assert!(
            shifted > 10.0 * good,
            "good {good:.2e}, shifted {shifted:.2e}"
        );
        // Same seed, same weights.
        let again = run_in_memory(&stage, &[input]).unwrap().table("main");
        assert_eq!(
            again.column(4).as_binary::<i32>().value(0),
            models.column(4).as_binary::<i32>().value(0)
        );
    }
}
