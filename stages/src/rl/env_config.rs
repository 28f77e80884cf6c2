//! The RL environment as the YAML declares it (`env:` of `rl_train`):
//! the regime and its actions, the reward weights, the feedback and the
//! online regime's detector faults, with their checks. The environment
//! that plays a dataset with it is [`super::env`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, bad_param, within};
use crate::params::AutoOr;

/// The two regimes of the abstract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Regime {
    /// Classify collected runs: accept, reject or ask the shifter.
    Offline,
    /// While data are taken: continue, or raise an alarm that gets a
    /// faulty detector fixed.
    Online,
}

impl Regime {
    /// Action names, in the policy's output order.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Regime::Offline => &["accept", "reject", "ask"],
            Regime::Online => &["continue", "alarm"],
        }
    }

    /// The action that calls the shifter (ask, alarm).
    pub fn call(self) -> usize {
        match self {
            Regime::Offline => ASK,
            Regime::Online => ALARM,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Regime::Offline => "offline",
            Regime::Online => "online",
        }
    }
}

pub const ACCEPT: usize = 0;
pub const REJECT: usize = 1;
pub const ASK: usize = 2;
pub const CONTINUE: usize = 0;
pub const ALARM: usize = 1;

/// Reward weights, all non-negative; the sign of each is in its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rewards {
    /// Gain per good run kept (offline: accepted, or confirmed by the
    /// shifter; online: taken while the detector works).
    pub good_kept: f64,
    /// Cost per bad run accepted (offline).
    pub bad_accepted: f64,
    /// Cost per good run rejected (offline), on top of the gain it loses.
    pub good_rejected: f64,
    /// Cost per shifter call (an ask offline, an alarm online): c_h, the
    /// human effort.
    pub shifter_call: f64,
    /// Extra cost per false alarm (online): shifter time spent on a
    /// detector that works.
    pub false_alarm: f64,
}

impl Default for Rewards {
    fn default() -> Self {
        Self {
            good_kept: 1.0,
            bad_accepted: 10.0,
            good_rejected: 1.0,
            shifter_call: 0.5,
            false_alarm: 0.5,
        }
    }
}

/// Kinds of detector fault (online), the generator's anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The Gaussian's mean moves (synth_runs' `anomaly_mu_shift`).
    MeanShift,
    /// Its width changes (`anomaly_sigma_shift`).
    WidthShift,
    /// Some bins read zero (`dead_bins`).
    DeadBins,
}

impl FaultKind {
    pub const ALL: [FaultKind; 3] = [
        FaultKind::MeanShift,
        FaultKind::WidthShift,
        FaultKind::DeadBins,
    ];

    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::MeanShift => "mean_shift",
            FaultKind::WidthShift => "width_shift",
            FaultKind::DeadBins => "dead_bins",
        }
    }
}

/// The online regime's detector faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Probability per run that a working detector develops a fault; it
    /// persists until an alarm gets it fixed, unless it is transient.
    pub p_start: f64,
    /// Probability that a fault is transient: it spoils the one run where
    /// it starts (DINAMO's bad runs) and is gone by the next, alarm or
    /// not. 0: every fault persists.
    pub transient: f64,
    /// Runs still taken with the fault after a true alarm (the repair).
    pub fix_delay: usize,
    /// Kinds a fault is drawn from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// Range `[min, max)` of a mean shift (random sign).
    pub mean_shift: [f64; 2],
    /// Range `[min, max)` of a width shift (random sign).
    pub width_shift: [f64; 2],
    /// Number of dead bins, uniform in `[min, max]`.
    pub dead_bins: [usize; 2],
    /// The binomial systematic of the runs a fault redraws: set it to the
    /// generator's `p_binomial`.
    pub p_binomial: f64,
    /// Range `[min, max)` of the events of a run a fault redraws: set it
    /// to the generator's `events`, so a faulty run's integral is drawn
    /// like a working one's.
    pub events: [u64; 2],
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            p_start: 0.01,
            transient: 0.0,
            fix_delay: 2,
            kinds: vec![
                FaultKind::MeanShift,
                FaultKind::WidthShift,
                FaultKind::DeadBins,
            ],
            mean_shift: [0.25, 0.75],
            width_shift: [0.05, 0.2],
            dead_bins: [1, 19],
            p_binomial: 0.4,
            events: [2000, 20000],
        }
    }
}

/// Where the learner's reward comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardFrom {
    /// The simulator's truth for every run (an oracle: no deployment has it).
    Truth,
    /// The shifter's answers and the delayed certification only.
    Shifter,
}

/// Which step a label's reward is credited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Credit {
    /// The step of the run it is about (the learner knows which run a
    /// certification is for), when that step is still in the rollout
    /// being collected; else the step at which it arrives.
    Run,
    /// The step at which it arrives.
    Arrival,
}

/// The feedback a learner gets (`env.feedback` of `rl_train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Feedback {
    /// `truth` (the oracle reward) or `shifter` (answers and certification
    /// labels only).
    pub reward_from: RewardFrom,
    /// Probability that a shifter's answer the learner is told is wrong.
    pub label_noise: f64,
    /// Offline: probability that a rejected run is certified later anyway
    /// (its label then arrives like an accepted run's).
    pub certify_rejected: f64,
    /// Which step a certification label is credited to: `run` or
    /// `arrival`.
    pub credit: Credit,
}

