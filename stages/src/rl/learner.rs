//! PPO while playing: one or more environment slots act through the
//! policy, their steps are kept until the next update, labels that arrive
//! late are credited to the step of the run they are about, and every
//! `rollout_steps` runs per slot the policy updates. `rl_train` learns so
//! on the training stream; `rl_evaluate`'s continual agent keeps learning
//! so on the test stream, from what a deployment is told.

use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::env::Step;
use super::env_config::{Feedback, RewardFrom};
use super::ppo::{Ppo, PpoConfig, Rollout, UpdateStats, gae, sample};
use crate::error::{Result, bad_param, within};

/// How a trained agent keeps learning on the stream it is evaluated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Continual {
    /// What it learns from. A deployment is told only the shifter's
    /// answers and the certification (`reward_from: shifter`, the default,
    /// with 10 % of the answers wrong); `truth` would learn from labels of
    /// runs nobody looked at — a ceiling, not a deployable agent.
    pub feedback: Feedback,
    /// Runs between updates (one stream: default the training rollout's
    /// size, `rollout_steps` × `envs` of the agent's PPO).
    pub rollout_steps: Option<usize>,
    /// Adam's learning rate (default the training one; the optimiser
    /// starts afresh on the test stream).
    pub learning_rate: Option<f64>,
}

impl Default for Continual {
    fn default() -> Self {
        Self {
            feedback: Feedback {
                reward_from: RewardFrom::Shifter,
                label_noise: 0.1,
                ..Feedback::default()
            },
            rollout_steps: None,
            learning_rate: None,
        }
    }
}

impl Continual {
    /// Checks the settings; each error names its key in `continual:`.
    pub fn validate(&self) -> Result<()> {
        within("feedback", self.feedback.validate())?;
        if self.rollout_steps == Some(0) {
            return bad_param("rollout_steps", "an update needs at least one run");
        }
        if self
            .learning_rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return bad_param("learning_rate", "must be a positive number");
        }
        Ok(())
    }

    /// The agent's PPO settings for learning on one stream.
    pub fn ppo(&self, trained: &PpoConfig) -> PpoConfig {
        PpoConfig {
            rollout_steps: self
                .rollout_steps
                .unwrap_or(trained.rollout_steps * trained.envs),
            learning_rate: self.learning_rate.unwrap_or(trained.learning_rate),
            envs: 1,
            ..trained.clone()
        }
    }
}

/// One environment slot's steps since the last update.
#[derive(Default)]
struct Trajectory {
    obs: Vec<f32>,
    actions: Vec<i64>,
    logp: Vec<f32>,
    rewards: Vec<f64>,
    values: Vec<f64>,
    dones: Vec<bool>,
    /// (episode of the slot, stream position) of each step: where a label
    /// credited to its run lands.
    runs: Vec<(u64, usize)>,
}

/// An action drawn from the policy, with what the update needs of it.
pub struct Drawn {
    pub action: usize,
    logp: f32,
    value: f64,
}

/// The learning agent: PPO, its draws, and the slots' steps since the last
/// update.
pub struct Learner {
    pub ppo: Ppo,
    cfg: PpoConfig,
    n_obs: usize,
    /// The action draws and the minibatch order.
    rng: ChaCha8Rng,
    paths: Vec<Trajectory>,
}

impl Learner {
    /// A fresh network (seed libtorch first) with `slots` environment slots.
    pub fn new(
        cfg: &PpoConfig,
        n_obs: usize,
        n_actions: usize,
        slots: usize,
        rng: ChaCha8Rng,
    ) -> Result<Self> {
        Ok(Self {
            ppo: Ppo::new(cfg, n_obs, n_actions)?,
            cfg: cfg.clone(),
            n_obs,
            rng,
            paths: (0..slots).map(|_| Trajectory::default()).collect(),
        })
    }

    /// Actions drawn for a batch of observations, in order.
    pub fn draw(&mut self, obs: &[Vec<f32>]) -> Vec<Drawn> {
        let flat: Vec<f32> = obs.concat();
        let (probs, values) = self
            .ppo
            .net
            .probabilities(&Tensor::from_slice(&flat).view([obs.len() as i64, self.n_obs as i64]));
        probs
            .iter()
            .zip(values)
            .map(|(p, v)| {
                let action = sample(p, &mut self.rng);
                Drawn {
                    action,
                    logp: p[action].max(1e-30).ln(),
                    value: f64::from(v),
                }
            })
            .collect()
    }

    /// Keeps slot `slot`'s step: the run at stream position `position` of
    /// the slot's `episode`, observed as `obs`, acted on as `drawn`, and
    /// the labels `told` on this step as (position of their run, reward):
    /// a label about a run still kept is credited to that run's step, else
    /// to this one.
    pub fn record(
        &mut self,
        slot: usize,
        (episode, position): (u64, usize),
        obs: &[f32],
        drawn: &Drawn,
        step: &Step,
        told: Vec<(usize, f64)>,
    ) {
        let path = &mut self.paths[slot];
        path.runs.push((episode, position));
        path.obs.extend_from_slice(obs);
        path.actions.push(drawn.action as i64);
        path.logp.push(drawn.logp);
        path.rewards.push(step.reward);
        path.values.push(drawn.value);
        path.dones.push(step.done);
        for (origin, r) in told {
            let at = path
                .runs
                .iter()
                .rposition(|&(e, p)| e == episode && p == origin)
                .unwrap_or(path.rewards.len() - 1);
            path.rewards[at] += r;
        }
    }

    /// Steps slot `slot` kept since the last update.
    pub fn kept(&self, slot: usize) -> usize {
        self.paths[slot].actions.len()
    }

    /// Updates the policy on every slot's steps and starts afresh;
    /// `now[i]` is the observation slot `i` is at (`None` when it has no
    /// environment), from whose value a slot's last step bootstraps unless
    /// it ended an episode. `None` when no step was kept.
    pub fn update(&mut self, now: &[Option<Vec<f32>>]) -> Option<UpdateStats> {
        let mut rollout = Rollout::default();
        for (i, path) in self.paths.iter_mut().enumerate() {
            let path = std::mem::take(path);
            if path.rewards.is_empty() {
                continue;
            }
            let last_value = match (&now[i], path.dones.last()) {
                (Some(obs), Some(false)) => {
                    let obs = Tensor::from_slice(obs).view([1, self.n_obs as i64]);
                    f64::from(self.ppo.net.probabilities(&obs).1[0])
                }
                _ => 0.0,
            };
            let (adv, ret) = gae(
                &path.rewards,
                &path.values,
                &path.dones,
                last_value,
                self.cfg.gamma,
                self.cfg.gae_lambda,
            );
            rollout.obs.extend_from_slice(&path.obs);
            rollout.actions.extend_from_slice(&path.actions);
            rollout.old_logp.extend_from_slice(&path.logp);
            rollout.advantages.extend(adv);
            rollout.returns.extend(ret);
        }
        (!rollout.is_empty()).then(|| self.ppo.update(&rollout, &mut self.rng))
    }
}
