//! DINAMO-ML for one dataset with tch's modules and optimizer (Algorithm 3
//! as the reference code writes it, libtorch's dropout): the independent
//! implementation the stacked network of `batched_reference.rs` is tested
//! against, and a single-dataset API for benchmarks and notebooks.

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::reference_net::{
    EarlyStop, MlArch, ReferenceNet, Training, UpdateStats, build_context, context_batch,
    gaussian_nll,
};
use super::tokens::TrainBatch;
use crate::error::{Result, StageError};

/// The network, its optimizer and the good runs seen so far of one dataset:
/// Algorithm 3's state, usable on its own (benchmarks, notebooks).
pub struct OnlineReference {
    training: Training,
    arch: MlArch,
    net: ReferenceNet,
    _vs: nn::VarStore,
    opt: nn::Optimizer,
    device: Device,
    /// 𝒟: good runs (run number, unit-normalized histogram), in run order.
    good: Vec<(i64, Vec<f32>)>,
}

impl OnlineReference {
    /// A freshly initialized network of `arch`. The caller seeds
    /// libtorch's generator and holds [`crate::nn::exclusive`].
    pub fn new(arch: MlArch, training: Training, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = ReferenceNet::new(&vs.root(), arch.clone());
        let opt = nn::AdamW {
            wd: training.weight_decay,
            ..Default::default()
        }
        .build(&vs, training.learning_rate)
        .map_err(|e| StageError::data(format!("cannot build the AdamW optimizer: {e}")))?;
        Ok(Self {
            training,
            arch,
            net,
            _vs: vs,
            opt,
            device,
            good: Vec::new(),
        })
    }

    /// (μ̂, σ̂) for run `run` from the good runs before it (eval mode).
    pub fn predict(&self, run: i64) -> (Vec<f64>, Vec<f64>) {
        let n_bins = self.arch.n_bins as usize;
        let context = build_context(&self.good, run, self.arch.context, n_bins);
        let (h, t) = context_batch(&[context], &self.arch, self.device);
        let (mu, sigma) = tch::no_grad(|| self.net.forward(&h, &t, false));
        let to_vec = |x: Tensor| -> Vec<f64> {
            let x = x.to_kind(Kind::Double).to_device(Device::Cpu).view([-1]);
            Vec::<f64>::try_from(&x).expect("a 1-d double tensor")
        };
        (to_vec(mu), to_vec(sigma))
    }

    /// Adds good run `run` (unit-normalized `x`) to 𝒟 and trains on the K
    /// most recent good runs until the NLL has not improved for `patience`
    /// iterations.
    pub fn add_good_and_train(&mut self, run: i64, x: &[f64]) -> UpdateStats {
        self.good.push((run, x.iter().map(|&v| v as f32).collect()));
        let (m, n) = (self.arch.context, self.arch.n_bins);
        let batch = TrainBatch::of(&self.good, self.training.batch_runs, m, n as usize);
        let (b, m) = (batch.runs as i64, m as i64);
        let on =
            |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(self.device);
        let (histograms, times) = batch.tokens.expand(n as usize);
        let h = on(&histograms, &[b, m, n]);
        let t = on(&times, &[b, m]);
        let target = on(&batch.targets, &[b, n]);
        let mut stop = EarlyStop::new(
            batch.runs,
            self.training.patience,
            self.training.max_iterations,
        );
        loop {
            let (mu, sigma) = self.net.forward(&h, &t, true);
            let loss = gaussian_nll(&target, &mu, &sigma);
            self.opt.backward_step(&loss);
            if stop.record(loss.double_value(&[])) {
                return stop.stats;
            }
        }
    }
}
