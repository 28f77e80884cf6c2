//! The engine behind the `pipeline` command (`src/main.rs` is its command
//! line): pipeline YAML ([`spec`]), DAG planning and cache keys ([`plan`]),
//! the content-addressed cache ([`cache`]), execution ([`exec`]), progress
//! ([`progress`]), SQL over cached tables ([`query`]), descriptions
//! ([`describe`]), HTML reports ([`report`]) and batch submission ([`slurm`]). A library so that tools
//! beside the command (the fuzz harness, `src/bin/fuzz/`) drive the same
//! code a user runs.

pub mod cache;
pub mod describe;
pub mod exec;
pub mod plan;
pub mod progress;
pub mod query;
pub mod report;
pub mod slurm;
pub mod spec;
