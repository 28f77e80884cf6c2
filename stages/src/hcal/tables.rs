//! The tables that pass between HCAL occupancy stages: the events table
//! as this family reads it (towers, event by event), per-channel hit rates,
//! occupancy maps per lumisection (raw, with injected anomalies,
//! renormalized), per-channel anomaly scores. A maps table carries its
//! geometry in the schema metadata ([`GEOMETRY_KEY`]), so `plan` can refuse
//! maps of one subdetector fed to a model of another before anything runs.
//! Stages of this family import these formats from here, never from each
//! other's files.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Int64Array, ListArray,
    ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::arrow_util::{cast_column, f64_lists, is_numeric_list};
use crate::error::{Result, StageError};
use crate::hcal::geometry::{MapGeometry, Subdetector};
use crate::hcal::model::{Block, GraphStad, GraphStadArch};
use crate::input::{Input, require_column};
use dqm_schemas::{column, f64_list, nullable};

// ---- The events table (`delphes_convert`), tower by tower ----

/// The tower columns read: η, φ and hadronic energy of every tower.
pub const TOWER_COLUMNS: [&str; 3] = ["tower_eta", "tower_phi", "tower_ehad"];

/// The events table these stages document as their input.
pub fn example_events_schema() -> SchemaRef {
    dqm_schemas::events::schema(&[], &["Eta".into(), "Phi".into(), "Ehad".into()], &[])
}

/// Checks at `plan` that the events have the tower columns (and `label`).
pub fn check_events(schema: &SchemaRef, needs_label: bool) -> Result<()> {
    let why = "HCAL towers of a `delphes_convert` events table";
    for c in TOWER_COLUMNS {
        require_column(schema, "events", c, why, "a numeric list", is_numeric_list)?;
    }
    if needs_label {
        require_column(schema, "events", "label", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
    }
    Ok(())
}

/// One event's towers.
pub struct Towers<'a> {
    /// The event's configuration label (read when asked for).
    pub label: Option<&'a str>,
    pub eta: &'a [f32],
    pub phi: &'a [f32],
    pub ehad: &'a [f32],
}

impl Towers<'_> {
    /// (η, φ) of the towers with Ehad above `ehad_min`.
    pub fn hcal(&self, ehad_min: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.eta
            .iter()
            .zip(self.phi)
            .zip(self.ehad)
            .filter(move |(_, e)| f64::from(**e) > ehad_min)
            .map(|((&h, &p), _)| (f64::from(h), f64::from(p)))
    }
}

/// Calls `each` with the towers of every event of `input`, in order.
pub fn for_each_event(
    input: &Input,
    with_label: bool,
    mut each: impl FnMut(&Towers<'_>) -> Result<()>,
) -> Result<()> {
    let f32_list = dqm_schemas::events::f32_list();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str| {
            batch
                .schema()
                .index_of(n)
                .map(|i| batch.column(i).clone())
                .map_err(|_| {
                    StageError::data(format!("input `{}` has no column `{n}`", input.name))
                })
        };
        let lists = TOWER_COLUMNS
            .iter()
            .map(|c| cast_column(&col(c)?, &f32_list, &input.name, c))
            .collect::<Result<Vec<_>>>()?;
        let labels = if with_label {
            Some(cast_column(
                &col("label")?,
                &DataType::Utf8,
                &input.name,
                "label",
            )?)
        } else {
            None
        };
        let [eta, phi, ehad] = [&lists[0], &lists[1], &lists[2]].map(|l| l.as_list::<i32>());
        for row in 0..batch.num_rows() {
            let values =
                |l: &ListArray| l.value(row).as_primitive::<Float32Type>().values().to_vec();
            let (e, p, h) = (values(eta), values(phi), values(ehad));
            if e.len() != p.len() || e.len() != h.len() {
                return Err(StageError::data(format!(
                    "input `{}`, row {row}: tower_eta, tower_phi and tower_ehad differ in length",
                    input.name
                )));
            }
            each(&Towers {
                label: labels.as_ref().map(|l| l.as_string::<i32>().value(row)),
                eta: &e,
                phi: &p,
                ehad: &h,
            })?;
        }
    }
    Ok(())
}

