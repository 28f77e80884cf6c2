//! GraphSTAD throughput at the shipped sizes (barrel, 2736 channels, T = 5,
//! default `arch`): training steps (forward, backward, Adam) on 8 streams
//! of one window, and scoring (no gradients) window by window with the LSTM
//! states carried, as `graphstad_score` does per fill; plus the map
//! generator and the renormalization per LS. Runs on CUDA when libtorch
//! sees a GPU.
//!
//! `cargo bench -p dqm-stages --bench hcal`

use std::time::Instant;

use dqm_stages::hcal::geometry::MapGeometry;
use dqm_stages::hcal::geometry::Subdetector;
use dqm_stages::hcal::lumi_maps::LumiMaps;
use dqm_stages::hcal::model::{Block, GraphStad, GraphStadArch, loss};
use dqm_stages::hcal::renormalization::renormalize;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

fn main() {
    let device = tch::Device::cuda_if_available();
    let geometry = MapGeometry::of(Subdetector::Barrel);
    let m = geometry.n_channels() as i64;
    println!(
        "device {device:?}, {} {m} channels",
        geometry.subdetector.name()
    );

    // Generator and renormalization.
    let rates = vec![0.0057; m as usize];
    let stage = LumiMaps {
        fills: 1,
        ls_per_fill: [200, 200],
        ..Default::default()
    };
    let started = Instant::now();
    let rows = stage.fill(&rates, &vec![1.0; rates.len()], 0);
    let generate = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for r in &rows {
        std::hint::black_box(renormalize(&r.occupancy, r.events, &geometry));
    }
    let renorm = started.elapsed().as_secs_f64();
    println!(
        "lumi_maps: {:.0} LS/s; renormalize: {:.0} LS/s",
        rows.len() as f64 / generate,
        rows.len() as f64 / renorm
    );

    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = GraphStad::new(&vs.root(), GraphStadArch::default(), geometry);
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    println!("parameters: {params}");
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let (streams, t) = (8i64, 5i64);
    let x = Tensor::rand([streams, t, m], (Kind::Float, device));
    let trainable = vs.trainable_variables();
    let mut states = model.zero_states(streams);
    let (warmup, steps) = (3, 30);
    let mut measured = 0.0;
    for step in 0..warmup + steps {
        let started = Instant::now();
        let out = model.forward(&x, &states, true, &[] as &[Block]);
        let (total, _) = loss(&out, &x, 0.003, 1e-7, &trainable);
        opt.backward_step(&total);
        states = out.states.detached();
        let _ = total.double_value(&[]);
        if step >= warmup {
            measured += started.elapsed().as_secs_f64();
        }
    }
    let maps = (steps as i64 * streams * t) as f64;
    println!(
        "training: {:.1} ms per step of {streams}x{t} maps, {:.0} maps/s",
        1e3 * measured / steps as f64,
        maps / measured
    );

    let x1 = Tensor::rand([1, t, m], (Kind::Float, device));
    let mut states = model.zero_states(1);
    let mut measured = 0.0;
    for step in 0..warmup + steps {
        let started = Instant::now();
        let out = tch::no_grad(|| model.forward(&x1, &states, false, &[]));
        let _ = out.recon.sum(Kind::Float).double_value(&[]);
        states = out.states;
        if step >= warmup {
            measured += started.elapsed().as_secs_f64();
        }
    }
    println!(
        "scoring: {:.1} ms per window of {t} LS, {:.0} maps/s",
        1e3 * measured / steps as f64,
        (steps as i64 * t) as f64 / measured
    );
}
