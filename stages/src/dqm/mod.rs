//! Real DQM data in (issue 28): monitoring elements from the DQM GUI's ROOT
//! files of histograms and from per-LS DataFrames, into one long histograms
//! table that the other families read without knowing where a histogram
//! came from.

// Formats shared by the family's files.
pub mod tables;

// Library: ROOT files of objects, and the histograms in them.
pub mod histogram;
pub mod root_file;

// Stages, one per kind.
pub mod dqm_dataframe;
pub mod dqm_root;
