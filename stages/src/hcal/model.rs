//! The GraphSTAD autoencoder (paper Fig. 5) in libtorch.
//!
//! Per LS, a CNN (two Conv3D + batch norm + ReLU + max pooling over (iη, iφ))
//! and a GCN over the RBX graph extract spatial features; an LSTM runs over
//! the window's LS; a variational layer gives each LS a latent μ, log σ².
//! The decoder mirrors it: LSTM, a dense layer back to the pooled map, two
//! transposed Conv3D and an output convolution. The paper gives the blocks,
//! not every size: ours are [`GraphStadArch`] parameters.
//!
//! The GCN uses the symmetric-normalized adjacency Â = D^-1/2 (A + I) D^-1/2
//! of the RBX graph. Because every RBX is a clique, Â = Bᵀ B with B the
//! RBX-membership matrix scaled by 1/√(RBX size), so Â X costs two thin
//! products instead of one M × M one ([`Rbx`]).
//!
//! Variables live under one path per block, the units of transfer learning:
//! `enc_cnn`, `enc_gcn`, `enc_rnn`, `dec_rnn`, `dec_cnn` (shape-independent:
//! they move between the endcap and the barrel) and `enc_fc`, `vae`,
//! `dec_fc` (sized by the map, never transferred; `dec_fc` also holds our
//! per-channel output offset).
//!
//! Two layouts ([`GraphStadArch::shared_grid`]). The dense one (ours, the
//! default) joins the CNN and the LSTMs with dense layers sized by the map,
//! which then hold ~87 % of the parameters and never transfer. The paper's
//! (`shared_grid: [G_η, G_φ]`) pools the CNN features of any subdetector to
//! one G_η × G_φ grid (and the GCN's to its 36 RBXes), so the embedding and
//! the latent belong to the encoder's recurrent block, the decoder LSTM's
//! state *is* the grid of decoder features (it carries the spatial
//! expansion and most parameters, as in the paper), interpolated to the
//! map's pooled size for the transposed convolutions; only the per-channel
//! output offset is sized by the map.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT, RNN};
use tch::{Kind, Tensor};

use crate::hcal::geometry::MapGeometry;

/// Layer sizes of the autoencoder (not all given in the paper: ours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GraphStadArch {
    /// Channels of the encoder's two convolutions (the decoder mirrors them).
    pub conv_channels: [i64; 2],
    /// GCN features per channel.
    pub gcn_features: i64,
    /// Size of each LS's spatial embedding, the LSTM input.
    pub embed: i64,
    /// Hidden size of the encoder and decoder LSTMs.
    pub lstm_hidden: i64,
    /// Latent size per LS (the variational layer).
    pub latent: i64,
    /// The paper's layout: the CNN features pooled to this [G_η, G_φ] grid
    /// whatever the subdetector, the decoder LSTM's hidden state the grid
    /// of `conv_channels[1]` features (null: dense layers sized by the map,
    /// ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_grid: Option<[i64; 2]>,
}

impl Default for GraphStadArch {
    fn default() -> Self {
        Self {
            conv_channels: [8, 16],
            gcn_features: 4,
            embed: 64,
            lstm_hidden: 64,
            latent: 16,
            shared_grid: None,
        }
    }
}

impl GraphStadArch {
    /// Hidden size of the decoder LSTM: the grid of decoder features in the
    /// shared layout.
    pub fn decoder_hidden(&self) -> i64 {
        match self.shared_grid {
            Some([gh, gw]) => self.conv_channels[1] * gh * gw,
            None => self.lstm_hidden,
        }
    }
}

/// A network block, the unit of transfer learning (paper Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    /// The encoder's convolutions and batch norms.
    EncoderCnn,
    /// The encoder's graph convolution.
    EncoderGcn,
    /// The encoder's LSTM.
    EncoderRnn,
    /// The decoder's LSTM.
    DecoderRnn,
    /// The decoder's transposed convolutions, batch norms and output convolution.
    DecoderCnn,
}

impl Block {
    pub const ALL: [Block; 5] = [
        Block::EncoderCnn,
        Block::EncoderGcn,
        Block::EncoderRnn,
        Block::DecoderRnn,
        Block::DecoderCnn,
    ];

