//! The tables between the lumisection stages: LS of runs (with the events
//! drawn for each), per-LS histograms of monitored elements, and per-LS
//! scores of a method (autoencoder, χ²) with their thresholds; readers and
//! writers of the last two.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use dqm_schemas::{column, f64_list, nullable};

use serde::{Deserialize, Serialize};

use crate::arrow_util::column_as;
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::lumi::model::LumiAeArch;

fn ls_fields() -> Vec<Field> {
    vec![
        column("run", DataType::Int64, "Run number"),
        column("ls", DataType::Int64, "Lumisection within the run, from 1"),
        column(
            "part",
            DataType::Utf8,
            "Disjoint part of the events the run draws from (`train`, `calibration`, `test`)",
        ),
        column("events", DataType::Int64, "Events recorded in the LS"),
        column(
            "lumi",
            DataType::Float64,
            "Integrated luminosity of the LS: the luminosity file's unit (`/pb` for the simulated LS)",
        ),
        column(
            "truth",
            DataType::Utf8,
            "`good`, or the configuration the LS's bad events come from",
        ),
        column("bad", DataType::Boolean, "Truth: the LS is bad"),
        column(
            "pileup",
            DataType::Float64,
            "Mean pile-up μ of the LS (interactions per crossing besides the recorded one; 0: none simulated, NaN: unknown)",
        ),
    ]
}

/// `lumi_runs`: one row per LS with the ids of its events.
pub fn runs_schema() -> SchemaRef {
    let mut fields = ls_fields();
    fields.push(column(
        "event_ids",
        DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
        "`event_id`s (events table) of the LS's recorded events, one per recorded event",
    ));
    fields.push(column(
        "pileup_ids",
        DataType::List(Arc::new(Field::new(
            "item",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            false,
        ))),
        "Per recorded event (in `event_ids` order), the `event_id`s overlaid on it as pile-up (empty lists without pile-up)",
    ));
    Arc::new(Schema::new(fields))
}

/// `ls_histograms`: one row per LS and monitored element.
pub fn histograms_schema() -> SchemaRef {
    let mut fields = ls_fields();
    fields.push(column(
        "me",
        DataType::Utf8,
        "Monitored element (histogram name)",
    ));
    fields.push(column(
        "counts",
        f64_list(),
        "Bin contents: underflow, the ME's bins, overflow (unit area when normalized)",
    ));
    fields.push(column(
        "entries",
        DataType::Int64,
        "Values filled (before normalization)",
    ));
    Arc::new(Schema::new(fields))
}

/// The LS columns every lumisection table starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct LsKey {
    pub run: i64,
    pub ls: i64,
    pub part: String,
    pub events: i64,
    pub lumi: f64,
    pub truth: String,
    pub bad: bool,
    pub pileup: f64,
}

/// One row of `ls_histograms`.
#[derive(Debug, Clone, PartialEq)]
pub struct LsHistogram {
    pub key: LsKey,
    pub me: String,
    pub counts: Vec<f64>,
    pub entries: i64,
}

/// Checks at `plan` that `schema` (input `input` of a stage) has the LS
/// columns and those of `extra`, with their types.
pub fn require_ls_columns(
    schema: &SchemaRef,
    input: &str,
    why: &str,
    extra: &[(&str, DataType)],
) -> Result<()> {
    let ls = ls_fields();
    let wanted = ls
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .chain(extra.iter().map(|(n, t)| (*n, t.clone())));
    for (name, t) in wanted {
        require_column(schema, input, name, why, &t.to_string(), |f| f == &t)?;
    }
    Ok(())
}