// ---- Maps and their geometry ----

/// Schema-metadata key of a maps table: its [`MapGeometry`] as JSON.
pub const GEOMETRY_KEY: &str = "dqm.hcal.geometry";

/// The [`MapGeometry`] stored in a maps table's schema metadata.
pub fn read_geometry(schema: &SchemaRef, input: &str) -> Result<MapGeometry> {
    let json = schema.metadata().get(GEOMETRY_KEY).ok_or_else(|| {
        StageError::data(format!(
            "input `{input}` is not an HCAL maps table (from `lumi_maps`): its schema has no `{GEOMETRY_KEY}` metadata"
        ))
    })?;
    serde_json::from_str(json)
        .map_err(|e| StageError::data(format!("input `{input}`: unreadable `{GEOMETRY_KEY}`: {e}")))
}

/// The schema metadata of a maps table of `geometry`.
pub fn geometry_metadata(geometry: &MapGeometry) -> HashMap<String, String> {
    HashMap::from([(
        GEOMETRY_KEY.to_string(),
        serde_json::to_string(geometry).expect("plain data serializes"),
    )])
}

// ---- The rates table (`hcal_rates`) ----

pub fn rates_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("subdetector", DataType::Utf8, "barrel, endcap or forward"),
        column(
            "channel",
            DataType::Int64,
            "Channel index within the subdetector: (ieta * n_iphi + iphi) * n_depth + depth",
        ),
        column(
            "ieta",
            DataType::Int64,
            "Ring index, 0 at the lowest η of the subdetector",
        ),
        column("iphi", DataType::Int64, "φ bin, 0 at φ = −π"),
        column(
            "depth",
            DataType::Int64,
            "Depth segment (always 0: Delphes has one)",
        ),
        column(
            "rbx",
            DataType::Int64,
            "Readout box: side (0 η<0, 1 η>0) × 18 + 20° φ sector",
        ),
        column(
            "eta_lo",
            DataType::Float64,
            "Lower η edge of the ring (Delphes card)",
        ),
        column("eta_hi", DataType::Float64, "Upper η edge of the ring"),
        column(
            "hits",
            DataType::Int64,
            "Events with a tower in this channel above `ehad_min`",
        ),
        column("events", DataType::Int64, "Events counted"),
        column(
            "rate",
            DataType::Float64,
            "hits / events: the channel's hit probability per event",
        ),
    ]))
}

// ---- The maps table (`lumi_maps`, `inject_anomalies`, `renormalize_occupancy`) ----

pub fn fill_field() -> Field {
    column(
        "fill",
        DataType::Int64,
        "LHC fill number (maps of one fill are consecutive)",
    )
}
pub fn ls_field() -> Field {
    column(
        "ls",
        DataType::Int64,
        "Lumisection number within the fill, from 1",
    )
}
pub fn lumi_field() -> Field {
    column(
        "lumi",
        DataType::Float64,
        "Luminosity received in the LS relative to the fill's peak (β_s, truth of the generator)",
    )
}
pub fn events_field() -> Field {
    column(
        "events",
        DataType::Int64,
        "Events recorded in the LS (ξ_s): every channel's occupancy is in [0, ξ_s]",
    )
}
pub fn occupancy_field() -> Field {
    column(
        "occupancy",
        f64_list(),
        "Digi-occupancy γ_s: hits per channel in the LS, channel order of the rates table",
    )
}

/// The columns of a freshly generated maps table.
pub fn maps_schema(geometry: MapGeometry) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        vec![
            fill_field(),
            ls_field(),
            lumi_field(),
            events_field(),
            occupancy_field(),
        ],
        geometry_metadata(&geometry),
    ))
}

/// The column a generator that knows the truth adds (`lumi_maps`): what an
/// oracle would predict, for the oracle row of Table 7.
pub fn expected_field() -> Field {
    column(
        "expected",
        f64_list(),
        "Expected healthy occupancy per channel, ξ_s p_i(s), from the generator's true rates (the oracle's prediction; anomalies are not in it)",
    )
}

