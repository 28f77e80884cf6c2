//! DINAMO-ML for many datasets at once. Datasets are independent, so D
//! networks train side by side as one: every parameter of the network in
//! `reference_net.rs` is stacked with a leading dataset axis (batched matrix
//! products, per-dataset LayerNorm), one forward and one backward pass serve
//! all D, and one AdamW step updates all of them. Adam is element-wise, so
//! stacked moments with per-dataset step counts are D separate optimisers.
//! Only the datasets still training form the stack a step runs on (their
//! rows gathered, then written back): one whose run was bad, or whose early
//! stopping fired, keeps its parameters and moments and costs nothing.
//!
//! Runs advance in lockstep: at run t every dataset predicts its reference
//! for its own run t, and the datasets whose run t is good train until each
//! one's own early stopping. Dropout masks come from each dataset's own
//! stream (`dropout_stream.rs`), so a dataset's scores equal those of
//! training it alone, with dropout on or off (tested), and stacks can train
//! side by side on separate threads.
//!
//! Cheaper than `reference_net.rs`'s modules, same function: attention's
//! q, k and v are one product (their weights adjacent in a dataset's row),
//! and attention is written out (scores, softmax, the dropout mask, values)
//! so its mask can come from the dataset's stream.
//!
//! On the CPU the stack keeps its rows but each dataset trains and
//! predicts through `cpu_network.rs` (the same network written out in
//! Rust, one dataset at a time: libtorch's per-operation cost was two
//! thirds of an iteration); the stacked libtorch network runs on other
//! devices and is that path's reference in the tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use super::adamw::AdamW;
use super::cpu_network::CpuNetwork;
use super::dropout_stream::DropoutStream;
use super::reference_net::{Activation, EarlyStop, MlArch, ReferenceNet, UpdateStats, nll_terms};
use super::tokens::{DistinctTokens, TrainBatch};

/// libtorch's generator is global: stacks initialised on several threads
/// seed it and draw their starting weights one at a time.
static INIT: Mutex<()> = Mutex::new(());

/// `draw` run with libtorch's generator seeded with `seed`, no other
/// seeded draw meanwhile (stacks initialised on several threads, tests).
pub fn seeded<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    draw()
}

/// Where each named parameter of the network lies in a dataset's flat
/// parameter vector: all of a dataset's parameters are one row of a
/// [D, P] tensor, so the optimiser is two passes over that tensor
/// (`adamw.rs`) rather than a dozen operations per parameter.
struct Layout {
    /// Parameter names and shapes, in the order a row holds them flattened.
    entries: Vec<(String, Vec<i64>)>,
}

impl Layout {
    /// The layout and one dataset's row of `ReferenceNet`'s parameters,
    /// each attention's q, k, v weights (and biases) stacked into one
    /// `qkv` parameter of 3E rows, q first.
    fn of(vars: BTreeMap<String, Tensor>) -> (Self, Tensor) {
        let mut vars = vars;
        let fused: Vec<String> = vars
            .keys()
            .filter_map(|name| name.strip_suffix(".q.weight").map(str::to_string))
            .collect();
        for prefix in fused {
            for part in ["weight", "bias"] {
                let pieces: Vec<Tensor> = ["q", "k", "v"]
                    .iter()
                    .map(|x| {
                        vars.remove(&format!("{prefix}.{x}.{part}"))
                            .expect("attention has q, k, v")
                    })
                    .collect();
                vars.insert(format!("{prefix}.qkv.{part}"), Tensor::cat(&pieces, 0));
            }
        }
        let mut row = Vec::new();
        let entries = vars
            .into_iter()
            .map(|(name, t)| {
                row.push(t.detach().reshape([-1]));
                (name, t.size())
            })
            .collect();
        (Self { entries }, Tensor::cat(&row, 0))
    }
}

/// One iteration's dropout multipliers for one encoder layer of the stack
/// (A datasets, K samples, M tokens).
struct LayerMasks {
    /// On the attention weights, [A·K, H, M, M].
    attention: Tensor,
    /// On the attention block's output, [A, K, M, E].
    attention_out: Tensor,
    /// On the feed-forward's hidden layer, [A, K, M, F].
    hidden: Tensor,
    /// On the feed-forward's output, [A, K, M, E].
    out: Tensor,
}

