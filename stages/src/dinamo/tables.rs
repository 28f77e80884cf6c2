//! The formats of the DINAMO family: a runs table read dataset by dataset
//! ([`DatasetGroups`]) and parsed into normalised runs ([`DatasetRuns`]),
//! and the score and bands tables every reference writes (DINAMO-S,
//! DINAMO-ML), so both produce the same columns and `dqm_metrics`, SQL and
//! plots read either. The table columns themselves are documented in
//! `dqm_schemas` (`runs`, `scores`, `bands`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int8Type, Int64Type, Schema, SchemaRef};

use super::alpha_scan::best_alpha;
use super::bands::{BandBuilder, RegimeBands};
use super::reference::{Constants, NormRun, alpha_grid, chi2_and_pulls, score_of};
use super::reference_net::UpdateStats;
use crate::arrow_util::{cast_column, f64_lists, is_integer, is_numeric_list, list_rows};
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::params::AutoOr;
use crate::stage::{OutputSpec, Shard};
use crate::stats::best_threshold;

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
    /// The generator's truth per run (in run order), when the input has it:
    /// what the Jaccard bands are computed in.
    truth: Option<Truth>,
}

/// Per-run truth of a generated dataset: the Gaussian's (mu, sigma) and the
/// histogram range.
pub struct Truth {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub lo: f64,
    pub hi: f64,
    /// The generator's `rapid_change` flag per run, when the input has the
    /// column (a good change of the detector's conditions at that run).
    pub rapid_change: Option<Vec<bool>>,
}

/// The truth columns the Jaccard bands need.
const TRUTH_FOR_BANDS: [&str; 4] = ["mu", "sigma", "lo", "hi"];

impl DatasetRuns {
    /// Checks `batch` (one dataset of a table with `run, label, counts`):
    /// integer run numbers and labels 0/1 without nulls, the same number of
    /// bins everywhere, finite non-negative counts.
    pub fn parse(dataset: i64, batch: &RecordBatch, input: &str, epsilon: f64) -> Result<Self> {
        let ctx =
            |msg: String| StageError::data(format!("input `{input}`, dataset {dataset}: {msg}"));
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .expect("checked by outputs()")
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
            truth: None,
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
        if TRUTH_FOR_BANDS
            .iter()
            .all(|c| batch.schema().index_of(c).is_ok())
            && !order.is_empty()
        {
            let floats = |name: &str| -> Result<Vec<f64>> {
                let c = cast_column(&col(name), &DataType::Float64, input, name)?;
                if c.null_count() > 0 {
                    return Err(ctx(format!("null in column `{name}`")));
                }
                let v = c.as_primitive::<Float64Type>().values();
                Ok(order.iter().map(|&i| v[i as usize]).collect())
            };
            let (lo, hi) = (floats("lo")?, floats("hi")?);
            let rapid_change = match batch.column_by_name("rapid_change") {
                Some(c) => {
                    let c = cast_column(c, &DataType::Boolean, input, "rapid_change")?;
                    if c.null_count() > 0 {
                        return Err(ctx("null in column `rapid_change`".into()));
                    }
                    let v = c.as_boolean();
                    Some(order.iter().map(|&i| v.value(i as usize)).collect())
                }
                None => None,
            };
            out.truth = Some(Truth {
                mu: floats("mu")?,
                sigma: floats("sigma")?,
                lo: lo[0],
                hi: hi[0],
                rapid_change,
            });
        }
        out.order = order;
        Ok(out)
    }

