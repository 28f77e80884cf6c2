//! `dqm_metrics`: the quality metrics of the DINAMO paper (section 3) per
//! dataset and regime, and their medians with 95% intervals over datasets.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int8Type, Int32Type, Int64Type, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::bands::{BandBuilder, RegimeBands};
use super::tables::{DatasetGroups, REGIMES};
use crate::arrow_util::{cast_column, is_integer, list_rows};
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::parallel::par_map_counted;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::{median_and_95, rates};
use dqm_schemas::metrics::{METRICS, per_dataset, summary};

/// How the Jaccard distance's two 1-sigma bands are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JaccardBands {
    /// The paper's reference code (see `dinamo/bands.rs`): densities on the
    /// bin centres; true band median -+ std of the good runs, predicted band
    /// median of the references -+ mean of their uncertainties.
    Reference,
    /// This project's earlier reading: both bands averaged (mean -+ sample
    /// std; mean of ref -+ sigma) on a common z grid of `z_points` points
    /// over [-z_range, z_range], overlap over union of the two bands only.
    /// Needs the per-run vectors.
    Grid,
}

/// Scores a per-run table (from `dinamo_s` or any method writing its columns).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DqmMetrics {
    /// How the Jaccard distance's bands are formed: `reference` (the paper's
    /// code) or `grid`. With a second input (a reference stage's `bands`
    /// table) the bands are read from it (`reference` only).
    pub jaccard: JaccardBands,
    /// `grid` only: half-width of the common z-score grid.
    pub z_range: f64,
    /// `grid` only: points of that grid.
    pub z_points: usize,
}

impl Default for DqmMetrics {
    fn default() -> Self {
        Self {
            jaccard: JaccardBands::Reference,
            z_range: 4.0,
            z_points: 161,
        }
    }
}

impl StageConfig for DqmMetrics {
    const KIND: &'static str = "dqm_metrics";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Balanced accuracy, sensitivity, specificity, adaptation time and Jaccard distance per dataset and regime, plus medians and 95% intervals";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str = "scores, optional bands";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![
            super::tables::score_schema(&dqm_schemas::runs::schema(), "runs", true)
                .expect("runs schema is valid"),
            dqm_schemas::bands::schema(),
        ]
    }

    fn validate(&self) -> Result<()> {
        if !(self.z_range > 0.0) || self.z_points < 2 {
            return Err(StageError::param(
                "z_range",
                "needs z_range > 0 and z_points >= 2",
            ));
        }
        Ok(())
    }
}

/// Columns the Jaccard distance needs; without any of them it is null.
const BAND_COLUMNS: [&str; 7] = ["counts", "ref_mu", "ref_sigma", "mu", "sigma", "lo", "hi"];

/// One dataset's runs in run order, as plain vectors.
struct Runs {
    bad: Vec<bool>,
    flagged: Vec<bool>,
    historical: Vec<bool>,
    rapid: Option<Vec<bool>>,
    bands: Option<Bands>,
    /// The dataset's bands from a `bands` input (historical, continual).
    regime_bands: Option<[Option<RegimeBands>; 2]>,
}

/// Per-run inputs of the Jaccard distance, in run order.
pub struct Bands {
    pub counts: Vec<Vec<f64>>,
    pub ref_mu: Vec<Vec<f64>>,
    pub ref_sigma: Vec<Vec<f64>>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

/// Metric values of one regime of one dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegimeMetrics {
    pub n_runs: i64,
    pub n_bad: i64,
    pub balanced_accuracy: Option<f64>,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    pub adaptation_time: Option<f64>,
    pub n_changes: i64,
    pub jaccard: Option<f64>,
}

impl RegimeMetrics {
    fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "balanced_accuracy" => self.balanced_accuracy,
            "sensitivity" => self.sensitivity,
            "specificity" => self.specificity,
            "adaptation_time" => self.adaptation_time,
            "jaccard" => self.jaccard,
            _ => unreachable!("unknown metric {name}"),
        }
    }
}

