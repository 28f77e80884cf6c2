//! `dqm_root`: monitoring elements from ROOT files of histograms (the DQM
//! GUI's harvested files, `DQM_V0001_R000<run>__<dataset>__DQMIO.root`,
//! or any file of TH1/TH2/TH3/TProfile objects) into the long histograms
//! table (`dqm::tables`), one row per (run, LS, ME).
//!
//! An object's path `DQMData/Run <n>/<Subsystem>/Run summary/<rest>` gives
//! run `n` and ME `<Subsystem>/<rest>`, as the DQM GUI names MEs; other
//! layouts keep their path as the ME name and take the run from the file
//! name (`run_pattern`). Files are read in sorted order, keys in directory
//! order; histograms are decoded in parallel a batch at a time, so memory
//! holds one batch, not the files.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use rayon::prelude::*;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::histogram::{SUPPORTED, decode, is_supported};
use crate::dqm::me_patterns::MePatterns;
use crate::dqm::root_file::{Key, RootFile};
use crate::dqm::tables::{Consistency, HistogramRow, histograms_batch, histograms_schema};
use crate::error::{Result, StageError, bad_param};
use crate::files::{fingerprint, resolve_glob};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// What to do with an object whose path matches `mes` but whose class is
/// not a histogram this reader knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtherClasses {
    /// Refuse the file, naming the ME and its class.
    #[default]
    Error,
    /// Leave it out (DQM files hold strings and numbers beside histograms);
    /// the stage says how many it left.
    Skip,
}

/// Reads histograms of ROOT files into the histograms table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DqmRoot {
    /// File or glob pattern (`dqm/DQM_V0001_R*.root`), relative to the
    /// directory `pipeline` runs in; files are read in sorted order.
    pub files: String,
    /// ME name patterns (`Hcal/DigiTask/Occupancy/depth/*`): `*` within a
    /// folder, `**` across folders, `?` one character. An ME is read when
    /// any pattern matches.
    pub mes: Vec<String>,
    /// Regular expression on the file name whose first group is the run
    /// number, for objects outside a `Run <n>` folder (default: DQM's
    /// `..._R000<run>__...`).
    pub run_pattern: String,
    /// Regular expression on the ME name whose first group is the
    /// lumisection, for files with per-LS folders (`LS (\d+)/`); the part it
    /// matches leaves the ME name, so an ME keeps one name across LS.
    /// `null`: run histograms.
    pub ls_pattern: Option<String>,
    /// An object the patterns select whose class is not a known histogram.
    pub other_classes: OtherClasses,
    /// Histograms decoded and written per batch (memory holds one batch).
    pub batch_size: usize,
}

impl Default for DqmRoot {
    fn default() -> Self {
        Self {
            files: String::new(),
            mes: vec!["**".into()],
            run_pattern: r"_R0*(\d+)".into(),
            ls_pattern: None,
            other_classes: OtherClasses::Error,
            batch_size: 2048,
        }
    }
}

impl StageConfig for DqmRoot {
    const KIND: &'static str = "dqm_root";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "ROOT files of histograms (DQM GUI layout or any): TH1/TH2/TH3 of every type and TProfile, selected by ME pattern, into one row per (run, LS, ME) with bins, under/overflow, entries and sums";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        if self.files.trim().is_empty() {
            return bad_param("files", "name the ROOT files (a path or a glob)");
        }
        MePatterns::new(&self.mes).map_err(|e| StageError::param("mes", e))?;
        regex_with_group("run_pattern", &self.run_pattern)?;
        if let Some(p) = &self.ls_pattern {
            regex_with_group("ls_pattern", p)?;
        }
        if self.batch_size == 0 {
            return bad_param("batch_size", "must be at least 1");
        }
        Ok(())
    }
}

fn regex_with_group(param: &str, pattern: &str) -> Result<Regex> {
    let re = Regex::new(pattern).map_err(|e| {
        StageError::param(
            param,
            format!("`{pattern}` is not a regular expression: {e}"),
        )
    })?;
    if re.captures_len() < 2 {
        return bad_param(
            param,
            format!("`{pattern}` needs a group `(..)` holding the number"),
        );
    }
    Ok(re)
}

/// A DQM path split into its run and ME name: `DQMData/Run 5/Hcal/Run
/// summary/a/b` -> (Some(5), `Hcal/a/b`); other paths stay whole.
pub fn dqm_name(path: &str) -> (Option<i64>, String) {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() >= 3
        && parts[0] == "DQMData"
        && let Some(run) = parts[1]
            .strip_prefix("Run ")
            .and_then(|r| r.trim().parse::<i64>().ok())
    {
        let rest: Vec<&str> = parts[2..]
            .iter()
            .copied()
            .filter(|p| *p != "Run summary")
            .collect();
        return (Some(run), rest.join("/"));
    }
    (None, path.to_string())
}

