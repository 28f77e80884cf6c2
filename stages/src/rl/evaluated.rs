//! The rows `rl_evaluate` writes from what its policies played: the
//! policies it names, one (policy, dataset) episode each, the summary per
//! policy with its bootstrap intervals and comparisons, and the episodes
//! table.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::comparison::{
    calls_at_missed, efficiency_at_calls, expert_comparison, interval, metrics,
};
use super::env::Tally;
use super::env_config::Regime;
use super::rules::ExpertRow;
use super::tables::{episodes_schema, summary_schema};
use super::totals::Totals;
use crate::error::Result;

/// A policy `rl_evaluate` can run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// The trained agent (frozen; its most probable action unless
    /// `greedy: false`).
    Agent,
    /// The frozen agent drawing its actions from its policy, as the
    /// continual agent does: what learning on the test stream is measured
    /// against.
    AgentSampled,
    /// The agent learning on as it plays the test datasets in order (PPO
    /// from what `continual.feedback` tells it, never reset between
    /// datasets), each run's action drawn from the policy of that moment.
    AgentContinual,
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
    /// The expert rules of the third input (played whenever it is given,
    /// never named in `policies`).
    #[serde(skip)]
    Expert,
}

impl PolicyName {
    pub fn name(self) -> &'static str {
        match self {
            PolicyName::Agent => "agent",
            PolicyName::AgentSampled => "agent_sampled",
            PolicyName::AgentContinual => "agent_continual",
            PolicyName::Threshold => "threshold",
            PolicyName::AlwaysCall => "always_call",
            PolicyName::NeverCall => "never_call",
            PolicyName::Expert => "expert",
        }
    }
}

/// A policy with its parameter, as it is run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub policy: PolicyName,
    pub offset: Option<f64>,
    pub consecutive: Option<usize>,
    /// Expert: the rule, chosen on the development datasets, on their
    /// frontier.
    pub expert: Option<ExpertRow>,
}

impl Run {
    /// DINAMO-S's own rule, the baseline of the comparison columns.
    pub fn is_baseline(&self) -> bool {
        self.policy == PolicyName::Threshold
            && self.offset == Some(0.0)
            && self.consecutive == Some(1)
    }

    /// One of the agent's rows (it needs the observation).
    pub fn is_agent(&self) -> bool {
        matches!(
            self.policy,
            PolicyName::Agent | PolicyName::AgentSampled | PolicyName::AgentContinual
        )
    }

    /// The policy's name in the tables: a rule family's chosen rule is
    /// named after the family (`expert`, `logistic`, `boosted`), the other
    /// rules of its frontier `<family>_frontier`.
    pub fn name(&self) -> &'static str {
        match &self.expert {
            Some(e) => match (e.rule.family(), e.chosen) {
                ("logistic", true) => "logistic",
                ("logistic", false) => "logistic_frontier",
                ("boosted", true) => "boosted",
                ("boosted", false) => "boosted_frontier",
                (_, true) => "expert",
                (_, false) => "expert_frontier",
            },
            None => self.policy.name(),
        }
    }
}

/// One (policy, dataset) episode.
pub struct Episode {
    pub run: Run,
    pub dataset: i64,
    pub tally: Tally,
    pub alpha: f64,
    pub threshold: f64,
}

