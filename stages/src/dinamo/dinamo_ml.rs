//! `dinamo_ml`: DINAMO-ML (paper section 2.2, Algorithm 3). A transformer
//! predicts the reference μ̂ and its uncertainty σ̂ from the last M good runs,
//! scored with the same χ²_ν and pulls as DINAMO-S, and is trained online:
//! after every good run, on the K most recent good runs (each with its own
//! context) until the Gaussian NLL stops improving.
//!
//! The output has exactly `dinamo_s`'s columns (`alpha` is null), so the two
//! are swapped in a YAML file without touching `dqm_metrics` or any query.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::batched_reference::{BatchedReferenceNet, TrainBatch};
use super::reference::{NormRun, score_of};
use super::reference_net::{
    Activation, EarlyStop, MlArch, ReferenceNet, UpdateStats, build_context, context_batch,
    gaussian_nll,
};
use super::score_plots::draw_shifter_plots;
use super::tables::{DatasetGroups, DatasetRuns, Scored, score_outputs, score_schema};
use crate::error::{Result, StageError, bad_param};
use crate::nn::DeviceChoice;
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every run against a transformer-predicted reference trained online
/// on the good runs seen so far.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DinamoMl {
    /// Seed of the network's initialization and dropout. libtorch's
    /// generator is reset to it at the start of every dataset (as the
    /// reference code, one process per dataset, does with its seed 22), so a
    /// dataset's scores do not depend on which others run.
    pub seed: u64,
    /// Threshold on the score ln(chi2), or `auto`: the value that maximises
    /// balanced accuracy on the historical runs of each dataset.
    pub threshold: AutoOr<f64>,
    /// The first runs of each dataset that tune the `auto` threshold (the
    /// historical regime); the rest is the continual regime.
    pub historical_runs: usize,
    /// M: good runs in the context the reference is predicted from.
    pub context: usize,
    /// K: the most recent good runs in each online training batch.
    pub batch_runs: usize,
    /// Width of the token embeddings and of the encoder.
    pub d_model: i64,
    /// Attention heads per encoder layer (must divide d_model).
    pub heads: i64,
    /// Hidden width of each encoder layer's feed-forward block.
    pub feed_forward: i64,
    /// Encoder layers.
    pub layers: usize,
    /// Dropout in the encoder during training.
    pub dropout: f64,
    /// Feed-forward activation: `gelu` (the paper) or `relu` (the reference code).
    pub activation: Activation,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// A training step stops after this many iterations without a lower loss.
    pub patience: usize,
    /// Cap on the iterations of one training step.
    pub max_iterations: usize,
    /// `auto` (CUDA when present), `cpu` or `cuda`.
    pub device: DeviceChoice,
    /// Write the per-bin columns (pulls, references, uncertainties, counts)
    /// for every run; the `bands` table keeps the Jaccard distance without them.
    pub per_run_vectors: bool,
    /// Datasets trained side by side as one stacked network (1: one at a
    /// time). Equal to separate training with dropout off; with dropout on,
    /// a dataset's masks depend on its group (fixed by the seed and the
    /// group). Many per group amortise libtorch's per-operation cost.
    pub batch_datasets: usize,
}

impl Default for DinamoMl {
    fn default() -> Self {
        let arch = MlArch::default();
        Self {
            seed: 22,
            threshold: AutoOr::Auto,
            historical_runs: 1000,
            context: arch.context,
            batch_runs: 10,
            d_model: arch.d_model,
            heads: arch.heads,
            feed_forward: arch.feed_forward,
            layers: arch.layers,
            dropout: arch.dropout,
            activation: arch.activation,
            learning_rate: 5e-4,
            weight_decay: 1e-4,
            patience: 5,
            max_iterations: 1000,
            device: DeviceChoice::Auto,
            per_run_vectors: true,
            batch_datasets: 1,
        }
    }
}

