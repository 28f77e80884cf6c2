//! The contract between a stage and the engine that runs it.
//!
//! A stage sees typed parameters, its input tables and a place to write its
//! output tables. It knows nothing about YAML, caching or scheduling: the
//! engine resolves inputs to Parquet files, checks what the stage writes
//! against what it declared, and makes the result durable atomically.
//!
//! A stage kind is one config struct implementing two traits:
//! [`StageConfig`] (its name, version and parameter checks) and [`Stage`]
//! (its output schemas, derived from the input schemas so `plan` validates
//! a pipeline before anything runs, and the work itself). This module, with
//! [`crate::error`] and [`crate::input`], is all a stage needs from the
//! engine's side; it imports no stage, and no stage imports the registry.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StageError};
use crate::input::Input;

/// A configured stage: its parameters have been parsed and checked.
pub trait Stage: Send + Sync {
    /// The tables this stage will write, derived from its input schemas.
    /// Called by `plan` before anything runs, so it must reject inputs the
    /// stage cannot use (missing or mistyped columns) with a clear error.
    /// `inputs` holds as many schemas as [`StageConfig::INPUTS`] allows:
    /// the engine counted them.
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>>;

    /// A fingerprint of files outside the pipeline the stage reads, so the
    /// cache notices when they change. Stages reading only their inputs
    /// return `None`.
    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Does the work.
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()>;

    /// Whether the stage can run as shards (per dataset, seed or file): each
    /// shard honours [`RunContext::shard`] and writes its block's rows.
    fn shardable(&self) -> bool {
        false
    }

    /// Outputs of a sharded stage that are not the concatenation of the
    /// shards' parts (e.g. a summary over all datasets): their parts are
    /// dropped and [`Stage::recombine`] writes them.
    fn recombined_outputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// Writes the [`Stage::recombined_outputs`] from the complete other
    /// outputs (`tables`, one [`Input`] per output name), and any figure of
    /// the whole into `artifacts` (the shards' own are in `shard-*/` there).
    fn recombine(
        &self,
        tables: &BTreeMap<String, Input>,
        output: &mut dyn OutputWriter,
        artifacts: &std::path::Path,
    ) -> Result<()> {
        let _ = (tables, output, artifacts);
        Ok(())
    }
}

/// A stage's typed parameter struct, which is also the stage itself once
/// deserialized (`deny_unknown_fields`, a doc comment per field: the doc
/// comments become `pipeline stages`' parameter descriptions).
pub trait StageConfig:
    Stage + DeserializeOwned + Serialize + schemars::JsonSchema + 'static
{
    /// The `kind:` name in YAML; the stage lives in a file of this name.
    const KIND: &'static str;
    /// Implementation version: bump it when a change alters the output, so
    /// cached results of the older code are not reused.
    const VERSION: u32;
    /// One line on what the stage does, shown by `pipeline stages`.
    const SUMMARY: &'static str;
    /// How many input tables it takes, as (min, max). The engine checks it
    /// before calling [`Stage::outputs`] ([`check_input_count`]).
    const INPUTS: (usize, usize);
    /// What the inputs are, in order, as error messages and `pipeline
    /// stages` name them (`windows, windows.order, events, models`); empty
    /// for a stage without inputs.
    const INPUT_ROLES: &'static str = "";
    /// The output's columns are those of the files the parameters name
    /// (`read_parquet`): `pipeline stages` says so instead of deriving a
    /// schema from [`StageConfig::doc_inputs`].
    const OUTPUT_FROM_FILES: bool = false;

    /// Example input schemas, used only to document the output schema in
    /// `pipeline stages`.
    fn doc_inputs() -> Vec<SchemaRef> {
        Vec::new()
    }

    /// Checks constraints between parameters that serde cannot express;
    /// report each with [`StageError::param`] naming the parameter.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// An output table a stage promises to write, declared before it runs.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Output name; the first output of a stage is its main table.
    pub name: &'static str,
    pub schema: SchemaRef,
}

/// Where a stage writes its tables; the engine checks every batch against the
/// declared schema and makes the files durable only if the stage succeeds.
pub trait OutputWriter: Send {
    fn write(&mut self, output: &str, batch: RecordBatch) -> Result<()>;
}

/// Progress of one long loop (datasets, runs, files).
pub trait Progress: Send + Sync {
    fn inc(&self, n: u64);
}

/// How a stage reports what it is doing; the engine draws progress bars on a
/// terminal and writes plain log lines otherwise.
pub trait Reporter: Send + Sync {
    /// Starts a progress counter of `total` items of `unit`.
    fn progress(&self, total: u64, unit: &str) -> Box<dyn Progress>;
    /// A one-line message worth showing the user.
    fn info(&self, message: &str);
}

/// A reporter that says nothing (unit tests, library use).
pub struct Silent;

struct NoProgress;
impl Progress for NoProgress {
    fn inc(&self, _n: u64) {}
}

impl Reporter for Silent {
    fn progress(&self, _total: u64, _unit: &str) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
    fn info(&self, _message: &str) {}
}

/// Everything a running stage may touch.
pub struct RunContext<'a> {
    pub inputs: &'a [Input],
    pub output: &'a mut dyn OutputWriter,
    pub reporter: &'a dyn Reporter,
    /// A private directory for files that are not tables (plots, models).
    pub artifacts: &'a Path,
    /// The part of the work this run does ([`Shard::WHOLE`] unless the
    /// stage is [`Stage::shardable`] and the pipeline asks for shards).
    pub shard: Shard,
}

/// One of `count` parts of a sharded stage's work. Datasets, seeds or files
/// are split into `count` contiguous blocks in input order and this run does
/// block `index`, so the parts, concatenated in index order, are exactly the
/// unsharded output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This shard's block of `n` items.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }
}

/// The one check of how many input tables a stage got, against its
/// [`StageConfig::INPUTS`] bounds, naming its [`StageConfig::INPUT_ROLES`].
/// The engine runs it at plan time, before [`Stage::outputs`], so stages do
/// not count their inputs again.
pub fn check_input_count((min, max): (usize, usize), roles: &str, found: usize) -> Result<()> {
    if (min..=max).contains(&found) {
        return Ok(());
    }
    let count = if min == max {
        format!("{min}")
    } else {
        format!("{min} to {max}")
    };
    let plural = if max == 1 { "input" } else { "inputs" };
    let expected = if roles.is_empty() {
        format!("{count} {plural}")
    } else {
        format!("{count} {plural} ({roles})")
    };
    Err(StageError::input_count(expected, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_counts_are_checked_against_the_bounds_and_name_the_roles() {
        assert!(check_input_count((1, 2), "scores, optional bands", 2).is_ok());
        let e = check_input_count((1, 2), "scores, optional bands", 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "takes 1 to 2 inputs (scores, optional bands), got 3 input table(s)"
        );
        let e = check_input_count((1, 1), "", 0).unwrap_err();
        assert_eq!(e.to_string(), "takes 1 input, got 0 input table(s)");
    }
}
