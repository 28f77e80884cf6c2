//! `rl_tune_classifiers`: the baseline a data scientist would build before
//! an RL agent — a classifier of P(bad | the agent's own observation)
//! trained on the training datasets' labels, with a cost-sensitive
//! decision on it tuned on the development datasets like the expert rules
//! (accept / ask / reject bands offline; an alarm threshold with a
//! cooldown online). The training samples are the runs DINAMO-S's own rule
//! meets on the training datasets (the behaviour before any agent: ask or
//! alarm when a run is flagged); their labels are the truth the agent's
//! reward is computed from. Writes a rules table `rl_evaluate` plays
//! beside `rl_tune_rules`' one.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::agent::read_agent;
use super::classifier::{BoostParams, Boosted, Logistic, Samples, ScoreModel};
use super::env::{Env, Warmup};
use super::env_config::{ACCEPT, ALARM, ASK, CONTINUE, Regime};
use super::rules::{ClassifierRule, Decision, ExpertRule};
use super::tables::{AgentCard, Datasets, require_runs, rules_schema};
use super::tuning::{chosen_per_family, development_datasets, on_frontier, play_all, rules_batch};
use crate::dinamo::tables::DatasetRuns;
use crate::error::{Result, StageError, bad_param, within};
use crate::nn::require_models;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::{auc_interval, roc_auc};
use dqm_schemas::{column, nullable, schema_of};

/// The classifier families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Logistic regression on the standardized observation.
    Logistic,
    /// Gradient-boosted trees.
    Boosted,
}

/// Fits the classifiers and tunes their decisions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RlTuneClassifiers {
    /// Classifier families to fit.
    pub models: Vec<ModelKind>,
    /// Logistic regression's L2 penalty per sample on the weights.
    pub l2: f64,
    /// The boosted trees' settings.
    pub boosted: BoostParams,
    /// Training datasets the samples come from (the first of the input;
    /// 0: all): ~1700 samples each.
    pub max_train_datasets: usize,
    /// Offline: accept when P(bad) is below this.
    pub accept_below: Vec<f64>,
    /// Offline: reject without asking when P(bad) is above this (null:
    /// never).
    pub reject_above: Vec<Option<f64>>,
    /// Online: alarm when P(bad) is above this.
    pub alarm_above: Vec<f64>,
    /// Online: runs after an alarm without another one.
    pub cooldown: Vec<usize>,
    /// Offline, the frontier holds only decisions that reject at most this
    /// fraction of the good runs without asking (as `rl_tune_rules`).
    pub max_good_rejected: f64,
    /// Seed of the online faults (training and development datasets).
    pub seed: u64,
}

impl Default for RlTuneClassifiers {
    fn default() -> Self {
        Self {
            models: vec![ModelKind::Logistic, ModelKind::Boosted],
            l2: 1e-4,
            boosted: BoostParams::default(),
            max_train_datasets: 40,
            accept_below: vec![0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5],
            reject_above: vec![Some(0.5), Some(0.7), Some(0.9), Some(0.97), None],
            alarm_above: vec![0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
            cooldown: vec![0, 2, 5, 10, 20],
            max_good_rejected: 0.01,
            seed: 1000,
        }
    }
}

fn validate_boost(p: &BoostParams) -> Result<()> {
    if p.trees == 0 || p.depth == 0 {
        return bad_param("trees", "trees and depth are at least 1");
    }
    if !(p.learning_rate > 0.0 && p.learning_rate <= 1.0) {
        return bad_param("learning_rate", "must be in (0, 1]");
    }
    if !(p.l2 >= 0.0 && p.min_leaf_weight >= 0.0) {
        return bad_param("l2", "l2 and min_leaf_weight are non-negative");
    }
    if !(2..=u16::MAX as usize).contains(&p.bins) {
        return bad_param("bins", "between 2 and 65535 candidate splits");
    }
    Ok(())
}

impl StageConfig for RlTuneClassifiers {
    const KIND: &'static str = "rl_tune_classifiers";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Classifier baselines (logistic regression, gradient-boosted trees) of P(bad | the agent's observation) trained on the training datasets, with cost-sensitive decisions tuned on development datasets";
    const INPUTS: (usize, usize) = (3, 3);
    const INPUT_ROLES: &'static str =
        "the agent's models table, the training runs, development runs";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![
            super::tables::models_schema(),
            dqm_schemas::runs::schema(),
            dqm_schemas::runs::schema(),
        ]
    }

    fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            return bad_param("models", "name at least one: logistic, boosted");
        }
        if !(self.l2 >= 0.0) {
            return bad_param("l2", "must be non-negative");
        }
        within("boosted", validate_boost(&self.boosted))?;
        let probability = |v: f64| (0.0..=1.0).contains(&v);
        for (name, values) in [
            ("accept_below", self.accept_below.clone()),
            (
                "reject_above",
                self.reject_above.iter().flatten().copied().collect(),
            ),
            ("alarm_above", self.alarm_above.clone()),
        ] {
            if values.iter().any(|&v| !probability(v)) {
                return bad_param(name, "probabilities are in [0, 1]");
            }
        }
        for (name, empty) in [
            ("accept_below", self.accept_below.is_empty()),
            ("reject_above", self.reject_above.is_empty()),
            ("alarm_above", self.alarm_above.is_empty()),
            ("cooldown", self.cooldown.is_empty()),
        ] {
            if empty {
                return bad_param(name, "give at least one value");
            }
        }
        if !probability(self.max_good_rejected) {
            return bad_param("max_good_rejected", "is a fraction");
        }
        Ok(())
    }
}