fn ls_keys(batch: &RecordBatch, input: &str) -> Result<Vec<LsKey>> {
    let col = |n: &str, t: &DataType| column_as(batch, n, t, input);
    let pileup = col("pileup", &DataType::Float64)?;
    let pileup = pileup.as_primitive::<Float64Type>();
    let (run, ls, part, events, lumi, truth, bad) = (
        col("run", &DataType::Int64)?,
        col("ls", &DataType::Int64)?,
        col("part", &DataType::Utf8)?,
        col("events", &DataType::Int64)?,
        col("lumi", &DataType::Float64)?,
        col("truth", &DataType::Utf8)?,
        col("bad", &DataType::Boolean)?,
    );
    let (run, ls, part, events, lumi, truth, bad) = (
        run.as_primitive::<Int64Type>(),
        ls.as_primitive::<Int64Type>(),
        part.as_string::<i32>(),
        events.as_primitive::<Int64Type>(),
        lumi.as_primitive::<Float64Type>(),
        truth.as_string::<i32>(),
        bad.as_boolean(),
    );
    Ok((0..batch.num_rows())
        .map(|i| LsKey {
            run: run.value(i),
            ls: ls.value(i),
            part: part.value(i).to_string(),
            events: events.value(i),
            lumi: lumi.value(i),
            truth: truth.value(i).to_string(),
            bad: bad.value(i),
            pileup: pileup.value(i),
        })
        .collect())
}

/// Every row of an `ls_histograms` table; refuses non-finite or negative
/// bin contents, naming the run, LS and ME.
pub fn read_histograms(input: &Input) -> Result<Vec<LsHistogram>> {
    let mut rows = Vec::new();
    for batch in input.batches() {
        let batch = batch?;
        let keys = ls_keys(&batch, &input.name)?;
        let me = column_as(&batch, "me", &DataType::Utf8, &input.name)?;
        let entries = column_as(&batch, "entries", &DataType::Int64, &input.name)?;
        let counts = crate::arrow_util::list_rows(
            batch.column_by_name("counts").expect("planned"),
            &input.name,
            "counts",
        )?;
        let (me, entries) = (me.as_string::<i32>(), entries.as_primitive::<Int64Type>());
        for (i, (key, counts)) in keys.into_iter().zip(counts).enumerate() {
            if let Some(c) = counts.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
                return Err(StageError::data(format!(
                    "input `{}`, column `counts`: run {} LS {} ME `{}` has a bin of {c} (counts must be finite and ≥ 0)",
                    input.name,
                    key.run,
                    key.ls,
                    me.value(i)
                )));
            }
            rows.push(LsHistogram {
                key,
                me: me.value(i).to_string(),
                counts,
                entries: entries.value(i),
            });
        }
    }
    Ok(rows)
}

/// Checks at `plan` that input `input` is a per-LS histograms table.
pub fn require_histograms(schema: &SchemaRef, input: &str) -> Result<()> {
    require_ls_columns(
        schema,
        input,
        "per-LS histograms (`ls_histograms`)",
        &[
            ("me", DataType::Utf8),
            ("counts", f64_list()),
            ("entries", DataType::Int64),
        ],
    )
}

/// Histograms grouped by ME, refusing an empty table and a ME whose
/// histograms have different numbers of bins.
pub fn by_me<'a>(
    histograms: &'a [LsHistogram],
    input: &str,
) -> Result<std::collections::BTreeMap<&'a str, Vec<&'a LsHistogram>>> {
    let mut by_me: std::collections::BTreeMap<&str, Vec<&LsHistogram>> = Default::default();
    for h in histograms {
        by_me.entry(h.me.as_str()).or_default().push(h);
    }
    if by_me.is_empty() {
        return Err(StageError::data(format!(
            "input `{input}` has no histogram"
        )));
    }
    for (me, rows) in &by_me {
        let bins = rows[0].counts.len();
        if let Some(h) = rows.iter().find(|h| h.counts.len() != bins) {
            return Err(StageError::data(format!(
                "input `{input}`, column `counts`: ME `{me}` has histograms of {bins} and {} bins (run {} LS {})",
                h.counts.len(),
                h.key.run,
                h.key.ls
            )));
        }
    }
    Ok(by_me)
}