/// The masks of one iteration for the datasets `active` (their streams
/// and real sample counts), padded to `k` samples each. A dataset draws
/// sample by sample, layer by layer, for its own samples only, so its draws
/// do not depend on the stack; padding samples (weight 0) keep everything.
fn draw_masks(
    arch: &MlArch,
    streams: &mut [DropoutStream],
    active: &[usize],
    runs: &[usize],
    k: usize,
    device: Device,
) -> Vec<LayerMasks> {
    let (h, m, e, f) = (
        arch.heads,
        arch.context as i64,
        arch.d_model,
        arch.feed_forward,
    );
    let sites = [h * m * m, m * e, m * f, m * e];
    let per_layer: i64 = sites.iter().sum();
    let per_sample = per_layer as usize * arch.layers;
    let mut buffer = vec![1.0f32; active.len() * k * per_sample];
    for (slot, &i) in active.iter().enumerate() {
        let start = slot * k * per_sample;
        streams[i].fill(&mut buffer[start..start + runs[i] * per_sample]);
    }
    let (a, ki) = (active.len() as i64, k as i64);
    let all = Tensor::from_slice(&buffer)
        .view([a, ki, per_sample as i64])
        .to_device(device);
    (0..arch.layers as i64)
        .map(|l| {
            let mut offset = l * per_layer;
            let mut site = |size: i64, shape: &[i64]| {
                let piece = all.narrow(2, offset, size).reshape(shape);
                offset += size;
                piece
            };
            LayerMasks {
                attention: site(sites[0], &[a * ki, h, m, m]),
                attention_out: site(sites[1], &[a, ki, m, e]),
                hidden: site(sites[2], &[a, ki, m, f]),
                out: site(sites[3], &[a, ki, m, e]),
            }
        })
        .collect()
}

/// The tokens of a stack of D datasets on the device: distinct histograms
/// [D, U, N_b] and times [D, T] (each dataset's padded to the largest), and
/// each token's row in the flattened [D·U] and [D·T].
struct Tokens {
    histograms: Tensor,
    times: Tensor,
    histogram_rows: Tensor,
    time_rows: Tensor,
    /// (D, B, M).
    shape: [i64; 3],
}

impl Tokens {
    /// `each` dataset's tokens, `b` samples of `m` each (a dataset with
    /// fewer samples points its padding tokens at its first rows).
    fn stack(each: &[&DistinctTokens], b: usize, m: usize, n_bins: usize, device: Device) -> Self {
        let u = each
            .iter()
            .map(|t| t.distinct_histograms(n_bins))
            .max()
            .unwrap_or(1)
            .max(1);
        let tt = each.iter().map(|t| t.times.len()).max().unwrap_or(1).max(1);
        let d = each.len();
        let (mut histograms, mut times) = (vec![0.0f32; d * u * n_bins], vec![0.0f32; d * tt]);
        let (mut histogram_rows, mut time_rows) = (vec![0i64; d * b * m], vec![0i64; d * b * m]);
        for (i, t) in each.iter().enumerate() {
            histograms[i * u * n_bins..][..t.histograms.len()].copy_from_slice(&t.histograms);
            times[i * tt..][..t.times.len()].copy_from_slice(&t.times);
            let rows = &mut histogram_rows[i * b * m..][..b * m];
            rows.fill((i * u) as i64);
            for (r, &j) in rows.iter_mut().zip(&t.histogram_of) {
                *r = (i * u) as i64 + j;
            }
            let rows = &mut time_rows[i * b * m..][..b * m];
            rows.fill((i * tt) as i64);
            for (r, &j) in rows.iter_mut().zip(&t.time_of) {
                *r = (i * tt) as i64 + j;
            }
        }
        let on = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        let (di, ui, ti) = (d as i64, u as i64, tt as i64);
        Self {
            histograms: on(&histograms, &[di, ui, n_bins as i64]),
            times: on(&times, &[di, ti, 1]),
            histogram_rows: Tensor::from_slice(&histogram_rows).to_device(device),
            time_rows: Tensor::from_slice(&time_rows).to_device(device),
            shape: [di, b as i64, m as i64],
        }
    }
}

