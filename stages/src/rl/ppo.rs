//! Proximal policy optimisation (Schulman et al. 2017): an actor-critic MLP,
//! generalised advantage estimation and the clipped surrogate objective.
//! Actions are sampled and minibatches shuffled with a seeded ChaCha
//! generator, so training does not depend on libtorch's global generator
//! beyond the initial weights (seeded too).

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::error::{Result, bad_param};

/// PPO's hyperparameters, every one a YAML parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Hidden layer widths of the policy and (separately) of the value MLP.
    pub hidden: Vec<i64>,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Discount per run.
    pub gamma: f64,
    /// GAE's lambda.
    pub gae_lambda: f64,
    /// Clip range epsilon of the probability ratio.
    pub clip: f64,
    /// Passes over each rollout.
    pub epochs: usize,
    /// Samples per gradient step.
    pub minibatch: usize,
    /// Runs each environment plays between updates.
    pub rollout_steps: usize,
    /// Environments (datasets) played side by side.
    pub envs: usize,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Largest gradient norm (clipped above).
    pub max_grad_norm: f64,
    /// Standardise advantages in each minibatch.
    pub normalize_advantages: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            learning_rate: 3e-4,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip: 0.2,
            epochs: 4,
            minibatch: 256,
            rollout_steps: 256,
            envs: 8,
            value_coef: 0.5,
            entropy_coef: 0.01,
            max_grad_norm: 0.5,
            normalize_advantages: true,
        }
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h < 1) {
            return bad_param("hidden", "needs at least one layer of >= 1 unit");
        }
        for (name, v) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return bad_param(name, format!("{v} is not in [0, 1]"));
            }
        }
        for (name, v) in [
            ("learning_rate", self.learning_rate),
            ("clip", self.clip),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad_param(name, format!("{v} must be positive"));
            }
        }
        for (name, v) in [
            ("value_coef", self.value_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad_param(name, format!("{v} must be non-negative"));
            }
        }
        for (name, v) in [
            ("epochs", self.epochs),
            ("minibatch", self.minibatch),
            ("rollout_steps", self.rollout_steps),
            ("envs", self.envs),
        ] {
            if v == 0 {
                return bad_param(name, "must be at least 1");
            }
        }
        Ok(())
    }
}

/// Separate policy and value MLPs (tanh), as in the PPO paper's
/// continuous-control setup: the value's scale (rewards of ~10 per run)
/// does not pull on the policy's features.
pub struct ActorCritic {
    actor: nn::Sequential,
    critic: nn::Sequential,
}

impl ActorCritic {
    pub fn new(p: &nn::Path, n_obs: i64, n_actions: i64, hidden: &[i64]) -> Self {
        let mlp = |p: nn::Path, out: i64, last_scale: f64| {
            let mut seq = nn::seq();
            let mut width = n_obs;
            for (i, &h) in hidden.iter().enumerate() {
                seq = seq
                    .add(nn::linear(
                        &p / format!("l{i}"),
                        width,
                        h,
                        Default::default(),
                    ))
                    .add_fn(|x| x.tanh());
                width = h;
            }
            // A small last layer starts the policy near uniform.
            let bound = last_scale / (width as f64).sqrt();
            let cfg = nn::LinearConfig {
                ws_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                ..Default::default()
            };
            seq.add(nn::linear(&p / "out", width, out, cfg))
        };
        Self {
            actor: mlp(p / "actor", n_actions, 0.01),
            critic: mlp(p / "critic", 1, 1.0),
        }
    }

    /// (logits [N, A], value [N]).
    pub fn forward(&self, obs: &Tensor) -> (Tensor, Tensor) {
        (
            self.actor.forward(obs),
            self.critic.forward(obs).squeeze_dim(-1),
        )
    }

    /// Action probabilities of one observation batch, as rows of f32.
    pub fn probabilities(&self, obs: &Tensor) -> (Vec<Vec<f32>>, Vec<f32>) {
        let (logits, value) = tch::no_grad(|| self.forward(obs));
        let probs = logits.softmax(-1, Kind::Float);
        let n = probs.size()[0];
        let rows = (0..n)
            .map(|i| Vec::<f32>::try_from(probs.get(i)).expect("f32 probabilities"))
            .collect();
        (rows, Vec::<f32>::try_from(value).expect("f32 values"))
    }
}

/// Draws an action from `probs` with one uniform number.
pub fn sample(probs: &[f32], rng: &mut ChaCha8Rng) -> usize {
    let u: f32 = rng.random();
    let mut acc = 0.0;
    for (a, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return a;
        }
    }
    probs.len() - 1
}

/// The most probable action (ties: the first).
pub fn greedy(probs: &[f32]) -> usize {
    let mut best = 0;
    for (a, p) in probs.iter().enumerate() {
        if *p > probs[best] {
            best = a;
        }
    }
    best
}

