//! MEDIC throughput on the bundled Delphes sample, W = 30, reference sizes:
//! window assembly (worker side), training steps (forward, backward, Adam;
//! batch 64) fed by the prefetching loader, and ensemble-member inference
//! (batch 256, no gradients). Runs on CUDA when libtorch sees a GPU.
//!
//! `cargo bench -p dqm-stages --bench medic` (or `--workspace`)

use std::time::Instant;

use dqm_stages::in_memory::{input_from_batch, run_in_memory};
use dqm_stages::medic::batches::WindowData;
use dqm_stages::medic::delphes_convert::DelphesConvert;
use dqm_stages::medic::model::{Medic, MedicArch, kl_per_window};
use dqm_stages::medic::sliding_windows::SlidingWindows;
use dqm_stages::medic::tables::WindowSpec;
use tch::Kind;
use tch::nn::{self, OptimizerConfig};

fn main() {
    let device = dqm_stages::nn::device();
    let dir = tempfile::tempdir().unwrap();
    let convert = DelphesConvert {
        pattern: Some(format!(
            "{}/../data/delphes/dijet13_{{label}}_tiny.root",
            env!("CARGO_MANIFEST_DIR")
        )),
        ..Default::default()
    };
    let events = run_in_memory(&convert, &[]).unwrap().table("main");
    let events = input_from_batch("events", &events, &dir.path().join("e.parquet")).unwrap();
    let cfg = SlidingWindows(WindowSpec {
        window: 30,
        seed: 1,
        ..Default::default()
    });
    let out = run_in_memory(&cfg, std::slice::from_ref(&events)).unwrap();
    let windows =
        input_from_batch("windows", &out.table("main"), &dir.path().join("w.parquet")).unwrap();
    let order =
        input_from_batch("order", &out.table("order"), &dir.path().join("o.parquet")).unwrap();
    let data = WindowData::load(&[windows, order, events]).unwrap();
    let rows: Vec<usize> = (0..data.rows.len()).collect();
    println!(
        "device {device:?}, torch threads {}, rayon threads {}, {} windows of W = 30",
        tch::get_num_threads(),
        rayon::current_num_threads(),
        rows.len()
    );

    let batches: Vec<Vec<usize>> = rows.chunks(64).map(<[usize]>::to_vec).collect();
    let start = Instant::now();
    for b in &batches {
        data.batch(b, tch::Device::Cpu).unwrap();
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "assembly:  {:>8.0} windows/s ({} batches of 64)",
        rows.len() as f64 / t,
        batches.len()
    );

    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = Medic::new(&vs.root(), MedicArch::default());
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let steps = 12.min(batches.len());
    let mut n = 0;
    let mut measured = 0.0;
    let mut last = Instant::now();
    data.for_each_batch(&batches[..steps], device, 4, |b| {
        let loss = kl_per_window(
            &b.target,
            &model.forward(&b.tracks, &b.towers, &b.met, true),
        )
        .mean(Kind::Float);
        opt.backward_step(&loss);
        let _ = loss.double_value(&[]);
        n += 1;
        // The first two steps warm up (allocator, kernels): not timed.
        if n > 2 {
            measured += last.elapsed().as_secs_f64();
        }
        last = Instant::now();
        Ok(())
    })
    .unwrap();
    let trained: usize = batches[2..steps].iter().map(Vec::len).sum();
    println!(
        "training:  {:>8.1} windows/s (batch 64, {} timed steps)",
        trained as f64 / measured,
        steps - 2
    );

    let infer: Vec<Vec<usize>> = rows.chunks(256).take(4).map(<[usize]>::to_vec).collect();
    let mut n = 0;
    let mut measured = 0.0;
    let mut last = Instant::now();
    tch::no_grad(|| {
        data.for_each_batch(&infer, device, 4, |b| {
            let p = model.forward(&b.tracks, &b.towers, &b.met, false).exp();
            let _ = p.double_value(&[0, 0]);
            n += 1;
            if n > 1 {
                measured += last.elapsed().as_secs_f64();
            }
            last = Instant::now();
            Ok(())
        })
    })
    .unwrap();
    let scored: usize = infer[1..].iter().map(Vec::len).sum();
    println!(
        "inference: {:>8.1} windows/s = {:.0} events/s per model (batch 256)",
        scored as f64 / measured,
        30.0 * scored as f64 / measured
    );
}
