//! The tables that pass between the RL stages (the agent's models table)
//! and the ones they write for SQL (learning curve, episodes, summary), and
//! the runs input both stages read.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::env_config::{EnvConfig, Regime};
use super::ppo::PpoConfig;
use crate::dinamo::reference::EPSILON;
use crate::dinamo::tables::{DatasetGroups, DatasetRuns, require_run_columns};
use crate::error::Result;
use crate::input::{Input, require_column};
use dqm_schemas::{column, nullable, schema_of};

/// Plan-time check of a runs table (synth_runs' schema): the columns an
/// environment of `regime` reads.
pub fn require_runs(schema: &SchemaRef, name: &str, regime: Regime) -> Result<()> {
    require_run_columns(
        schema,
        name,
        "an RL environment plays a DINAMO dataset's runs",
    )?;
    if regime == Regime::Online {
        let why = "the online regime redraws runs under faults from the generator's truth";
        for c in ["mu", "sigma", "lo", "hi"] {
            require_column(schema, name, c, why, "a number", |t| t.is_floating())?;
        }
    }
    Ok(())
}

/// The datasets of a runs table, parsed one at a time in input order, so a
/// stage holds the few it plays, not the table.
pub struct Datasets<'a> {
    input: &'a Input,
    groups: DatasetGroups<'a>,
}

impl<'a> Datasets<'a> {
    pub fn new(input: &'a Input) -> Self {
        Self {
            input,
            groups: DatasetGroups::new(input),
        }
    }

    /// The next dataset, or `None` at the end of the table.
    pub fn next_dataset(&mut self) -> Result<Option<Arc<DatasetRuns>>> {
        let Some((id, batch)) = self.groups.next_chunk(1)?.pop() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(DatasetRuns::parse(
            id,
            &batch,
            &self.input.name,
            EPSILON,
        )?)))
    }

    /// Starts again from the first dataset.
    pub fn rewind(&mut self) {
        self.groups = DatasetGroups::new(self.input);
    }
}

/// What evaluation needs besides the weights: the environment the agent
/// was trained in and its network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCard {
    pub env: EnvConfig,
    pub ppo: PpoConfig,
    pub n_obs: usize,
    pub actions: Vec<String>,
    pub seed: u64,
    pub steps: u64,
    pub updates: u64,
    pub datasets: Vec<i64>,
}

/// `rl_train`'s models table: one row, the final policy.
pub fn models_schema() -> SchemaRef {
    schema_of([
        column("regime", DataType::Utf8, "offline or online"),
        column("steps", DataType::Int64, "Runs acted on in training"),
        column(
            "card",
            DataType::Utf8,
            "Agent card JSON: environment, PPO hyperparameters, observation size, actions, seed",
        ),
        column(
            "weights",
            DataType::Binary,
            "Policy and value networks as a safetensors file",
        ),
    ])
}

/// `rl_train`'s learning curve: one row per PPO update.
pub fn curve_schema() -> SchemaRef {
    schema_of([
        column("update", DataType::Int64, "PPO update, from 1"),
        column(
            "steps",
            DataType::Int64,
            "Runs acted on so far, all environments",
        ),
        column("runs", DataType::Int64, "Runs in this update's rollout"),
        column(
            "reward_per_run",
            DataType::Float64,
            "Mean reward per run in the rollout",
        ),
        column(
            "calls_per_1000",
            DataType::Float64,
            "Shifter calls (asks or alarms) per 1000 runs",
        ),
        nullable(
            "missed_bad_rate",
            DataType::Float64,
            "Bad runs let through without a call / bad runs (offline: accepted; online: faulty runs before the alarm); null without bad runs",
        ),
        column(
            "good_efficiency",
            DataType::Float64,
            "Good runs kept / runs",
        ),
        column(
            "policy_loss",
            DataType::Float64,
            "Clipped surrogate loss, mean over gradient steps",
        ),
        column(
            "value_loss",
            DataType::Float64,
            "Value MSE, mean over gradient steps",
        ),
        column("entropy", DataType::Float64, "Policy entropy (nats)"),
        column(
            "approx_kl",
            DataType::Float64,
            "mean(old log p - new log p)",
        ),
        column(
            "clip_fraction",
            DataType::Float64,
            "Fraction of samples with a clipped ratio",
        ),
    ])
}