/// Scores of one method: one row per LS and ME.
pub fn scores_schema() -> SchemaRef {
    let mut fields = ls_fields();
    fields.extend([
        column("me", DataType::Utf8, "Monitored element"),
        column(
            "method",
            DataType::Utf8,
            "Scoring method (`ae`: autoencoder MSE; `chi2`: χ²/ndf against the reference shape)"),
        nullable(
            "raw_score",
            DataType::Float64,
            "The method's score of this LS alone (null: the LS has no entries in the ME)"),
        nullable(
            "score",
            DataType::Float64,
            "raw_score after the moving average over neighbouring LS (what is thresholded)"),
        column(
            "threshold",
            DataType::Float64,
            "Threshold of this ME (and run, for thresholds taken from the run itself)"),
        column(
            "over",
            DataType::Boolean,
            "score > threshold, or the LS is empty in this ME (an LS without data is not certified)"),
    ]);
    Arc::new(Schema::new(fields))
}

/// One row of a scores table.
#[derive(Debug, Clone, PartialEq)]
pub struct LsScore {
    pub key: LsKey,
    pub me: String,
    pub method: String,
    pub raw_score: Option<f64>,
    pub score: Option<f64>,
    pub threshold: f64,
    pub over: bool,
}

/// The LS columns every lumisection table starts with, for `keys`.
fn key_columns<'a>(keys: impl Iterator<Item = &'a LsKey> + Clone) -> Vec<ArrayRef> {
    vec![
        Arc::new(Int64Array::from_iter_values(keys.clone().map(|k| k.run))),
        Arc::new(Int64Array::from_iter_values(keys.clone().map(|k| k.ls))),
        Arc::new(StringArray::from_iter_values(
            keys.clone().map(|k| k.part.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(keys.clone().map(|k| k.events))),
        Arc::new(Float64Array::from_iter_values(keys.clone().map(|k| k.lumi))),
        Arc::new(StringArray::from_iter_values(
            keys.clone().map(|k| k.truth.as_str()),
        )),
        Arc::new(BooleanArray::from(
            keys.clone().map(|k| k.bad).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(keys.map(|k| k.pileup))),
    ]
}

/// Rows of [`histograms_schema`].
pub fn histograms_batch(rows: &[LsHistogram]) -> Result<RecordBatch> {
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    columns.extend([
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.me.as_str()),
        )) as ArrayRef,
        Arc::new(crate::arrow_util::f64_lists(
            rows.iter().map(|r| r.counts.as_slice()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.entries))),
    ]);
    Ok(RecordBatch::try_new(histograms_schema(), columns)?)
}

pub fn scores_batch(rows: &[LsScore]) -> Result<RecordBatch> {
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    let more: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.me.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.method.as_str()),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.raw_score))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.score))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.threshold),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.over).collect::<Vec<_>>(),
        )),
    ];
    columns.extend(more);
    Ok(RecordBatch::try_new(scores_schema(), columns)?)
}

/// Every row of a scores table.
pub fn read_scores(input: &Input) -> Result<Vec<LsScore>> {
    let mut rows = Vec::new();
    for batch in input.batches() {
        let batch = batch?;
        let keys = ls_keys(&batch, &input.name)?;
        let col = |n: &str, t: &DataType| column_as(&batch, n, t, &input.name);
        let (me, method, raw, score, threshold, over) = (
            col("me", &DataType::Utf8)?,
            col("method", &DataType::Utf8)?,
            col("raw_score", &DataType::Float64)?,
            col("score", &DataType::Float64)?,
            col("threshold", &DataType::Float64)?,
            col("over", &DataType::Boolean)?,
        );
        let (me, method, raw, score, threshold, over) = (
            me.as_string::<i32>(),
            method.as_string::<i32>(),
            raw.as_primitive::<Float64Type>(),
            score.as_primitive::<Float64Type>(),
            threshold.as_primitive::<Float64Type>(),
            over.as_boolean(),
        );
        let opt = |a: &arrow::array::Float64Array, i: usize| {
            use arrow::array::Array;
            a.is_valid(i).then(|| a.value(i))
        };
        for (i, key) in keys.into_iter().enumerate() {
            rows.push(LsScore {
                key,
                me: me.value(i).to_string(),
                method: method.value(i).to_string(),
                raw_score: opt(raw, i),
                score: opt(score, i),
                threshold: threshold.value(i),
                over: over.value(i),
            });
        }
    }
    Ok(rows)
}

// ---- The models table (`lumi_ae_train`; read by `lumi_ae_score`) ----

