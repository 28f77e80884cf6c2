//! The rules a DQM expert would write for the two regimes, as policies
//! that play an [`Env`]. Offline: accept / ask / reject bands on DINAMO-S's
//! score and on the largest downward pull (a dead bin pulls far below the
//! reference), and a staleness trigger (ask when the reference has not
//! been updated for a while, so it catches up with the conditions).
//! Online: alarm when k of the last m runs are flagged, or on the largest
//! downward pull, or when the reference is stale; no alarm while a repair
//! is under way (the shifter knows) nor for a cooldown after an alarm.
//! `rl_tune_rules` chooses them on development datasets; `rl_evaluate`
//! plays the chosen ones on the test datasets.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::classifier::ScoreModel;
use super::env::{Env, RuleView, Tally, Warmup};
use super::env_config::{ACCEPT, ALARM, ASK, CONTINUE, EnvConfig, REJECT, Regime};
use arrow::array::AsArray;
use arrow::datatypes::DataType;

use crate::arrow_util::column_as;
use crate::dinamo::tables::DatasetRuns;
use crate::error::{Result, StageError};
use crate::input::Input;

/// Offline bands. Scores are DINAMO-S's ln χ²_ν minus its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    /// Ask when the score is above this (else accept).
    pub ask_above: f64,
    /// Reject without asking when the score is above this (null: never).
    pub reject_above: Option<f64>,
    /// Ask when the largest downward pull is above this (null: never).
    pub pull_ask_above: Option<f64>,
    /// Reject when the largest downward pull is above this (null: never).
    pub pull_reject_above: Option<f64>,
    /// Ask about every run once the reference has gone this many runs
    /// without an update (null: never).
    pub stale_after: Option<usize>,
}

/// Online k-of-m rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineRule {
    /// A run is flagged when its score is above this.
    pub flag_above: f64,
    /// Alarm when at least `k` of the last `m` runs are flagged.
    pub k: usize,
    pub m: usize,
    /// Alarm when the largest downward pull is above this (null: never).
    pub pull_alarm_above: Option<f64>,
    /// Runs after an alarm without another one.
    pub cooldown: usize,
    /// Alarm once the reference has gone this many runs without an update
    /// (null: never): the shifter's look confirms a run for it.
    pub stale_after: Option<usize>,
}

/// A cost-sensitive decision on a classifier's P(bad | observation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// Accept below `accept_below`, reject above `reject_above` (null:
    /// never), ask in between.
    Offline {
        accept_below: f64,
        reject_above: Option<f64>,
    },
    /// Alarm above `alarm_above`; never during a repair nor for `cooldown`
    /// runs after an alarm.
    Online { alarm_above: f64, cooldown: usize },
}

/// A classifier with its decision: the data scientist's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRule {
    pub model: ScoreModel,
    pub decision: Decision,
}

/// An expert rule of either regime, or a classifier's rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertRule {
    Offline(OfflineRule),
    Online(OnlineRule),
    Classifier(ClassifierRule),
}

fn over(x: f64, limit: Option<f64>) -> bool {
    limit.is_some_and(|t| x > t)
}

fn stale(v: &RuleView, after: Option<usize>) -> bool {
    after.is_some_and(|k| v.since_update >= k)
}

impl ExpertRule {
    pub fn regime(&self) -> Regime {
        match self {
            ExpertRule::Offline(_) => Regime::Offline,
            ExpertRule::Online(_) => Regime::Online,
            ExpertRule::Classifier(c) => match c.decision {
                Decision::Offline { .. } => Regime::Offline,
                Decision::Online { .. } => Regime::Online,
            },
        }
    }

