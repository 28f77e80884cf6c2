//! `rl_evaluate`: the frozen agent and the rule baselines on datasets it
//! never saw, in the environment it was trained in (from its card), each
//! policy meeting the same runs and the same faults.

use arrow::datatypes::{DataType, SchemaRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::agent::read_agent;
use super::comparison::effort_plot;
use super::env::{Env, N_OBS, Warmup};
use super::env_config::{ACCEPT, ALARM, ASK, CONTINUE, EnvConfig, REJECT, Regime};
pub use super::evaluated::PolicyName;
use super::evaluated::{Episode, Run, episodes_batch, summary};
use super::fault_tables::{
    PolicyEpisodes, PolicyKey, by_kind_batch, by_kind_schema, faults_batch, faults_schema,
};
use super::learner::{Continual, Learner};
use super::observed::{Observed, features_batch};
use super::ppo::{ActorCritic, greedy, sample};
use super::rules::{RulePlayer, read_rules};
use super::tables::{
    Datasets, episodes_schema, features_schema, require_runs, rules_schema, summary_schema,
};
use crate::error::{Result, StageError, bad_param, within};
use crate::input::require_column;
use crate::nn::{exclusive, load_weights, one_thread, require_models};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Evaluates a trained agent beside the rule baselines.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RlEvaluate {
    /// Policies to run: `agent`, `threshold`, `always_call`, `never_call`.
    pub policies: Vec<PolicyName>,
    /// Offsets of the threshold policy on ln chi2_nu (0 is DINAMO-S's own
    /// threshold, the baseline the agent is compared with): a scan of
    /// effort, against which the agent's efficiency is read at equal calls.
    pub threshold_offsets: Vec<f64>,
    /// Streak lengths of the threshold policy: call only when this many
    /// runs in a row are flagged (1: every flagged run). Longer streaks
    /// save calls on one-run excursions, at the price of later alarms.
    pub consecutive: Vec<usize>,
    /// The agent takes its most probable action (else it samples).
    pub greedy: bool,
    /// Seed of the online faults, of the agent's draws when not greedy,
    /// of the continual agent's draws and minibatches, and of the
    /// bootstrap.
    pub seed: u64,
    /// How `agent_continual` keeps learning on the datasets played.
    pub continual: Continual,
    /// Bootstrap resamples of the datasets for the 95 % intervals.
    pub bootstrap: usize,
}

impl Default for RlEvaluate {
    fn default() -> Self {
        Self {
            policies: vec![
                PolicyName::Agent,
                PolicyName::Threshold,
                PolicyName::AlwaysCall,
                PolicyName::NeverCall,
            ],
            threshold_offsets: vec![0.0],
            consecutive: vec![1],
            greedy: true,
            seed: 1000,
            bootstrap: 1000,
            continual: Continual::default(),
        }
    }
}

impl StageConfig for RlEvaluate {
    const KIND: &'static str = "rl_evaluate";
    const VERSION: u32 = 4;
    const SUMMARY: &'static str = "Frozen RL agent vs DINAMO-S threshold rules, tuned expert rules and their interpolated frontier, always-call and never-call on unseen datasets, with bootstrap intervals, each observation feature's AUC, and what became of each fault, by kind and persistence, against the expert frontier at equal calls";
    const INPUTS: (usize, usize) = (2, 4);
    const INPUT_ROLES: &'static str = "the agent's models table, runs, optionally one or two rules tables (`rl_tune_rules`, `rl_tune_classifiers`: each family's chosen rule and the development frontier are played)";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![
            super::tables::models_schema(),
            dqm_schemas::runs::schema(),
            rules_schema(),
            rules_schema(),
        ]
    }

    fn validate(&self) -> Result<()> {
        if self.policies.is_empty() {
            return bad_param("policies", "name at least one policy");
        }
        let mut seen = self.policies.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.policies.len() {
            return bad_param("policies", "names a policy twice");
        }
        if self.policies.contains(&PolicyName::Threshold) && !self.threshold_offsets.contains(&0.0)
        {
            return bad_param(
                "threshold_offsets",
                "must contain 0 (DINAMO-S's own threshold, the baseline)",
            );
        }
        if self.policies.contains(&PolicyName::Threshold) && !self.consecutive.contains(&1) {
            return bad_param(
                "consecutive",
                "must contain 1 (every flagged run: DINAMO-S's own rule, the baseline)",
            );
        }
        if self.consecutive.contains(&0) {
            return bad_param("consecutive", "streaks are at least 1 run long");
        }
        if self.threshold_offsets.iter().any(|o| !o.is_finite()) {
            return bad_param("threshold_offsets", "must be finite numbers");
        }
        within("continual", self.continual.validate())?;
        if self.bootstrap < 100 {
            return bad_param("bootstrap", "needs at least 100 resamples");
        }
        Ok(())
    }
}

