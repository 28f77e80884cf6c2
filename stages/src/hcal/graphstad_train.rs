//! `graphstad_train`: trains the GraphSTAD autoencoder on healthy,
//! renormalized LS maps (paper sec. 4.2), optionally transferring blocks of
//! a source model trained on another subdetector (sec. 4.3, Table 2).
//!
//! The maps, in input order, are cut into a training part and a validation
//! part (the last `validation_fraction`, paper: 20 %). The training part is
//! cut into `streams` contiguous sequences run side by side; each epoch walks
//! them window by window (T LS) with the LSTM states carried from one window
//! to the next and cut from the graph between them (the paper: +50 % MSE
//! without state preservation). The loss is Eq. 8: MSE + λ·KL + ρ·‖W‖²; the
//! parameters of the epoch with the lowest validation MSE are kept. σ_i of
//! Eq. 6 is then measured on the training maps, for the model and for the
//! reference-map rule it is compared with.
//!
//! Outputs: `main` (one row: card JSON + safetensors weights) and `log` (per
//! epoch: train and validation MSE, learning rate, time); artifacts
//! `model.safetensors`, `model.json` and `mse.png`.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, OptimizerConfig};

use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::model::{Block, GraphStad, GraphStadArch, loss};
use crate::hcal::scoring::{FillErrors, Scaling, calibrate, fill_errors, fills, norm};
use crate::hcal::tables::{
    GraphStadCard, MapRow, ModelSpec, check_maps, check_renormalized, example_maps_schema,
    models_schema, read_all_rows, read_model, renormalized_fields, with_fields,
};
use crate::input::Input;
use crate::nn::{Checkpoint, DeviceChoice, exclusive, load_weights_where};
use crate::plots::{Series, lines};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

/// Transfer learning from a source model (the stage's second input).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Transfer {
    /// Blocks initialized from the source and fine-tuned here (T_init).
    pub init: Vec<Block>,
    /// Blocks copied from the source and frozen (T_train): not trained, their
    /// batch-norm statistics kept.
    pub freeze: Vec<Block>,
}

/// Trains the autoencoder on one subdetector's healthy maps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphstadTrain {
    /// Layer sizes.
    pub arch: GraphStadArch,
    /// LS per time window (T; the paper: 5).
    pub window: usize,
    /// Sequences trained side by side (the batch).
    pub streams: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Adam learning rate (the paper: 1e-3).
    pub learning_rate: f64,
    /// Weight of the KL term (λ, the paper: 0.003).
    pub kl_weight: f64,
    /// Weight of the L2 term (ρ, the paper: 1e-7).
    pub l2_weight: f64,
    /// Halve-on-plateau: multiply the learning rate by `plateau_factor`
    /// after this many epochs without a better validation MSE; null: a
    /// constant rate.
    pub plateau_patience: Option<usize>,
    /// Factor of a plateau reduction.
    pub plateau_factor: f64,
    /// Carry the LSTM states across consecutive windows (training and the
    /// model card's scoring).
    pub carry_state: bool,
    /// Fraction of the maps, at the end, used for validation.
    pub validation_fraction: f64,
    /// The decision threshold α stored with the model: this quantile of the
    /// channel scores a_i on the validation maps (healthy, never trained on).
    pub alpha_quantile: f64,
    /// Blocks to take from the source model (second input); null: none.
    pub transfer: Option<Transfer>,
    /// Seed of the initialization and of the latent draws.
    pub seed: u64,
    /// Where to train: auto (CUDA if available), cpu or cuda.
    pub device: DeviceChoice,
}

impl Default for GraphstadTrain {
    fn default() -> Self {
        Self {
            arch: GraphStadArch::default(),
            window: 5,
            streams: 8,
            epochs: 30,
            learning_rate: 1e-3,
            kl_weight: 0.003,
            l2_weight: 1e-7,
            plateau_patience: None,
            plateau_factor: 0.5,
            carry_state: true,
            validation_fraction: 0.2,
            alpha_quantile: 0.999,
            transfer: None,
            seed: 1,
            device: DeviceChoice::Auto,
        }
    }
}

