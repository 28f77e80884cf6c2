//! Shared pieces of the libtorch (tch) models that live with their stages.

use std::sync::{Mutex, MutexGuard};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self as tnn, Module};
use tch::{Device, Kind, Tensor};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};

/// The device models run on: CUDA when libtorch sees a GPU, else the CPU.
pub fn device() -> Device {
    Device::cuda_if_available()
}

/// Where a model stage runs, as a YAML parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Auto => Ok(device()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(StageError::param(
                "device",
                "`cuda` was asked for but libtorch sees no CUDA GPU",
            )),
        }
    }
}

static TORCH: Mutex<()> = Mutex::new(());

/// Held by a stage for as long as it trains or runs a model. libtorch has
/// one global random generator (dropout, initialization) and uses every core
/// for each operation: two model stages running side by side in one process
/// would make each other's results depend on timing and fight for the cores.
pub fn exclusive() -> MutexGuard<'static, ()> {
    // A stage that panicked while holding the lock left no torch state we reuse.
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held while a small model (layers of ~100 units) trains or scores:
/// libtorch's intra-op thread pool costs more than it saves on such layers,
/// and two processes each spinning a pool on a 2-core machine slow each
/// other down by an order of magnitude. Sets one thread; the previous count
/// comes back on drop. Take it after [`exclusive`] (the count is global).
pub struct OneThread(i32);

pub fn one_thread() -> OneThread {
    let previous = tch::get_num_threads();
    tch::set_num_threads(1);
    OneThread(previous)
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// The best parameters of a training run so far, kept on disk: saved each
/// time the validation loss improves, with the epochs waited since (for
/// early stopping or a plateau schedule, which stay with each stage).
pub struct Checkpoint {
    path: std::path::PathBuf,
    /// Lowest validation loss seen (∞ before the first epoch).
    pub best: f64,
    /// Its epoch (0 before the first).
    pub best_epoch: usize,
    /// Epochs since it.
    pub waited: usize,
}

impl Checkpoint {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            best: f64::INFINITY,
            best_epoch: 0,
            waited: 0,
        }
    }

    /// Saves `vs` when `loss` is the lowest so far; returns whether it was.
    pub fn observe(&mut self, epoch: usize, loss: f64, vs: &tnn::VarStore) -> Result<bool> {
        if !(loss < self.best) {
            self.waited += 1;
            return Ok(false);
        }
        (self.best, self.best_epoch, self.waited) = (loss, epoch, 0);
        vs.save(&self.path)
            .map_err(|e| StageError::data(format!("cannot save {}: {e}", self.path.display())))?;
        Ok(true)
    }

    /// Puts the best parameters back into `vs`.
    pub fn restore(&self, vs: &mut tnn::VarStore) -> Result<()> {
        vs.load(&self.path)
            .map_err(|e| StageError::data(format!("cannot reload {}: {e}", self.path.display())))
    }

    /// The best parameters as a safetensors file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).map_err(|e| StageError::io(&self.path, e))
    }
}

/// Plan-time check of a models table: a `card` column (JSON, Utf8) and a
/// `weights` column (safetensors, Binary), as every training stage writes
/// them; `why` says who reads it. Key columns (`fold`, `me`) are the
/// reader's to check.
pub fn require_models(schema: &SchemaRef, input: &str, why: &str) -> Result<()> {
    for (column, data_type) in [("card", DataType::Utf8), ("weights", DataType::Binary)] {
        require_column(schema, input, column, why, &data_type.to_string(), |t| {
            t == &data_type
        })?;
    }
    Ok(())
}

/// Reads a models table — a `card` column (JSON) and a `weights` column
/// (safetensors), as every training stage writes them. `each` gets the
/// row's batch and index (for key columns such as `fold`), its parsed card
/// and its weights. Returns the number of rows; a table without one is an
/// error.
pub fn each_model_row<C: serde::de::DeserializeOwned>(
    input: &Input,
    why: &str,
    mut each: impl FnMut(&RecordBatch, usize, C, &[u8]) -> Result<()>,
) -> Result<usize> {
    require_models(&input.schema, &input.name, why)?;
    let card_idx = input.schema.index_of("card")?;
    let weights_idx = input.schema.index_of("weights")?;
    let mut rows = 0;
    for batch in input.batches() {
        let batch = batch?;
        let cards = batch.column(card_idx).as_string::<i32>();
        let weights = batch.column(weights_idx).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            rows += 1;
            let card = serde_json::from_str(cards.value(i)).map_err(|e| {
                StageError::data(format!(
                    "input `{}`, model row {rows}: unreadable model card: {e}",
                    input.name
                ))
            })?;
            each(&batch, i, card, weights.value(i))?;
        }
    }
    if rows == 0 {
        return Err(StageError::data(format!(
            "input `{}` has no model row",
            input.name
        )));
    }
    Ok(rows)
}

/// A linear layer initialised as PyTorch's `nn.Linear`: weight and bias
/// uniform in ±1/sqrt(fan_in) (tch's default draws the weight from a
/// Kaiming-uniform √6 times wider), for networks that must start where
/// their PyTorch original does.
pub fn pytorch_linear<'a>(
    p: impl std::borrow::Borrow<tnn::Path<'a>>,
    input: i64,
    output: i64,
) -> tnn::Linear {
    let bound = 1.0 / (input as f64).sqrt();
    let uniform = tnn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    tnn::linear(
        p,
        input,
        output,
        tnn::LinearConfig {
            ws_init: uniform,
            bs_init: Some(uniform),
            bias: true,
        },
    )
}