/// For every rapid change among `changes` (positions in run order), the good
/// runs flagged before the first unflagged good run, counted from the change
/// up to the next change.
pub fn adaptation_times(
    bad: &[bool],
    flagged: &[bool],
    rapid: &[bool],
    changes: &[usize],
) -> Vec<f64> {
    changes
        .iter()
        .map(|&start| {
            let end = (start + 1..rapid.len())
                .find(|&k| rapid[k])
                .unwrap_or(rapid.len());
            let mut missed = 0;
            for k in start..end {
                if bad[k] {
                    continue;
                }
                if !flagged[k] {
                    break;
                }
                missed += 1;
            }
            missed as f64
        })
        .collect()
}

/// Linear interpolation of (xs, ys) at x; `None` outside [xs[0], xs[last]].
fn interp(xs: &[f64], ys: &[f64], x: f64) -> Option<f64> {
    if xs.is_empty() || x < xs[0] || x > xs[xs.len() - 1] {
        return None;
    }
    let k = xs.partition_point(|&v| v <= x).clamp(1, xs.len() - 1);
    let (x0, x1) = (xs[k - 1], xs[k]);
    let t = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
    Some(ys[k - 1] + t * (ys[k] - ys[k - 1]))
}

/// The reference code's bands of the good runs `rows` from per-run vectors.
fn reference_bands(bands: &Bands, rows: &[usize]) -> Option<RegimeBands> {
    let first = *rows.first()?;
    let mut builder = BandBuilder::new(bands.lo[first], bands.hi[first], bands.counts[first].len());
    for &r in rows {
        let integral: f64 = bands.counts[r].iter().sum();
        if integral <= 0.0 {
            continue;
        }
        let x: Vec<f64> = bands.counts[r].iter().map(|c| c / integral).collect();
        builder.add(
            &x,
            &bands.ref_mu[r],
            &bands.ref_sigma[r],
            bands.mu[r],
            bands.sigma[r],
        );
    }
    builder.finish()
}

/// Every dataset's bands from a `bands` table (rows in any order).
fn read_bands(input: &Input) -> Result<HashMap<i64, [Option<RegimeBands>; 2]>> {
    let expected = dqm_schemas::bands::schema();
    for field in expected.fields() {
        require_column(
            &input.schema,
            &input.name,
            field.name(),
            "dqm_metrics reads the Jaccard bands of a reference stage's `bands` output",
            &field.data_type().to_string(),
            |t| t == field.data_type(),
        )?;
    }
    // (bin, [true_median, true_std, ref_median, ref_sigma]) per (dataset, regime).
    type BinRows = Vec<(i32, [f64; 4])>;
    let mut rows: HashMap<(i64, usize), BinRows> = HashMap::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).expect("checked above");
        let (ds, regime, bin) = (
            col("dataset").as_primitive::<Int64Type>(),
            col("regime").as_string::<i32>(),
            col("bin").as_primitive::<Int32Type>(),
        );
        let values = ["true_median", "true_std", "ref_median", "ref_sigma"]
            .map(|c| col(c).as_primitive::<Float64Type>().clone());
        for i in 0..batch.num_rows() {
            let slot = REGIMES
                .iter()
                .position(|r| *r == regime.value(i))
                .ok_or_else(|| {
                    StageError::data(format!(
                        "input `{}`: column `regime` holds `{}`, not historical or continual",
                        input.name,
                        regime.value(i)
                    ))
                })?;
            rows.entry((ds.value(i), slot))
                .or_default()
                .push((bin.value(i), values.each_ref().map(|v| v.value(i))));
        }
    }
    let mut out: HashMap<i64, [Option<RegimeBands>; 2]> = HashMap::new();
    for ((dataset, slot), mut bins) in rows {
        bins.sort_by_key(|b| b.0);
        let pick = |k: usize| bins.iter().map(|b| b.1[k]).collect();
        out.entry(dataset).or_default()[slot] = Some(RegimeBands {
            true_median: pick(0),
            true_std: pick(1),
            ref_median: pick(2),
            ref_sigma: pick(3),
        });
    }
    Ok(out)
}