impl StageConfig for GraphstadTrain {
    const KIND: &'static str = "graphstad_train";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "Renormalized healthy LS maps -> GraphSTAD autoencoder (CNN + RBX-graph GCN + LSTM, variational), optional transfer of blocks from a source model";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str = "renormalized healthy maps, optional source model";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![with_fields(&example_maps_schema(), renormalized_fields())]
    }

    fn validate(&self) -> Result<()> {
        if self.window == 0 || self.streams == 0 || self.epochs == 0 {
            return bad_param("window", "window, streams and epochs must be ≥ 1");
        }
        if !(self.learning_rate > 0.0) {
            return bad_param("learning_rate", "must be > 0");
        }
        if !(self.kl_weight >= 0.0) || !(self.l2_weight >= 0.0) {
            return bad_param("kl_weight", "kl_weight and l2_weight must be ≥ 0");
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            return bad_param("plateau_factor", "must be in (0, 1)");
        }
        if !(self.alpha_quantile > 0.0 && self.alpha_quantile < 1.0) {
            return bad_param("alpha_quantile", "must be in (0, 1)");
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad_param("validation_fraction", "must be in (0, 1)");
        }
        let a = &self.arch;
        if a.conv_channels
            .iter()
            .chain([&a.gcn_features, &a.embed, &a.lstm_hidden, &a.latent])
            .any(|&v| v < 1)
        {
            return bad_param("arch", "every layer size must be ≥ 1");
        }
        if let Some(t) = &self.transfer {
            if t.init.is_empty() && t.freeze.is_empty() {
                return bad_param("transfer", "name blocks under `init` and/or `freeze`");
            }
            if let Some(b) = t.init.iter().find(|b| t.freeze.contains(b)) {
                return bad_param(
                    "transfer",
                    format!("{b:?} is both in `init` (fine-tuned) and `freeze`"),
                );
            }
        }
        Ok(())
    }
}

/// Salt of the training draws, so they differ from the initialization's.
const DRAW_SALT: u64 = 0x0047_5354_4144;

fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("epoch", DataType::Int64, "Epoch, from 1"),
        column(
            "train_mse",
            DataType::Float64,
            "Mean training MSE over the epoch's windows (model input scale)",
        ),
        column(
            "train_loss",
            DataType::Float64,
            "Mean training loss MSE + λ·KL + ρ·‖W‖²",
        ),
        column(
            "val_mse",
            DataType::Float64,
            "Validation MSE, states carried over the validation sequence",
        ),
        column(
            "learning_rate",
            DataType::Float64,
            "Learning rate used in the epoch",
        ),
        column(
            "improved",
            DataType::Boolean,
            "Best validation MSE so far (these parameters are kept)",
        ),
    ]))
}

struct EpochLog {
    epoch: usize,
    train_mse: f64,
    train_loss: f64,
    val_mse: f64,
    learning_rate: f64,
    improved: bool,
}

impl GraphstadTrain {
    fn spec(&self, geometry: MapGeometry) -> ModelSpec {
        ModelSpec {
            arch: self.arch.clone(),
            geometry,
            window: self.window,
        }
    }

    fn transferred(&self) -> (Vec<Block>, Vec<Block>) {
        self.transfer
            .as_ref()
            .map(|t| (t.init.clone(), t.freeze.clone()))
            .unwrap_or_default()
    }

    /// Checks the source model against this architecture, block by block.
    fn check_source(&self, source: &ModelSpec) -> Result<()> {
        let (a, b) = (&self.arch, &source.arch);
        let (init, freeze) = self.transferred();
        for block in init.iter().chain(&freeze) {
            let same = match block {
                Block::EncoderCnn | Block::DecoderCnn => a.conv_channels == b.conv_channels,
                Block::EncoderGcn => a.gcn_features == b.gcn_features,
                // The shared layout's recurrent blocks also hold the
                // embedding, the latent and the grid: every size counts.
                _ if a.shared_grid.is_some() || b.shared_grid.is_some() => a == b,
                Block::EncoderRnn => a.embed == b.embed && a.lstm_hidden == b.lstm_hidden,
                Block::DecoderRnn => a.latent == b.latent && a.lstm_hidden == b.lstm_hidden,
            };
            if !same {
                return Err(StageError::data(format!(
                    "input `source`: the source model is of another architecture for block {block:?} (source {b:?}, target {a:?})"
                )));
            }
        }
        Ok(())
    }
}

