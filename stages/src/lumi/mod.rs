//! Per-lumisection certification (cms_jetmet_autoencoder_poster.txt): runs
//! of lumisections built from real Delphes events, monitored histograms
//! (MEs) per LS, one dense autoencoder per ME, per-LS scores (autoencoder
//! MSE and the classical χ² baseline) with thresholds, and the certificate
//! with the luminosity it recovers.

// Formats shared by the family's files.
pub mod tables;

// Library: the autoencoder; the monitored elements and pile-up overlay.
pub mod model;
pub mod monitor;

// Shared by the scoring stages: reference shapes, thresholds and flags, the
// scores table.
pub mod reference;
pub mod scoring;
pub mod threshold;

// Shared by `certify`: the tallies of certified LS.
pub mod tally;

// Stages, one per kind.
pub mod certify;
pub mod ls_from_dqm;
pub mod ls_histograms;
pub mod lumi_ae_score;
pub mod lumi_ae_train;
pub mod lumi_chi2_score;
pub mod lumi_runs;
pub mod method_scan;
pub mod remainder_check;

// Fixtures of the family's tests.
#[cfg(test)]
pub(crate) mod test_support;
