//! `rl_train`: PPO on a stream of DINAMO datasets, continually — each
//! dataset is played once per pass in input order by one of `ppo.envs`
//! environments, and the policy updates after every rollout without ever
//! restarting, so a stream whose conditions change (rapid changes, the
//! abstract's commissioning case) is learned as it arrives.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::SchemaRef;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::env::{Env, N_OBS};
use super::env_config::EnvConfig;
use super::learner::Learner;
use super::ppo::{PpoConfig, UpdateStats};
use super::tables::{AgentCard, Datasets, curve_schema, models_schema, require_runs};
use crate::dinamo::tables::DatasetRuns;
use crate::error::{Result, StageError, bad_param, within};
use crate::nn::{exclusive, one_thread};
use crate::plots::{LinePanel, Series, line_panels};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Trains a PPO agent that decides, run by run, whether to call the shifter.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RlTrain {
    /// Seed of the initial weights, the action draws, the minibatch order
    /// and the online regime's faults.
    pub seed: u64,
    /// Passes over the stream of datasets (each pass draws new faults).
    pub passes: usize,
    /// The environment (regime, rewards, feedback, faults).
    pub env: EnvConfig,
    /// PPO's hyperparameters.
    pub ppo: PpoConfig,
}

impl Default for RlTrain {
    fn default() -> Self {
        Self {
            seed: 0,
            passes: 1,
            env: EnvConfig::default(),
            ppo: PpoConfig::default(),
        }
    }
}

impl StageConfig for RlTrain {
    const KIND: &'static str = "rl_train";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "PPO agent (tch) that accepts, rejects or asks the shifter (offline) or raises alarms (online) on a DINAMO run stream";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        within("env", self.env.validate())?;
        within("ppo", self.ppo.validate())?;
        if self.passes == 0 {
            return bad_param("passes", "must be at least 1");
        }
        Ok(())
    }
}

/// A rollout's counts, for the learning curve.
#[derive(Default)]
struct RolloutTally {
    runs: u64,
    reward: f64,
    calls: u64,
    bad: u64,
    missed: u64,
    kept: u64,
}

/// The learning curve, one entry per update.
#[derive(Default)]
struct Curve {
    steps: Vec<i64>,
    runs: Vec<i64>,
    reward: Vec<f64>,
    calls: Vec<f64>,
    missed: Vec<Option<f64>>,
    efficiency: Vec<f64>,
    stats: Vec<UpdateStats>,
}

impl Curve {
    fn push(&mut self, steps: u64, r: &RolloutTally, stats: UpdateStats) {
        let runs = r.runs.max(1) as f64;
        self.steps.push(steps as i64);
        self.runs.push(r.runs as i64);
        self.reward.push(r.reward / runs);
        self.calls.push(1000.0 * r.calls as f64 / runs);
        self.missed
            .push((r.bad > 0).then(|| r.missed as f64 / r.bad as f64));
        self.efficiency.push(r.kept as f64 / runs);
        self.stats.push(stats);
    }

    fn batch(&self) -> Result<arrow::array::RecordBatch> {
        let n = self.steps.len();
        let stat = |f: fn(&UpdateStats) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(self.stats.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(1..=n as i64)),
            Arc::new(Int64Array::from(self.steps.clone())),
            Arc::new(Int64Array::from(self.runs.clone())),
            Arc::new(Float64Array::from(self.reward.clone())),
            Arc::new(Float64Array::from(self.calls.clone())),
            Arc::new(Float64Array::from(self.missed.clone())),
            Arc::new(Float64Array::from(self.efficiency.clone())),
            stat(|s| s.policy_loss),
            stat(|s| s.value_loss),
            stat(|s| s.entropy),
            stat(|s| s.approx_kl),
            stat(|s| s.clip_fraction),
        ];
        Ok(arrow::array::RecordBatch::try_new(curve_schema(), columns)?)
    }

    fn plot(&self, path: &std::path::Path, title: &str) -> Result<()> {
        let x: Vec<f64> = self.steps.iter().map(|&s| s as f64).collect();
        let panel = |title: &str, y: Vec<(f64, f64)>| LinePanel {
            title: title.into(),
            x_label: "training steps (runs)".into(),
            y_label: title.into(),
            series: vec![Series {
                name: title.into(),
                points: y,
            }],
            shaded: Vec::new(),
            hline: None,
        };
        let zip = |v: &[f64]| x.iter().copied().zip(v.iter().copied()).collect();
        let missed: Vec<(f64, f64)> = x
            .iter()
            .zip(&self.missed)
            .filter_map(|(&s, m)| m.map(|m| (s, m)))
            .collect();
        line_panels(
            path,
            title,
            &[
                panel("reward per run", zip(&self.reward)),
                panel("shifter calls per 1000 runs", zip(&self.calls)),
                panel("missed-bad rate", missed),
                panel("good-data efficiency", zip(&self.efficiency)),
            ],
            2,
        )
    }
}

