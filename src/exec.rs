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
use dqm_stages::error::StageError;
use dqm_stages::input::Input;
use dqm_stages::stage::{OutputSpec, OutputWriter, RunContext, Shard};
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;

use crate::cache::{Manifest, ManifestInput, ManifestOutput, Staging, Workdir, write_atomic};
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
/// A row group is closed once its buffered data reach this size.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// Writes a stage's tables into its staging directory, checking every batch
/// against the declared schema.
struct ParquetOutputs {
    dir: PathBuf,
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
    /// Writers for the outputs `names` of `stage`, each into
    /// `<dir>/<output>/part-<index>.parquet`.
    fn new(
        dir: &Path,
        stage: &PlannedStage,
        names: &[&str],
        index: usize,
        provenance: String,
    ) -> Self {
        let tables = stage
            .outputs
            .iter()
            .filter(|o| names.contains(&o.name))
            .map(|o| {
                let writer = TableWriter {
                    schema: o.schema.clone(),
                    writer: None,
                    rows: 0,
                    file: format!("part-{index:05}.parquet"),
                };
                (o.name.to_string(), writer)
            })
            .collect();
        Self {
            dir: dir.to_path_buf(),
            provenance,
            tables,
        }
    }

    fn open(&self, name: &str, schema: &SchemaRef) -> Result<ArrowWriter<File>, StageError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(dir.clone(), e))?;
        let path = dir.join(&self.tables[name].file);
        let file = File::create(&path).map_err(|e| StageError::io(path.clone(), e))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(1).expect("valid level"),
            ))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                PROVENANCE_KEY.to_string(),
                self.provenance.clone(),
            )]));
        // Dictionary encoding pays for strings (labels, file names) and
        // costs for numbers: float features and ids are nearly all distinct,
        // so the writer hashed every value only to fall back to plain
        // encoding (28% of `delphes_convert`'s time, BENCHMARKS.md). Numbers
        // are written plain, floats byte-stream-split (zstd then finds the
        // repeated exponent bytes).
        if let Ok(columns) = ArrowSchemaConverter::new().convert(schema) {
            for column in columns.columns() {
                let path = column.path().clone();
                match column.physical_type() {
                    PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => {}
                    PhysicalType::FLOAT | PhysicalType::DOUBLE => {
                        props = props
                            .set_column_dictionary_enabled(path.clone(), false)
                            .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
                    }
                    _ => props = props.set_column_dictionary_enabled(path, false),
                }
            }
        }
        let props = props.build();
        ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| StageError::parquet(path, e))
    }

    /// Closes every table (an output never written becomes an empty table)
    /// and returns the row counts.
    fn finish(mut self) -> Result<BTreeMap<String, (u64, String)>> {
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
            // Rows only: the wall time is in the manifest, so a rerun of a
            // deterministic stage writes byte-identical files.
            writer.append_key_value_metadata(KeyValue::new(
                "dqm.run".to_string(),
                json!({"rows": table.rows}).to_string(),
            ));
            let path = self.dir.join(&name).join(&table.file);
            writer
                .close()
                .with_context(|| format!("cannot finish output `{name}` ({})", path.display()))?;
            rows.insert(name, (table.rows, table.file.clone()));
        }
        Ok(rows)
    }
}

