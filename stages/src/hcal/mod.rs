//! HCAL occupancy monitoring (hcal_graphstad_transfer_learning.txt): channel
//! geometry and RBX graph from the Delphes card, per-channel hit rates from
//! real Delphes events, occupancy maps per lumisection, the paper's
//! renormalization and synthetic anomalies, and the GraphSTAD
//! spatio-temporal autoencoder with transfer learning.

// Formats shared by the family's files.
pub mod tables;

// Library: geometry, renormalization, the network, the generator's HCAL
// structure and the window scores, on plain types.
pub mod geometry;
pub mod model;
pub mod renormalization;
pub mod structure;
pub mod window_scores;

// Shared by the stages: scoring maps with a model (errors, σ_i, α), and
// training one.
pub mod scoring;
pub mod training;

// Stages, one per kind.
pub mod channel_metrics;
pub mod delphes_maps;
pub mod graphstad_score;
pub mod graphstad_train;
pub mod hcal_rates;
pub mod inject_anomalies;
pub mod lumi_maps;
pub mod maps_from_dqm;
pub mod renormalize_occupancy;
pub mod transfer_compare;
pub mod transfer_study;

// Fixtures of the family's tests.
#[cfg(test)]
pub(crate) mod test_support;
