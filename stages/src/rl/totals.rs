//! What a set of episodes did, summed, and the rates every RL table
//! reports from it (`rl_tune_rules` on development datasets, `rl_evaluate`
//! on test datasets and on each bootstrap resample).

use super::env::Tally;

/// Totals of a set of episodes, and the rates the tables report.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Totals {
    pub runs: f64,
    pub good: f64,
    pub reward: f64,
    pub calls: f64,
    pub bad: f64,
    pub missed: f64,
    pub kept: f64,
    pub good_rejected: f64,
    pub true_alarms: f64,
    pub delay: f64,
    pub rapid_changes: f64,
    pub false_after_change: f64,
    pub adaptations: f64,
    pub adaptation_runs: f64,
}

impl Totals {
    pub fn add(&mut self, t: &Tally) {
        self.runs += t.runs as f64;
        self.good += t.good_runs as f64;
        self.reward += t.reward;
        self.calls += t.calls as f64;
        self.bad += t.bad_runs as f64;
        self.missed += t.missed_bad as f64;
        self.kept += t.good_kept as f64;
        self.good_rejected += t.good_rejected as f64;
        self.true_alarms += t.true_alarms as f64;
        self.delay += t.detection_delay as f64;
        self.rapid_changes += t.rapid_changes as f64;
        self.false_after_change += t.false_alarms_after_change as f64;
        self.adaptations += t.adaptations as f64;
        self.adaptation_runs += t.adaptation_runs as f64;
    }
    /// Adds another set's totals.
    pub fn merge(&mut self, o: &Totals) {
        self.runs += o.runs;
        self.good += o.good;
        self.reward += o.reward;
        self.calls += o.calls;
        self.bad += o.bad;
        self.missed += o.missed;
        self.kept += o.kept;
        self.good_rejected += o.good_rejected;
        self.true_alarms += o.true_alarms;
        self.delay += o.delay;
        self.rapid_changes += o.rapid_changes;
        self.false_after_change += o.false_after_change;
        self.adaptations += o.adaptations;
        self.adaptation_runs += o.adaptation_runs;
    }
    /// Good runs called about after a rapid change before the first one
    /// kept without a call, per change (DINAMO's adaptation time).
    pub fn adaptation_time(&self) -> Option<f64> {
        (self.adaptations > 0.0).then(|| self.adaptation_runs / self.adaptations)
    }
    /// Calls on good runs within `AFTER_CHANGE` runs of a good rapid
    /// change, per change.
    pub fn false_alarms_per_change(&self) -> Option<f64> {
        (self.rapid_changes > 0.0).then(|| self.false_after_change / self.rapid_changes)
    }
    pub fn reward_per_run(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| self.reward / self.runs)
    }
    pub fn calls_per_1000(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| 1000.0 * self.calls / self.runs)
    }
    /// Bad runs let through without a call / bad runs.
    pub fn missed_rate(&self) -> Option<f64> {
        (self.bad > 0.0).then(|| self.missed / self.bad)
    }
    /// Good runs kept / runs.
    pub fn efficiency(&self) -> Option<f64> {
        (self.runs > 0.0).then(|| self.kept / self.runs)
    }
    /// Offline: good runs rejected without asking / good runs.
    pub fn good_rejected_rate(&self) -> Option<f64> {
        (self.good > 0.0).then(|| self.good_rejected / self.good)
    }
}
