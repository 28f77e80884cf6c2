//! Stage implementations of dqm-pipeline, one module per stage family.
//!
//! A stage is a config struct (its typed YAML parameters) implementing
//! [`api::Stage`]: it declares its output schemas from its inputs' and does
//! its work on Parquet-backed tables. [`registry::all`] lists every kind.

pub mod api;
pub mod arrow_util;
pub mod dinamo;
pub mod nn;
pub mod params;
pub mod parquet_source;
pub mod registry;
pub mod stats;
