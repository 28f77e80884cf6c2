//! DINAMO (dinamo.txt): synthetic runs, the DINAMO-S and DINAMO-ML
//! references, the DQM metrics of section 3 and the comparison of methods.

// Formats shared by the family's files.
pub mod tables;

// Library: the paper's algorithms and networks on plain types.
pub mod adamw;
pub mod alpha_scan;
pub mod bands;
pub mod batched_reference;
pub mod cpu_layers;
pub mod cpu_network;
pub mod dropout_stream;
pub mod generator;
pub mod online_reference;
pub mod reference;
pub mod reference_net;
pub mod score_plots;
pub mod tokens;

// Stages, one per kind.
pub mod dinamo_ml;
pub mod dinamo_s;
pub mod dqm_compare;
pub mod dqm_metrics;
pub mod runs_from_dqm;
pub mod synth_runs;

// Fixtures of the family's tests.
#[cfg(test)]
pub(crate) mod test_support;
