//! `dinamo_s`: DINAMO-S (paper section 2.1, Algorithm 2), an EWMA reference
//! with per-bin Poisson weights, scored by the reduced chi-square.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int8Type, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DatasetGroups;
use crate::api::{
    OutputSpec, Result, RunContext, Stage, StageError, expect_inputs, par_map_counted,
    require_column,
};
use crate::arrow_util::{cast_column, f64_lists, is_integer, is_numeric_list, list_rows};
use crate::params::AutoOr;
use crate::registry::StageConfig;
use crate::stats::{best_threshold, roc_auc};

/// Scores every run against an EWMA reference built from earlier good runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DinamoS {
    /// EWMA smoothing factor in [0, 1) (weight of the history), or `auto`:
    /// the value on a grid over [0, 1) that maximises the ROC AUC of the score
    /// on the historical runs of each dataset.
    pub alpha: AutoOr<f64>,
    /// Threshold on the score ln(chi2), or `auto`: the value that maximises
    /// balanced accuracy on the historical runs of each dataset.
    pub threshold: AutoOr<f64>,
    /// The first runs of each dataset that tune `auto` parameters (the
    /// historical regime); the rest is the continual regime.
    pub historical_runs: usize,
    /// Step of the alpha grid for `alpha: auto` (0.01 gives 0.00..0.99).
    pub alpha_step: f64,
    /// Small constant in the update weight omega = 1/(sigma_x^2 + epsilon).
    pub epsilon: f64,
}

impl Default for DinamoS {
    fn default() -> Self {
        Self {
            alpha: AutoOr::Auto,
            threshold: AutoOr::Auto,
            historical_runs: 1000,
            alpha_step: 0.01,
            epsilon: 1e-9,
        }
    }
}

impl StageConfig for DinamoS {
    const KIND: &'static str = "dinamo_s";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "DINAMO-S: EWMA reference with Poisson weights, reduced chi2 and pulls per run, per dataset";
    const INPUTS: (usize, usize) = (1, 1);

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        if let AutoOr::Value(a) = self.alpha
            && !(0.0..1.0).contains(&a)
        {
            return Err(StageError::Param {
                param: "alpha".into(),
                why: format!("{a} is not in [0, 1)"),
            });
        }
        if !(self.epsilon > 0.0) {
            return Err(StageError::Param {
                param: "epsilon".into(),
                why: "must be positive".into(),
            });
        }
        if !(self.alpha_step > 0.0 && self.alpha_step < 1.0) {
            return Err(StageError::Param {
                param: "alpha_step".into(),
                why: "must be in (0, 1)".into(),
            });
        }
        if self.historical_runs == 0
            && (self.alpha == AutoOr::Auto || self.threshold == AutoOr::Auto)
        {
            return Err(StageError::Param {
                param: "historical_runs".into(),
                why: "`auto` alpha or threshold needs historical runs to tune on".into(),
            });
        }
        Ok(())
    }
}

/// A run normalised to unit integral with its per-bin Poisson variance and
/// the update weight derived from it (computed once per run, reused by every
/// pass of the alpha scan).
#[derive(Debug, Clone)]
pub struct NormRun {
    pub integral: f64,
    pub x: Vec<f64>,
    pub var: Vec<f64>,
    /// omega = 1/(var + epsilon), the bin's weight in a reference update.
    pub omega: Vec<f64>,
}

impl NormRun {
    /// x~ = x/I and sigma^2 = x~/I - x~^2/I, with sigma = 1/I for empty bins.
    /// An empty run (I = 0) has x~ = 0 and no statistical uncertainty.
    pub fn new(counts: &[f64], epsilon: f64) -> Self {
        let integral: f64 = counts.iter().sum();
        let n = counts.len();
        if integral <= 0.0 {
            return Self {
                integral: 0.0,
                x: vec![0.0; n],
                var: vec![0.0; n],
                omega: vec![1.0 / epsilon; n],
            };
        }
        let inv = 1.0 / integral;
        let x: Vec<f64> = counts.iter().map(|c| c * inv).collect();
        let var: Vec<f64> = x
            .iter()
            .map(|&p| {
                if p > 0.0 {
                    (p - p * p) * inv
                } else {
                    inv * inv
                }
            })
            .collect();
        let omega = var.iter().map(|v| 1.0 / (v + epsilon)).collect();
        Self {
            integral,
            x,
            var,
            omega,
        }
    }
}

