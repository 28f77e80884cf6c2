//! The environment: one DINAMO dataset as a stream of runs an agent acts on,
//! scored by a live DINAMO-S reference that learns only from runs whose
//! label someone confirmed (the human feedback loop).
//!
//! Deterministic: everything random (the online regime's faults) is drawn
//! per run from the seed and the dataset id when the environment is built,
//! so every policy meets the same faults at the same runs (common random
//! numbers) and a rerun is bit-identical.

use std::collections::VecDeque;
use std::sync::Arc;

use super::env_config::{ACCEPT, ALARM, ASK, CONTINUE, EnvConfig, REJECT, Regime};
use super::faults::{FaultPlan, FaultRecord};
use super::feedback::{Credit, Draws, Pending, RewardFrom, shifter_reward};
use crate::dinamo::reference::{
    ALPHA_STEP, Constants, EPSILON, NormRun, Reference, evolve, score_of,
};
use crate::dinamo::tables::DatasetRuns;
use crate::error::{Result, StageError};

/// Observation features (see [`Env::observation`]).
pub const N_OBS: usize = 13;

/// The observation's features by name, in order (see [`Env::observation`]).
pub fn observation_names(regime: Regime) -> Vec<String> {
    let mut names: Vec<String> = [
        "score",
        "shadow_score",
        "max_pull_up",
        "max_pull_down",
        "fraction_pull_over_3",
        "ln_integral",
        "recent_mean_score",
        "recent_fraction_flagged",
    ]
    .map(String::from)
    .to_vec();
    names.extend(regime.actions().iter().map(|a| format!("recent_{a}")));
    names.push("runs_since_call".into());
    names.push("runs_since_update".into());
    if regime == Regime::Online {
        names.push("repairing".into());
    }
    names
}

/// What an episode did, counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Runs the policy acted on (after the warm-up).
    pub runs: u64,
    pub good_runs: u64,
    pub bad_runs: u64,
    pub reward: f64,
    /// Shifter calls (asks, alarms).
    pub calls: u64,
    /// Good runs kept (offline: accepted or confirmed; online: taken with a
    /// working detector).
    pub good_kept: u64,
    /// Offline: good runs rejected.
    pub good_rejected: u64,
    /// Offline: bad runs accepted; online: faulty runs taken without an
    /// alarm before the repair started.
    pub missed_bad: u64,
    /// Online: faults that started, alarms on a faulty detector, alarms on
    /// a working one, alarms while a repair was under way.
    pub faults: u64,
    pub true_alarms: u64,
    pub false_alarms: u64,
    pub redundant_calls: u64,
    /// Online: runs from each fault's start to its alarm, summed.
    pub detection_delay: u64,
    /// Confirmed good runs folded into the reference.
    pub reference_updates: u64,
    /// Online: each fault, in order, and what became of it.
    pub fault_log: Vec<FaultRecord>,
    /// Good rapid changes of the conditions met (the generator's
    /// `rapid_change` runs; 0 without that column).
    pub rapid_changes: u64,
    /// Good runs called about (online: false alarms; offline: asked about
    /// or rejected) within [`AFTER_CHANGE`] runs of a rapid change, the
    /// change's run included.
    pub false_alarms_after_change: u64,
    /// Rapid changes after which the policy kept a good run without a
    /// call, and the good runs it called about before that, summed (its
    /// DINAMO adaptation time).
    pub adaptations: u64,
    pub adaptation_runs: u64,
}

/// Runs after a good rapid change (its own run included) in which a call
/// on a good run counts in [`Tally::false_alarms_after_change`].
pub const AFTER_CHANGE: usize = 20;

/// What an expert rule looks at on the current run (see [`super::rules`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleView {
    /// ln χ²_ν − the DINAMO-S threshold.
    pub score: f64,
    /// The largest pull below the reference, as a positive number.
    pub max_pull_down: f64,
    /// Runs since the reference was last updated.
    pub since_update: usize,
    /// Online: a repair is under way (the shifter knows).
    pub repairing: bool,
}