/// A view of D datasets' parameters (`flat`: [D, P]) running the network.
/// The flat rows are split once per pass (one backward operation for all
/// parameters: narrowing each one would cost a full-size gradient each).
struct Stacked<'a> {
    arch: &'a MlArch,
    views: BTreeMap<&'a str, Tensor>,
    d: i64,
}

impl<'a> Stacked<'a> {
    fn new(layout: &'a Layout, arch: &'a MlArch, flat: &Tensor, d: i64) -> Self {
        let lens: Vec<i64> = layout
            .entries
            .iter()
            .map(|(_, shape)| shape.iter().product())
            .collect();
        let pieces = flat.split_with_sizes(&lens, 1);
        let views = layout
            .entries
            .iter()
            .zip(pieces)
            .map(|((name, shape), piece)| {
                let mut full = vec![d];
                full.extend(shape);
                (name.as_str(), piece.view(&full[..]))
            })
            .collect();
        Self { arch, views, d }
    }

    fn p(&self, name: &str) -> Tensor {
        self.views[name].shallow_clone()
    }

    /// x [D, ..., in] through the stacked linear layer `name`.
    fn linear(&self, name: &str, x: &Tensor) -> Tensor {
        let (w, b) = (
            self.p(&format!("{name}.weight")),
            self.p(&format!("{name}.bias")),
        );
        let mut shape = x.size();
        let input = *shape.last().expect("rank >= 2");
        let flat = x.reshape([self.d, -1, input]);
        let y = b.unsqueeze(1).baddbmm(&flat, &w.transpose(1, 2), 1.0, 1.0);
        *shape.last_mut().expect("rank >= 2") = w.size()[1];
        y.reshape(&shape)
    }

    /// Per-dataset LayerNorm over the last axis.
    fn layer_norm(&self, name: &str, x: &Tensor) -> Tensor {
        let shape = x.size();
        let dim = *shape.last().expect("rank >= 1");
        let mut view = vec![self.d];
        view.extend(std::iter::repeat_n(1, shape.len() - 2));
        view.push(dim);
        let normed = x.layer_norm([dim], None::<&Tensor>, None::<&Tensor>, 1e-5, false);
        normed * self.p(&format!("{name}.weight")).view(&view[..])
            + self.p(&format!("{name}.bias")).view(&view[..])
    }

    fn block(&self, name: &str, x: &Tensor) -> Tensor {
        let h = self.layer_norm(
            &format!("{name}.norm"),
            &self.linear(&format!("{name}.a"), x),
        );
        self.linear(&format!("{name}.b"), &h.relu())
    }

    /// Multi-head self-attention, softmax(q kᵀ / √d_head) v, with the
    /// attention weights' dropout mask when training.
    fn attention(&self, name: &str, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (d, b, m, e) = x.size4().expect("[D, B, M, E]");
        let h = self.arch.heads;
        // [D, B, M, 3E] -> [3, D·B, H, M, E/H]
        let qkv = self
            .linear(&format!("{name}.qkv"), x)
            .reshape([d * b, m, 3, h, e / h])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let scale = 1.0 / ((e / h) as f64).sqrt();
        let weights = (q.matmul(&k.transpose(-2, -1)) * scale).softmax(-1, Kind::Float);
        // Not in place: softmax's backward needs its output as it was.
        let weights = match mask {
            Some(mask) => weights * mask,
            None => weights,
        };
        let heads = weights.matmul(&v).transpose(1, 2).reshape([d, b, m, e]);
        self.linear(&format!("{name}.out"), &heads)
    }

