//! `cms_json`: a CMS LS list — the Golden JSON the certification team
//! publishes, the DCS-only JSON, or any file of that format (`{"<run>":
//! [[first, last], ...]}`, inclusive ranges) — as a table of LS ranges, so
//! stages can label LS good or bad and intersect certificates with it.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::ls_ranges::LsRanges;
use crate::dqm::tables::{ls_lists_batch, ls_lists_schema};
use crate::error::{Result, StageError, bad_param};
use crate::files::fingerprint;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Reads a CMS JSON LS list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CmsJson {
    /// The JSON file, relative to the directory `pipeline` runs in.
    pub file: String,
    /// The list's name in the `list` column (`golden`, `dcs`); empty: the
    /// file's name without its extension.
    pub name: String,
}

impl StageConfig for CmsJson {
    const KIND: &'static str = "cms_json";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "A CMS LS list (Golden or DCS-only JSON: run keys, inclusive LS ranges) as a table of LS ranges";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        if self.file.trim().is_empty() {
            return bad_param("file", "name the JSON file");
        }
        Ok(())
    }
}

impl CmsJson {
    fn path(&self) -> PathBuf {
        PathBuf::from(&self.file)
    }

    /// The list's name.
    fn list(&self) -> String {
        if self.name.is_empty() {
            self.path()
                .file_stem()
                .map_or("list".into(), |s| s.to_string_lossy().into_owned())
        } else {
            self.name.clone()
        }
    }
}

impl Stage for CmsJson {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: ls_lists_schema(),
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(Some(fingerprint(&[self.path()])?))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let path = self.path();
        let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
        let ranges = LsRanges::from_json(&text).map_err(|e| {
            StageError::data(format!("{}: not a CMS JSON LS list: {e}", path.display()))
        })?;
        ctx.reporter.info(&format!(
            "{}: {} LS in {} ranges",
            self.list(),
            ranges.ls_count(),
            ranges.ranges().count()
        ));
        ctx.output
            .write("main", ls_lists_batch(&self.list(), &ranges)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;

    #[test]
    fn a_golden_json_becomes_ranges_and_a_broken_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("Cert_Golden.json");
        std::fs::write(
            &good,
            r#"{"355100": [[1, 10], [12, 20]], "355101": [[3, 4]]}"#,
        )
        .unwrap();
        let stage = CmsJson {
            file: good.display().to_string(),
            ..Default::default()
        };
        let out = run_in_memory(&stage, &[]).unwrap().table("main");
        assert_eq!(out.num_rows(), 3);
        let lists = arrow::array::AsArray::as_string::<i32>(out.column(0));
        assert_eq!(lists.value(0), "Cert_Golden");
        let bad = dir.path().join("broken.json");
        std::fs::write(&bad, r#"{"355100": [[10, 1]]}"#).unwrap();
        let err = run_in_memory(
            &CmsJson {
                file: bad.display().to_string(),
                name: "golden".into(),
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("broken.json") && err.contains("[10, 1]"),
            "{err}"
        );
    }
}