impl DqmMetrics {
    /// `grid` Jaccard distance between the predicted band (mean of ref_mu -+ ref_sigma)
    /// and the empirical band (mean -+ std of the good runs), both as densities
    /// in the z-score space of each run's truth (mu, sigma), on a common grid.
    pub fn grid_jaccard(&self, bands: &Bands, rows: &[usize]) -> Option<f64> {
        let grid: Vec<f64> = (0..self.z_points)
            .map(|k| -self.z_range + 2.0 * self.z_range * k as f64 / (self.z_points - 1) as f64)
            .collect();
        let g = grid.len();
        let (mut n, mut sum, mut sum2, mut plo, mut phi) = (
            vec![0.0; g],
            vec![0.0; g],
            vec![0.0; g],
            vec![0.0; g],
            vec![0.0; g],
        );
        for &r in rows {
            let counts = &bands.counts[r];
            let integral: f64 = counts.iter().sum();
            let (n_bins, sigma) = (counts.len(), bands.sigma[r]);
            if integral <= 0.0 || n_bins == 0 || !(sigma > 0.0) {
                continue;
            }
            let width = (bands.hi[r] - bands.lo[r]) / n_bins as f64;
            let scale = sigma / width;
            let z: Vec<f64> = (0..n_bins)
                .map(|j| (bands.lo[r] + (j as f64 + 0.5) * width - bands.mu[r]) / sigma)
                .collect();
            let emp: Vec<f64> = counts.iter().map(|c| c / integral * scale).collect();
            let lo: Vec<f64> = bands.ref_mu[r]
                .iter()
                .zip(&bands.ref_sigma[r])
                .map(|(m, s)| (m - s) * scale)
                .collect();
            let hi: Vec<f64> = bands.ref_mu[r]
                .iter()
                .zip(&bands.ref_sigma[r])
                .map(|(m, s)| (m + s) * scale)
                .collect();
            for (k, &zk) in grid.iter().enumerate() {
                if let (Some(e), Some(l), Some(h)) = (
                    interp(&z, &emp, zk),
                    interp(&z, &lo, zk),
                    interp(&z, &hi, zk),
                ) {
                    n[k] += 1.0;
                    sum[k] += e;
                    sum2[k] += e * e;
                    plo[k] += l;
                    phi[k] += h;
                }
            }
        }
        let (mut inter, mut union) = (0.0, 0.0);
        for k in 0..g {
            if n[k] < 2.0 {
                continue;
            }
            let mean = sum[k] / n[k];
            let std = ((sum2[k] / n[k] - mean * mean).max(0.0) * n[k] / (n[k] - 1.0)).sqrt();
            let (e_lo, e_hi) = (mean - std, mean + std);
            let (p_lo, p_hi) = (plo[k] / n[k], phi[k] / n[k]);
            let overlap = (e_hi.min(p_hi) - e_lo.max(p_lo)).max(0.0);
            inter += overlap;
            union += (e_hi - e_lo) + (p_hi - p_lo).max(0.0) - overlap;
        }
        (union > 0.0).then(|| 1.0 - inter / union)
    }

    fn regime(&self, runs: &Runs, historical: bool) -> RegimeMetrics {
        let rows: Vec<usize> = (0..runs.bad.len())
            .filter(|&k| runs.historical[k] == historical)
            .collect();
        let bad: Vec<bool> = rows.iter().map(|&k| runs.bad[k]).collect();
        let flagged: Vec<bool> = rows.iter().map(|&k| runs.flagged[k]).collect();
        let (sensitivity, specificity, balanced_accuracy) = rates(&flagged, &bad);
        let (adaptation_time, n_changes) = match &runs.rapid {
            Some(rapid) => {
                let changes: Vec<usize> = rows.iter().copied().filter(|&k| rapid[k]).collect();
                let times = adaptation_times(&runs.bad, &runs.flagged, rapid, &changes);
                let mean =
                    (!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64);
                (mean, changes.len() as i64)
            }
            None => (None, 0),
        };
        let slot = usize::from(!historical);
        let jaccard = match (&runs.regime_bands, &runs.bands) {
            (Some(given), _) => given[slot].as_ref().map(RegimeBands::jaccard),
            (None, Some(b)) => {
                let good: Vec<usize> = rows.iter().copied().filter(|&k| !runs.bad[k]).collect();
                match self.jaccard {
                    JaccardBands::Reference => reference_bands(b, &good).map(|b| b.jaccard()),
                    JaccardBands::Grid => self.grid_jaccard(b, &good),
                }
            }
            (None, None) => None,
        };
        RegimeMetrics {
            n_runs: rows.len() as i64,
            n_bad: bad.iter().filter(|&&b| b).count() as i64,
            balanced_accuracy,
            sensitivity,
            specificity,
            adaptation_time,
            n_changes,
            jaccard,
        }
    }