    /// Each token's embedding, [D, B, M, E]: the embedding blocks run on
    /// the distinct histograms and times, then are gathered per token.
    fn embed(&self, tokens: &Tokens) -> Tensor {
        let [d, b, m] = tokens.shape;
        let e = self.arch.d_model;
        let per_token = |embedded: Tensor, rows: &Tensor| {
            embedded
                .reshape([-1, e])
                .index_select(0, rows)
                .view([d, b, m, e])
        };
        per_token(
            self.block("histogram", &tokens.histograms),
            &tokens.histogram_rows,
        ) + per_token(self.block("time", &tokens.times), &tokens.time_rows)
    }

    /// (μ̂, σ̂), each [D, B, N_b], from the stack's tokens; `masks` (one per
    /// layer) when training with dropout.
    fn forward(&self, tokens: &Tokens, masks: Option<&[LayerMasks]>) -> (Tensor, Tensor) {
        let drop = |x: Tensor, mask: Option<&Tensor>| match mask {
            Some(mask) => x * mask,
            None => x,
        };
        let mut x = self.embed(tokens);
        for i in 0..self.arch.layers {
            let l = format!("layer{i}");
            let mask = masks.map(|all| &all[i]);
            let a = self.attention(&format!("{l}.attention"), &x, mask.map(|m| &m.attention));
            let a = drop(a, mask.map(|m| &m.attention_out));
            x = self.layer_norm(&format!("{l}.norm1"), &(&x + a));
            let h = self.linear(&format!("{l}.ff1"), &x);
            let h = match self.arch.activation {
                Activation::Gelu => h.gelu("none"),
                Activation::Relu => h.relu(),
            };
            let h = drop(h, mask.map(|m| &m.hidden));
            let h = drop(self.linear(&format!("{l}.ff2"), &h), mask.map(|m| &m.out));
            x = self.layer_norm(&format!("{l}.norm2"), &(&x + h));
        }
        let pooled = x.mean_dim(2, false, Kind::Float);
        let mu = self.block("mu", &pooled).softmax(-1, Kind::Float);
        let sigma = self.block("sigma", &pooled).softplus();
        (mu, sigma)
    }
}

/// The networks of D datasets, stacked, with their optimiser state.
pub struct BatchedReferenceNet {
    pub arch: MlArch,
    pub datasets: i64,
    layout: Layout,
    /// Parameters [D, P], and AdamW's first and second moments.
    value: Tensor,
    m: Tensor,
    v: Tensor,
    /// AdamW steps taken per dataset (bias corrections differ per dataset).
    steps: Vec<i32>,
    learning_rate: f64,
    weight_decay: f64,
    device: Device,
    /// On the CPU, the network written out in Rust (`cpu_network.rs`):
    /// each dataset trained on its own, start to end; `None` runs the
    /// stacked libtorch network (other devices, GELU).
    cpu: Option<CpuNetwork>,
}

impl BatchedReferenceNet {
    /// D copies of the network `ReferenceNet::new` makes from libtorch's
    /// generator seeded with `seed`: each dataset starts exactly where a
    /// separately trained one would.
    pub fn new(
        arch: MlArch,
        datasets: i64,
        seed: u64,
        learning_rate: f64,
        weight_decay: f64,
        device: Device,
    ) -> Self {
        let vars: BTreeMap<String, Tensor> = seeded(seed, || {
            let vs = tch::nn::VarStore::new(device);
            let _net = ReferenceNet::new(&vs.root(), arch.clone());
            vs.variables().into_iter().collect()
        });
        let (layout, row) = Layout::of(vars);
        let value = row.unsqueeze(0).repeat([datasets, 1]);
        let cpu = (device == Device::Cpu)
            .then(|| CpuNetwork::new(&arch, &layout.entries))
            .flatten();
        Self {
            cpu,
            arch,
            datasets,
            layout,
            m: value.zeros_like(),
            v: value.zeros_like(),
            value,
            steps: vec![0; datasets as usize],
            learning_rate,
            weight_decay,
            device,
        }
    }

