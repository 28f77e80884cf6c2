//! Human-in-the-loop reinforcement learning for DQM (rl_dqm_abstract.txt).
//!
//! The abstract gives the problem, not a method: automate DQM in an
//! "online" regime (spot a detector problem while data are taken, so it is
//! fixed promptly) and an "offline" one (classify collected data as usable
//! or not), with a goal that counts human effort (fewer redundant shifter
//! actions), under rapidly changing conditions that need continual
//! retraining, by RL with human feedback. Everything else here is this
//! project's design: the environment on DINAMO's run stream with a live
//! DINAMO-S reference that learns only from confirmed runs
//! ([`env`], configured by [`env_config`]), PPO ([`ppo`]), the rules a
//! DQM expert would write ([`rules`], tuned by [`rl_tune_rules`]) and the
//! comparison ([`rl_evaluate`]).

// Formats shared by the family's files.
pub mod tables;

// Library: the environment's configuration and the learning algorithm.
pub mod env_config;
pub mod ppo;

// Library: the frontier of a family of rules, the classifiers.
pub mod classifier;
pub mod frontier;

// Shared by the stages: the environment, which plays a DINAMO runs table,
// the online faults it draws, the feedback a learner gets, the expert rules that play it, the trained
// agent read back, the totals of episodes, what a policy observed, the
// comparisons of policies, the rows of the evaluation and the
// per-fault-kind tables.
pub mod agent;
pub mod comparison;
pub mod env;
pub mod evaluated;
pub mod fault_tables;
pub mod faults;
pub mod feedback;
pub mod learner;
pub mod observed;
pub mod rules;
pub mod totals;
pub mod tuning;

// Stages, one per kind.
pub mod rl_evaluate;
pub mod rl_train;
pub mod rl_tune_classifiers;
pub mod rl_tune_rules;

// Fixtures of the family's tests.
#[cfg(test)]
pub(crate) mod test_support;