/// The evolving DINAMO-S reference and its EWMA accumulators. The
/// uncertainty is kept squared (`var_mu`); `sigma()` takes the root only
/// when a reference is reported.
#[derive(Debug, Clone)]
pub struct Reference {
    pub mu: Vec<f64>,
    pub var_mu: Vec<f64>,
    w: Vec<f64>,
    s_mu: Vec<f64>,
    s_sigma: Vec<f64>,
    alpha: f64,
}

impl Reference {
    /// Uniform reference with its Poisson uncertainty for I = N_b (const 1).
    pub fn uniform(n_bins: usize, alpha: f64, epsilon: f64) -> Self {
        let integral = n_bins as f64;
        let mu0 = 1.0 / n_bins as f64;
        let var0 = mu0 / integral - mu0 * mu0 / integral;
        let omega0 = 1.0 / (var0 + epsilon);
        Self {
            mu: vec![mu0; n_bins],
            var_mu: vec![var0; n_bins],
            w: vec![(1.0 - alpha) * omega0; n_bins],
            s_mu: vec![(1.0 - alpha) * omega0 * mu0; n_bins],
            s_sigma: vec![(1.0 - alpha) * omega0 * var0; n_bins],
            alpha,
        }
    }

    /// Per-bin uncertainty sigma_mu.
    pub fn sigma(&self) -> Vec<f64> {
        self.var_mu.iter().map(|v| v.sqrt()).collect()
    }

    /// Reduced chi-square of `run` against this reference.
    pub fn chi2(&self, run: &NormRun) -> f64 {
        // Four partial sums let the compiler vectorize the loop.
        let mut acc = [0.0f64; 4];
        let n = self.mu.len();
        let (x, v, m, vm) = (&run.x[..n], &run.var[..n], &self.mu[..n], &self.var_mu[..n]);
        for j in 0..n {
            let d = x[j] - m[j];
            acc[j % 4] += d * d / (v[j] + vm[j]).max(f64::MIN_POSITIVE);
        }
        (acc[0] + acc[1] + acc[2] + acc[3]) / n as f64
    }

    /// Per-bin pulls of `run` against this reference.
    pub fn pulls(&self, run: &NormRun) -> Vec<f64> {
        (0..self.mu.len())
            .map(|j| {
                (run.x[j] - self.mu[j])
                    / (run.var[j] + self.var_mu[j]).max(f64::MIN_POSITIVE).sqrt()
            })
            .collect()
    }

    /// Folds a good, non-empty run into the reference.
    pub fn update(&mut self, run: &NormRun) {
        let (a, b) = (self.alpha, 1.0 - self.alpha);
        let n = self.mu.len();
        let (x, omega) = (&run.x[..n], &run.omega[..n]);
        let (w, s_mu, s_sigma) = (
            &mut self.w[..n],
            &mut self.s_mu[..n],
            &mut self.s_sigma[..n],
        );
        let (mu, var_mu) = (&mut self.mu[..n], &mut self.var_mu[..n]);
        for j in 0..n {
            let d = x[j] - mu[j];
            w[j] = a * w[j] + b * omega[j];
            s_mu[j] = a * s_mu[j] + b * omega[j] * x[j];
            s_sigma[j] = a * s_sigma[j] + b * omega[j] * d * d;
            let inv = 1.0 / w[j];
            mu[j] = s_mu[j] * inv;
            var_mu[j] = s_sigma[j] * inv;
        }
    }
}

/// ln(chi2), finite even for a perfect match.
pub fn score_of(chi2: f64) -> f64 {
    chi2.max(f64::MIN_POSITIVE).ln()
}

/// Per-run results of one pass over a dataset.
struct Pass {
    chi2: Vec<f64>,
    pulls: Vec<Vec<f64>>,
    ref_mu: Vec<Vec<f64>>,
    ref_sigma: Vec<Vec<f64>>,
}

