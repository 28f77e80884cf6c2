//! Per-lumisection certification (cms_jetmet_autoencoder_poster.txt): runs
//! of lumisections built from real Delphes events, monitored histograms
//! (MEs) per LS, one dense autoencoder per ME, per-LS scores (autoencoder
//! MSE and the classical χ² baseline) with thresholds, and the certificate
//! with the luminosity it recovers.

pub mod certify;
pub mod ls_histograms;
pub mod lumi_ae_score;
pub mod lumi_ae_train;
pub mod lumi_chi2_score;
pub mod lumi_runs;
pub mod model;
pub mod scoring;
pub mod tables;
pub mod threshold;
