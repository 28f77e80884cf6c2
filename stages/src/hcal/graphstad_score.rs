//! `graphstad_score`: per-channel anomaly scores of every LS map (paper
//! Eqs. 5-6). Each fill (and anomaly case) is reconstructed window by window
//! with the LSTM states carried as in training; the reconstruction is mapped
//! back to γ/ξ; e_i,MAE is the mean absolute error over the window of T LS
//! ending at the LS, and a_i = e_i,MAE / σ_i with σ_i from the training maps.
//! The reference-map rule (training mean of the renormalized occupancy × the
//! LS's own row medians) is scored the same way beside it. Artifacts: per
//! anomaly case, `map_<case>.png` (the paper's Fig. 10) for its first
//! target LS.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Int64Array, ListBuilder, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::f64_lists;
use crate::error::{Result, bad_param};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::scoring::{
    FillScores, Rules, fill_scores, mse_floor, reference_mse, standardized,
};
use crate::hcal::tables::{
    EXTRA_METHODS, GraphStadCard, MapRow, ModelSpec, check_maps, check_renormalized,
    example_maps_schema, for_each_fill, load_model, models_schema, read_model, renormalized_fields,
    scores_schema, with_fields,
};
use crate::hcal::window_scores::{LumiLine, PerLs};
use crate::nn::{DeviceChoice, exclusive};
use crate::params::AutoOr;
use crate::plots::{Heatmap, heatmaps};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Scores every channel of every map with a trained model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphstadScore {
    /// Decision threshold α on a_i (the `flagged` count; `channel_metrics`
    /// also scans thresholds); `auto`: the model card's, a quantile of a_i
    /// on the validation maps (`graphstad_train` `alpha_quantile`).
    pub alpha: AutoOr<f64>,
    /// Where to run: auto (CUDA if available), cpu or cuda.
    pub device: DeviceChoice,
}

impl Default for GraphstadScore {
    fn default() -> Self {
        Self {
            alpha: AutoOr::Auto,
            device: DeviceChoice::Auto,
        }
    }
}

impl StageConfig for GraphstadScore {
    const KIND: &'static str = "graphstad_score";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Renormalized LS maps + GraphSTAD model -> per-channel anomaly scores a_i = windowed MAE / σ_i, beside the reference-map rule";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "renormalized maps, models";

    fn doc_inputs() -> Vec<SchemaRef> {
        let geometry = MapGeometry::of(crate::hcal::geometry::Subdetector::Barrel);
        vec![
            with_fields(&example_maps_schema(), renormalized_fields()),
            models_schema(&ModelSpec {
                arch: Default::default(),
                geometry,
                window: 5,
            }),
        ]
    }

    fn validate(&self) -> Result<()> {
        if let AutoOr::Value(a) = self.alpha
            && !(a > 0.0)
        {
            return bad_param("alpha", "must be > 0 or `auto`");
        }
        Ok(())
    }
}

/// The scores of one fill, every way, with the thresholds.
struct FillTable<'a> {
    rows: &'a [MapRow],
    mse: &'a [f64],
    score: &'a [Vec<f64>],
    reference: &'a [Vec<f64>],
    alphas: (f64, f64),
    /// The rule's MSE and the noise floor of every LS (model scale).
    reference_mse: Vec<f64>,
    mse_floor: Vec<Option<f64>>,
    /// [`EXTRA_METHODS`] scores (with their α), `None` where not available.
    extra: Vec<Option<(PerLs, f64)>>,
    expected_window: Option<PerLs>,
}

/// A nullable per-channel list column: every row's values, or all null.
fn optional_lists(values: Option<&PerLs>, n: usize) -> ArrayRef {
    match values {
        Some(v) => Arc::new(f64_lists(v.iter().map(Vec::as_slice))),
        None => arrow::array::new_null_array(&dqm_schemas::f64_list(), n),
    }
}

/// The scores of one fill as a batch.
fn scores_batch(schema: &SchemaRef, t: &FillTable<'_>) -> Result<RecordBatch> {
    let FillTable {
        rows,
        mse,
        score,
        reference,
        alphas: (alpha, reference_alpha),
        ..
    } = *t;
    let m = rows[0].occupancy.len();
    let mut injected = ListBuilder::new(BooleanBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Boolean,
        false,
    )));
    for r in rows {
        match &r.injected {
            Some(mask) => injected.values().append_slice(mask),
            None => injected.values().append_n(m, false),
        }
        injected.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|r| r.case.clone().unwrap_or_else(|| "none".into())),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.fill))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ls))),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|r| r.target.unwrap_or(false))
                .collect::<Vec<_>>(),
        )),
        Arc::new(injected.finish()),
        Arc::new(Float64Array::from(mse.to_vec())),
        Arc::new(f64_lists(score.iter().map(Vec::as_slice))),
        Arc::new(f64_lists(reference.iter().map(Vec::as_slice))),
        Arc::new(Float64Array::from(vec![alpha; rows.len()])),
        Arc::new(Float64Array::from(vec![reference_alpha; rows.len()])),
        Arc::new(Int64Array::from_iter_values(
            score
                .iter()
                .map(|s| s.iter().filter(|&&a| a > alpha).count() as i64),
        )),
    ];
    let n = rows.len();
    let mut columns = columns;
    columns.push(Arc::new(Float64Array::from(t.reference_mse.clone())));
    columns.push(Arc::new(Float64Array::from(t.mse_floor.clone())));
    for extra in &t.extra {
        columns.push(optional_lists(extra.as_ref().map(|e| &e.0), n));
        columns.push(Arc::new(Float64Array::from(vec![
            extra
                .as_ref()
                .map(|e| e.1);
            n
        ])));
    }
    columns.push(optional_lists(t.expected_window.as_ref(), n));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The paper's Figure 10 for one LS: γ/ξ, its reconstruction and a_i, the