/// The columns `inject_anomalies` adds.
pub fn injection_fields() -> Vec<Field> {
    vec![
        column(
            "case",
            DataType::Utf8,
            "Injected anomaly case (e.g. dead, degraded_0.6, noisy_hot, fully_hot): one copy of the maps per case",
        ),
        column(
            "target",
            DataType::Boolean,
            "This LS ends an anomalous time window: the anomaly persisted on the window's every LS; metrics are computed here",
        ),
        column(
            "injected",
            DataType::List(Arc::new(Field::new("item", DataType::Boolean, false))),
            "Per channel: the anomaly was injected on this LS",
        ),
    ]
}

/// The columns `renormalize_occupancy` adds.
pub fn renormalized_fields() -> Vec<Field> {
    vec![
        column(
            "norm",
            f64_list(),
            "Renormalized occupancy (γ/ξ) / median_iφ(γ/ξ) per channel: the model's input before min-max scaling",
        ),
        column(
            "median",
            f64_list(),
            "Divisor of each (iη, depth) row: the median of γ/ξ along iφ (1 where that median is 0); γ = norm × median × ξ",
        ),
    ]
}

/// `base` with `extra` columns appended (any already present are replaced),
/// keeping its metadata.
pub fn with_fields(base: &SchemaRef, extra: Vec<Field>) -> SchemaRef {
    let mut fields: Vec<Field> = base
        .fields()
        .iter()
        .filter(|f| !extra.iter().any(|e| e.name() == f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(extra);
    Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
}

/// One LS map as the stages of this family hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapRow {
    pub case: Option<String>,
    pub fill: i64,
    pub ls: i64,
    pub lumi: f64,
    pub events: i64,
    pub occupancy: Vec<f64>,
    pub target: Option<bool>,
    pub injected: Option<Vec<bool>>,
    pub norm: Option<Vec<f64>>,
    pub median: Option<Vec<f64>>,
    /// The generator's expected healthy occupancy (maps of `lumi_maps`).
    pub expected: Option<Vec<f64>>,
}

/// Checks the columns every maps table has; returns its geometry.
pub fn check_maps(schema: &SchemaRef, input: &str) -> Result<MapGeometry> {
    let geometry = read_geometry(schema, input)?;
    let why = "an HCAL maps table";
    for (column, expected, ok) in [
        (
            "fill",
            "Int64",
            &(|t: &DataType| t == &DataType::Int64) as &dyn Fn(&DataType) -> bool,
        ),
        ("ls", "Int64", &|t: &DataType| t == &DataType::Int64),
        ("lumi", "Float64", &|t: &DataType| t == &DataType::Float64),
        ("events", "Int64", &|t: &DataType| t == &DataType::Int64),
        ("occupancy", "List<Float64>", &|t: &DataType| {
            t == &f64_list()
        }),
    ] {
        require_column(schema, input, column, why, expected, ok)?;
    }
    Ok(geometry)
}

/// Checks that a maps table was renormalized.
pub fn check_renormalized(schema: &SchemaRef, input: &str) -> Result<()> {
    for column in ["norm", "median"] {
        require_column(
            schema,
            input,
            column,
            "renormalized maps (run `renormalize_occupancy` first)",
            "List<Float64>",
            |t| t == &f64_list(),
        )?;
    }
    Ok(())
}

fn f64_row(list: &ListArray, i: usize, len: usize, at: &dyn Fn() -> String) -> Result<Vec<f64>> {
    let values = list.value(i);
    let values = values.as_primitive::<Float64Type>();
    if values.len() != len {
        return Err(StageError::data(format!(
            "{}: {} values, the geometry has {len}",
            at(),
            values.len()
        )));
    }
    if let Some(v) = values.values().iter().find(|v| !v.is_finite()) {
        return Err(StageError::data(format!("{}: non-finite value {v}", at())));
    }
    Ok(values.values().to_vec())
}

/// Reads the maps of one batch into rows, checking lengths and values.
pub fn read_rows(batch: &RecordBatch, geometry: &MapGeometry, input: &str) -> Result<Vec<MapRow>> {
    let schema = batch.schema();
    let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).clone());
    let need = |name: &str| {
        col(name).ok_or_else(|| StageError::data(format!("input `{input}` has no column `{name}`")))
    };
    let fill = need("fill")?;
    let fill = fill.as_primitive::<Int64Type>();
    let ls = need("ls")?;
    let ls = ls.as_primitive::<Int64Type>();
    let lumi = need("lumi")?;
    let lumi = lumi.as_primitive::<Float64Type>();
    let events = need("events")?;
    let events = events.as_primitive::<Int64Type>();
    let occupancy = need("occupancy")?;
    let occupancy = occupancy.as_list::<i32>();
    let case = col("case");
    let target = col("target");
    let injected = col("injected");
    let norm = col("norm");
    let median = col("median");
    let expected = col("expected");
    let n = geometry.n_channels();
    let n_rows = geometry.shape[0] * geometry.shape[2];
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let at = |column: &str| {
            let column = column.to_string();
            let (f, l) = (fill.value(i), ls.value(i));
            move || format!("input `{input}`, column `{column}`, fill {f} LS {l}")
        };
        if events.value(i) < 0 {
            return Err(StageError::data(format!(
                "{}: negative event count",
                at("events")()
            )));
        }
        let occ = f64_row(occupancy, i, n, &at("occupancy"))?;
        if let Some(v) = occ.iter().find(|&&v| v < 0.0) {
            return Err(StageError::data(format!(
                "{}: negative occupancy {v}",
                at("occupancy")()
            )));
        }
        rows.push(MapRow {
            case: case
                .as_ref()
                .map(|c| c.as_string::<i32>().value(i).to_string()),
            fill: fill.value(i),
            ls: ls.value(i),
            lumi: lumi.value(i),
            events: events.value(i),
            occupancy: occ,
            target: target.as_ref().map(|c| c.as_boolean().value(i)),
            injected: match &injected {
                Some(c) => {
                    let v = c.as_list::<i32>().value(i);
                    let v = v.as_boolean();
                    if v.len() != n {
                        return Err(StageError::data(format!(
                            "{}: {} values, the geometry has {n}",
                            at("injected")(),
                            v.len()
                        )));
                    }
                    Some(v.iter().map(|b| b.unwrap_or(false)).collect())
                }
                None => None,
            },
            norm: match &norm {
                Some(c) => Some(f64_row(c.as_list::<i32>(), i, n, &at("norm"))?),
                None => None,
            },
            median: match &median {
                Some(c) => Some(f64_row(c.as_list::<i32>(), i, n_rows, &at("median"))?),
                None => None,
            },
            expected: match &expected {
                Some(c) => Some(f64_row(c.as_list::<i32>(), i, n, &at("expected"))?),
                None => None,
            },
        });
    }
    Ok(rows)
}

