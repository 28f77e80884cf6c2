//! DINAMO-S throughput on one 5000-run dataset (seed 70), single thread:
//! the generator with each sampler and its binomial draws (this project's sampler beside
//! rand_distr's on the same (n, p) sequence), the core EWMA + chi2 loop at
//! a fixed alpha, the alpha scan one alpha at a time and eight per pass,
//! and the whole `dinamo_s` stage (alpha scan over 100 values, threshold,
//! per-bin output columns).
//!
//! `cargo bench -p dqm-stages --bench dinamo_s`

use std::time::Instant;

use dqm_stages::dinamo::alpha_scan::chi2_per_alpha;
use dqm_stages::dinamo::dinamo_s::DinamoS;
use dqm_stages::dinamo::generator::{RunGenerator, Sampler};
use dqm_stages::dinamo::reference::{Constants, NormRun, alpha_grid, chi2_sequence};
use dqm_stages::dinamo::synth_runs::SynthRuns;
use dqm_stages::in_memory::{input_from_batch, run_in_memory};
use dqm_stages::sampling::binomial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let synth = SynthRuns(RunGenerator {
        seeds: Some(vec![70]),
        ..Default::default()
    });
    // Both samplers, alternately, three datasets each.
    let fast = RunGenerator {
        sampler: Sampler::Fast,
        ..synth.0.clone()
    };
    let (mut default_s, mut fast_s) = (0.0, 0.0);
    for _ in 0..3 {
        let start = Instant::now();
        std::hint::black_box(synth.generate(70));
        default_s += start.elapsed().as_secs_f64();
        let start = Instant::now();
        std::hint::black_box(fast.generate(70));
        fast_s += start.elapsed().as_secs_f64();
    }
    for (name, seconds) in [("rand_distr", default_s), ("fast", fast_s)] {
        let per_run = seconds / (3 * 5000) as f64;
        println!(
            "generator (5000 runs, multinomial, sampler {name:>10}): {:>7.3} us/run  {:>8.0} runs/s",
            per_run * 1e6,
            1.0 / per_run
        );
    }
    let runs = synth.generate(70);
    binomial_samplers(&runs);
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

    alpha_scans(&counts[..1000], &good[..1000]);

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

/// The generator's binomial draws, (n, p) as the multinomial and the
/// systematic ask for them on one dataset, through both samplers in turn.
fn binomial_samplers(runs: &[dqm_stages::dinamo::generator::SynthRun]) {
    let generator = RunGenerator::default();
    let mut draws: Vec<(u64, f64)> = Vec::new();
    for run in runs.iter().take(2000) {
        let n: f64 = run.counts.iter().sum();
        let probs = generator.bin_probabilities(run.mu, run.sigma);
        let (mut remaining, mut mass) = (n.round() as u64, 1.0);
        for (p, c) in probs.iter().zip(&run.counts) {
            if remaining > 0 && *p > 0.0 && *p < mass {
                draws.push((remaining, (p / mass).min(1.0)));
            }
            remaining = remaining.saturating_sub(*c as u64);
            mass -= p;
        }
        for c in &run.counts[50..] {
            draws.push((*c as u64, 0.4));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut ours, mut theirs) = (0.0, 0.0);
    let mut sink = 0u64;
    for _ in 0..5 {
        let start = Instant::now();
        for &(n, p) in &draws {
            sink += binomial(&mut rng, n, p);
        }
        ours += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for &(n, p) in &draws {
            sink += rand_distr::Binomial::new(n, p).unwrap().sample(&mut rng);
        }
        theirs += start.elapsed().as_secs_f64();
    }
    let n = (5 * draws.len()) as f64;
    println!(
        "binomial draws ({} per run): sampling::binomial {:>6.1} ns, rand_distr {:>6.1} ns  (checksum {sink})",
        draws.len() / 2000,
        ours / n * 1e9,
        theirs / n * 1e9
    );
}

/// The 100-value alpha scan's passes over 1000 historical runs: one alpha
/// per pass (as before) and eight per pass (`alpha_scan`).
fn alpha_scans(counts: &[Vec<f64>], good: &[bool]) {
    let runs: Vec<NormRun> = counts.iter().map(|c| NormRun::new(c, 1e-9)).collect();
    let grid = alpha_grid(0.01);
    let constants = Constants::default();
    let (mut one, mut lanes) = (0.0, 0.0);
    let mut sink = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        for &a in &grid {
            sink += chi2_sequence(constants, &runs, good, a)[999];
        }
        one += start.elapsed().as_secs_f64();
        let start = Instant::now();
        sink -= chi2_per_alpha(constants, &runs, good, &grid)
            .iter()
            .map(|c| c[999])
            .sum::<f64>();
        lanes += start.elapsed().as_secs_f64();
    }
    println!(
        "alpha scan, 100 values x 1000 runs: one per pass {:>7.2} ms, eight per pass {:>7.2} ms ({:.1}x; checksum {sink:.1e})",
        one / 3.0 * 1e3,
        lanes / 3.0 * 1e3,
        one / lanes
    );
}