/// injected channels outlined.
fn figure(
    path: &std::path::Path,
    geometry: &MapGeometry,
    row: &MapRow,
    predicted: &[f64],
    score: &[f64],
) -> Result<()> {
    let [rows, cols, _] = geometry.shape;
    let outline = row.injected.clone().unwrap_or_default();
    let panel = |title: &str, values: Vec<f64>| Heatmap {
        title: title.into(),
        rows,
        cols,
        values,
        outline: outline.clone(),
    };
    let xi = row.events.max(1) as f64;
    heatmaps(
        path,
        &format!(
            "{} {}, fill {} LS {} (injected channels outlined)",
            geometry.subdetector.name(),
            row.case.as_deref().unwrap_or("none"),
            row.fill,
            row.ls
        ),
        &[
            panel("γ/ξ", row.occupancy.iter().map(|g| g / xi).collect()),
            panel("reconstruction", predicted.to_vec()),
            panel("a_i", score.to_vec()),
        ],
    )
}

impl Stage for GraphstadScore {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let geometry = check_maps(&inputs[0], "maps")?;
        check_renormalized(&inputs[0], "maps")?;
        let spec = ModelSpec::from_schema(&inputs[1], "models")?;
        spec.geometry.check(&geometry, "input `maps`")?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: scores_schema(geometry),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let maps = &ctx.inputs[0];
        let geometry = check_maps(&maps.schema, &maps.name)?;
        check_renormalized(&maps.schema, &maps.name)?;
        let (card, weights): (GraphStadCard, Vec<u8>) = read_model(&ctx.inputs[1])?;
        card.spec.geometry.check(&geometry, "input `maps`")?;
        let device = self.device.resolve()?;
        let _torch = exclusive();
        let (_vs, model) = load_model(&card, &weights, device, "input `models`")?;
        let scaling = crate::hcal::scoring::Scaling {
            min: card.min.clone(),
            max: card.max.clone(),
        };
        let schema = scores_schema(geometry);
        let window = card.spec.window;
        let lumi = LumiLine {
            intercept: card.lumi_intercept.clone(),
            slope: card.lumi_slope.clone(),
        };
        let rules = Rules {
            reference: &card.reference,
            lumi: &lumi,
        };
        let scaled_reference = scaling.scale(
            &card
                .reference
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>(),
        );
        let alphas = match self.alpha {
            AutoOr::Auto => (card.alpha, card.reference_alpha),
            AutoOr::Value(a) => (a, a),
        };
        let (mut n_maps, mut flagged) = (0usize, 0usize);
        let mut plotted: Vec<String> = Vec::new();
        let artifacts = ctx.artifacts;
        let output = &mut *ctx.output;
        for_each_fill(maps, &geometry, |fill| {
            let FillScores {
                errors,
                model_mae,
                reference_mae,
                extra,
                expected_window,
            } = fill_scores(
                &model,
                &scaling,
                &rules,
                &fill,
                (window, card.carry_state),
                device,
            )?;
            let score = standardized(model_mae, &card.sigma);
            let reference = standardized(reference_mae, &card.sigma_reference);
            if let Some(s) = fill.iter().position(|r| r.target == Some(true))
                && let Some(case) = fill[s].case.clone()
                && !plotted.contains(&case)
            {
                figure(
                    &artifacts.join(format!("map_{case}.png")),
                    &geometry,
                    &fill[s],
                    &errors.predicted[s],
                    &score[s],
                )?;
                plotted.push(case);
            }
            n_maps += fill.len();
            flagged += score
                .iter()
                .map(|s| s.iter().filter(|&&a| a > alphas.0).count())
                .sum::<usize>();
            let extra = extra
                .into_iter()
                .zip(EXTRA_METHODS.iter())
                .map(|(values, method)| {
                    let alpha = match self.alpha {
                        AutoOr::Auto => card.alphas.get(method.name).copied(),
                        AutoOr::Value(a) => Some(a),
                    };
                    values.map(|v| (v, alpha.unwrap_or(f64::INFINITY)))
                })
                .collect();
            let table = FillTable {
                reference_mse: fill
                    .iter()
                    .map(|r| reference_mse(&scaling, &scaled_reference, r))
                    .collect(),
                mse_floor: fill
                    .iter()
                    .map(|r| mse_floor(&scaling, r, &geometry))
                    .collect(),
                rows: &fill,
                mse: &errors.mse,
                score: &score,
                reference: &reference,
                alphas,
                extra,
                expected_window,
            };
            output.write("main", scores_batch(&schema, &table)?)
        })?;
        ctx.reporter.info(&format!(
            "{n_maps} maps scored; {flagged} channel flags at α = {:.2}",
            alphas.0
        ));
        Ok(())
    }
}
