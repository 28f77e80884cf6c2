//! Real DQM data in (issue 28): monitoring elements from the DQM GUI's ROOT
//! files of histograms and from per-LS DataFrames, into one long histograms
//! table that the other families read without knowing where a histogram
//! came from; the certification files beside them (Golden and DCS-only
//! JSON, per-LS luminosity).

// Formats shared by the family's files.
pub mod tables;

// Library: ROOT files of objects, the histograms in them, CMS LS lists and
// the luminosity tool's CSV.
pub mod brilcalc;
pub mod histogram;
pub mod ls_ranges;
pub mod me_patterns;
pub mod root_file;

// Stages, one per kind.
pub mod brilcalc_lumi;
pub mod cms_json;
pub mod cms_json_intersect;
pub mod dqm_dataframe;
pub mod dqm_root;
