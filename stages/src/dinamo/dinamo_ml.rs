//! `dinamo_ml`: DINAMO-ML (paper section 2.2, Algorithm 3). A transformer
//! predicts the reference μ̂ and its uncertainty σ̂ from the last M good runs,
//! scored with the same χ²_ν and pulls as DINAMO-S, and is trained online:
//! after every good run, on the K most recent good runs (each with its own
//! context) until the Gaussian NLL stops improving.
//!
//! The output has exactly `dinamo_s`'s columns (`alpha` is null), so the two
//! are swapped in a YAML file without touching `dqm_metrics` or any query.

use std::time::Instant;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::batched_reference::BatchedReferenceNet;
use super::dropout_stream::DropoutStream;
use super::reference::score_of;
use super::reference_net::{
    Activation, MlArch, Preset, Schedule, Training, UpdateStats, build_context,
};
use super::score_plots::draw_shifter_plots;
use super::tables::{
    DatasetGroups, DatasetRuns, Scored, record_prediction, score_outputs, score_schema,
    updates_batch,
};
use super::tokens::{DistinctTokens, TrainBatch};
use crate::error::{Result, StageError, bad_param};
use crate::nn::DeviceChoice;
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every run against a transformer-predicted reference trained online
/// on the good runs seen so far.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DinamoMl {
    /// Seed of the network's initialization and dropout. Every dataset's
    /// network starts from libtorch's generator seeded with it (as the
    /// reference code, one process per dataset, does with its seed 22), and
    /// draws its dropout masks from its own stream keyed by the seed and its
    /// dataset id, so a dataset's scores do not depend on which others run,
    /// in which group or on which thread.
    pub seed: u64,
    /// Threshold on the score ln(chi2), or `auto`: the value that maximises
    /// balanced accuracy on the historical runs of each dataset.
    pub threshold: AutoOr<f64>,
    /// The first runs of each dataset that tune the `auto` threshold (the
    /// historical regime); the rest is the continual regime.
    pub historical_runs: usize,
    /// Defaults of the network's size and of the online schedule (`context`,
    /// `d_model`, `heads`, `feed_forward`, `patience`, `max_iterations`):
    /// `fast` (chosen on development datasets for 2 CPU cores, BENCHMARKS.md)
    /// or `paper` (the paper's and its reference code's). Any of the six
    /// given explicitly overrides its preset.
    pub schedule: Schedule,
    /// M: good runs in the context the reference is predicted from
    /// (fast 10, paper 20).
    pub context: Option<usize>,
    /// K: the most recent good runs in each online training batch.
    pub batch_runs: usize,
    /// Width of the token embeddings and of the encoder (fast 50, paper 100).
    pub d_model: Option<i64>,
    /// Attention heads per encoder layer, dividing d_model (fast 5, paper 10).
    pub heads: Option<i64>,
    /// Hidden width of each encoder layer's feed-forward block (fast 50,
    /// paper 100).
    pub feed_forward: Option<i64>,
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
    /// A training step stops after this many iterations without a lower
    /// loss (fast 2, paper 5).
    pub patience: Option<usize>,
    /// Cap on the iterations of one training step (fast 10, paper 1000).
    pub max_iterations: Option<usize>,
    /// `auto` (CUDA when present), `cpu` or `cuda`.
    pub device: DeviceChoice,
    /// Write the per-bin columns (pulls, references, uncertainties, counts)
    /// for every run; the `bands` table keeps the Jaccard distance without them.
    pub per_run_vectors: bool,
    /// Datasets trained side by side as one stacked network. A dataset
    /// scores as if trained alone (to float rounding) in any group; a few
    /// per group amortise libtorch's per-operation cost.
    pub batch_datasets: usize,
    /// Stacks trained at once, each on its own thread with one libtorch
    /// thread (`auto`: libtorch's thread count, i.e. the cores). Small
    /// operations split over cores spend more time waiting than working;
    /// one stack per core does not wait. A chunk of datasets that fills only
    /// one stack trains it with every libtorch thread.
    pub parallel_stacks: AutoOr<usize>,
}

impl Default for DinamoMl {
    fn default() -> Self {
        let arch = MlArch::default();
        Self {
            seed: 22,
            threshold: AutoOr::Auto,
            historical_runs: 1000,
            schedule: Schedule::Fast,
            context: None,
            batch_runs: 10,
            d_model: None,
            heads: None,
            feed_forward: None,
            layers: arch.layers,
            dropout: arch.dropout,
            activation: arch.activation,
            learning_rate: 5e-4,
            weight_decay: 1e-4,
            patience: None,
            max_iterations: None,
            device: DeviceChoice::Auto,
            per_run_vectors: true,
            batch_datasets: 4,
            parallel_stacks: AutoOr::Auto,
        }
    }
}

