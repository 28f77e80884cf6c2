//! The contract between a stage and the engine that runs it.
//!
//! A stage sees typed parameters, its input tables and a place to write its
//! output tables. It knows nothing about YAML, caching or scheduling: the
//! engine resolves inputs to Parquet files, checks what the stage writes
//! against what it declared, and makes the result durable atomically.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// What can go wrong inside a stage. Every variant names enough context
/// (file, column, dataset) for a physicist to find the cause.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("input `{input}` has no column `{column}` (needed: {why})")]
    MissingColumn {
        input: String,
        column: String,
        why: String,
    },
    #[error("input `{input}`: column `{column}` has type {found}, expected {expected}")]
    WrongType {
        input: String,
        column: String,
        found: DataType,
        expected: String,
    },
    #[error("expected {expected} input table(s), got {found}")]
    InputCount { expected: String, found: usize },
    #[error("invalid parameter `{param}`: {why}")]
    Param { param: String, why: String },
    #[error("{0}")]
    Data(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = StageError> = std::result::Result<T, E>;

/// One input table: the Parquet files of an upstream stage (or of the user).
#[derive(Debug, Clone)]
pub struct Input {
    /// Name used in error messages: the upstream stage id.
    pub name: String,
    /// The schema all files share.
    pub schema: SchemaRef,
    /// The Parquet files, read in this order.
    pub files: Vec<PathBuf>,
}

impl Input {
    /// Builds an input from files, reading the schema from the first one.
    pub fn from_files(name: impl Into<String>, files: Vec<PathBuf>) -> Result<Self> {
        let name = name.into();
        let first = files
            .first()
            .ok_or_else(|| StageError::Data(format!("input `{name}` has no Parquet file")))?;
        let schema = parquet_schema(first)?;
        Ok(Self {
            name,
            schema,
            files,
        })
    }

    /// Streams the record batches of every file, in file order, so a stage
    /// never has to hold a whole table in memory.
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        self.read(None)
    }

    /// Streams only the selected row groups (`selection[f]` for file `f`).
    pub fn batches_in(
        &self,
        selection: Vec<Vec<usize>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        self.read(Some(selection))
    }

    fn read(
        &self,
        selection: Option<Vec<Vec<usize>>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let mut selection = selection.map(Vec::into_iter);
        self.files.iter().flat_map(move |path| {
            let groups = selection.as_mut().map(|s| s.next().unwrap_or_default());
            let reader = if groups.as_ref().is_some_and(Vec::is_empty) {
                Ok(None)
            } else {
                open_parquet(path, groups).map(Some)
            };
            let iter: Box<dyn Iterator<Item = Result<RecordBatch>>> = match reader {
                Ok(Some(reader)) => Box::new(reader.map(move |b| {
                    b.map_err(|e| StageError::Parquet {
                        path: path.clone(),
                        source: e.into(),
                    })
                })),
                Ok(None) => Box::new(std::iter::empty()),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            iter
        })
    }

    /// Row count from the Parquet footers, without reading any data.
    pub fn num_rows(&self) -> Result<u64> {
        let mut rows = 0;
        for path in &self.files {
            let file = File::open(path).map_err(|e| StageError::Io {
                path: path.clone(),
                source: e,
            })?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
                StageError::Parquet {
                    path: path.clone(),
                    source: e,
                }
            })?;
            rows += builder.metadata().file_metadata().num_rows() as u64;
        }
        Ok(rows)
    }

    /// For every file and row group, the distinct consecutive values of one
    /// integer column, in order, reading only that column: how a sharded
    /// stage finds its datasets and the row groups that hold them.
    pub fn row_group_keys(&self, column: &str) -> Result<Vec<Vec<Vec<i64>>>> {
        use arrow::array::AsArray;
        let mut out = Vec::with_capacity(self.files.len());
        for path in &self.files {
            let perr = |e| StageError::Parquet {
                path: path.clone(),
                source: e,
            };
            let file = File::open(path).map_err(|e| StageError::Io {
                path: path.clone(),
                source: e,
            })?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
            let Some(index) = builder.schema().index_of(column).ok() else {
                return Err(StageError::Data(format!(
                    "input `{}`: file {} has no column `{column}`",
                    self.name,
                    path.display()
                )));
            };
            let meta = builder.metadata().clone();
            let groups = meta.num_row_groups();
            let rows_of = |g: usize| meta.row_group(g).num_rows();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
            let reader = builder.with_projection(mask).build().map_err(perr)?;
            let mut per_group: Vec<Vec<i64>> = vec![Vec::new(); groups];
            let mut group = 0;
            let mut left = if groups > 0 { rows_of(0) } else { 0 };
            for batch in reader {
                let batch = batch.map_err(|e| perr(e.into()))?;
                let col = crate::arrow_util::cast_column(
                    batch.column(0),
                    &DataType::Int64,
                    &self.name,
                    column,
                )?;
                if col.null_count() > 0 {
                    return Err(StageError::Data(format!(
                        "input `{}`: null in column `{column}`",
                        self.name
                    )));
                }
                for &v in col.as_primitive::<arrow::datatypes::Int64Type>().values() {
                    while left == 0 && group + 1 < groups {
                        group += 1;
                        left = rows_of(group);
                    }
                    left -= 1;
                    let keys = &mut per_group[group];
                    if keys.last() != Some(&v) {
                        keys.push(v);
                    }
                }
            }
            out.push(per_group);
        }
        Ok(out)
    }

    /// Reads the whole table (for small tables such as metrics).
    pub fn read_all(&self) -> Result<Vec<RecordBatch>> {
        self.batches().collect()
    }

    /// Index of a required column, checking its type with `accept`.
    pub fn require(
        &self,
        column: &str,
        why: &str,
        expected: &str,
        accept: impl Fn(&DataType) -> bool,
    ) -> Result<usize> {
        require_column(&self.schema, &self.name, column, why, expected, accept)
    }
}

