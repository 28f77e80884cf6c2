//! `rl_tune_rules`: the expert rules of [`super::rules`] tuned on
//! development datasets in the agent's own environment (read from its
//! card): every rule of a grid is played on every dataset; the rule with
//! the highest reward per run (the agent's objective) is `chosen`, and the
//! rules on the grid's frontier (calls against missed-bad offline, calls
//! against good efficiency online) are marked for `rl_evaluate` to mix on
//! the test datasets.

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::agent::read_agent;
use super::env_config::Regime;
use super::rules::{ExpertRule, OfflineRule, OnlineRule};
use super::tables::{require_runs, rules_schema};
use super::tuning::{chosen_per_family, development_datasets, on_frontier, play_all, rules_batch};
use crate::error::{Result, bad_param, within};
use crate::nn::require_models;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// The offline grid: every combination is one rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineGrid {
    /// Ask when the score (ln χ²_ν − DINAMO-S threshold) is above this.
    pub ask_above: Vec<f64>,
    /// Reject without asking above `ask_above` + this (null: never).
    pub reject_margin: Vec<Option<f64>>,
    /// Ask when the largest downward pull is above this (null: never).
    pub pull_ask_above: Vec<Option<f64>>,
    /// Reject when the largest downward pull is above `pull_ask_above` +
    /// this (null: never).
    pub pull_reject_margin: Vec<Option<f64>>,
    /// Ask once the reference has gone this many runs without an update
    /// (null: never).
    pub stale_after: Vec<Option<usize>>,
}

impl Default for OfflineGrid {
    fn default() -> Self {
        Self {
            ask_above: vec![-0.5, 0.0, 0.5, 1.0, 2.0, 3.0],
            reject_margin: vec![Some(1.0), Some(3.0), None],
            pull_ask_above: vec![None, Some(2.0), Some(3.0), Some(4.0), Some(6.0), Some(8.0)],
            pull_reject_margin: vec![Some(4.0), None],
            stale_after: vec![Some(20), Some(50), Some(100), None],
        }
    }
}

impl OfflineGrid {
    /// Checks the grid; each error names its key in `offline:`.
    pub fn validate(&self) -> Result<()> {
        for (name, empty) in [
            ("ask_above", self.ask_above.is_empty()),
            ("reject_margin", self.reject_margin.is_empty()),
            ("pull_ask_above", self.pull_ask_above.is_empty()),
            ("pull_reject_margin", self.pull_reject_margin.is_empty()),
            ("stale_after", self.stale_after.is_empty()),
        ] {
            if empty {
                return bad_param(name, "give at least one value (null is one: never)");
            }
        }
        for (name, margins) in [
            ("reject_margin", &self.reject_margin),
            ("pull_reject_margin", &self.pull_reject_margin),
        ] {
            if margins.iter().flatten().any(|&v| !(v >= 0.0)) {
                return bad_param(name, "margins are non-negative");
            }
        }
        Ok(())
    }
}

/// The online grid: every combination is one rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineGrid {
    /// A run is flagged when its score is above this.
    pub flag_above: Vec<f64>,
    /// `[k, m]`: alarm when k of the last m runs are flagged.
    pub k_of_m: Vec<[usize; 2]>,
    /// Alarm when the largest downward pull is above this (null: never).
    pub pull_alarm_above: Vec<Option<f64>>,
    /// Runs after an alarm without another one.
    pub cooldown: Vec<usize>,
    /// Alarm once the reference has gone this many runs without an update
    /// (null: never).
    pub stale_after: Vec<Option<usize>>,
}

impl Default for OnlineGrid {
    fn default() -> Self {
        Self {
            flag_above: vec![-0.5, 0.0, 0.5, 1.0, 2.0, 3.0],
            k_of_m: vec![[1, 1], [2, 2], [2, 3], [3, 5]],
            pull_alarm_above: vec![None, Some(3.0), Some(4.0), Some(5.0), Some(7.0), Some(10.0)],
            cooldown: vec![0, 2, 5, 10, 20],
            stale_after: vec![Some(20), Some(50), None],
        }
    }
}