    /// (μ̂, σ̂), each [D, N_b], in evaluation mode, from each dataset's
    /// context (M histograms and times, [`DistinctTokens::dense`] or not).
    pub fn predict(&self, contexts: &[DistinctTokens]) -> (Tensor, Tensor) {
        if let Some(cpu) = &self.cpu {
            let (mut mu, mut sigma) = (Vec::new(), Vec::new());
            for (i, context) in contexts.iter().enumerate() {
                let (m, s) = cpu.predict(&self.row(i), context);
                mu.extend(m);
                sigma.extend(s);
            }
            let shape = [contexts.len() as i64, self.arch.n_bins];
            return (
                Tensor::from_slice(&mu).view(shape),
                Tensor::from_slice(&sigma).view(shape),
            );
        }
        let each: Vec<&DistinctTokens> = contexts.iter().collect();
        let (m, n) = (self.arch.context, self.arch.n_bins as usize);
        let tokens = Tokens::stack(&each, 1, m, n, self.device);
        let (mu, sigma) = tch::no_grad(|| {
            Stacked::new(&self.layout, &self.arch, &self.value, self.datasets)
                .forward(&tokens, None)
        });
        (mu.squeeze_dim(1), sigma.squeeze_dim(1))
    }

    /// Trains each dataset with `Some(batch)` until its own early stopping,
    /// its dropout masks from its stream in `streams` (one per dataset).
    /// The datasets still training are gathered into a smaller stack, so
    /// one that stopped costs nothing while the others go on.
    pub fn train_round(
        &mut self,
        batches: &[Option<TrainBatch>],
        streams: &mut [DropoutStream],
        patience: usize,
        max_iterations: usize,
    ) -> Vec<Option<UpdateStats>> {
        assert_eq!(
            streams.len(),
            batches.len(),
            "one dropout stream per dataset"
        );
        let runs: Vec<usize> = batches
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.runs))
            .collect();
        let d = self.datasets as usize;
        let (m, n) = (self.arch.context, self.arch.n_bins as usize);
        let k = batches.iter().flatten().map(|b| b.runs).max().unwrap_or(0);
        let mut stops: Vec<Option<EarlyStop>> = batches
            .iter()
            .map(|b| {
                b.as_ref()
                    .map(|b| EarlyStop::new(b.runs, patience, max_iterations))
            })
            .collect();
        let finish =
            |stops: Vec<Option<EarlyStop>>| stops.into_iter().map(|s| s.map(|s| s.stats)).collect();
        if k == 0 {
            return finish(stops);
        }
        if let Some(cpu) = self.cpu.clone() {
            for (i, (batch, stop)) in batches.iter().zip(&mut stops).enumerate() {
                if let (Some(batch), Some(stop)) = (batch, stop) {
                    self.train_alone(&cpu, i, batch, &mut streams[i], stop);
                }
            }
            return finish(stops);
        }
        // Pad every dataset's batch to k samples; padding weighs 0.
        let (mut target, mut weight) = (vec![0.0f32; d * k * n], vec![0.0f32; d * k]);
        for (i, b) in batches.iter().enumerate() {
            let Some(b) = b else { continue };
            target[i * k * n..][..b.runs * n].copy_from_slice(&b.targets);
            weight[i * k..][..b.runs].fill(1.0 / (b.runs * n) as f32);
        }
        let device = self.device;
        let on = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        let (di, ki, ni) = (d as i64, k as i64, n as i64);
        let target = on(&target, &[di, ki, ni]);
        let weight = on(&weight, &[di, ki, 1]);
        let mut active: Vec<usize> = (0..d).filter(|&i| batches[i].is_some()).collect();
        let (lr, wd) = (self.learning_rate, self.weight_decay);
        while !active.is_empty() {
            let a = active.len() as i64;
            let idx = Tensor::from_slice(&active.iter().map(|&i| i as i64).collect::<Vec<_>>())
                .to_device(device);
            let w = self.value.index_select(0, &idx).set_requires_grad(true);
            let (mut mom, mut var) = (self.m.index_select(0, &idx), self.v.index_select(0, &idx));
            let each: Vec<&DistinctTokens> = active
                .iter()
                .map(|&i| {
                    &batches[i]
                        .as_ref()
                        .expect("active datasets have a batch")
                        .tokens
                })
                .collect();
            let tokens = Tokens::stack(&each, k, m, n, device);
            let (y, wt) = (target.index_select(0, &idx), weight.index_select(0, &idx));
            let mut stopped = Vec::new();
            while stopped.is_empty() {
                let stacked = Stacked::new(&self.layout, &self.arch, &w, a);
                let masks = (self.arch.dropout > 0.0)
                    .then(|| draw_masks(&self.arch, streams, &active, &runs, k, device));
                let (mu, sigma) = stacked.forward(&tokens, masks.as_deref());
                let nll = nll_terms(&y, &mu, &sigma);
                // Per-dataset mean over its real samples and bins: [A].
                let per_dataset =
                    (nll * &wt).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float);
                let total = per_dataset.sum(Kind::Float);
                w.shallow_clone().zero_grad();
                total.backward();
                for &i in &active {
                    self.steps[i] += 1;
                }
                let steps: Vec<i32> = active.iter().map(|&i| self.steps[i]).collect();
                let (c1, c2) = AdamW::corrections(&steps);
                let opt = AdamW {
                    lr,
                    weight_decay: wd,
                };
                tch::no_grad(|| {
                    let (g, mut p) = (w.grad(), w.shallow_clone());
                    opt.step(&mut p, &g, &mut mom, &mut var, (&c1, &c2));
                });
                let losses = Vec::<f64>::try_from(
                    per_dataset
                        .detach()
                        .to_kind(Kind::Double)
                        .to_device(Device::Cpu),
                )
                .expect("a 1-d tensor");
                for (j, &i) in active.iter().enumerate() {
                    let stop = stops[i].as_mut().expect("active datasets have a batch");
                    if stop.record(losses[j]) {
                        stopped.push(i);
                    }
                }
            }
            // Write the working stack back, then go on with those left.
            tch::no_grad(|| {
                let _ = self.value.index_copy_(0, &idx, &w.detach());
                let _ = self.m.index_copy_(0, &idx, &mom);
                let _ = self.v.index_copy_(0, &idx, &var);
            });
            active.retain(|i| !stopped.contains(i));
        }
        finish(stops)
    }
}

