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
//! ([`env`]), PPO ([`ppo`]), and the rule baselines ([`rl_evaluate`]).

pub mod env;
pub mod ppo;
pub mod rl_evaluate;
pub mod rl_train;
pub mod tables;