/// The samples DINAMO-S's own rule meets on `datasets` (with DINAMO-S
/// tuned on their warm-up): its observation, and whether the run is bad,
/// in dataset order.
pub fn behaviour_samples(
    card: &AgentCard,
    datasets: &[(Arc<DatasetRuns>, Warmup)],
    seed: u64,
) -> Result<Samples> {
    let env = &card.env;
    let parts: Vec<Samples> = datasets
        .par_iter()
        .map(|(data, warmup)| {
            let mut env = Env::start(env, data.clone(), seed, warmup.clone())?;
            let mut s = Samples::default();
            while env.remaining() > 0 {
                let obs = env.observation();
                let flagged = env.score() > 0.0;
                let action = match (env.regime(), flagged) {
                    (Regime::Offline, true) => ASK,
                    (Regime::Offline, false) => ACCEPT,
                    (Regime::Online, true) => ALARM,
                    (Regime::Online, false) => CONTINUE,
                };
                let step = env.step(action)?;
                s.push(obs, !step.good);
            }
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let mut all = Samples::default();
    for p in parts {
        all.x.extend(p.x);
        all.bad.extend(p.bad);
    }
    Ok(all)
}

/// One row per fitted classifier: its samples and AUC on them and on the
/// development datasets' samples (same behaviour).
pub fn fit_schema() -> SchemaRef {
    schema_of([
        column("model", DataType::Utf8, "logistic or boosted"),
        column(
            "train_samples",
            DataType::Int64,
            "Training samples (runs DINAMO-S's rule met on the training datasets)",
        ),
        nullable(
            "train_bad_fraction",
            DataType::Float64,
            "Fraction of them bad",
        ),
        nullable(
            "train_auc",
            DataType::Float64,
            "ROC AUC of P(bad) on the training samples (in-sample)",
        ),
        column(
            "dev_samples",
            DataType::Int64,
            "Samples of the development datasets (same behaviour)",
        ),
        nullable("dev_auc", DataType::Float64, "ROC AUC on them"),
        nullable(
            "dev_auc_lo",
            DataType::Float64,
            "Lower end of its 95 % Hanley-McNeil interval",
        ),
        nullable("dev_auc_hi", DataType::Float64, "Upper end"),
    ])
}

fn auc_of(model: &ScoreModel, s: &Samples) -> Option<f64> {
    let p: Vec<f64> = s.x.iter().map(|x| model.probability(x)).collect();
    roc_auc(&p, &s.bad)
}

impl RlTuneClassifiers {
    /// The decision grid of every model.
    fn grid(&self, models: &[ScoreModel], regime: Regime) -> Vec<ExpertRule> {
        let mut decisions = Vec::new();
        match regime {
            Regime::Offline => {
                for &accept_below in &self.accept_below {
                    for &reject_above in &self.reject_above {
                        if reject_above.is_none_or(|r| r > accept_below) {
                            decisions.push(Decision::Offline {
                                accept_below,
                                reject_above,
                            });
                        }
                    }
                }
            }
            Regime::Online => {
                for &alarm_above in &self.alarm_above {
                    for &cooldown in &self.cooldown {
                        decisions.push(Decision::Online {
                            alarm_above,
                            cooldown,
                        });
                    }
                }
            }
        }
        models
            .iter()
            .flat_map(|m| {
                decisions.iter().map(|&decision| {
                    ExpertRule::Classifier(ClassifierRule {
                        model: m.clone(),
                        decision,
                    })
                })
            })
            .collect()
    }
}

impl Stage for RlTuneClassifiers {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_models(&inputs[0], "models", "the models table of `rl_train`")?;
        require_runs(&inputs[1], "train", Regime::Offline)?;
        require_runs(&inputs[2], "dev", Regime::Offline)?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: rules_schema(),
            },
            OutputSpec {
                name: "fit",
                schema: fit_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let (card, _) = read_agent(&ctx.inputs[0])?;
        let regime = card.env.regime;
        for input in &ctx.inputs[1..] {
            require_runs(&input.schema, &input.name, regime)?;
        }
        let dev = development_datasets(&ctx.inputs[2], &card, "tune the classifiers' decisions")?;
        let mut train = Vec::new();
        let mut reader = Datasets::new(&ctx.inputs[1]);
        while let Some(data) = reader.next_dataset()? {
            if dev.iter().any(|(d, _)| d.dataset == data.dataset) {
                return Err(StageError::data(format!(
                    "input `{}`: dataset {} is also a development dataset; train on other seeds",
                    ctx.inputs[1].name, data.dataset
                )));
            }
            train.push(data);
            if train.len() == self.max_train_datasets {
                break;
            }
        }
        if train.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no runs to train on",
                ctx.inputs[1].name
            )));
        }
        let train: Vec<(Arc<DatasetRuns>, Warmup)> = train
            .into_par_iter()
            .map(|d| {
                let warmup = Warmup::tune(&card.env, &d)?;
                Ok((d, warmup))
            })
            .collect::<Result<_>>()?;
        let samples = behaviour_samples(&card, &train, self.seed)?;
        // The development datasets come with their warm-up tuned once.
        let dev_samples = behaviour_samples(&card, &dev, self.seed)?;
        let mut models = Vec::new();
        for kind in &self.models {
            models.push(match kind {
                ModelKind::Logistic => ScoreModel::Logistic(Logistic::fit(&samples, self.l2)),
                ModelKind::Boosted => ScoreModel::Boosted(Boosted::fit(&samples, &self.boosted)),
            });
        }
        let n_bad = dev_samples.bad.iter().filter(|&&b| b).count();
        let n_good = dev_samples.len() - n_bad;
        let mut fit: Vec<[Option<f64>; 4]> = Vec::new();
        for m in &models {
            let (train_auc, dev_auc) = (auc_of(m, &samples), auc_of(m, &dev_samples));
            let interval = dev_auc.map(|a| auc_interval(a, n_bad, n_good));
            ctx.reporter.info(&format!(
                "{}: {} training samples, AUC {:.3} (training) {:.3} (development)",
                m.name(),
                samples.len(),
                train_auc.unwrap_or(f64::NAN),
                dev_auc.unwrap_or(f64::NAN)
            ));
            fit.push([
                train_auc,
                dev_auc,
                interval.map(|i| i.0),
                interval.map(|i| i.1),
            ]);
        }
        let rules = self.grid(&models, regime);
        let progress = ctx.reporter.progress(rules.len() as u64, "decisions");
        let totals = play_all(&card.env, &dev, &rules, self.seed, progress.as_ref())?;
        let frontier = on_frontier(regime, &totals, self.max_good_rejected);
        let chosen = chosen_per_family(&rules, &totals);
        for k in (0..rules.len()).filter(|&k| chosen[k]) {
            ctx.reporter.info(&format!(
                "chosen: {}, {:.3} reward per run, {:.1} calls per 1000",
                rules[k].label(),
                totals[k].reward_per_run().unwrap_or(f64::NAN),
                totals[k].calls_per_1000().unwrap_or(f64::NAN)
            ));
        }
        let n = models.len();
        let bad_fraction = samples.bad.iter().filter(|&&b| b).count() as f64 / samples.len() as f64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                models.iter().map(ScoreModel::name),
            )),
            Arc::new(Int64Array::from(vec![samples.len() as i64; n])),
            Arc::new(Float64Array::from(vec![Some(bad_fraction); n])),
            Arc::new(Float64Array::from_iter(fit.iter().map(|f| f[0]))),
            Arc::new(Int64Array::from(vec![dev_samples.len() as i64; n])),
            Arc::new(Float64Array::from_iter(fit.iter().map(|f| f[1]))),
            Arc::new(Float64Array::from_iter(fit.iter().map(|f| f[2]))),
            Arc::new(Float64Array::from_iter(fit.iter().map(|f| f[3]))),
        ];
        ctx.output
            .write("fit", RecordBatch::try_new(fit_schema(), columns)?)?;
        let batch = rules_batch(regime, &rules, &totals, &chosen, &frontier, dev.len())?;
        ctx.output.write("main", batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::rl::rules::read_rules;
    use crate::rl::test_support::{runs_input, small};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    #[test]
    fn classifiers_are_fitted_on_training_labels_and_tuned_on_development_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for regime in [Regime::Offline, Regime::Online] {
            let mut train = small(regime, 1);
            train.env.faults.p_start = 0.05;
            let runs = runs_input(vec![1, 2], dir, "train");
            let models = run_in_memory(&train, std::slice::from_ref(&runs))
                .unwrap()
                .table("models");
            let models = input_from_batch("models", &models, &dir.join("models.parquet")).unwrap();
            let dev = runs_input(vec![21, 22], dir, "dev");
            let stage = RlTuneClassifiers {
                boosted: BoostParams {
                    trees: 10,
                    ..Default::default()
                },
                accept_below: vec![0.05, 0.2],
                reject_above: vec![Some(0.9), None],
                alarm_above: vec![0.3, 0.6],
                cooldown: vec![0, 5],
                ..Default::default()
            };
            let out = run_in_memory(&stage, &[models.clone(), runs.clone(), dev.clone()]).unwrap();
            // 2 models x 4 decisions, one chosen per model.
            let rules = out.table("main");
            assert_eq!(rules.num_rows(), 8);
            let chosen = rules.column_by_name("chosen").unwrap().as_boolean();
            assert_eq!(chosen.true_count(), 2);
            let fit = out.table("fit");
            assert_eq!(fit.num_rows(), 2);
            // The runs DINAMO-S's rule met, after the warm-up of 50: 100
            // per dataset offline.
            let samples = fit.column_by_name("train_samples").unwrap();
            let samples = samples.as_primitive::<arrow::datatypes::Int64Type>();
            if regime == Regime::Offline {
                assert_eq!(samples.value(0), 200);
            }
            let auc = fit
                .column_by_name("train_auc")
                .unwrap()
                .as_primitive::<Float64Type>();
            for i in 0..2 {
                // Bad runs are told from good ones better than by chance.
                assert!(auc.is_null(i) || auc.value(i) > 0.6, "{}", auc.value(i));
            }
            // The table is one `rl_evaluate` reads: the chosen decisions
            // replay to the figures written.
            let path = dir.join(format!("rules_{}.parquet", regime.name()));
            let input = input_from_batch("rules", &rules, &path).unwrap();
            let rows = read_rules(&input, regime).unwrap();
            assert!(
                rows.iter()
                    .filter(|r| r.chosen)
                    .all(|r| r.rule.regime() == regime)
            );
            let families: Vec<&str> = rows
                .iter()
                .filter(|r| r.chosen)
                .map(|r| r.rule.family())
                .collect();
            assert_eq!(families, ["logistic", "boosted"]);

            // A training dataset that is also a development one is refused.
            let e = run_in_memory(&stage, &[models, dev.clone(), dev])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("also a development dataset"), "{e}");
        }
        let bad = RlTuneClassifiers {
            alarm_above: vec![1.5],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("alarm_above")
        );
        let mut bad = RlTuneClassifiers::default();
        bad.boosted.bins = 1;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("boosted.bins")
        );
    }
}