/// Multi-head self-attention (tch has no transformer module), shared by the
/// MEDIC set encoders and the DINAMO-ML encoder; the scaled dot-product
/// itself is libtorch's fused kernel.
#[derive(Debug)]
pub struct SelfAttention {
    pub(crate) q: tnn::Linear,
    pub(crate) k: tnn::Linear,
    pub(crate) v: tnn::Linear,
    pub(crate) out: tnn::Linear,
    heads: i64,
}

impl SelfAttention {
    pub fn new(p: tnn::Path, embed: i64, heads: i64) -> Self {
        Self {
            q: tnn::linear(&p / "q", embed, embed, Default::default()),
            k: tnn::linear(&p / "k", embed, embed, Default::default()),
            v: tnn::linear(&p / "v", embed, embed, Default::default()),
            out: tnn::linear(&p / "out", embed, embed, Default::default()),
            heads,
        }
    }

    /// As PyTorch's `nn.MultiheadAttention` initialises itself: the packed
    /// [3E, E] input projection Xavier-uniform (so each of q, k, v is
    /// uniform in ±sqrt(6 / 4E)) with zero biases, the output projection an
    /// `nn.Linear` default with a zero bias.
    pub fn pytorch_multihead(p: tnn::Path, embed: i64, heads: i64) -> Self {
        let xavier = (6.0 / (4 * embed) as f64).sqrt();
        let proj = |name: &str, bound: f64| {
            tnn::linear(
                &p / name,
                embed,
                embed,
                tnn::LinearConfig {
                    ws_init: tnn::Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                    bs_init: Some(tnn::Init::Const(0.0)),
                    bias: true,
                },
            )
        };
        Self {
            q: proj("q", xavier),
            k: proj("k", xavier),
            v: proj("v", xavier),
            out: proj("out", 1.0 / (embed as f64).sqrt()),
            heads,
        }
    }

    /// `x`: [batch, objects, embed]; `padded`: [batch, objects] true where an
    /// object is padding (excluded as a key when given).
    pub fn forward(
        &self,
        x: &Tensor,
        padded: Option<&Tensor>,
        dropout: f64,
        train: bool,
    ) -> Tensor {
        let (b, n, e) = x.size3().expect("[batch, objects, embed]");
        let d = e / self.heads;
        let split = |t: Tensor| t.view([b, n, self.heads, d]).transpose(1, 2);
        let (q, k, v) = (
            split(self.q.forward(x)),
            split(self.k.forward(x)),
            split(self.v.forward(x)),
        );
        // Additive mask: a large negative, not -inf, so a set of only
        // padding stays finite.
        let mask = padded.map(|p| p.view([b, 1, 1, n]).to_kind(Kind::Float) * -1e9);
        let heads = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask.as_ref(),
            if train { dropout } else { 0.0 },
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([b, n, e]);
        self.out.forward(&heads)
    }
}

/// Copies safetensors `bytes` into the variables of `vs`: every variable
/// must be present with its shape.
pub fn load_weights(vs: &tnn::VarStore, bytes: &[u8], at: &str) -> Result<()> {
    load_weights_where(vs, bytes, at, |_| true).map(|_| ())
}

/// Copies the variables of `vs` whose name passes `wanted` from safetensors
/// `bytes` (transfer learning copies some blocks only); each must be present
/// with its shape. Returns how many were copied.
pub fn load_weights_where(
    vs: &tnn::VarStore,
    bytes: &[u8],
    at: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<usize> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        StageError::data(format!("{at}: weights are not a safetensors file: {e:?}"))
    })?;
    let mut copied = 0;
    tch::no_grad(|| {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut var) in variables {
            if !wanted(&name) {
                continue;
            }
            let view = st.tensor(&name).map_err(|_| {
                StageError::data(format!(
                    "{at}: weights have no tensor `{name}` (trained with another architecture?)"
                ))
            })?;
            let t = Tensor::try_from(view)
                .map_err(|e| StageError::data(format!("{at}: tensor `{name}`: {e}")))?;
            if t.size() != var.size() {
                return Err(StageError::data(format!(
                    "{at}: tensor `{name}` has shape {:?}, the model needs {:?}",
                    t.size(),
                    var.size()
                )));
            }
            var.copy_(&t.to_device(var.device()));
            copied += 1;
        }
        Ok(copied)
    })
}

#[cfg(test)]
mod tests {
    use tch::nn::{self, Module, OptimizerConfig};
    use tch::{Kind, Tensor};

    /// A real libtorch training step must reduce a loss: a broken link or a
    /// mismatched libtorch fails here, not in a user's first MEDIC run.
    #[test]
    fn a_training_step_reduces_the_loss() {
        // libtorch's random generator is global: keep other tests off it.
        let _torch = crate::nn::exclusive();
        tch::manual_seed(7);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = nn::linear(vs.root(), 3, 1, Default::default());
        let x = Tensor::randn([64, 3], (Kind::Float, tch::Device::Cpu));
        let y = x.matmul(&Tensor::from_slice(&[1.0f32, -2.0, 0.5]).view([3, 1])) + 0.3;
        let mut opt = nn::Adam::default().build(&vs, 5e-2).unwrap();
        let loss = |net: &nn::Linear| net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        let before = loss(&net).double_value(&[]);
        for _ in 0..100 {
            opt.backward_step(&loss(&net));
        }
        let after = loss(&net).double_value(&[]);
        assert!(after < 0.5 * before, "loss {before} -> {after}");
    }
}