impl StageConfig for DinamoMl {
    const KIND: &'static str = "dinamo_ml";
    const VERSION: u32 = 4;
    const SUMMARY: &'static str = "DINAMO-ML: transformer reference from the last M good runs, trained online; reduced chi2 and pulls per run, per dataset";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        let p = self.preset();
        if p.context == 0 {
            return bad_param("context", "needs at least one run");
        }
        if self.batch_runs == 0 {
            return bad_param("batch_runs", "needs at least one run");
        }
        if p.d_model <= 0 || p.heads <= 0 || p.d_model % p.heads != 0 {
            return bad_param(
                "heads",
                format!(
                    "must be positive and divide d_model ({} heads, d_model {})",
                    p.heads, p.d_model
                ),
            );
        }
        if p.feed_forward <= 0 || self.layers == 0 {
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
        if self.parallel_stacks == AutoOr::Value(0) {
            return bad_param("parallel_stacks", "needs at least one stack (or `auto`)");
        }
        if p.patience == 0 || p.max_iterations == 0 {
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

/// One dataset's results: scores, its online updates and their runs.
type DatasetResult = (Scored, Vec<UpdateStats>, Vec<i64>);

impl DinamoMl {
    /// The schedule's preset with the values given explicitly.
    pub fn preset(&self) -> Preset {
        let p = self.schedule.preset();
        Preset {
            context: self.context.unwrap_or(p.context),
            d_model: self.d_model.unwrap_or(p.d_model),
            heads: self.heads.unwrap_or(p.heads),
            feed_forward: self.feed_forward.unwrap_or(p.feed_forward),
            patience: self.patience.unwrap_or(p.patience),
            max_iterations: self.max_iterations.unwrap_or(p.max_iterations),
        }
    }

    /// How each online update trains.
    pub fn training(&self) -> Training {
        let p = self.preset();
        Training {
            batch_runs: self.batch_runs,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            patience: p.patience,
            max_iterations: p.max_iterations,
        }
    }

    /// The network's sizes for histograms of `n_bins` bins.
    pub fn arch(&self, n_bins: usize) -> MlArch {
        let p = self.preset();
        MlArch {
            n_bins: n_bins as i64,
            context: p.context,
            d_model: p.d_model,
            heads: p.heads,
            feed_forward: p.feed_forward,
            layers: self.layers,
            dropout: self.dropout,
            activation: self.activation,
        }
    }

    /// Scores `data` in stacks of `batch_datasets`, up to `stacks` of them
    /// at once on their own threads, each with one libtorch thread; a
    /// single stack runs here with every libtorch thread. Results in the
    /// order of `data`.
    pub fn score_stacks(
        &self,
        data: &[DatasetRuns],
        stacks: usize,
        device: Device,
        progress: &dyn crate::stage::Progress,
    ) -> Result<Vec<DatasetResult>> {
        let per_stack = data.len().div_ceil(stacks.max(1));
        if data.len() <= per_stack {
            return self.score_group(data, device, progress);
        }
        // libtorch keeps a process-wide thread count that each worker's
        // `one_thread` sets and restores in turn: put this thread's back.
        let threads_here = tch::get_num_threads();
        let results: Vec<Result<Vec<DatasetResult>>> = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(per_stack)
                .map(|group| {
                    s.spawn(move || {
                        let _one = crate::nn::one_thread();
                        self.score_group(group, device, progress)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|e| Err(StageError::from_panic(&*e)))
                })
                .collect()
        });
        tch::set_num_threads(threads_here);
        let mut out = Vec::with_capacity(data.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
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
        let mut net = BatchedReferenceNet::new(
            arch.clone(),
            d as i64,
            self.seed,
            self.learning_rate,
            self.weight_decay,
            device,
        );
        let mut streams: Vec<DropoutStream> = group
            .iter()
            .map(|data| DropoutStream::new(self.seed, data.dataset, self.dropout))
            .collect();
        let mut out: Vec<DatasetResult> = group
            .iter()
            .map(|data| {
                let n = data.len();
                let scored = Scored::empty(n, self.historical_runs.min(n));
                (scored, Vec::new(), Vec::new())
            })
            .collect();
        let mut good: Vec<Vec<(i64, Vec<f32>)>> = vec![Vec::new(); d];
        let training = self.training();
        let (m, longest) = (
            arch.context,
            group.iter().map(DatasetRuns::len).max().unwrap_or(0),
        );
        for t in 0..longest {
            let contexts: Vec<DistinctTokens> = group
                .iter()
                .zip(&good)
                .map(|(data, good)| {
                    // A dataset already at its end predicts from padding, unused.
                    let run = data.runs.get(t).copied().unwrap_or(i64::MIN);
                    let (h, tt) = build_context(good, run, m, n_bins);
                    DistinctTokens::dense(h, tt)
                })
                .collect();
            let (mu, sigma) = net.predict(&contexts);
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
            let rounds = net.train_round(
                &batches,
                &mut streams,
                training.patience,
                training.max_iterations,
            );
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
        // No other model stage in this process meanwhile: libtorch's
        // generator and thread count are global.
        let _torch = crate::nn::exclusive();
        let stacks = match self.parallel_stacks {
            AutoOr::Auto => tch::get_num_threads().max(1) as usize,
            AutoOr::Value(n) => n,
        };
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let progress = ctx.reporter.progress(0, "runs");
        let (mut datasets, mut n_updates, mut iterations) = (0usize, 0usize, 0usize);
        let start = Instant::now();
        loop {
            let chunk = groups.next_chunk(self.batch_datasets * stacks)?;
            if chunk.is_empty() {
                break;
            }
            let data: Vec<DatasetRuns> = chunk
                .iter()
                .map(|(id, batch)| DatasetRuns::parse(*id, batch, &input.name, 1e-9))
                .collect::<Result<_>>()?;
            let results = self.score_stacks(&data, stacks, device, progress.as_ref())?;
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
    use std::sync::Arc;

    use crate::arrow_util::f64_lists;
    use crate::dinamo::generator::RunGenerator;
    use crate::dinamo::online_reference::OnlineReference;
    use crate::dinamo::test_support::generated_runs;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use crate::stage::{Reporter, Silent};
    use arrow::array::{AsArray, Int8Array};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{Float64Type, Int64Type};

    /// A small, fast configuration for tests.
    fn small() -> DinamoMl {
        DinamoMl {
            schedule: Schedule::Paper,
            context: Some(5),
            batch_runs: 4,
            d_model: Some(16),
            heads: Some(2),
            feed_forward: Some(16),
            layers: 1,
            learning_rate: 3e-3,
            max_iterations: Some(40),
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

    /// One dataset trained alone through `OnlineReference` (tch's modules
    /// and optimizer, libtorch's dropout): the independent implementation
    /// the stacked network is checked against.
    fn score_alone(
        cfg: &DinamoMl,
        data: &DatasetRuns,
        device: Device,
        progress: &dyn crate::stage::Progress,
    ) -> Result<(Scored, Vec<UpdateStats>, Vec<i64>)> {
        let n = data.len();
        let mut scored = Scored::empty(n, cfg.historical_runs.min(n));
        let mut updates = Vec::new();
        let mut update_runs = Vec::new();
        if n == 0 {
            return Ok((scored, updates, update_runs));
        }
        // libtorch's generator is global: no other test draws meanwhile.
        let mut model = crate::dinamo::batched_reference::seeded(cfg.seed, || {
            OnlineReference::new(cfg.arch(data.n_bins()), cfg.training(), device)
        })?;
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
        scored.threshold = data.threshold(cfg.threshold, &scores, scored.historical)?;
        Ok((scored, updates, update_runs))
    }

    /// Three generated datasets of 40, 40 and 25 runs (ids 0, 1, 2), as a
    /// runs table and parsed.
    fn three_datasets() -> (RecordBatch, Vec<DatasetRuns>) {
        let runs = generated_runs(RunGenerator {
            seed_range: Some([0, 3]),
            n_runs: 40,
            n_bad: 4,
            n_bins: 20,
            ..Default::default()
        });
        let runs = runs.slice(0, 105);
        let data = [(0, 40), (40, 40), (80, 25)]
            .iter()
            .enumerate()
            .map(|(id, &(start, len))| {
                DatasetRuns::parse(id as i64, &runs.slice(start, len), "runs", 1e-9).unwrap()
            })
            .collect();
        (runs, data)
    }

    /// Each dataset in a stack of its own.
    fn each_alone(cfg: &DinamoMl, data: &[DatasetRuns]) -> Vec<DatasetResult> {
        let progress = Silent.progress(0, "runs");
        data.iter()
            .flat_map(|d| {
                cfg.score_group(std::slice::from_ref(d), Device::Cpu, progress.as_ref())
                    .unwrap()
            })
            .collect()
    }

    /// χ² per run and iterations per update of each dataset, in order.
    fn scores_and_iterations(results: &[DatasetResult]) -> (Vec<f64>, Vec<usize>) {
        let chi2 = results.iter().flat_map(|r| r.0.chi2.clone()).collect();
        let iterations = results
            .iter()
            .flat_map(|r| r.1.iter().map(|u| u.iterations))
            .collect();
        (chi2, iterations)
    }

    /// Same χ² to float tolerance, same iterations per update. (A small
    /// learning rate: Adam divides each gradient by its own running size, so
    /// parameters with near-zero gradients turn float-rounding differences
    /// between two computations of the network into steps of size ~lr; at
    /// lr 3e-3 two runs drift apart by ~1 % within a few updates, at 1e-4
    /// the stacked libtorch network agreed with tch's modules to ~1e-7 and
    /// the Rust network on the CPU (`cpu_network.rs`: fused multiply-adds,
    /// its own sum order and e^x) agrees to ~5e-5 after 40 runs.)
    fn assert_same_training(a: &[DatasetResult], b: &[DatasetResult]) {
        let ((ca, ia), (cb, ib)) = (scores_and_iterations(a), scores_and_iterations(b));
        assert_eq!(ca.len(), 105);
        assert_eq!(cb.len(), 105);
        for (k, (x, y)) in ca.iter().zip(&cb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                "row {k}: {x} vs {y}"
            );
        }
        assert_eq!(ia, ib);
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.0.threshold - y.0.threshold).abs() < 1e-4,
                "thresholds {} vs {}",
                x.0.threshold,
                y.0.threshold
            );
        }
    }

    fn equality_config(dropout: f64) -> DinamoMl {
        DinamoMl {
            dropout,
            historical_runs: 20,
            learning_rate: 1e-4,
            ..small()
        }
    }

    /// With dropout off, the stacked network (fused q, k, v, attention
    /// written out) trains as tch's modules do, each dataset alone.
    #[test]
    fn stacked_network_equals_the_modules_trained_alone() {
        let (_, data) = three_datasets();
        let cfg = equality_config(0.0);
        let progress = Silent.progress(0, "runs");
        let alone: Vec<DatasetResult> = data
            .iter()
            .map(|d| score_alone(&cfg, d, Device::Cpu, progress.as_ref()).unwrap())
            .collect();
        let stacked = cfg
            .score_group(&data, Device::Cpu, progress.as_ref())
            .unwrap();
        assert_same_training(&alone, &stacked);
    }

    /// With dropout on, each dataset's masks come from its own stream: it
    /// trains alike alone, in a stack of three, and in stacks on two
    /// threads (the stage's path); the masks do change the training.
    #[test]
    fn a_dataset_trains_alike_in_any_stack_with_dropout_on() {
        let (_, data) = three_datasets();
        let cfg = equality_config(0.15);
        let progress = Silent.progress(0, "runs");
        let p = progress.as_ref();
        let alone = each_alone(&cfg, &data);
        let together = cfg.score_group(&data, Device::Cpu, p).unwrap();
        assert_same_training(&alone, &together);
        let threads = cfg.score_stacks(&data, 2, Device::Cpu, p).unwrap();
        assert_same_training(&alone, &threads);
        let without = equality_config(0.0)
            .score_group(&data, Device::Cpu, p)
            .unwrap();
        let (with, _) = scores_and_iterations(&together);
        let (without, _) = scores_and_iterations(&without);
        let moved = with.iter().zip(&without).filter(|(a, b)| a != b).count();
        assert!(moved > 90, "dropout changed {moved} of 105 scores");
    }

    /// The stage itself, in stacks of two on two threads, scores as each
    /// dataset trained alone.
    #[test]
    fn the_stage_in_parallel_stacks_scores_as_alone() {
        let (runs, data) = three_datasets();
        let cfg = equality_config(0.15);
        let (expected, iterations) = scores_and_iterations(&each_alone(&cfg, &data));
        let dir = tempfile::tempdir().unwrap();
        let input = input_from_batch("runs", &runs, &dir.path().join("runs.parquet")).unwrap();
        let staged = DinamoMl {
            batch_datasets: 2,
            parallel_stacks: AutoOr::Value(2),
            ..cfg
        };
        let out = run_in_memory(&staged, &[input]).unwrap();
        let chi2 = column_f64(&out.table("main"), "chi2");
        assert_eq!(chi2.len(), expected.len());
        for (k, (x, y)) in expected.iter().zip(&chi2).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1e-3),
                "row {k}: {x} vs {y}"
            );
        }
        let updates = out.table("updates");
        let staged_iterations: Vec<usize> = updates
            .column_by_name("iterations")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert_eq!(staged_iterations, iterations);
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