/// The counts of one policy on one dataset, as `rl_evaluate` writes them.
pub fn episodes_schema() -> SchemaRef {
    schema_of([
        column(
            "policy",
            DataType::Utf8,
            "agent, threshold, expert (the rule chosen on development datasets), expert_frontier (a rule of their frontier), always_call or never_call",
        ),
        nullable(
            "offset",
            DataType::Float64,
            "threshold: flag when ln chi2_nu > DINAMO-S threshold + offset; null for the others",
        ),
        nullable(
            "consecutive",
            DataType::Int64,
            "threshold: call when this many runs in a row are flagged; null for the others",
        ),
        nullable(
            "rule",
            DataType::Utf8,
            "expert, expert_frontier: the rule (`rl_tune_rules`' label); null for the others",
        ),
        column("regime", DataType::Utf8, "offline or online"),
        column("dataset", DataType::Int64, "Dataset (seed)"),
        column("runs", DataType::Int64, "Runs acted on (after the warm-up)"),
        column("good_runs", DataType::Int64, "Good runs among them"),
        column(
            "bad_runs",
            DataType::Int64,
            "Bad runs among them (online: taken with a faulty detector)",
        ),
        column("reward", DataType::Float64, "Total reward"),
        column(
            "calls",
            DataType::Int64,
            "Shifter calls: asks (offline) or alarms (online)",
        ),
        column("good_kept", DataType::Int64, "Good runs kept"),
        column(
            "good_rejected",
            DataType::Int64,
            "Offline: good runs rejected",
        ),
        column(
            "missed_bad",
            DataType::Int64,
            "Offline: bad runs accepted; online: faulty runs taken before an alarm",
        ),
        column("faults", DataType::Int64, "Online: faults that started"),
        column(
            "true_alarms",
            DataType::Int64,
            "Online: alarms on a faulty detector",
        ),
        column(
            "false_alarms",
            DataType::Int64,
            "Online: alarms on a working detector",
        ),
        column(
            "redundant_calls",
            DataType::Int64,
            "Online: alarms during a repair",
        ),
        column(
            "detection_delay",
            DataType::Int64,
            "Online: runs from each fault's start to its alarm, summed",
        ),
        column(
            "reference_updates",
            DataType::Int64,
            "Confirmed good runs folded into the DINAMO-S reference",
        ),
        column(
            "rapid_changes",
            DataType::Int64,
            "Good rapid changes of the conditions met (the runs table's `rapid_change`; 0 without it)",
        ),
        column(
            "false_alarms_after_change",
            DataType::Int64,
            "Calls on good runs (online: false alarms; offline: good runs asked about or rejected) within 20 runs of a rapid change, its own run included",
        ),
        column(
            "adaptations",
            DataType::Int64,
            "Rapid changes after which the policy kept a good run without a call",
        ),
        column(
            "adaptation_runs",
            DataType::Int64,
            "Good runs called about after those changes before the first one kept without a call, summed",
        ),
        column(
            "alpha",
            DataType::Float64,
            "DINAMO-S alpha (tuned on the warm-up)",
        ),
        column(
            "threshold",
            DataType::Float64,
            "DINAMO-S threshold on ln chi2_nu (tuned on the warm-up)",
        ),
    ])
}

/// The columns that name a policy row in `rl_evaluate`'s tables.
pub fn policy_key_fields() -> Vec<Field> {
    vec![
        column("policy", DataType::Utf8, "Policy"),
        nullable(
            "offset",
            DataType::Float64,
            "Threshold offset (threshold policy)",
        ),
        nullable(
            "consecutive",
            DataType::Int64,
            "Flagged runs in a row before a call (threshold policy)",
        ),
        nullable(
            "rule",
            DataType::Utf8,
            "The baseline rule (expert, logistic, boosted and their *_frontier policies)",
        ),
    ]
}