impl OnlineGrid {
    /// Checks the grid; each error names its key in `online:`.
    pub fn validate(&self) -> Result<()> {
        for (name, empty) in [
            ("flag_above", self.flag_above.is_empty()),
            ("k_of_m", self.k_of_m.is_empty()),
            ("pull_alarm_above", self.pull_alarm_above.is_empty()),
            ("cooldown", self.cooldown.is_empty()),
            ("stale_after", self.stale_after.is_empty()),
        ] {
            if empty {
                return bad_param(name, "give at least one value (null is one: never)");
            }
        }
        if let Some(&[k, m]) = self.k_of_m.iter().find(|&&[k, m]| k == 0 || k > m) {
            return bad_param(
                "k_of_m",
                format!("[{k}, {m}]: k flagged of the last m runs needs 1 ≤ k ≤ m"),
            );
        }
        Ok(())
    }
}

/// Tunes the expert rule baselines on development datasets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RlTuneRules {
    /// The offline rules (played when the agent's regime is offline).
    pub offline: OfflineGrid,
    /// The online rules.
    pub online: OnlineGrid,
    /// Offline, the frontier holds only rules that reject at most this
    /// fraction of the good runs without asking: a rule may not buy a low
    /// missed-bad rate by throwing good data away.
    pub max_good_rejected: f64,
    /// Seed of the online faults on the development datasets.
    pub seed: u64,
}

impl Default for RlTuneRules {
    fn default() -> Self {
        Self {
            offline: OfflineGrid::default(),
            online: OnlineGrid::default(),
            max_good_rejected: 0.01,
            seed: 1000,
        }
    }
}

impl StageConfig for RlTuneRules {
    const KIND: &'static str = "rl_tune_rules";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "Expert rule baselines (offline bands, online k-of-m with cooldown, pull and staleness triggers) tuned on development datasets in the agent's environment";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "the agent's models table, development runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![super::tables::models_schema(), dqm_schemas::runs::schema()]
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.max_good_rejected) {
            return bad_param(
                "max_good_rejected",
                format!("{} is not a fraction", self.max_good_rejected),
            );
        }
        within("offline", self.offline.validate())?;
        within("online", self.online.validate())?;
        Ok(())
    }
}