    /// The var-store path prefix of the block.
    pub fn prefix(self) -> &'static str {
        match self {
            Block::EncoderCnn => "enc_cnn",
            Block::EncoderGcn => "enc_gcn",
            Block::EncoderRnn => "enc_rnn",
            Block::DecoderRnn => "dec_rnn",
            Block::DecoderCnn => "dec_cnn",
        }
    }

    /// `blocks` as their var-store prefixes, comma-separated (tables).
    pub fn names(blocks: &[Block]) -> String {
        blocks
            .iter()
            .map(|b| b.prefix())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The block a variable belongs to, if any.
    pub fn of(name: &str) -> Option<Block> {
        Block::ALL
            .into_iter()
            .find(|b| name.starts_with(&format!("{}.", b.prefix())))
    }
}

/// Transfer learning from a source model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Transfer {
    /// Blocks initialized from the source and fine-tuned here (T_init).
    pub init: Vec<Block>,
    /// Blocks copied from the source and frozen (T_train): not trained, their
    /// batch-norm statistics kept.
    pub freeze: Vec<Block>,
    /// Parameters of the frozen blocks still fine-tuned on the target maps
    /// (paper Table 4: TL-2_d /[BN] and /[BN, BIAS]); with `batch_norm` the
    /// running statistics are re-estimated on the target maps too.
    pub tune: Vec<Tuned>,
}

/// Parameters of a frozen block that may still be fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tuned {
    /// The batch norms' scales and shifts (and running statistics).
    BatchNorm,
    /// The other layers' biases.
    Bias,
}

impl Tuned {
    /// Whether variable `name` is a parameter of this kind.
    pub fn covers(self, name: &str) -> bool {
        let batch_norm = name.split('.').any(|p| p.starts_with("bn"));
        match self {
            Tuned::BatchNorm => batch_norm,
            Tuned::Bias => name.ends_with(".bias") && !batch_norm,
        }
    }
}

/// The frozen blocks, with the parameters tuned in them nevertheless as
/// the paper writes them (`dec_cnn /[batch_norm,bias]`).
pub fn frozen_label(freeze: &[Block], tune: &[Tuned]) -> String {
    let frozen = Block::names(freeze);
    if tune.is_empty() {
        return frozen;
    }
    let tuned: Vec<String> = tune
        .iter()
        .map(|t| {
            let name = serde_json::to_string(t).expect("a plain enum serializes");
            name.trim_matches('"').to_string()
        })
        .collect();
    format!("{frozen} /[{}]", tuned.join(","))
}

/// The RBX graph as the two thin matrices of Â = Bᵀ B.
pub struct Rbx {
    /// Bᵀ: (M, n_rbx), 1/√|r| where channel i is in RBX r.
    b_t: Tensor,
    /// Mean over an RBX's members: (M, n_rbx), 1/|r|.
    pool_t: Tensor,
    pub n_rbx: i64,
}

impl Rbx {
    pub fn new(geometry: &MapGeometry, device: tch::Device) -> Self {
        let g = geometry.geometry();
        let rbx = g.rbx_map();
        let (m, n_rbx) = (rbx.len(), g.n_rbx());
        let mut size = vec![0.0f32; n_rbx];
        for &r in &rbx {
            size[r] += 1.0;
        }
        let mut b_t = vec![0.0f32; m * n_rbx];
        let mut pool_t = vec![0.0f32; m * n_rbx];
        for (i, &r) in rbx.iter().enumerate() {
            b_t[i * n_rbx + r] = 1.0 / size[r].sqrt();
            pool_t[i * n_rbx + r] = 1.0 / size[r];
        }
        let shape = [m as i64, n_rbx as i64];
        Self {
            b_t: Tensor::from_slice(&b_t).view(shape).to_device(device),
            pool_t: Tensor::from_slice(&pool_t).view(shape).to_device(device),
            n_rbx: n_rbx as i64,
        }
    }

    /// Â X for X of shape (N, M).
    pub fn propagate(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.b_t).matmul(&self.b_t.tr())
    }
}

/// A transposed Conv3D with a (2, 2, 1) kernel and stride: doubles iη and iφ.
struct Upsample {
    weight: Tensor,
    bias: Tensor,
}

impl Upsample {
    fn new(p: &nn::Path, input: i64, output: i64) -> Self {
        Self {
            weight: p.kaiming_uniform("weight", &[input, output, 2, 2, 1]),
            bias: p.zeros("bias", &[output]),
        }
    }