impl StageConfig for DinamoMl {
    const KIND: &'static str = "dinamo_ml";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "DINAMO-ML: transformer reference from the last M good runs, trained online; reduced chi2 and pulls per run, per dataset";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.context == 0 {
            return bad_param("context", "needs at least one run");
        }
        if self.batch_runs == 0 {
            return bad_param("batch_runs", "needs at least one run");
        }
        if self.d_model <= 0 || self.heads <= 0 || self.d_model % self.heads != 0 {
            return bad_param("heads", "must be positive and divide d_model");
        }
        if self.feed_forward <= 0 || self.layers == 0 {
            return bad_param("layers", "needs layers >= 1 and feed_forward >= 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad_param("dropout", "must be in [0, 1)");
        }
        if !(self.learning_rate > 0.0) || !(self.weight_decay >= 0.0) {
            return bad_param(
                "learning_rate",
                "needs learning_rate > 0 and weight_decay >= 0",
            );
        }
        if self.batch_datasets == 0 {
            return bad_param("batch_datasets", "needs at least one dataset");
        }
        if self.patience == 0 || self.max_iterations == 0 {
            return bad_param("patience", "needs patience >= 1 and max_iterations >= 1");
        }
        if self.historical_runs == 0 && self.threshold == AutoOr::Auto {
            return bad_param(
                "historical_runs",
                "`auto` threshold needs historical runs to tune on",
            );
        }
        Ok(())
    }
}

/// The network, its optimizer and the good runs seen so far of one dataset:
/// Algorithm 3's state, usable on its own (benchmarks, notebooks).
pub struct OnlineReference {
    cfg: DinamoMl,
    arch: MlArch,
    net: ReferenceNet,
    _vs: nn::VarStore,
    opt: nn::Optimizer,
    device: Device,
    /// 𝒟: good runs (run number, unit-normalized histogram), in run order.
    good: Vec<(i64, Vec<f32>)>,
}

