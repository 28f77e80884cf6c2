//! `union`: the rows of several tables with the same columns, one after the
//! other, with the upstream stage each row came from. It gathers the results
//! of parallel branches of a pipeline (e.g. one metrics table per window size)
//! into the one table a physicist queries or plots.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

/// Concatenates its input tables (same column names and types).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Union {}

impl StageConfig for Union {
    const KIND: &'static str = "union";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Rows of several tables with the same columns, plus the stage each row came from";
    const INPUTS: (usize, usize) = (1, 1024);
    const INPUT_ROLES: &'static str = "tables of one schema";

    fn doc_inputs() -> Vec<SchemaRef> {
        // E.g. the summary tables of several DINAMO studies.
        vec![dqm_schemas::metrics::summary()]
    }
}

fn union_schema(first: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(column(
        "source",
        DataType::Utf8,
        "The upstream stage (input) of this row",
    ))];
    fields.extend(first.fields().iter().cloned());
    // Column docs stay; table metadata of one input would misdescribe the others.
    Arc::new(Schema::new(fields))
}

impl Stage for Union {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let first = &inputs[0];
        if first.index_of("source").is_ok() {
            return Err(StageError::data("input 1 already has a `source` column"));
        }
        let shape = |s: &SchemaRef| -> Vec<(String, DataType)> {
            s.fields()
                .iter()
                .map(|f: &Arc<Field>| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        for (i, s) in inputs.iter().enumerate().skip(1) {
            if shape(s) != shape(first) {
                return Err(StageError::data(format!(
                    "input {} has columns {:?}, input 1 has {:?}: union needs the same columns",
                    i + 1,
                    shape(s),
                    shape(first)
                )));
            }
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: union_schema(first),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let schema = union_schema(&ctx.inputs[0].schema);
        for input in ctx.inputs {
            for batch in input.batches() {
                let batch = batch?;
                let mut columns = vec![Arc::new(StringArray::from(vec![
                    input.name.as_str();
                    batch.num_rows()
                ])) as _];
                columns.extend(batch.columns().iter().cloned());
                ctx.output
                    .write("main", RecordBatch::try_new(schema.clone(), columns)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};

    #[test]
    fn rows_of_every_input_with_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let table = |name: &str, values: Vec<i64>| {
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))])
                    .unwrap();
            crate::in_memory::input_from_batch(name, &batch, &dir.path().join(name)).unwrap()
        };
        let inputs = [table("a", vec![1, 2]), table("b", vec![3])];
        let out = crate::in_memory::run_in_memory(&Union {}, &inputs)
            .unwrap()
            .table("main");
        assert_eq!(out.num_rows(), 3);
        let source = out.column(0).as_string::<i32>();
        assert_eq!(
            (0..3).map(|i| source.value(i)).collect::<Vec<_>>(),
            ["a", "a", "b"]
        );
        let other = Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, false)]));
        let err = Union {}.outputs(&[schema, other]).unwrap_err().to_string();
        assert!(err.contains("same columns"), "{err}");
    }
}