    /// On depth-folded (N·D, C, H, W) tensors: the kernel's depth is 1.
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(
            &self.weight.squeeze_dim(-1),
            Some(&self.bias),
            [2, 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

/// A (3, 3, 1) convolution applied to depth-folded (N·D, C, H, W) tensors
/// as the 2-D convolution it is (libtorch's 3-D path is several times
/// slower on the CPU); the weights keep their 3-D shape.
fn conv_folded(conv: &nn::Conv<[i64; 3]>, x: &Tensor) -> Tensor {
    x.conv2d(
        &conv.ws.squeeze_dim(-1),
        conv.bs.as_ref(),
        [1, 1],
        [1, 1],
        [1, 1],
        1,
    )
}

/// (N, C, H, W, D) -> (N·D, C, H, W): the depth folded into the batch, so
/// the (·, ·, 1) kernels, batch norms and poolings run in 2-D.
fn fold_depth(x: &Tensor) -> Tensor {
    let (n, c, h, w, d) = x.size5().expect("(N, C, H, W, D)");
    x.permute([0, 4, 1, 2, 3]).reshape([n * d, c, h, w])
}

/// The inverse of [`fold_depth`].
fn unfold_depth(x: &Tensor, depth: i64) -> Tensor {
    let (nd, c, h, w) = x.size4().expect("(N·D, C, H, W)");
    x.view([nd / depth, depth, c, h, w])
        .permute([0, 2, 3, 4, 1])
}

/// LSTM states of the encoder and decoder, carried across windows.
pub struct States {
    pub encoder: nn::LSTMState,
    pub decoder: nn::LSTMState,
}

impl States {
    /// The same states cut from the graph (truncated back-propagation).
    pub fn detached(&self) -> States {
        let d = |s: &nn::LSTMState| nn::LSTMState((s.0.0.detach(), s.0.1.detach()));
        States {
            encoder: d(&self.encoder),
            decoder: d(&self.decoder),
        }
    }
}

/// What one forward pass gives.
pub struct Forward {
    /// Reconstruction, (B, T, M), in the model's input scale.
    pub recon: Tensor,
    pub mu: Tensor,
    pub logvar: Tensor,
    pub states: States,
}

/// The autoencoder.
pub struct GraphStad {
    pub arch: GraphStadArch,
    pub geometry: MapGeometry,
    rbx: Rbx,
    conv1: nn::Conv<[i64; 3]>,
    bn1: nn::BatchNorm,
    conv2: nn::Conv<[i64; 3]>,
    bn2: nn::BatchNorm,
    gcn: nn::Linear,
    enc_fc: nn::Linear,
    enc_rnn: nn::LSTM,
    mu: nn::Linear,
    logvar: nn::Linear,
    dec_rnn: nn::LSTM,
    /// The dense layout's map-sized decoder layer (none in the shared one).
    dec_fc: Option<nn::Linear>,
    up1: Upsample,
    dbn1: nn::BatchNorm,
    up2: Upsample,
    dbn2: nn::BatchNorm,
    out: nn::Conv<[i64; 3]>,
    /// A learned offset per channel added to the output (ours): the
    /// convolutions then model departures from each channel's own level.
    map_bias: Tensor,
    /// Padded (iη, iφ): multiples of 4 so two poolings and two upsamplings
    /// give the shape back.
    padded: [i64; 2],
}

fn conv3(p: nn::Path, input: i64, output: i64) -> nn::Conv<[i64; 3]> {
    nn::conv(
        p,
        input,
        output,
        [3, 3, 1],
        nn::ConvConfigND {
            stride: [1, 1, 1],
            padding: [1, 1, 0],
            dilation: [1, 1, 1],
            groups: 1,
            bias: true,
            ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
            bs_init: nn::Init::Const(0.0),
            padding_mode: nn::PaddingMode::Zeros,
        },
    )
}

impl GraphStad {
    pub fn new(root: &nn::Path, arch: GraphStadArch, geometry: MapGeometry) -> Self {
        let [n_ieta, n_iphi, _] = geometry.shape;
        let up4 = |n: usize| n.div_ceil(4) as i64 * 4;
        let padded = [up4(n_ieta), up4(n_iphi)];
        let [c1, c2] = arch.conv_channels;
        let depth = geometry.shape[2] as i64;
        let pooled = c2 * (padded[0] / 4) * (padded[1] / 4) * depth;
        let rbx = Rbx::new(&geometry, root.device());
        let bn = nn::BatchNormConfig::default();
        let lstm = nn::RNNConfig {
            batch_first: true,
            ..Default::default()
        };
        let cnn = root / "enc_cnn";
        let dec = root / "dec_cnn";
        // The shared layout puts the embedding and the latent in the
        // encoder's recurrent block; the dense one keeps them map-sized.
        let (cnn_out, embed_path, vae_path) = match arch.shared_grid {
            Some([gh, gw]) => (
                c2 * gh * gw,
                root / "enc_rnn" / "embed",
                root / "enc_rnn" / "vae",
            ),
            None => (pooled, root / "enc_fc", root / "vae"),
        };
        let dec_hidden = arch.decoder_hidden();
        Self {
            conv1: conv3(&cnn / "conv1", 1, c1),
            bn1: nn::batch_norm2d(&cnn / "bn1", c1, bn),
            conv2: conv3(&cnn / "conv2", c1, c2),
            bn2: nn::batch_norm2d(&cnn / "bn2", c2, bn),
            gcn: nn::linear(
                root / "enc_gcn" / "layer",
                1,
                arch.gcn_features,
                Default::default(),
            ),
            enc_fc: nn::linear(
                embed_path,
                cnn_out + rbx.n_rbx * arch.gcn_features,
                arch.embed,
                Default::default(),
            ),
            enc_rnn: nn::lstm(root / "enc_rnn", arch.embed, arch.lstm_hidden, lstm),
            mu: nn::linear(
                &vae_path / "mu",
                arch.lstm_hidden,
                arch.latent,
                Default::default(),
            ),
            logvar: nn::linear(
                &vae_path / "logvar",
                arch.lstm_hidden,
                arch.latent,
                Default::default(),
            ),
            dec_rnn: nn::lstm(root / "dec_rnn", arch.latent, dec_hidden, lstm),
            dec_fc: arch.shared_grid.is_none().then(|| {
                nn::linear(
                    root / "dec_fc",
                    arch.lstm_hidden,
                    pooled,
                    Default::default(),
                )
            }),
            up1: Upsample::new(&(&dec / "up1"), c2, c1),
            dbn1: nn::batch_norm2d(&dec / "bn1", c1, bn),
            up2: Upsample::new(&(&dec / "up2"), c1, c1),
            dbn2: nn::batch_norm2d(&dec / "bn2", c1, bn),
            out: conv3(&dec / "out", c1, 1),
            map_bias: (root / "dec_fc").zeros("map_bias", &[geometry.n_channels() as i64]),
            rbx,
            arch,
            geometry,
            padded,
        }
    }

    /// Zero LSTM states for `batch` parallel sequences.
    pub fn zero_states(&self, batch: i64) -> States {
        States {
            encoder: self.enc_rnn.zero_state(batch),
            decoder: self.dec_rnn.zero_state(batch),
        }
    }

    /// Reconstructs `x` (B, T, M) starting from `states`. `train` draws the
    /// latent and updates batch-norm statistics, except in the CNN blocks
    /// listed in `frozen` (their running statistics stay those transferred).
    pub fn forward(&self, x: &Tensor, states: &States, train: bool, frozen: &[Block]) -> Forward {
        let (b, t, m) = x.size3().expect("(B, T, M)");
        let [n_ieta, n_iphi, depth] = self.geometry.shape.map(|v| v as i64);
        let [ph, pw] = self.padded;
        let n = b * t;
        let bn_train = |block| train && !frozen.contains(&block);
        let flat = x.reshape([n, m]);
        // CNN over (iη, iφ) with (3, 3, 1) kernels: the depth folded into
        // the batch (batch-norm statistics over the same values).
        let img = fold_depth(&flat.view([n, 1, n_ieta, n_iphi, depth]).constant_pad_nd([
            0,
            0,
            0,
            pw - n_iphi,
            0,
            ph - n_ieta,
        ]));
        let cnn_train = bn_train(Block::EncoderCnn);
        let pool = |x: Tensor| x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let h = pool(
            self.bn1
                .forward_t(&conv_folded(&self.conv1, &img), cnn_train)
                .relu(),
        );
        let h = pool(
            self.bn2
                .forward_t(&conv_folded(&self.conv2, &h), cnn_train)
                .relu(),
        );
        let cnn_features = match self.arch.shared_grid {
            // Cells of the grid averaged over the depths too.
            Some([gh, gw]) => h
                .adaptive_avg_pool2d([gh, gw])
                .view([n, depth, -1])
                .mean_dim(1, false, Kind::Float),
            None => unfold_depth(&h, depth).reshape([n, -1]),
        };
        // GCN over the RBX graph, then pooled per RBX.
        let propagated = self.rbx.propagate(&flat).unsqueeze(-1);
        let g = self.gcn.forward(&propagated).relu(); // (N, M, F)
        let per_rbx = g.transpose(1, 2).matmul(&self.rbx.pool_t); // (N, F, n_rbx)
        let gcn_features = per_rbx.reshape([n, -1]);
        let embed = self
            .enc_fc
            .forward(&Tensor::cat(&[cnn_features, gcn_features], 1))
            .relu()
            .view([b, t, -1]);
        let (enc_out, enc_state) = self.enc_rnn.seq_init(&embed, &states.encoder);
        let mu = self.mu.forward(&enc_out);
        let logvar = self.logvar.forward(&enc_out);
        let z = if train {
            &mu + (&logvar * 0.5).exp() * mu.randn_like()
        } else {
            mu.shallow_clone()
        };
        let (dec_out, dec_state) = self.dec_rnn.seq_init(&z, &states.decoder);
        let c2 = self.arch.conv_channels[1];
        let d = match (&self.dec_fc, self.arch.shared_grid) {
            (Some(fc), _) => fold_depth(&fc.forward(&dec_out.reshape([n, -1])).relu().view([
                n,
                c2,
                ph / 4,
                pw / 4,
                depth,
            ])),
            // The decoder state is the grid: interpolated to the map's
            // pooled size (no parameters sized by the map), the same for
            // every depth.
            (None, Some([gh, gw])) => dec_out
                .reshape([n, 1, c2, gh, gw])
                .relu()
                .expand([n, depth, c2, gh, gw], false)
                .reshape([n * depth, c2, gh, gw])
                .upsample_bilinear2d([ph / 4, pw / 4], false, None, None),
            (None, None) => unreachable!("the dense layout has a decoder layer"),
        };
        let dec_train = bn_train(Block::DecoderCnn);
        let d = self.dbn1.forward_t(&self.up1.forward(&d), dec_train).relu();
        let d = self.dbn2.forward_t(&self.up2.forward(&d), dec_train).relu();
        let recon = unfold_depth(&conv_folded(&self.out, &d), depth)
            .narrow(2, 0, n_ieta)
            .narrow(3, 0, n_iphi)
            .reshape([b, t, m])
            + &self.map_bias;
        Forward {
            recon,
            mu,
            logvar,
            states: States {
                encoder: enc_state,
                decoder: dec_state,
            },
        }
    }
}

/// The paper's loss (Eq. 8): MSE + λ·KL(N(μ, σ) ‖ N(0, I)) + ρ·‖W‖², the KL
/// summed over latent dimensions and averaged over LS, ‖W‖² over `trainable`.
pub fn loss(
    out: &Forward,
    target: &Tensor,
    lambda: f64,
    rho: f64,
    trainable: &[Tensor],
) -> (Tensor, Tensor) {
    let mse = out.recon.mse_loss(target, tch::Reduction::Mean);
    let kl = ((&out.logvar + 1.0 - out.mu.square() - out.logvar.exp()).sum_dim_intlist(
        -1,
        false,
        Kind::Float,
    ) * -0.5)
        .mean(Kind::Float);
    let mut total = &mse + kl * lambda;
    if rho > 0.0 && !trainable.is_empty() {
        let l2 = Tensor::stack(
            &trainable
                .iter()
                .map(|w| w.square().sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .sum(Kind::Float);
        total += l2 * rho;
    }
    (total, mse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::geometry::Subdetector;

    /// The depth-folded 2-D operations are the (·, ·, 1) 3-D ones they
    /// replace: convolution, transposed convolution, batch norm, pooling,
    /// the grid's average and its interpolation, on maps of 3 depths.
    #[test]
    fn depth_folded_operations_equal_the_3d_ones() {
        tch::manual_seed(3);
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            assert_eq!(a.size(), b.size(), "{what}");
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{what}: {diff}");
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let (n, c, h, w, d) = (2, 3, 8, 12, 3);
        let x = Tensor::randn([n, c, h, w, d], (Kind::Float, tch::Device::Cpu));
        let conv = conv3(vs.root() / "c", c, 4);
        tch::no_grad(|| {
            let _ = conv
                .bs
                .as_ref()
                .unwrap()
                .shallow_clone()
                .uniform_(-1.0, 1.0);
        });
        close(
            &unfold_depth(&conv_folded(&conv, &fold_depth(&x)), d),
            &x.apply(&conv),
            "convolution",
        );
        let up = Upsample::new(&(vs.root() / "u"), c, 2);
        let reference = x.conv_transpose3d(
            &up.weight,
            Some(&up.bias),
            [2, 2, 1],
            [0, 0, 0],
            [0, 0, 0],
            1,
            [1, 1, 1],
        );
        close(
            &unfold_depth(&up.forward(&fold_depth(&x)), d),
            &reference,
            "upsampling",
        );
        let bn2 = nn::batch_norm2d(vs.root() / "b2", c, Default::default());
        let bn3 = nn::batch_norm3d(vs.root() / "b3", c, Default::default());
        tch::no_grad(|| {
            // Scales start random: the same for both.
            bn2.ws
                .as_ref()
                .unwrap()
                .shallow_clone()
                .copy_(bn3.ws.as_ref().unwrap());
        });
        close(
            &unfold_depth(&bn2.forward_t(&fold_depth(&x), true), d),
            &bn3.forward_t(&x, true),
            "batch norm",
        );
        close(&bn2.running_var, &bn3.running_var, "running variance");
        let pooled = fold_depth(&x).max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let reference = x.max_pool3d([2, 2, 1], [2, 2, 1], [0, 0, 0], [1, 1, 1], false);
        close(&unfold_depth(&pooled, d), &reference, "max pooling");
        let grid = fold_depth(&x)
            .adaptive_avg_pool2d([2, 4])
            .view([n, d, -1])
            .mean_dim(1, false, Kind::Float);
        let reference = x.adaptive_avg_pool3d([2, 4, 1]).reshape([n, -1]);
        close(&grid, &reference, "grid average");
        let state = Tensor::randn([n, c * 2 * 4], (Kind::Float, tch::Device::Cpu));
        let folded = state
            .reshape([n, 1, c, 2, 4])
            .expand([n, d, c, 2, 4], false)
            .reshape([n * d, c, 2, 4])
            .upsample_bilinear2d([h, w], false, None, None);
        let reference =
            state
                .reshape([n, c, 2, 4, 1])
                .upsample_trilinear3d([h, w, d], false, None, None, None);
        close(&unfold_depth(&folded, d), &reference, "grid interpolation");
    }

    #[test]
    fn rbx_propagation_equals_the_dense_normalized_adjacency() {
        let geometry = MapGeometry::of(Subdetector::Endcap);
        let rbx = Rbx::new(&geometry, tch::Device::Cpu);
        let m = geometry.n_channels();
        let mut dense = vec![0.0f32; m * m];
        for (i, j, w) in geometry.geometry().gcn_adjacency() {
            dense[i * m + j] = w as f32;
        }
        let a = Tensor::from_slice(&dense).view([m as i64, m as i64]);
        tch::manual_seed(0);
        let x = Tensor::rand([3, m as i64], (Kind::Float, tch::Device::Cpu));
        let diff = (rbx.propagate(&x) - x.matmul(&a.tr()))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn reconstructs_the_map_shape_for_every_subdetector() {
        let deeper = MapGeometry::with_depths(Subdetector::Barrel, 3);
        for geometry in Subdetector::ALL
            .map(MapGeometry::of)
            .into_iter()
            .chain([deeper])
        {
            let sub = geometry.shape;
            for arch in [
                GraphStadArch::default(),
                GraphStadArch {
                    shared_grid: Some([4, 8]),
                    ..Default::default()
                },
            ] {
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let model = GraphStad::new(&vs.root(), arch, geometry);
                let m = geometry.n_channels() as i64;
                let x = Tensor::rand([2, 5, m], (Kind::Float, tch::Device::Cpu));
                let out = model.forward(&x, &model.zero_states(2), true, &[]);
                assert_eq!(out.recon.size(), [2, 5, m], "{sub:?}");
            }
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let model = GraphStad::new(&vs.root(), GraphStadArch::default(), geometry);
            let m = geometry.n_channels() as i64;
            let x = Tensor::rand([2, 5, m], (Kind::Float, tch::Device::Cpu));
            let out = model.forward(&x, &model.zero_states(2), true, &[]);
            assert_eq!(out.mu.size(), [2, 5, 16]);
            let (total, mse) = loss(&out, &x, 0.003, 1e-7, &vs.trainable_variables());
            assert!(total.double_value(&[]) > mse.double_value(&[]));
        }
    }

    /// Parameters per block (free: not in a transfer block) of a model.
    fn per_block(arch: &GraphStadArch, sub: Subdetector) -> Vec<(String, Vec<i64>)> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _model = GraphStad::new(&vs.root(), arch.clone(), MapGeometry::of(sub));
        let mut v: Vec<(String, Vec<i64>)> = vs
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.size()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_shared_layout_puts_the_parameters_where_the_paper_has_them() {
        let shared = GraphStadArch {
            shared_grid: Some([4, 8]),
            ..Default::default()
        };
        let numel = |s: &[i64]| s.iter().product::<i64>();
        for (arch, dec_rnn_share, free_share) in [
            (GraphStadArch::default(), (0.0, 0.2), (0.8, 1.0)),
            (shared, (0.85, 1.0), (0.0, 0.01)),
        ] {
            let vars = per_block(&arch, Subdetector::Barrel);
            let total: i64 = vars.iter().map(|(_, s)| numel(s)).sum();
            let in_block = |b: Option<Block>| -> i64 {
                vars.iter()
                    .filter(|(n, _)| Block::of(n) == b)
                    .map(|(_, s)| numel(s))
                    .sum()
            };
            let dec_rnn = in_block(Some(Block::DecoderRnn)) as f64 / total as f64;
            let free = in_block(None) as f64 / total as f64;
            assert!(
                (dec_rnn_share.0..=dec_rnn_share.1).contains(&dec_rnn),
                "{:?}: decoder LSTM {dec_rnn:.3} of {total}",
                arch.shared_grid
            );
            assert!(
                (free_share.0..=free_share.1).contains(&free),
                "{:?}: map-sized {free:.3} of {total}",
                arch.shared_grid
            );
            if arch.shared_grid.is_some() {
                // Only the per-channel offset is sized by the map, and every
                // block has the same shapes for the endcap as for the barrel.
                let free: Vec<&String> = vars
                    .iter()
                    .filter(|(n, _)| Block::of(n).is_none())
                    .map(|(n, _)| n)
                    .collect();
                assert_eq!(free, ["dec_fc.map_bias"]);
                let endcap = per_block(&arch, Subdetector::Endcap);
                let blocks = |v: &[(String, Vec<i64>)]| -> Vec<(String, Vec<i64>)> {
                    v.iter()
                        .filter(|(n, _)| Block::of(n).is_some())
                        .cloned()
                        .collect()
                };
                assert_eq!(blocks(&vars), blocks(&endcap));
                // And the model reconstructs every subdetector's shape.
                for sub in Subdetector::ALL {
                    let vs = nn::VarStore::new(tch::Device::Cpu);
                    let g = MapGeometry::of(sub);
                    let model = GraphStad::new(&vs.root(), arch.clone(), g);
                    let m = g.n_channels() as i64;
                    let x = Tensor::rand([2, 3, m], (Kind::Float, tch::Device::Cpu));
                    let out = model.forward(&x, &model.zero_states(2), true, &[]);
                    assert_eq!(out.recon.size(), [2, 3, m], "{sub:?}");
                }
            }
        }
    }

    #[test]
    fn every_variable_but_the_map_sized_ones_is_in_a_transfer_block() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _model = GraphStad::new(
            &vs.root(),
            GraphStadArch::default(),
            MapGeometry::of(Subdetector::Barrel),
        );
        for name in vs.variables().keys() {
            let free = ["enc_fc.", "vae.", "dec_fc."]
                .iter()
                .any(|p| name.starts_with(p));
            assert_eq!(Block::of(name).is_some(), !free, "{name}");
        }
    }
}
