//! `pipeline submit`, `run-stage` and `status` against a real Slurm cluster.
//!
//! These tests need `sbatch` and a running cluster, so plain `cargo test`
//! lists them as ignored; `scripts/test-slurm.sh` (run by `scripts/test.sh`
//! and CI) starts a one-node Slurm on this machine, runs them with
//! `--ignored`, and stops the daemons it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SHARDED: &str = "name: sharded
stages:
  runs:
    kind: synth_runs
    shards: 3
    params: { seed_range: [0, 7], n_runs: 300, n_bad: 30 }
  reference:
    kind: dinamo_s
    inputs: [runs]
    shards: 2
    params: { historical_runs: 100 }
  metrics:
    kind: dqm_metrics
    inputs: [reference]
    shards: 2
";

/// `reference` fails at run time: one historical run cannot tune `alpha`.
const FAILING: &str = "name: failing
stages:
  runs:
    kind: synth_runs
    params: { seeds: [1, 2], n_runs: 200, n_bad: 20 }
  reference:
    kind: dinamo_s
    inputs: [runs]
    params: { alpha: auto, historical_runs: 1 }
  metrics:
    kind: dqm_metrics
    inputs: [reference]
";

fn pipeline(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .current_dir(dir)
        .env_remove("DQM_WORKDIR")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = pipeline(dir, args);
    assert!(
        out.status.success(),
        "pipeline {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `status` as (stage, state, job, detail) rows.
fn status(dir: &Path, args: &[&str]) -> Vec<(String, String, String, String)> {
    let mut full = vec!["status"];
    full.extend(args);
    ok(dir, &full)
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            let stage = w.next().unwrap().to_string();
            let mut state = w.next().unwrap().to_string();
            if state == "not" {
                state.push(' ');
                state.push_str(w.next().unwrap());
            }
            let job = w.next().unwrap().to_string();
            (stage, state, job, w.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// Polls `status` until `done` holds, failing after `limit`.
fn wait_for(
    dir: &Path,
    args: &[&str],
    limit: Duration,
    done: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let start = Instant::now();
    loop {
        let rows = status(dir, args);
        if done(&rows) {
            return rows;
        }
        assert!(
            start.elapsed() < limit,
            "status did not settle in {limit:?}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn all_cached(rows: &[(String, String, String, String)]) -> bool {
    rows.iter().all(|r| r.1 == "cached")
        || rows.iter().any(|r| r.1 == "failed" || r.1 == "cancelled")
}

fn query(dir: &Path, workdir: &str, sql: &str) -> String {
    ok(
        dir,
        &[
            "query",
            "p.yaml",
            sql,
            "--workdir",
            workdir,
            "--format",
            "json",
        ],
    )
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
#[ignore = "needs a running Slurm cluster: scripts/test-slurm.sh"]
fn sharded_pipeline_on_slurm_matches_a_local_run() {
    let sandbox = tempfile::tempdir().unwrap();
    let dir = sandbox.path();
    std::fs::write(dir.join("p.yaml"), SHARDED).unwrap();
    let dry = ok(
        dir,
        &["submit", "p.yaml", "--workdir", "cluster", "--dry-run"],
    );
    assert!(dry.contains("#SBATCH --array=0-2"), "{dry}");
    assert!(!dir.join("cluster/slurm/sharded/jobs.json").exists());

    let out = ok(
        dir,
        &[
            "submit",
            "p.yaml",
            "--workdir",
            "cluster",
            "--time",
            "00:10:00",
        ],
    );
    assert_eq!(out.matches("job array").count(), 3, "{out}");
    let rows = wait_for(
        dir,
        &["p.yaml", "--workdir", "cluster"],
        Duration::from_secs(240),
        all_cached,
    );
    assert!(rows.iter().all(|r| r.1 == "cached"), "{rows:?}");
    // Every shard left its log; the parts were assembled and removed.
    let logs = entries(&dir.join("cluster/slurm/sharded/logs"));
    assert_eq!(logs.len(), 3 + 2 + 2, "{logs:?}");
    assert!(entries(&dir.join("cluster/parts")).is_empty());

    ok(dir, &["run", "p.yaml", "--workdir", "local"]);
    for sql in [
        "SELECT dataset, run, label, counts FROM runs ORDER BY dataset, run",
        "SELECT dataset, run, chi2, flagged, alpha, threshold, pull, ref_mu FROM reference ORDER BY dataset, run",
        "SELECT * FROM metrics ORDER BY dataset, regime",
        "SELECT * FROM metrics_summary ORDER BY regime, metric",
    ] {
        let cluster = query(dir, "cluster", sql);
        assert!(cluster.len() > 100, "{sql}: {cluster}");
        assert_eq!(cluster, query(dir, "local", sql), "{sql}");
    }
    // One Parquet file per shard, under the same cache key either way.
    for workdir in ["cluster", "local"] {
        let link = dir.join(workdir).join("pipelines/sharded/reference/main");
        assert_eq!(entries(&link).len(), 2, "{workdir}");
    }
    // Nothing left to do.
    let again = ok(dir, &["submit", "p.yaml", "--workdir", "cluster"]);
    assert!(again.contains("nothing to submit"), "{again}");
}

#[test]
#[ignore = "needs a running Slurm cluster: scripts/test-slurm.sh"]
fn a_failed_stage_cancels_its_dependents_and_a_resubmission_runs_only_what_is_missing() {
    let sandbox = tempfile::tempdir().unwrap();
    let dir = sandbox.path();
    std::fs::write(dir.join("p.yaml"), FAILING).unwrap();
    ok(dir, &["submit", "p.yaml", "--workdir", "w"]);
    let rows = wait_for(
        dir,
        &["p.yaml", "--workdir", "w"],
        Duration::from_secs(120),
        |rows| rows[1].1 == "failed" && rows[2].1 == "cancelled",
    );
    assert_eq!(rows[0].1, "cached", "{rows:?}");
    assert!(rows[2].3.contains("input stage failed"), "{rows:?}");
    // The failure's log is named and says why.
    let log = rows[1]
        .3
        .split_whitespace()
        .find(|w| w.ends_with(".log"))
        .unwrap_or_else(|| panic!("no log in {rows:?}"));
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("stage `reference` (dinamo_s) failed") && text.contains("alpha: auto needs"),
        "{text}"
    );
    // No partial output: only the generator's entry, nothing staged.
    let cache = entries(&dir.join("w/cache"));
    assert_eq!(cache.len(), 1, "{cache:?}");
    assert!(cache[0].to_string_lossy().contains("synth_runs-"));
    assert!(entries(&dir.join("w/tmp")).is_empty());

    // Fixed: only the failed stage and its dependent are submitted.
    let fix = ["--set", "reference.historical_runs=60"];
    let mut args = vec!["submit", "p.yaml", "--workdir", "w"];
    args.extend(fix);
    let out = ok(dir, &args);
    let submitted: Vec<&str> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("follow"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(submitted, ["reference", "metrics"], "{out}");
    let mut args = vec!["p.yaml", "--workdir", "w"];
    args.extend(fix);
    let rows = wait_for(dir, &args, Duration::from_secs(120), all_cached);
    assert!(rows.iter().all(|r| r.1 == "cached"), "{rows:?}");
}

/// Long enough shards (a few seconds each) that a kill lands mid-shard.
const KILLED: &str = "name: killed
stages:
  runs:
    kind: synth_runs
    shards: 2
    params: { seed_range: [0, 80], n_runs: 5000, n_bad: 500 }
  reference:
    kind: dinamo_s
    inputs: [runs]
    params: { alpha: 0.5, threshold: 1.0, historical_runs: 100 }
";

/// The first process whose command line matches `pattern` (`pgrep -f`).
fn pgrep(pattern: &str) -> Option<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    let pids = String::from_utf8(out.stdout).unwrap();
    pids.split_whitespace().next().map(str::to_string)
}

/// The `run-stage` process of shard `shard` of this workdir's job, once it runs.
fn shard_process(workdir: &Path, shard: usize, limit: Duration) -> String {
    // The batch script's command: `pipeline run-stage FILE STAGE --workdir W --shard N`.
    let pattern = format!(
        "run-stage .*--workdir {} --shard {shard}",
        workdir.display()
    );
    let start = Instant::now();
    loop {
        if let Some(pid) = pgrep(&pattern) {
            return pid;
        }
        assert!(
            start.elapsed() < limit,
            "no process matching `{pattern}` within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs a running Slurm cluster: scripts/test-slurm.sh"]
fn a_shard_job_killed_mid_shard_leaves_nothing_partial_and_a_resubmission_matches_a_local_run() {
    let sandbox = tempfile::tempdir().unwrap();
    let dir = sandbox.path();
    std::fs::write(dir.join("p.yaml"), KILLED).unwrap();
    ok(dir, &["submit", "p.yaml", "--workdir", "w"]);
    let workdir = std::fs::canonicalize(dir.join("w")).unwrap();
    // SIGKILL to the job's process half a second into its shard: what the
    // OOM killer or a node failure does (no handler, no clean-up).
    let pid = shard_process(&workdir, 0, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success(), "kill -9 {pid}");
    let rows = wait_for(
        dir,
        &["p.yaml", "--workdir", "w"],
        Duration::from_secs(180),
        |rows| rows[0].1 == "failed" && rows[1].1 == "cancelled",
    );
    assert!(rows[1].3.contains("input stage failed"), "{rows:?}");
    // Nothing partial is visible: no cache entry, no part of the killed shard.
    assert!(entries(&workdir.join("cache")).is_empty(), "{rows:?}");
    let parts: Vec<PathBuf> = entries(&workdir.join("parts"))
        .into_iter()
        .flat_map(|stage| entries(&stage))
        .collect();
    assert!(
        parts
            .iter()
            .all(|p| !p.to_string_lossy().ends_with("00000")),
        "the killed shard left a part: {parts:?}"
    );
    // Resubmitted once the other shard's job is done (a running job keeps
    // the workdir busy, and the sweep waits for a quiet moment): finishes,
    // the killed job's staging is gone, and the tables equal a local run's.
    let start = Instant::now();
    let pattern = format!("run-stage .*{}", workdir.display());
    while pgrep(&pattern).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "jobs still running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(dir, &["submit", "p.yaml", "--workdir", "w"]);
    let rows = wait_for(
        dir,
        &["p.yaml", "--workdir", "w"],
        Duration::from_secs(240),
        all_cached,
    );
    assert!(rows.iter().all(|r| r.1 == "cached"), "{rows:?}");
    // The resubmission swept the killed job's staging.
    assert!(entries(&workdir.join("tmp")).is_empty());
    ok(dir, &["run", "p.yaml", "--workdir", "local"]);
    for sql in [
        "SELECT count(*), sum(label), sum(array_sum(counts)) FROM runs",
        "SELECT dataset, run, chi2, flagged FROM reference ORDER BY dataset, run",
    ] {
        let cluster = query(dir, "w", sql);
        assert!(cluster.len() > 20, "{sql}: {cluster}");
        assert_eq!(cluster, query(dir, "local", sql), "{sql}");
    }
}
