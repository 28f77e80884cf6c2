//! `filter_events`: keeps the rows matching a SQL predicate, evaluated by
//! DataFusion while streaming the input (MEDIC's event filter: at least 10
//! tracks and 10 towers).

use arrow::datatypes::SchemaRef;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Keeps input rows for which a SQL boolean expression is true.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilterEvents {
    /// SQL boolean expression over the input's columns (DataFusion dialect),
    /// e.g. `n_tracks >= 10 AND met_met > 20`.
    pub predicate: String,
}

impl Default for FilterEvents {
    fn default() -> Self {
        Self {
            predicate: "n_tracks >= 10 AND n_towers >= 10".into(),
        }
    }
}

impl StageConfig for FilterEvents {
    const KIND: &'static str = "filter_events";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Keeps rows matching a SQL predicate (DataFusion), streaming; logs kept/dropped counts";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "events";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![crate::medic::tables::example_events_schema()]
    }
}

fn context() -> SessionContext {
    // Keep Utf8 columns as Utf8 (not Utf8View) so the output schema is the input's.
    SessionContext::new_with_config(SessionConfig::new().set_bool(
        "datafusion.execution.parquet.schema_force_view_types",
        false,
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StageError::data(format!("cannot start the query runtime: {e}")))
}

impl FilterEvents {
    fn filtered(&self, df: DataFrame) -> Result<DataFrame> {
        let bad = |e: datafusion::error::DataFusionError| {
            StageError::param("predicate", format!("`{}`: {e}", self.predicate))
        };
        let expr = df.parse_sql_expr(&self.predicate).map_err(bad)?;
        df.filter(expr).map_err(bad)
    }
}

impl Stage for FilterEvents {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        // Plan the filter against an empty table of the input's schema, so a
        // bad column or a non-boolean predicate fails before anything runs.
        let ctx = context();
        let empty = arrow::array::RecordBatch::new_empty(inputs[0].clone());
        let df = ctx
            .read_batch(empty)
            .map_err(|e| StageError::data(e.to_string()))?;
        let df = self.filtered(df)?;
        runtime()?
            .block_on(async { df.collect().await })
            .map_err(|e| StageError::param("predicate", format!("`{}`: {e}", self.predicate)))?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: inputs[0].clone(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let files: Vec<String> = input
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let session = context();
        let rt = runtime()?;
        let total = input.num_rows()? as usize;
        let mut kept = 0usize;
        let df_err = |e: datafusion::error::DataFusionError| StageError::data(e.to_string());
        rt.block_on(async {
            let df = session
                .read_parquet(files, ParquetReadOptions::default())
                .await
                .map_err(df_err)?;
            let mut stream = self.filtered(df)?.execute_stream().await.map_err(df_err)?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(df_err)?;
                kept += batch.num_rows();
                ctx.output.write("main", batch)?;
            }
            Ok::<(), StageError>(())
        })?;
        ctx.reporter.info(&format!(
            "kept {kept} of {total} rows, dropped {} ({})",
            total - kept,
            self.predicate
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use crate::input::Input;
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;

    fn events(dir: &std::path::Path) -> Input {
        crate::medic::test_support::bundled_events(dir, &["normal"])
    }

    #[test]
    fn keeps_exactly_the_matching_events() {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let filter = FilterEvents {
            predicate: "n_tracks >= 40 AND n_towers >= 10".into(),
        };
        assert_eq!(
            filter.outputs(std::slice::from_ref(&input.schema)).unwrap()[0].schema,
            input.schema
        );
        let out = run_in_memory(&filter, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        let all =
            arrow::compute::concat_batches(&input.schema, &input.read_all().unwrap()).unwrap();
        let n_tracks = all
            .column_by_name("n_tracks")
            .unwrap()
            .as_primitive::<Int32Type>();
        let n_towers = all
            .column_by_name("n_towers")
            .unwrap()
            .as_primitive::<Int32Type>();
        let expected = (0..all.num_rows())
            .filter(|&i| n_tracks.value(i) >= 40 && n_towers.value(i) >= 10)
            .count();
        assert!(expected > 0 && expected < all.num_rows());
        assert_eq!(out.num_rows(), expected);
    }

    #[test]
    fn bad_predicates_fail_at_planning() {
        let dir = tempfile::tempdir().unwrap();
        let schema = events(dir.path()).schema;
        for bad in ["n_trucks > 3", "n_tracks +", "label"] {
            let err = FilterEvents {
                predicate: bad.into(),
            }
            .outputs(std::slice::from_ref(&schema))
            .unwrap_err()
            .to_string();
            assert!(err.contains("predicate"), "{bad}: {err}");
        }
    }
}
