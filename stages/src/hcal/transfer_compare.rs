//! `transfer_compare`: the paper's Tables 3 and 5 in one table. Inputs come
//! in pairs, (models, scores) per training mode, the first pair being the
//! reference (trained from scratch, T_init = RANDOM): per mode, the blocks
//! initialized and frozen, the trainable parameters and their change ΔW, the
//! validation MSE and the test MSE on healthy maps (never seen in training)
//! with a 95 % interval over fills, and its change ΔMSE w.r.t. the reference
//! (paired per fill). Artifact: `val_mse_by_mode.png`, validation MSE per
//! epoch of every mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::geometry::Subdetector;
use crate::hcal::model::{Block, frozen_label};
use crate::hcal::tables::{GraphStadCard, ModelSpec, models_schema, read_model, scores_schema};
use crate::input::require_column;
use crate::plots::{Series, lines};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::{column, nullable};

/// Compares training modes (inputs: models_1, scores_1, models_2, scores_2, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransferCompare {}

impl StageConfig for TransferCompare {
    const KIND: &'static str = "transfer_compare";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "(models, healthy-map scores) per training mode -> Tables 3/5: blocks transferred and frozen, trainable parameters ΔW, test MSE with interval and ΔMSE vs the first mode";
    const INPUTS: (usize, usize) = (2, 64);
    const INPUT_ROLES: &'static str = "pairs of models, scores";

    fn doc_inputs() -> Vec<SchemaRef> {
        let geometry = MapGeometry::of(Subdetector::Barrel);
        let models = models_schema(&ModelSpec {
            arch: Default::default(),
            geometry,
            window: 5,
        });
        vec![models, scores_schema(geometry)]
    }
}

fn compare_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column(
            "mode",
            DataType::Utf8,
            "The training stage (its models input)",
        ),
        column(
            "init_blocks",
            DataType::Utf8,
            "Blocks initialized from the source and fine-tuned (T_init)",
        ),
        column(
            "frozen_blocks",
            DataType::Utf8,
            "Blocks copied from the source and frozen (T_train); `/[…]`: parameters in them fine-tuned nevertheless (Table 4)",
        ),
        column("trainable_params", DataType::Int64, "Parameters trained"),
        column(
            "delta_params",
            DataType::Float64,
            "ΔW: relative change of the trainable parameters w.r.t. the first mode",
        ),
        column(
            "best_epoch",
            DataType::Int64,
            "Epoch kept (lowest validation MSE)",
        ),
        column("val_mse", DataType::Float64, "Validation MSE at best_epoch"),
        column("test_maps", DataType::Int64, "Healthy test maps scored"),
        column(
            "test_mse",
            DataType::Float64,
            "Mean reconstruction MSE on the healthy test maps (Eq. 7)",
        ),
        column(
            "test_mse_lo",
            DataType::Float64,
            "95 % interval of test_mse over fills, lower",
        ),
        column(
            "test_mse_hi",
            DataType::Float64,
            "95 % interval of test_mse over fills, upper",
        ),
        column(
            "delta_mse",
            DataType::Float64,
            "ΔMSE: relative change of test_mse w.r.t. the first mode",
        ),
        column(
            "delta_mse_lo",
            DataType::Float64,
            "95 % interval of ΔMSE from the per-fill ratios to the first mode (paired), lower",
        ),
        column("delta_mse_hi", DataType::Float64, "Same, upper"),
        nullable(
            "rule_mse",
            DataType::Float64,
            "The reference-map rule's test MSE on the same maps (built from this mode's training maps)",
        ),
        nullable(
            "noise_floor",
            DataType::Float64,
            "Binomial noise floor of the test MSE (maps with the generator's truth)",
        ),
        nullable(
            "reducible_delta",
            DataType::Float64,
            "ΔMSE as a fraction of the first mode's reducible error: (MSE − MSE_first) / (MSE_first − floor)",
        ),
        nullable(
            "reducible_delta_lo",
            DataType::Float64,
            "95 % interval of reducible_delta over fills (paired), lower",
        ),
        nullable("reducible_delta_hi", DataType::Float64, "Same, upper"),
    ]))
}

/// One fill's healthy maps of one mode: Σ MSE, Σ rule MSE, Σ floor (over
/// the maps that have one), maps, maps with a floor.
#[derive(Default, Clone, Copy)]
struct FillSums {
    mse: f64,
    rule: f64,
    floor: f64,
    maps: usize,
    floored: usize,
}

impl FillSums {
    fn mse(&self) -> f64 {
        self.mse / self.maps as f64
    }
    fn floor(&self) -> Option<f64> {
        (self.floored == self.maps).then(|| self.floor / self.maps as f64)
    }
}

type PerFill = BTreeMap<i64, FillSums>;

