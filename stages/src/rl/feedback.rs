//! What a deployed agent could learn from: the shifter's answers when it
//! calls, and the offline certification's labels some runs later — never
//! the simulator's truth of a run nobody looked at. Under `reward_from:
//! shifter` the learner's reward of a step is built from those alone (the
//! tallies and every evaluation figure stay on the truth):
//! - offline: an ask costs the call and earns the good-kept gain if the
//!   shifter says good; an accepted run's gain or bad-accepted cost
//!   arrives when it is certified (`confirm_delay` runs later; never with
//!   `null`); a rejected run is certified only with probability
//!   `certify_rejected`, and then costs the good-rejected cost if good;
//! - online: an alarm costs the call, and the false-alarm cost if the
//!   shifter says the detector works (then the run is known good: its
//!   gain); a run taken without an alarm earns its gain when certified good.
//!
//! `label_noise` flips each shifter answer with that probability (what the
//! learner is told; the run's fate follows the truth, decided by the
//! careful certification). A label arrives as reward on the step at which
//! it is known: the learner must carry the credit back itself.

use std::collections::VecDeque;

use super::env_config::{ACCEPT, ALARM, ASK, EnvConfig, Regime};
pub use super::env_config::{Credit, Feedback, RewardFrom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rewards a learner will be told later: (due position, position of the
/// run it is about, reward), by due position.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    queue: VecDeque<(usize, usize, f64)>,
}

impl Pending {
    /// `reward` about the run at stream position `origin` arrives at
    /// position `due`.
    pub fn schedule(&mut self, due: usize, origin: usize, reward: f64) {
        if reward != 0.0 {
            let at = self.queue.partition_point(|&(d, _, _)| d <= due);
            self.queue.insert(at, (due, origin, reward));
        }
    }

    /// The labels due at or before `pos` as (origin, reward), taken off
    /// the queue.
    pub fn take_due(&mut self, pos: usize) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        while let Some(&(due, origin, r)) = self.queue.front() {
            if due > pos {
                break;
            }
            out.push((origin, r));
            self.queue.pop_front();
        }
        out
    }
}

/// Deterministic per-run draws of the feedback: whether the shifter's
/// answer about run `k` is flipped, whether a rejected run is certified.
pub struct Draws {
    seed: u64,
}

impl Draws {
    pub fn new(seed: u64, dataset: i64) -> Self {
        Self {
            seed: seed ^ (dataset as u64).rotate_left(17) ^ 0x6665_6564_6261_636b,
        }
    }

    /// Uniform in [0, 1), one per (run, purpose).
    fn uniform(&self, k: usize, purpose: u64) -> f64 {
        ChaCha8Rng::seed_from_u64(self.seed ^ ((k as u64) << 2 | purpose)).random::<f64>()
    }

    /// The shifter's answer about a run whose truth is `good`, as told.
    pub fn answer(&self, k: usize, good: bool, noise: f64) -> bool {
        good ^ (noise > 0.0 && self.uniform(k, 1) < noise)
    }

    /// A rejected run gets certified.
    pub fn certified(&self, k: usize, p: f64) -> bool {
        p > 0.0 && self.uniform(k, 2) < p
    }
}