/// What scoring needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LumiAeCard {
    pub me: String,
    pub arch: LumiAeArch,
    pub bins: usize,
    /// Per-bin min and max of the training histograms (min-max scaling).
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub best_epoch: usize,
    pub val_mse: f64,
    pub train_ls: usize,
    pub val_ls: usize,
    /// Conditional autoencoder: the LS's pile-up divided by this is the
    /// network's last input (none: the histogram alone).
    #[serde(default)]
    pub pileup_scale: Option<f64>,
    /// lumisaver's preprocessing: every scored run min-max scaled per bin
    /// on its own LS, not with the training runs' `min`/`max`.
    #[serde(default)]
    pub per_run_scaling: bool,
}

/// Per-bin min and max of histograms.
pub fn bin_ranges<'a>(rows: impl Iterator<Item = &'a [f64]>) -> (Vec<f64>, Vec<f64>) {
    let (mut min, mut max) = (Vec::new(), Vec::new());
    for r in rows {
        if min.is_empty() {
            (min, max) = (r.to_vec(), r.to_vec());
        }
        for (b, &v) in r.iter().enumerate() {
            min[b] = f64::min(min[b], v);
            max[b] = f64::max(max[b], v);
        }
    }
    (min, max)
}

/// `counts` min-max scaled per bin (a bin without range is only shifted).
pub fn min_max_scaled(counts: &[f64], min: &[f64], max: &[f64]) -> Vec<f32> {
    counts
        .iter()
        .enumerate()
        .map(|(b, &c)| {
            let range = max[b] - min[b];
            (if range > 0.0 {
                (c - min[b]) / range
            } else {
                c - min[b]
            }) as f32
        })
        .collect()
}

impl LumiAeCard {
    /// A histogram in the network's scale.
    pub fn scale(&self, counts: &[f64]) -> Vec<f32> {
        min_max_scaled(counts, &self.min, &self.max)
    }

    /// The network's inputs of an LS: its scaled histogram, then the
    /// pile-up when the autoencoder is conditional.
    pub fn inputs(&self, scaled: Vec<f32>, pileup: f64) -> Vec<f32> {
        let mut x = scaled;
        if let Some(scale) = self.pileup_scale {
            x.push((pileup / scale) as f32);
        }
        x
    }

    /// Inputs beyond the histogram's bins.
    pub fn conditions(&self) -> i64 {
        i64::from(self.pileup_scale.is_some())
    }

    /// A network output (scaled bins) back in the histogram's units.
    pub fn unscale(&self, scaled: &[f32]) -> Vec<f64> {
        scaled
            .iter()
            .enumerate()
            .map(|(b, &v)| {
                let range = self.max[b] - self.min[b];
                f64::from(v) * if range > 0.0 { range } else { 1.0 } + self.min[b]
            })
            .collect()
    }
}

/// The models table: one row per ME.
pub fn models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("me", DataType::Utf8, "Monitored element"),
        column(
            "best_epoch",
            DataType::Int64,
            "Epoch kept (lowest validation MSE)",
        ),
        column(
            "val_mse",
            DataType::Float64,
            "Validation MSE (scaled bins) at best_epoch",
        ),
        column(
            "card",
            DataType::Utf8,
            "Model card JSON: ME, layers, bins, per-bin min-max scaling",
        ),
        column(
            "weights",
            DataType::Binary,
            "Parameters as a safetensors file",
        ),
    ]))
}

/// The models of a `lumi_ae_train` table, by ME: card and safetensors bytes.
pub fn read_models(input: &Input) -> Result<BTreeMap<String, (LumiAeCard, Vec<u8>)>> {
    let mut models = BTreeMap::new();
    crate::nn::each_model_row(
        input,
        "the models table of `lumi_ae_train`",
        |_, _, card: LumiAeCard, weights| {
            let me = card.me.clone();
            if models.insert(me, (card, weights.to_vec())).is_some() {
                return Err(StageError::data(format!(
                    "input `{}` holds two models of one ME",
                    input.name
                )));
            }
            Ok(())
        },
    )?;
    Ok(models)
}