/// Seed (xor `seed`) of the draws of the sampled and the continual agent.
const AGENT_DRAWS: u64 = 0x0063_6f6e_7469_6e75;

/// A rule's action on the current run of `env`, `flagged` when the run
/// ends a long enough streak of flagged runs.
fn rule(policy: PolicyName, flagged: bool, env: &Env<'_>) -> usize {
    match (env.regime(), policy) {
        (Regime::Offline, PolicyName::AlwaysCall) => ASK,
        (Regime::Offline, PolicyName::NeverCall) if flagged => REJECT,
        (Regime::Offline, PolicyName::Threshold) if flagged => ASK,
        (Regime::Offline, _) => ACCEPT,
        (Regime::Online, PolicyName::AlwaysCall) => ALARM,
        (Regime::Online, PolicyName::Threshold) if flagged => ALARM,
        (Regime::Online, _) => CONTINUE,
    }
}

impl RlEvaluate {
    fn episodes(&self, ctx: &RunContext<'_>) -> Result<Played> {
        let (card, weights) = read_agent(&ctx.inputs[0])?;
        let env_cfg = &card.env;
        require_runs(&ctx.inputs[1].schema, &ctx.inputs[1].name, env_cfg.regime)?;
        let mut runs = Vec::new();
        let plain = |policy, offset, consecutive| Run {
            policy,
            offset,
            consecutive,
            expert: None,
        };
        for &policy in &self.policies {
            if policy == PolicyName::Threshold {
                for &k in &self.consecutive {
                    runs.extend(
                        self.threshold_offsets
                            .iter()
                            .map(|&o| plain(policy, Some(o), Some(k))),
                    );
                }
            } else {
                runs.push(plain(policy, None, None));
            }
        }
        for rules in &ctx.inputs[2..] {
            runs.extend(read_rules(rules, env_cfg.regime)?.into_iter().map(|e| Run {
                expert: Some(e),
                ..plain(PolicyName::Expert, None, None)
            }));
        }
        let frozen = [PolicyName::Agent, PolicyName::AgentSampled];
        let net = if frozen.iter().any(|p| self.policies.contains(p)) {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let net = ActorCritic::new(
                &vs.root(),
                card.n_obs as i64,
                card.actions.len() as i64,
                &card.ppo.hidden,
            );
            load_weights(&vs, &weights, &format!("input `{}`", ctx.inputs[0].name))?;
            Some((vs, net))
        } else {
            None
        };
        // The continual agent: the trained weights, a fresh optimiser, and
        // the environment telling it what `continual.feedback` says.
        let continual_env = EnvConfig {
            feedback: self.continual.feedback.clone(),
            ..env_cfg.clone()
        };
        let continual_ppo = self.continual.ppo(&card.ppo);
        let mut learner = if self.policies.contains(&PolicyName::AgentContinual) {
            let learner = Learner::new(
                &continual_ppo,
                card.n_obs,
                card.actions.len(),
                1,
                ChaCha8Rng::seed_from_u64(self.seed ^ AGENT_DRAWS),
            )?;
            load_weights(
                &learner.ppo.vs,
                &weights,
                &format!("input `{}`", ctx.inputs[0].name),
            )?;
            Some(learner)
        } else {
            None
        };
        // The sampled agent draws from the stream the continual agent
        // starts with: without an update the two play alike.
        let mut sampled_rng = ChaCha8Rng::seed_from_u64(self.seed ^ AGENT_DRAWS);
        let progress = ctx.reporter.progress(0, "datasets");
        let mut out = Vec::new();
        // The observations of the agent and of DINAMO-S's rule.
        let mut observed: Vec<(Run, Observed)> = Vec::new();
        let mut datasets = Datasets::new(&ctx.inputs[1]);
        while let Some(data) = datasets.next_dataset()? {
            if card.datasets.contains(&data.dataset) {
                return Err(StageError::data(format!(
                    "input `{}`: dataset {} was in the agent's training stream; evaluate on datasets it never saw (other seeds)",
                    ctx.inputs[1].name, data.dataset
                )));
            }
            // DINAMO-S is tuned on the warm-up once; every policy starts from it.
            let warmup = Warmup::tune(env_cfg, &data)?;
            for run in &runs {
                let cfg = if run.policy == PolicyName::AgentContinual {
                    &continual_env
                } else {
                    env_cfg
                };
                let mut env = Env::start(cfg, data.clone(), self.seed, warmup.clone())?;
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ data.dataset as u64);
                let mut streak = 0;
                let mut player = run.expert.as_ref().map(|e| RulePlayer::new(e.rule.clone()));
                let watch = run.policy == PolicyName::Agent || run.is_baseline();
                let slot = watch.then(|| {
                    observed
                        .iter()
                        .position(|(r, _)| r == run)
                        .unwrap_or_else(|| {
                            observed.push((run.clone(), Observed::default()));
                            observed.len() - 1
                        })
                });
                while env.remaining() > 0 {
                    streak = if env.score() > run.offset.unwrap_or(0.0) {
                        streak + 1
                    } else {
                        0
                    };
                    // Only the agents and the watched baseline need the observation.
                    let obs = (watch || run.is_agent()).then(|| env.observation());
                    let position = env.position();
                    let mut drawn = None;
                    let action = match (run.policy, &net, &mut player) {
                        (PolicyName::Agent | PolicyName::AgentSampled, Some((_, net)), _) => {
                            let obs = obs.as_ref().expect("observed for the agent");
                            let obs = Tensor::from_slice(obs).view([1, N_OBS as i64]);
                            let probs = &net.probabilities(&obs).0[0];
                            match (run.policy, self.greedy) {
                                (PolicyName::AgentSampled, _) => sample(probs, &mut sampled_rng),
                                (_, true) => greedy(probs),
                                (_, false) => sample(probs, &mut rng),
                            }
                        }
                        (PolicyName::AgentContinual, _, _) => {
                            let learner = learner.as_mut().expect("built for agent_continual");
                            let obs = obs.clone().expect("observed for the agent");
                            let d = learner.draw(&[obs]).pop().expect("one draw");
                            let action = d.action;
                            drawn = Some(d);
                            action
                        }
                        (_, _, Some(player)) => player.act_on(&env),
                        _ => rule(run.policy, streak >= run.consecutive.unwrap_or(1), &env),
                    };
                    let step = env.step(action)?;
                    if let (Some(i), Some(obs)) = (slot, &obs) {
                        observed[i].1.push(obs, !step.good);
                    }
                    if let (Some(learner), Some(d), Some(obs)) = (&mut learner, drawn, &obs) {
                        // Each dataset is one episode of the learner's stream.
                        let run = (data.dataset as u64, position);
                        learner.record(0, run, obs, &d, &step, env.take_told());
                        if learner.kept(0) >= continual_ppo.rollout_steps {
                            let now = (!step.done).then(|| env.observation());
                            learner.update(&[now]);
                        }
                    }
                }
                out.push(Episode {
                    run: run.clone(),
                    dataset: data.dataset,
                    alpha: env.alpha,
                    threshold: env.threshold,
                    tally: env.tally.clone(),
                });
            }
            progress.inc(1);
        }
        if out.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no runs to evaluate on",
                ctx.inputs[1].name
            )));
        }
        Ok(Played {
            regime: env_cfg.regime,
            episodes: out,
            observed,
        })
    }
}