/// DINAMO-S's alpha and threshold for one dataset, from its warm-up runs,
/// and the reference those runs built.
#[derive(Debug, Clone)]
pub struct Warmup {
    pub alpha: f64,
    pub threshold: f64,
    reference: Reference,
}

impl Warmup {
    /// Tunes `auto` parameters on the warm-up runs as `dinamo_s` does on
    /// its historical runs (the threshold on the scores of the reference
    /// as it evolves over them, updated on the good ones).
    pub fn tune(cfg: &EnvConfig, data: &DatasetRuns) -> Result<Self> {
        let warm = cfg.warmup_runs;
        if data.len() <= warm {
            return Err(data.error(format!(
                "{} runs, not more than warmup_runs = {warm}: nothing left to act on",
                data.len()
            )));
        }
        // DINAMO-S with its defaults besides alpha and the threshold.
        let constants = Constants::default();
        let alpha = data.alpha_for(cfg.alpha, ALPHA_STEP, constants, warm)?;
        let (reference, chi2) = evolve(constants, &data.norm[..warm], &data.good[..warm], alpha);
        let scores: Vec<f64> = chi2.into_iter().map(score_of).collect();
        let threshold = data.threshold(cfg.threshold, &scores, warm)?;
        Ok(Self {
            alpha,
            threshold,
            reference,
        })
    }
}

/// The detector's hidden state (online).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Detector {
    Working,
    /// A fault since stream position `since`, not yet alarmed.
    Faulty {
        fault: usize,
        since: usize,
    },
    /// Alarmed; bad for `left` more runs including this one.
    Repairing {
        fault: usize,
        left: usize,
    },
}

/// The run being decided.
#[derive(Debug, Clone)]
struct Current {
    index: usize,
    good: bool,
    norm: NormRun,
    /// ln chi2_nu − threshold.
    score: f64,
    /// The same against the shadow reference.
    shadow_score: f64,
    /// Largest pull above the reference, and largest below it (as a
    /// positive number): a dead bin pulls far below, a shift both ways.
    max_pull_up: f64,
    max_pull_down: f64,
    frac_pull3: f64,
}

/// One step's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The learner's reward (`feedback.reward_from`: the truth, or what
    /// the shifter and the certification told so far).
    pub reward: f64,
    /// The reward from the truth (what the tallies sum).
    pub true_reward: f64,
    /// The dataset has no run left.
    pub done: bool,
    /// The run's truth (online: taken with a working detector).
    pub good: bool,
    /// A bad run let through without a call.
    pub missed: bool,
    /// A good run kept.
    pub kept: bool,
}

pub struct Env<'a> {
    cfg: &'a EnvConfig,
    data: Arc<DatasetRuns>,
    reference: Reference,
    /// Learns from every run the policy kept (see `shadow_alpha`).
    shadow: Reference,
    pub threshold: f64,
    pub alpha: f64,
    mean_ln_integral: f64,
    /// Run indices the policy acts on, in order.
    stream: Vec<usize>,
    pos: usize,
    current: Option<Current>,
    recent_scores: VecDeque<f64>,
    recent_actions: VecDeque<usize>,
    since_call: usize,
    since_update: usize,
    /// (due position, run index) of good runs awaiting certification.
    pending: VecDeque<(usize, usize)>,
    detector: Detector,
    /// Online: the faults drawn for every run.
    plan: Option<FaultPlan>,
    /// Stream position of the last good rapid change, and the run index
    /// presented last (a change at a run left out of the stream counts at
    /// the next run presented).
    last_change: Option<usize>,
    last_index: Option<usize>,
    /// Good runs called about since the last rapid change, until one is
    /// kept without a call.
    adapting: Option<u64>,
    /// The feedback's per-run draws and the labels not yet told.
    draws: Draws,
    labels: Pending,
    /// Labels arrived, credited to their run (`feedback.credit: run`).
    told: Vec<(usize, f64)>,
    epsilon: f64,
    pub tally: Tally,
}

