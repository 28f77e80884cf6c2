//! `brilcalc_lumi`: per-LS delivered and recorded luminosity and average
//! pile-up from the CMS luminosity tool's CSV (`brilcalc lumi --byls
//! --output-style csv`), in the file's own unit, for stages that weigh LS
//! by luminosity (`ls_from_dqm`, then `certify`).

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::brilcalc::parse;
use crate::dqm::tables::{luminosity_batch, luminosity_schema};
use crate::error::{Result, StageError, bad_param};
use crate::files::{fingerprint, resolve_glob};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Reads brilcalc's per-LS CSV files.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BrilcalcLumi {
    /// CSV file or glob pattern, relative to the directory `pipeline` runs
    /// in; files are read in sorted order and must share one unit.
    pub files: String,
}

impl StageConfig for BrilcalcLumi {
    const KIND: &'static str = "brilcalc_lumi";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Per-LS luminosity (delivered, recorded, pile-up) from the CMS luminosity tool's CSV, in the file's unit";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        if self.files.trim().is_empty() {
            return bad_param("files", "name the CSV files (a path or a glob)");
        }
        Ok(())
    }
}

impl BrilcalcLumi {
    fn files(&self) -> Result<Vec<PathBuf>> {
        resolve_glob(&self.files, "files")
    }
}

impl Stage for BrilcalcLumi {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: luminosity_schema(),
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(Some(fingerprint(&self.files()?)?))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let mut unit: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for path in self.files()? {
            let at = |why: String| StageError::data(format!("{}: {why}", path.display()));
            let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
            let file = parse(&text).map_err(at)?;
            match &unit {
                Some(u) if u != &file.unit => {
                    return Err(at(format!(
                        "luminosity in `{}`, an earlier file in `{u}`: give files of one unit",
                        file.unit
                    )));
                }
                _ => unit = Some(file.unit.clone()),
            }
            for r in &file.rows {
                if !seen.insert((r.run, r.ls)) {
                    return Err(at(format!("run {} LS {} appears twice", r.run, r.ls)));
                }
            }
            let recorded: f64 = file.rows.iter().map(|r| r.recorded).sum();
            ctx.reporter.info(&format!(
                "{}: {} LS, {recorded:.4} {} recorded",
                path.display(),
                file.rows.len(),
                file.unit
            ));
            ctx.output.write("main", luminosity_batch(&file)?)?;
        }
        Ok(())
    }
}
