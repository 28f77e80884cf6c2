//! A stage's input tables: Parquet files read as Arrow record batches,
//! streamed in file order, with column checks that name the input.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{Result, StageError};

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

/// Opens a Parquet file for reading: the one place where a file becomes a
/// reader builder, with the path in every error.
pub fn parquet_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| StageError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StageError::parquet(path, e))
}

/// The Arrow schema stored in a Parquet file's footer.
pub fn parquet_schema(path: &Path) -> Result<SchemaRef> {
    Ok(parquet_builder(path)?.schema().clone())
}

/// A reader of one Parquet file: all its row groups, or only `row_groups`.
/// Rows per batch read: 8192, fewer for wide rows so a decoded batch holds
/// about [`BATCH_BYTES`] (a row of per-channel lists is tens of kB). The
/// decoded size is estimated from the values each column chunk holds (the
/// encoded sizes say little: lists of small counts compress to a few bytes).
fn batch_rows(meta: &parquet::file::metadata::ParquetMetaData) -> usize {
    use parquet::basic::Type;
    let rows = meta.file_metadata().num_rows().max(1) as usize;
    let mut bytes = 0usize;
    for group in meta.row_groups() {
        for column in group.columns() {
            let values = column.num_values().max(0) as usize;
            bytes += match column.column_type() {
                Type::BOOLEAN => values.div_ceil(8),
                Type::INT32 | Type::FLOAT => 4 * values,
                Type::INT64 | Type::DOUBLE => 8 * values,
                Type::INT96 => 12 * values,
                Type::BYTE_ARRAY | Type::FIXED_LEN_BYTE_ARRAY => {
                    column.uncompressed_size().max(0) as usize
                }
            };
        }
    }
    let per_row = (bytes / rows).max(1);
    (BATCH_BYTES / per_row).clamp(16, 8192)
}

/// Target uncompressed size of one batch read from Parquet.
const BATCH_BYTES: usize = 32 << 20;

fn open_parquet(path: &Path, row_groups: Option<Vec<usize>>) -> Result<ParquetRecordBatchReader> {
    let builder = parquet_builder(path)?;
    let rows = batch_rows(builder.metadata());
    let builder = builder.with_batch_size(rows);
    match row_groups {
        Some(groups) => builder.with_row_groups(groups),
        None => builder,
    }
    .build()
    .map_err(|e| StageError::parquet(path, e))
}

impl Input {
    /// Builds an input from files, reading the schema from the first one.
    pub fn from_files(name: impl Into<String>, files: Vec<PathBuf>) -> Result<Self> {
        let name = name.into();
        let first = files
            .first()
            .ok_or_else(|| StageError::data(format!("input `{name}` has no Parquet file")))?;
        let schema = parquet_schema(first)?;
        Ok(Self {
            name,
            schema,
            files,
        })
    }

    /// Streams the record batches of every file, in file order, so a stage
    /// never has to hold a whole table in memory.
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + Send + '_ {
        self.read(None)
    }

    /// Streams only the selected row groups (`selection[f]` for file `f`).
    pub fn batches_in(
        &self,
        selection: Vec<Vec<usize>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + Send + '_ {
        self.read(Some(selection))
    }

    fn read(
        &self,
        selection: Option<Vec<Vec<usize>>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + Send + '_ {
        let mut selection = selection.map(Vec::into_iter);
        self.files.iter().flat_map(move |path| {
            let groups = selection.as_mut().map(|s| s.next().unwrap_or_default());
            let reader = if groups.as_ref().is_some_and(Vec::is_empty) {
                Ok(None)
            } else {
                open_parquet(path, groups).map(Some)
            };
            let iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match reader {
                Ok(Some(reader)) => Box::new(
                    reader.map(move |b| b.map_err(|e| StageError::parquet(path, e.into()))),
                ),
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
            rows += parquet_builder(path)?.metadata().file_metadata().num_rows() as u64;
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
            let builder = parquet_builder(path)?;
            let Some(index) = builder.schema().index_of(column).ok() else {
                return Err(StageError::data(format!(
                    "input `{}`: file {} has no column `{column}`",
                    self.name,
                    path.display()
                )));
            };
            let meta = builder.metadata().clone();
            let groups = meta.num_row_groups();
            let rows_of = |g: usize| meta.row_group(g).num_rows();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| StageError::parquet(path, e))?;
            let mut per_group: Vec<Vec<i64>> = vec![Vec::new(); groups];
            let mut group = 0;
            let mut left = if groups > 0 { rows_of(0) } else { 0 };
            for batch in reader {
                let batch = batch.map_err(|e| StageError::parquet(path, e.into()))?;
                let col = crate::arrow_util::cast_column(
                    batch.column(0),
                    &DataType::Int64,
                    &self.name,
                    column,
                )?;
                if col.null_count() > 0 {
                    return Err(StageError::data(format!(
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
        .map_err(|_| StageError::missing_column(input, column, why))?;
    let found = schema.field(idx).data_type();
    if !accept(found) {
        return Err(StageError::wrong_type(input, column, found, expected));
    }
    Ok(idx)
}
