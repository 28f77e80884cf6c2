//! Stage implementations of dqm-pipeline, one module per stage family.
//!
//! A stage is a config struct (its typed YAML parameters) implementing
//! [`api::Stage`]: it declares its output schemas from its inputs' and does
//! its work on Parquet-backed tables. [`registry::all`] lists every kind.

// `!(x > 0.0)` is deliberate in parameter checks: it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod api;
pub mod arrow_util;
pub mod dinamo;
pub mod files;
pub mod medic;
pub mod nn;
pub mod params;
pub mod parquet_source;
pub mod plots;
pub mod registry;
pub mod stats;
pub mod union;