impl OnlineReference {
    /// A freshly initialized network for histograms of `n_bins` bins. The
    /// caller seeds libtorch's generator and holds [`crate::nn::exclusive`].
    pub fn new(cfg: &DinamoMl, n_bins: usize, device: Device) -> Result<Self> {
        let arch = cfg.arch(n_bins);
        let vs = nn::VarStore::new(device);
        let net = ReferenceNet::new(&vs.root(), arch.clone());
        let opt = nn::AdamW {
            wd: cfg.weight_decay,
            ..Default::default()
        }
        .build(&vs, cfg.learning_rate)
        .map_err(|e| StageError::data(format!("cannot build the AdamW optimizer: {e}")))?;
        Ok(Self {
            cfg: cfg.clone(),
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
        let batch = TrainBatch::of(&self.good, self.cfg.batch_runs, m, n as usize);
        let (b, m) = (batch.runs as i64, m as i64);
        let on =
            |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(self.device);
        let h = on(&batch.histograms, &[b, m, n]);
        let t = on(&batch.times, &[b, m]);
        let target = on(&batch.targets, &[b, n]);
        let mut stop = EarlyStop::new(batch.runs, self.cfg.patience, self.cfg.max_iterations);
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

/// Scores run `k` of `data` against a predicted (μ̂, σ̂) into `scored`;
/// a non-finite prediction is an error naming the run.
fn record_prediction(
    scored: &mut Scored,
    data: &DatasetRuns,
    k: usize,
    mu: &[f64],
    sigma: &[f64],
) -> Result<()> {
    if let Some(j) = mu.iter().chain(sigma).position(|v| !v.is_finite()) {
        return Err(data.error(format!(
            "run {}: the network predicted a non-finite reference (value {j}); lower learning_rate",
            data.runs[k]
        )));
    }
    let (chi2, pulls) = chi2_and_pulls(&data.norm[k], mu, sigma);
    scored.chi2.push(chi2);
    scored.pulls.push(pulls);
    scored.ref_mu.push(mu.to_vec());
    scored.ref_sigma.push(sigma.to_vec());
    Ok(())
}

/// χ²_ν and pulls of `run` against (μ̂, σ̂): the run's Poisson variance plus σ̂².
pub fn chi2_and_pulls(run: &NormRun, mu: &[f64], sigma: &[f64]) -> (f64, Vec<f64>) {
    let pulls: Vec<f64> = (0..mu.len())
        .map(|j| {
            (run.x[j] - mu[j])
                / (run.var[j] + sigma[j] * sigma[j])
                    .max(f64::MIN_POSITIVE)
                    .sqrt()
        })
        .collect();
    let chi2 = pulls.iter().map(|p| p * p).sum::<f64>() / mu.len().max(1) as f64;
    (chi2, pulls)
}

/// One dataset's results: scores, its online updates and their runs.
type DatasetResult = (Scored, Vec<UpdateStats>, Vec<i64>);

impl DinamoMl {
    /// The network's sizes for histograms of `n_bins` bins.
    pub fn arch(&self, n_bins: usize) -> MlArch {
        MlArch {
            n_bins: n_bins as i64,
            context: self.context,
            d_model: self.d_model,
            heads: self.heads,
            feed_forward: self.feed_forward,
            layers: self.layers,
            dropout: self.dropout,
            activation: self.activation,
        }
    }

    /// Scores a group of datasets with one stacked network, runs in
    /// lockstep (see `batched_reference.rs`).
    pub fn score_group(
        &self,
        group: &[DatasetRuns],
        device: Device,
        progress: &dyn crate::stage::Progress,
    ) -> Result<Vec<DatasetResult>> {
        let n_bins = group.first().map_or(0, DatasetRuns::n_bins);
        if let Some(other) = group.iter().find(|g| g.n_bins() != n_bins) {
            return Err(other.error(format!(
                "has {} bins where dataset {} has {n_bins}; datasets trained together need the same binning",
                other.n_bins(),
                group[0].dataset
            )));
        }
        let (arch, d) = (self.arch(n_bins), group.len());
        tch::manual_seed(self.seed as i64);
        let mut net = BatchedReferenceNet::new(
            arch.clone(),
            d as i64,
            self.learning_rate,
            self.weight_decay,
            device,
        );
        let mut out: Vec<DatasetResult> = group
            .iter()
            .map(|data| {
                let n = data.len();
                let scored = Scored::empty(n, self.historical_runs.min(n));
                (scored, Vec::new(), Vec::new())
            })
            .collect();
        let mut good: Vec<Vec<(i64, Vec<f32>)>> = vec![Vec::new(); d];
        let (m, longest) = (
            self.context,
            group.iter().map(DatasetRuns::len).max().unwrap_or(0),
        );
        for t in 0..longest {
            let (mut hist, mut time) = (
                Vec::with_capacity(d * m * n_bins),
                Vec::with_capacity(d * m),
            );
            for (data, good) in group.iter().zip(&good) {
                // A dataset already at its end predicts from padding, unused.
                let run = data.runs.get(t).copied().unwrap_or(i64::MIN);
                let (h, tt) = build_context(good, run, m, n_bins);
                hist.extend(h);
                time.extend(tt);
            }
            let on = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
            let (di, mi, ni) = (d as i64, m as i64, n_bins as i64);
            let (mu, sigma) = net.predict(&on(&hist, &[di, 1, mi, ni]), &on(&time, &[di, 1, mi]));
            let rows = |x: Tensor| -> Vec<f64> {
                Vec::<f64>::try_from(x.to_kind(Kind::Double).to_device(Device::Cpu).view([-1]))
                    .expect("a flat double tensor")
            };
            let (mu, sigma) = (rows(mu), rows(sigma));
            let mut batches = Vec::with_capacity(d);
            for (i, data) in group.iter().enumerate() {
                if t >= data.len() {
                    batches.push(None);
                    continue;
                }
                let (run, norm) = (data.runs[t], &data.norm[t]);
                let (mu, sigma) = (&mu[i * n_bins..][..n_bins], &sigma[i * n_bins..][..n_bins]);
                record_prediction(&mut out[i].0, data, t, mu, sigma)?;
                progress.inc(1);
                if data.good[t] && norm.integral > 0.0 {
                    good[i].push((run, norm.x.iter().map(|&v| v as f32).collect()));
                    batches.push(Some(TrainBatch::of(&good[i], self.batch_runs, m, n_bins)));
                } else {
                    batches.push(None);
                }
            }
            let rounds = net.train_round(&batches, self.patience, self.max_iterations);
            for (i, round) in rounds.into_iter().enumerate() {
                if let Some(stats) = round {
                    out[i].1.push(stats);
                    out[i].2.push(group[i].runs[t]);
                }
            }
        }
        for (data, (scored, _, _)) in group.iter().zip(&mut out) {
            let scores: Vec<f64> = scored.chi2.iter().map(|&c| score_of(c)).collect();
            scored.threshold = data.threshold(self.threshold, &scores, scored.historical)?;
        }
        Ok(out)
    }

    fn score_dataset(
        &self,
        data: &DatasetRuns,
        device: Device,
        progress: &dyn crate::stage::Progress,
    ) -> Result<(Scored, Vec<UpdateStats>, Vec<i64>)> {
        let n = data.len();
        let mut scored = Scored::empty(n, self.historical_runs.min(n));
        let mut updates = Vec::new();
        let mut update_runs = Vec::new();
        if n == 0 {
            return Ok((scored, updates, update_runs));
        }
        tch::manual_seed(self.seed as i64);
        let mut model = OnlineReference::new(self, data.n_bins(), device)?;
        for k in 0..n {
            let (run, norm) = (data.runs[k], &data.norm[k]);
            let (mu, sigma) = model.predict(run);
            record_prediction(&mut scored, data, k, &mu, &sigma)?;
            if data.good[k] && norm.integral > 0.0 {
                updates.push(model.add_good_and_train(run, &norm.x));
                update_runs.push(run);
            }
            progress.inc(1);
        }
        let scores: Vec<f64> = scored.chi2.iter().map(|&c| score_of(c)).collect();
        scored.threshold = data.threshold(self.threshold, &scores, scored.historical)?;
        Ok((scored, updates, update_runs))
    }
}

fn updates_batch(dataset: i64, runs: &[i64], updates: &[UpdateStats]) -> Result<RecordBatch> {
    let n = updates.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![dataset; n])),
        Arc::new(Int64Array::from(runs.to_vec())),
        Arc::new(Int64Array::from_iter_values(
            updates.iter().map(|u| u.batch_runs as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            updates.iter().map(|u| u.iterations as i64),
        )),
        Arc::new(Float64Array::from_iter_values(
            updates.iter().map(|u| u.first_loss),
        )),
        Arc::new(Float64Array::from_iter_values(
            updates.iter().map(|u| u.best_loss),
        )),
    ];
    Ok(RecordBatch::try_new(
        dqm_schemas::online::updates(),
        columns,
    )?)
}

impl Stage for DinamoMl {
    fn shardable(&self) -> bool {
        true
    }

    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let mut outputs = score_outputs(&inputs[0], "input", self.per_run_vectors)?;
        outputs.push(OutputSpec {
            name: "updates",
            schema: dqm_schemas::online::updates(),
        });
        Ok(outputs)
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let schema = score_schema(&input.schema, &input.name, self.per_run_vectors)?;
        let device = self.device.resolve()?;
        // One dataset at a time: libtorch's generator is global, and each
        // operation already uses every core.
        let _torch = crate::nn::exclusive();
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let progress = ctx.reporter.progress(0, "runs");
        let (mut datasets, mut n_updates, mut iterations) = (0usize, 0usize, 0usize);
        let start = Instant::now();
        loop {
            let chunk = groups.next_chunk(self.batch_datasets)?;
            if chunk.is_empty() {
                break;
            }
            let data: Vec<DatasetRuns> = chunk
                .iter()
                .map(|(id, batch)| DatasetRuns::parse(*id, batch, &input.name, 1e-9))
                .collect::<Result<_>>()?;
            let results = if self.batch_datasets == 1 {
                vec![self.score_dataset(&data[0], device, progress.as_ref())?]
            } else {
                self.score_group(&data, device, progress.as_ref())?
            };
            for (((id, batch), data), (scored, updates, runs)) in
                chunk.iter().zip(&data).zip(results)
            {
                n_updates += updates.len();
                iterations += updates.iter().map(|u| u.iterations).sum::<usize>();
                let batches = data.batches(batch, &schema, scored)?;
                if datasets == 0 {
                    draw_shifter_plots(&batches.main, *id, "DINAMO-ML", ctx.artifacts)?;
                }
                ctx.output.write("main", batches.main)?;
                if let Some(bands) = batches.bands {
                    ctx.output.write("bands", bands)?;
                }
                ctx.output
                    .write("updates", updates_batch(*id, &runs, &updates)?)?;
                datasets += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        ctx.reporter.info(&format!(
            "{datasets} datasets, {n_updates} online updates ({:.1} iterations each) on {device:?} in {seconds:.1} s: {:.3} s per update",
            iterations as f64 / n_updates.max(1) as f64,
            seconds / n_updates.max(1) as f64
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrow_util::f64_lists;
    use crate::dinamo::generator::RunGenerator;
    use crate::dinamo::test_support::generated_runs;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use arrow::array::{AsArray, Int8Array};
    use arrow::datatypes::{Float64Type, Int64Type};

    /// A small, fast configuration for tests.
    fn small() -> DinamoMl {
        DinamoMl {
            context: 5,
            batch_runs: 4,
            d_model: 16,
            heads: 2,
            feed_forward: 16,
            layers: 1,
            learning_rate: 3e-3,
            max_iterations: 40,
            historical_runs: 20,
            device: DeviceChoice::Cpu,
            ..Default::default()
        }
    }

    /// Runs of two shapes: `first` before run `change`, `second` from then on.
    fn two_shapes(n: usize, change: usize, labels: &[i8]) -> (RecordBatch, tempfile::TempDir) {
        let first = [50.0, 200.0, 500.0, 200.0, 50.0, 0.0];
        let second = [0.0, 50.0, 200.0, 500.0, 200.0, 50.0];
        let counts: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let shape = if i < change { &first } else { &second };
                // A little run-to-run wobble so the NLL has a finite optimum.
                let wobble = 1.0 + 0.05 * ((i * 7 % 5) as f64 - 2.0) / 2.0;
                shape.iter().map(|v| v * wobble).collect()
            })
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            dqm_schemas::runs::run(),
            dqm_schemas::runs::label(),
            dqm_schemas::runs::counts(),
        ]));
        let counts = f64_lists(counts.iter().map(Vec::as_slice));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Int8Array::from(labels.to_vec())),
                Arc::new(counts),
            ],
        )
        .unwrap();
        (batch, tempfile::tempdir().unwrap())
    }

    fn input(batch: &RecordBatch, dir: &tempfile::TempDir) -> Input {
        input_from_batch("runs", batch, &dir.path().join("runs.parquet")).unwrap()
    }

    fn column_f64(batch: &RecordBatch, name: &str) -> Vec<f64> {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn chi2_uses_poisson_and_predicted_variances() {
        let run = NormRun::new(&[3.0, 1.0], 1e-9);
        // x~ = [0.75, 0.25], var = (p - p^2)/4 = 0.046875 each.
        let (chi2, pulls) = chi2_and_pulls(&run, &[0.5, 0.5], &[0.1, 0.2]);
        let p0 = 0.25 / (0.046875f64 + 0.01).sqrt();
        let p1 = -0.25 / (0.046875f64 + 0.04).sqrt();
        assert!((pulls[0] - p0).abs() < 1e-12 && (pulls[1] - p1).abs() < 1e-12);
        assert!((chi2 - (p0 * p0 + p1 * p1) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn reference_moves_to_the_new_shape_after_a_rapid_change() {
        let n = 40;
        let change = 25;
        let (batch, dir) = two_shapes(n, change, &vec![0; n]);
        let cfg = DinamoMl {
            threshold: AutoOr::Value(1.0),
            ..small()
        };
        let out = run_in_memory(&cfg, &[input(&batch, &dir)]).unwrap();
        let main = out.table("main");
        assert_eq!(main.num_rows(), n);
        assert_eq!(main.column_by_name("alpha").unwrap().null_count(), n);
        let chi2 = column_f64(&main, "chi2");
        // The reference moves to the new shape: its L1 distance to it.
        let refs = main.column_by_name("ref_mu").unwrap().as_list::<i32>();
        let new_shape = [0.0, 0.05, 0.2, 0.5, 0.2, 0.05];
        let distance = |k: usize| -> f64 {
            let r = refs.value(k);
            let r = r.as_primitive::<Float64Type>().values();
            r.iter().zip(new_shape).map(|(a, b)| (a - b).abs()).sum()
        };
        assert!(distance(change) > 0.9, "{}", distance(change));
        assert!(
            distance(n - 1) < 0.3 * distance(change),
            "{} vs {}",
            distance(n - 1),
            distance(change)
        );
        // The change itself scores far above the converged runs around it,
        // and the network has learned the new shape 15 runs later.
        assert!(chi2[change] > 10.0 * chi2[change - 1], "{chi2:?}");
        assert!(chi2[n - 1] < chi2[change] / 10.0, "{chi2:?}");
        let updates = out.table("updates");
        assert_eq!(updates.num_rows(), n);
        let iterations = updates.column_by_name("iterations").unwrap();
        let iterations = iterations.as_primitive::<Int64Type>().values();
        assert!(iterations.iter().all(|&i| (1..=40).contains(&i)));
        let first = column_f64(&updates, "first_loss");
        let best = column_f64(&updates, "best_loss");
        assert!(first.iter().zip(&best).all(|(f, b)| b <= f));
    }

    #[test]
    fn same_seed_same_scores_other_seed_other_scores() {
        let n = 30;
        let labels: Vec<i8> = (0..n).map(|i| (i % 6 == 5) as i8).collect();
        let (batch, dir) = two_shapes(n, 15, &labels);
        let run = |seed| {
            let cfg = DinamoMl { seed, ..small() };
            let out = run_in_memory(&cfg, &[input(&batch, &dir)]).unwrap();
            let main = out.table("main");
            (column_f64(&main, "chi2"), column_f64(&main, "threshold")[0])
        };
        let (a, ta) = run(3);
        let (b, tb) = run(3);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        let (c, _) = run(4);
        assert_ne!(a, c);
    }

    #[test]
    fn auto_threshold_without_good_historical_runs_is_a_clear_error() {
        let n = 25;
        let mut labels = vec![1i8; 20];
        labels.extend([0; 5]);
        let (batch, dir) = two_shapes(n, 100, &labels);
        let err = run_in_memory(&small(), &[input(&batch, &dir)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("threshold") && err.contains("0 good, 20 bad"),
            "{err}"
        );
        // A fixed threshold scores every run against the padded context.
        let cfg = DinamoMl {
            threshold: AutoOr::Value(0.0),
            ..small()
        };
        let out = run_in_memory(&cfg, &[input(&batch, &dir)]).unwrap();
        assert!(
            column_f64(&out.table("main"), "chi2")
                .iter()
                .all(|c| c.is_finite())
        );
        assert_eq!(out.table("updates").num_rows(), 5);
    }

    #[test]
    fn empty_runs_are_scored_but_never_learned_and_nan_counts_are_refused() {
        let n = 12;
        let (batch, dir) = two_shapes(n, 100, &vec![0; n]);
        // Zero out run 4.
        let counts = batch.column_by_name("counts").unwrap().as_list::<i32>();
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|k| {
                let v = counts.value(k);
                let v = v.as_primitive::<Float64Type>();
                v.values()
                    .iter()
                    .map(|&c| if k == 4 { 0.0 } else { c })
                    .collect()
            })
            .collect();
        let with = |rows: Vec<Vec<f64>>| {
            let list = f64_lists(rows.iter().map(Vec::as_slice));
            let mut cols = batch.columns().to_vec();
            cols[2] = Arc::new(list);
            RecordBatch::try_new(batch.schema(), cols).unwrap()
        };
        let cfg = DinamoMl {
            threshold: AutoOr::Value(0.0),
            ..small()
        };
        let out = run_in_memory(&cfg, &[input(&with(rows.clone()), &dir)]).unwrap();
        let main = out.table("main");
        assert_eq!(column_f64(&main, "integral")[4], 0.0);
        assert!(column_f64(&main, "chi2")[4].is_finite());
        let updates = out.table("updates");
        let runs = updates.column_by_name("run").unwrap();
        assert!(!runs.as_primitive::<Int64Type>().values().contains(&4));
        assert_eq!(updates.num_rows(), n - 1);

        let mut nan = rows;
        nan[7][2] = f64::NAN;
        let err = run_in_memory(&cfg, &[input(&with(nan), &dir)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run 7") && err.contains("counts") && err.contains("NaN"),
            "{err}"
        );
    }

    /// D datasets trained as one stacked network score as D separate runs
    /// (dropout off): same χ² to float tolerance, same iterations per update.
    /// (A small learning rate: Adam divides each gradient by its own running
    /// size, so parameters with near-zero gradients turn float-rounding
    /// differences between batched and single matrix products into steps of
    /// size ~lr; at lr 3e-3 the two runs drift apart by ~1 % within a few
    /// updates, at 1e-4 they agree to ~1e-7.)
    #[test]
    fn batched_datasets_equal_separate_runs() {
        let runs = generated_runs(RunGenerator {
            seed_range: Some([0, 3]),
            n_runs: 40,
            n_bad: 4,
            n_bins: 20,
            ..Default::default()
        });
        // Datasets of different lengths: the third stops early.
        let keep: Vec<u32> = (0..80 + 25).collect();
        let runs = arrow::compute::take_record_batch(&runs, &arrow::array::UInt32Array::from(keep))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = input_from_batch("runs", &runs, &dir.path().join("runs.parquet")).unwrap();
        let cfg = DinamoMl {
            dropout: 0.0,
            historical_runs: 20,
            learning_rate: 1e-4,
            ..small()
        };
        let separate = run_in_memory(&cfg, std::slice::from_ref(&input)).unwrap();
        let batched = DinamoMl {
            batch_datasets: 3,
            ..cfg
        };
        let together = run_in_memory(&batched, std::slice::from_ref(&input)).unwrap();
        let (a, b) = (separate.table("main"), together.table("main"));
        assert_eq!(a.num_rows(), 105);
        assert_eq!(b.num_rows(), 105);
        let (ca, cb) = (column_f64(&a, "chi2"), column_f64(&b, "chi2"));
        for (k, (x, y)) in ca.iter().zip(&cb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1e-3),
                "row {k}: separate {x} vs batched {y}"
            );
        }
        let iterations = |t: &RecordBatch| {
            t.column_by_name("iterations")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(
            iterations(&separate.table("updates")),
            iterations(&together.table("updates"))
        );
        for (x, y) in column_f64(&a, "threshold")
            .iter()
            .zip(&column_f64(&b, "threshold"))
        {
            assert!((x - y).abs() < 1e-4, "thresholds {x} vs {y}");
        }
    }

    /// On a stable dataset the learned reference behaves as the reference
    /// code's: μ̂ settles on the runs' mean shape and σ̂ on the order of the
    /// run-to-run spread of the normalised bins (what the Gaussian NLL's
    /// optimum is), not on zero or on the padding.
    #[test]
    fn learned_reference_matches_the_runs_mean_and_spread() {
        let runs = generated_runs(RunGenerator {
            seeds: Some(vec![5]),
            n_runs: 60,
            n_bad: 0,
            n_bins: 20,
            drift_amplitude: 0.0,
            p_rapid: 0.0,
            // Without the systematic: one shape with Poisson noise.
            p_binomial: 0.0,
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let input = input_from_batch("runs", &runs, &dir.path().join("runs.parquet")).unwrap();
        let cfg = DinamoMl {
            threshold: AutoOr::Value(1.0),
            ..small()
        };
        let main = run_in_memory(&cfg, &[input]).unwrap().table("main");
        let lists = |name: &str| {
            crate::arrow_util::list_rows(main.column_by_name(name).unwrap(), "main", name).unwrap()
        };
        let (counts, mu, sigma) = (lists("counts"), lists("ref_mu"), lists("ref_sigma"));
        let x: Vec<Vec<f64>> = counts
            .iter()
            .map(|c| {
                let i: f64 = c.iter().sum();
                c.iter().map(|v| v / i).collect()
            })
            .collect();
        let n = x.len() as f64;
        let mean: Vec<f64> = (0..20)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let spread: f64 = (0..20)
            .map(|j| (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
            .sum::<f64>()
            / 20.0;
        let last = x.len() - 1;
        let l1: f64 = mu[last].iter().zip(&mean).map(|(a, b)| (a - b).abs()).sum();
        assert!(l1 < 0.05, "reference {:?} vs mean {mean:?}", mu[last]);
        let s_hat = sigma[last].iter().sum::<f64>() / 20.0;
        assert!(
            (0.2..5.0).contains(&(s_hat / spread)),
            "sigma-hat {s_hat} vs run-to-run spread {spread}"
        );
    }
}
