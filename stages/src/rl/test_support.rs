//! The RL family's test fixtures: generated runs as a stage input and a
//! small, quick training configuration.

use crate::dinamo::generator::RunGenerator;
use crate::dinamo::tables::DatasetRuns;
use crate::input::Input;
use crate::params::AutoOr;
use crate::rl::env_config::{EnvConfig, Regime};
use crate::rl::ppo::PpoConfig;
use crate::rl::rl_train::RlTrain;

/// Generated runs of `seeds` (150 runs, 15 bad) as a stage input.
pub fn runs_input(seeds: Vec<u64>, dir: &std::path::Path, name: &str) -> Input {
    let generator = RunGenerator {
        seeds: Some(seeds),
        n_runs: 150,
        n_bad: 15,
        ..Default::default()
    };
    crate::dinamo::test_support::runs_input(generator, dir, name)
}

/// A small, quick training configuration.
pub fn small(regime: Regime, seed: u64) -> RlTrain {
    RlTrain {
        seed,
        passes: 2,
        env: EnvConfig {
            regime,
            warmup_runs: 50,
            ..Default::default()
        },
        ppo: PpoConfig {
            hidden: vec![16],
            envs: 2,
            rollout_steps: 32,
            minibatch: 32,
            epochs: 2,
            ..Default::default()
        },
    }
}

/// A generated dataset of good runs; tests set the truth they need.
pub fn dataset(n_runs: usize, seed: u64) -> DatasetRuns {
    let batch = crate::dinamo::test_support::generated_runs(RunGenerator {
        seeds: Some(vec![seed]),
        n_runs,
        n_bad: 0,
        ..Default::default()
    });
    DatasetRuns::parse(seed as i64, &batch, "runs", 1e-9).unwrap()
}

/// An environment of `regime` with a 5-run warm-up, DINAMO-S's alpha 0.5
/// and threshold 0, and no certification (tests script every step).
pub fn config(regime: Regime) -> EnvConfig {
    EnvConfig {
        regime,
        warmup_runs: 5,
        alpha: AutoOr::Value(0.5),
        threshold: AutoOr::Value(0.0),
        confirm_delay: None,
        ..Default::default()
    }
}

/// 11 runs: a 5-run warm-up, then good, bad, good, bad, good, bad (the
/// scripted offline episodes).
pub fn scripted_offline() -> DatasetRuns {
    let mut data = dataset(11, 3);
    for (k, good) in [true, false, true, false, true, false]
        .into_iter()
        .enumerate()
    {
        data.good[5 + k] = good;
    }
    data
}