/// Writes rows as a batch of `schema` (whose optional columns the rows fill).
pub fn write_rows(schema: &SchemaRef, rows: &[MapRow]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let missing =
            || StageError::data(format!("internal: no value for column `{}`", field.name()));
        let array: ArrayRef = match field.name().as_str() {
            "fill" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.fill))),
            "ls" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ls))),
            "lumi" => Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lumi))),
            "events" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.events))),
            "occupancy" => Arc::new(f64_lists(rows.iter().map(|r| r.occupancy.as_slice()))),
            "case" => Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|r| r.case.as_deref().ok_or_else(missing))
                    .collect::<Result<Vec<_>>>()?,
            )),
            "target" => Arc::new(BooleanArray::from(
                rows.iter()
                    .map(|r| r.target.ok_or_else(missing))
                    .collect::<Result<Vec<_>>>()?,
            )),
            "injected" => {
                let mut b = ListBuilder::new(BooleanBuilder::new())
                    .with_field(Arc::new(Field::new("item", DataType::Boolean, false)));
                for r in rows {
                    b.values()
                        .append_slice(r.injected.as_deref().ok_or_else(missing)?);
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            "norm" => Arc::new(f64_lists(
                rows.iter()
                    .map(|r| r.norm.as_deref().ok_or_else(missing))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter(),
            )),
            "median" => Arc::new(f64_lists(
                rows.iter()
                    .map(|r| r.median.as_deref().ok_or_else(missing))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter(),
            )),
            "expected" => Arc::new(f64_lists(
                rows.iter()
                    .map(|r| r.expected.as_deref().ok_or_else(missing))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter(),
            )),
            other => {
                return Err(StageError::data(format!(
                    "internal: maps rows have no column `{other}`"
                )));
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Calls `each` with every run of consecutive rows sharing (case, fill), in
/// input order, so a stage holds one fill at a time: memory is bounded by
/// the longest fill, not by the number of LS.
pub fn for_each_fill(
    input: &Input,
    geometry: &MapGeometry,
    mut each: impl FnMut(Vec<MapRow>) -> Result<()>,
) -> Result<()> {
    let mut current: Vec<MapRow> = Vec::new();
    for batch in input.batches() {
        for row in read_rows(&batch?, geometry, &input.name)? {
            let same = current
                .last()
                .is_some_and(|l| l.fill == row.fill && l.case == row.case);
            if !same && !current.is_empty() {
                each(std::mem::take(&mut current))?;
            }
            if let Some(last) = current.last()
                && row.ls <= last.ls
            {
                return Err(StageError::data(format!(
                    "input `{}`: fill {} has LS {} after LS {}: maps of a fill must be in LS order",
                    input.name, row.fill, row.ls, last.ls
                )));
            }
            current.push(row);
        }
    }
    if !current.is_empty() {
        each(current)?;
    }
    Ok(())
}

/// Every map of an input, in order.
pub fn read_all_rows(input: &Input, geometry: &MapGeometry) -> Result<Vec<MapRow>> {
    let mut rows = Vec::new();
    for_each_fill(input, geometry, |fill| {
        rows.extend(fill);
        Ok(())
    })?;
    Ok(rows)
}

/// A schema's maps columns for documentation (`pipeline stages`).
pub fn example_maps_schema() -> SchemaRef {
    maps_schema(MapGeometry::of(Subdetector::Barrel))
}

/// The rows of a `Float64` column as a vector (helper for tests and metrics).
pub fn f64_column(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let i = batch.schema().index_of(name).expect("column exists");
    batch
        .column(i)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("Float64")
        .values()
        .to_vec()
}

// ---- The models table (`graphstad_train`; input of `graphstad_score` and of
// a transfer-learning `graphstad_train`) ----

/// Schema-metadata key of a models table: its [`ModelSpec`] as JSON.
pub const MODEL_KEY: &str = "dqm.hcal.model";

/// What a stage reading a model must know before it runs: the network and
/// the maps it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: GraphStadArch,
    pub geometry: MapGeometry,
    /// LS per window (T).
    pub window: usize,
}

impl ModelSpec {
    pub fn from_schema(schema: &SchemaRef, input: &str) -> Result<Self> {
        let json = schema.metadata().get(MODEL_KEY).ok_or_else(|| {
            StageError::data(format!(
                "input `{input}` is not a GraphSTAD models table (from `graphstad_train`): its schema has no `{MODEL_KEY}` metadata"
            ))
        })?;
        serde_json::from_str(json).map_err(|e| {
            StageError::data(format!("input `{input}`: unreadable `{MODEL_KEY}`: {e}"))
        })
    }
}

/// Everything needed to use a trained model besides its weights, stored as
/// JSON next to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphStadCard {
    pub spec: ModelSpec,
    /// LSTM states carried across consecutive windows (training and scoring).
    pub carry_state: bool,
    /// Per-channel min and max of the renormalized training maps: the model
    /// reads (norm − min) / (max − min).
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// σ_i of the per-channel windowed MAE on the training maps (Eq. 6).
    pub sigma: Vec<f32>,
    /// The reference-map rule: mean renormalized occupancy per channel on the
    /// training maps, and the σ_i of its windowed MAE.
    pub reference: Vec<f32>,
    pub sigma_reference: Vec<f32>,
    /// Decision thresholds chosen on the validation maps (healthy, never
    /// trained on, not the test maps): the `alpha_quantile` of a_i, for the
    /// model and for the reference-map rule.
    pub alpha: f64,
    pub reference_alpha: f64,
    /// The luminosity-regression rule: γ/ξ = intercept + slope · L per
    /// channel, fitted on the training maps (empty in cards written before).
    #[serde(default)]
    pub lumi_intercept: Vec<f32>,
    #[serde(default)]
    pub lumi_slope: Vec<f32>,
    /// Thresholds of the other score forms ([`EXTRA_METHODS`]), the same
    /// quantile of their validation scores, by method name.
    #[serde(default)]
    pub alphas: std::collections::BTreeMap<String, f64>,
    /// Parameters trained here and in all (batch-norm statistics excluded).
    pub trainable_params: i64,
    pub total_params: i64,
    /// Blocks initialized from / frozen at a source model (transfer learning).
    pub init_blocks: Vec<Block>,
    pub frozen_blocks: Vec<Block>,
    /// Parameters of the frozen blocks fine-tuned nevertheless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuned: Vec<crate::hcal::model::Tuned>,
    pub best_epoch: usize,
    pub val_mse: f64,
    /// Validation MSE of every epoch (the MSE-vs-epoch comparison of
    /// transfer modes).
    pub val_curve: Vec<f64>,
    pub train_maps: usize,
    pub val_maps: usize,
}

pub fn models_schema(spec: &ModelSpec) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        vec![
            column(
                "subdetector",
                DataType::Utf8,
                "Subdetector of the training maps",
            ),
            column(
                "best_epoch",
                DataType::Int64,
                "Epoch whose parameters were kept (lowest validation MSE)",
            ),
            column("epochs", DataType::Int64, "Epochs run"),
            column(
                "val_mse",
                DataType::Float64,
                "Validation MSE (Eq. 7, model input scale) at best_epoch",
            ),
            column(
                "trainable_params",
                DataType::Int64,
                "Parameters trained by this stage (frozen blocks excluded)",
            ),
            column(
                "total_params",
                DataType::Int64,
                "All parameters of the network",
            ),
            column(
                "card",
                DataType::Utf8,
                "Model card JSON: architecture, geometry, scaling, σ_i, transfer",
            ),
            column(
                "weights",
                DataType::Binary,
                "Parameters and batch-norm statistics as a safetensors file",
            ),
        ],
        HashMap::from([(
            MODEL_KEY.to_string(),
            serde_json::to_string(spec).expect("plain data serializes"),
        )]),
    ))
}

