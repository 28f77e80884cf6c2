//! `pipeline query`: DataFusion SQL over the cached outputs of a pipeline,
//! each registered as a table named by its stage id (`<stage>_<output>` for
//! a stage's further outputs).

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::cache::Workdir;
use crate::plan::Plan;

/// Output formats of `pipeline query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Runs `sql` over every cached table of the plan.
pub fn query(plan: &Plan, workdir: &Workdir, sql: &str) -> Result<Vec<RecordBatch>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ctx = SessionContext::new();
        let mut missing = Vec::new();
        for stage in &plan.stages {
            if workdir.cached(stage).is_none() {
                missing.push(stage.id.clone());
                continue;
            }
            for out in &stage.outputs {
                let dir = workdir.entry(stage).join(out.name);
                let url = format!(
                    "{}/",
                    dir.canonicalize()
                        .with_context(|| dir.display().to_string())?
                        .display()
                );
                ctx.register_parquet(
                    stage.table_name(out.name),
                    &url,
                    ParquetReadOptions::default(),
                )
                .await
                .with_context(|| format!("cannot register {}", dir.display()))?;
            }
        }
        let result = async { ctx.sql(sql).await?.collect().await }.await;
        match result {
            Ok(batches) => Ok(batches),
            Err(e) if !missing.is_empty() => bail!(
                "{e}\n(not yet run, so not queryable: {}; run `pipeline run {}` first)",
                missing.join(", "),
                plan.spec.path.display()
            ),
            Err(e) => bail!("{e}"),
        }
    })
}

/// Renders query results.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for batch in batches {
                    writer.write(batch).context(
                        "CSV holds only scalar columns: select those, or use --format json",
                    )?;
                }
            }
            Ok(String::from_utf8(buf)?)
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut writer = arrow::json::ArrayWriter::new(&mut buf);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            Ok(String::from_utf8(buf)? + "\n")
        }
    }
}