    fn dataset(
        &self,
        batch: &RecordBatch,
        input: &str,
        regime_bands: Option<[Option<RegimeBands>; 2]>,
    ) -> Result<[RegimeMetrics; 2]> {
        let schema = batch.schema();
        let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).clone());
        let need = |name: &str| col(name).expect("checked by outputs()");
        let runs = cast_column(&need("run"), &DataType::Int64, input, "run")?;
        let mut order: Vec<usize> = (0..batch.num_rows()).collect();
        order.sort_by_key(|&i| runs.as_primitive::<Int64Type>().value(i));
        let labels = cast_column(&need("label"), &DataType::Int8, input, "label")?;
        let bools = |name: &str| -> Option<Vec<bool>> {
            col(name).map(|c| {
                let c = c.as_boolean();
                order.iter().map(|&i| c.value(i)).collect()
            })
        };
        let labels = labels.as_primitive::<Int8Type>();
        let floats = |name: &str| -> Result<Vec<f64>> {
            let c = cast_column(&need(name), &DataType::Float64, input, name)?;
            let c = c.as_primitive::<Float64Type>();
            Ok(order.iter().map(|&i| c.value(i)).collect())
        };
        let lists = |name: &str| -> Result<Vec<Vec<f64>>> {
            let mut rows = list_rows(&need(name), input, name)?;
            Ok(order
                .iter()
                .map(|&i| std::mem::take(&mut rows[i]))
                .collect())
        };
        let bands = if BAND_COLUMNS.iter().all(|c| col(c).is_some()) {
            Some(Bands {
                counts: lists("counts")?,
                ref_mu: lists("ref_mu")?,
                ref_sigma: lists("ref_sigma")?,
                mu: floats("mu")?,
                sigma: floats("sigma")?,
                lo: floats("lo")?,
                hi: floats("hi")?,
            })
        } else {
            None
        };
        let runs = Runs {
            bad: order.iter().map(|&i| labels.value(i) != 0).collect(),
            flagged: bools("flagged").expect("checked"),
            historical: bools("historical").expect("checked"),
            rapid: bools("rapid_change"),
            bands,
            regime_bands,
        };
        Ok([self.regime(&runs, true), self.regime(&runs, false)])
    }
}

fn check_input(schema: &SchemaRef, name: &str) -> Result<()> {
    let why = "dqm_metrics reads a per-run score table";
    for column in ["run", "label"] {
        require_column(schema, name, column, why, "an integer", is_integer)?;
    }
    for column in ["flagged", "historical"] {
        require_column(schema, name, column, why, "Boolean", |t| {
            t == &DataType::Boolean
        })?;
    }
    if schema.index_of("rapid_change").is_ok() {
        require_column(schema, name, "rapid_change", why, "Boolean", |t| {
            t == &DataType::Boolean
        })?;
    }
    Ok(())
}