/// The training stream: the input's datasets in order, `passes` times.
struct Stream<'a> {
    datasets: Datasets<'a>,
    pass: usize,
    passes: usize,
    /// Dataset ids of the first pass (the agent card's training datasets).
    seen: Vec<i64>,
}

impl Stream<'_> {
    /// The next dataset and its pass.
    fn next(&mut self) -> Result<Option<(std::sync::Arc<DatasetRuns>, u64)>> {
        while self.pass < self.passes {
            if let Some(data) = self.datasets.next_dataset()? {
                if self.pass == 0 {
                    self.seen.push(data.dataset);
                }
                return Ok(Some((data, self.pass as u64)));
            }
            if self.seen.is_empty() {
                return Ok(None);
            }
            self.pass += 1;
            self.datasets.rewind();
        }
        Ok(None)
    }
}

impl RlTrain {
    fn train(&self, ctx: &mut RunContext<'_>) -> Result<(Curve, AgentCard, Vec<u8>)> {
        tch::manual_seed(self.seed as i64);
        let n_actions = self.env.regime.actions().len();
        let mut learner = Learner::new(
            &self.ppo,
            N_OBS,
            n_actions,
            self.ppo.envs,
            ChaCha8Rng::seed_from_u64(self.seed),
        )?;
        let input = &ctx.inputs[0];
        let total_rows = input.num_rows()?;
        let progress = ctx
            .reporter
            .progress(total_rows * self.passes as u64, "runs");
        let mut stream = Stream {
            datasets: Datasets::new(input),
            pass: 0,
            passes: self.passes,
            seen: Vec::new(),
        };
        let start = |stream: &mut Stream<'_>| -> Result<Option<Env<'_>>> {
            match stream.next()? {
                Some((data, pass)) => {
                    Env::new(&self.env, data, self.seed.wrapping_add(pass)).map(Some)
                }
                None => Ok(None),
            }
        };
        let mut envs = Vec::with_capacity(self.ppo.envs);
        for _ in 0..self.ppo.envs {
            envs.push(start(&mut stream)?);
        }
        if stream.seen.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no runs to train on",
                input.name
            )));
        }
        let mut episodes = vec![0u64; envs.len()];
        let mut curve = Curve::default();
        let mut steps = 0u64;
        let call = self.env.regime.call();
        while envs.iter().any(Option::is_some) {
            let mut tally = RolloutTally::default();
            for _ in 0..self.ppo.rollout_steps {
                let active: Vec<usize> = (0..envs.len()).filter(|&i| envs[i].is_some()).collect();
                if active.is_empty() {
                    break;
                }
                let obs: Vec<Vec<f32>> = active
                    .iter()
                    .map(|&i| envs[i].as_ref().expect("active").observation())
                    .collect();
                let drawn = learner.draw(&obs);
                for (j, &i) in active.iter().enumerate() {
                    let env = envs[i].as_mut().expect("active");
                    let run = (episodes[i], env.position());
                    let step = env.step(drawn[j].action)?;
                    let told = env.take_told();
                    learner.record(i, run, &obs[j], &drawn[j], &step, told);
                    tally.runs += 1;
                    tally.reward += step.true_reward;
                    tally.calls += u64::from(drawn[j].action == call);
                    tally.bad += u64::from(!step.good);
                    tally.missed += u64::from(step.missed);
                    tally.kept += u64::from(step.kept);
                    if step.done {
                        progress.inc(env.warmup() as u64);
                        episodes[i] += 1;
                        envs[i] = start(&mut stream)?;
                    }
                }
                steps += active.len() as u64;
                progress.inc(active.len() as u64);
            }
            let now: Vec<Option<Vec<f32>>> = envs
                .iter()
                .map(|e| e.as_ref().map(Env::observation))
                .collect();
            let Some(stats) = learner.update(&now) else {
                break;
            };
            curve.push(steps, &tally, stats);
        }
        let path = ctx.artifacts.join("agent.safetensors");
        learner
            .ppo
            .vs
            .save(&path)
            .map_err(|e| StageError::data(format!("cannot save {}: {e}", path.display())))?;
        let weights = std::fs::read(&path).map_err(|e| StageError::io(&path, e))?;
        let card = AgentCard {
            env: self.env.clone(),
            ppo: self.ppo.clone(),
            n_obs: N_OBS,
            actions: self
                .env
                .regime
                .actions()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            seed: self.seed,
            steps,
            updates: curve.steps.len() as u64,
            datasets: stream.seen,
        };
        Ok((curve, card, weights))
    }
}