/// What `episodes` played.
struct Played {
    regime: Regime,
    episodes: Vec<Episode>,
    observed: Vec<(Run, Observed)>,
}

/// The episodes grouped by policy row, in the order they were played
/// (every policy met every dataset, in the same order).
fn policy_episodes(episodes: &[Episode]) -> Vec<(PolicyEpisodes<'_>, Run)> {
    let mut out: Vec<(PolicyEpisodes<'_>, Run)> = Vec::new();
    for e in episodes {
        let k = match out.iter().position(|(_, r)| *r == e.run) {
            Some(k) => k,
            None => {
                let key = PolicyKey {
                    policy: e.run.name(),
                    offset: e.run.offset,
                    consecutive: e.run.consecutive.map(|c| c as i64),
                    rule: e.run.expert.as_ref().map(|x| x.rule.label()),
                };
                out.push((
                    PolicyEpisodes {
                        key,
                        datasets: Vec::new(),
                        tallies: Vec::new(),
                    },
                    e.run.clone(),
                ));
                out.len() - 1
            }
        };
        out[k].0.datasets.push(e.dataset);
        out[k].0.tallies.push(&e.tally);
    }
    out
}

impl Stage for RlEvaluate {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_models(&inputs[0], "models", "the models table of `rl_train`")?;
        // The regime is in the agent's card: the online columns are checked
        // when the card is read.
        require_runs(&inputs[1], "runs", Regime::Offline)?;
        for rules in &inputs[2..] {
            let why =
                "the baseline rules are read from `rl_tune_rules`' or `rl_tune_classifiers`' table";
            for (c, t) in [
                ("spec", DataType::Utf8),
                ("chosen", DataType::Boolean),
                ("frontier", DataType::Boolean),
            ] {
                require_column(rules, "rules", c, why, &t.to_string(), |d| *d == t)?;
            }
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: summary_schema(),
            },
            OutputSpec {
                name: "episodes",
                schema: episodes_schema(),
            },
            OutputSpec {
                name: "features",
                schema: features_schema(),
            },
            OutputSpec {
                name: "faults",
                schema: faults_schema(),
            },
            OutputSpec {
                name: "by_kind",
                schema: by_kind_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let Played {
            regime,
            episodes,
            observed,
        } = {
            let _torch = exclusive();
            let _threads = one_thread();
            self.episodes(ctx)?
        };
        let (summary, lines) = summary(regime, &episodes, self.bootstrap, self.seed)?;
        for line in lines {
            ctx.reporter.info(&line);
        }
        effort_plot(&summary, regime, &ctx.artifacts.join("effort.png"))?;
        let named: Vec<(&str, &Observed)> = observed.iter().map(|(r, o)| (r.name(), o)).collect();
        let policies = policy_episodes(&episodes);
        let frontier: Vec<usize> = (0..policies.len())
            .filter(|&k| policies[k].1.expert.as_ref().is_some_and(|e| e.frontier))
            .collect();
        let policies: Vec<PolicyEpisodes<'_>> = policies.into_iter().map(|(p, _)| p).collect();
        ctx.output.write("faults", faults_batch(&policies)?)?;
        ctx.output.write(
            "by_kind",
            by_kind_batch(&policies, &frontier, self.bootstrap, self.seed)?,
        )?;
        ctx.output.write("main", summary)?;
        ctx.output
            .write("features", features_batch(regime, &named)?)?;
        ctx.output
            .write("episodes", episodes_batch(regime, &episodes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::rl::env_config::{Feedback, RewardFrom};
    use crate::rl::rules::ExpertRule;
    use crate::rl::test_support::{runs_input, small};
    use arrow::array::{Array, AsArray, RecordBatch, StringArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    use std::sync::Arc;

    #[test]
    fn baselines_by_hand_and_the_agent_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for regime in [Regime::Offline, Regime::Online] {
            let mut train = small(regime, 1);
            // Faults often enough to meet both persistences in 3 datasets.
            train.env.faults.p_start = 0.05;
            train.env.faults.transient = 0.5;
            let runs = runs_input(vec![1, 2], dir, "train");
            let models = run_in_memory(&train, &[runs]).unwrap().table("models");
            let models = input_from_batch("models", &models, &dir.join("models.parquet")).unwrap();
            let test = runs_input(vec![11, 12, 13], dir, "test");
            let eval = RlEvaluate {
                threshold_offsets: vec![0.0, 1.0],
                bootstrap: 200,
                ..Default::default()
            };
            let out = run_in_memory(&eval, &[models.clone(), test.clone()]).unwrap();
            let episodes = out.table("episodes");
            // 5 policies (two thresholds) x 3 datasets.
            assert_eq!(episodes.num_rows(), 15);
            let col = |name: &str| {
                episodes
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let (runs, good, bad, calls, kept, missed) = (
                col("runs"),
                col("good_runs"),
                col("bad_runs"),
                col("calls"),
                col("good_kept"),
                col("missed_bad"),
            );
            let policy = episodes
                .column_by_name("policy")
                .unwrap()
                .as_string::<i32>();
            let reward = episodes
                .column_by_name("reward")
                .unwrap()
                .as_primitive::<Float64Type>();
            let w = &train.env.rewards;
            for i in 0..episodes.num_rows() {
                match (regime, policy.value(i)) {
                    // Asking every run: every good run kept at c_h each,
                    // nothing missed.
                    (Regime::Offline, "always_call") => {
                        assert_eq!(calls.value(i), runs.value(i));
                        assert_eq!((kept.value(i), missed.value(i)), (good.value(i), 0));
                        let by_hand = good.value(i) as f64 * w.good_kept
                            - runs.value(i) as f64 * w.shifter_call;
                        assert!((reward.value(i) - by_hand).abs() < 1e-9);
                    }
                    // Never alarming: every faulty run is missed (the
                    // first persistent fault is never repaired).
                    (Regime::Online, "never_call") => {
                        assert_eq!(calls.value(i), 0);
                        assert_eq!(col("faults").value(i) > 0, bad.value(i) > 0);
                        assert_eq!(missed.value(i), bad.value(i));
                        assert_eq!(reward.value(i), good.value(i) as f64 * w.good_kept);
                    }
                    (_, "never_call") => assert_eq!(calls.value(i), 0),
                    _ => {}
                }
                // Offline, every policy meets the same runs.
                if regime == Regime::Offline {
                    assert_eq!(runs.value(i), 100);
                    assert_eq!(good.value(i) + bad.value(i), 100);
                }
            }
            // One row per fault met; per kind, as many faults as met.
            let faults = out.table("faults");
            let met: i64 = col("faults").values().iter().sum();
            assert_eq!(faults.num_rows() as i64, met);
            let by_kind = out.table("by_kind");
            let kinds = by_kind
                .column_by_name("faults")
                .unwrap()
                .as_primitive::<Int64Type>();
            assert_eq!(kinds.values().iter().sum::<i64>(), met);
            if regime == Regime::Offline {
                assert_eq!((met, by_kind.num_rows()), (0, 0));
            } else {
                assert!(
                    met > 0 && by_kind.num_rows().is_multiple_of(5),
                    "{met} faults, {} rows",
                    by_kind.num_rows()
                );
            }
            let summary = out.table("main");
            assert_eq!(summary.num_rows(), 5);
            let f = |name: &str| {
                summary
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .clone()
            };
            // Row 1 is the baseline itself: ratio 1, difference 0.
            assert_eq!(summary.column(0).as_string::<i32>().value(1), "threshold");
            assert_eq!(f("calls_ratio").value(1), 1.0);
            if !f("missed_bad_diff").is_null(1) {
                assert_eq!(f("missed_bad_diff").value(1), 0.0);
            }
            // Intervals hold their point.
            for m in ["reward_per_run", "calls_per_1000", "good_efficiency"] {
                let (p, lo, hi) = (f(m), f(&format!("{m}_lo")), f(&format!("{m}_hi")));
                for i in 0..summary.num_rows() {
                    assert!(lo.value(i) <= p.value(i) + 1e-12 && p.value(i) <= hi.value(i) + 1e-12);
                }
            }
            // The threshold scan's own rows sit on the scan.
            // A threshold rule is on the threshold envelope or under it.
            let (eff, at) = (
                f("good_efficiency"),
                f("threshold_efficiency_at_same_calls"),
            );
            assert!(at.value(1) >= eff.value(1));
            let (calls, at) = (f("calls_per_1000"), f("threshold_calls_at_same_missed"));
            if !at.is_null(1) {
                assert!(at.value(1) <= calls.value(1));
            }

            // Evaluating on the training datasets is refused.
            let train_runs = runs_input(vec![2, 12], dir, "leak");
            let e = run_in_memory(&eval, &[models, train_runs])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("dataset 2 ") && e.contains("never saw"), "{e}");
        }
    }

    /// A rules table as `rl_tune_rules` writes it (the columns read).
    fn rules_input(
        rows: &[(ExpertRule, bool, bool)],
        dir: &std::path::Path,
    ) -> crate::input::Input {
        use arrow::array::BooleanArray;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("spec", DataType::Utf8, false),
            arrow::datatypes::Field::new("chosen", DataType::Boolean, false),
            arrow::datatypes::Field::new("frontier", DataType::Boolean, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| serde_json::to_string(&r.0).unwrap()),
                )),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.1)))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .unwrap();
        input_from_batch("rules", &batch, &dir.join("rules.parquet")).unwrap()
    }

    #[test]
    fn expert_rules_are_played_as_by_hand_and_each_feature_has_its_auc() {
        use crate::rl::rules::{OfflineRule, play};
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let train = small(Regime::Offline, 1);
        let runs = runs_input(vec![1, 2], dir, "train");
        let models = run_in_memory(&train, &[runs]).unwrap().table("models");
        let models = input_from_batch("models", &models, &dir.join("models.parquet")).unwrap();
        let test = runs_input(vec![11, 12], dir, "test");
        let rule = |ask: f64| {
            ExpertRule::Offline(OfflineRule {
                ask_above: ask,
                reject_above: Some(ask + 3.0),
                pull_ask_above: None,
                pull_reject_above: None,
                stale_after: Some(30),
            })
        };
        // Chosen and on the frontier, only on the frontier, neither.
        let rows = [
            (rule(0.0), true, true),
            (rule(2.0), false, true),
            (rule(5.0), false, false),
        ];
        let eval = RlEvaluate {
            bootstrap: 200,
            ..Default::default()
        };
        let out = run_in_memory(
            &eval,
            &[models.clone(), test.clone(), rules_input(&rows, dir)],
        )
        .unwrap();
        let summary = out.table("main");
        let names: Vec<&str> = summary
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(
            names,
            [
                "agent",
                "threshold",
                "always_call",
                "never_call",
                "expert",
                "expert_frontier"
            ]
        );
        // The expert rows are the rules played by hand, dataset by dataset.
        let episodes = out.table("episodes");
        let policy = episodes.column(0).as_string::<i32>();
        let calls = episodes
            .column_by_name("calls")
            .unwrap()
            .as_primitive::<Int64Type>();
        let card = read_agent(&models).unwrap().0;
        let mut datasets = Datasets::new(&test);
        let mut by_hand = Vec::new();
        while let Some(data) = datasets.next_dataset().unwrap() {
            let warmup = Warmup::tune(&card.env, &data).unwrap();
            for r in [rule(0.0), rule(2.0)] {
                by_hand.push(play(&card.env, &data, eval.seed, &warmup, r).unwrap().calls as i64);
            }
        }
        let played: Vec<i64> = (0..episodes.num_rows())
            .filter(|&i| policy.value(i).starts_with("expert"))
            .map(|i| calls.value(i))
            .collect();
        assert_eq!(played, by_hand);
        // Calls over the expert frontier's at the same missed rate: a rule
        // of the frontier calls at least as much as the frontier.
        let f = |name: &str| {
            summary
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let ratio = f("expert_calls_ratio");
        if !ratio.is_null(5) {
            assert!(ratio.value(5) >= 1.0 - 1e-9, "{}", ratio.value(5));
        }
        let diff = f("expert_efficiency_diff");
        assert!(diff.value(4) <= 1e-9 && diff.value(5) <= 1e-9);
        // Features: every observation feature of the agent's runs and of
        // DINAMO-S's rule's, with an AUC; the score tells bad runs.
        let features = out.table("features");
        assert_eq!(features.num_rows(), 2 * N_OBS);
        let auc = features
            .column_by_name("auc")
            .unwrap()
            .as_primitive::<Float64Type>();
        let name = features.column_by_name("name").unwrap().as_string::<i32>();
        for i in 0..features.num_rows() {
            assert!((0.0..=1.0).contains(&auc.value(i)));
        }
        assert_eq!(name.value(0), "score");
        assert!(auc.value(0) > 0.6, "{}", auc.value(0));
        // A rules table of the other regime is refused.
        let online = ExpertRule::Online(crate::rl::rules::OnlineRule {
            flag_above: 0.0,
            k: 1,
            m: 1,
            pull_alarm_above: None,
            cooldown: 0,
            stale_after: None,
        });
        let e = run_in_memory(
            &eval,
            &[
                models,
                test.clone(),
                rules_input(&[(online, true, true)], dir),
            ],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("online regime"), "{e}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let e = RlEvaluate {
            threshold_offsets: vec![1.0],
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("threshold_offsets"), "{e}");
        let e = serde_json::from_str::<PolicyName>("\"always_ask\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("always_call"), "{e}");
        for (continual, key) in [
            (
                Continual {
                    rollout_steps: Some(0),
                    ..Default::default()
                },
                "continual.rollout_steps",
            ),
            (
                Continual {
                    learning_rate: Some(-1.0),
                    ..Default::default()
                },
                "continual.learning_rate",
            ),
        ] {
            let e = RlEvaluate {
                continual,
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    /// The continual agent differs from the frozen agent drawing from the
    /// same stream by its updates alone, and learns from what its feedback
    /// tells it.
    #[test]
    fn the_continual_agent_differs_from_the_sampled_one_by_learning() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for regime in [Regime::Offline, Regime::Online] {
            let train = small(regime, 1);
            let runs = runs_input(vec![1, 2], dir, "train");
            let models = run_in_memory(&train, &[runs]).unwrap().table("models");
            let models = input_from_batch("models", &models, &dir.join("models.parquet")).unwrap();
            let test = runs_input(vec![11, 12, 13], dir, "test");
            // Per policy, each dataset's (calls, missed bad, good kept, reward).
            let play = |continual: Continual| {
                let eval = RlEvaluate {
                    policies: vec![PolicyName::AgentSampled, PolicyName::AgentContinual],
                    bootstrap: 100,
                    continual,
                    ..Default::default()
                };
                let episodes = run_in_memory(&eval, &[models.clone(), test.clone()])
                    .unwrap()
                    .table("episodes");
                let int = |c: &str| {
                    episodes
                        .column_by_name(c)
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .clone()
                };
                let (calls, missed, kept) = (int("calls"), int("missed_bad"), int("good_kept"));
                let reward = episodes
                    .column_by_name("reward")
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .clone();
                let policy = episodes.column(0).as_string::<i32>().clone();
                let rows = |name: &str| -> Vec<(i64, i64, i64, f64)> {
                    (0..episodes.num_rows())
                        .filter(|&i| policy.value(i) == name)
                        .map(|i| {
                            (
                                calls.value(i),
                                missed.value(i),
                                kept.value(i),
                                reward.value(i),
                            )
                        })
                        .collect()
                };
                (rows("agent_sampled"), rows("agent_continual"))
            };
            // No update within the stream: the same runs played alike.
            let (sampled, frozen) = play(Continual {
                rollout_steps: Some(1_000_000),
                ..Default::default()
            });
            assert_eq!(sampled.len(), 3);
            assert_eq!(sampled, frozen, "{regime:?}");
            // Updates every 16 runs: it plays otherwise, reproducibly, and
            // the oracle's reward teaches it otherwise than the shifter's.
            let learning = |reward_from| Continual {
                rollout_steps: Some(16),
                learning_rate: Some(1e-2),
                feedback: Feedback {
                    reward_from,
                    label_noise: 0.1,
                    ..Default::default()
                },
            };
            let (sampled, shifter) = play(learning(RewardFrom::Shifter));
            assert_ne!(sampled, shifter, "{regime:?}");
            assert_eq!(shifter, play(learning(RewardFrom::Shifter)).1);
            assert_ne!(shifter, play(learning(RewardFrom::Truth)).1, "{regime:?}");
        }
    }
}