/// Runs DINAMO-S over `runs` (in order); keeps per-bin outputs if `keep`.
fn pass(runs: &[NormRun], good: &[bool], alpha: f64, epsilon: f64, keep: bool) -> Pass {
    let n_bins = runs.first().map_or(0, |r| r.x.len());
    let mut reference = Reference::uniform(n_bins, alpha, epsilon);
    let cap = if keep { runs.len() } else { 0 };
    let mut out = Pass {
        chi2: Vec::with_capacity(runs.len()),
        pulls: Vec::with_capacity(cap),
        ref_mu: Vec::with_capacity(cap),
        ref_sigma: Vec::with_capacity(cap),
    };
    for (run, &is_good) in runs.iter().zip(good) {
        out.chi2.push(reference.chi2(run));
        if keep {
            out.pulls.push(reference.pulls(run));
            out.ref_mu.push(reference.mu.clone());
            out.ref_sigma.push(reference.sigma());
        }
        if is_good && run.integral > 0.0 {
            reference.update(run);
        }
    }
    out
}

/// Reduced chi-square of every run (in order) against the evolving reference,
/// updated on good runs: DINAMO-S's core loop, exposed for benchmarks.
pub fn chi2_sequence(runs: &[NormRun], good: &[bool], alpha: f64, epsilon: f64) -> Vec<f64> {
    pass(runs, good, alpha, epsilon, false).chi2
}

/// The `dataset, run, label` columns every reference method writes first.
fn key_fields() -> Vec<Field> {
    vec![
        dqm_schemas::runs::dataset(),
        dqm_schemas::runs::run(),
        dqm_schemas::runs::label(),
    ]
}

/// One dataset's runs, validated and put in run order: what every reference
/// method (DINAMO-S, DINAMO-ML) consumes. Rows may arrive in any order.
pub struct DatasetRuns {
    pub dataset: i64,
    /// Input row of each run, in run order.
    order: Vec<u32>,
    /// Run numbers, ascending.
    pub runs: Vec<i64>,
    /// Truth per run (true: good, label 0), in run order.
    pub good: Vec<bool>,
    /// Normalized runs with their Poisson variances, in run order.
    pub norm: Vec<NormRun>,
    /// Raw counts, in run order.
    counts: Vec<Vec<f64>>,
}

impl DatasetRuns {
    /// Checks `batch` (one dataset of a table with `run, label, counts`):
    /// integer run numbers and labels 0/1 without nulls, the same number of
    /// bins everywhere, finite non-negative counts.
    pub fn parse(dataset: i64, batch: &RecordBatch, input: &str, epsilon: f64) -> Result<Self> {
        let ctx =
            |msg: String| StageError::Data(format!("input `{input}`, dataset {dataset}: {msg}"));
        let col = |name: &str| {
            batch
                .column(batch.schema().index_of(name).expect("checked by outputs()"))
                .clone()
        };
        let runs = cast_column(&col("run"), &DataType::Int64, input, "run")?;
        let labels = cast_column(&col("label"), &DataType::Int8, input, "label")?;
        if runs.null_count() > 0 || labels.null_count() > 0 {
            return Err(ctx("null run number or label".into()));
        }
        let runs = runs.as_primitive::<Int64Type>().values();
        let labels = labels.as_primitive::<Int8Type>().values();
        let mut counts = list_rows(&col("counts"), input, "counts")?;

        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_by_key(|&i| runs[i as usize]);
        let n_bins = order.first().map_or(0, |&i| counts[i as usize].len());
        let mut out = Self {
            dataset,
            runs: Vec::with_capacity(order.len()),
            good: Vec::with_capacity(order.len()),
            norm: Vec::with_capacity(order.len()),
            counts: Vec::with_capacity(order.len()),
            order: Vec::new(),
        };
        for &i in &order {
            let (i, run) = (i as usize, runs[i as usize]);
            let c = std::mem::take(&mut counts[i]);
            if c.len() != n_bins {
                return Err(ctx(format!(
                    "run {run} has {} bins, the first run has {n_bins}",
                    c.len()
                )));
            }
            if let Some(j) = c.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(ctx(format!(
                    "run {run}: column `counts`, bin {j} holds {}; counts must be finite and >= 0",
                    c[j]
                )));
            }
            match labels[i] {
                0 => out.good.push(true),
                1 => out.good.push(false),
                l => {
                    return Err(ctx(format!(
                        "run {run}: label {l} is neither 0 (good) nor 1 (bad)"
                    )));
                }
            }
            out.runs.push(run);
            out.norm.push(NormRun::new(&c, epsilon));
            out.counts.push(c);
        }
        out.order = order;
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn n_bins(&self) -> usize {
        self.norm.first().map_or(0, |r| r.x.len())
    }