/// The one model of a models table: its card and weights.
pub fn read_model(input: &Input) -> Result<(GraphStadCard, Vec<u8>)> {
    let mut found = None;
    let rows = crate::nn::each_model_row(
        input,
        "the models table of `graphstad_train`",
        |_, _, card, weights| {
            found = Some((card, weights.to_vec()));
            Ok(())
        },
    )?;
    if rows > 1 {
        return Err(StageError::data(format!(
            "input `{}` holds more than one model",
            input.name
        )));
    }
    Ok(found.expect("one row read"))
}

/// Builds the network of `card` on `device` and loads `weights` into it.
pub fn load_model(
    card: &GraphStadCard,
    weights: &[u8],
    device: tch::Device,
    at: &str,
) -> Result<(tch::nn::VarStore, GraphStad)> {
    let vs = tch::nn::VarStore::new(device);
    let model = GraphStad::new(&vs.root(), card.spec.arch.clone(), card.spec.geometry);
    crate::nn::load_weights(&vs, weights, at)?;
    Ok((vs, model))
}

// ---- The scores table (`graphstad_score`; input of `channel_metrics`) ----

/// A score form or baseline beside the paper's Eq. 5 (`score`,
/// `reference_score`): its name in Table 7 and its documentation. Its
/// columns in the scores table are `<name>_score` and `<name>_alpha`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraMethod {
    pub name: &'static str,
    pub doc: &'static str,
}

