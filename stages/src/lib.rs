//! Stage implementations of dqm-pipeline, one module per stage family.
//!
//! A stage is a config struct (its typed YAML parameters) implementing
//! [`stage::Stage`]: it declares its output schemas from its inputs' and does
//! its work on Parquet-backed tables. [`registry::all`] lists every kind.

// `!(x > 0.0)` is deliberate in parameter checks: it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

// The contract a stage implements: imports no stage.
pub mod error;
pub mod input;
pub mod stage;

// Helpers shared by stages of several families.
pub mod arrow_util;
pub mod files;
pub mod in_memory;
pub mod nn;
pub mod parallel;
pub mod params;
pub mod plots;
pub mod sampling;
pub mod simd;
pub mod stats;
pub(crate) mod vector_math;

// Stage families, and stages of no family.
pub mod dinamo;
pub mod dqm;
pub mod hcal;
pub mod lumi;
pub mod medic;
pub mod read_parquet;
pub mod rl;
pub mod union;

// The one list of stage kinds: imports every stage, imported by none.
pub mod registry;