impl Stage for DqmMetrics {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        check_input(&inputs[0], "input")?;
        if inputs.len() == 2 && self.jaccard == JaccardBands::Grid {
            return Err(StageError::param(
                "jaccard",
                "`grid` is computed from per-run vectors; a `bands` input holds `reference` bands only",
            ));
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: per_dataset(),
            },
            OutputSpec {
                name: "summary",
                schema: summary(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        check_input(&input.schema, &input.name)?;
        let given_bands = ctx.inputs.get(1).map(read_bands).transpose()?;
        let mut groups = DatasetGroups::for_shard(input, ctx.shard)?;
        let mut all: Vec<(i64, [RegimeMetrics; 2])> = Vec::new();
        let progress = ctx.reporter.progress(0, "datasets");
        loop {
            let chunk = groups.next_chunk(2 * rayon::current_num_threads())?;
            if chunk.is_empty() {
                break;
            }
            let results = par_map_counted(&chunk, progress.as_ref(), |(id, batch)| {
                let bands = given_bands
                    .as_ref()
                    .map(|all| all.get(id).cloned().unwrap_or_default());
                self.dataset(batch, &input.name, bands)
            });
            for ((id, _), r) in chunk.iter().zip(results) {
                all.push((*id, r?));
            }
        }
        if all.is_empty() {
            if ctx.shard.count > 1 {
                // A shard with no dataset (more shards than datasets).
                return Ok(());
            }
            return Err(StageError::data(format!(
                "input `{}` has no rows",
                input.name
            )));
        }
        ctx.output.write("main", per_dataset_batch(&all)?)?;
        ctx.output.write("summary", summary_batch(&all)?)?;
        Ok(())
    }

    fn shardable(&self) -> bool {
        true
    }

    fn recombined_outputs(&self) -> &'static [&'static str] {
        &["summary"]
    }

    /// The summary over all datasets, from the shards' per-dataset rows.
    fn recombine(
        &self,
        tables: &std::collections::BTreeMap<String, crate::input::Input>,
        output: &mut dyn crate::stage::OutputWriter,
        _artifacts: &std::path::Path,
    ) -> Result<()> {
        let main = &tables["main"];
        let mut all: Vec<(i64, [RegimeMetrics; 2])> = Vec::new();
        for batch in main.batches() {
            let batch = batch?;
            let col = |name: &str| batch.column_by_name(name).expect("declared output");
            let ids = col("dataset").as_primitive::<Int64Type>();
            let regime = col("regime").as_string::<i32>();
            let int = |name: &str, i: usize| col(name).as_primitive::<Int64Type>().value(i);
            let float = |name: &str, i: usize| {
                let c = col(name).as_primitive::<Float64Type>();
                c.is_valid(i).then(|| c.value(i))
            };
            for i in 0..batch.num_rows() {
                let m = RegimeMetrics {
                    n_runs: int("n_runs", i),
                    n_bad: int("n_bad", i),
                    balanced_accuracy: float("balanced_accuracy", i),
                    sensitivity: float("sensitivity", i),
                    specificity: float("specificity", i),
                    adaptation_time: float("adaptation_time", i),
                    n_changes: int("n_changes", i),
                    jaccard: float("jaccard", i),
                };
                let id = ids.value(i);
                if all.last().is_none_or(|(last, _)| *last != id) {
                    all.push((id, Default::default()));
                }
                let slot = REGIMES
                    .iter()
                    .position(|r| *r == regime.value(i))
                    .ok_or_else(|| {
                        StageError::data(format!("unknown regime `{}`", regime.value(i)))
                    })?;
                all.last_mut().expect("pushed").1[slot] = m;
            }
        }
        if all.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no rows",
                main.name
            )));
        }
        output.write("summary", summary_batch(&all)?)
    }
}

fn per_dataset_batch(all: &[(i64, [RegimeMetrics; 2])]) -> Result<RecordBatch> {
    let rows: Vec<(i64, &str, &RegimeMetrics)> = all
        .iter()
        .flat_map(|(id, m)| REGIMES.iter().zip(m).map(move |(r, m)| (*id, *r, m)))
        .collect();
    let f = |get: fn(&RegimeMetrics) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(
            rows.iter().map(|r| get(r.2)).collect::<Vec<_>>(),
        ))
    };
    let i = |get: fn(&RegimeMetrics) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| get(r.2))))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        i(|m| m.n_runs),
        i(|m| m.n_bad),
        f(|m| m.balanced_accuracy),
        f(|m| m.sensitivity),
        f(|m| m.specificity),
        f(|m| m.adaptation_time),
        i(|m| m.n_changes),
        f(|m| m.jaccard),
    ];
    Ok(RecordBatch::try_new(per_dataset(), columns)?)
}