impl<'a> Env<'a> {
    /// Builds the environment on one parsed dataset: tunes DINAMO-S on the
    /// warm-up runs (labels known), folds their good runs into the reference,
    /// draws the online faults, and presents the first run.
    pub fn new(cfg: &'a EnvConfig, data: Arc<DatasetRuns>, seed: u64) -> Result<Self> {
        let warmup = Warmup::tune(cfg, &data)?;
        Self::start(cfg, data, seed, warmup)
    }

    /// [`Env::new`] with DINAMO-S already tuned on this dataset's warm-up
    /// (several policies played on one dataset tune once).
    pub fn start(
        cfg: &'a EnvConfig,
        data: Arc<DatasetRuns>,
        seed: u64,
        warmup: Warmup,
    ) -> Result<Self> {
        let warm = cfg.warmup_runs;
        let Warmup {
            alpha,
            threshold,
            reference,
        } = warmup;
        let (shadow, _) = evolve(
            Constants::default(),
            &data.norm[..warm],
            &data.good[..warm],
            cfg.shadow_alpha,
        );
        let integrals: Vec<f64> = (0..warm)
            .filter(|&k| data.good[k] && data.norm[k].integral > 0.0)
            .map(|k| data.norm[k].integral.ln())
            .collect();
        let mean_ln_integral = integrals.iter().sum::<f64>() / integrals.len().max(1) as f64;
        // Online, bad data come from the detector's faults: the dataset's
        // own bad runs (one-run anomalies) are left out of the stream.
        let stream: Vec<usize> = (warm..data.len())
            .filter(|&k| cfg.regime == Regime::Offline || data.good[k])
            .collect();
        let plan = match cfg.regime {
            Regime::Online => Some(FaultPlan::draw(&cfg.faults, &data, seed)?),
            Regime::Offline => None,
        };
        let draws = Draws::new(seed, data.dataset);
        let mut env = Self {
            cfg,
            data,
            reference,
            shadow,
            threshold,
            alpha,
            mean_ln_integral,
            stream,
            pos: 0,
            current: None,
            recent_scores: VecDeque::with_capacity(cfg.history),
            recent_actions: VecDeque::with_capacity(cfg.history),
            since_call: 0,
            since_update: 0,
            pending: VecDeque::new(),
            detector: Detector::Working,
            plan,
            last_change: None,
            adapting: None,
            last_index: None,
            draws,
            labels: Pending::default(),
            told: Vec::new(),
            epsilon: EPSILON,
            tally: Tally::default(),
        };
        env.present();
        Ok(env)
    }

    pub fn regime(&self) -> Regime {
        self.cfg.regime
    }

    /// Runs of the dataset not acted on: the warm-up and, online, the
    /// dataset's own bad runs.
    pub fn warmup(&self) -> usize {
        self.data.len() - self.stream.len()
    }

    /// Runs left to act on, the current one included.
    pub fn remaining(&self) -> usize {
        self.stream.len() - self.pos
    }

    /// The current run's score: ln chi2_nu minus the DINAMO-S threshold
    /// (positive: DINAMO-S flags it).
    pub fn score(&self) -> f64 {
        self.current.as_ref().map_or(0.0, |c| c.score)
    }

    /// What a rule looks at on the current run.
    pub fn view(&self) -> RuleView {
        RuleView {
            score: self.score(),
            max_pull_down: self.current.as_ref().map_or(0.0, |c| c.max_pull_down),
            since_update: self.since_update,
            repairing: matches!(self.detector, Detector::Repairing { .. }),
        }
    }

    /// Stream position of the current run (what [`Env::take_told`]'s
    /// labels refer to).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Labels that arrived since the last call, as (stream position of the
    /// run they are about, reward), under `feedback.credit: run`.
    pub fn take_told(&mut self) -> Vec<(usize, f64)> {
        std::mem::take(&mut self.told)
    }