/// 95 % interval of the mean of per-fill values (normal, over fills).
fn interval(values: &[f64]) -> (f64, f64) {
    let k = values.len() as f64;
    if values.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let m = values.iter().sum::<f64>() / k;
    let se = (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt();
    (m - 1.96 * se, m + 1.96 * se)
}

/// 95 % interval of the per-fill ratios of `mode` to `base` minus one: a
/// paired comparison (both scored the same fills).
fn paired_delta(mode: &PerFill, base: &PerFill) -> (f64, f64) {
    let ratios: Vec<f64> = mode
        .iter()
        .filter_map(|(fill, m)| base.get(fill).map(|b| m.mse() / b.mse() - 1.0))
        .collect();
    interval(&ratios)
}

/// The change of `mode` w.r.t. `base` as a fraction of `base`'s reducible
/// error (MSE − floor), overall and with a paired interval over fills.
fn reducible_delta(mode: &PerFill, base: &PerFill) -> Option<(f64, f64, f64)> {
    let mut per_fill = Vec::new();
    let (mut num, mut den) = (0.0, 0.0);
    for (fill, m) in mode {
        let b = base.get(fill)?;
        let floor = b.floor()?;
        per_fill.push((m.mse() - b.mse()) / (b.mse() - floor));
        num += m.mse - b.mse;
        den += b.mse - floor * b.maps as f64;
    }
    let (lo, hi) = interval(&per_fill);
    Some((num / den, lo, hi))
}

/// Mean, and a 95 % interval from the spread of per-fill means.
fn mean_over_fills(per_fill: &PerFill) -> (f64, f64, f64, usize) {
    let n: usize = per_fill.values().map(|v| v.maps).sum();
    let mean = per_fill.values().map(|v| v.mse).sum::<f64>() / n as f64;
    let means: Vec<f64> = per_fill.values().map(FillSums::mse).collect();
    let k = means.len() as f64;
    let m = means.iter().sum::<f64>() / k;
    let se = if means.len() > 1 {
        (means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt()
    } else {
        f64::NAN
    };
    (mean, mean - 1.96 * se, mean + 1.96 * se, n)
}

impl Stage for TransferCompare {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        if inputs.len() < 2 || !inputs.len().is_multiple_of(2) {
            return Err(StageError::input_count(
                "pairs of inputs (models, scores)",
                inputs.len(),
            ));
        }
        for (k, pair) in inputs.chunks(2).enumerate() {
            ModelSpec::from_schema(&pair[0], &format!("input {}", 2 * k + 1))?;
            for c in ["case", "fill", "mse"] {
                require_column(
                    &pair[1],
                    &format!("input {}", 2 * k + 2),
                    c,
                    "a scores table (`graphstad_score`)",
                    "its type",
                    |_| true,
                )?;
            }
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: compare_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let mut rows = Vec::new();
        for pair in ctx.inputs.chunks(2) {
            let (card, _) = read_model(&pair[0])?;
            let per_fill = healthy_per_fill(&pair[1])?;
            rows.push((
                pair[0].name.clone(),
                card,
                mean_over_fills(&per_fill),
                per_fill,
            ));
        }
        let deltas: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| paired_delta(&r.3, &rows[0].3))
            .collect();
        let reducible: Vec<Option<(f64, f64, f64)>> = rows
            .iter()
            .map(|r| reducible_delta(&r.3, &rows[0].3))
            .collect();
        let batch = table_batch(&rows, &deltas, &reducible)?;
        log_rows(ctx, &rows, &deltas);
        plot_curves(ctx, &rows)?;
        ctx.output.write("main", batch)
    }
}

/// One mode: its stage name, card, (test MSE, interval, maps) and per-fill sums.
type ModeRow = (String, GraphStadCard, (f64, f64, f64, usize), PerFill);

/// The per-fill sums of the healthy maps (case `none`) of a scores input.
fn healthy_per_fill(scores: &crate::input::Input) -> Result<PerFill> {
    let mut per_fill: PerFill = BTreeMap::new();
    for batch in scores.batches() {
        let batch = batch?;
        let col = |n: &str| batch.column_by_name(n).expect("planned");
        let case = col("case");
        let fill = col("fill");
        let mse = col("mse");
        let (case, fill, mse) = (
            case.as_string::<i32>(),
            fill.as_primitive::<Int64Type>(),
            mse.as_primitive::<Float64Type>(),
        );
        let rule = batch.column_by_name("reference_mse");
        let rule = rule.map(|c| c.as_primitive::<Float64Type>().clone());
        let floor = batch.column_by_name("mse_floor");
        let floor = floor.map(|c| c.as_primitive::<Float64Type>().clone());
        for i in 0..batch.num_rows() {
            if case.value(i) == "none" {
                let e = per_fill.entry(fill.value(i)).or_default();
                e.mse += mse.value(i);
                e.maps += 1;
                e.rule += rule.as_ref().map_or(f64::NAN, |r| r.value(i));
                if let Some(f) = floor.as_ref().filter(|f| !f.is_null(i)) {
                    e.floor += f.value(i);
                    e.floored += 1;
                }
            }
        }
    }
    if per_fill.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no healthy map (case `none`): score maps without injected anomalies",
            scores.name
        )));
    }
    Ok(per_fill)
}

