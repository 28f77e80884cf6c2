//! `read_parquet`: brings an external Parquet table into a pipeline, so
//! physicists can monitor their own histograms with any downstream stage.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{Input, OutputSpec, Result, RunContext, Stage, StageError, expect_inputs};
use crate::registry::StageConfig;

/// Reads every Parquet file matching a glob as one table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParquet {
    /// File or glob pattern (e.g. `data/runs/*.parquet`), relative to the
    /// directory `pipeline` runs in. Files are read in sorted path order and
    /// must all have the same schema.
    pub path: String,
}

impl StageConfig for ReadParquet {
    const KIND: &'static str = "read_parquet";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Brings external Parquet files (one table, same schema) into the pipeline";
    const INPUTS: (usize, usize) = (0, 0);
}

impl ReadParquet {
    fn files(&self) -> Result<Vec<PathBuf>> {
        let param = |why: String| StageError::Param {
            param: "path".into(),
            why,
        };
        let paths =
            glob::glob(&self.path).map_err(|e| param(format!("bad glob `{}`: {e}", self.path)))?;
        let mut files = Vec::new();
        for entry in paths {
            let path = entry.map_err(|e| param(e.to_string()))?;
            if path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(param(format!("no file matches `{}`", self.path)));
        }
        Ok(files)
    }

    fn input(&self) -> Result<Input> {
        let input = Input::from_files(self.path.clone(), self.files()?)?;
        for file in &input.files[1..] {
            let schema = crate::api::parquet_schema(file)?;
            if schema.fields() != input.schema.fields() {
                return Err(StageError::Data(format!(
                    "{} has a different schema from {}: all files of `{}` must share one",
                    file.display(),
                    input.files[0].display(),
                    self.path
                )));
            }
        }
        Ok(input)
    }
}

impl Stage for ReadParquet {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        expect_inputs(inputs.len(), 0)?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: self.input()?.schema,
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        let mut parts = Vec::new();
        for file in self.files()? {
            let meta = std::fs::metadata(&file).map_err(|e| StageError::Io {
                path: file.clone(),
                source: e,
            })?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            parts.push(format!("{}:{}:{}", file.display(), meta.len(), modified));
        }
        Ok(Some(parts.join("\n")))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = self.input()?;
        for batch in input.batches() {
            ctx.output.write("main", batch?)?;
        }
        Ok(())
    }
}
