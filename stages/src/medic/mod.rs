//! MEDIC (medic.txt): Delphes events to sliding windows, the set-encoder
//! ensemble that classifies them, its figures of merit next to a physics
//! rule, and the alerts a shifter reads.

// Formats shared by the family's files.
pub mod tables;

// Library: the network, its CPU inference kernels, streaming scoring and
// the figures of merit on plain types.
pub mod fused_encoder;
pub mod metrics;
pub mod model;
pub mod streaming;

// Shared by the stages: events and windows in memory, batches, folds, a
// trained ensemble loaded (for inference, or as a student's teacher), the
// training loss and tables.
pub mod batches;
pub mod data;
pub mod ensemble;
pub mod folds;
pub mod training;

// Stages, one per kind.
pub mod alerts;
pub mod delphes_convert;
pub mod filter_events;
pub mod medic_baseline;
pub mod medic_compare;
pub mod medic_infer;
pub mod medic_metrics;
pub mod medic_train;
pub mod sliding_windows;

// Fixtures of the family's tests, and the bundled Delphes sample every
// family that reads Delphes events tests with.
#[cfg(test)]
pub(crate) mod test_support;