/// Checks that `schema` (of input `input`) has `column` with an accepted type.
pub fn require_column(
    schema: &SchemaRef,
    input: &str,
    column: &str,
    why: &str,
    expected: &str,
    accept: impl Fn(&DataType) -> bool,
) -> Result<usize> {
    let idx = schema
        .index_of(column)
        .map_err(|_| StageError::MissingColumn {
            input: input.to_string(),
            column: column.to_string(),
            why: why.to_string(),
        })?;
    let found = schema.field(idx).data_type();
    if !accept(found) {
        return Err(StageError::WrongType {
            input: input.to_string(),
            column: column.to_string(),
            found: found.clone(),
            expected: expected.to_string(),
        });
    }
    Ok(idx)
}

/// A reader of one Parquet file: all its row groups, or only `row_groups`.
fn open_parquet(
    path: &Path,
    row_groups: Option<Vec<usize>>,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let file = File::open(path).map_err(|e| StageError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| {
            let b = b.with_batch_size(8192);
            match row_groups {
                Some(groups) => b.with_row_groups(groups),
                None => b,
            }
            .build()
        })
        .map_err(|e| StageError::Parquet {
            path: path.to_path_buf(),
            source: e,
        })
}

/// The Arrow schema stored in a Parquet file's footer.
pub fn parquet_schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| StageError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StageError::Parquet {
            path: path.to_path_buf(),
            source: e,
        })?;
    Ok(builder.schema().clone())
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

/// A configured stage: its parameters have been parsed and checked.
pub trait Stage: Send + Sync {
    /// The tables this stage will write, derived from its input schemas.
    /// Called by `plan` before anything runs, so it must reject inputs the
    /// stage cannot use (missing or mistyped columns) with a clear error.
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
    /// outputs (`tables`, one [`Input`] per output name).
    fn recombine(
        &self,
        tables: &std::collections::BTreeMap<String, Input>,
        output: &mut dyn OutputWriter,
    ) -> Result<()> {
        let _ = (tables, output);
        Ok(())
    }
}

/// Checks the number of inputs a stage got.
pub fn expect_inputs(inputs: usize, expected: usize) -> Result<()> {
    if inputs != expected {
        return Err(StageError::InputCount {
            expected: expected.to_string(),
            found: inputs,
        });
    }
    Ok(())
}

/// Runs a stage with its outputs kept in memory (tests, benchmarks, library
/// use); artifacts go to a temporary directory that is removed afterwards.
pub fn run_in_memory(stage: &dyn Stage, inputs: &[Input]) -> Result<MemoryOutput> {
    run_shard_in_memory(stage, inputs, Shard::WHOLE)
}

/// [`run_in_memory`] for one shard of a shardable stage.
pub fn run_shard_in_memory(
    stage: &dyn Stage,
    inputs: &[Input],
    shard: Shard,
) -> Result<MemoryOutput> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dqm-artifacts-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| StageError::Io {
        path: dir.clone(),
        source: e,
    })?;
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

/// Maps `f` over `items` on the rayon pool, counting each finished item on
/// `progress`; results come back in input order, so stages that process
/// datasets in parallel still write them deterministically.
pub fn par_map_counted<T: Sync, R: Send>(
    items: &[T],
    progress: &dyn Progress,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use rayon::prelude::*;
    items
        .par_iter()
        .map(|item| {
            let r = f(item);
            progress.inc(1);
            r
        })
        .collect()
}

/// Writes one batch as a Parquet file and returns it as an [`Input`] (tests,
/// benchmarks, library use).
pub fn input_from_batch(name: &str, batch: &RecordBatch, path: &Path) -> Result<Input> {
    let file = File::create(path).map_err(|e| StageError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let parquet_err = |e| StageError::Parquet {
        path: path.to_path_buf(),
        source: e,
    };
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Input::from_files(name, vec![path.to_path_buf()])
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// An output writer that keeps batches in memory (tests, library use).
#[derive(Debug, Default)]
pub struct MemoryOutput {
    pub tables: std::collections::BTreeMap<String, Vec<RecordBatch>>,
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
