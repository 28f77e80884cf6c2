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
    LumiAeCard, by_me, histograms_schema, models_schema, read_histograms, require_histograms,
};
use crate::nn::{Checkpoint, DeviceChoice, exclusive, one_thread};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

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
            device: DeviceChoice::Auto,
        }
    }
}

impl StageConfig for LumiAeTrain {
    const KIND: &'static str = "lumi_ae_train";
    const VERSION: u32 = 1;
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

/// The training histograms of every ME, in LS order.
fn training_histograms(
    input: &crate::input::Input,
    runs: &[i64],
) -> Result<BTreeMap<String, Vec<Vec<f64>>>> {
    let histograms = read_histograms(input)?;
    let mut per_me = BTreeMap::new();
    for (me, mut rows) in by_me(&histograms, &input.name)? {
        rows.retain(|h| runs.contains(&h.key.run) && !h.key.bad);
        rows.sort_by_key(|h| (h.key.run, h.key.ls));
        if !rows.is_empty() {
            per_me.insert(
                me.to_string(),
                rows.iter().map(|h| h.counts.clone()).collect(),
            );
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
    fn train_me(&self, me: &str, rows: &[Vec<f64>], dir: &std::path::Path) -> Result<Trained> {
        let bins = rows[0].len(); // equal for every LS: checked by `by_me`
        let n_val = ((rows.len() as f64) * self.validation_fraction).round() as usize;
        if n_val == 0 || n_val >= rows.len() {
            return Err(StageError::data(format!(
                "ME `{me}`: {} good LS are too few to keep a validation part",
                rows.len()
            )));
        }
        let (train, val) = rows.split_at(rows.len() - n_val);
        let mut min = vec![f64::INFINITY; bins];
        let mut max = vec![f64::NEG_INFINITY; bins];
        for r in train {
            for (b, &v) in r.iter().enumerate() {
                min[b] = min[b].min(v);
                max[b] = max[b].max(v);
            }
        }
        let mut card = LumiAeCard {
            me: me.to_string(),
            arch: self.arch.clone(),
            bins,
            min,
            max,
            best_epoch: 0,
            val_mse: f64::INFINITY,
            train_ls: train.len(),
            val_ls: val.len(),
        };
        let device = self.device.resolve()?;
        let tensor = |rows: &[Vec<f64>]| {
            let x: Vec<f32> = rows.iter().flat_map(|r| card.scale(r)).collect();
            Tensor::from_slice(&x)
                .view([rows.len() as i64, bins as i64])
                .to_device(device)
        };
        let (x_train, x_val) = (tensor(train), tensor(val));
        tch::manual_seed(self.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = LumiAe::new(&vs.root(), bins as i64, &self.arch);
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
                let x = x_train.index_select(0, &Tensor::from_slice(chunk).to_device(device));
                let (recon, activity) = model.forward(&x);
                let mse = recon.mse_loss(&x, tch::Reduction::Mean);
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
                    .mse_loss(&x_val, tch::Reduction::Mean)
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
        let model = LumiAe::new(&vs.root(), 22, &card.arch);
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