    /// The Jaccard bands of the historical and continual regimes (good,
    /// non-empty runs only), or `None` when the input has no truth columns.
    pub fn bands(&self, scored: &Scored) -> Option<[Option<RegimeBands>; 2]> {
        let truth = self.truth.as_ref()?;
        let n_bins = self.n_bins();
        let mut builders = [
            BandBuilder::new(truth.lo, truth.hi, n_bins),
            BandBuilder::new(truth.lo, truth.hi, n_bins),
        ];
        let historical = scored.historical.min(self.len());
        builders[0].reserve(historical);
        builders[1].reserve(self.len() - historical);
        for k in 0..self.len() {
            if !self.good[k] || self.norm[k].integral <= 0.0 {
                continue;
            }
            let regime = usize::from(k >= scored.historical);
            builders[regime].add(
                &self.norm[k].x,
                &scored.ref_mu[k],
                &scored.ref_sigma[k],
                truth.mu[k],
                truth.sigma[k],
            );
        }
        let [h, c] = builders;
        Some([h.finish(), c.finish()])
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Raw counts, in run order.
    pub fn counts(&self) -> &[Vec<f64>] {
        &self.counts
    }

    /// The generator's truth (mu, sigma, range), when the input has it.
    pub fn truth(&self) -> Option<&Truth> {
        self.truth.as_ref()
    }

    /// Tests: sets the truth's rapid-change flags.
    #[cfg(test)]
    pub fn set_rapid_changes(&mut self, flags: Vec<bool>) {
        self.truth
            .as_mut()
            .expect("a generated dataset")
            .rapid_change = Some(flags);
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn n_bins(&self) -> usize {
        self.norm.first().map_or(0, |r| r.x.len())
    }

    /// An error about this dataset.
    pub fn error(&self, msg: String) -> StageError {
        StageError::data(format!("dataset {}: {msg}", self.dataset))
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

    /// Alpha: `alpha` itself, or (auto) the value on the grid of `step`
    /// whose DINAMO-S pass over the first `historical` runs gives the score
    /// the highest ROC AUC (how `dinamo_s` tunes it, and environments built
    /// on DINAMO-S with it).
    pub fn alpha_for(
        &self,
        alpha: AutoOr<f64>,
        step: f64,
        constants: Constants,
        historical: usize,
    ) -> Result<f64> {
        match alpha {
            AutoOr::Value(a) => Ok(a),
            AutoOr::Auto => best_alpha(
                constants,
                &alpha_grid(step),
                &self.norm[..historical],
                &self.good[..historical],
                &self.bad_among_first(historical),
            )
            .ok_or_else(|| self.cannot_tune("alpha", historical)),
        }
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
    /// the input's truth columns carried over from `batch`; the per-bin
    /// columns are written when `schema` has them.
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
        let vectors = schema.index_of("ref_mu").is_ok();
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
        ];
        if vectors {
            columns.push(Arc::new(f64_lists(scored.pulls.iter().map(Vec::as_slice))));
            columns.push(Arc::new(f64_lists(scored.ref_mu.iter().map(Vec::as_slice))));
            columns.push(Arc::new(f64_lists(
                scored.ref_sigma.iter().map(Vec::as_slice),
            )));
        }
        columns.extend([
            Arc::new(Float64Array::from(vec![scored.alpha; n])) as ArrayRef,
            Arc::new(Float64Array::from(vec![threshold; n])),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|k| Some(k < scored.historical)),
            )),
        ]);
        if vectors {
            columns.push(Arc::new(f64_lists(self.counts.iter().map(Vec::as_slice))));
        }
        for field in &schema.fields()[columns.len()..] {
            let col = batch.column(batch.schema().index_of(field.name())?);
            columns.push(taken(col)?);
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The two tables a reference method writes for one dataset.
pub struct ScoreBatches {
    /// One row per run (`main`).
    pub main: RecordBatch,
    /// The Jaccard bands (`bands`), when the input has the truth columns.
    pub bands: Option<RecordBatch>,
}

impl DatasetRuns {
    /// Both output batches of `scored`.
    pub fn batches(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
        scored: Scored,
    ) -> Result<ScoreBatches> {
        let bands = self
            .bands(&scored)
            .map(|b| bands_batch(self.dataset, &b))
            .transpose()?;
        Ok(ScoreBatches {
            main: self.to_batch(batch, schema, scored)?,
            bands,
        })
    }
}

/// The outputs of a reference method: `main` (per run) and `bands` (the
/// Jaccard bands, empty without truth columns).
pub fn score_outputs(input: &SchemaRef, name: &str, vectors: bool) -> Result<Vec<OutputSpec>> {
    Ok(vec![
        OutputSpec {
            name: "main",
            schema: score_schema(input, name, vectors)?,
        },
        OutputSpec {
            name: "bands",
            schema: dqm_schemas::bands::schema(),
        },
    ])
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

impl Scored {
    /// Room for `n` runs of a method without an alpha (filled run by run;
    /// the threshold is set at the end), the first `historical` historical.
    pub fn empty(n: usize, historical: usize) -> Self {
        Self {
            chi2: Vec::with_capacity(n),
            pulls: Vec::with_capacity(n),
            ref_mu: Vec::with_capacity(n),
            ref_sigma: Vec::with_capacity(n),
            alpha: None,
            threshold: f64::NAN,
            historical,
        }
    }
}

/// Plan-time check of a runs table: the columns [`DatasetRuns::parse`]
/// reads (`run`, `label`, `counts`, and `dataset` when present); `why`
/// says who needs them.
pub fn require_run_columns(input: &SchemaRef, name: &str, why: &str) -> Result<()> {
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
    Ok(())
}

/// The output schema of a reference method given its input schema: keys,
/// scores, per-bin columns (with `vectors`: pulls, references and the
/// input's counts), then the input's truth columns that are present.
pub fn score_schema(input: &SchemaRef, name: &str, vectors: bool) -> Result<SchemaRef> {
    require_run_columns(input, name, "a DINAMO reference scores histograms per run")?;
    let mut fields = key_fields();
    fields.extend(dqm_schemas::scores::score_fields(vectors));
    if vectors {
        fields.push(dqm_schemas::runs::counts());
    }
    for truth in dqm_schemas::runs::TRUTH_COLUMNS {
        if let Ok(f) = input.field_with_name(truth) {
            fields.push(f.clone());
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The regimes, in the order `dqm_metrics` writes them.
pub const REGIMES: [&str; 2] = ["historical", "continual"];

/// One dataset's bands as rows of `dqm_schemas::bands::schema()`; regimes without good
/// runs have no rows.
pub fn bands_batch(dataset: i64, regimes: &[Option<RegimeBands>; 2]) -> Result<RecordBatch> {
    let (mut ds, mut regime, mut bin) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tm, mut ts, mut rm, mut rs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, bands) in REGIMES.iter().zip(regimes) {
        let Some(b) = bands else { continue };
        for j in 0..b.true_median.len() {
            ds.push(dataset);
            regime.push(*name);
            bin.push(j as i32);
            tm.push(b.true_median[j]);
            ts.push(b.true_std[j]);
            rm.push(b.ref_median[j]);
            rs.push(b.ref_sigma[j]);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ds)),
        Arc::new(StringArray::from(regime)),
        Arc::new(Int32Array::from(bin)),
        Arc::new(Float64Array::from(tm)),
        Arc::new(Float64Array::from(ts)),
        Arc::new(Float64Array::from(rm)),
        Arc::new(Float64Array::from(rs)),
    ];
    Ok(RecordBatch::try_new(dqm_schemas::bands::schema(), columns)?)
}

/// Splits a table into its datasets while streaming it, so a stage holds one
/// chunk of datasets in memory, not the whole table.
///
/// Rows of one dataset must be contiguous (as every stage here writes them);
/// a dataset id that reappears after another is an error asking the user to
/// sort the table. Without a `dataset` column the table is dataset 0.
pub struct DatasetGroups<'a> {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'a>,
    input: String,
    dataset_column: Option<usize>,
    /// The datasets of this shard (all when `None`).
    keep: Option<HashSet<i64>>,
    current: Option<i64>,
    pending: Vec<RecordBatch>,
    seen: HashSet<i64>,
    ready: VecDeque<(i64, RecordBatch)>,
    done: bool,
}

impl<'a> DatasetGroups<'a> {
    pub fn new(input: &'a Input) -> Self {
        Self {
            batches: Box::new(input.batches()),
            input: input.name.clone(),
            dataset_column: input.schema.index_of("dataset").ok(),
            keep: None,
            current: None,
            pending: Vec::new(),
            seen: HashSet::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// The datasets of one shard: the input's datasets (in input order) are
    /// split into `shard.count` contiguous blocks and only the row groups
    /// holding block `shard.index` are read.
    pub fn for_shard(input: &'a Input, shard: Shard) -> Result<Self> {
        if shard == Shard::WHOLE || input.schema.index_of("dataset").is_err() {
            // Without a dataset column the table is one dataset: shard 0 has it.
            let mut groups = Self::new(input);
            if shard.index > 0 {
                groups.done = true;
            }
            return Ok(groups);
        }
        let keys = input.row_group_keys("dataset")?;
        let mut order: Vec<i64> = Vec::new();
        for k in keys.iter().flatten().flatten() {
            if order.last() != Some(k) {
                order.push(*k);
            }
        }
        let mine: HashSet<i64> = order[shard.range(order.len())].iter().copied().collect();
        let selection: Vec<Vec<usize>> = keys
            .iter()
            .map(|groups| {
                (0..groups.len())
                    .filter(|&g| groups[g].iter().any(|k| mine.contains(k)))
                    .collect()
            })
            .collect();
        let mut groups = Self::new(input);
        groups.batches = Box::new(input.batches_in(selection));
        groups.keep = Some(mine);
        Ok(groups)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(id) = self.current.take() {
            if self.keep.as_ref().is_some_and(|keep| !keep.contains(&id)) {
                // Another shard's dataset sharing a row group with ours.
                self.pending.clear();
                return Ok(());
            }
            let schema = self.pending[0].schema();
            let batch = arrow::compute::concat_batches(&schema, &self.pending)?;
            self.pending.clear();
            self.ready.push_back((id, batch));
        }
        Ok(())
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(col) = self.dataset_column else {
            self.current.get_or_insert(0);
            self.pending.push(batch);
            return Ok(());
        };
        let ids = cast_column(batch.column(col), &DataType::Int64, &self.input, "dataset")?;
        if ids.null_count() > 0 {
            return Err(StageError::data(format!(
                "input `{}`: null in column `dataset`",
                self.input
            )));
        }
        let ids = ids.as_primitive::<Int64Type>().values();
        let mut start = 0;
        while start < ids.len() {
            let id = ids[start];
            let mut end = start + 1;
            while end < ids.len() && ids[end] == id {
                end += 1;
            }
            if self.current != Some(id) {
                self.flush()?;
                if !self.seen.insert(id) {
                    return Err(StageError::data(format!(
                        "input `{}`: rows of dataset {id} are not contiguous; sort the table by dataset",
                        self.input
                    )));
                }
                self.current = Some(id);
            }
            self.pending.push(batch.slice(start, end - start));
            start = end;
        }
        Ok(())
    }

    /// Up to `n` complete datasets, in input order; empty at the end.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<(i64, RecordBatch)>> {
        while self.ready.len() < n && !self.done {
            match self.batches.next() {
                Some(batch) => self.push(batch?)?,
                None => {
                    self.done = true;
                    self.flush()?;
                }
            }
        }
        let take = n.min(self.ready.len());
        Ok(self.ready.drain(..take).collect())
    }
}

/// Scores run `k` of `data` against a predicted (μ̂, σ̂) into `scored`;
/// a non-finite prediction is an error naming the run.
pub fn record_prediction(
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

/// The `updates` table of one dataset: one row per online update.
pub fn updates_batch(dataset: i64, runs: &[i64], updates: &[UpdateStats]) -> Result<RecordBatch> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dinamo::generator::RunGenerator;
    use crate::dinamo::{dinamo_s, dqm_metrics, synth_runs};
    use crate::in_memory::{input_from_batch, run_in_memory, run_shard_in_memory};
    use crate::stage::Stage;

    /// Runs `stage` whole and as `count` shards; returns (whole, concatenated parts) of `output`.
    fn whole_and_sharded(
        stage: &dyn Stage,
        inputs: &[Input],
        output: &str,
        count: usize,
    ) -> (RecordBatch, RecordBatch) {
        let whole = run_in_memory(stage, inputs).unwrap().table(output);
        let parts: Vec<RecordBatch> = (0..count)
            .flat_map(|index| {
                let out = run_shard_in_memory(stage, inputs, Shard { index, count }).unwrap();
                out.tables.get(output).cloned().unwrap_or_default()
            })
            .collect();
        let joined = arrow::compute::concat_batches(&whole.schema(), &parts).unwrap();
        (whole, joined)
    }

    #[test]
    fn shards_concatenated_in_order_are_the_whole_output() {
        let dir = tempfile::tempdir().unwrap();
        let synth = synth_runs::SynthRuns(RunGenerator {
            seed_range: Some([0, 5]),
            n_runs: 120,
            n_bad: 12,
            ..Default::default()
        });
        let (whole, parts) = whole_and_sharded(&synth, &[], "main", 3);
        assert_eq!(whole, parts);
        // Two files, as two upstream shards would leave them.
        let a = input_from_batch("a", &whole.slice(0, 240), &dir.path().join("a.parquet")).unwrap();
        let b =
            input_from_batch("b", &whole.slice(240, 360), &dir.path().join("b.parquet")).unwrap();
        let runs = Input {
            name: "runs".into(),
            schema: a.schema.clone(),
            files: vec![a.files[0].clone(), b.files[0].clone()],
        };
        let s = dinamo_s::DinamoS {
            historical_runs: 40,
            ..Default::default()
        };
        let (whole, parts) = whole_and_sharded(&s, std::slice::from_ref(&runs), "main", 4);
        assert_eq!(whole.num_rows(), 600);
        assert_eq!(whole, parts);
        let scores = input_from_batch("scores", &whole, &dir.path().join("s.parquet")).unwrap();
        let m = dqm_metrics::DqmMetrics::default();
        let (whole, parts) = whole_and_sharded(&m, std::slice::from_ref(&scores), "main", 2);
        assert_eq!(whole, parts);
        // The summary is recombined from the concatenated per-dataset rows.
        let main = input_from_batch("main", &parts, &dir.path().join("m.parquet")).unwrap();
        let mut recombined = crate::in_memory::MemoryOutput::default();
        m.recombine(
            &std::collections::BTreeMap::from([("main".to_string(), main)]),
            &mut recombined,
            dir.path(),
        )
        .unwrap();
        let summary = run_in_memory(&m, &[scores]).unwrap().table("summary");
        assert_eq!(recombined.table("summary"), summary);
    }

    #[test]
    fn batch_has_a_row_per_regime_and_bin() {
        let b = RegimeBands {
            true_median: vec![1.0, 2.0],
            true_std: vec![0.1, 0.2],
            ref_median: vec![1.0, 2.0],
            ref_sigma: vec![0.1, 0.2],
        };
        let batch = bands_batch(7, &[None, Some(b)]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), dqm_schemas::bands::schema());
    }
}
