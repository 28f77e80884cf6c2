//! `read_parquet`: brings an external Parquet table into a pipeline, so
//! physicists can monitor their own histograms with any downstream stage.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::input::Input;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

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
    const OUTPUT_FROM_FILES: bool = true;
}

impl ReadParquet {
    fn files(&self) -> Result<Vec<PathBuf>> {
        crate::files::resolve_glob(&self.path, "path")
    }

    fn input(&self) -> Result<Input> {
        let input = Input::from_files(self.path.clone(), self.files()?)?;
        for file in &input.files[1..] {
            let schema = crate::input::parquet_schema(file)?;
            if schema.fields() != input.schema.fields() {
                return Err(StageError::data(format!(
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
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: self.input()?.schema,
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(Some(crate::files::fingerprint(&self.files()?)?))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = self.input()?;
        for batch in input.batches() {
            ctx.output.write("main", batch?)?;
        }
        Ok(())
    }
}
