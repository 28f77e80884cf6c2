//! `rl_evaluate`: the frozen agent and the rule baselines on datasets it
//! never saw, in the environment it was trained in (from its card), each
//! policy meeting the same runs and the same faults.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::env::{Env, N_OBS, Tally, Warmup};
use super::env_config::{ACCEPT, ALARM, ASK, CONTINUE, REJECT, Regime};
use super::ppo::{ActorCritic, greedy, sample};
use super::tables::{AgentCard, Datasets, episodes_schema, require_runs, summary_schema};
use crate::error::{Result, StageError, bad_param};
use crate::nn::{each_model_row, exclusive, load_weights, one_thread, require_models};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::quantile;

/// A policy `rl_evaluate` can run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// The trained agent (frozen).
    Agent,
    /// DINAMO-S's flag: ask (offline) or alarm (online) on a flagged run
    /// (ln chi2_nu > threshold + offset) that ends a streak of `consecutive`
    /// flagged runs, accept or continue otherwise; one row per (offset,
    /// streak) of the scan, offset 0 and streak 1 being DINAMO-S itself.
    Threshold,
    /// Call the shifter on every run: the maximum-effort oracle.
    AlwaysCall,
    /// Never call: offline, reject flagged runs and accept the rest;
    /// online, never raise an alarm.
    NeverCall,
}

impl PolicyName {
    fn name(self) -> &'static str {
        match self {
            PolicyName::Agent => "agent",
            PolicyName::Threshold => "threshold",
            PolicyName::AlwaysCall => "always_call",
            PolicyName::NeverCall => "never_call",
        }
    }
}

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
    /// and of the bootstrap.
    pub seed: u64,
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
        }
    }
}

impl StageConfig for RlEvaluate {
    const KIND: &'static str = "rl_evaluate";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Frozen RL agent vs DINAMO-S threshold, always-call and never-call baselines on unseen datasets, with bootstrap intervals";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "the agent's models table, runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![super::tables::models_schema(), dqm_schemas::runs::schema()]
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
        if self.bootstrap < 100 {
            return bad_param("bootstrap", "needs at least 100 resamples");
        }
        Ok(())
    }
}

/// A policy with its parameter, as it is run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    policy: PolicyName,
    offset: Option<f64>,
    consecutive: Option<usize>,
}

impl Run {
    /// DINAMO-S's own rule, the baseline of the comparison columns.
    fn is_baseline(&self) -> bool {
        self.policy == PolicyName::Threshold
            && self.offset == Some(0.0)
            && self.consecutive == Some(1)
    }
}

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

/// One (policy, dataset) episode.
struct Episode {
    run: Run,
    dataset: i64,
    tally: Tally,
    alpha: f64,
    threshold: f64,
}

