//! The autoencoder of the lumisection family (one per monitored element),
//! its model card and the models table `lumi_ae_train` writes and
//! `lumi_ae_score` reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, Module};

use crate::error::{Result, StageError};
use crate::input::Input;
use dqm_schemas::doc_field;

/// Layer widths and the activity regularizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiAeArch {
    /// Widths of the hidden layers: ReLU, then sigmoid ones.
    pub hidden: Vec<i64>,
    /// L2 activity regularizer on the first layer's output.
    pub activity_l2: f64,
}

impl Default for LumiAeArch {
    fn default() -> Self {
        Self {
            hidden: vec![115, 167, 115],
            activity_l2: 1e-7,
        }
    }
}

/// The autoencoder of one ME.
pub struct LumiAe {
    layers: Vec<nn::Linear>,
}

impl LumiAe {
    pub fn new(p: &nn::Path, bins: i64, arch: &LumiAeArch) -> Self {
        let mut widths = vec![bins];
        widths.extend(&arch.hidden);
        widths.push(bins);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(p / format!("dense{i}"), w[0], w[1], Default::default()))
            .collect();
        Self { layers }
    }

    /// (reconstruction, first layer's activity).
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let first = self.layers[0].forward(x).relu();
        let mut h = first.shallow_clone();
        for layer in &self.layers[1..] {
            h = layer.forward(&h).sigmoid();
        }
        (h, first)
    }
}

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
}

impl LumiAeCard {
    /// A histogram in the network's scale.
    pub fn scale(&self, counts: &[f64]) -> Vec<f32> {
        counts
            .iter()
            .enumerate()
            .map(|(b, &c)| {
                let range = self.max[b] - self.min[b];
                (if range > 0.0 {
                    (c - self.min[b]) / range
                } else {
                    c - self.min[b]
                }) as f32
            })
            .collect()
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
    let f = |name, t, doc| doc_field(name, t, false, doc);
    Arc::new(Schema::new(vec![
        f("me", DataType::Utf8, "Monitored element"),
        f(
            "best_epoch",
            DataType::Int64,
            "Epoch kept (lowest validation MSE)",
        ),
        f(
            "val_mse",
            DataType::Float64,
            "Validation MSE (scaled bins) at best_epoch",
        ),
        f(
            "card",
            DataType::Utf8,
            "Model card JSON: ME, layers, bins, per-bin min-max scaling",
        ),
        f(
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