/// The summary table (one row per policy) and a line per policy for the log.
pub fn summary(
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
                keys.push(e.run.clone());
                keys.len() - 1
            }
        };
        by_run.entry(k).or_default().push(&e.tally);
    }
    let n_data = by_run.values().next().map_or(0, Vec::len);
    let base = keys.iter().position(Run::is_baseline);
    let sums_of = |pick: &[usize]| -> Vec<Totals> {
        (0..keys.len())
            .map(|k| {
                let mut s = Totals::default();
                for &d in pick {
                    s.add(by_run[&k][d]);
                }
                s
            })
            .collect()
    };
    let all: Vec<usize> = (0..n_data).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Every policy's totals on every resample of the datasets, once.
    let totals = sums_of(&all);
    let boot: Vec<Vec<Totals>> = (0..bootstrap)
        .map(|_| {
            let pick: Vec<usize> = (0..n_data).map(|_| rng.random_range(0..n_data)).collect();
            sums_of(&pick)
        })
        .collect();
    let family = |keep: &dyn Fn(&Run) -> bool| -> Vec<usize> {
        (0..keys.len()).filter(|&k| keep(&keys[k])).collect()
    };
    let thresholds = family(&|r| r.policy == PolicyName::Threshold);
    // The frontier of the hand rules, of the classifiers, and of every
    // tuned baseline together (the best tuned baseline).
    let on_frontier = |r: &Run, hand: Option<bool>| {
        r.expert
            .as_ref()
            .is_some_and(|e| e.frontier && hand.is_none_or(|h| (e.rule.family() == "expert") == h))
    };
    let experts = family(&|r| on_frontier(r, Some(true)));
    let classifiers = family(&|r| on_frontier(r, Some(false)));
    let best = family(&|r| on_frontier(r, None));
    let n = keys.len();
    let mut floats: Vec<Vec<Option<f64>>> = vec![Vec::new(); 6 * 3 + 26];
    for k in 0..n {
        let point = metrics(&totals[k], base.map(|b| &totals[b]));
        let mut replicas: Vec<Vec<f64>> = vec![Vec::new(); 6];
        let mut expert_replicas: Vec<Vec<f64>> = vec![Vec::new(); 2];
        let mut best_replicas: Vec<Vec<f64>> = vec![Vec::new(); 2];
        let mut change_replicas: Vec<f64> = Vec::new();
        let mut adaptation_replicas: Vec<f64> = Vec::new();
        for sums in &boot {
            change_replicas.extend(sums[k].false_alarms_per_change());
            adaptation_replicas.extend(sums[k].adaptation_time());
            let m = metrics(&sums[k], base.map(|b| &sums[b]));
            for (v, r) in m.iter().zip(replicas.iter_mut()) {
                r.extend(*v);
            }
            let e = expert_comparison(sums, &experts, k);
            for (v, r) in e.iter().zip(expert_replicas.iter_mut()) {
                r.extend(*v);
            }
            let e = expert_comparison(sums, &best, k);
            for (v, r) in e.iter().zip(best_replicas.iter_mut()) {
                r.extend(*v);
            }
        }
        for (i, (p, r)) in point.iter().zip(replicas).enumerate() {
            let [lo, hi] = interval(r, bootstrap, *p);
            floats[i].push(*p);
            floats[6 + 2 * i].push(lo);
            floats[7 + 2 * i].push(hi);
        }
        let s = &totals[k];
        let (calls, missed) = (s.calls_per_1000(), s.missed_rate());
        let mut col = 18;
        let mut push = |v: Option<f64>| {
            floats[col].push(v);
            col += 1;
        };
        push(
            (regime == Regime::Offline)
                .then(|| s.good_rejected_rate())
                .flatten(),
        );
        for members in [&thresholds, &experts] {
            push(calls.and_then(|c| efficiency_at_calls(&totals, members, c)));
            push(missed.and_then(|m| calls_at_missed(&totals, members, m)));
        }
        let point = expert_comparison(&totals, &experts, k);
        for (p, r) in point.iter().zip(expert_replicas) {
            let [lo, hi] = interval(r, bootstrap, *p);
            push(*p);
            push(lo);
            push(hi);
        }
        push((regime == Regime::Online && s.true_alarms > 0.0).then(|| s.delay / s.true_alarms));
        let per_change = s.false_alarms_per_change();
        let [lo, hi] = interval(change_replicas, bootstrap, per_change);
        push(per_change);
        push(lo);
        push(hi);
        push(calls.and_then(|c| efficiency_at_calls(&totals, &classifiers, c)));
        push(missed.and_then(|m| calls_at_missed(&totals, &classifiers, m)));
        let point = expert_comparison(&totals, &best, k);
        for (p, r) in point.iter().zip(best_replicas) {
            let [lo, hi] = interval(r, bootstrap, *p);
            push(*p);
            push(lo);
            push(hi);
        }
        let adaptation = s.adaptation_time();
        let [lo, hi] = interval(adaptation_replicas, bootstrap, adaptation);
        push(adaptation);
        push(lo);
        push(hi);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(keys.iter().map(Run::name))),
        Arc::new(Float64Array::from_iter(keys.iter().map(|r| r.offset))),
        Arc::new(Int64Array::from_iter(
            keys.iter().map(|r| r.consecutive.map(|k| k as i64)),
        )),
        Arc::new(StringArray::from_iter(
            keys.iter()
                .map(|r| r.expert.as_ref().map(|e| e.rule.label())),
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
            let rule = match (r.offset, r.consecutive, &r.expert) {
                (Some(o), Some(c), _) => format!(" (offset {o}, {c} in a row)"),
                (_, _, Some(e)) => format!(" ({})", e.rule.label()),
                _ => String::new(),
            };
            format!(
                "{}{rule}: calls per 1000 runs {}, missed-bad rate {}, good efficiency {}",
                r.name(),
                fmt(floats[1][k]),
                fmt(floats[2][k]),
                fmt(floats[3][k])
            )
        })
        .collect();
    columns.extend(
        floats
            .into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    Ok((RecordBatch::try_new(summary_schema(), columns)?, lines))
}

/// The episodes table: one row per (policy, dataset).
pub fn episodes_batch(regime: Regime, episodes: &[Episode]) -> Result<RecordBatch> {
    let int = |f: fn(&Tally) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            episodes.iter().map(|e| f(&e.tally) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            episodes.iter().map(|e| e.run.name()),
        )),
        Arc::new(Float64Array::from_iter(
            episodes.iter().map(|e| e.run.offset),
        )),
        Arc::new(Int64Array::from_iter(
            episodes.iter().map(|e| e.run.consecutive.map(|k| k as i64)),
        )),
        Arc::new(StringArray::from_iter(
            episodes
                .iter()
                .map(|e| e.run.expert.as_ref().map(|x| x.rule.label())),
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
        int(|t| t.rapid_changes),
        int(|t| t.false_alarms_after_change),
        int(|t| t.adaptations),
        int(|t| t.adaptation_runs),
        Arc::new(Float64Array::from_iter_values(
            episodes.iter().map(|e| e.alpha),
        )),
        Arc::new(Float64Array::from_iter_values(
            episodes.iter().map(|e| e.threshold),
        )),
    ];
    Ok(RecordBatch::try_new(episodes_schema(), columns)?)
}
