//! Per-lumisection certification (cms_jetmet_autoencoder_poster.txt): runs
//! of lumisections built from real Delphes events, monitored histograms
//! (MEs) per LS; the autoencoder and the certificate are the next steps.

pub mod ls_histograms;
pub mod lumi_runs;
pub mod tables;
