//! Runs a plan: skips stages whose cached output is valid, runs the rest in
//! dependency order (independent stages in parallel), and writes each
//! stage's tables as Parquet with provenance, atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use dqm_stages::api::{Input, OutputSpec, OutputWriter, RunContext, StageError};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;

use crate::cache::{Manifest, ManifestInput, ManifestOutput, Workdir, write_atomic};
use crate::plan::{Plan, PlannedStage};
use crate::progress::Console;

/// Options of `pipeline run`.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Stages to rerun even if cached (their dependents rerun too).
    pub force: Vec<String>,
    /// Run only this stage and what it needs.
    pub until: Option<String>,
}

/// How a stage fared in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Cached,
    Ran,
    Skipped,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub rows: u64,
    pub seconds: f64,
    pub path: PathBuf,
}

/// Provenance written into the manifest and every Parquet footer.
const PROVENANCE_KEY: &str = "dqm.provenance";

/// Writes a stage's tables into its staging directory, checking every batch
/// against the declared schema.
struct ParquetOutputs {
    dir: PathBuf,
    stage: String,
    provenance: String,
    tables: BTreeMap<String, TableWriter>,
}

struct TableWriter {
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
    file: String,
}

impl ParquetOutputs {
    fn new(dir: &Path, stage: &PlannedStage, provenance: String) -> Self {
        let tables = stage
            .outputs
            .iter()
            .map(|o| {
                let writer = TableWriter {
                    schema: o.schema.clone(),
                    writer: None,
                    rows: 0,
                    file: "part-00000.parquet".into(),
                };
                (o.name.to_string(), writer)
            })
            .collect();
        Self {
            dir: dir.to_path_buf(),
            stage: stage.id.clone(),
            provenance,
            tables,
        }
    }

    fn open(&self, name: &str, schema: &SchemaRef) -> Result<ArrowWriter<File>, StageError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let path = dir.join("part-00000.parquet");
        let file = File::create(&path).map_err(|e| StageError::Io {
            path: path.clone(),
            source: e,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(1).expect("valid level"),
            ))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                PROVENANCE_KEY.to_string(),
                self.provenance.clone(),
            )]))
            .build();
        ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| StageError::Parquet { path, source: e })
    }

    /// Closes every table (an output never written becomes an empty table)
    /// and returns the row counts.
    fn finish(mut self, wall_seconds: f64) -> Result<BTreeMap<String, (u64, String)>> {
        let mut rows = BTreeMap::new();
        let names: Vec<String> = self.tables.keys().cloned().collect();
        for name in names {
            let schema = self.tables[&name].schema.clone();
            if self.tables[&name].writer.is_none() {
                let w = self.open(&name, &schema)?;
                self.tables.get_mut(&name).expect("exists").writer = Some(w);
            }
            let table = self.tables.get_mut(&name).expect("exists");
            let mut writer = table.writer.take().expect("opened");
            writer.append_key_value_metadata(KeyValue::new(
                "dqm.run".to_string(),
                json!({"rows": table.rows, "wall_seconds": wall_seconds}).to_string(),
            ));
            writer.close().with_context(|| {
                format!("stage `{}`: cannot finish output `{name}`", self.stage)
            })?;
            rows.insert(name, (table.rows, table.file.clone()));
        }
        Ok(rows)
    }
}

impl OutputWriter for ParquetOutputs {
    fn write(&mut self, output: &str, batch: RecordBatch) -> Result<(), StageError> {
        let Some(table) = self.tables.get(output) else {
            return Err(StageError::Data(format!(
                "wrote to undeclared output `{output}`"
            )));
        };
        let declared = table.schema.clone();
        let found = batch.schema();
        if declared.fields().len() != found.fields().len() {
            return Err(StageError::Data(format!(
                "output `{output}`: wrote {} columns, declared {}",
                found.fields().len(),
                declared.fields().len()
            )));
        }
        for (d, f) in declared.fields().iter().zip(found.fields()) {
            if d.name() != f.name() || !d.data_type().equals_datatype(f.data_type()) {
                return Err(StageError::Data(format!(
                    "output `{output}`: column `{}` ({}) where `{}` ({}) was declared",
                    f.name(),
                    f.data_type(),
                    d.name(),
                    d.data_type()
                )));
            }
        }
        // Rebuild on the declared schema so field docs reach the file.
        let batch = RecordBatch::try_new(declared.clone(), batch.columns().to_vec())?;
        if self.tables[output].writer.is_none() {
            let writer = self.open(output, &declared)?;
            self.tables.get_mut(output).expect("exists").writer = Some(writer);
        }
        let table = self.tables.get_mut(output).expect("exists");
        table.rows += batch.num_rows() as u64;
        let path = self.dir.join(output);
        table
            .writer
            .as_mut()
            .expect("opened")
            .write(&batch)
            .map_err(|e| StageError::Parquet { path, source: e })
    }
}