impl RlEvaluate {
    fn episodes(&self, ctx: &RunContext<'_>) -> Result<(Regime, Vec<Episode>)> {
        let (card, weights) = read_agent(&ctx.inputs[0])?;
        let env_cfg = &card.env;
        require_runs(&ctx.inputs[1].schema, &ctx.inputs[1].name, env_cfg.regime)?;
        let mut runs = Vec::new();
        for &policy in &self.policies {
            if policy == PolicyName::Threshold {
                for &k in &self.consecutive {
                    runs.extend(self.threshold_offsets.iter().map(|&o| Run {
                        policy,
                        offset: Some(o),
                        consecutive: Some(k),
                    }));
                }
            } else {
                runs.push(Run {
                    policy,
                    offset: None,
                    consecutive: None,
                });
            }
        }
        let net = if self.policies.contains(&PolicyName::Agent) {
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
        let progress = ctx.reporter.progress(0, "datasets");
        let mut out = Vec::new();
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
            for &run in &runs {
                let mut env = Env::start(env_cfg, data.clone(), self.seed, warmup.clone())?;
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ data.dataset as u64);
                let mut streak = 0;
                while env.remaining() > 0 {
                    streak = if env.score() > run.offset.unwrap_or(0.0) {
                        streak + 1
                    } else {
                        0
                    };
                    let action = match (run.policy, &net) {
                        (PolicyName::Agent, Some((_, net))) => {
                            let obs =
                                Tensor::from_slice(&env.observation()).view([1, N_OBS as i64]);
                            let probs = &net.probabilities(&obs).0[0];
                            if self.greedy {
                                greedy(probs)
                            } else {
                                sample(probs, &mut rng)
                            }
                        }
                        _ => rule(run.policy, streak >= run.consecutive.unwrap_or(1), &env),
                    };
                    env.step(action)?;
                }
                out.push(Episode {
                    run,
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
        Ok((env_cfg.regime, out))
    }
}

/// The agent's card and weights from an `rl_train` models table.
pub fn read_agent(input: &crate::input::Input) -> Result<(AgentCard, Vec<u8>)> {
    let mut agent = None;
    each_model_row(
        input,
        "the models table of `rl_train`",
        |_, _, card: AgentCard, weights| {
            if agent.is_some() {
                return Err(StageError::data(format!(
                    "input `{}` holds more than one agent",
                    input.name
                )));
            }
            if card.n_obs != N_OBS || card.actions != card.env.regime.actions() {
                return Err(StageError::data(format!(
                    "input `{}`: the agent observes {} features and acts {:?}; this build's {} environment has {N_OBS} and {:?}",
                    input.name,
                    card.n_obs,
                    card.actions,
                    card.env.regime.name(),
                    card.env.regime.actions()
                )));
            }
            agent = Some((card, weights.to_vec()));
            Ok(())
        },
    )?;
    Ok(agent.expect("each_model_row refuses an empty table"))
}

/// Totals of a set of episodes.
#[derive(Default, Clone, Copy)]
struct Sums {
    runs: f64,
    reward: f64,
    calls: f64,
    bad: f64,
    missed: f64,
    kept: f64,
    true_alarms: f64,
    delay: f64,
}

impl Sums {
    fn add(&mut self, t: &Tally) {
        self.runs += t.runs as f64;
        self.reward += t.reward;
        self.calls += t.calls as f64;
        self.bad += t.bad_runs as f64;
        self.missed += t.missed_bad as f64;
        self.kept += t.good_kept as f64;
        self.true_alarms += t.true_alarms as f64;
        self.delay += t.detection_delay as f64;
    }
    fn reward_per_run(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| self.reward / self.runs)
    }
    fn calls_per_1000(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| 1000.0 * self.calls / self.runs)
    }
    fn missed_rate(&self) -> Option<f64> {
        (self.bad > 0.0).then(|| self.missed / self.bad)
    }
    fn efficiency(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| self.kept / self.runs)
    }
}

/// The metrics of the summary, from a policy's sums and the baseline's.
fn metrics(s: &Sums, base: Option<&Sums>) -> [Option<f64>; 6] {
    let ratio = base.and_then(|b| (b.calls > 0.0).then(|| s.calls / b.calls));
    let diff = base.and_then(|b| Some(s.missed_rate()? - b.missed_rate()?));
    [
        s.reward_per_run(),
        s.calls_per_1000(),
        s.missed_rate(),
        s.efficiency(),
        ratio,
        diff,
    ]
}

/// The highest good efficiency of the threshold rules `scan` (calls per
/// 1000, missed-bad rate, efficiency) that call at most `calls` per 1000.
fn best_efficiency(scan: &[[f64; 3]], calls: f64) -> Option<f64> {
    scan.iter()
        .filter(|p| p[0] <= calls + 1e-9)
        .map(|p| p[2])
        .max_by(f64::total_cmp)
}

/// The fewest calls per 1000 of the threshold rules `scan` that let
/// through at most a fraction `missed` of the bad runs.
fn fewest_calls(scan: &[[f64; 3]], missed: f64) -> Option<f64> {
    scan.iter()
        .filter(|p| p[1] <= missed + 1e-9)
        .map(|p| p[0])
        .min_by(f64::total_cmp)
}

