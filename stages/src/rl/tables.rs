//! The tables that pass between the RL stages (the agent's models table)
//! and the ones they write for SQL (learning curve, episodes, summary), and
//! the runs input both stages read.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::env::{EnvConfig, Regime};
use super::ppo::PpoConfig;
use crate::dinamo::DatasetGroups;
use crate::dinamo::scores::{DatasetRuns, require_run_columns};
use crate::error::Result;
use crate::input::{Input, require_column};
use dqm_schemas::doc_field;

/// DINAMO-S's epsilon, as the reference stage's default.
const EPSILON: f64 = 1e-9;

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

fn schema(fields: &[(&str, DataType, bool, &str)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t, null, doc)| doc_field(n, t.clone(), *null, doc))
            .collect::<Vec<Field>>(),
    ))
}

/// `rl_train`'s models table: one row, the final policy.
pub fn models_schema() -> SchemaRef {
    schema(&[
        ("regime", DataType::Utf8, false, "offline or online"),
        ("steps", DataType::Int64, false, "Runs acted on in training"),
        (
            "card",
            DataType::Utf8,
            false,
            "Agent card JSON: environment, PPO hyperparameters, observation size, actions, seed",
        ),
        (
            "weights",
            DataType::Binary,
            false,
            "Policy and value networks as a safetensors file",
        ),
    ])
}

/// `rl_train`'s learning curve: one row per PPO update.
pub fn curve_schema() -> SchemaRef {
    schema(&[
        ("update", DataType::Int64, false, "PPO update, from 1"),
        (
            "steps",
            DataType::Int64,
            false,
            "Runs acted on so far, all environments",
        ),
        (
            "runs",
            DataType::Int64,
            false,
            "Runs in this update's rollout",
        ),
        (
            "reward_per_run",
            DataType::Float64,
            false,
            "Mean reward per run in the rollout",
        ),
        (
            "calls_per_1000",
            DataType::Float64,
            false,
            "Shifter calls (asks or alarms) per 1000 runs",
        ),
        (
            "missed_bad_rate",
            DataType::Float64,
            true,
            "Bad runs let through without a call / bad runs (offline: accepted; online: faulty runs before the alarm); null without bad runs",
        ),
        (
            "good_efficiency",
            DataType::Float64,
            false,
            "Good runs kept / runs",
        ),
        (
            "policy_loss",
            DataType::Float64,
            false,
            "Clipped surrogate loss, mean over gradient steps",
        ),
        (
            "value_loss",
            DataType::Float64,
            false,
            "Value MSE, mean over gradient steps",
        ),
        ("entropy", DataType::Float64, false, "Policy entropy (nats)"),
        (
            "approx_kl",
            DataType::Float64,
            false,
            "mean(old log p - new log p)",
        ),
        (
            "clip_fraction",
            DataType::Float64,
            false,
            "Fraction of samples with a clipped ratio",
        ),
    ])
}

/// The counts of one policy on one dataset, as `rl_evaluate` writes them.
pub fn episodes_schema() -> SchemaRef {
    schema(&[
        (
            "policy",
            DataType::Utf8,
            false,
            "agent, threshold, always_call or never_call",
        ),
        (
            "offset",
            DataType::Float64,
            true,
            "threshold: flag when ln chi2_nu > DINAMO-S threshold + offset; null for the others",
        ),
        (
            "consecutive",
            DataType::Int64,
            true,
            "threshold: call when this many runs in a row are flagged; null for the others",
        ),
        ("regime", DataType::Utf8, false, "offline or online"),
        ("dataset", DataType::Int64, false, "Dataset (seed)"),
        (
            "runs",
            DataType::Int64,
            false,
            "Runs acted on (after the warm-up)",
        ),
        ("good_runs", DataType::Int64, false, "Good runs among them"),
        (
            "bad_runs",
            DataType::Int64,
            false,
            "Bad runs among them (online: taken with a faulty detector)",
        ),
        ("reward", DataType::Float64, false, "Total reward"),
        (
            "calls",
            DataType::Int64,
            false,
            "Shifter calls: asks (offline) or alarms (online)",
        ),
        ("good_kept", DataType::Int64, false, "Good runs kept"),
        (
            "good_rejected",
            DataType::Int64,
            false,
            "Offline: good runs rejected",
        ),
        (
            "missed_bad",
            DataType::Int64,
            false,
            "Offline: bad runs accepted; online: faulty runs taken before an alarm",
        ),
        (
            "faults",
            DataType::Int64,
            false,
            "Online: faults that started",
        ),
        (
            "true_alarms",
            DataType::Int64,
            false,
            "Online: alarms on a faulty detector",
        ),
        (
            "false_alarms",
            DataType::Int64,
            false,
            "Online: alarms on a working detector",
        ),
        (
            "redundant_calls",
            DataType::Int64,
            false,
            "Online: alarms during a repair",
        ),
        (
            "detection_delay",
            DataType::Int64,
            false,
            "Online: runs from each fault's start to its alarm, summed",
        ),
        (
            "reference_updates",
            DataType::Int64,
            false,
            "Confirmed good runs folded into the DINAMO-S reference",
        ),
        (
            "alpha",
            DataType::Float64,
            false,
            "DINAMO-S alpha (tuned on the warm-up)",
        ),
        (
            "threshold",
            DataType::Float64,
            false,
            "DINAMO-S threshold on ln chi2_nu (tuned on the warm-up)",
        ),
    ])
}

/// One row per policy (and threshold offset): totals over the datasets,
/// with 95 % intervals from a bootstrap over datasets, and the paired
/// comparison with the DINAMO-S threshold baseline (offset 0).
pub fn summary_schema() -> SchemaRef {
    let mut f: Vec<(&str, DataType, bool, &str)> = vec![
        ("policy", DataType::Utf8, false, "Policy"),
        (
            "offset",
            DataType::Float64,
            true,
            "Threshold offset (threshold policy)",
        ),
        (
            "consecutive",
            DataType::Int64,
            true,
            "Flagged runs in a row before a call (threshold policy)",
        ),
        ("regime", DataType::Utf8, false, "offline or online"),
        ("datasets", DataType::Int64, false, "Datasets evaluated"),
        (
            "runs",
            DataType::Int64,
            false,
            "Runs acted on, all datasets",
        ),
    ];
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
        f.push((name, DataType::Float64, true, doc));
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
    let mut fields: Vec<Field> = f
        .iter()
        .map(|(n, t, null, doc)| doc_field(n, t.clone(), *null, doc))
        .collect();
    fields.extend(
        bounds
            .iter()
            .map(|(n, doc)| doc_field(n, DataType::Float64, true, doc)),
    );
    fields.push(doc_field(
        "threshold_efficiency_at_same_calls",
        DataType::Float64,
        true,
        "The highest good efficiency of the threshold rules (every offset and streak) calling at most this policy's calls per 1000 (null: none does)",
    ));
    fields.push(doc_field(
        "threshold_calls_at_same_missed",
        DataType::Float64,
        true,
        "The fewest calls per 1000 of the threshold rules missing at most this policy's missed-bad rate (null: none does)",
    ));
    fields.push(doc_field(
        "mean_detection_delay",
        DataType::Float64,
        true,
        "Online: mean runs from a fault's start to its alarm (null offline or without a true alarm)",
    ));
    Arc::new(Schema::new(fields))
}