/// A figure and its 95 % interval's ends (`interval`: how it is drawn).
fn with_interval(fields: &mut Vec<Field>, name: &str, doc: &str, interval: &str) {
    fields.push(nullable(name, DataType::Float64, doc));
    fields.push(nullable(
        &format!("{name}_lo"),
        DataType::Float64,
        &format!("Lower end of its 95 % {interval}"),
    ));
    fields.push(nullable(
        &format!("{name}_hi"),
        DataType::Float64,
        "Upper end",
    ));
}

/// One row per policy (and threshold offset): totals over the datasets,
/// with 95 % intervals from a bootstrap over datasets, and the paired
/// comparison with the DINAMO-S threshold baseline (offset 0).
pub fn summary_schema() -> SchemaRef {
    let mut fields: Vec<Field> = policy_key_fields();
    fields.extend([
        column("regime", DataType::Utf8, "offline or online"),
        column("datasets", DataType::Int64, "Datasets evaluated"),
        column("runs", DataType::Int64, "Runs acted on, all datasets"),
    ]);
    for (name, doc) in [
        ("reward_per_run", "Mean reward per run"),
        ("calls_per_1000", "Shifter calls per 1000 runs"),
        (
            "missed_bad_rate",
            "Bad runs let through without a call / bad runs",
        ),
        ("good_efficiency", "Good runs kept / runs"),
        (
            "calls_ratio",
            "Calls / the threshold baseline's calls on the same datasets",
        ),
        (
            "missed_bad_diff",
            "Missed-bad rate minus the threshold baseline's, same datasets",
        ),
    ] {
        fields.push(nullable(name, DataType::Float64, doc));
    }
    let bounds: Vec<(String, String)> = [
        "reward_per_run",
        "calls_per_1000",
        "missed_bad_rate",
        "good_efficiency",
        "calls_ratio",
        "missed_bad_diff",
    ]
    .iter()
    .flat_map(|m| {
        [
            (
                format!("{m}_lo"),
                format!("Lower end of the 95 % bootstrap interval of {m}"),
            ),
            (
                format!("{m}_hi"),
                format!("Upper end of the 95 % bootstrap interval of {m}"),
            ),
        ]
    })
    .collect();
    fields.extend(
        bounds
            .iter()
            .map(|(n, doc)| nullable(n, DataType::Float64, doc)),
    );
    fields.push(nullable(
        "good_rejected_rate",
        DataType::Float64,
        "Offline: good runs rejected without asking / good runs",
    ));
    for (family, which) in [
        ("threshold", "the threshold rules (every offset and streak)"),
        (
            "expert",
            "the hand rules (the chosen one and the development frontier of `rl_tune_rules`)",
        ),
    ] {
        fields.push(nullable(
            &format!("{family}_efficiency_at_same_calls"),
            DataType::Float64,
            &format!("The highest good efficiency of a mixture of {which} calling at most this policy's calls per 1000: the frontier interpolated between rules (null: every rule calls more)")));
        fields.push(nullable(
            &format!("{family}_calls_at_same_missed"),
            DataType::Float64,
            &format!("The fewest calls per 1000 of a mixture of {which} missing at most this policy's missed-bad rate (null: none does)")));
    }
    let paired =
        "paired bootstrap interval over datasets (the frontier recomputed on each resample)";
    for (name, doc) in [
        (
            "expert_calls_ratio",
            "Offline: calls / expert_calls_at_same_missed (the hand rules only; the goal is on best_calls_ratio)",
        ),
        (
            "expert_efficiency_diff",
            "Online: good efficiency − expert_efficiency_at_same_calls (the hand rules only; the goal is on best_efficiency_diff)",
        ),
    ] {
        with_interval(&mut fields, name, doc, paired);
    }
    fields.push(nullable(
        "mean_detection_delay",
        DataType::Float64,
        "Online: mean runs from a fault's start to its alarm (null offline or without a true alarm)"));
    with_interval(
        &mut fields,
        "false_alarms_per_change",
        "Calls on good runs within 20 runs of a good rapid change (online: false alarms; offline: asked or rejected), per rapid change (null without rapid changes)",
        "bootstrap interval over datasets",
    );
    fields.push(nullable(
        "classifier_efficiency_at_same_calls",
        DataType::Float64,
        "As expert_efficiency_at_same_calls, for the classifiers' decisions (`rl_tune_classifiers`: the chosen ones and their development frontier)"));
    fields.push(nullable(
        "classifier_calls_at_same_missed",
        DataType::Float64,
        "As expert_calls_at_same_missed, for the classifiers' decisions",
    ));
    for (name, doc) in [
        (
            "best_calls_ratio",
            "Offline: calls / the fewest calls of a mixture of every tuned baseline (hand rules and classifiers) missing at most this policy's missed-bad rate (the goal: ≤ 0.7)",
        ),
        (
            "best_efficiency_diff",
            "Online: good efficiency − the best efficiency of a mixture of every tuned baseline calling at most as often (the goal: ≥ 0.10)",
        ),
    ] {
        with_interval(&mut fields, name, doc, paired);
    }
    with_interval(
        &mut fields,
        "adaptation_time",
        "DINAMO's adaptation time of the policy: good runs called about (asked, rejected, alarmed) after a good rapid change before the first one kept without a call, per change (null without rapid changes)",
        "bootstrap interval over datasets",
    );
    Arc::new(Schema::new(fields))
}