/// Generalised advantage estimation over one environment's steps:
/// delta_t = r_t + gamma V_{t+1} (1 − done_t) − V_t and
/// A_t = delta_t + gamma lambda (1 − done_t) A_{t+1}; `done_t` means the
/// episode ended after step t, and `last_value` is V of the state after the
/// last step. Returns (advantages, returns = advantages + values).
pub fn gae(
    rewards: &[f64],
    values: &[f64],
    dones: &[bool],
    last_value: f64,
    gamma: f64,
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { last_value };
        let live = if dones[t] { 0.0 } else { 1.0 };
        let delta = rewards[t] + gamma * next_value * live - values[t];
        next_adv = delta + gamma * lambda * live * next_adv;
        adv[t] = next_adv;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// The terms of PPO's loss on one minibatch.
pub struct Losses {
    /// −mean(min(r A, clip(r, 1 − eps, 1 + eps) A)).
    pub policy: Tensor,
    /// mean((V − R)^2).
    pub value: Tensor,
    /// Mean entropy of the policy.
    pub entropy: Tensor,
    /// Fraction of samples whose ratio was clipped.
    pub clip_fraction: f64,
    /// mean(old log p − new log p), an estimate of KL(old || new).
    pub approx_kl: f64,
}

/// PPO's loss terms from new log-probabilities of the taken actions and
/// their old ones, advantages, new values and returns, and the full new
/// log-probabilities (for the entropy).
pub fn losses(
    new_logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    values: &Tensor,
    returns: &Tensor,
    all_logp: &Tensor,
    clip: f64,
) -> Losses {
    let log_ratio = new_logp - old_logp;
    let ratio = log_ratio.exp();
    let unclipped = &ratio * advantages;
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages;
    let policy = -unclipped.minimum(&clipped).mean(Kind::Float);
    let value = (values - returns).square().mean(Kind::Float);
    let entropy = -(all_logp.exp() * all_logp)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float);
    let clip_fraction = tch::no_grad(|| {
        (&ratio - 1.0)
            .abs()
            .gt(clip)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    });
    let approx_kl = tch::no_grad(|| (-log_ratio).mean(Kind::Float).double_value(&[]));
    Losses {
        policy,
        value,
        entropy,
        clip_fraction,
        approx_kl,
    }
}

/// One rollout, flattened over environments and steps.
#[derive(Default)]
pub struct Rollout {
    pub obs: Vec<f32>,
    pub actions: Vec<i64>,
    pub old_logp: Vec<f32>,
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
}

impl Rollout {
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Means over an update's gradient steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    pub approx_kl: f64,
}

/// The learner: network, optimiser and hyperparameters.
pub struct Ppo {
    pub vs: nn::VarStore,
    pub net: ActorCritic,
    opt: nn::Optimizer,
    cfg: PpoConfig,
    n_obs: usize,
}