    /// The family of rules it belongs to: `expert` (hand rules),
    /// `logistic` or `boosted` (classifiers).
    pub fn family(&self) -> &'static str {
        match self {
            ExpertRule::Classifier(c) => c.model.name(),
            _ => "expert",
        }
    }

    /// The rule in a few words, for tables and logs.
    pub fn label(&self) -> String {
        let opt = |name: &str, v: Option<f64>| v.map_or(String::new(), |v| format!(", {name} {v}"));
        let stale = |v: Option<usize>| v.map_or(String::new(), |k| format!(", stale {k}"));
        match self {
            ExpertRule::Offline(r) => format!(
                "ask > {}{}{}{}{}",
                r.ask_above,
                opt("reject >", r.reject_above),
                opt("pull ask >", r.pull_ask_above),
                opt("pull reject >", r.pull_reject_above),
                stale(r.stale_after)
            ),
            ExpertRule::Online(r) => format!(
                "{} of {} > {}{}, cooldown {}{}",
                r.k,
                r.m,
                r.flag_above,
                opt("pull >", r.pull_alarm_above),
                r.cooldown,
                stale(r.stale_after)
            ),
            ExpertRule::Classifier(c) => match c.decision {
                Decision::Offline {
                    accept_below,
                    reject_above,
                } => format!(
                    "{}: accept p < {accept_below}{}",
                    c.model.name(),
                    opt("reject p >", reject_above)
                ),
                Decision::Online {
                    alarm_above,
                    cooldown,
                } => format!(
                    "{}: alarm p > {alarm_above}, cooldown {cooldown}",
                    c.model.name()
                ),
            },
        }
    }
}

/// A rule playing one episode: the state it keeps (the last m flags, the
/// cooldown left).
pub struct RulePlayer {
    rule: ExpertRule,
    flags: VecDeque<bool>,
    cooldown_left: usize,
}

impl RulePlayer {
    pub fn new(rule: ExpertRule) -> Self {
        Self {
            rule,
            flags: VecDeque::new(),
            cooldown_left: 0,
        }
    }

    /// The action on the current run of `env` (a classifier reads the
    /// observation, the hand rules what [`Env::view`] shows).
    pub fn act_on(&mut self, env: &Env<'_>) -> usize {
        match &self.rule {
            ExpertRule::Classifier(c) => {
                let p = c.model.probability(&env.observation());
                let decision = c.decision;
                self.decide(p, decision, env.view().repairing)
            }
            _ => self.act(&env.view()),
        }
    }

    /// A classifier's decision on P(bad) = `p`.
    fn decide(&mut self, p: f64, decision: Decision, repairing: bool) -> usize {
        match decision {
            Decision::Offline {
                accept_below,
                reject_above,
            } => {
                if over(p, reject_above) {
                    REJECT
                } else if p < accept_below {
                    ACCEPT
                } else {
                    ASK
                }
            }
            Decision::Online {
                alarm_above,
                cooldown,
            } => {
                if repairing || self.cooldown_left > 0 {
                    self.cooldown_left = self.cooldown_left.saturating_sub(1);
                    CONTINUE
                } else if p > alarm_above {
                    self.cooldown_left = cooldown;
                    ALARM
                } else {
                    CONTINUE
                }
            }
        }
    }

    /// The action of a hand rule on the run `v` shows.
    pub fn act(&mut self, v: &RuleView) -> usize {
        match self.rule {
            ExpertRule::Offline(r) => {
                if stale(v, r.stale_after) {
                    ASK
                } else if over(v.score, r.reject_above)
                    || over(v.max_pull_down, r.pull_reject_above)
                {
                    REJECT
                } else if v.score > r.ask_above || over(v.max_pull_down, r.pull_ask_above) {
                    ASK
                } else {
                    ACCEPT
                }
            }
            ExpertRule::Online(r) => {
                // Runs under repair or in the cooldown do not count: the
                // window starts again after them.
                if v.repairing || self.cooldown_left > 0 {
                    self.cooldown_left = self.cooldown_left.saturating_sub(1);
                    self.flags.clear();
                    return CONTINUE;
                }
                if self.flags.len() == r.m {
                    self.flags.pop_front();
                }
                self.flags.push_back(v.score > r.flag_above);
                let flagged = self.flags.iter().filter(|&&f| f).count();
                if flagged >= r.k
                    || over(v.max_pull_down, r.pull_alarm_above)
                    || stale(v, r.stale_after)
                {
                    self.cooldown_left = r.cooldown;
                    self.flags.clear();
                    ALARM
                } else {
                    CONTINUE
                }
            }
            ExpertRule::Classifier(_) => unreachable!("classifiers act on the observation"),
        }
    }
}

