//! Training the GraphSTAD autoencoder, shared by `graphstad_train` (one
//! model) and `transfer_study` (many, with snapshots): the network with what
//! transfer learning set on it (blocks copied from a source model, blocks
//! frozen, parameters still tuned inside the frozen blocks), and the epochs,
//! keeping the parameters of the lowest validation MSE.

use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, OptimizerConfig};

use crate::error::{Result, StageError};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::model::{Block, GraphStad, GraphStadArch, Transfer, Tuned, loss};
use crate::hcal::scoring::{FillErrors, Scaling, fill_errors, norm};
use crate::hcal::tables::{MapRow, ModelSpec, read_model};
use crate::input::Input;
use crate::nn::{Checkpoint, DeviceChoice, load_weights_where};
use crate::stage::Reporter;

/// Trains the autoencoder on one subdetector's healthy maps (the
/// `graphstad_train` stage's parameters, also `transfer_study`'s recipe).
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

/// Salt of the training draws, so they differ from the initialization's.
const DRAW_SALT: u64 = 0x0047_5354_4144;

/// One epoch of training, as logged.
pub struct EpochLog {
    pub epoch: usize,
    pub train_mse: f64,
    pub train_loss: f64,
    pub val_mse: f64,
    pub learning_rate: f64,
    pub improved: bool,
}

/// The network being trained, with what transfer learning set on it.
pub struct Network {
    pub vs: nn::VarStore,
    pub model: GraphStad,
    /// Blocks initialized from the source, and frozen at it.
    pub init: Vec<Block>,
    pub freeze: Vec<Block>,
    /// Parameters of the frozen blocks trained nevertheless.
    pub tune: Vec<Tuned>,
    /// Blocks whose batch-norm running statistics stay as transferred.
    bn_fixed: Vec<Block>,
    /// The parameters the optimizer updates (frozen ones excluded).
    trainable: Vec<Tensor>,
    pub trainable_params: i64,
    pub total_params: i64,
}

impl GraphstadTrain {
    /// The transfer blocks: (initialized, frozen, tuned inside the frozen).
    pub(crate) fn transferred(&self) -> (Vec<Block>, Vec<Block>, Vec<Tuned>) {
        self.transfer
            .as_ref()
            .map(|t| (t.init.clone(), t.freeze.clone(), t.tune.clone()))
            .unwrap_or_default()
    }

    /// `rows` (one input's maps, in order) cut into the training part and
    /// the validation part (the last `validation_fraction`), after checking
    /// they are healthy and enough for a window in both.
    pub(crate) fn split<'r>(
        &self,
        rows: &'r [MapRow],
        input: &str,
    ) -> Result<(&'r [MapRow], &'r [MapRow])> {
        if rows
            .iter()
            .any(|r| r.case.as_deref().is_some_and(|c| c != "none"))
        {
            return Err(StageError::data(format!(
                "input `{input}` holds injected anomalies (`case` column): train on healthy maps"
            )));
        }
        let n_val = ((rows.len() as f64) * self.validation_fraction).round() as usize;
        if n_val < self.window || rows.len() - n_val < self.window {
            return Err(StageError::data(format!(
                "input `{input}`: {} maps are too few for a {}-LS window in both the training and the validation part",
                rows.len(),
                self.window
            )));
        }
        Ok(rows.split_at(rows.len() - n_val))
    }

    /// Checks the source model against this architecture, block by block.
    pub(crate) fn check_source(&self, source: &ModelSpec) -> Result<()> {
        let (a, b) = (&self.arch, &source.arch);
        let (init, freeze, _) = self.transferred();
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

    /// The network, initialized from `seed`, with the transferred blocks
    /// copied from `source` and the frozen ones taken out of training
    /// (except the parameters `tune` names).
    pub(crate) fn network(
        &self,
        source: Option<&Input>,
        reporter: &dyn Reporter,
        geometry: MapGeometry,
        device: tch::Device,
    ) -> Result<Network> {
        tch::manual_seed(self.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = GraphStad::new(&vs.root(), self.arch.clone(), geometry);
        let (init, freeze, tune) = self.transferred();
        if let Some(source) = source {
            let (source_card, weights) = read_model(source)?;
            self.check_source(&source_card.spec)?;
            let blocks: Vec<Block> = init.iter().chain(&freeze).copied().collect();
            let copied = load_weights_where(&vs, &weights, "input `source`", |name| {
                Block::of(name).is_some_and(|b| blocks.contains(&b))
            })?;
            reporter.info(&format!(
                "transfer from a {} model: {copied} tensors of {blocks:?}, frozen {freeze:?}, tuned in them {tune:?}",
                source_card.spec.geometry.subdetector.name()
            ));
        }
        for (name, var) in vs.variables() {
            let frozen = Block::of(&name).is_some_and(|b| freeze.contains(&b));
            if frozen && !tune.iter().any(|t| t.covers(&name)) {
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
        let bn_fixed = if tune.contains(&Tuned::BatchNorm) {
            Vec::new()
        } else {
            freeze.clone()
        };
        Ok(Network {
            vs,
            model,
            init,
            freeze,
            tune,
            bn_fixed,
            trainable,
            trainable_params,
            total_params,
        })
    }

    /// The epochs: streams walked window by window, the validation MSE
    /// after each, the best parameters kept in `checkpoint`, the learning
    /// rate cut on a plateau. `after_epoch` sees each epoch's log entry and
    /// the checkpoint (snapshots of the best parameters so far). Returns the
    /// per-epoch log.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train(
        &self,
        net: &Network,
        (train_refs, scaling): (&[&MapRow], &Scaling),
        val_fills: &[&[MapRow]],
        checkpoint: &mut Checkpoint,
        reporter: &dyn Reporter,
        device: tch::Device,
        after_epoch: &mut dyn FnMut(&EpochLog, &Checkpoint) -> Result<()>,
    ) -> Result<Vec<EpochLog>> {
        let mut opt = nn::Adam::default()
            .build(&net.vs, self.learning_rate)
            .map_err(anyhow::Error::from)?;
        let x_train =
            stream_tensor(train_refs, scaling, self.streams, self.window)?.to_device(device);
        let mut log = Vec::new();
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
            let improved = checkpoint.observe(epoch, val_mse, &net.vs)?;
            if !improved
                && self
                    .plateau_patience
                    .is_some_and(|p| checkpoint.waited >= p.max(1))
            {
                lr *= self.plateau_factor;
                checkpoint.waited = 0;
            }
            let entry = EpochLog {
                epoch,
                train_mse,
                train_loss,
                val_mse,
                learning_rate: used_lr,
                improved,
            };
            reporter.info(&format!(
                "epoch {epoch}: train MSE {:.3e} | val MSE {:.3e} ({:.1} s){}",
                entry.train_mse,
                val_mse,
                started.elapsed().as_secs_f64(),
                if improved { " *" } else { "" }
            ));
            after_epoch(&entry, checkpoint)?;
            log.push(entry);
        }
        Ok(log)
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
            let out = net.model.forward(&x, &states, true, &net.bn_fixed);
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
