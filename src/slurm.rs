//! Batch submission to Slurm: one job per stage that is not cached (a job
//! array for a sharded stage), chained with `--dependency=afterok:` and
//! `--kill-on-invalid-dep=yes`, each running `pipeline run-stage` on the
//! same file with the same overrides and workdir; and `status`, which
//! reads the cache, the parts of sharded stages and `squeue`/`scontrol`.
//!
//! Assumes a shared filesystem: the workdir, the pipeline file, its
//! relative inputs and the binary are at the same paths on every node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cache::{Workdir, write_atomic};
use crate::plan::{Plan, PlannedStage};

/// Defaults of `pipeline submit` (a stage's `resources:` take precedence).
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub dry_run: bool,
    /// Stages to rerun even if cached (with their dependents).
    pub force: Vec<String>,
}

/// Everything a job needs to rerun the plan exactly: the file, the
/// overrides, the workdir and the directory relative paths resolve from.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub binary: PathBuf,
    pub file: PathBuf,
    pub workdir: PathBuf,
    pub cwd: PathBuf,
    pub set: Vec<String>,
}

/// One submitted job, as `status` finds it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    /// The stage's cache key when submitted: a record for another key is stale.
    pub key: String,
    pub shards: usize,
    pub script: PathBuf,
    /// Log file pattern (`%j`, or `%A_%a` for arrays).
    pub log: String,
    pub depends_on: Vec<String>,
}

fn jobs_dir(workdir: &Workdir, plan: &Plan) -> PathBuf {
    workdir.root.join("slurm").join(&plan.spec.name)
}

fn jobs_file(workdir: &Workdir, plan: &Plan) -> PathBuf {
    jobs_dir(workdir, plan).join("jobs.json")
}

pub fn load_jobs(workdir: &Workdir, plan: &Plan) -> Result<BTreeMap<String, JobRecord>> {
    let path = jobs_file(workdir, plan);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; delete it to forget old jobs",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Quotes a word for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The state of a job as the scheduler reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed {
        state: String,
        logs: Vec<String>,
    },
    Cancelled {
        reason: String,
    },
    /// The scheduler no longer knows the job (finished long ago).
    Unknown,
}

