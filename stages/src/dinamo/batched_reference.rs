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
//! one's own early stopping. With dropout off, a dataset's scores equal
//! those of training it alone (tested); with dropout on, the masks come from
//! libtorch's one generator, so they depend on the group (still fixed by the
//! seed and the group's datasets).

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::reference_net::{
    Activation, EarlyStop, MlArch, ReferenceNet, UpdateStats, build_context, nll_terms,
};

/// AdamW's constants (PyTorch's and tch's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// Where each named parameter of the network lies in a dataset's flat
/// parameter vector: all of a dataset's parameters are one row of a
/// [D, P] tensor, so the optimiser is a dozen operations on that tensor
/// rather than a dozen per parameter.
struct Layout {
    /// Parameter shapes by name; a row holds them flattened in name order.
    entries: BTreeMap<String, Vec<i64>>,
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
            .values()
            .map(|shape| shape.iter().product())
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

    fn attention(&self, name: &str, x: &Tensor, train: bool) -> Tensor {
        let (d, b, m, e) = x.size4().expect("[D, B, M, E]");
        let h = self.arch.heads;
        let split = |t: Tensor| t.reshape([d * b, m, h, e / h]).transpose(1, 2);
        let q = split(self.linear(&format!("{name}.q"), x));
        let k = split(self.linear(&format!("{name}.k"), x));
        let v = split(self.linear(&format!("{name}.v"), x));
        let p = if train { self.arch.dropout } else { 0.0 };
        let heads = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            p,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .reshape([d, b, m, e]);
        self.linear(&format!("{name}.out"), &heads)
    }

    /// (μ̂, σ̂), each [D, B, N_b], from contexts [D, B, M, N_b] and times [D, B, M].
    fn forward(&self, histograms: &Tensor, times: &Tensor, train: bool) -> (Tensor, Tensor) {
        let p = self.arch.dropout;
        let mut x = self.block("histogram", histograms) + self.block("time", &times.unsqueeze(-1));
        for i in 0..self.arch.layers {
            let l = format!("layer{i}");
            let a = self.attention(&format!("{l}.attention"), &x, train);
            x = self.layer_norm(&format!("{l}.norm1"), &(&x + a.dropout(p, train)));
            let h = self.linear(&format!("{l}.ff1"), &x);
            let h = match self.arch.activation {
                Activation::Gelu => h.gelu("none"),
                Activation::Relu => h.relu(),
            };
            let h = self.linear(&format!("{l}.ff2"), &h.dropout(p, train));
            x = self.layer_norm(&format!("{l}.norm2"), &(&x + h.dropout(p, train)));
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
}

impl BatchedReferenceNet {
    /// D copies of the network `ReferenceNet::new` makes from libtorch's
    /// generator as it stands (the caller seeds it): each dataset starts
    /// exactly where a separately trained one would.
    pub fn new(
        arch: MlArch,
        datasets: i64,
        learning_rate: f64,
        weight_decay: f64,
        device: Device,
    ) -> Self {
        let vs = tch::nn::VarStore::new(device);
        let _net = ReferenceNet::new(&vs.root(), arch.clone());
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let (mut entries, mut row) = (BTreeMap::new(), Vec::new());
        for (name, t) in &vars {
            entries.insert(name.clone(), t.size());
            row.push(t.detach().reshape([-1]));
        }
        let row = Tensor::cat(&row, 0);
        let value = row.unsqueeze(0).repeat([datasets, 1]);
        Self {
            arch,
            datasets,
            layout: Layout { entries },
            m: value.zeros_like(),
            v: value.zeros_like(),
            value,
            steps: vec![0; datasets as usize],
            learning_rate,
            weight_decay,
            device,
        }
    }

    /// (μ̂, σ̂), each [D, B, N_b], from contexts [D, B, M, N_b] and times
    /// [D, B, M], in evaluation mode.
    pub fn predict(&self, histograms: &Tensor, times: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            Stacked::new(&self.layout, &self.arch, &self.value, self.datasets)
                .forward(histograms, times, false)
        })
    }