impl Stage for RlTrain {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_runs(&inputs[0], "runs", self.env.regime)?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: curve_schema(),
            },
            OutputSpec {
                name: "models",
                schema: models_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (curve, card, weights) = {
            let _torch = exclusive();
            let _threads = one_thread();
            self.train(ctx)?
        };
        let regime = self.env.regime.name();
        if let (Some(first), Some(last)) = (curve.reward.first(), curve.reward.last()) {
            ctx.reporter.info(&format!(
                "{regime}: {} steps, {} updates; reward per run {first:.3} -> {last:.3}, calls per 1000 runs {:.1} -> {:.1}",
                card.steps,
                card.updates,
                curve.calls[0],
                curve.calls[curve.calls.len() - 1],
            ));
        }
        curve.plot(
            &ctx.artifacts.join("learning_curves.png"),
            &format!("PPO agent, {regime} regime: learning curves"),
        )?;
        ctx.output.write("main", curve.batch()?)?;
        let card_json = serde_json::to_string(&card).expect("plain data serializes");
        let models: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![regime])),
            Arc::new(Int64Array::from(vec![card.steps as i64])),
            Arc::new(StringArray::from(vec![card_json])),
            Arc::new(BinaryArray::from(vec![weights.as_slice()])),
        ];
        ctx.output.write(
            "models",
            arrow::array::RecordBatch::try_new(models_schema(), models)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{MemoryOutput, run_in_memory};
    use crate::rl::env_config::Regime;
    use crate::rl::test_support::{runs_input, small};

    #[test]
    fn training_is_seeded_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let runs = runs_input(vec![1, 2, 3], dir.path(), "runs");
        let train = |stage: &RlTrain| -> MemoryOutput {
            run_in_memory(stage, std::slice::from_ref(&runs)).unwrap()
        };
        for regime in [Regime::Offline, Regime::Online] {
            let a = train(&small(regime, 5));
            let b = train(&small(regime, 5));
            assert_eq!(a.table("main"), b.table("main"));
            assert_eq!(a.table("models"), b.table("models"));
            let curve = a.table("main");
            // 3 datasets x 100 runs after the warm-up, twice (online, the
            // datasets' own bad runs are left out); updates of 2
            // environments x 32 runs.
            let steps = curve
                .column_by_name("steps")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            let last = steps.value(steps.len() - 1);
            if regime == Regime::Offline {
                assert_eq!((last, curve.num_rows()), (600, 10));
            } else {
                assert!((500..600).contains(&last), "{last}");
            }
            let c = train(&small(regime, 6));
            assert_ne!(
                a.table("models"),
                c.table("models"),
                "another seed, other weights"
            );
            // From the shifter's answers and the certification only: as
            // reproducible, and another reward gives other weights.
            let mut shifter = small(regime, 5);
            shifter.env.feedback.reward_from = crate::rl::feedback::RewardFrom::Shifter;
            shifter.env.feedback.label_noise = 0.1;
            let s = train(&shifter);
            assert_eq!(s.table("models"), train(&shifter).table("models"));
            assert_ne!(s.table("models"), a.table("models"));
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut t = small(Regime::Offline, 0);
        t.ppo.clip = 0.0;
        assert!(t.validate().unwrap_err().to_string().contains("ppo.clip"));
        let mut t = small(Regime::Offline, 0);
        t.env.rewards.bad_accepted = -10.0;
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("rewards.bad_accepted")
        );
        let t = small(Regime::Online, 0);
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            dqm_schemas::runs::run(),
            dqm_schemas::runs::label(),
            dqm_schemas::runs::counts(),
        ]));
        let e = t.outputs(&[schema]).unwrap_err().to_string();
        assert!(e.contains("mu"), "{e}");
    }
}