/// The learner's reward of one step under `reward_from: shifter`: the part
/// known now (the call, the shifter's answer); certification labels are
/// scheduled on `pending` for `confirm_delay` runs later. `good`: the
/// run's truth (online: taken with a working detector); `k`: its index;
/// `pos`: its stream position.
#[allow(clippy::too_many_arguments)]
pub fn shifter_reward(
    cfg: &EnvConfig,
    draws: &Draws,
    pending: &mut Pending,
    action: usize,
    good: bool,
    k: usize,
    pos: usize,
) -> f64 {
    let (w, f) = (&cfg.rewards, &cfg.feedback);
    let due = cfg.confirm_delay.map(|d| pos + 1 + d);
    let mut r = 0.0;
    match (cfg.regime, action) {
        (Regime::Offline, ASK) => {
            r -= w.shifter_call;
            if draws.answer(k, good, f.label_noise) {
                r += w.good_kept;
            }
        }
        (Regime::Offline, ACCEPT) => {
            if let Some(due) = due {
                pending.schedule(due, pos, if good { w.good_kept } else { -w.bad_accepted });
            }
        }
        (Regime::Offline, _) => {
            if let Some(due) = due
                && good
                && draws.certified(k, f.certify_rejected)
            {
                pending.schedule(due, pos, -w.good_rejected);
            }
        }
        (Regime::Online, ALARM) => {
            r -= w.shifter_call;
            if draws.answer(k, good, f.label_noise) {
                // The shifter finds the detector working: the run is
                // confirmed good and kept.
                r += w.good_kept - w.false_alarm;
            }
        }
        (Regime::Online, _) => {
            if let (Some(due), true) = (due, good) {
                pending.schedule(due, pos, w.good_kept);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::env::Env;
    use crate::rl::env_config::{CONTINUE, REJECT};
    use crate::rl::test_support::{config, dataset, scripted_offline};
    use std::sync::Arc;

    /// Plays `script`: (learner's rewards, true rewards).
    fn play(
        cfg: &EnvConfig,
        data: &Arc<crate::dinamo::tables::DatasetRuns>,
        script: &[usize],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut env = Env::new(cfg, data.clone(), 0).unwrap();
        script
            .iter()
            .map(|&a| {
                let s = env.step(a).unwrap();
                (s.reward, s.true_reward)
            })
            .unzip()
    }

    /// The offline episode of the environment's test, rewarded from what a
    /// deployment sees: certification 2 runs later, every rejected run
    /// certified.
    #[test]
    fn offline_shifter_reward_by_hand() {
        let data = Arc::new(scripted_offline());
        let mut cfg = config(Regime::Offline);
        cfg.confirm_delay = Some(2);
        cfg.feedback = Feedback {
            reward_from: RewardFrom::Shifter,
            label_noise: 0.0,
            certify_rejected: 1.0,
            credit: Credit::Arrival,
        };
        let script = [ACCEPT, ACCEPT, REJECT, REJECT, ASK, ASK];
        let (learned, truth) = play(&cfg, &data, &script);
        // Accepted good (+1) and bad (−10) runs are told at positions 3
        // and 4, the rejected good run (−1) at 5; asks at once.
        assert_eq!(learned, [0.0, 0.0, 1.0, -10.0, 0.5 - 1.0, -0.5]);
        assert_eq!(truth, [1.0, -10.0, -1.0, 0.0, 0.5, -0.5]);
        // Credited to the run: the step's reward is what is known now; the
        // labels are handed over with the position of their run.
        cfg.feedback.credit = Credit::Run;
        let mut env = Env::new(&cfg, data.clone(), 0).unwrap();
        let mut told = Vec::new();
        let mut now = Vec::new();
        for &a in &script {
            now.push(env.step(a).unwrap().reward);
            told.push(env.take_told());
        }
        assert_eq!(now, [0.0, 0.0, 0.0, 0.0, 0.5, -0.5]);
        assert_eq!(told[2], [(0, 1.0)]);
        assert_eq!(told[3], [(1, -10.0)]);
        assert_eq!(told[4], [(2, -1.0)]);
        assert!(told[5].is_empty());
        // Never certified: only the asks are told.
        cfg.confirm_delay = None;
        let (learned, _) = play(&cfg, &data, &script);
        assert_eq!(learned, [0.0, 0.0, 0.0, 0.0, 0.5, -0.5]);
        // The truth is the learner's reward by default.
        cfg.feedback = Feedback::default();
        let (learned, truth) = play(&cfg, &data, &script);
        assert_eq!(learned, truth);
    }

    /// Online: a false alarm the shifter answers truthfully costs what the
    /// truth says; a run taken is told when certified (at once with delay 0).
    #[test]
    fn online_shifter_reward_and_label_noise() {
        let data = Arc::new(dataset(400, 4));
        let mut cfg = config(Regime::Online);
        cfg.faults.p_start = 0.0;
        cfg.confirm_delay = Some(0);
        cfg.feedback.reward_from = RewardFrom::Shifter;
        cfg.feedback.credit = Credit::Arrival;
        let (learned, truth) = play(&cfg, &data, &[ALARM, CONTINUE, CONTINUE]);
        assert_eq!(learned, truth);
        assert_eq!(learned, [0.0, 1.0, 1.0]);
        // With noise 0.3 about 30 % of the answers on a working detector
        // are "faulty" (no false-alarm cost, no gain), the same on a rerun.
        cfg.feedback.label_noise = 0.3;
        let (learned, _) = play(&cfg, &data, &[ALARM; 395]);
        let flipped = learned.iter().filter(|&&r| r == -0.5).count();
        assert!((85..=152).contains(&flipped), "{flipped} of 395");
        assert_eq!(play(&cfg, &data, &[ALARM; 395]).0, learned);
        cfg.feedback.label_noise = 0.5;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("feedback.label_noise"), "{e}");
    }

    #[test]
    fn pending_labels_arrive_in_order() {
        let mut p = Pending::default();
        p.schedule(5, 0, 1.0);
        p.schedule(3, 1, -2.0);
        p.schedule(5, 2, 0.0);
        assert_eq!(p.take_due(2), []);
        assert_eq!(p.take_due(4), [(1, -2.0)]);
        assert_eq!(p.take_due(9), [(0, 1.0)]);
        assert!(p.take_due(9).is_empty());
    }
}