/// The training sequences: `streams` contiguous chunks of `rows`, each cut
/// to a multiple of `window` maps, as one (streams, L, M) tensor.
fn stream_tensor(
    rows: &[&MapRow],
    scaling: &Scaling,
    streams: usize,
    window: usize,
) -> Result<Tensor> {
    let chunk = rows.len() / streams;
    let len = chunk / window * window;
    if len == 0 {
        return Err(StageError::data(format!(
            "{} training maps cannot fill {streams} streams of one {window}-LS window: give more maps or fewer `streams`",
            rows.len()
        )));
    }
    let m = rows[0].occupancy.len() as i64;
    let x: Vec<f32> = (0..streams)
        .flat_map(|s| rows[s * chunk..s * chunk + len].iter())
        .flat_map(|r| scaling.scale(norm(r)))
        .collect();
    Ok(Tensor::from_slice(&x).view([streams as i64, len as i64, m]))
}

impl Stage for GraphstadTrain {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let geometry = check_maps(&inputs[0], "maps")?;
        check_renormalized(&inputs[0], "maps")?;
        match (inputs.len(), &self.transfer) {
            (1, None) => {}
            (2, Some(_)) => self.check_source(&ModelSpec::from_schema(&inputs[1], "source")?)?,
            (1, Some(_)) => {
                return Err(StageError::data(
                    "`transfer` needs the source model as second input (inputs: [maps, source])",
                ));
            }
            _ => {
                return Err(StageError::data(
                    "a second input (a source model) is only read with a `transfer` block",
                ));
            }
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: models_schema(&self.spec(geometry)),
            },
            OutputSpec {
                name: "log",
                schema: log_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let geometry = check_maps(&input.schema, &input.name)?;
        check_renormalized(&input.schema, &input.name)?;
        let rows = self.healthy_maps(input, &geometry)?;
        let n_val = ((rows.len() as f64) * self.validation_fraction).round() as usize;
        let (train_rows, val_rows) = rows.split_at(rows.len() - n_val);
        let train_refs: Vec<&MapRow> = train_rows.iter().collect();
        let scaling = Scaling::fit(&train_refs);
        let device = self.device.resolve()?;
        let _torch = exclusive();
        let mut net = self.network(ctx, geometry, device)?;
        let val_fills = fills(val_rows);
        let (best, log) = self.train(ctx, &net, &train_refs, &scaling, &val_fills, device)?;
        best.restore(&mut net.vs)?;
        let cal = calibrate(
            &net.model,
            &scaling,
            (train_rows, &val_fills),
            (self.window, self.carry_state),
            self.alpha_quantile,
            device,
        )?;
        let card = GraphStadCard {
            spec: self.spec(geometry),
            carry_state: self.carry_state,
            min: scaling.min.clone(),
            max: scaling.max.clone(),
            sigma: cal.sigma,
            reference: cal.reference,
            sigma_reference: cal.sigma_reference,
            alpha: cal.alpha,
            reference_alpha: cal.reference_alpha,
            lumi_intercept: cal.lumi.intercept,
            lumi_slope: cal.lumi.slope,
            alphas: cal.alphas,
            trainable_params: net.trainable_params,
            total_params: net.total_params,
            init_blocks: net.init,
            frozen_blocks: net.freeze,
            best_epoch: best.best_epoch,
            val_mse: best.best,
            val_curve: log.iter().map(|e| e.val_mse).collect(),
            train_maps: train_rows.len(),
            val_maps: val_rows.len(),
        };
        ctx.reporter.info(&format!(
            "best epoch {}: val MSE {:.3e}; {} of {} parameters trained; α = {:.2} (reference rule {:.2}) at the {} quantile of validation a_i",
            card.best_epoch,
            card.val_mse,
            card.trainable_params,
            card.total_params,
            card.alpha,
            card.reference_alpha,
            self.alpha_quantile
        ));
        self.write(ctx, &card, best.bytes()?, &log)
    }
}

/// The network being trained, with what transfer learning set on it.
struct Network {
    vs: nn::VarStore,
    model: GraphStad,
    /// Blocks initialized from the source, and frozen at it.
    init: Vec<Block>,
    freeze: Vec<Block>,
    /// The parameters the optimizer updates (frozen blocks excluded).
    trainable: Vec<Tensor>,
    trainable_params: i64,
    total_params: i64,
}