    /// An error about this dataset.
    pub fn error(&self, msg: String) -> StageError {
        StageError::Data(format!("dataset {}: {msg}", self.dataset))
    }

    /// Bad-run truth of the first `historical` runs.
    pub fn bad_among_first(&self, historical: usize) -> Vec<bool> {
        self.good[..historical].iter().map(|g| !g).collect()
    }

    /// The error for an `auto` parameter that cannot be tuned because the
    /// historical runs lack good or bad examples.
    pub fn cannot_tune(&self, what: &str, historical: usize) -> StageError {
        let n_bad = self.good[..historical].iter().filter(|g| !**g).count();
        self.error(format!(
            "{what}: auto needs good and bad runs among the first {historical} runs (found {} good, {n_bad} bad); set it to a number",
            historical - n_bad
        ))
    }

    /// The threshold: `threshold` itself, or (auto) the one that maximises
    /// balanced accuracy on the first `historical` runs' scores.
    pub fn threshold(
        &self,
        threshold: AutoOr<f64>,
        scores: &[f64],
        historical: usize,
    ) -> Result<f64> {
        match threshold {
            AutoOr::Value(t) => Ok(t),
            AutoOr::Auto => {
                best_threshold(&scores[..historical], &self.bad_among_first(historical))
                    .ok_or_else(|| self.cannot_tune("threshold", historical))
            }
        }
    }

