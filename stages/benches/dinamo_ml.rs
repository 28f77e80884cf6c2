//! DINAMO-ML cost per online reference update (Algorithm 3's training step:
//! K = 10 most recent good runs, M context runs, iterate to early stopping)
//! and per reference prediction, with the `fast` or `paper` schedule, for one
//! synthetic dataset (seed 70). Runs on CUDA when libtorch sees a GPU
//! (`DQM_DEVICE=cpu` forces the CPU), with 1 and with all torch threads.
//!
//! Then D datasets trained side by side as one stacked network
//! (`batch_datasets`), amortised per update per dataset.
//!
//! `cargo bench --workspace --bench dinamo_ml --profile dev`
//! (`DQM_BENCH_RUNS` runs, default 300; `DQM_BENCH_DATASETS` D values,
//! default "8,32"; `DQM_BENCH_BATCHED_RUNS` runs per dataset there, default 60;
//! `DQM_BENCH_STACKS` stacks on their own threads, default the cores;
//! `DQM_BENCH_SINGLE=0` skips the one-dataset part; `DQM_BENCH_SCHEDULE`
//! `fast` (default) or `paper`; `DQM_BENCH_DROPOUT`, `DQM_BENCH_PATIENCE`
//! and `DQM_BENCH_MAX_ITERATIONS` override the schedule's values)

use std::time::Instant;

use dqm_stages::dinamo::dinamo_ml::DinamoMl;
use dqm_stages::dinamo::generator::{RunGenerator, SynthRun};
use dqm_stages::dinamo::online_reference::OnlineReference;
use dqm_stages::dinamo::reference::NormRun;
use dqm_stages::dinamo::reference_net::Schedule;
use dqm_stages::dinamo::synth_runs::SynthRuns;
use dqm_stages::dinamo::tables::DatasetRuns;
use dqm_stages::in_memory::run_in_memory;
use dqm_stages::stage::{Reporter, Silent};

fn main() {
    let n_runs: usize = std::env::var("DQM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let device = match std::env::var("DQM_DEVICE").as_deref() {
        Ok("cpu") => tch::Device::Cpu,
        _ => tch::Device::cuda_if_available(),
    };
    let synth = SynthRuns(RunGenerator {
        seeds: Some(vec![70]),
        n_runs,
        n_bad: n_runs / 10,
        ..Default::default()
    });
    let runs = synth.generate(70);
    let norm: Vec<NormRun> = runs.iter().map(|r| NormRun::new(&r.counts, 1e-9)).collect();
    // DQM_BENCH_DROPOUT overrides the dropout (0: what the masks cost).
    // DQM_BENCH_SCHEDULE=paper for the paper's network and schedule.
    let schedule = match std::env::var("DQM_BENCH_SCHEDULE").as_deref() {
        Ok("paper") => Schedule::Paper,
        _ => Schedule::Fast,
    };
    let defaults = DinamoMl {
        schedule,
        ..Default::default()
    };
    let cfg = DinamoMl {
        dropout: env_or("DQM_BENCH_DROPOUT", defaults.dropout),
        patience: std::env::var("DQM_BENCH_PATIENCE")
            .ok()
            .and_then(|v| v.parse().ok()),
        max_iterations: std::env::var("DQM_BENCH_MAX_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..defaults
    };
    let p = cfg.preset();
    let all_threads = tch::get_num_threads();
    println!(
        "DINAMO-ML, {} runs of {} bins, M={} K={} d_model={} layers={}, device {device:?}",
        runs.len(),
        norm[0].x.len(),
        p.context,
        cfg.batch_runs,
        p.d_model,
        cfg.layers
    );
    if std::env::var("DQM_BENCH_SINGLE").as_deref() != Ok("0") {
        single(&cfg, &runs, &norm, device, all_threads);
    }
    batched(&cfg, device);
}

/// The environment variable `name` parsed, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn single(
    cfg: &DinamoMl,
    runs: &[SynthRun],
    norm: &[NormRun],
    device: tch::Device,
    all_threads: i32,
) {
    let mut thread_counts = vec![1];
    if all_threads > 1 && device == tch::Device::Cpu {
        thread_counts.push(all_threads);
    }
    for threads in thread_counts {
        tch::set_num_threads(threads);
        tch::manual_seed(0);
        let mut model =
            OnlineReference::new(cfg.arch(norm[0].x.len()), cfg.training(), device).unwrap();
        let (mut predict_s, mut update_s, mut updates, mut iterations) = (0.0, 0.0, 0, 0);
        let mut sink = 0.0;
        for (k, (run, r)) in runs.iter().zip(norm).enumerate() {
            let start = Instant::now();
            let (mu, _) = model.predict(k as i64);
            predict_s += start.elapsed().as_secs_f64();
            sink += mu[0];
            if run.label == 0 && r.integral > 0.0 {
                let start = Instant::now();
                let stats = model.add_good_and_train(k as i64, &r.x);
                update_s += start.elapsed().as_secs_f64();
                updates += 1;
                iterations += stats.iterations;
            }
        }
        println!(
            "torch threads {threads}: {:.4} s per update ({updates} updates, {:.1} iterations each, {:.2} ms per iteration), {:.2} ms per prediction  (checksum {sink:.4})",
            update_s / updates as f64,
            iterations as f64 / updates as f64,
            update_s / iterations as f64 * 1e3,
            predict_s / runs.len() as f64 * 1e3,
        );
    }
}

/// D datasets of `DQM_BENCH_BATCHED_RUNS` runs through one stacked network.
fn batched(cfg: &DinamoMl, device: tch::Device) {
    let n_runs: usize = std::env::var("DQM_BENCH_BATCHED_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let ds: Vec<usize> = std::env::var("DQM_BENCH_DATASETS")
        .unwrap_or_else(|_| "8,32".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    for d in ds {
        let synth = SynthRuns(RunGenerator {
            seed_range: Some([0, d as u64]),
            n_runs,
            n_bad: n_runs / 10,
            ..Default::default()
        });
        let table = run_in_memory(&synth, &[]).unwrap().table("main");
        let group: Vec<DatasetRuns> = (0..d)
            .map(|i| {
                DatasetRuns::parse(i as i64, &table.slice(i * n_runs, n_runs), "runs", 1e-9)
                    .unwrap()
            })
            .collect();
        let stage = DinamoMl {
            batch_datasets: d,
            ..cfg.clone()
        };
        let progress = Silent.progress(0, "runs");
        // DQM_BENCH_STACKS stacks on their own threads (default: the cores).
        let stacks: usize = env_or("DQM_BENCH_STACKS", tch::get_num_threads() as usize);
        let start = Instant::now();
        let results = stage
            .score_stacks(&group, stacks, device, progress.as_ref())
            .unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let updates: usize = results.iter().map(|r| r.1.len()).sum();
        let iterations: usize = results
            .iter()
            .flat_map(|r| r.1.iter().map(|u| u.iterations))
            .sum();
        println!(
            "batched D={d} in {stacks} stack(s): {n_runs} runs each, {updates} updates ({:.1} iterations each) in {seconds:.1} s: {:.4} s per update per dataset, {:.2} ms per dataset-iteration",
            iterations as f64 / updates as f64,
            seconds / updates as f64,
            seconds / iterations as f64 * 1e3
        );
    }
}