impl BatchedReferenceNet {
    /// Dataset `i`'s parameter row, copied.
    fn row(&self, i: usize) -> Vec<f32> {
        Vec::<f32>::try_from(self.value.get(i as i64)).expect("a row of f32")
    }

    /// Trains dataset `i` on `batch` through `cpu` until `stop` says so:
    /// its loss and gradient in Rust, then the same AdamW step as the
    /// stack's, on its rows of the parameters and moments.
    fn train_alone(
        &mut self,
        cpu: &CpuNetwork,
        i: usize,
        batch: &TrainBatch,
        stream: &mut DropoutStream,
        stop: &mut EarlyStop,
    ) {
        let n = cpu.params();
        let opt = AdamW {
            lr: self.learning_rate,
            weight_decay: self.weight_decay,
        };
        let mut grad = vec![0.0f32; n];
        let mut masks = vec![1.0f32; batch.runs * cpu.masks_per_sample()];
        let dropout = self.arch.dropout > 0.0;
        // SAFETY: value, m and v are distinct contiguous [D, n] f32 CPU
        // tensors owned by `self` (asserted), row i of each in range; no
        // other reference to them is used while these slices live.
        let row = |t: &Tensor| unsafe {
            assert!(t.is_contiguous() && t.kind() == Kind::Float && t.device() == Device::Cpu);
            assert_eq!(t.size(), [self.datasets, n as i64]);
            std::slice::from_raw_parts_mut((t.data_ptr() as *mut f32).add(i * n), n)
        };
        let (p, m, v) = (row(&self.value), row(&self.m), row(&self.v));
        loop {
            if dropout {
                stream.fill(&mut masks);
            }
            let tokens = (&batch.tokens, &batch.targets[..], batch.runs);
            let loss = cpu.loss_and_gradient(p, tokens, dropout.then_some(&masks[..]), &mut grad);
            self.steps[i] += 1;
            let (c1, c2) = AdamW::corrections(&[self.steps[i]]);
            opt.step_row(p, &grad, m, v, (c1[0], c2[0]));
            if stop.record(loss) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dinamo::reference_net::build_context;
    use crate::dinamo::tokens::{DistinctTokens, TrainBatch};

    fn small_arch(dropout: f64) -> MlArch {
        MlArch {
            n_bins: 7,
            context: 5,
            d_model: 12,
            heads: 3,
            feed_forward: 10,
            layers: 2,
            dropout,
            activation: Activation::Relu,
        }
    }

    /// `runs` good runs with gaps, random unit-normalised histograms.
    fn good_runs(runs: usize, n_bins: usize, seed: u64) -> Vec<(i64, Vec<f32>)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut run = 0;
        (0..runs)
            .map(|_| {
                run += rng.random_range(1..4);
                let h: Vec<f32> = (0..n_bins).map(|_| rng.random_range(0.1..1.0)).collect();
                let total: f32 = h.iter().sum();
                (run, h.iter().map(|v| v / total).collect())
            })
            .collect()
    }

    /// Two networks of `datasets` from one seed, parameters moved off the
    /// initial values (LayerNorm's γ = 1, β = 0 would hide their
    /// gradients' errors): the Rust one and the stacked libtorch one.
    fn twins(arch: &MlArch, datasets: i64) -> (BatchedReferenceNet, BatchedReferenceNet) {
        let net = BatchedReferenceNet::new(arch.clone(), datasets, 3, 1e-3, 1e-2, Device::Cpu);
        let mut lib = BatchedReferenceNet::new(arch.clone(), datasets, 3, 1e-3, 1e-2, Device::Cpu);
        assert!(net.cpu.is_some(), "ReLU on the CPU runs the Rust network");
        lib.cpu = None;
        seeded(11, || {
            tch::no_grad(|| {
                let noise = net.value.randn_like() * 0.1;
                let mut v = net.value.shallow_clone();
                let _ = v.g_add_(&noise);
                lib.value.copy_(&net.value);
            })
        });
        (net, lib)
    }

    /// The Rust network's loss, gradient and predictions are the stacked
    /// libtorch network's (autograd), dropout masks included, for a batch
    /// with padded contexts and fewer samples than K.
    #[test]
    fn cpu_network_equals_libtorch_s_loss_gradient_and_prediction() {
        let arch = small_arch(0.2);
        let (n, m) = (arch.n_bins as usize, arch.context);
        let (net, lib) = twins(&arch, 1);
        let cpu = net.cpu.clone().expect("Rust network");
        let good = good_runs(7, n, 1);
        let batch = TrainBatch::of(&good[..4], 10, m, n);
        assert_eq!(batch.runs, 4);
        // The same stream twice: libtorch's masks and the Rust buffer.
        let mut stream = [DropoutStream::new(5, 0, arch.dropout)];
        let masks = draw_masks(&arch, &mut stream, &[0], &[4], 4, Device::Cpu);
        let mut buffer = vec![0.0f32; 4 * cpu.masks_per_sample()];
        DropoutStream::new(5, 0, arch.dropout).fill(&mut buffer);
        assert!(buffer.contains(&0.0), "some elements dropped");

        let w = lib.value.copy().set_requires_grad(true);
        let tokens = Tokens::stack(&[&batch.tokens], 4, m, n, Device::Cpu);
        let (mu, sigma) = Stacked::new(&lib.layout, &arch, &w, 1).forward(&tokens, Some(&masks));
        let y = Tensor::from_slice(&batch.targets).view([1, 4, n as i64]);
        let loss = nll_terms(&y, &mu, &sigma).mean(Kind::Float);
        loss.backward();
        let want_loss = f64::try_from(&loss).unwrap();
        let want: Vec<f32> = Vec::try_from(w.grad().view([-1])).unwrap();

        // Every instruction set's kernels (AVX2 and the portable ones here).
        for isa in crate::simd::Isa::available() {
            let cpu = cpu.clone().with_isa(isa);
            let mut got = vec![f32::NAN; cpu.params()];
            let got_loss = cpu.loss_and_gradient(
                &net.row(0),
                (&batch.tokens, &batch.targets, 4),
                Some(&buffer),
                &mut got,
            );
            assert!(
                (got_loss - want_loss).abs() < 1e-5 * want_loss.abs(),
                "{isa:?}: loss {got_loss} vs {want_loss}"
            );
            let mut offset = 0;
            for (name, shape) in &lib.layout.entries {
                let len = shape.iter().product::<i64>() as usize;
                let (g, t) = (&got[offset..][..len], &want[offset..][..len]);
                let scale = t.iter().fold(0f32, |a, &b| a.max(b.abs()));
                assert!(scale > 0.0, "{name}: no gradient to compare");
                for (j, (a, b)) in g.iter().zip(t).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{isa:?} {name}[{j}]: {a} vs {b} (largest {scale})"
                    );
                }
                offset += len;
            }
        }