impl Ppo {
    /// A fresh network; call under [`crate::nn::exclusive`] after seeding
    /// libtorch (`tch::manual_seed`) for reproducible initial weights.
    pub fn new(cfg: &PpoConfig, n_obs: usize, n_actions: usize) -> Result<Self> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = ActorCritic::new(&vs.root(), n_obs as i64, n_actions as i64, &cfg.hidden);
        let opt = nn::Adam::default()
            .build(&vs, cfg.learning_rate)
            .map_err(|e| crate::error::StageError::data(format!("cannot build Adam: {e}")))?;
        Ok(Self {
            vs,
            net,
            opt,
            cfg: cfg.clone(),
            n_obs,
        })
    }

    /// `epochs` passes of shuffled minibatches over `rollout`.
    pub fn update(&mut self, rollout: &Rollout, rng: &mut ChaCha8Rng) -> UpdateStats {
        let n = rollout.len();
        let obs = Tensor::from_slice(&rollout.obs).view([n as i64, self.n_obs as i64]);
        let actions = Tensor::from_slice(&rollout.actions);
        let old_logp = Tensor::from_slice(&rollout.old_logp);
        let adv = Tensor::from_slice(&rollout.advantages).to_kind(Kind::Float);
        let ret = Tensor::from_slice(&rollout.returns).to_kind(Kind::Float);
        let mut order: Vec<i64> = (0..n as i64).collect();
        let mut stats = UpdateStats::default();
        let mut steps = 0.0;
        for _ in 0..self.cfg.epochs {
            order.shuffle(rng);
            for chunk in order.chunks(self.cfg.minibatch) {
                let idx = Tensor::from_slice(chunk);
                let mut a = adv.index_select(0, &idx);
                if self.cfg.normalize_advantages && chunk.len() > 1 {
                    a = (&a - a.mean(Kind::Float)) / (a.std(true) + 1e-8);
                }
                let (logits, values) = self.net.forward(&obs.index_select(0, &idx));
                let all_logp = logits.log_softmax(-1, Kind::Float);
                let taken = actions.index_select(0, &idx).unsqueeze(-1);
                let new_logp = all_logp.gather(-1, &taken, false).squeeze_dim(-1);
                let l = losses(
                    &new_logp,
                    &old_logp.index_select(0, &idx),
                    &a,
                    &values,
                    &ret.index_select(0, &idx),
                    &all_logp,
                    self.cfg.clip,
                );
                let loss =
                    &l.policy + self.cfg.value_coef * &l.value - self.cfg.entropy_coef * &l.entropy;
                self.opt
                    .backward_step_clip_norm(&loss, self.cfg.max_grad_norm);
                stats.policy_loss += l.policy.double_value(&[]);
                stats.value_loss += l.value.double_value(&[]);
                stats.entropy += l.entropy.double_value(&[]);
                stats.clip_fraction += l.clip_fraction;
                stats.approx_kl += l.approx_kl;
                steps += 1.0;
            }
        }
        if steps > 0.0 {
            stats.policy_loss /= steps;
            stats.value_loss /= steps;
            stats.entropy /= steps;
            stats.clip_fraction /= steps;
            stats.approx_kl /= steps;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gae_by_hand() {
        // gamma 0.5, lambda 0.5; the episode ends after step 1.
        let r = [1.0, 2.0, 3.0];
        let v = [0.5, 1.0, 2.0];
        let dones = [false, true, false];
        let (adv, ret) = gae(&r, &v, &dones, 4.0, 0.5, 0.5);
        // t=2: delta = 3 + 0.5*4 - 2 = 3; A2 = 3.
        // t=1: delta = 2 + 0 - 1 = 1 (done); A1 = 1.
        // t=0: delta = 1 + 0.5*1 - 0.5 = 1; A0 = 1 + 0.25*1 = 1.25.
        assert_eq!(adv, vec![1.25, 1.0, 3.0]);
        assert_eq!(ret, vec![1.75, 2.0, 5.0]);
        // lambda = 1, gamma = 1, no ends: advantages are returns-to-go − V.
        let (adv, _) = gae(&[1.0, 1.0], &[0.0, 0.0], &[false, false], 0.0, 1.0, 1.0);
        assert_eq!(adv, vec![2.0, 1.0]);
    }

    #[test]
    fn clipped_objective_by_hand() {
        let _torch = crate::nn::exclusive();
        // Ratios e^0.5 = 1.649 with advantage 2: clipped to 1.2 (2.4 < 3.3);
        // e^-0.5 = 0.607 with advantage -1: min(-0.607, 0.8 * -1) = -0.8;
        // ratio 1 with advantage 3: 3.
        let old = Tensor::from_slice(&[0.0f32, 0.0, 0.0]);
        let new = Tensor::from_slice(&[0.5f32, -0.5, 0.0]);
        let adv = Tensor::from_slice(&[2.0f32, -1.0, 3.0]);
        let values = Tensor::from_slice(&[1.0f32, 0.0, 2.0]);
        let returns = Tensor::from_slice(&[0.0f32, 0.0, 0.0]);
        // Two equally likely actions: entropy ln 2.
        let all = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.5, 0.5, 0.5])
            .view([3, 2])
            .log();
        let l = losses(&new, &old, &adv, &values, &returns, &all, 0.2);
        let terms = [
            (1.2f64 * 2.0).min(0.5f64.exp() * 2.0),
            (-0.8f64).min(-(-0.5f64).exp()),
            3.0,
        ];
        let expected = -(terms.iter().sum::<f64>()) / 3.0;
        assert!((l.policy.double_value(&[]) - expected).abs() < 1e-6);
        assert!((terms[0] - 2.4).abs() < 1e-12 && (terms[1] + 0.8).abs() < 1e-12);
        assert!((l.value.double_value(&[]) - 5.0 / 3.0).abs() < 1e-6);
        assert!((l.entropy.double_value(&[]) - 2f64.ln()).abs() < 1e-6);
        assert!((l.clip_fraction - 2.0 / 3.0).abs() < 1e-6);
        assert!(l.approx_kl.abs() < 1e-6);
    }

    #[test]
    fn sampling_follows_the_probabilities_and_greedy_takes_the_largest() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let probs = [0.2f32, 0.5, 0.3];
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[sample(&probs, &mut rng)] += 1;
        }
        for (c, p) in counts.iter().zip(probs) {
            assert!((*c as f64 / 10_000.0 - f64::from(p)).abs() < 0.02);
        }
        assert_eq!(greedy(&probs), 1);
        assert_eq!(sample(&[0.0, 0.0, 1.0], &mut rng), 2);
    }
}