fn summary(
    regime: Regime,
    episodes: &[Episode],
    bootstrap: usize,
    seed: u64,
) -> Result<(RecordBatch, Vec<String>)> {
    // Per policy: the tallies in dataset order (every policy ran on every dataset).
    let mut keys: Vec<Run> = Vec::new();
    let mut by_run: BTreeMap<usize, Vec<&Tally>> = BTreeMap::new();
    for e in episodes {
        let k = match keys.iter().position(|r| *r == e.run) {
            Some(k) => k,
            None => {
                keys.push(e.run);
                keys.len() - 1
            }
        };
        by_run.entry(k).or_default().push(&e.tally);
    }
    let n_data = by_run.values().next().map_or(0, Vec::len);
    let base = keys.iter().position(Run::is_baseline);
    let sums_of = |k: usize, pick: &[usize]| {
        let mut s = Sums::default();
        for &d in pick {
            s.add(by_run[&k][d]);
        }
        s
    };
    let all: Vec<usize> = (0..n_data).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let resamples: Vec<Vec<usize>> = (0..bootstrap)
        .map(|_| (0..n_data).map(|_| rng.random_range(0..n_data)).collect())
        .collect();
    // Each policy's totals, and the baseline's on each resample, once.
    let totals: Vec<Sums> = (0..keys.len()).map(|k| sums_of(k, &all)).collect();
    let base_total = base.map(|b| totals[b]);
    let base_boot: Option<Vec<Sums>> =
        base.map(|b| resamples.iter().map(|pick| sums_of(b, pick)).collect());
    // The threshold rules' (calls per 1000, missed-bad rate, efficiency).
    let scan: Vec<[f64; 3]> = keys
        .iter()
        .enumerate()
        .filter(|(_, r)| r.policy == PolicyName::Threshold)
        .filter_map(|(k, _)| {
            let s = totals[k];
            Some([
                s.calls_per_1000()?,
                s.missed_rate().unwrap_or(0.0),
                s.efficiency()?,
            ])
        })
        .collect();
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); 6 * 3 + 3];
    for (k, total) in totals.iter().enumerate() {
        let point = metrics(total, base_total.as_ref());
        let mut boot: Vec<Vec<f64>> = vec![Vec::new(); 6];
        for (r, pick) in resamples.iter().enumerate() {
            let m = metrics(&sums_of(k, pick), base_boot.as_ref().map(|b| &b[r]));
            for (v, b) in m.iter().zip(boot.iter_mut()) {
                if let Some(v) = v {
                    b.push(*v);
                }
            }
        }
        for (i, (p, mut b)) in point.iter().zip(boot).enumerate() {
            b.sort_by(f64::total_cmp);
            let (lo, hi) = if b.len() * 2 >= bootstrap && p.is_some() {
                (quantile(&b, 0.025), quantile(&b, 0.975))
            } else {
                (None, None)
            };
            cols[i].push(*p);
            cols[6 + 2 * i].push(lo);
            cols[7 + 2 * i].push(hi);
        }
        cols[18].push(point[1].and_then(|c| best_efficiency(&scan, c)));
        cols[19].push(point[2].and_then(|m| fewest_calls(&scan, m)));
        let s = total;
        cols[20].push(
            (regime == Regime::Online && s.true_alarms > 0.0).then(|| s.delay / s.true_alarms),
        );
    }
    let n = keys.len();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            keys.iter().map(|r| r.policy.name()),
        )),
        Arc::new(Float64Array::from_iter(keys.iter().map(|r| r.offset))),
        Arc::new(Int64Array::from_iter(
            keys.iter().map(|r| r.consecutive.map(|k| k as i64)),
        )),
        Arc::new(StringArray::from(vec![regime.name(); n])),
        Arc::new(Int64Array::from(vec![n_data as i64; n])),
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|s| s.runs as i64),
        )),
    ];
    let lines: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            let rule = match (r.offset, r.consecutive) {
                (Some(o), Some(c)) => format!(" (offset {o}, {c} in a row)"),
                _ => String::new(),
            };
            format!(
                "{}{rule}: calls per 1000 runs {}, missed-bad rate {}, good efficiency {}",
                r.policy.name(),
                fmt(cols[1][k]),
                fmt(cols[2][k]),
                fmt(cols[3][k])
            )
        })
        .collect();
    columns.extend(
        cols.into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    Ok((RecordBatch::try_new(summary_schema(), columns)?, lines))
}