impl Default for Feedback {
    fn default() -> Self {
        Self {
            reward_from: RewardFrom::Truth,
            label_noise: 0.0,
            certify_rejected: 0.1,
            credit: Credit::Run,
        }
    }
}

impl Feedback {
    /// Checks the feedback; each error names its key in `feedback:`.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("label_noise", self.label_noise),
            ("certify_rejected", self.certify_rejected),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad_param(name, format!("{p} is not a probability"));
            }
        }
        if self.label_noise >= 0.5 {
            return bad_param(
                "label_noise",
                "at 0.5 or more the answers carry no information (or the opposite one)",
            );
        }
        Ok(())
    }
}

/// The environment, as the YAML declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `offline` (accept / reject / ask per collected run) or `online`
    /// (continue / alarm while data are taken).
    pub regime: Regime,
    /// The first runs of each dataset have known labels (DINAMO's
    /// historical regime): they tune alpha and the threshold and build the
    /// reference. The agent acts on the rest.
    pub warmup_runs: usize,
    /// DINAMO-S alpha, or `auto` (tuned on the warm-up runs).
    pub alpha: AutoOr<f64>,
    /// DINAMO-S threshold on ln chi2_nu, or `auto` (best balanced accuracy
    /// on the warm-up runs): the baseline's flag and the observation's zero.
    pub threshold: AutoOr<f64>,
    /// Runs after which a run that was accepted (offline) or taken without
    /// an alarm (online) gets its label from the offline certification; the
    /// good ones then update the reference. `null`: never, only the
    /// shifter's confirmations do.
    pub confirm_delay: Option<usize>,
    /// Runs of history the observation summarises.
    pub history: usize,
    /// EWMA alpha of the shadow reference: every run the policy kept,
    /// confirmed or not (its score against the run is an observation, so
    /// the agent can tell a slow drift its recent runs share from a lone
    /// excursion; it never replaces the DINAMO-S reference).
    pub shadow_alpha: f64,
    /// Reward weights.
    pub rewards: Rewards,
    /// What the learner's reward is built from (the truth, or the
    /// shifter's answers and the certification only).
    pub feedback: Feedback,
    /// Faults (online regime only).
    pub faults: Faults,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            regime: Regime::Offline,
            warmup_runs: 300,
            alpha: AutoOr::Auto,
            threshold: AutoOr::Auto,
            confirm_delay: Some(20),
            history: 10,
            shadow_alpha: 0.5,
            rewards: Rewards::default(),
            feedback: Feedback::default(),
            faults: Faults::default(),
        }
    }
}

impl Rewards {
    /// Checks the weights; each error names its key in `rewards:`.
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [
            ("good_kept", self.good_kept),
            ("bad_accepted", self.bad_accepted),
            ("good_rejected", self.good_rejected),
            ("shifter_call", self.shifter_call),
            ("false_alarm", self.false_alarm),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad_param(
                    name,
                    format!("{w} is not a non-negative number (its sign is in its name)"),
                );
            }
        }
        Ok(())
    }
}

impl Faults {
    /// Checks the faults of an environment of `regime`; each error names
    /// its key in `faults:`.
    pub fn validate(&self, regime: Regime) -> Result<()> {
        if !(0.0..=1.0).contains(&self.p_start) {
            return bad_param("p_start", format!("{} is not a probability", self.p_start));
        }
        if !(0.0..=1.0).contains(&self.transient) {
            return bad_param(
                "transient",
                format!("{} is not a probability", self.transient),
            );
        }
        if !(0.0..=1.0).contains(&self.p_binomial) {
            return bad_param(
                "p_binomial",
                format!("{} is not a probability", self.p_binomial),
            );
        }
        if regime == Regime::Online && self.kinds.is_empty() {
            return bad_param("kinds", "the online regime needs at least one kind");
        }
        for (name, r) in [
            ("mean_shift", self.mean_shift),
            ("width_shift", self.width_shift),
        ] {
            if !(0.0 <= r[0] && r[0] <= r[1]) {
                return bad_param(name, format!("{r:?} is not a non-negative range"));
            }
        }
        if self.events[0] == 0 || self.events[0] > self.events[1] {
            return bad_param(
                "events",
                format!("{:?} is not a range of at least one event", self.events),
            );
        }
        if self.dead_bins[0] > self.dead_bins[1] {
            return bad_param("dead_bins", format!("{:?} is not a range", self.dead_bins));
        }
        Ok(())
    }
}

impl EnvConfig {
    /// Checks the environment; each error names its key in the
    /// environment's block (`rewards.shifter_call`, `warmup_runs`).
    pub fn validate(&self) -> Result<()> {
        within("rewards", self.rewards.validate())?;
        within("feedback", self.feedback.validate())?;
        if self.warmup_runs < 2 {
            return bad_param("warmup_runs", "needs at least 2 runs with known labels");
        }
        if self.history == 0 {
            return bad_param("history", "must be at least 1 run");
        }
        if let AutoOr::Value(a) = self.alpha
            && !(0.0..1.0).contains(&a)
        {
            return bad_param("alpha", format!("{a} is not in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.shadow_alpha) {
            return bad_param(
                "shadow_alpha",
                format!("{} is not in [0, 1)", self.shadow_alpha),
            );
        }
        within("faults", self.faults.validate(self.regime))
    }
}