/// Plays `rule` on one dataset from its tuned warm-up: the episode's tally.
pub fn play(
    cfg: &EnvConfig,
    data: &Arc<DatasetRuns>,
    seed: u64,
    warmup: &Warmup,
    rule: ExpertRule,
) -> Result<Tally> {
    let mut env = Env::start(cfg, data.clone(), seed, warmup.clone())?;
    let mut player = RulePlayer::new(rule);
    while env.remaining() > 0 {
        let action = player.act_on(&env);
        env.step(action)?;
    }
    Ok(env.tally)
}

/// An expert rule as `rl_tune_rules` marked it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertRow {
    pub rule: ExpertRule,
    pub chosen: bool,
    pub frontier: bool,
}

/// The chosen rule and the frontier rules of `rl_tune_rules`' table.
pub fn read_rules(input: &Input, regime: Regime) -> Result<Vec<ExpertRow>> {
    let mut out = Vec::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str, t: &DataType| column_as(&batch, n, t, &input.name);
        let (spec, chosen, frontier) = (
            col("spec", &DataType::Utf8)?,
            col("chosen", &DataType::Boolean)?,
            col("frontier", &DataType::Boolean)?,
        );
        let (spec, chosen, frontier) = (
            spec.as_string::<i32>(),
            chosen.as_boolean(),
            frontier.as_boolean(),
        );
        for i in 0..batch.num_rows() {
            if !(chosen.value(i) || frontier.value(i)) {
                continue;
            }
            let rule: ExpertRule = serde_json::from_str(spec.value(i)).map_err(|e| {
                StageError::data(format!(
                    "input `{}`, row {i}, column `spec`: not an expert rule ({e})",
                    input.name
                ))
            })?;
            if rule.regime() != regime {
                return Err(StageError::data(format!(
                    "input `{}`: rule `{}` is for the {} regime, the agent is {}",
                    input.name,
                    rule.label(),
                    rule.regime().name(),
                    regime.name()
                )));
            }
            out.push(ExpertRow {
                rule,
                chosen: chosen.value(i),
                frontier: frontier.value(i),
            });
        }
    }
    if !out.iter().any(|r| r.chosen) {
        return Err(StageError::data(format!(
            "input `{}` has no chosen rule: is it the table of `rl_tune_rules`?",
            input.name
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(score: f64, pull: f64, since_update: usize, repairing: bool) -> RuleView {
        RuleView {
            score,
            max_pull_down: pull,
            since_update,
            repairing,
        }
    }

    #[test]
    fn offline_bands_by_hand() {
        let mut p = RulePlayer::new(ExpertRule::Offline(OfflineRule {
            ask_above: 0.0,
            reject_above: Some(2.0),
            pull_ask_above: Some(5.0),
            pull_reject_above: Some(10.0),
            stale_after: Some(30),
        }));
        assert_eq!(p.act(&view(-1.0, 1.0, 0, false)), ACCEPT);
        assert_eq!(p.act(&view(1.0, 1.0, 0, false)), ASK);
        assert_eq!(p.act(&view(3.0, 1.0, 0, false)), REJECT);
        assert_eq!(p.act(&view(-1.0, 6.0, 0, false)), ASK);
        assert_eq!(p.act(&view(-1.0, 11.0, 0, false)), REJECT);
        // A stale reference: ask, even about a run over the reject band.
        assert_eq!(p.act(&view(3.0, 1.0, 30, false)), ASK);
        assert_eq!(p.act(&view(-1.0, 1.0, 29, false)), ACCEPT);
    }

    #[test]
    fn online_k_of_m_with_cooldown_and_repair_by_hand() {
        let rule = OnlineRule {
            flag_above: 0.0,
            k: 2,
            m: 3,
            pull_alarm_above: None,
            cooldown: 2,
            stale_after: None,
        };
        let mut p = RulePlayer::new(ExpertRule::Online(rule));
        let acts: Vec<usize> = [1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0]
            .iter()
            .map(|&s| p.act(&view(s, 0.0, 0, false)))
            .collect();
        // Flags 1 0 1: alarm on the third run; two runs of cooldown, not
        // counted; then 1 1: alarm on the seventh run.
        assert_eq!(
            acts,
            [
                CONTINUE, CONTINUE, ALARM, CONTINUE, CONTINUE, CONTINUE, ALARM, CONTINUE
            ]
        );
        // During a repair, never.
        let mut p = RulePlayer::new(ExpertRule::Online(OnlineRule { k: 1, m: 1, ..rule }));
        assert_eq!(p.act(&view(5.0, 0.0, 0, true)), CONTINUE);
        assert_eq!(p.act(&view(5.0, 0.0, 0, false)), ALARM);
        // The pull and staleness triggers.
        let mut p = RulePlayer::new(ExpertRule::Online(OnlineRule {
            pull_alarm_above: Some(8.0),
            stale_after: Some(50),
            cooldown: 0,
            ..rule
        }));
        assert_eq!(p.act(&view(-1.0, 9.0, 0, false)), ALARM);
        assert_eq!(p.act(&view(-1.0, 1.0, 50, false)), ALARM);
        assert_eq!(p.act(&view(-1.0, 1.0, 49, false)), CONTINUE);
        assert!(ExpertRule::Online(rule).label().contains("2 of 3 > 0"));
    }

    #[test]
    fn classifier_decisions_by_hand() {
        let model = ScoreModel::Logistic(crate::rl::classifier::Logistic {
            mean: vec![0.0],
            scale: vec![1.0],
            weights: vec![1.0],
            bias: 0.0,
        });
        let offline = Decision::Offline {
            accept_below: 0.1,
            reject_above: Some(0.9),
        };
        let rule = ExpertRule::Classifier(ClassifierRule {
            model: model.clone(),
            decision: offline,
        });
        assert_eq!(rule.family(), "logistic");
        assert_eq!(rule.regime(), Regime::Offline);
        assert_eq!(rule.label(), "logistic: accept p < 0.1, reject p > 0.9");
        let mut p = RulePlayer::new(rule);
        let acts: Vec<usize> = [0.05, 0.5, 0.95]
            .iter()
            .map(|&q| p.decide(q, offline, false))
            .collect();
        assert_eq!(acts, [ACCEPT, ASK, REJECT]);
        // Online: an alarm, 2 runs of cooldown, never during a repair.
        let online = Decision::Online {
            alarm_above: 0.5,
            cooldown: 2,
        };
        let mut p = RulePlayer::new(ExpertRule::Classifier(ClassifierRule {
            model,
            decision: online,
        }));
        let acts: Vec<usize> = [
            (0.9, false),
            (0.9, false),
            (0.9, false),
            (0.9, true),
            (0.9, false),
            (0.1, false),
        ]
        .iter()
        .map(|&(q, repairing)| p.decide(q, online, repairing))
        .collect();
        assert_eq!(acts, [ALARM, CONTINUE, CONTINUE, CONTINUE, ALARM, CONTINUE]);
        // The spec round-trips through the rules table's JSON.
        let json = serde_json::to_string(&p.rule).unwrap();
        assert_eq!(serde_json::from_str::<ExpertRule>(&json).unwrap(), p.rule);
    }
}
