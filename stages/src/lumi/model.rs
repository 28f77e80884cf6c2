//! The autoencoder of the lumisection family (one per monitored element):
//! lumisaver's dense network. Its model card and the models table are in
//! [`super::tables`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, Module};

use crate::error::{Result, bad_param};

/// Layer widths and the activity regularizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LumiAeArch {
    /// Widths of the hidden layers: ReLU, then sigmoid ones.
    pub hidden: Vec<i64>,
    /// L2 activity regularizer on the first layer's output.
    pub activity_l2: f64,
}

impl LumiAeArch {
    /// Checks the widths; errors name their key in `arch:`.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&w| w < 1) {
            return bad_param("hidden", "give at least one width, each ≥ 1");
        }
        Ok(())
    }
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
    /// An autoencoder of `bins` bins; `conditions` more inputs (the LS's
    /// pile-up) are appended to the histogram and not reconstructed.
    pub fn new(p: &nn::Path, bins: i64, conditions: i64, arch: &LumiAeArch) -> Self {
        let mut widths = vec![bins + conditions];
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
