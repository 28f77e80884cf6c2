//! DINAMO-S throughput on one 5000-run dataset (seed 70), single thread:
//! the core EWMA + chi2 loop at a fixed alpha, and the whole `dinamo_s`
//! stage (alpha scan over 100 values, threshold, per-bin output columns).
//!
//! `cargo bench -p dqm-stages --bench dinamo_s`

use std::time::Instant;

use dqm_stages::dinamo::dinamo_s::DinamoS;
use dqm_stages::dinamo::generator::RunGenerator;
use dqm_stages::dinamo::reference::{Constants, NormRun, chi2_sequence};
use dqm_stages::dinamo::synth_runs::SynthRuns;
use dqm_stages::in_memory::{input_from_batch, run_in_memory};

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let synth = SynthRuns(RunGenerator {
        seeds: Some(vec![70]),
        ..Default::default()
    });
    let runs = synth.generate(70);
    let counts: Vec<Vec<f64>> = runs.iter().map(|r| r.counts.clone()).collect();
    let good: Vec<bool> = runs.iter().map(|r| r.label == 0).collect();

    let reps = 20;
    let (mut normalize, mut score) = (0.0, 0.0);
    let mut sink = 0.0;
    for _ in 0..reps {
        let start = Instant::now();
        let runs: Vec<NormRun> = counts.iter().map(|c| NormRun::new(c, 1e-9)).collect();
        normalize += start.elapsed().as_secs_f64();
        let start = Instant::now();
        sink += chi2_sequence(Constants::default(), &runs, &good, 0.76)
            .iter()
            .sum::<f64>();
        score += start.elapsed().as_secs_f64();
    }
    let n = (reps * counts.len()) as f64;
    println!(
        "normalize (x~, sigma_x, omega): {:>7.3} us/run",
        normalize / n * 1e6
    );
    println!(
        "chi2 + EWMA update:             {:>7.3} us/run  (checksum {sink:.3e})",
        score / n * 1e6
    );
    let per_run = (normalize + score) / n;
    println!(
        "core loop total (fixed alpha):  {:>7.3} us/run  {:>10.0} runs/s",
        per_run * 1e6,
        1.0 / per_run
    );

    // The whole stage, reading the runs table from Parquet.
    let dir = tempfile::tempdir().unwrap();
    let batch = run_in_memory(&synth, &[]).unwrap().table("main");
    let input = input_from_batch("runs", &batch, &dir.path().join("runs.parquet")).unwrap();
    let stage = DinamoS::default();
    let reps = 3;
    let start = Instant::now();
    for _ in 0..reps {
        run_in_memory(&stage, std::slice::from_ref(&input)).unwrap();
    }
    let per_run = start.elapsed().as_secs_f64() / (reps * counts.len()) as f64;
    println!(
        "dinamo_s stage (alpha auto, 100 values; Parquet in, all columns out): {:>7.3} us/run  {:>8.0} runs/s",
        per_run * 1e6,
        1.0 / per_run
    );
}