/// Each policy's operating point: calls per 1000 runs against the
/// missed-bad rate (offline) or the good-data efficiency (online); the
/// threshold rules as one line per streak length, ordered by calls.
fn effort_plot(summary: &RecordBatch, regime: Regime, path: &std::path::Path) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let floats = |c: &str| {
        summary
            .column_by_name(c)
            .expect("summary schema")
            .as_primitive::<Float64Type>()
            .clone()
    };
    let (calls, y_col) = (
        floats("calls_per_1000"),
        floats(match regime {
            Regime::Offline => "missed_bad_rate",
            Regime::Online => "good_efficiency",
        }),
    );
    let policy = summary.column(0).as_string::<i32>();
    let streak = summary
        .column_by_name("consecutive")
        .expect("summary schema")
        .as_primitive::<Int64Type>();
    let mut series: Vec<crate::plots::Series> = Vec::new();
    for i in 0..summary.num_rows() {
        if calls.is_null(i) || y_col.is_null(i) {
            continue;
        }
        let name = if streak.is_null(i) {
            policy.value(i).to_string()
        } else {
            format!("threshold, {} in a row", streak.value(i))
        };
        let point = (calls.value(i), y_col.value(i));
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(crate::plots::Series {
                name,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let y_label = match regime {
        Regime::Offline => "missed-bad rate",
        Regime::Online => "good-data efficiency",
    };
    crate::plots::lines(
        path,
        &format!("{} regime: shifter effort against {y_label}", regime.name()),
        "shifter calls per 1000 runs",
        y_label,
        &series,
        false,
    )
}

fn episodes_batch(regime: Regime, episodes: &[Episode]) -> Result<RecordBatch> {
    let int = |f: fn(&Tally) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            episodes.iter().map(|e| f(&e.tally) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            episodes.iter().map(|e| e.run.policy.name()),
        )),
        Arc::new(Float64Array::from_iter(
            episodes.iter().map(|e| e.run.offset),
        )),
        Arc::new(Int64Array::from_iter(
            episodes.iter().map(|e| e.run.consecutive.map(|k| k as i64)),
        )),
        Arc::new(StringArray::from(vec![regime.name(); episodes.len()])),
        Arc::new(Int64Array::from_iter_values(
            episodes.iter().map(|e| e.dataset),
        )),
        int(|t| t.runs),
        int(|t| t.good_runs),
        int(|t| t.bad_runs),
        Arc::new(Float64Array::from_iter_values(
            episodes.iter().map(|e| e.tally.reward),
        )),
        int(|t| t.calls),
        int(|t| t.good_kept),
        int(|t| t.good_rejected),
        int(|t| t.missed_bad),
        int(|t| t.faults),
        int(|t| t.true_alarms),
        int(|t| t.false_alarms),
        int(|t| t.redundant_calls),
        int(|t| t.detection_delay),
        int(|t| t.reference_updates),
        Arc::new(Float64Array::from_iter_values(
            episodes.iter().map(|e| e.alpha),
        )),
        Arc::new(Float64Array::from_iter_values(
            episodes.iter().map(|e| e.threshold),
        )),
    ];
    Ok(RecordBatch::try_new(episodes_schema(), columns)?)
}

impl Stage for RlEvaluate {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_models(&inputs[0], "models", "the models table of `rl_train`")?;
        // The regime is in the agent's card: the online columns are checked
        // when the card is read.
        require_runs(&inputs[1], "runs", Regime::Offline)?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: summary_schema(),
            },
            OutputSpec {
                name: "episodes",
                schema: episodes_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (regime, episodes) = {
            let _torch = exclusive();
            let _threads = one_thread();
            self.episodes(ctx)?
        };
        let (summary, lines) = summary(regime, &episodes, self.bootstrap, self.seed)?;
        for line in lines {
            ctx.reporter.info(&line);
        }
        effort_plot(&summary, regime, &ctx.artifacts.join("effort.png"))?;
        ctx.output.write("main", summary)?;
        ctx.output
            .write("episodes", episodes_batch(regime, &episodes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::rl::test_support::{runs_input, small};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    #[test]
    fn threshold_envelope_by_hand() {
        // (calls per 1000, missed-bad rate, efficiency) of three rules.
        let scan = [[10.0, 0.5, 0.6], [20.0, 0.3, 0.8], [40.0, 0.1, 0.7]];
        assert_eq!(best_efficiency(&scan, 25.0), Some(0.8));
        assert_eq!(best_efficiency(&scan, 100.0), Some(0.8));
        assert_eq!(best_efficiency(&scan, 10.0), Some(0.6));
        assert_eq!(best_efficiency(&scan, 5.0), None);
        assert_eq!(fewest_calls(&scan, 0.3), Some(20.0));
        assert_eq!(fewest_calls(&scan, 0.2), Some(40.0));
        assert_eq!(fewest_calls(&scan, 0.05), None);
    }

    #[test]
    fn baselines_by_hand_and_the_agent_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for regime in [Regime::Offline, Regime::Online] {
            let train = small(regime, 1);
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
                    // Never alarming: the first fault is never repaired.
                    (Regime::Online, "never_call") => {
                        assert_eq!(calls.value(i), 0);
                        assert_eq!(col("faults").value(i), i64::from(bad.value(i) > 0));
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
    }
}
