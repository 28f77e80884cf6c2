//! Running a stage without the engine: outputs kept in memory, inputs
//! written from record batches. For tests, benchmarks and library use.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;

use crate::error::{Result, StageError};
use crate::input::Input;
use crate::stage::{OutputWriter, RunContext, Shard, Silent, Stage};

/// Runs a stage with its outputs kept in memory; artifacts go to a temporary
/// directory that is removed afterwards.
pub fn run_in_memory(stage: &dyn Stage, inputs: &[Input]) -> Result<MemoryOutput> {
    run_shard_in_memory(stage, inputs, Shard::WHOLE)
}

/// [`run_in_memory`] for one shard of a shardable stage.
pub fn run_shard_in_memory(
    stage: &dyn Stage,
    inputs: &[Input],
    shard: Shard,
) -> Result<MemoryOutput> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dqm-artifacts-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
    let mut out = MemoryOutput::default();
    let result = stage.run(&mut RunContext {
        inputs,
        output: &mut out,
        reporter: &Silent,
        artifacts: &dir,
        shard,
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| out)
}

/// Writes one batch as a Parquet file and returns it as an [`Input`].
pub fn input_from_batch(name: &str, batch: &RecordBatch, path: &Path) -> Result<Input> {
    let file = File::create(path).map_err(|e| StageError::io(path, e))?;
    let parquet_err = |e| StageError::parquet(path, e);
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Input::from_files(name, vec![path.to_path_buf()])
}

/// An output writer that keeps batches in memory.
#[derive(Debug, Default)]
pub struct MemoryOutput {
    pub tables: BTreeMap<String, Vec<RecordBatch>>,
}

impl OutputWriter for MemoryOutput {
    fn write(&mut self, output: &str, batch: RecordBatch) -> Result<()> {
        self.tables
            .entry(output.to_string())
            .or_default()
            .push(batch);
        Ok(())
    }
}

impl MemoryOutput {
    /// All batches of one output concatenated.
    pub fn table(&self, output: &str) -> RecordBatch {
        let batches = &self.tables[output];
        arrow::compute::concat_batches(&batches[0].schema(), batches).expect("same schema")
    }
}