    /// The current run's truth (for tests and the tally, never observed).
    pub fn current_is_good(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.good)
    }

    /// The current reference's mean per bin.
    pub fn reference_mu(&self) -> &[f64] {
        &self.reference.mu
    }

    /// Folds pending certifications due, then builds the run at `pos`.
    fn present(&mut self) {
        while let Some(&(due, k)) = self.pending.front() {
            if due > self.pos {
                break;
            }
            self.pending.pop_front();
            self.fold(k);
        }
        let Some(&k) = self.stream.get(self.pos) else {
            self.current = None;
            return;
        };
        if let Some(rapid) = self.data.truth().and_then(|t| t.rapid_change.as_ref()) {
            let from = self.last_index.map_or(k, |j| j + 1);
            if rapid[from..=k].iter().any(|&r| r) {
                self.last_change = Some(self.pos);
                self.adapting = Some(0);
                self.tally.rapid_changes += 1;
            }
        }
        self.last_index = Some(k);
        let (good, norm) = match self.cfg.regime {
            Regime::Offline => (self.data.good[k], self.data.norm[k].clone()),
            Regime::Online => self.take_online_run(k),
        };
        let chi2 = self.reference.chi2(&norm);
        let shadow_score = score_of(self.shadow.chi2(&norm)) - self.threshold;
        let pulls = self.reference.pulls(&norm);
        let max_pull_up = pulls.iter().fold(0.0f64, |m, p| m.max(*p));
        let max_pull_down = pulls.iter().fold(0.0f64, |m, p| m.max(-*p));
        let frac_pull3 =
            pulls.iter().filter(|p| p.abs() > 3.0).count() as f64 / pulls.len().max(1) as f64;
        self.current = Some(Current {
            index: k,
            good,
            norm,
            score: score_of(chi2) - self.threshold,
            shadow_score,
            max_pull_up,
            max_pull_down,
            frac_pull3,
        });
    }

    /// Online: advances the detector to run `k` and returns what it records.
    fn take_online_run(&mut self, k: usize) -> (bool, NormRun) {
        let plan = self.plan.as_ref().expect("online");
        if self.detector == Detector::Working && plan.draws[k].u < self.cfg.faults.p_start {
            self.detector = Detector::Faulty {
                fault: k,
                since: self.pos,
            };
            self.tally.faults += 1;
            let draw = &plan.draws[k];
            self.tally.fault_log.push(FaultRecord {
                kind: draw.kind,
                size: draw.size(),
                transient: draw.transient,
                run: self.data.runs[k],
                delay: None,
                missed: 0,
            });
        }
        match self.detector {
            Detector::Working => (true, self.data.norm[k].clone()),
            Detector::Faulty { fault, .. } | Detector::Repairing { fault, .. } => (
                false,
                plan.redraw(&self.cfg.faults, &self.data, k, fault, self.epsilon),
            ),
        }
    }

    /// Folds good run `k` (confirmed) into the reference.
    fn fold(&mut self, k: usize) {
        if self.data.norm[k].integral > 0.0 {
            self.reference.update(&self.data.norm[k]);
            self.tally.reference_updates += 1;
            self.since_update = 0;
        }
    }

    /// The observation of the current run, each feature of order one:
    /// 0 score (ln chi2_nu − threshold) / 5; 1 the same against the shadow
    /// reference; 2, 3 ln(1 + the largest pull above, below the reference)
    /// / 3; 4 fraction of bins with |pull| > 3; 5 ln of the integral over
    /// the warm-up's mean; 6 mean score of the last `history` runs / 5;
    /// 7 fraction of them flagged; 8.. fraction of the last `history`
    /// actions that were each action (3 offline, 2 online); then
    /// ln(1 + runs since the last shifter call) / 5 and ln(1 + runs since
    /// the last reference update) / 5; online, last: a repair is under way.
    pub fn observation(&self) -> Vec<f32> {
        let Some(c) = &self.current else {
            return vec![0.0; N_OBS];
        };
        let h = self.recent_scores.len().max(1) as f64;
        let mut obs = vec![
            c.score / 5.0,
            c.shadow_score / 5.0,
            (1.0 + c.max_pull_up).ln() / 3.0,
            (1.0 + c.max_pull_down).ln() / 3.0,
            c.frac_pull3,
            if c.norm.integral > 0.0 {
                c.norm.integral.ln() - self.mean_ln_integral
            } else {
                -5.0
            },
            self.recent_scores.iter().sum::<f64>() / h / 5.0,
            self.recent_scores.iter().filter(|s| **s > 0.0).count() as f64 / h,
        ];
        let h = self.recent_actions.len().max(1) as f64;
        for a in 0..self.cfg.regime.actions().len() {
            obs.push(self.recent_actions.iter().filter(|&&b| b == a).count() as f64 / h);
        }
        obs.push((1.0 + self.since_call as f64).ln() / 5.0);
        obs.push((1.0 + self.since_update as f64).ln() / 5.0);
        if self.cfg.regime == Regime::Online {
            obs.push(f64::from(matches!(
                self.detector,
                Detector::Repairing { .. }
            )));
        }
        debug_assert_eq!(obs.len(), N_OBS);
        obs.into_iter()
            .map(|v| v.clamp(-20.0, 20.0) as f32)
            .collect()
    }

    /// Applies `action` to the current run and presents the next one.
    pub fn step(&mut self, action: usize) -> Result<Step> {
        let n_actions = self.cfg.regime.actions().len();
        if action >= n_actions {
            return Err(StageError::data(format!(
                "action {action} does not exist in the {} regime ({})",
                self.cfg.regime.name(),
                self.cfg.regime.actions().join(", ")
            )));
        }
        let c = self.current.take().ok_or_else(|| {
            StageError::data(format!(
                "dataset {}: step after the last run",
                self.data.dataset
            ))
        })?;
        let w = &self.cfg.rewards;
        let t = &mut self.tally;
        let (missed_before, kept_before) = (t.missed_bad, t.good_kept);
        t.runs += 1;
        if c.good {
            t.good_runs += 1;
        } else {
            t.bad_runs += 1;
        }
        let mut reward = 0.0;
        let mut certify_later = false;
        let mut confirmed_now = false;
        if action == self.cfg.regime.call() {
            t.calls += 1;
            reward -= w.shifter_call;
        }
        match self.cfg.regime {
            Regime::Offline => match (action, c.good) {
                (ACCEPT, true) => {
                    reward += w.good_kept;
                    t.good_kept += 1;
                    certify_later = true;
                }
                (ACCEPT, false) => {
                    reward -= w.bad_accepted;
                    t.missed_bad += 1;
                }
                (REJECT, true) => {
                    reward -= w.good_rejected;
                    t.good_rejected += 1;
                }
                (REJECT, false) => {}
                // Asked: the shifter gives the true label; a good run is
                // kept and confirmed, a bad one rejected.
                (_, true) => {
                    reward += w.good_kept;
                    t.good_kept += 1;
                    confirmed_now = true;
                }
                (_, false) => {}
            },
            Regime::Online => {
                if c.good {
                    reward += w.good_kept;
                    t.good_kept += 1;
                }
                let alarm = action == ALARM;
                let transient =
                    |fault: usize| self.plan.as_ref().is_some_and(|p| p.draws[fault].transient);
                match self.detector {
                    Detector::Working if alarm => {
                        // The shifter finds the detector working: this run
                        // is confirmed good.
                        reward -= w.false_alarm;
                        t.false_alarms += 1;
                        confirmed_now = true;
                    }
                    Detector::Working => certify_later = true,
                    Detector::Faulty { fault, since } if alarm => {
                        t.true_alarms += 1;
                        let delay = (self.pos - since) as u64;
                        t.detection_delay += delay;
                        if let Some(r) = t.fault_log.last_mut() {
                            r.delay = Some(delay);
                        }
                        // A transient fault is gone by the next run: no repair.
                        self.detector = if transient(fault) {
                            Detector::Working
                        } else {
                            Detector::Repairing {
                                fault,
                                left: self.cfg.faults.fix_delay,
                            }
                        };
                    }
                    Detector::Faulty { fault, .. } => {
                        t.missed_bad += 1;
                        if let Some(r) = t.fault_log.last_mut() {
                            r.missed += 1;
                        }
                        if transient(fault) {
                            self.detector = Detector::Working;
                        }
                    }
                    Detector::Repairing { .. } => {
                        if alarm {
                            t.redundant_calls += 1;
                        }
                    }
                }
                // The repair ends after `fix_delay` more runs.
                if let Detector::Repairing { fault, left } = self.detector {
                    self.detector = if left == 0 {
                        Detector::Working
                    } else {
                        Detector::Repairing {
                            fault,
                            left: left - 1,
                        }
                    };
                }
            }
        }
        t.reward += reward;
        let learned = match self.cfg.feedback.reward_from {
            RewardFrom::Truth => reward,
            RewardFrom::Shifter => {
                let now = shifter_reward(
                    self.cfg,
                    &self.draws,
                    &mut self.labels,
                    action,
                    c.good,
                    c.index,
                    self.pos,
                );
                let arrived = self.labels.take_due(self.pos + 1);
                match self.cfg.feedback.credit {
                    Credit::Arrival => now + arrived.iter().map(|l| l.1).sum::<f64>(),
                    Credit::Run => {
                        self.told.extend(arrived);
                        now
                    }
                }
            }
        };
        let t = &mut self.tally;
        let called_on_good = match self.cfg.regime {
            Regime::Offline => c.good && action != ACCEPT,
            Regime::Online => c.good && action == ALARM,
        };
        if called_on_good
            && self
                .last_change
                .is_some_and(|p| self.pos - p < AFTER_CHANGE)
        {
            t.false_alarms_after_change += 1;
        }
        match (c.good, self.adapting) {
            (true, Some(n)) if called_on_good => self.adapting = Some(n + 1),
            (true, Some(n)) => {
                (t.adaptations, t.adaptation_runs) = (t.adaptations + 1, t.adaptation_runs + n);
                self.adapting = None;
            }
            _ => {}
        }
        // What the policy kept, as far as it knows: accepted, confirmed
        // good by the shifter, or taken without an alarm.
        let kept_by_policy = match self.cfg.regime {
            Regime::Offline => action == ACCEPT || (action == ASK && c.good),
            Regime::Online => action == CONTINUE || confirmed_now,
        };
        let (missed, kept) = (t.missed_bad > missed_before, t.good_kept > kept_before);
        if kept_by_policy && c.norm.integral > 0.0 {
            self.shadow.update(&c.norm);
        }
        if confirmed_now {
            self.fold(c.index);
        } else {
            self.since_update += 1;
        }
        if certify_later
            && c.good
            && let Some(d) = self.cfg.confirm_delay
        {
            self.pending.push_back((self.pos + 1 + d, c.index));
        }
        if action == self.cfg.regime.call() {
            self.since_call = 0;
        } else {
            self.since_call += 1;
        }
        if self.recent_scores.len() == self.cfg.history {
            self.recent_scores.pop_front();
            self.recent_actions.pop_front();
        }
        self.recent_scores.push_back(c.score);
        self.recent_actions.push_back(action);
        self.pos += 1;
        self.present();
        Ok(Step {
            reward: learned,
            true_reward: reward,
            done: self.current.is_none(),
            good: c.good,
            missed,
            kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::env_config::{FaultKind, Faults};
    use crate::rl::test_support::{config, dataset, scripted_offline};

    /// The reference after the warm-up, and after folding `extra` runs.
    fn reference_after(data: &DatasetRuns, extra: &[usize]) -> Vec<f64> {
        let mut r = Reference::uniform(data.n_bins(), 0.5, 1e-9, 100.0);
        for k in (0..5).chain(extra.iter().copied()) {
            r.update(&data.norm[k]);
        }
        r.mu
    }

    #[test]
    fn offline_rewards_by_hand_on_a_scripted_episode() {
        let data = Arc::new(scripted_offline());
        let cfg = config(Regime::Offline);
        let mut env = Env::new(&cfg, data.clone(), 0).unwrap();
        assert_eq!(env.remaining(), 6);
        let script = [ACCEPT, ACCEPT, REJECT, REJECT, ASK, ASK];
        // +good kept, -bad accepted, -good rejected, 0, +good kept - c_h, -c_h.
        let expected = [1.0, -10.0, -1.0, 0.0, 0.5, -0.5];
        for (k, (&a, &r)) in script.iter().zip(&expected).enumerate() {
            let step = env.step(a).unwrap();
            assert_eq!(step.reward, r, "run {k}");
            assert_eq!(step.done, k == 5);
        }
        let t = &env.tally;
        assert_eq!((t.runs, t.good_runs, t.bad_runs, t.calls), (6, 3, 3, 2));
        assert_eq!((t.good_kept, t.good_rejected, t.missed_bad), (2, 1, 1));
        assert_eq!(t.reward, -10.0);
        // Only the good run the shifter confirmed reached the reference.
        assert_eq!(t.reference_updates, 1);
        assert_eq!(env.reference_mu(), reference_after(&data, &[9]).as_slice());
        assert!(env.step(ACCEPT).is_err(), "a step after the last run");
    }

    #[test]
    fn shifter_reveals_the_label_and_unconfirmed_runs_never_update_the_reference() {
        let mut data = dataset(12, 4);
        data.good[6] = false;
        let data = Arc::new(data);
        let mut cfg = config(Regime::Offline);
        cfg.rewards.shifter_call = 0.25;
        let mut env = Env::new(&cfg, data.clone(), 0).unwrap();
        let warm = reference_after(&data, &[]);
        assert_eq!(env.reference_mu(), warm.as_slice());
        // Accepted (never certified) and rejected good runs change nothing.
        env.step(ACCEPT).unwrap();
        // Asking about a bad run: the shifter says bad; it costs c_h only.
        let step = env.step(ASK).unwrap();
        assert_eq!(step.reward, -0.25);
        assert!(!step.kept && !step.good);
        env.step(REJECT).unwrap();
        assert_eq!(env.reference_mu(), warm.as_slice());
        assert_eq!(env.tally.reference_updates, 0);
        // Asking about a good run: kept, confirmed, folded in at once.
        let step = env.step(ASK).unwrap();
        assert_eq!(step.reward, 1.0 - 0.25);
        assert_eq!(env.reference_mu(), reference_after(&data, &[8]).as_slice());

        // With certification 2 runs later, an accepted good run is folded
        // in once the next 2 runs are taken, not before.
        cfg.confirm_delay = Some(2);
        let mut env = Env::new(&cfg, data.clone(), 0).unwrap();
        env.step(ACCEPT).unwrap(); // run 5, due at stream position 3
        env.step(REJECT).unwrap(); // run 6 (bad)
        assert_eq!(env.reference_mu(), warm.as_slice());
        env.step(REJECT).unwrap(); // run 7; run 5 is folded before run 8 is shown
        assert_eq!(env.reference_mu(), reference_after(&data, &[5]).as_slice());
        assert_eq!(env.tally.reference_updates, 1);
    }

    #[test]
    fn online_fault_alarm_and_repair_by_hand() {
        let data = Arc::new(dataset(20, 5));
        let mut cfg = config(Regime::Online);
        cfg.faults.p_start = 1.0;
        cfg.faults.fix_delay = 1;
        cfg.faults.kinds = vec![FaultKind::DeadBins];
        cfg.faults.dead_bins = [40, 40];
        let nominal = {
            let working = EnvConfig {
                faults: Faults {
                    p_start: 0.0,
                    ..cfg.faults.clone()
                },
                ..cfg.clone()
            };
            Env::new(&working, data.clone(), 7).unwrap().score()
        };
        let mut env = Env::new(&cfg, data.clone(), 7).unwrap();
        // A fault starts at the first run: 40 dead bins are far off.
        assert!(env.score() > nominal + 1.0, "{} vs {nominal}", env.score());
        let s = env.step(CONTINUE).unwrap();
        assert_eq!((s.reward, s.good, s.missed), (0.0, false, true));
        let s = env.step(ALARM).unwrap(); // true alarm, one run after the start
        assert_eq!(s.reward, -0.5);
        let s = env.step(CONTINUE).unwrap(); // still under repair: bad, not missed
        assert_eq!((s.reward, s.good, s.missed), (0.0, false, false));
        // The next run is presented: the detector works again and, with
        // p_start = 1, is at once faulty again.
        let t = &env.tally;
        assert_eq!(
            (t.faults, t.true_alarms, t.detection_delay, t.missed_bad),
            (2, 1, 1, 1)
        );
        let s = env.step(ALARM).unwrap();
        assert_eq!((s.reward, env.tally.detection_delay), (-0.5, 1));

        // A working detector: an alarm is false, costs c_h + the false-alarm
        // cost, and the shifter's look confirms the run for the reference.
        cfg.faults.p_start = 0.0;
        let mut env = Env::new(&cfg, data.clone(), 7).unwrap();
        let s = env.step(ALARM).unwrap();
        assert_eq!(s.reward, 1.0 - 0.5 - 0.5);
        assert_eq!(
            (env.tally.false_alarms, env.tally.reference_updates),
            (1, 1)
        );
        assert_eq!(env.reference_mu(), reference_after(&data, &[5]).as_slice());
        let s = env.step(CONTINUE).unwrap();
        assert_eq!((s.reward, s.kept), (1.0, true));
    }

    #[test]
    fn faults_are_the_same_for_every_policy_and_seed_dependent() {
        let data = Arc::new(dataset(200, 6));
        let mut cfg = config(Regime::Online);
        cfg.faults.p_start = 0.05;
        let faults_seen = |seed: u64, action: usize| {
            let mut env = Env::new(&cfg, data.clone(), seed).unwrap();
            let mut starts = Vec::new();
            while env.remaining() > 0 {
                let before = env.tally.faults;
                env.step(action).unwrap();
                if env.tally.faults > before || env.tally.faults == 1 && starts.is_empty() {
                    starts.push(env.tally.runs);
                }
            }
            (env.tally.faults, starts)
        };
        // Always alarming repairs every fault at once: more faults start
        // than when nobody alarms (one fault, never fixed).
        let (never, _) = faults_seen(1, CONTINUE);
        let (always, _) = faults_seen(1, ALARM);
        assert_eq!(never, 1);
        assert!(always > 3, "{always}");
        assert_eq!(faults_seen(1, ALARM), faults_seen(1, ALARM));
        assert_ne!(faults_seen(1, ALARM), faults_seen(2, ALARM));
    }

    #[test]
    fn bad_parameters_and_actions_are_refused() {
        let mut cfg = EnvConfig::default();
        cfg.rewards.shifter_call = -1.0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rewards.shifter_call"), "{e}");
        let mut cfg = EnvConfig::default();
        cfg.faults.p_start = 1.5;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("faults.p_start")
        );
        let data = Arc::new(dataset(10, 3));
        let cfg = config(Regime::Online);
        let mut env = Env::new(&cfg, data.clone(), 0).unwrap();
        let e = env.step(ASK).unwrap_err().to_string();
        assert!(e.contains("continue, alarm"), "{e}");
        let cfg = EnvConfig {
            warmup_runs: 10,
            ..config(Regime::Offline)
        };
        let e = Env::new(&cfg, data.clone(), 0).err().unwrap().to_string();
        assert!(e.contains("warmup_runs"), "{e}");
        // Unknown names in the YAML are refused by serde with the valid ones.
        let e = serde_json::from_str::<FaultKind>("\"dead_bin\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dead_bins"), "{e}");
    }
}