/// `me` without the part `re` matched (the LS folder of a per-LS ME), so
/// one ME keeps one name across LS: `JetMET/LS 17/MET` -> `JetMET/MET`.
fn without_match(re: &Regex, me: &str) -> String {
    let cut = re.replace(me, "");
    cut.split('/')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The number in the first group of `re` on `text`.
fn number(re: &Regex, text: &str) -> Option<i64> {
    re.captures(text)?.get(1)?.as_str().parse().ok()
}

/// The compiled selection of a run of the stage.
struct Selection {
    mes: MePatterns,
    run: Regex,
    ls: Option<Regex>,
}

/// One histogram to decode: its file and key, and its row's names.
struct Work {
    file: Arc<RootFile>,
    key: Key,
    run: i64,
    ls: Option<i64>,
    me: String,
}

impl DqmRoot {
    fn files(&self) -> Result<Vec<PathBuf>> {
        resolve_glob(&self.files, "files")
    }

    fn selection(&self) -> Result<Selection> {
        Ok(Selection {
            mes: MePatterns::new(&self.mes).map_err(|e| StageError::param("mes", e))?,
            run: regex_with_group("run_pattern", &self.run_pattern)?,
            ls: self
                .ls_pattern
                .as_deref()
                .map(|p| regex_with_group("ls_pattern", p))
                .transpose()?,
        })
    }

    /// The selected histograms of one file, in directory order; counts
    /// the objects of other classes it leaves out in `skipped`.
    fn select(
        &self,
        path: &std::path::Path,
        sel: &Selection,
        skipped: &mut usize,
    ) -> Result<Vec<Work>> {
        let at = |e: String| StageError::data(format!("{}: {e}", path.display()));
        let file = Arc::new(RootFile::open(path).map_err(at)?);
        let name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let mut out = Vec::new();
        for key in file.keys().map_err(at)? {
            let (run, me) = dqm_name(&key.path);
            if !sel.mes.matches(&me) {
                continue;
            }
            if !is_supported(&key.class) {
                if self.other_classes == OtherClasses::Skip {
                    *skipped += 1;
                    continue;
                }
                return Err(StageError::data(format!(
                    "{}: ME `{me}` is a {}, not a histogram this reader knows ({SUPPORTED}); narrow `mes` or set `other_classes: skip`",
                    path.display(),
                    key.class
                )));
            }
            let run = run.or_else(|| number(&sel.run, &name)).ok_or_else(|| {
                StageError::data(format!(
                    "{}: ME `{me}` has no run number: it is not in a `DQMData/Run <n>` folder and the file name does not match run_pattern `{}`",
                    path.display(),
                    self.run_pattern
                ))
            })?;
            let (ls, me) = match &sel.ls {
                Some(re) => {
                    let ls = number(re, &me).ok_or_else(|| {
                        StageError::data(format!(
                            "{}: ME `{me}` does not match ls_pattern `{}`",
                            path.display(),
                            re.as_str()
                        ))
                    })?;
                    (Some(ls), without_match(re, &me))
                }
                None => (None, me),
            };
            out.push(Work {
                file: file.clone(),
                key,
                run,
                ls,
                me,
            });
        }
        Ok(out)
    }
}

/// Decodes `work` in parallel, in order.
fn decode_all(work: &[Work]) -> Result<Vec<HistogramRow>> {
    work.par_iter()
        .map(|w| {
            let path = w.file.path().display().to_string();
            let object = w
                .file
                .object(&w.key)
                .map_err(|e| StageError::data(format!("{path}: ME `{}`: {e}", w.me)))?;
            let histogram = decode(&w.key.class, &object)
                .map_err(|e| StageError::data(format!("{path}: ME `{}`: {e}", w.me)))?;
            Ok(HistogramRow {
                file: path,
                run: w.run,
                ls: w.ls,
                me: w.me.clone(),
                histogram,
            })
        })
        .collect()
}

/// Checks `rows` against the rows before them and writes them.
fn write(
    ctx: &mut RunContext<'_>,
    rows: &[HistogramRow],
    consistency: &mut Consistency,
) -> Result<()> {
    for r in rows {
        consistency
            .check(r)
            .map_err(|e| StageError::data(format!("{}: ME `{}`: {e}", r.file, r.me)))?;
    }
    ctx.output.write("main", histograms_batch(rows)?)
}

/// Files open at once while their keys wait to be decoded.
const OPEN_FILES: usize = 64;

impl Stage for DqmRoot {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: histograms_schema(),
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(Some(fingerprint(&self.files()?)?))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let files = self.files()?;
        let sel = self.selection()?;
        let progress = ctx.reporter.progress(files.len() as u64, "files");
        let (mut pending, mut open, mut written, mut skipped) =
            (Vec::new(), 0usize, 0usize, 0usize);
        let mut consistency = Consistency::default();
        for path in &files {
            let work = self.select(path, &sel, &mut skipped)?;
            if work.is_empty() {
                return Err(StageError::data(format!(
                    "{}: no histogram matches `mes` {:?}",
                    path.display(),
                    self.mes
                )));
            }
            pending.extend(work);
            open += 1;
            while pending.len() >= self.batch_size || (open >= OPEN_FILES && !pending.is_empty()) {
                let n = pending.len().min(self.batch_size);
                let batch: Vec<Work> = pending.drain(..n).collect();
                write(ctx, &decode_all(&batch)?, &mut consistency)?;
                written += n;
                open = usize::from(!pending.is_empty());
            }
            progress.inc(1);
        }
        if !pending.is_empty() {
            write(ctx, &decode_all(&pending)?, &mut consistency)?;
            written += pending.len();
        }
        ctx.reporter.info(&format!(
            "{written} histograms from {} files{}",
            files.len(),
            if skipped > 0 {
                format!(", {skipped} objects of other classes left out")
            } else {
                String::new()
            }
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dqm_paths_give_run_and_me_name() {
        assert_eq!(
            dqm_name("DQMData/Run 355100/Hcal/Run summary/DigiTask/Occupancy/depth1"),
            (Some(355100), "Hcal/DigiTask/Occupancy/depth1".into())
        );
        assert_eq!(dqm_name("top/h1"), (None, "top/h1".into()));
        assert_eq!(
            dqm_name("DQMData/Run x/h"),
            (None, "DQMData/Run x/h".into())
        );
        let ls = regex_with_group("ls_pattern", r"LS (\d+)/").unwrap();
        assert_eq!(number(&ls, "JetMET/LS 17/MET"), Some(17));
        assert_eq!(without_match(&ls, "JetMET/LS 17/MET"), "JetMET/MET");
        let re = regex_with_group("run_pattern", r"_R0*(\d+)").unwrap();
        assert_eq!(
            number(&re, "DQM_V0001_R000355100__ZeroBias__Run2022__DQMIO.root"),
            Some(355100)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let base = DqmRoot {
            files: "x.root".into(),
            ..Default::default()
        };
        base.validate().unwrap();
        let e = DqmRoot {
            run_pattern: "R(".into(),
            ..base.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.as_param().unwrap().0, "run_pattern");
        let e = DqmRoot {
            run_pattern: r"R\d+".into(),
            ..base.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("needs a group"), "{e}");
        let e = DqmRoot {
            mes: vec![],
            ..base.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.as_param().unwrap().0, "mes");
        let e = DqmRoot {
            files: String::new(),
            ..base
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.as_param().unwrap().0, "files");
    }

    /// The example files of `scripts/make_dqm_examples.py` (written with
    /// uproot), as `expected.json` describes them.
    fn example_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/dqm/reader")
    }

    fn digest(values: &[f64]) -> String {
        use sha2::{Digest, Sha256};
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn read_all(stage: &DqmRoot) -> Result<Vec<HistogramRow>> {
        let out = crate::in_memory::run_in_memory(stage, &[])?;
        crate::dqm::tables::read_histograms(&out.table("main"), "main")
    }

    #[test]
    fn every_bin_of_every_class_equals_what_uproot_wrote() {
        let dir = example_dir();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let stage = DqmRoot {
            files: format!("{}/*.root", dir.display()),
            other_classes: OtherClasses::Skip,
            ..Default::default()
        };
        let rows = read_all(&stage).unwrap();
        let mut seen = 0;
        let mut classes = std::collections::BTreeSet::new();
        for (file, keys) in expected.as_object().unwrap() {
            for (path, want) in keys.as_object().unwrap() {
                let (run, me) = dqm_name(path);
                let row = rows
                    .iter()
                    .find(|r| r.file.ends_with(file.as_str()) && r.me == me)
                    .unwrap_or_else(|| panic!("{file}: {path} not read"));
                let h = &row.histogram;
                let at = format!("{file}: {path}");
                assert_eq!(h.class, want["class"], "{at}");
                classes.insert(h.class.clone());
                if let Some(run) = run {
                    assert_eq!(row.run, run, "{at}");
                } else {
                    assert_eq!(row.run, 355200, "{at}: run from the file name");
                }
                let axes = want["axes"].as_array().unwrap();
                assert_eq!(h.axes.len(), axes.len(), "{at}");
                for (a, w) in h.axes.iter().zip(axes) {
                    assert_eq!(a.bins as u64, w["bins"].as_u64().unwrap(), "{at}");
                    assert_eq!(a.low, w["low"].as_f64().unwrap(), "{at}");
                    assert_eq!(a.high, w["high"].as_f64().unwrap(), "{at}");
                    let edges: Option<Vec<f64>> = w["edges"]
                        .as_array()
                        .map(|e| e.iter().map(|v| v.as_f64().unwrap()).collect());
                    assert_eq!(a.edges, edges, "{at}");
                }
                assert_eq!(
                    h.contents.len() as u64,
                    want["cells"].as_u64().unwrap(),
                    "{at}"
                );
                assert_eq!(
                    digest(&h.contents),
                    want["contents_sha256"],
                    "{at}: contents"
                );
                assert_eq!(digest(&h.sumw2), want["sumw2_sha256"], "{at}: sumw2");
                assert_eq!(
                    h.bin_entries.as_deref().map(digest),
                    want["bin_entries_sha256"].as_str().map(String::from),
                    "{at}: bin entries"
                );
                assert_eq!(h.entries, want["entries"].as_f64().unwrap(), "{at}");
                assert_eq!(h.sum_w, want["sum_w"].as_f64().unwrap(), "{at}");
                seen += 1;
            }
        }
        assert_eq!(seen, rows.len(), "every histogram read was expected");
        assert!(seen >= 60, "{seen}");
        for class in [
            "TH1C", "TH1S", "TH1I", "TH1F", "TH1D", "TH2F", "TH2I", "TH3F", "TH3D", "TProfile",
        ] {
            assert!(
                classes.contains(class),
                "{class} not in the examples: {classes:?}"
            );
        }
    }

    #[test]
    fn selection_by_pattern_and_refusal_of_other_classes() {
        let dir = example_dir();
        let one = format!("{}/DQM_V0001_R000355100__*.root", dir.display());
        let stage = DqmRoot {
            files: one.clone(),
            mes: vec!["Hcal/DigiTask/Occupancy/depth/*".into()],
            ..Default::default()
        };
        let rows = read_all(&stage).unwrap();
        let mes: Vec<&str> = rows.iter().map(|r| r.me.as_str()).collect();
        assert_eq!(
            mes,
            [
                "Hcal/DigiTask/Occupancy/depth/depth1",
                "Hcal/DigiTask/Occupancy/depth/depth2"
            ]
        );
        assert!(rows.iter().all(|r| r.run == 355100 && r.ls.is_none()));
        // `**` reaches the TObjString beside the histograms: refused by name.
        let all = DqmRoot {
            files: one.clone(),
            ..Default::default()
        };
        let err = read_all(&all).unwrap_err().to_string();
        assert!(
            err.contains("ME `Hcal/EventInfo/reportSummaryText` is a TObjString"),
            "{err}"
        );
        // A pattern that matches nothing names the file.
        let none = DqmRoot {
            files: one,
            mes: vec!["Ecal/**".into()],
            ..Default::default()
        };
        let err = read_all(&none).unwrap_err().to_string();
        assert!(
            err.contains("no histogram matches `mes`") && err.contains("R000355100"),
            "{err}"
        );
    }

    /// Truncated, non-ROOT and byte-flipped files give errors naming the
    /// file, never a panic or a partial table.
    #[test]
    fn corrupt_files_are_refused_by_name() {
        let src = example_dir().join("histograms_R355200.root");
        let bytes = std::fs::read(&src).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let read = |data: &[u8], name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            let stage = DqmRoot {
                files: path.display().to_string(),
                ..Default::default()
            };
            std::panic::catch_unwind(|| read_all(&stage))
                .unwrap_or_else(|_| panic!("{name}: the reader panicked"))
        };
        let err = read(&bytes[..bytes.len() / 2], "cut_R1.root")
            .map(|r| r.len())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cut_R1.root") && err.contains("truncated"),
            "{err}"
        );
        let err = read(b"not a root file at all", "text_R1.root")
            .map(|r| r.len())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("text_R1.root") && err.contains("not a ROOT file"),
            "{err}"
        );
        // One byte set to 0xff at 1500 places: read or refused, never a panic.
        let (mut refused, mut read_fine) = (0, 0);
        for at in (0..bytes.len()).step_by(bytes.len() / 1500 + 1) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xff;
            match read(&flipped, "flip_R1.root") {
                Ok(_) => read_fine += 1,
                Err(e) => {
                    assert!(e.to_string().contains("flip_R1.root"), "{e}");
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0 && read_fine > 0,
            "{refused} refused, {read_fine} read"
        );
    }
}
