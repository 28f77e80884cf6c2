//! Small Arrow helpers shared by the stages.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, ListArray, ListBuilder, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type};

use crate::error::{Result, StageError};

/// Builds a `List<Float64>` column (non-null items, as in
/// [`dqm_schemas::f64_list`]) from per-row slices.
pub fn f64_lists<'a>(rows: impl ExactSizeIterator<Item = &'a [f64]>) -> ListArray {
    let n = rows.len();
    let mut builder = ListBuilder::with_capacity(Float64Builder::with_capacity(n * 64), n)
        .with_field(Arc::new(Field::new("item", DataType::Float64, false)));
    for row in rows {
        builder.values().append_slice(row);
        builder.append(true);
    }
    builder.finish()
}

/// Casts a column to `to`, naming the input and column when it cannot.
/// Column `name` of `batch` cast to `to` (the name must exist: checked at `plan`).
pub fn column_as(batch: &RecordBatch, name: &str, to: &DataType, input: &str) -> Result<ArrayRef> {
    let index = batch
        .schema()
        .index_of(name)
        .map_err(|_| StageError::data(format!("input `{input}` has no column `{name}`")))?;
    cast_column(batch.column(index), to, input, name)
}

pub fn cast_column(array: &ArrayRef, to: &DataType, input: &str, column: &str) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    arrow::compute::cast(array, to).map_err(|e| {
        StageError::data(format!(
            "input `{input}`, column `{column}`: cannot read as {to}: {e}"
        ))
    })
}

/// Reads a list column as per-row `f64` vectors, rejecting nulls and NaN.
pub fn list_rows(array: &ArrayRef, input: &str, column: &str) -> Result<Vec<Vec<f64>>> {
    let list = cast_column(array, &dqm_schemas::f64_list(), input, column)?;
    let list = list.as_list::<i32>();
    let mut rows = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        if list.is_null(i) {
            return Err(StageError::data(format!(
                "input `{input}`, column `{column}`: null at row {i}"
            )));
        }
        let values = list.value(i);
        let values = values.as_primitive::<Float64Type>();
        if values.null_count() > 0 {
            return Err(StageError::data(format!(
                "input `{input}`, column `{column}`: null bin at row {i}"
            )));
        }
        rows.push(values.values().to_vec());
    }
    Ok(rows)
}

/// Accepts integer columns (any width) that will be cast to `Int64`.
pub fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// Accepts list-like numeric columns (`List`, `LargeList`, `FixedSizeList`).
pub fn is_numeric_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            f.data_type().is_numeric()
        }
        _ => false,
    }
}