impl RlTuneRules {
    /// Every rule of the regime's grid, without repeats.
    pub fn grid(&self, regime: Regime) -> Vec<ExpertRule> {
        let mut rules = Vec::new();
        match regime {
            Regime::Offline => {
                let g = &self.offline;
                for &ask in &g.ask_above {
                    for &margin in &g.reject_margin {
                        for &pull_ask in &g.pull_ask_above {
                            for &pull_margin in &g.pull_reject_margin {
                                for &stale in &g.stale_after {
                                    rules.push(ExpertRule::Offline(OfflineRule {
                                        ask_above: ask,
                                        reject_above: margin.map(|m| ask + m),
                                        pull_ask_above: pull_ask,
                                        pull_reject_above: pull_ask
                                            .zip(pull_margin)
                                            .map(|(a, m)| a + m),
                                        stale_after: stale,
                                    }));
                                }
                            }
                        }
                    }
                }
            }
            Regime::Online => {
                let g = &self.online;
                for &flag in &g.flag_above {
                    for &[k, m] in &g.k_of_m {
                        for &pull in &g.pull_alarm_above {
                            for &cooldown in &g.cooldown {
                                for &stale in &g.stale_after {
                                    rules.push(ExpertRule::Online(OnlineRule {
                                        flag_above: flag,
                                        k,
                                        m,
                                        pull_alarm_above: pull,
                                        cooldown,
                                        stale_after: stale,
                                    }));
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut unique: Vec<ExpertRule> = Vec::with_capacity(rules.len());
        for r in rules {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        unique
    }
}

impl Stage for RlTuneRules {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_models(&inputs[0], "models", "the models table of `rl_train`")?;
        require_runs(&inputs[1], "runs", Regime::Offline)?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: rules_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (card, _) = read_agent(&ctx.inputs[0])?;
        let env = &card.env;
        let regime = env.regime;
        require_runs(&ctx.inputs[1].schema, &ctx.inputs[1].name, regime)?;
        let datasets = development_datasets(&ctx.inputs[1], &card, "tune the rules")?;
        let rules = self.grid(regime);
        let progress = ctx.reporter.progress(rules.len() as u64, "rules");
        let totals = play_all(env, &datasets, &rules, self.seed, progress.as_ref())?;
        let frontier = on_frontier(regime, &totals, self.max_good_rejected);
        let chosen = chosen_per_family(&rules, &totals);
        let best = chosen.iter().position(|&c| c).expect("a non-empty grid");
        ctx.reporter.info(&format!(
            "{} rules on {} development datasets; chosen (highest reward per run): {}, {:.3} per run, {:.1} calls per 1000; {} on the frontier",
            rules.len(),
            datasets.len(),
            rules[best].label(),
            totals[best].reward_per_run().unwrap_or(f64::NAN),
            totals[best].calls_per_1000().unwrap_or(f64::NAN),
            frontier.iter().filter(|&&f| f).count()
        ));
        let batch = rules_batch(regime, &rules, &totals, &chosen, &frontier, datasets.len())?;
        ctx.output.write("main", batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::rl::test_support::{runs_input, small};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    #[test]
    fn grid_counts_and_bad_grids_are_refused() {
        let t = RlTuneRules::default();
        // 6 × 3 × (1 + 5 × 2) × 4: null pull_ask makes both margins one rule.
        assert_eq!(t.grid(Regime::Offline).len(), 6 * 3 * 11 * 4);
        assert_eq!(t.grid(Regime::Online).len(), 6 * 4 * 6 * 5 * 3);
        let mut bad = RlTuneRules::default();
        bad.online.k_of_m = vec![[3, 2]];
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("online.k_of_m"), "{e}");
        let mut bad = RlTuneRules::default();
        bad.offline.stale_after.clear();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("offline.stale_after")
        );
    }

    #[test]
    fn tuned_on_development_datasets_the_chosen_rule_is_the_best_and_on_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for regime in [Regime::Offline, Regime::Online] {
            let train = small(regime, 1);
            let models = run_in_memory(&train, &[runs_input(vec![1, 2], dir, "train")])
                .unwrap()
                .table("models");
            let models = input_from_batch("models", &models, &dir.join("models.parquet")).unwrap();
            let tune = RlTuneRules {
                offline: OfflineGrid {
                    ask_above: vec![0.0, 1.0],
                    reject_margin: vec![None],
                    pull_ask_above: vec![None],
                    pull_reject_margin: vec![None],
                    stale_after: vec![None, Some(20)],
                },
                online: OnlineGrid {
                    flag_above: vec![0.0, 2.0],
                    k_of_m: vec![[1, 1], [2, 3]],
                    pull_alarm_above: vec![None],
                    cooldown: vec![0],
                    stale_after: vec![None],
                },
                ..Default::default()
            };
            let dev = runs_input(vec![21, 22], dir, "dev");
            let table = run_in_memory(&tune, &[models.clone(), dev])
                .unwrap()
                .table("main");
            assert_eq!(table.num_rows(), 4);
            let f = |name: &str| {
                table
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .clone()
            };
            let chosen = table.column_by_name("chosen").unwrap().as_boolean().clone();
            let reward = f("reward_per_run");
            let best = (0..4).map(|i| reward.value(i)).fold(f64::MIN, f64::max);
            assert_eq!(chosen.true_count(), 1);
            let c = (0..4).find(|&i| chosen.value(i)).unwrap();
            assert_eq!(reward.value(c), best);
            // Each rule's spec reads back as the rule of its label.
            let spec = table.column_by_name("spec").unwrap().as_string::<i32>();
            let label = table.column_by_name("rule").unwrap().as_string::<i32>();
            for i in 0..4 {
                let rule: ExpertRule = serde_json::from_str(spec.value(i)).unwrap();
                assert_eq!(rule.label(), label.value(i));
                assert_eq!(rule.regime(), regime);
            }
            // The cheapest rule of the frontier calls no more than any rule.
            let frontier = table
                .column_by_name("frontier")
                .unwrap()
                .as_boolean()
                .clone();
            let calls = f("calls_per_1000");
            let min_calls = (0..4).map(|i| calls.value(i)).fold(f64::MAX, f64::min);
            if regime == Regime::Online {
                assert!((0..4).any(|i| frontier.value(i) && calls.value(i) == min_calls));
            }
            assert!(!f("good_rejected_rate").is_null(0) || regime == Regime::Online);
            // The agent's training datasets are refused.
            let leak = runs_input(vec![2], dir, "leak");
            let e = run_in_memory(&tune, &[models, leak])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("dataset 2 ") && e.contains("development"), "{e}");
        }
    }
}