/// Runs one stage into its cache entry (used by `run` and, per stage, by batch jobs).
pub fn run_stage(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
) -> Result<StageReport> {
    let at = format!("stage `{}` ({})", stage.id, stage.kind);
    let started = Instant::now();
    let mut inputs = Vec::new();
    for r in &stage.inputs {
        let upstream = plan.stage(&r.stage).expect("planned");
        let files = workdir
            .output_files(upstream, &r.output)
            .with_context(|| at.clone())?;
        let schema = upstream.output(&r.output).expect("planned").schema.clone();
        inputs.push(Input {
            name: r.stage.clone(),
            schema,
            files,
        });
    }
    let manifest_inputs: Vec<ManifestInput> = stage
        .inputs
        .iter()
        .map(|r| ManifestInput {
            stage: r.stage.clone(),
            output: r.output.clone(),
            key: plan.stage(&r.stage).expect("planned").key.clone(),
        })
        .collect();
    let provenance = json!({
        "pipeline": plan.spec.name, "stage": stage.id, "kind": stage.kind, "version": stage.version,
        "key": stage.key, "params": stage.params, "inputs": manifest_inputs,
        "dqm_pipeline_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string();

    let staging = workdir.stage_dir(stage)?;
    let artifacts = staging.path().join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let mut outputs = ParquetOutputs::new(staging.path(), stage, provenance);
    let reporter = console.reporter(&stage.id);
    console.log(&format!("{}: running ({})", stage.id, stage.kind));
    let result = {
        let mut ctx = RunContext {
            inputs: &inputs,
            output: &mut outputs,
            reporter: &reporter,
            artifacts: &artifacts,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.stage.run(&mut ctx)))
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow!("{at} failed: {e}")),
        Err(panic) => {
            let msg = dqm_stages::api::panic_message(panic.as_ref());
            bail!("{at} failed: internal error: {msg}");
        }
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let rows = outputs.finish(wall_seconds).with_context(|| at.clone())?;
    if std::fs::read_dir(&artifacts)?.next().is_none() {
        std::fs::remove_dir(&artifacts)?;
    }
    let manifest = Manifest {
        pipeline: plan.spec.name.clone(),
        stage: stage.id.clone(),
        kind: stage.kind.to_string(),
        version: stage.version,
        key: stage.key.clone(),
        params: stage.params.clone(),
        inputs: manifest_inputs,
        outputs: stage
            .outputs
            .iter()
            .map(|o: &OutputSpec| ManifestOutput {
                name: o.name.to_string(),
                table: stage.table_name(o.name),
                rows: rows[o.name].0,
                files: vec![format!("{}/{}", o.name, rows[o.name].1)],
                schema: o
                    .schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect(),
            })
            .collect(),
        wall_seconds,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        dqm_pipeline_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    write_atomic(
        &staging.path().join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let path = workdir.commit(staging, stage)?;
    workdir.link(&plan.spec.name, stage)?;
    let main_rows = rows[stage.outputs[0].name].0;
    console.log(&format!(
        "{}: done, {main_rows} rows in {wall_seconds:.2} s",
        stage.id
    ));
    Ok(StageReport {
        id: stage.id.clone(),
        kind: stage.kind.to_string(),
        status: Status::Ran,
        rows: main_rows,
        seconds: wall_seconds,
        path,
    })
}

/// Runs the plan; returns one report per stage in plan order.
pub fn run(plan: &Plan, workdir: &Workdir, options: &RunOptions) -> Result<Vec<StageReport>> {
    for id in options.force.iter().chain(&options.until) {
        if plan.stage(id).is_none() {
            bail!("no stage `{id}` in {}", plan.spec.path.display());
        }
    }
    let _lock = workdir.lock()?;
    let selected: BTreeSet<String> = match &options.until {
        Some(id) => plan.ancestors(id),
        None => plan.stages.iter().map(|s| s.id.clone()).collect(),
    };
    let forced: BTreeSet<String> = options
        .force
        .iter()
        .flat_map(|id| plan.descendants(id))
        .collect();
    let console = Console::new();
    let mut reports: BTreeMap<String, StageReport> = BTreeMap::new();
    let mut todo: Vec<&PlannedStage> = Vec::new();
    for stage in &plan.stages {
        if !selected.contains(&stage.id) {
            continue;
        }
        match workdir.cached(stage) {
            Some(manifest) if !forced.contains(&stage.id) => {
                workdir.link(&plan.spec.name, stage)?;
                let rows = manifest.outputs.first().map_or(0, |o| o.rows);
                reports.insert(
                    stage.id.clone(),
                    StageReport {
                        id: stage.id.clone(),
                        kind: stage.kind.to_string(),
                        status: Status::Cached,
                        rows,
                        seconds: manifest.wall_seconds,
                        path: workdir.entry(stage),
                    },
                );
            }
            _ => todo.push(stage),
        }
    }
    // Waves: every stage whose inputs are all done runs, in parallel.
    while !todo.is_empty() {
        let (ready, waiting): (Vec<&PlannedStage>, Vec<&PlannedStage>) = todo
            .into_iter()
            .partition(|s| s.inputs.iter().all(|i| reports.contains_key(&i.stage)));
        if ready.is_empty() {
            bail!("internal error: no stage is ready to run");
        }
        let results: Vec<Result<StageReport>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ready
                .iter()
                .map(|s| scope.spawn(|| run_stage(plan, s, workdir, &console)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("stage thread panicked")))
                })
                .collect()
        });
        let mut first_error = None;
        for r in results {
            match r {
                Ok(report) => {
                    reports.insert(report.id.clone(), report);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        todo = waiting;
    }
    Ok(plan
        .stages
        .iter()
        .map(|s| {
            reports.remove(&s.id).unwrap_or_else(|| StageReport {
                id: s.id.clone(),
                kind: s.kind.to_string(),
                status: Status::Skipped,
                rows: 0,
                seconds: 0.0,
                path: workdir.entry(s),
            })
        })
        .collect())
}