        let contexts: Vec<DistinctTokens> = [3, 6]
            .iter()
            .map(|&k| {
                let (h, t) = build_context(&good, good[k].0, m, n);
                DistinctTokens::dense(h, t)
            })
            .collect();
        let (net2, lib2) = twins(&arch, 2);
        let ((mu_r, sigma_r), (mu_t, sigma_t)) = (net2.predict(&contexts), lib2.predict(&contexts));
        for (r, t) in [(mu_r, mu_t), (sigma_r, sigma_t)] {
            let diff = f64::try_from((r - &t).abs().max()).unwrap();
            let scale = f64::try_from(t.abs().max()).unwrap();
            assert!(
                diff < 1e-5 * scale,
                "prediction differs by {diff} (largest {scale})"
            );
        }
    }

    /// Several online rounds of three datasets with dropout: the Rust
    /// network trains each dataset as the stacked libtorch network does
    /// (same iterations, same parameters to float tolerance).
    #[test]
    fn cpu_network_trains_as_the_stacked_libtorch_network() {
        let arch = small_arch(0.15);
        let (n, m) = (arch.n_bins as usize, arch.context);
        let (mut net, mut lib) = twins(&arch, 3);
        net.learning_rate = 1e-4;
        lib.learning_rate = 1e-4;
        let good: Vec<_> = (0..3).map(|d| good_runs(12, n, 20 + d)).collect();
        let streams = || {
            (0..3)
                .map(|d| DropoutStream::new(9, d, arch.dropout))
                .collect::<Vec<_>>()
        };
        let (mut sa, mut sb) = (streams(), streams());
        let mut iterations = 0;
        for t in 1..=12 {
            let batches: Vec<Option<TrainBatch>> = (0..3)
                .map(|d| {
                    // Dataset 1 skips every third run (a bad run: no update).
                    (d != 1 || t % 3 != 0).then(|| TrainBatch::of(&good[d][..t], 4, m, n))
                })
                .collect();
            let a = net.train_round(&batches, &mut sa, 2, 6);
            let b = lib.train_round(&batches, &mut sb, 2, 6);
            for (a, b) in a.iter().zip(&b) {
                let (Some(a), Some(b)) = (a, b) else {
                    assert!(a.is_none() && b.is_none(), "round {t}");
                    continue;
                };
                assert_eq!((a.batch_runs, a.iterations), (b.batch_runs, b.iterations));
                for (x, y) in [(a.first_loss, b.first_loss), (a.best_loss, b.best_loss)] {
                    assert!((x - y).abs() < 1e-5 * y.abs(), "round {t}: loss {x} vs {y}");
                }
                iterations += a.iterations;
            }
        }
        assert!(iterations > 60, "{iterations} iterations");
        // Mean absolute differences: Adam divides each gradient by its own
        // running size, so a parameter whose gradient is ~0 takes steps of
        // ~lr in a direction set by rounding (either network's).
        let mean_abs = |t: Tensor| f64::try_from(t.abs().mean(Kind::Float)).unwrap();
        let diff = mean_abs(&net.value - &lib.value);
        let moved = mean_abs(&net.value - &twins(&arch, 3).0.value);
        eprintln!("mean difference {diff}, mean movement {moved}");
        assert!(moved > 1e-4, "training moved the parameters by {moved}");
        assert!(diff < 0.01 * moved, "parameters differ by {diff}");
    }
}