impl GraphstadTrain {
    /// The input's maps, all healthy, enough for a window in both the
    /// training and the validation part.
    fn healthy_maps(&self, input: &Input, geometry: &MapGeometry) -> Result<Vec<MapRow>> {
        let rows = read_all_rows(input, geometry)?;
        if rows
            .iter()
            .any(|r| r.case.as_deref().is_some_and(|c| c != "none"))
        {
            return Err(StageError::data(format!(
                "input `{}` holds injected anomalies (`case` column): train on healthy maps",
                input.name
            )));
        }
        let n_val = ((rows.len() as f64) * self.validation_fraction).round() as usize;
        if n_val < self.window || rows.len() - n_val < self.window {
            return Err(StageError::data(format!(
                "input `{}`: {} maps are too few for a {}-LS window in both the training and the validation part",
                input.name,
                rows.len(),
                self.window
            )));
        }
        Ok(rows)
    }

    /// The network, initialized from `seed`, with the transferred blocks
    /// copied from the source model (second input) and the frozen ones
    /// taken out of training.
    fn network(
        &self,
        ctx: &RunContext<'_>,
        geometry: MapGeometry,
        device: tch::Device,
    ) -> Result<Network> {
        tch::manual_seed(self.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = GraphStad::new(&vs.root(), self.arch.clone(), geometry);
        let (init, freeze) = self.transferred();
        if let Some(source) = ctx.inputs.get(1) {
            let (source_card, weights) = read_model(source)?;
            self.check_source(&source_card.spec)?;
            let blocks: Vec<Block> = init.iter().chain(&freeze).copied().collect();
            let copied = load_weights_where(&vs, &weights, "input `source`", |name| {
                Block::of(name).is_some_and(|b| blocks.contains(&b))
            })?;
            ctx.reporter.info(&format!(
                "transfer from a {} model: {copied} tensors of {blocks:?}, frozen {freeze:?}",
                source_card.spec.geometry.subdetector.name()
            ));
        }
        for (name, var) in vs.variables() {
            if Block::of(&name).is_some_and(|b| freeze.contains(&b)) {
                let _ = var.set_requires_grad(false);
            }
        }
        let trainable: Vec<Tensor> = vs
            .trainable_variables()
            .into_iter()
            .filter(|v| v.requires_grad())
            .collect();
        let count = |v: &[Tensor]| v.iter().map(|t| t.numel() as i64).sum::<i64>();
        let trainable_params = count(&trainable);
        let total_params = count(&vs.trainable_variables());
        Ok(Network {
            vs,
            model,
            init,
            freeze,
            trainable,
            trainable_params,
            total_params,
        })
    }

    /// The epochs: streams walked window by window, the validation MSE
    /// after each, the best parameters kept, the learning rate cut on a
    /// plateau. Returns the best checkpoint and the per-epoch log.
    fn train(
        &self,
        ctx: &RunContext<'_>,
        net: &Network,
        train_refs: &[&MapRow],
        scaling: &Scaling,
        val_fills: &[&[MapRow]],
        device: tch::Device,
    ) -> Result<(Checkpoint, Vec<EpochLog>)> {
        let mut opt = nn::Adam::default()
            .build(&net.vs, self.learning_rate)
            .map_err(anyhow::Error::from)?;
        let x_train =
            stream_tensor(train_refs, scaling, self.streams, self.window)?.to_device(device);
        let path = ctx.artifacts.join("model.safetensors");
        let progress = ctx.reporter.progress(self.epochs as u64, "epochs");
        let mut log = Vec::new();
        let mut best = Checkpoint::new(path);
        let mut lr = self.learning_rate;
        tch::manual_seed((self.seed ^ DRAW_SALT) as i64);
        for epoch in 1..=self.epochs {
            let started = Instant::now();
            let used_lr = lr;
            opt.set_lr(lr);
            let (train_mse, train_loss) = self.epoch(net, &mut opt, &x_train, epoch)?;
            let mut val_sum = 0.0;
            let mut val_n = 0usize;
            for fill in val_fills {
                let FillErrors { mse, .. } = fill_errors(
                    &net.model,
                    scaling,
                    fill,
                    self.window,
                    self.carry_state,
                    device,
                )?;
                val_sum += mse.iter().sum::<f64>();
                val_n += mse.len();
            }
            let val_mse = val_sum / val_n as f64;
            let improved = best.observe(epoch, val_mse, &net.vs)?;
            if !improved
                && self
                    .plateau_patience
                    .is_some_and(|p| best.waited >= p.max(1))
            {
                lr *= self.plateau_factor;
                best.waited = 0;
            }
            let entry = EpochLog {
                epoch,
                train_mse,
                train_loss,
                val_mse,
                learning_rate: used_lr,
                improved,
            };
            ctx.reporter.info(&format!(
                "epoch {epoch}: train MSE {:.3e} | val MSE {:.3e} ({:.1} s){}",
                entry.train_mse,
                val_mse,
                started.elapsed().as_secs_f64(),
                if improved { " *" } else { "" }
            ));
            log.push(entry);
            progress.inc(1);
        }
        Ok((best, log))
    }

    /// One pass over the training streams, window by window with the LSTM
    /// states carried (or not); returns the mean MSE and loss per window.
    fn epoch(
        &self,
        net: &Network,
        opt: &mut nn::Optimizer,
        x_train: &Tensor,
        epoch: usize,
    ) -> Result<(f64, f64)> {
        let t = self.window as i64;
        let steps = x_train.size()[1] / t;
        let mut states = net.model.zero_states(self.streams as i64);
        let (mut mse_sum, mut loss_sum) = (0.0, 0.0);
        for k in 0..steps {
            let x = x_train.narrow(1, k * t, t);
            let out = net.model.forward(&x, &states, true, &net.freeze);
            let (total, mse) = loss(&out, &x, self.kl_weight, self.l2_weight, &net.trainable);
            opt.backward_step(&total);
            let l = total.double_value(&[]);
            if !l.is_finite() {
                return Err(StageError::data(format!(
                    "epoch {epoch}: the training loss is not finite (lower `learning_rate`?)"
                )));
            }
            loss_sum += l;
            mse_sum += mse.double_value(&[]);
            states = if self.carry_state {
                out.states.detached()
            } else {
                net.model.zero_states(self.streams as i64)
            };
        }
        Ok((mse_sum / steps as f64, loss_sum / steps as f64))
    }
}

impl GraphstadTrain {
    fn write(
        &self,
        ctx: &mut RunContext<'_>,
        card: &GraphStadCard,
        weights: Vec<u8>,
        log: &[EpochLog],
    ) -> Result<()> {
        let card_json = serde_json::to_string(card).expect("plain data serializes");
        let card_path = ctx.artifacts.join("model.json");
        std::fs::write(&card_path, &card_json).map_err(|e| StageError::io(&card_path, e))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                card.spec.geometry.subdetector.name(),
            ])),
            Arc::new(Int64Array::from(vec![card.best_epoch as i64])),
            Arc::new(Int64Array::from(vec![log.len() as i64])),
            Arc::new(Float64Array::from(vec![card.val_mse])),
            Arc::new(Int64Array::from(vec![card.trainable_params])),
            Arc::new(Int64Array::from(vec![card.total_params])),
            Arc::new(StringArray::from(vec![card_json])),
            Arc::new(BinaryArray::from(vec![weights.as_slice()])),
        ];
        ctx.output.write(
            "main",
            RecordBatch::try_new(models_schema(&card.spec), columns)?,
        )?;
        let float = |f: fn(&EpochLog) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(log.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|e| e.epoch as i64),
            )),
            float(|e| e.train_mse),
            float(|e| e.train_loss),
            float(|e| e.val_mse),
            float(|e| e.learning_rate),
            Arc::new(BooleanArray::from(
                log.iter().map(|e| e.improved).collect::<Vec<_>>(),
            )),
        ];
        ctx.output
            .write("log", RecordBatch::try_new(log_schema(), columns)?)?;
        let series = |name: &str, f: fn(&EpochLog) -> f64| Series {
            name: name.into(),
            points: log.iter().map(|e| (e.epoch as f64, f(e).log10())).collect(),
        };
        lines(
            &ctx.artifacts.join("mse.png"),
            &format!(
                "GraphSTAD {} MSE per epoch{}",
                card.spec.geometry.subdetector.name(),
                if card.frozen_blocks.is_empty() && card.init_blocks.is_empty() {
                    String::new()
                } else {
                    " (transfer)".into()
                }
            ),
            "epoch",
            "log10 MSE",
            &[
                series("train", |e| e.train_mse),
                series("validation", |e| e.val_mse),
            ],
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::channel_metrics::ChannelMetrics;
    use crate::hcal::geometry::Subdetector;
    use crate::hcal::graphstad_score::GraphstadScore;
    use crate::hcal::inject_anomalies::{Anomaly, InjectAnomalies};
    use crate::hcal::test_support::{maps, maps_input, small_arch, small_train};
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use arrow::array::AsArray;

    /// Trains `stage` and returns (models table as an input, its weights).
    fn train(
        dir: &std::path::Path,
        stage: &GraphstadTrain,
        inputs: &[Input],
        name: &str,
    ) -> (Input, safetensors::tensor::SafeTensors<'static>) {
        let out = run_in_memory(stage, inputs).unwrap();
        let models = out.table("main");
        assert_eq!(out.table("log").num_rows(), stage.epochs);
        let weights = models
            .column_by_name("weights")
            .unwrap()
            .as_binary::<i32>()
            .value(0)
            .to_vec();
        let leaked: &'static [u8] = Box::leak(weights.into_boxed_slice());
        let input = input_from_batch(name, &models, &dir.join(format!("{name}.parquet"))).unwrap();
        (
            input,
            safetensors::SafeTensors::deserialize(leaked).unwrap(),
        )
    }

    #[test]
    fn trains_scores_and_finds_dead_and_hot_channels_on_unseen_fills() {
        let dir = tempfile::tempdir().unwrap();
        let train_maps = maps_input(dir.path(), "train", &maps(Subdetector::Barrel, 3, 1), None);
        let stage = GraphstadTrain {
            epochs: 4,
            learning_rate: 3e-3,
            ..small_train()
        };
        let (model, _) = train(dir.path(), &stage, &[train_maps], "model");
        let inject = InjectAnomalies {
            cases: vec![Anomaly::Dead, Anomaly::FullyHot],
            targets_per_fill: 2,
            channels: 10,
            ..Default::default()
        };
        let test_maps = maps_input(
            dir.path(),
            "test",
            &maps(Subdetector::Barrel, 2, 2),
            Some(&inject),
        );
        let scores = run_in_memory(&GraphstadScore::default(), &[test_maps, model])
            .unwrap()
            .table("main");
        assert_eq!(scores.num_rows(), 2 * 2 * 40, "2 cases × 2 fills × 40 LS");
        let scores =
            input_from_batch("scores", &scores, &dir.path().join("scores.parquet")).unwrap();
        let table = run_in_memory(&ChannelMetrics::default(), &[scores])
            .unwrap()
            .table("main");
        let text = |name: &str| {
            table
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (method, case, positives) = (text("method"), text("case"), text("positives"));
        let auc = crate::hcal::tables::f64_column(&table, "auc");
        let targets = table
            .column_by_name("target_maps")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let mut methods: Vec<&str> = (0..table.num_rows()).map(|i| method.value(i)).collect();
        methods.dedup();
        assert_eq!(methods.len(), 9, "{methods:?}");
        for (i, auc) in auc.iter().enumerate() {
            assert_eq!(targets.value(i), 4, "2 windows per fill × 2 fills");
            // An RBX sum dilutes a single channel among its RBX's others; a
            // channel compared with its RBX's median cannot see the RBX.
            let rbx_sum = ["graphstad_rbx", "reference_rbx"].contains(&method.value(i));
            if (rbx_sum && positives.value(i) != "rbx")
                || (method.value(i) == "rbx_median" && positives.value(i) != "single")
            {
                continue;
            }
            // Dead: 0 where ~45 hits are expected; fully hot: ξ. Even a
            // briefly trained model and the rules separate them cleanly.
            assert!(
                *auc > 0.99,
                "{} {}: AUC {auc}",
                method.value(i),
                case.value(i)
            );
        }
    }

    #[test]
    fn seeded_training_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let m = maps_input(dir.path(), "train", &maps(Subdetector::Forward, 2, 3), None);
        let stage = small_train();
        let (_, a) = train(dir.path(), &stage, std::slice::from_ref(&m), "a");
        let (_, b) = train(dir.path(), &stage, std::slice::from_ref(&m), "b");
        let (_, c) = train(dir.path(), &GraphstadTrain { seed: 9, ..stage }, &[m], "c");
        let bytes = |s: &safetensors::SafeTensors, n: &str| s.tensor(n).unwrap().data().to_vec();
        for name in a.names() {
            assert_eq!(bytes(&a, name), bytes(&b, name), "{name}");
        }
        assert_ne!(bytes(&a, "enc_fc.weight"), bytes(&c, "enc_fc.weight"));
    }

    #[test]
    fn frozen_blocks_keep_the_source_weights_and_init_blocks_start_there() {
        let dir = tempfile::tempdir().unwrap();
        let source_maps = maps_input(dir.path(), "endcap", &maps(Subdetector::Endcap, 2, 4), None);
        let (source, src) = train(dir.path(), &small_train(), &[source_maps], "source");
        let target_maps = maps_input(dir.path(), "barrel", &maps(Subdetector::Barrel, 2, 5), None);
        let stage = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::DecoderRnn],
                freeze: vec![Block::EncoderCnn, Block::EncoderGcn],
            }),
            seed: 6,
            ..small_train()
        };
        let out = run_in_memory(&stage, &[target_maps.clone(), source.clone()]).unwrap();
        let models = out.table("main");
        let weights = models
            .column_by_name("weights")
            .unwrap()
            .as_binary::<i32>()
            .value(0)
            .to_vec();
        let dst = safetensors::SafeTensors::deserialize(&weights).unwrap();
        let bytes = |s: &safetensors::SafeTensors, n: &str| s.tensor(n).unwrap().data().to_vec();
        let mut frozen_numel = 0;
        for name in dst.names() {
            let block = Block::of(name);
            if matches!(block, Some(Block::EncoderCnn | Block::EncoderGcn)) {
                // Weights, biases and batch-norm statistics: untouched by training.
                assert_eq!(bytes(&dst, name), bytes(&src, name), "{name} changed");
                if !name.contains("running_") {
                    frozen_numel += dst.tensor(name).unwrap().shape().iter().product::<usize>();
                }
            } else if block == Some(Block::DecoderRnn) || name == "enc_rnn.weight_ih_l0" {
                // Fine-tuned from the source, or trained from scratch: moved.
                assert_ne!(bytes(&dst, name), bytes(&src, name), "{name} did not train");
            }
        }
        let col = |n: &str| {
            models
                .column_by_name(n)
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        assert_eq!(
            col("total_params") - col("trainable_params"),
            frozen_numel as i64
        );
        // A source of another architecture is refused before anything runs.
        let other = GraphstadTrain {
            arch: GraphStadArch {
                conv_channels: [6, 8],
                ..small_arch()
            },
            ..stage.clone()
        };
        let err = other
            .outputs(&[target_maps.schema.clone(), source.schema.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another architecture") && err.contains("EncoderCnn"),
            "{err}"
        );
    }

    #[test]
    fn maps_of_another_geometry_than_the_model_are_refused_at_planning() {
        let spec = ModelSpec {
            arch: small_arch(),
            geometry: MapGeometry::of(Subdetector::Barrel),
            window: 5,
        };
        let maps = with_fields(
            &crate::hcal::tables::maps_schema(MapGeometry::of(Subdetector::Endcap)),
            renormalized_fields(),
        );
        let err = GraphstadScore::default()
            .outputs(&[maps.clone(), models_schema(&spec)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("endcap maps") && err.contains("trained on barrel"),
            "{err}"
        );
        // Maps not renormalized are refused by training, with the fix.
        let raw = crate::hcal::tables::maps_schema(MapGeometry::of(Subdetector::Barrel));
        let err = small_train().outputs(&[raw]).unwrap_err().to_string();
        assert!(err.contains("renormalize_occupancy"), "{err}");
    }

    #[test]
    fn transfer_parameters_are_checked() {
        let both = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::EncoderCnn],
                freeze: vec![Block::EncoderCnn],
            }),
            ..Default::default()
        };
        assert!(both.validate().unwrap_err().to_string().contains("both"));
        let unknown: std::result::Result<GraphstadTrain, _> =
            serde_json::from_str(r#"{"transfer": {"init": ["encoder_lstm"]}}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown variant"));
        let maps = with_fields(&example_maps_schema(), renormalized_fields());
        let err = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::EncoderCnn],
                freeze: vec![],
            }),
            ..Default::default()
        }
        .outputs(&[maps])
        .unwrap_err()
        .to_string();
        assert!(err.contains("source model as second input"), "{err}");
    }
}