/// Table 5's rows as a batch.
fn table_batch(
    rows: &[ModeRow],
    deltas: &[(f64, f64)],
    reducible: &[Option<(f64, f64, f64)>],
) -> Result<RecordBatch> {
    let (base_params, base_mse) = (rows[0].1.trainable_params as f64, rows[0].2.0);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| Block::names(&r.1.init_blocks)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|r| frozen_label(&r.1.frozen_blocks, &r.1.tuned)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.1.trainable_params),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter()
                .map(|r| r.1.trainable_params as f64 / base_params - 1.0),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.1.best_epoch as i64),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.1.val_mse),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.2.3 as i64),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2.0))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2.1))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2.2))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.2.0 / base_mse - 1.0),
        )),
        Arc::new(Float64Array::from_iter_values(deltas.iter().map(|d| d.0))),
        Arc::new(Float64Array::from_iter_values(deltas.iter().map(|d| d.1))),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| {
                    let n: usize = r.3.values().map(|v| v.maps).sum();
                    let v = r.3.values().map(|v| v.rule).sum::<f64>() / n as f64;
                    v.is_finite().then_some(v)
                })
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| {
                    let floors: Option<Vec<f64>> = r.3.values().map(|v| v.floor()).collect();
                    floors.map(|f| {
                        let n: usize = r.3.values().map(|v| v.maps).sum();
                        r.3.values()
                            .zip(&f)
                            .map(|(v, f)| f * v.maps as f64)
                            .sum::<f64>()
                            / n as f64
                    })
                })
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            reducible.iter().map(|d| d.map(|d| d.0)).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            reducible.iter().map(|d| d.map(|d| d.1)).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            reducible.iter().map(|d| d.map(|d| d.2)).collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(compare_schema(), columns)?)
}

/// One log line per mode.
fn log_rows(ctx: &RunContext<'_>, rows: &[ModeRow], deltas: &[(f64, f64)]) {
    let (base_params, base_mse) = (rows[0].1.trainable_params as f64, rows[0].2.0);
    for ((name, card, (mse, lo, hi, _), _), (dlo, dhi)) in rows.iter().zip(deltas) {
        ctx.reporter.info(&format!(
            "{name:<14} trainable {:>7} ({:+.1} %) test MSE {mse:.4e} [{lo:.4e}, {hi:.4e}] ΔMSE {:+.1} % [{:+.1}, {:+.1}]",
            card.trainable_params,
            100.0 * (card.trainable_params as f64 / base_params - 1.0),
            100.0 * (mse / base_mse - 1.0),
            100.0 * dlo,
            100.0 * dhi
        ));
    }
}

/// Validation MSE per epoch of every mode (`val_mse_by_mode.png`).
fn plot_curves(ctx: &RunContext<'_>, rows: &[ModeRow]) -> Result<()> {
    let curves: Vec<Series> = rows
        .iter()
        .map(|(name, card, _, _)| Series {
            name: name.clone(),
            points: card
                .val_curve
                .iter()
                .enumerate()
                .map(|(e, v)| ((e + 1) as f64, v.log10()))
                .collect(),
        })
        .collect();
    lines(
        &ctx.artifacts.join("val_mse_by_mode.png"),
        "Validation MSE per epoch, from scratch and with transfer",
        "epoch",
        "log10 validation MSE",
        &curves,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fills(values: &[(f64, Option<f64>)]) -> PerFill {
        values
            .iter()
            .enumerate()
            .map(|(k, &(mse, floor))| {
                (
                    k as i64,
                    FillSums {
                        mse: 2.0 * mse,
                        rule: 0.0,
                        floor: 2.0 * floor.unwrap_or(0.0),
                        maps: 2,
                        floored: if floor.is_some() { 2 } else { 0 },
                    },
                )
            })
            .collect()
    }

    #[test]
    fn reducible_delta_by_hand() {
        // Scratch 0.05 and 0.07 over floors 0.03 and 0.05: reducible 0.02
        // each; the mode removes half of it on both fills.
        let base = fills(&[(0.05, Some(0.03)), (0.07, Some(0.05))]);
        let mode = fills(&[(0.04, Some(0.03)), (0.06, Some(0.05))]);
        let (d, lo, hi) = reducible_delta(&mode, &base).unwrap();
        assert!((d + 0.5).abs() < 1e-12, "{d}");
        assert!((lo + 0.5).abs() < 1e-9 && (hi + 0.5).abs() < 1e-9);
        // The plain ΔMSE is smaller in size: −20 % and −14.3 %.
        let (plo, phi) = paired_delta(&mode, &base);
        assert!(plo < -0.14 && phi > -0.2 && plo < phi);
        // Without a floor there is no reducible error to speak of.
        let no_floor = fills(&[(0.05, None), (0.07, None)]);
        assert!(reducible_delta(&mode, &no_floor).is_none());
    }
}