    /// The output batch (`schema` from [`score_schema`]) of `scored`, with
    /// the input's truth columns carried over from `batch`.
    pub fn to_batch(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
        scored: Scored,
    ) -> Result<RecordBatch> {
        let n = self.len();
        let scores: Vec<f64> = scored.chi2.iter().map(|&c| score_of(c)).collect();
        let take = UInt32Array::from(self.order.clone());
        let taken = |a: &ArrayRef| arrow::compute::take(a, &take, None);
        let label = batch.column(batch.schema().index_of("label")?).clone();
        let label = cast_column(&label, &DataType::Int8, "input", "label")?;
        let threshold = scored.threshold;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![self.dataset; n])),
            Arc::new(Int64Array::from(self.runs.clone())),
            taken(&label)?,
            Arc::new(Float64Array::from_iter_values(
                self.norm.iter().map(|r| r.integral),
            )),
            Arc::new(Float64Array::from(scored.chi2)),
            Arc::new(Float64Array::from(scores.clone())),
            Arc::new(BooleanArray::from_iter(
                scores.iter().map(|&s| Some(s > threshold)),
            )),
            Arc::new(f64_lists(scored.pulls.iter().map(Vec::as_slice))),
            Arc::new(f64_lists(scored.ref_mu.iter().map(Vec::as_slice))),
            Arc::new(f64_lists(scored.ref_sigma.iter().map(Vec::as_slice))),
            Arc::new(Float64Array::from(vec![scored.alpha; n])),
            Arc::new(Float64Array::from(vec![threshold; n])),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|k| Some(k < scored.historical)),
            )),
            Arc::new(f64_lists(self.counts.iter().map(Vec::as_slice))),
        ];
        for field in &schema.fields()[columns.len()..] {
            let col = batch.column(batch.schema().index_of(field.name())?);
            columns.push(taken(col)?);
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// What a reference method computed for each run of a dataset (run order).
pub struct Scored {
    pub chi2: Vec<f64>,
    pub pulls: Vec<Vec<f64>>,
    pub ref_mu: Vec<Vec<f64>>,
    pub ref_sigma: Vec<Vec<f64>>,
    /// The EWMA smoothing factor (DINAMO-S); `None` for methods without one.
    pub alpha: Option<f64>,
    pub threshold: f64,
    /// The first this many runs are the historical regime.
    pub historical: usize,
}

impl DinamoS {
    fn alpha_grid(&self) -> Vec<f64> {
        let n = (1.0 / self.alpha_step).round() as usize;
        (0..n)
            .map(|k| k as f64 * self.alpha_step)
            .filter(|&a| a < 1.0)
            .collect()
    }

    /// Scores one dataset and builds its output batch.
    fn score_dataset(
        &self,
        dataset: i64,
        batch: &RecordBatch,
        schema: &SchemaRef,
        input: &str,
    ) -> Result<RecordBatch> {
        let data = DatasetRuns::parse(dataset, batch, input, self.epsilon)?;
        let (norm, good) = (&data.norm, &data.good);
        let historical = self.historical_runs.min(data.len());
        let bad_hist = data.bad_among_first(historical);
        let alpha = match self.alpha {
            AutoOr::Value(a) => a,
            AutoOr::Auto => {
                let mut best: Option<(f64, f64)> = None;
                for a in self.alpha_grid() {
                    let p = pass(
                        &norm[..historical],
                        &good[..historical],
                        a,
                        self.epsilon,
                        false,
                    );
                    let scores: Vec<f64> = p.chi2.iter().map(|&c| score_of(c)).collect();
                    let auc = roc_auc(&scores, &bad_hist)
                        .ok_or_else(|| data.cannot_tune("alpha", historical))?;
                    if best.is_none_or(|(b, _)| auc > b) {
                        best = Some((auc, a));
                    }
                }
                best.map(|(_, a)| a)
                    .ok_or_else(|| data.cannot_tune("alpha", historical))?
            }
        };
        let full = pass(norm, good, alpha, self.epsilon, true);
        let scores: Vec<f64> = full.chi2.iter().map(|&c| score_of(c)).collect();
        let threshold = data.threshold(self.threshold, &scores, historical)?;
        data.to_batch(
            batch,
            schema,
            Scored {
                chi2: full.chi2,
                pulls: full.pulls,
                ref_mu: full.ref_mu,
                ref_sigma: full.ref_sigma,
                alpha: Some(alpha),
                threshold,
                historical,
            },
        )
    }
}

/// The output schema of a reference method given its input schema: keys,
/// scores, per-bin columns, then the input's truth columns that are present.
pub fn score_schema(input: &SchemaRef, name: &str) -> Result<SchemaRef> {
    let why = "a DINAMO reference scores histograms per run";
    require_column(input, name, "run", why, "an integer", is_integer)?;
    require_column(
        input,
        name,
        "label",
        why,
        "an integer (0 good, 1 bad)",
        is_integer,
    )?;
    require_column(
        input,
        name,
        "counts",
        why,
        "a list of numbers",
        is_numeric_list,
    )?;
    if input.index_of("dataset").is_ok() {
        require_column(input, name, "dataset", why, "an integer", is_integer)?;
    }
    let mut fields = key_fields();
    fields.extend(dqm_schemas::scores::score_fields());
    fields.push(dqm_schemas::runs::counts());
    for truth in dqm_schemas::runs::TRUTH_COLUMNS {
        if let Ok(f) = input.field_with_name(truth) {
            fields.push(f.clone());
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

impl Stage for DinamoS {
    fn shardable(&self) -> bool {
        true
    }

    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        expect_inputs(inputs.len(), 1)?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: score_schema(&inputs[0], "input")?,
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let schema = score_schema(&input.schema, &input.name)?;
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let progress = ctx.reporter.progress(0, "datasets");
        let chunk = 2 * rayon::current_num_threads();
        loop {
            let datasets = groups.next_chunk(chunk)?;
            if datasets.is_empty() {
                break;
            }
            let batches = par_map_counted(&datasets, progress.as_ref(), |(id, batch)| {
                self.score_dataset(*id, batch, &schema, &input.name)
            });
            for batch in batches {
                ctx.output.write("main", batch?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    /// A 3-bin example worked by hand.
    #[test]
    fn three_bin_chi2_and_update_by_hand() {
        let alpha = 0.5;
        let eps = 1e-9;
        let mut r = Reference::uniform(3, alpha, eps);
        // mu0 = 1/3, I = 3: var0 = (1/3)/3 - (1/9)/3 = 2/27.
        let var0: f64 = 2.0 / 27.0;
        assert!(close(r.mu[0], 1.0 / 3.0));
        assert!(close(r.sigma()[0], var0.sqrt()));

        // Run x = [2, 1, 1]: I = 4, x~ = [1/2, 1/4, 1/4], var = x~/4 - x~^2/4.
        let run = NormRun::new(&[2.0, 1.0, 1.0], eps);
        let var_x = [
            0.5 / 4.0 - 0.25 / 4.0,
            0.25 / 4.0 - 0.0625 / 4.0,
            0.25 / 4.0 - 0.0625 / 4.0,
        ];
        for (v, expected) in run.var.iter().zip(var_x) {
            assert!(close(*v, expected));
        }
        let expected_chi2 = ((0.5 - 1.0 / 3.0_f64).powi(2) / (var_x[0] + var0)
            + 2.0 * (0.25 - 1.0 / 3.0_f64).powi(2) / (var_x[1] + var0))
            / 3.0;
        assert!(close(r.chi2(&run), expected_chi2));
        let pull = r.pulls(&run);
        assert!(close(pull[0], (0.5 - 1.0 / 3.0) / (var_x[0] + var0).sqrt()));

        // Update: W1 = a W0 + (1-a) w, S_mu, S_sigma with (x~ - mu_before)^2.
        let omega0 = 1.0 / (var0 + eps);
        let omega = 1.0 / (var_x[0] + eps);
        let w1 = alpha * (1.0 - alpha) * omega0 + (1.0 - alpha) * omega;
        let s_mu = alpha * (1.0 - alpha) * omega0 / 3.0 + (1.0 - alpha) * omega * 0.5;
        let s_sig = alpha * (1.0 - alpha) * omega0 * var0
            + (1.0 - alpha) * omega * (0.5 - 1.0 / 3.0_f64).powi(2);
        r.update(&run);
        assert!(close(r.mu[0], s_mu / w1));
        assert!(close(r.sigma()[0], (s_sig / w1).sqrt()));
    }

    #[test]
    fn empty_bin_uses_one_over_integral() {
        let run = NormRun::new(&[4.0, 0.0, 6.0], 1e-9);
        assert!(close(run.var[1], 1.0 / 100.0));
        assert!(run.var[0] > 0.0);
    }

    #[test]
    fn zero_integral_run_gives_a_finite_score_and_no_update() {
        let r = Reference::uniform(4, 0.3, 1e-9);
        let empty = NormRun::new(&[0.0; 4], 1e-9);
        assert_eq!(empty.integral, 0.0);
        let chi2 = r.chi2(&empty);
        assert!(chi2.is_finite() && chi2 > 0.0);
        // mu0^2 / sigma0^2 per bin: (1/4)^2 / ((1/4)/4 - (1/16)/4) = 4/3.
        assert!(close(chi2, 4.0 / 3.0));
        let before = r.mu.clone();
        let out = pass(&[empty], &[true], 0.3, 1e-9, true);
        assert!(out.chi2[0].is_finite());
        r.chi2(&NormRun::new(&[1.0; 4], 1e-9));
        assert_eq!(r.mu, before);
    }

    #[test]
    fn reference_tracks_good_runs_not_bad_ones() {
        let good_shape = [10.0, 30.0, 60.0];
        let bad_shape = [60.0, 30.0, 10.0];
        let runs: Vec<NormRun> = (0..50)
            .map(|i| NormRun::new(if i % 5 == 4 { &bad_shape } else { &good_shape }, 1e-9))
            .collect();
        let good: Vec<bool> = (0..50).map(|i| i % 5 != 4).collect();
        let out = pass(&runs, &good, 0.5, 1e-9, true);
        let last = out.ref_mu.last().unwrap();
        assert!((last[2] - 0.6).abs() < 1e-6, "{last:?}");
        // Bad runs score far above good ones once the reference has converged.
        assert!(out.chi2[49] > 100.0 * out.chi2[48]);
    }
}
