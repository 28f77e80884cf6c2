//! Tuning a family of baseline rules on development datasets, shared by
//! `rl_tune_rules` (the hand rules) and `rl_tune_classifiers` (the
//! classifiers' decisions): every rule is played on every dataset in the
//! agent's environment; per family the rule with the highest reward per
//! run is chosen, and the rules on the frontier are marked for
//! `rl_evaluate` to mix on the test datasets.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use rayon::prelude::*;

use super::env::Warmup;
use super::env_config::{EnvConfig, Regime};
use super::frontier::Frontier;
use super::rules::{ExpertRule, play};
use super::tables::{AgentCard, Datasets, rules_schema};
use super::totals::Totals;
use crate::dinamo::tables::DatasetRuns;
use crate::error::{Result, StageError};
use crate::input::Input;
use crate::stage::Progress;

/// The datasets of `input` with DINAMO-S tuned on their warm-up; a dataset
/// of the agent's training stream is refused (`purpose`: what they are for).
pub fn development_datasets(
    input: &Input,
    card: &AgentCard,
    purpose: &str,
) -> Result<Vec<(Arc<DatasetRuns>, Warmup)>> {
    let mut out = Vec::new();
    let mut reader = Datasets::new(input);
    while let Some(data) = reader.next_dataset()? {
        if card.datasets.contains(&data.dataset) {
            return Err(StageError::data(format!(
                "input `{}`: dataset {} was in the agent's training stream; {purpose} on development datasets (other seeds)",
                input.name, data.dataset
            )));
        }
        let warmup = Warmup::tune(&card.env, &data)?;
        out.push((data, warmup));
    }
    if out.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no runs to tune on",
            input.name
        )));
    }
    Ok(out)
}

/// Every rule's totals over the datasets, played on both cores.
pub fn play_all(
    env: &EnvConfig,
    datasets: &[(Arc<DatasetRuns>, Warmup)],
    rules: &[ExpertRule],
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<Totals>> {
    rules
        .par_iter()
        .map(|rule| {
            let mut t = Totals::default();
            for (data, warmup) in datasets {
                t.add(&play(env, data, seed, warmup, rule.clone())?);
            }
            progress.inc(1);
            Ok(t)
        })
        .collect()
}

/// Which rules are on the frontier of `totals`: offline, calls against
/// missed-bad among the rules rejecting at most `max_good_rejected` of the
/// good runs; online, calls against good efficiency.
pub fn on_frontier(regime: Regime, totals: &[Totals], max_good_rejected: f64) -> Vec<bool> {
    let points: Vec<(f64, f64)> = totals
        .iter()
        .map(|t| {
            let calls = t.calls_per_1000().unwrap_or(f64::NAN);
            match regime {
                Regime::Offline if t.good_rejected_rate().unwrap_or(0.0) <= max_good_rejected => {
                    (calls, -t.missed_rate().unwrap_or(0.0))
                }
                Regime::Offline => (f64::NAN, f64::NAN),
                Regime::Online => (calls, t.efficiency().unwrap_or(f64::NAN)),
            }
        })
        .collect();
    let mut flags = vec![false; totals.len()];
    if let Some(f) = Frontier::new(&points) {
        for &i in f.vertices() {
            flags[i] = true;
        }
    }
    flags
}

/// Per family of rules, the one with the highest reward per run (the
/// agent's objective; the first of equals).
pub fn chosen_per_family(rules: &[ExpertRule], totals: &[Totals]) -> Vec<bool> {
    let mut chosen = vec![false; rules.len()];
    let mut families: Vec<&str> = Vec::new();
    for r in rules {
        if !families.contains(&r.family()) {
            families.push(r.family());
        }
    }
    for family in families {
        let best = (0..rules.len())
            .filter(|&k| rules[k].family() == family)
            .max_by(|&a, &b| {
                let r = |k: usize| totals[k].reward_per_run().unwrap_or(f64::NEG_INFINITY);
                r(a).total_cmp(&r(b)).then(b.cmp(&a))
            });
        if let Some(k) = best {
            chosen[k] = true;
        }
    }
    chosen
}

/// The rules table (`rules_schema`).
pub fn rules_batch(
    regime: Regime,
    rules: &[ExpertRule],
    totals: &[Totals],
    chosen: &[bool],
    frontier: &[bool],
    n_datasets: usize,
) -> Result<RecordBatch> {
    let n = rules.len();
    let metric = |f: fn(&Totals) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(totals.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![regime.name(); n])),
        Arc::new(StringArray::from_iter_values(
            rules.iter().map(|r| r.family()),
        )),
        Arc::new(StringArray::from_iter_values(
            rules.iter().map(|r| r.label()),
        )),
        Arc::new(StringArray::from_iter_values(rules.iter().map(|r| {
            serde_json::to_string(r).expect("plain data serializes")
        }))),
        Arc::new(Int64Array::from(vec![n_datasets as i64; n])),
        Arc::new(Int64Array::from_iter_values(
            totals.iter().map(|t| t.runs as i64),
        )),
        metric(Totals::reward_per_run),
        metric(Totals::calls_per_1000),
        metric(Totals::missed_rate),
        metric(Totals::efficiency),
        metric(Totals::good_rejected_rate),
        Arc::new(BooleanArray::from(chosen.to_vec())),
        Arc::new(BooleanArray::from(frontier.to_vec())),
    ];
    Ok(RecordBatch::try_new(rules_schema(), columns)?)
}