/// Asks `squeue`, then `scontrol`, about a job (all tasks of an array).
pub fn job_state(record: &JobRecord) -> JobState {
    let id = &record.job_id;
    let squeue = Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%T"])
        .output();
    if let Ok(out) = &squeue
        && out.status.success()
    {
        let states = String::from_utf8_lossy(&out.stdout);
        let states: Vec<&str> = states.split_whitespace().collect();
        if states
            .iter()
            .any(|s| *s == "RUNNING" || *s == "COMPLETING" || *s == "CONFIGURING")
        {
            return JobState::Running;
        }
        if states.contains(&"PENDING") {
            return JobState::Queued;
        }
    }
    let Ok(out) = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
    else {
        return JobState::Unknown;
    };
    if !out.status.success() {
        return JobState::Unknown;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, name: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    let (mut failed, mut cancelled, mut completed, mut logs) = (None, None, 0, Vec::new());
    let mut records = 0;
    for line in text.lines().filter(|l| l.contains("JobState=")) {
        records += 1;
        let state = field(line, "JobState").unwrap_or_default();
        match state.as_str() {
            "COMPLETED" => completed += 1,
            "CANCELLED" => {
                cancelled.get_or_insert(field(line, "Reason").unwrap_or_default());
            }
            "PENDING" | "CONFIGURING" => return JobState::Queued,
            "RUNNING" | "COMPLETING" => return JobState::Running,
            _ => {
                failed.get_or_insert(state);
                if let Some(log) = field(line, "StdOut") {
                    logs.push(log);
                }
            }
        }
    }
    if let Some(state) = failed {
        JobState::Failed { state, logs }
    } else if let Some(reason) = cancelled {
        JobState::Cancelled { reason }
    } else if records > 0 && completed == records {
        JobState::Completed
    } else {
        JobState::Unknown
    }
}

/// The batch script of one stage.
fn script(
    plan: &Plan,
    stage: &PlannedStage,
    inv: &Invocation,
    options: &SubmitOptions,
    log: &str,
    dependencies: &[String],
) -> String {
    let r = &stage.resources;
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |line: String| {
        let _ = writeln!(s, "#SBATCH {line}");
    };
    opt(format!("--job-name=dqm-{}-{}", plan.spec.name, stage.id));
    opt(format!("--output={log}"));
    opt(format!("--cpus-per-task={}", r.cpus.unwrap_or(1)));
    if let Some(mem) = r.mem.as_ref().or(options.mem.as_ref()) {
        opt(format!("--mem={mem}"));
    }
    if let Some(time) = r.time.as_ref().or(options.time.as_ref()) {
        opt(format!("--time={time}"));
    }
    if let Some(gpus) = r.gpus.filter(|&g| g > 0) {
        opt(format!("--gres=gpu:{gpus}"));
    }
    if let Some(p) = &options.partition {
        opt(format!("--partition={p}"));
    }
    if let Some(a) = &options.account {
        opt(format!("--account={a}"));
    }
    if stage.shards > 1 {
        opt(format!("--array=0-{}", stage.shards - 1));
    }
    if !dependencies.is_empty() {
        opt(format!("--dependency=afterok:{}", dependencies.join(":")));
        opt("--kill-on-invalid-dep=yes".to_string());
    }
    let _ = writeln!(
        s,
        "# stage `{}` ({}) of pipeline `{}`, cache key {}",
        stage.id, stage.kind, plan.spec.name, stage.key
    );
    s.push_str("set -euo pipefail\n");
    // Rayon (data-parallel stages) and libtorch use what the job was given.
    s.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\" OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
    let _ = writeln!(s, "cd {}", shell_quote(&inv.cwd.to_string_lossy()));
    let mut cmd = vec![
        shell_quote(&inv.binary.to_string_lossy()),
        "run-stage".into(),
        shell_quote(&inv.file.to_string_lossy()),
        shell_quote(&stage.id),
        "--workdir".into(),
        shell_quote(&inv.workdir.to_string_lossy()),
    ];
    for set in &inv.set {
        cmd.push("--set".into());
        cmd.push(shell_quote(set));
    }
    if stage.shards > 1 {
        cmd.push("--shard".into());
        cmd.push("\"$SLURM_ARRAY_TASK_ID\"".into());
    }
    let _ = writeln!(s, "exec {}", cmd.join(" "));
    s
}

/// Each stage's batch script, in plan order.
pub type Scripts = Vec<(String, String)>;

/// One line of `submit`'s report.
pub struct Submitted {
    pub stage: String,
    pub job_id: String,
    pub depends_on: Vec<String>,
    pub note: &'static str,
}

/// Submits every stage that is not cached; returns what was submitted (or,
/// with `dry_run`, what would be) in plan order. Stages that already have a
/// queued or running job for the same key are not submitted twice: their
/// dependents wait on that job.
pub fn submit(
    plan: &Plan,
    workdir: &Workdir,
    inv: &Invocation,
    options: &SubmitOptions,
) -> Result<(Vec<Submitted>, Scripts)> {
    for id in &options.force {
        if plan.stage(id).is_none() {
            bail!("no stage `{id}` in {}", plan.spec.path.display());
        }
    }
    let forced: std::collections::BTreeSet<String> = options
        .force
        .iter()
        .flat_map(|id| plan.descendants(id))
        .collect();
    let dir = jobs_dir(workdir, plan);
    let logs = dir.join("logs");
    if !options.dry_run {
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        // If no job (nor a local run) is writing the workdir right now, the
        // exclusive lock is free: taking it sweeps what a killed job left in
        // `tmp/`. Busy: nothing to sweep now, the jobs go on.
        drop(workdir.lock());
    }
    let mut jobs = load_jobs(workdir, plan)?;
    // Stage id -> job id its dependents wait on, for stages not cached.
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let mut report = Vec::new();
    let mut scripts = Vec::new();
    for stage in &plan.stages {
        if workdir.cached(stage).is_some() && !forced.contains(&stage.id) {
            continue;
        }
        if !forced.contains(&stage.id)
            && let Some(old) = jobs.get(&stage.id).filter(|j| j.key == stage.key)
            && matches!(job_state(old), JobState::Queued | JobState::Running)
        {
            pending.insert(stage.id.clone(), old.job_id.clone());
            report.push(Submitted {
                stage: stage.id.clone(),
                job_id: old.job_id.clone(),
                depends_on: old.depends_on.clone(),
                note: "already queued or running",
            });
            continue;
        }
        let mut deps: Vec<String> = stage
            .inputs
            .iter()
            .filter_map(|i| pending.get(&i.stage).cloned())
            .collect();
        deps.dedup();
        let key16 = &stage.key[..16];
        let log = if stage.shards > 1 {
            logs.join(format!("{}-{key16}-%A_%a.log", stage.id))
        } else {
            logs.join(format!("{}-{key16}-%j.log", stage.id))
        };
        let log = log.to_string_lossy().into_owned();
        let text = script(plan, stage, inv, options, &log, &deps);
        let path = dir.join(format!("{}-{key16}.sbatch", stage.id));
        let job_id = if options.dry_run {
            format!("<{}>", stage.id)
        } else {
            write_atomic(&path, text.as_bytes())?;
            let out = Command::new("sbatch")
                .arg("--parsable")
                .arg(&path)
                .output()
                .context("cannot run `sbatch`: is Slurm installed and on PATH?")?;
            if !out.status.success() {
                bail!(
                    "sbatch refused the job of stage `{}` ({}): {}",
                    stage.id,
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let id = String::from_utf8_lossy(&out.stdout);
            let id = id.trim().split(';').next().unwrap_or_default().to_string();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                bail!("sbatch gave no job id for stage `{}`: {id:?}", stage.id);
            }
            jobs.insert(
                stage.id.clone(),
                JobRecord {
                    job_id: id.clone(),
                    key: stage.key.clone(),
                    shards: stage.shards,
                    script: path.clone(),
                    log: log.clone(),
                    depends_on: deps.clone(),
                },
            );
            // Recorded after every submission, so an error halfway leaves
            // the jobs already queued findable by `status`.
            write_atomic(
                &jobs_file(workdir, plan),
                serde_json::to_string_pretty(&jobs)?.as_bytes(),
            )?;
            id
        };
        scripts.push((stage.id.clone(), text));
        pending.insert(stage.id.clone(), job_id.clone());
        report.push(Submitted {
            stage: stage.id.clone(),
            job_id,
            depends_on: deps,
            note: if stage.shards > 1 { "job array" } else { "job" },
        });
    }
    Ok((report, scripts))
}

/// One line of `status`.
pub struct StageStatus {
    pub stage: String,
    pub state: String,
    pub job_id: Option<String>,
    pub detail: String,
    /// The cached output's manifest, when the state is `cached`.
    pub manifest: Option<crate::cache::Manifest>,
}

/// What each stage of the plan is doing: cached, queued, running, failed
/// (with its log), cancelled, or not submitted.
pub fn status(plan: &Plan, workdir: &Workdir) -> Result<Vec<StageStatus>> {
    let jobs = load_jobs(workdir, plan)?;
    let mut out = Vec::new();
    for stage in &plan.stages {
        let record = jobs.get(&stage.id).filter(|j| j.key == stage.key);
        let parts = if stage.shards > 1 {
            format!("{}/{} shards done", workdir.parts_done(stage), stage.shards)
        } else {
            String::new()
        };
        let manifest = workdir.cached(stage);
        let (state, detail) = if let Some(m) = &manifest {
            (
                "cached".to_string(),
                format!(
                    "{} rows, {}",
                    m.outputs.first().map_or(0, |o| o.rows),
                    workdir.entry(stage).display()
                ),
            )
        } else if let Some(record) = record {
            match job_state(record) {
                JobState::Queued => ("queued".into(), parts),
                JobState::Running => ("running".into(), parts),
                JobState::Completed => (
                    "failed".into(),
                    format!(
                        "the job completed but wrote no output; log {}",
                        logs_of(record, &[]).join(", ")
                    ),
                ),
                JobState::Failed { state, logs } => (
                    "failed".into(),
                    format!("{state}; log {}", logs_of(record, &logs).join(", ")),
                ),
                JobState::Cancelled { reason } => (
                    "cancelled".into(),
                    if reason.contains("Dependency") {
                        format!("an input stage failed ({reason})")
                    } else {
                        reason
                    },
                ),
                JobState::Unknown => (
                    "failed".into(),
                    format!(
                        "job no longer known to Slurm and no output; log {}",
                        logs_of(record, &[]).join(", ")
                    ),
                ),
            }
        } else {
            ("not submitted".into(), parts)
        };
        out.push(StageStatus {
            stage: stage.id.clone(),
            state,
            job_id: record.map(|r| r.job_id.clone()),
            detail,
            manifest,
        });
    }
    Ok(out)
}

/// Log files of a job: what scontrol reported, else the files on disk that
/// match the job's log pattern.
fn logs_of(record: &JobRecord, reported: &[String]) -> Vec<String> {
    let existing: Vec<String> = reported
        .iter()
        .filter(|p| Path::new(p).is_file())
        .cloned()
        .collect();
    if !existing.is_empty() {
        return existing;
    }
    let pattern = record
        .log
        .replace("%A_%a", &format!("{}_*", record.job_id))
        .replace("%j", &record.job_id);
    let found: Vec<String> = glob::glob(&pattern)
        .map(|paths| {
            paths
                .filter_map(|p| p.ok())
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        vec![pattern]
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("runs.seeds=[0,2]"), "'runs.seeds=[0,2]'");
        assert_eq!(shell_quote("/a/b.yaml"), "/a/b.yaml");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn scripts_chain_dependencies_and_arrays() {
        let yaml = "name: demo\nstages:\n  runs:\n    kind: synth_runs\n    shards: 3\n    resources: { cpus: 2, mem: 3G }\n    params: { seed_range: [0, 6], n_runs: 50, n_bad: 5 }\n  reference:\n    kind: dinamo_s\n    inputs: [runs]\n    params: { historical_runs: 20 }\n";
        let spec = crate::spec::PipelineSpec::parse(yaml, Path::new("demo.yaml")).unwrap();
        let plan = crate::plan::plan(spec).unwrap();
        let inv = Invocation {
            binary: "/bin/pipeline".into(),
            file: "/w/demo.yaml".into(),
            workdir: "/w/work".into(),
            cwd: "/w".into(),
            set: vec!["runs.n_runs=60".into()],
        };
        let options = SubmitOptions {
            time: Some("00:10:00".into()),
            ..Default::default()
        };
        let runs = script(&plan, &plan.stages[0], &inv, &options, "/l/%A_%a.log", &[]);
        assert!(runs.contains("#SBATCH --array=0-2\n"), "{runs}");
        assert!(
            runs.contains("#SBATCH --cpus-per-task=2\n#SBATCH --mem=3G\n#SBATCH --time=00:10:00\n")
        );
        assert!(!runs.contains("--dependency"));
        assert!(runs.contains(
            "exec /bin/pipeline run-stage /w/demo.yaml runs --workdir /w/work --set runs.n_runs=60 --shard \"$SLURM_ARRAY_TASK_ID\"\n"
        ));
        let reference = script(
            &plan,
            &plan.stages[1],
            &inv,
            &options,
            "/l/%j.log",
            &["17".into()],
        );
        assert!(
            reference
                .contains("#SBATCH --dependency=afterok:17\n#SBATCH --kill-on-invalid-dep=yes\n")
        );
        assert!(!reference.contains("--array") && !reference.contains("--shard"));
    }
}