/// `rl_tune_rules`' table: one row per rule of the grid, its figures on
/// the development datasets, the chosen rule and the frontier.
pub fn rules_schema() -> SchemaRef {
    schema_of([
        column("regime", DataType::Utf8, "offline or online"),
        column(
            "family",
            DataType::Utf8,
            "expert (hand rules, `rl_tune_rules`), logistic or boosted (classifiers, `rl_tune_classifiers`)",
        ),
        column("rule", DataType::Utf8, "The rule in words"),
        column(
            "spec",
            DataType::Utf8,
            "The rule as JSON (`rl_evaluate` plays it from this)",
        ),
        column("datasets", DataType::Int64, "Development datasets"),
        column("runs", DataType::Int64, "Runs acted on, all datasets"),
        nullable("reward_per_run", DataType::Float64, "Mean reward per run"),
        nullable(
            "calls_per_1000",
            DataType::Float64,
            "Shifter calls per 1000 runs",
        ),
        nullable(
            "missed_bad_rate",
            DataType::Float64,
            "Bad runs let through without a call / bad runs",
        ),
        nullable(
            "good_efficiency",
            DataType::Float64,
            "Good runs kept / runs",
        ),
        nullable(
            "good_rejected_rate",
            DataType::Float64,
            "Offline: good runs rejected without asking / good runs",
        ),
        column(
            "chosen",
            DataType::Boolean,
            "The highest reward per run in its family (the agent's objective): the tuned baseline",
        ),
        column(
            "frontier",
            DataType::Boolean,
            "On the frontier: calls against missed-bad among rules within `max_good_rejected` (offline), calls against good efficiency (online)",
        ),
    ])
}

/// `rl_evaluate`'s `features` table: how well each observation feature
/// alone tells a bad run (offline) or a faulty detector (online) from a
/// good one, on the runs a policy met.
pub fn features_schema() -> SchemaRef {
    schema_of([
        column("policy", DataType::Utf8, "Policy whose runs were observed"),
        column("regime", DataType::Utf8, "offline or online"),
        column("feature", DataType::Int64, "Index in the observation"),
        column("name", DataType::Utf8, "Feature"),
        nullable(
            "auc",
            DataType::Float64,
            "ROC AUC of the feature for bad runs (0.5: no information; 0 or 1: separates alone)",
        ),
        nullable(
            "auc_lo",
            DataType::Float64,
            "Hanley-McNeil 95 % interval, low",
        ),
        nullable("auc_hi", DataType::Float64, "… high"),
        nullable(
            "separation",
            DataType::Float64,
            "max(auc, 1 − auc): how well the feature alone separates, either way",
        ),
        column("bad_runs", DataType::Int64, "Bad (faulty) runs"),
        column("good_runs", DataType::Int64, "Good runs"),
    ])
}