fn summary_batch(all: &[(i64, [RegimeMetrics; 2])]) -> Result<RecordBatch> {
    let (mut regime, mut metric, mut n, mut median, mut q025, mut q975, mut mean) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (r, name) in REGIMES.iter().enumerate() {
        for m in METRICS {
            let mut values: Vec<f64> = all.iter().filter_map(|(_, v)| v[r].metric(m)).collect();
            let [med, lo, hi] = median_and_95(&mut values);
            regime.push(*name);
            metric.push(m);
            n.push(values.len() as i64);
            median.push(med);
            q025.push(lo);
            q975.push(hi);
            mean.push(
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
            );
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(regime)),
        Arc::new(StringArray::from(metric)),
        Arc::new(Int64Array::from(n)),
        Arc::new(Float64Array::from(median)),
        Arc::new(Float64Array::from(q025)),
        Arc::new(Float64Array::from(q975)),
        Arc::new(Float64Array::from(mean)),
    ];
    Ok(RecordBatch::try_new(summary(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptation_time_counts_flagged_good_runs_until_recovery() {
        // Change at 0: good runs 0,1 flagged, 2 bad (skipped), 3 good unflagged -> 2.
        // Change at 5: good run 5 unflagged -> 0.
        // Change at 7: never recovers before the end -> all 2 flagged good runs.
        let bad = [false, false, true, false, false, false, false, false, false];
        let flagged = [true, true, true, false, true, false, true, true, true];
        let rapid = [true, false, false, false, false, true, false, true, false];
        let times = adaptation_times(&bad, &flagged, &rapid, &[0, 5, 7]);
        assert_eq!(times, vec![2.0, 0.0, 2.0]);
    }

    #[test]
    fn jaccard_is_zero_for_matching_bands_and_one_for_disjoint() {
        // A grid on the bin centres (z = -2..2), where interpolation is exact.
        let m = DqmMetrics {
            jaccard: JaccardBands::Grid,
            z_range: 2.0,
            z_points: 5,
        };
        // Runs drawn around a fixed shape; the predicted band = empirical band.
        let shape = [0.1, 0.2, 0.4, 0.2, 0.1];
        let wobble = [0.02, -0.02];
        let counts: Vec<Vec<f64>> = wobble
            .iter()
            .map(|w| {
                shape
                    .iter()
                    .enumerate()
                    .map(|(j, s)| 1000.0 * (s + if j == 2 { *w } else { 0.0 }))
                    .collect()
            })
            .collect();
        let n = counts.len();
        let x: Vec<Vec<f64>> = counts
            .iter()
            .map(|c| {
                let i: f64 = c.iter().sum();
                c.iter().map(|v| v / i).collect()
            })
            .collect();
        let mean: Vec<f64> = (0..5)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let std: Vec<f64> = (0..5)
            .map(|j| {
                (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
            })
            .collect();
        let bands = |ref_mu: Vec<f64>| Bands {
            counts: counts.clone(),
            ref_mu: vec![ref_mu; n],
            ref_sigma: vec![std.clone(); n],
            mu: vec![0.0; n],
            sigma: vec![1.0; n],
            lo: vec![-2.5; n],
            hi: vec![2.5; n],
        };
        let same = m.grid_jaccard(&bands(mean.clone()), &[0, 1]).unwrap();
        assert!(same < 1e-9, "{same}");
        let shifted = m
            .grid_jaccard(
                &bands(mean.iter().zip(&std).map(|(v, s)| v + s).collect()),
                &[0, 1],
            )
            .unwrap();
        assert!(shifted > same + 0.2, "{shifted} vs {same}");
        let far = m
            .grid_jaccard(&bands(mean.iter().map(|v| v + 10.0).collect()), &[0, 1])
            .unwrap();
        assert!((far - 1.0).abs() < 1e-9, "{far}");
    }
}