impl ExtraMethod {
    pub fn score_column(&self) -> String {
        format!("{}_score", self.name)
    }
    pub fn alpha_column(&self) -> String {
        format!("{}_alpha", self.name)
    }
}

/// The other scores of every channel, in the scores table's order. A pull
/// z = |Σ_w(γ − μ)| / √Σ_w μ over the window of T LS ending at the LS, with
/// μ the expected counts of:
pub const EXTRA_METHODS: [ExtraMethod; 7] = [
    ExtraMethod {
        name: "graphstad_signed",
        doc: "Signed window pull of the model's reconstruction: |Σ_w(γ − μ)|/√Σ_w μ, μ = reconstruction × ξ",
    },
    ExtraMethod {
        name: "graphstad_rbx",
        doc: "The model's pull summed over the channel's RBX: |Σ_RBX Σ_w(γ − μ)|/√Σ_RBX Σ_w μ",
    },
    ExtraMethod {
        name: "reference_signed",
        doc: "Signed window pull of the reference-map rule (training mean × the LS's row medians)",
    },
    ExtraMethod {
        name: "reference_rbx",
        doc: "The reference-map rule's pull summed over the channel's RBX (an RBX against the reference)",
    },
    ExtraMethod {
        name: "rbx_median",
        doc: "The reference rule's pull with μ corrected per LS and RBX by the median γ/μ of the RBX's channels (a channel against its RBX: blind to a change of the whole RBX, which `reference_rbx` sees)",
    },
    ExtraMethod {
        name: "lumi_regression",
        doc: "Signed window pull of a per-channel straight line in luminosity fitted on the training maps (null with a card that has none)",
    },
    ExtraMethod {
        name: "oracle",
        doc: "Signed window pull of the generator's true expected counts: the ceiling (null for maps without truth)",
    },
];