impl OutputWriter for ParquetOutputs {
    fn write(&mut self, output: &str, batch: RecordBatch) -> Result<(), StageError> {
        let Some(table) = self.tables.get(output) else {
            return Err(StageError::data(format!(
                "wrote to undeclared output `{output}`"
            )));
        };
        let declared = table.schema.clone();
        let found = batch.schema();
        if declared.fields().len() != found.fields().len() {
            return Err(StageError::data(format!(
                "output `{output}`: wrote {} columns, declared {}",
                found.fields().len(),
                declared.fields().len()
            )));
        }
        for (d, f) in declared.fields().iter().zip(found.fields()) {
            if d.name() != f.name() || !d.data_type().equals_datatype(f.data_type()) {
                return Err(StageError::data(format!(
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
        let path = self.dir.join(output).join(&table.file);
        let writer = table.writer.as_mut().expect("opened");
        writer
            .write(&batch)
            .map_err(|e| StageError::parquet(&path, e))?;
        // The writer holds a row group in memory until it closes it, by
        // default after a million rows. Close row groups by size too, so a
        // stage's memory stays bounded in its rows and readers of tables of
        // per-channel lists (HCAL maps, ~50 kB a row) get row groups of a
        // sensible size.
        if writer.in_progress_size() > ROW_GROUP_BYTES {
            writer.flush().map_err(|e| StageError::parquet(&path, e))?;
        }
        Ok(())
    }
}

/// The cached upstream tables a stage reads.
fn open_inputs(plan: &Plan, stage: &PlannedStage, workdir: &Workdir) -> Result<Vec<Input>> {
    let at = format!("stage `{}` ({})", stage.id, stage.kind);
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
    Ok(inputs)
}

/// The inputs a stage's manifest records (stage, output, cache key).
fn manifest_inputs(plan: &Plan, stage: &PlannedStage) -> Vec<ManifestInput> {
    stage
        .inputs
        .iter()
        .map(|r| ManifestInput {
            stage: r.stage.clone(),
            output: r.output.clone(),
            key: plan.stage(&r.stage).expect("planned").key.clone(),
        })
        .collect()
}

/// The provenance written into every Parquet footer of a stage.
fn provenance(plan: &Plan, stage: &PlannedStage) -> String {
    json!({
        "pipeline": plan.spec.name, "stage": stage.id, "kind": stage.kind, "version": stage.version,
        "key": stage.key, "params": stage.params, "inputs": manifest_inputs(plan, stage),
        "dqm_pipeline_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

/// Rows and file name of each output table a run wrote.
type Written = BTreeMap<String, (u64, String)>;

/// Runs the stage (or one shard of it) into `dir`: one Parquet file per
/// output named after the shard, plus `artifacts/`. Returns rows and file
/// name per output and the wall time.
fn execute(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
    shard: Shard,
    dir: &Path,
) -> Result<(Written, f64)> {
    let at = format!("stage `{}` ({})", stage.id, stage.kind);
    let started = Instant::now();
    let inputs = open_inputs(plan, stage, workdir)?;
    let provenance = provenance(plan, stage);
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let names: Vec<&str> = stage.outputs.iter().map(|o| o.name).collect();
    let mut outputs = ParquetOutputs::new(dir, stage, &names, shard.index, provenance);
    let reporter = console.reporter(&stage.id);
    let label = if shard.count > 1 {
        format!("{} [shard {}/{}]", stage.id, shard.index + 1, shard.count)
    } else {
        stage.id.clone()
    };
    console.log(&format!("{label}: running ({})", stage.kind));
    let result = {
        let mut ctx = RunContext {
            inputs: &inputs,
            output: &mut outputs,
            reporter: &reporter,
            artifacts: &artifacts,
            shard,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.stage.run(&mut ctx)))
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow!("{at} failed: {e}")),
        Err(panic) => {
            let msg = dqm_stages::error::panic_message(panic.as_ref());
            bail!("{at} failed: internal error: {msg}");
        }
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let rows = outputs.finish().with_context(|| at.clone())?;
    if std::fs::read_dir(&artifacts)?.next().is_none() {
        std::fs::remove_dir(&artifacts)?;
    }
    Ok((rows, wall_seconds))
}

/// Writes the manifest into a complete staging directory, commits it as the
/// stage's cache entry and links it from the pipeline's directory.
fn finalize(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
    staging: Staging,
    files: &BTreeMap<String, (u64, Vec<String>)>,
    wall_seconds: f64,
) -> Result<StageReport> {
    let manifest = Manifest {
        pipeline: plan.spec.name.clone(),
        stage: stage.id.clone(),
        kind: stage.kind.to_string(),
        version: stage.version,
        key: stage.key.clone(),
        params: stage.params.clone(),
        inputs: manifest_inputs(plan, stage),
        outputs: stage
            .outputs
            .iter()
            .map(|o: &OutputSpec| ManifestOutput {
                name: o.name.to_string(),
                table: stage.table_name(o.name),
                rows: files[o.name].0,
                files: files[o.name]
                    .1
                    .iter()
                    .map(|f| format!("{}/{f}", o.name))
                    .collect(),
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
    let main_rows = files[stage.outputs[0].name].0;
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

/// Runs one stage into its cache entry: all of it, or every shard that is
/// not done yet followed by the assembly of the parts (the same steps a
/// Slurm job array takes, so the output is the same either way).
pub fn run_stage(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
) -> Result<StageReport> {
    if stage.shards > 1 {
        for index in 0..stage.shards {
            if !workdir.part_done(stage, index) {
                run_part(plan, stage, workdir, console, index)?;
            }
        }
        return match assemble(plan, stage, workdir, console, true)? {
            Some(report) => Ok(report),
            None => bail!(
                "stage `{}`: parts are missing after running every shard",
                stage.id
            ),
        };
    }
    let staging = workdir.stage_dir(stage)?;
    let (rows, wall_seconds) =
        execute(plan, stage, workdir, console, Shard::WHOLE, staging.path())?;
    let files = rows
        .into_iter()
        .map(|(name, (n, file))| (name, (n, vec![file])))
        .collect();
    finalize(plan, stage, workdir, console, staging, &files, wall_seconds)
}

/// What one finished shard records next to its files.
#[derive(serde::Serialize, serde::Deserialize)]
struct PartManifest {
    rows: Written,
    wall_seconds: f64,
}

/// Runs shard `index` of a sharded stage into its part directory.
pub fn run_part(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
    index: usize,
) -> Result<()> {
    if index >= stage.shards {
        bail!(
            "stage `{}` has {} shards (0..{}); there is no shard {index}",
            stage.id,
            stage.shards,
            stage.shards - 1
        );
    }
    let shard = Shard {
        index,
        count: stage.shards,
    };
    let staging = workdir.stage_dir(stage)?;
    let (rows, wall_seconds) = execute(plan, stage, workdir, console, shard, staging.path())?;
    write_atomic(
        &staging.path().join("part.json"),
        serde_json::to_string(&PartManifest { rows, wall_seconds })?.as_bytes(),
    )?;
    workdir.commit_part(staging, stage, index)?;
    Ok(())
}

/// Once every shard of a stage is done, moves the parts' files into one
/// cache entry (recomputing the outputs that are not concatenations) and
/// returns its report; `None` while parts are missing. Safe to call from
/// several jobs at once: one assembles, the others find the entry (which
/// `replace` replaces, for a forced rerun).
pub fn assemble(
    plan: &Plan,
    stage: &PlannedStage,
    workdir: &Workdir,
    console: &Console,
    replace: bool,
) -> Result<Option<StageReport>> {
    let _lock = workdir.parts_lock(stage)?;
    if !replace && workdir.cached(stage).is_some() {
        return Ok(None);
    }
    if (0..stage.shards).any(|i| !workdir.part_done(stage, i)) {
        return Ok(None);
    }
    let at = format!("stage `{}` ({})", stage.id, stage.kind);
    let staging = workdir.stage_dir(stage)?;
    let recombined = stage.stage.recombined_outputs();
    let mut files: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut wall_seconds = 0.0;
    for index in 0..stage.shards {
        let part = workdir.part_dir(stage, index);
        let manifest: PartManifest = serde_json::from_str(
            &std::fs::read_to_string(part.join("part.json"))
                .with_context(|| format!("{at}: cannot read part {}", part.display()))?,
        )
        .with_context(|| format!("{at}: corrupt part manifest in {}", part.display()))?;
        wall_seconds += manifest.wall_seconds;
        for (name, (rows, file)) in manifest.rows {
            if recombined.contains(&name.as_str()) {
                continue;
            }
            let dir = staging.path().join(&name);
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(part.join(&name).join(&file), dir.join(&file))
                .with_context(|| format!("{at}: cannot move part {index} of `{name}`"))?;
            let entry = files.entry(name).or_default();
            entry.0 += rows;
            entry.1.push(file);
        }
        let artifacts = part.join("artifacts");
        if artifacts.is_dir() {
            let target = staging.path().join("artifacts");
            std::fs::create_dir_all(&target)?;
            std::fs::rename(&artifacts, target.join(format!("shard-{index:05}")))?;
        }
    }
    if !recombined.is_empty() {
        let started = Instant::now();
        let mut tables = BTreeMap::new();
        for o in &stage.outputs {
            if recombined.contains(&o.name) {
                continue;
            }
            let paths = files[o.name]
                .1
                .iter()
                .map(|f| staging.path().join(o.name).join(f))
                .collect();
            tables.insert(
                o.name.to_string(),
                Input {
                    name: format!("{}.{}", stage.id, o.name),
                    schema: o.schema.clone(),
                    files: paths,
                },
            );
        }
        let mut outputs = ParquetOutputs::new(
            staging.path(),
            stage,
            recombined,
            0,
            provenance(plan, stage),
        );
        let artifacts = staging.path().join("artifacts");
        std::fs::create_dir_all(&artifacts)?;
        stage
            .stage
            .recombine(&tables, &mut outputs, &artifacts)
            .map_err(|e| anyhow!("{at} failed combining its shards: {e}"))?;
        if std::fs::read_dir(&artifacts)?.next().is_none() {
            std::fs::remove_dir(&artifacts)?;
        }
        wall_seconds += started.elapsed().as_secs_f64();
        for (name, (rows, file)) in outputs.finish()? {
            files.insert(name, (rows, vec![file]));
        }
    }
    let report = finalize(plan, stage, workdir, console, staging, &files, wall_seconds)?;
    workdir.remove_parts(stage);
    Ok(Some(report))
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
