//! The RL family's test fixtures: generated runs as a stage input and a
//! small, quick training configuration.

use crate::dinamo::generator::RunGenerator;
use crate::input::Input;
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