pub fn scores_schema(geometry: MapGeometry) -> SchemaRef {
    let bools = DataType::List(Arc::new(Field::new("item", DataType::Boolean, false)));
    Arc::new(Schema::new_with_metadata(
        vec![
            column(
                "case",
                DataType::Utf8,
                "Anomaly case of the maps (`none` for maps without injection)",
            ),
            fill_field(),
            ls_field(),
            column(
                "target",
                DataType::Boolean,
                "The LS ends an anomalous window (false without injection)",
            ),
            column(
                "injected",
                bools,
                "Per channel: anomaly injected on this LS (all false without injection)",
            ),
            column(
                "mse",
                DataType::Float64,
                "Reconstruction MSE of this LS in the model's input scale (Eq. 7)",
            ),
            column(
                "score",
                f64_list(),
                "Per channel a_i = e_i,MAE / σ_i: MAE in γ/ξ over the window ending here (Eqs. 5-6)",
            ),
            column(
                "reference_score",
                f64_list(),
                "The same for the reference-map rule (training mean × this LS's row medians)",
            ),
            column(
                "alpha",
                DataType::Float64,
                "Decision threshold α of the model's a_i",
            ),
            column(
                "reference_alpha",
                DataType::Float64,
                "Decision threshold of the reference rule's a_i",
            ),
            column("flagged", DataType::Int64, "Channels with a_i > alpha"),
            column(
                "reference_mse",
                DataType::Float64,
                "The reference-map rule's reconstruction MSE of this LS in the model's scale (the yardstick of `mse`)",
            ),
            nullable(
                "mse_floor",
                DataType::Float64,
                "Binomial noise floor of the MSE in the model's scale: mean over channels of p(1 − p)/ξ ÷ (row median · channel range)², p from the generator's expected counts (null for maps without truth)",
            ),
        ]
        .into_iter()
        .chain(EXTRA_METHODS.iter().flat_map(|m| {
            [
                nullable(&m.score_column(), f64_list(), m.doc),
                nullable(
                    &m.alpha_column(),
                    DataType::Float64,
                    "Its decision threshold: the model card's quantile of its validation scores",
                ),
            ]
        }))
        .chain([nullable(
            "expected_window",
            f64_list(),
            "Σ over the window of the generator's expected counts per channel (the oracle's Σμ; null for maps without truth)",
        )])
        .collect::<Vec<_>>(),
        geometry_metadata(&geometry),
    ))
}