    /// Trains each dataset with `Some(batch)` until its own early stopping.
    /// The datasets still training are gathered into a smaller stack, so
    /// one that stopped costs nothing while the others go on.
    pub fn train_round(
        &mut self,
        batches: &[Option<TrainBatch>],
        patience: usize,
        max_iterations: usize,
    ) -> Vec<Option<UpdateStats>> {
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
        // Pad every dataset's batch to k samples; padding weighs 0.
        let (mut hist, mut time, mut target, mut weight) = (
            vec![0.0f32; d * k * m * n],
            vec![0.0f32; d * k * m],
            vec![0.0f32; d * k * n],
            vec![0.0f32; d * k],
        );
        for (i, b) in batches.iter().enumerate() {
            let Some(b) = b else { continue };
            hist[i * k * m * n..][..b.runs * m * n].copy_from_slice(&b.histograms);
            time[i * k * m..][..b.runs * m].copy_from_slice(&b.times);
            target[i * k * n..][..b.runs * n].copy_from_slice(&b.targets);
            weight[i * k..][..b.runs].fill(1.0 / (b.runs * n) as f32);
        }
        let device = self.device;
        let on = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        let (di, ki, mi, ni) = (d as i64, k as i64, m as i64, n as i64);
        let hist = on(&hist, &[di, ki, mi, ni]);
        let time = on(&time, &[di, ki, mi]);
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
            let (h, t, y, wt) = (
                hist.index_select(0, &idx),
                time.index_select(0, &idx),
                target.index_select(0, &idx),
                weight.index_select(0, &idx),
            );
            let mut stopped = Vec::new();
            while stopped.is_empty() {
                let stacked = Stacked::new(&self.layout, &self.arch, &w, a);
                let (mu, sigma) = stacked.forward(&h, &t, true);
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
                let bias = |beta: f64, root: bool| {
                    let c: Vec<f32> = active
                        .iter()
                        .map(|&i| {
                            let c = 1.0 - beta.powi(self.steps[i]);
                            (if root { c.sqrt() } else { c }) as f32
                        })
                        .collect();
                    on(&c, &[a, 1])
                };
                let (bc1, bc2) = (bias(BETA1, false), bias(BETA2, true));
                tch::no_grad(|| {
                    // In place, PyTorch's AdamW: decay, moments, step.
                    let g = w.grad();
                    let mut p = w.shallow_clone();
                    let _ = p.g_mul_scalar_(1.0 - lr * wd);
                    let _ = mom.lerp_(&g, 1.0 - BETA1);
                    let _ = var.g_mul_scalar_(BETA2);
                    let _ = var.addcmul_(&(&g * (1.0 - BETA2)), &g);
                    let denom = var.sqrt() / &bc2 + ADAM_EPS;
                    let _ = p.addcdiv_(&(&mom / &bc1 * -lr), &denom);
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

/// One dataset's training batch: the K most recent good runs, each with its
/// own context, flattened row-major.
pub struct TrainBatch {
    pub runs: usize,
    pub histograms: Vec<f32>,
    pub times: Vec<f32>,
    pub targets: Vec<f32>,
}

impl TrainBatch {
    /// The batch of the last `k` of `good` (run, histogram), contexts of `m`.
    pub fn of(good: &[(i64, Vec<f32>)], k: usize, m: usize, n_bins: usize) -> Self {
        let recent = &good[good.len().saturating_sub(k)..];
        let mut batch = Self {
            runs: recent.len(),
            histograms: Vec::with_capacity(recent.len() * m * n_bins),
            times: Vec::with_capacity(recent.len() * m),
            targets: Vec::with_capacity(recent.len() * n_bins),
        };
        for (run, x) in recent {
            let (h, t) = build_context(good, *run, m, n_bins);
            batch.histograms.extend(h);
            batch.times.extend(t);
            batch.targets.extend_from_slice(x);
        }
        batch
    }
}
