//! End-to-end tests of the `pipeline` binary: real YAML, real Parquet, real
//! DataFusion queries, in a temporary directory per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, Float64Builder, Int8Array, Int64Array, ListBuilder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

const SMALL: &str = "name: small
stages:
  runs:
    kind: synth_runs
    params: { seeds: [1, 2], n_runs: 300, n_bad: 30 }
  reference:
    kind: dinamo_s
    inputs: [runs]
    params: { historical_runs: 100 }
  metrics:
    kind: dqm_metrics
    inputs: [reference]
";

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .current_dir(self.path())
            .env_remove("DQM_WORKDIR")
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pipeline {args:?} failed:\n{stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(!out.status.success(), "pipeline {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn cache_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path().join("dqm-work/cache"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn staging_is_empty(&self) -> bool {
        fs::read_dir(self.path().join("dqm-work/tmp")).map_or(true, |mut d| d.next().is_none())
    }
}

/// The status column of `run`'s summary, per stage.
fn statuses(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("tables:"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn second_run_is_cached_and_a_parameter_change_reruns_only_downstream() {
    let sb = Sandbox::new();
    sb.write("p.yaml", SMALL);
    let first = sb.ok(&["run", "p.yaml"]);
    assert_eq!(
        statuses(&first),
        pairs(&[("runs", "ran"), ("reference", "ran"), ("metrics", "ran")])
    );
    assert_eq!(sb.cache_entries().len(), 3);

    let second = sb.ok(&["run", "p.yaml"]);
    assert_eq!(
        statuses(&second),
        pairs(&[
            ("runs", "cached"),
            ("reference", "cached"),
            ("metrics", "cached")
        ])
    );

    // A parameter of `reference` changes: it and `metrics` rerun, `runs` does not.
    let changed = sb.ok(&["run", "p.yaml", "--set", "reference.alpha=0.5"]);
    assert_eq!(
        statuses(&changed),
        pairs(&[("runs", "cached"), ("reference", "ran"), ("metrics", "ran")])
    );
    assert_eq!(
        sb.cache_entries().len(),
        5,
        "the old outputs stay cached beside the new ones"
    );

    // Spelling out a default is the same key: all cached.
    let same = sb.ok(&["run", "p.yaml", "--set", "reference.alpha=auto"]);
    assert_eq!(
        statuses(&same),
        pairs(&[
            ("runs", "cached"),
            ("reference", "cached"),
            ("metrics", "cached")
        ])
    );

    // --force reruns the stage and its dependents.
    let forced = sb.ok(&["run", "p.yaml", "--force", "reference"]);
    assert_eq!(
        statuses(&forced),
        pairs(&[("runs", "cached"), ("reference", "ran"), ("metrics", "ran")])
    );

    // --until stops after the named stage.
    let sb2 = Sandbox::new();
    sb2.write("p.yaml", SMALL);
    let until = sb2.ok(&["run", "p.yaml", "--until", "reference"]);
    assert_eq!(
        statuses(&until),
        pairs(&[
            ("runs", "ran"),
            ("reference", "ran"),
            ("metrics", "skipped")
        ])
    );
    assert!(sb.staging_is_empty());
}

/// Every file of every stage output but the manifests, by path under the
/// workdir's `pipelines/<name>/`.
fn output_files(root: &Path, pipeline: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let dir = root.join("dqm-work/pipelines").join(pipeline);
    let mut stages: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    stages.sort();
    for stage in stages {
        let mut todo = vec![stage.canonicalize().unwrap()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.file_name().unwrap() != "manifest.json" {
                    out.push((p.display().to_string(), fs::read(&p).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_forced_rerun_writes_byte_identical_files_and_sweeps_a_killed_runs_staging() {
    let sb = Sandbox::new();
    sb.write("p.yaml", SMALL);
    sb.ok(&["run", "p.yaml"]);
    let before = output_files(sb.path(), "small");
    // runs; the reference's scores, bands and its two plots; the metrics
    // and their summary.
    assert_eq!(before.len(), 7);
    // What a kill -9 leaves: a staging directory and a half-made link.
    let stale = sb.path().join("dqm-work/tmp/dinamo_s-0123-99-ff");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("part-00000.parquet"), b"half").unwrap();
    sb.ok(&["run", "p.yaml", "--force", "runs"]);
    assert!(!stale.exists(), "the next run swept it");
    assert_eq!(output_files(sb.path(), "small"), before);
}

#[test]
fn query_returns_correct_aggregates_in_every_format() {
    let sb = Sandbox::new();
    sb.write("p.yaml", SMALL);
    sb.ok(&["run", "p.yaml"]);
    let csv = sb.ok(&[
        "query",
        "p.yaml",
        "SELECT dataset, sum(label) AS bad, count(*) AS n FROM runs GROUP BY dataset ORDER BY dataset",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.trim(), "dataset,bad,n\n1,30,300\n2,30,300");

    // Scores joined back to runs: one score per run.
    let json = sb.ok(&[
        "query",
        "p.yaml",
        "SELECT count(*) AS n FROM reference r JOIN runs u ON r.dataset = u.dataset AND r.run = u.run",
        "--format",
        "json",
    ]);
    assert_eq!(json.trim(), r#"[{"n":600}]"#);

    // The summary table is registered as <stage>_<output>; the per-dataset
    // table has one row per dataset and regime.
    let table = sb.ok(&["query", "p.yaml", "SELECT count(*) AS rows FROM metrics"]);
    assert!(table.contains("| 4    |"), "{table}");
    let summary = sb.ok(&[
        "query",
        "p.yaml",
        "SELECT n_datasets FROM metrics_summary WHERE regime = 'continual' AND metric = 'balanced_accuracy'",
        "--format",
        "csv",
    ]);
    assert_eq!(summary.trim(), "n_datasets\n2");

    // A good detector: bad runs score higher than good ones on average.
    let by_label = sb.ok(&[
        "query",
        "p.yaml",
        "SELECT label, avg(score) AS s FROM reference GROUP BY label ORDER BY label",
        "--format",
        "csv",
    ]);
    let means: Vec<f64> = by_label
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(means[1] > means[0] + 1.0, "{by_label}");

    let err = sb.fails(&["query", "p.yaml", "SELECT * FROM nope"]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn plan_shows_keys_cache_state_and_tables_and_outputs_carry_provenance() {
    let sb = Sandbox::new();
    sb.write("p.yaml", SMALL);
    let before = sb.ok(&["plan", "p.yaml"]);
    assert_eq!(before.matches("to run").count(), 3, "{before}");
    assert!(
        before.contains("table   metrics_summary (summary)"),
        "{before}"
    );
    sb.ok(&["run", "p.yaml"]);
    let after = sb.ok(&["plan", "p.yaml"]);
    assert_eq!(after.matches("] cached").count(), 3, "{after}");

    // The stable link, the manifest and the Parquet footer.
    let dir = sb.path().join("dqm-work/pipelines/small/reference");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "dinamo_s");
    assert_eq!(manifest["outputs"][0]["rows"], 600);
    assert_eq!(manifest["params"]["historical_runs"], 100);
    assert!(after.contains(&manifest["key"].as_str().unwrap()[..16]));
    let file = fs::File::open(dir.join("main/part-00000.parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .clone();
    let provenance = kv
        .iter()
        .find(|k| k.key == "dqm.provenance")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert!(provenance.contains("\"kind\":\"dinamo_s\""), "{provenance}");
}

#[test]
fn stages_lists_every_kind_with_parameters() {
    let sb = Sandbox::new();
    let out = sb.ok(&["stages"]);
    for kind in ["read_parquet", "synth_runs", "dinamo_s", "dqm_metrics"] {
        assert!(out.contains(kind), "{kind} missing");
    }
    assert!(out.contains("p_binomial: number = 0.4"), "{out}");
}

#[test]
fn validation_errors_exit_nonzero_naming_stage_and_line() {
    let sb = Sandbox::new();
    let cases = [
        (
            SMALL.replace("kind: dinamo_s", "kind: dinamo_z"),
            vec!["stage `reference`", "unknown kind `dinamo_z`"],
        ),
        (
            SMALL.replace("historical_runs: 100", "historical_rns: 100"),
            vec!["p.yaml:9", "historical_rns"],
        ),
        (
            SMALL.replace("n_runs: 300", "n_runs: lots"),
            vec!["p.yaml:5", "stage `runs`", "n_runs"],
        ),
        (
            SMALL.replace("inputs: [reference]", "inputs: [refrence]"),
            vec!["stage `metrics`", "refrence"],
        ),
        (
            SMALL.replace("inputs: [runs]", "inputs: [metrics]"),
            vec!["cycle", "`reference`", "`metrics`"],
        ),
        (SMALL.replace("  metrics:\n", "  runs:\n"), vec!["uplicate"]),
        (
            SMALL.replace(
                "kind: dqm_metrics\n    inputs: [reference]",
                "kind: dqm_metrics\n    inputs: [runs]",
            ),
            vec![
                "stage `metrics`",
                "flagged",
                "its inputs, in order: `runs.main`",
            ],
        ),
    ];
    for (yaml, needles) in cases {
        sb.write("p.yaml", &yaml);
        for cmd in ["plan", "run"] {
            let err = sb.fails(&[cmd, "p.yaml"]);
            for needle in &needles {
                assert!(
                    err.contains(needle),
                    "`{cmd}` error lacks `{needle}`:\n{err}\n{yaml}"
                );
            }
        }
        assert!(
            sb.cache_entries().is_empty(),
            "validation errors must not run anything"
        );
    }
    let err = sb.fails(&["run", "missing.yaml"]);
    assert!(err.contains("missing.yaml"), "{err}");
}

/// A histogram table as a user might bring it, with one NaN bin in dataset 0.
fn write_user_histograms(path: &Path, with_nan: bool, with_label: bool) {
    let n = 40;
    let mut counts = ListBuilder::new(Float64Builder::new());
    for i in 0..n {
        for j in 0..10 {
            let v = if with_nan && i == 25 && j == 3 {
                f64::NAN
            } else {
                100.0 + ((i * 7 + j * 3) % 11) as f64
            };
            counts.values().append_value(v);
        }
        counts.append(true);
    }
    let counts = counts.finish();
    let mut fields = vec![Field::new("run", DataType::Int64, false)];
    let mut columns: Vec<arrow::array::ArrayRef> =
        vec![Arc::new(Int64Array::from_iter_values(0..n as i64))];
    if with_label {
        fields.push(Field::new("label", DataType::Int8, false));
        columns.push(Arc::new(Int8Array::from_iter_values(
            (0..n).map(|i| i8::from(i % 10 == 9)),
        )));
    }
    fields.push(Field::new("counts", counts.data_type().clone(), true));
    columns.push(Arc::new(counts));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

const USER: &str = "name: user
stages:
  hists:
    kind: read_parquet
    params: { path: hists.parquet }
  reference:
    kind: dinamo_s
    inputs: [hists]
    params: { alpha: 0.5, threshold: 1.0, historical_runs: 10 }
";

#[test]
fn read_parquet_brings_user_tables_in_and_bad_data_fails_cleanly() {
    let sb = Sandbox::new();
    sb.write("p.yaml", USER);

    // A user table without a dataset column is one dataset.
    write_user_histograms(&sb.path().join("hists.parquet"), false, true);
    let out = sb.ok(&["run", "p.yaml"]);
    assert_eq!(
        statuses(&out),
        pairs(&[("hists", "ran"), ("reference", "ran")])
    );
    let csv = sb.ok(&[
        "query",
        "p.yaml",
        "SELECT count(*) AS n, min(dataset) AS d FROM reference",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.trim(), "n,d\n40,0");

    // The file changes (same path): read_parquet's key changes, both rerun.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_user_histograms(&sb.path().join("hists.parquet"), true, true);
    let entries_before = sb.cache_entries();
    let err = sb.fails(&["run", "p.yaml"]);
    assert!(
        err.contains("stage `reference`") && err.contains("run 25") && err.contains("NaN"),
        "{err}"
    );
    // hists reran and is cached; the failed stage left nothing behind.
    let entries_after = sb.cache_entries();
    assert_eq!(
        entries_after.len(),
        entries_before.len() + 1,
        "{entries_after:?}"
    );
    assert!(
        entries_after
            .iter()
            .filter(|e| e.starts_with("dinamo_s"))
            .count()
            == 1
    );
    assert!(sb.staging_is_empty());

    // A table missing a required column is caught by plan, before running.
    write_user_histograms(&sb.path().join("hists.parquet"), false, false);
    let err = sb.fails(&["plan", "p.yaml"]);
    assert!(
        err.contains("stage `reference`") && err.contains("`label`"),
        "{err}"
    );

    // Not a Parquet file, and no file at all.
    fs::write(sb.path().join("hists.parquet"), b"this is not parquet").unwrap();
    let err = sb.fails(&["run", "p.yaml"]);
    assert!(
        err.contains("stage `hists`") && err.contains("hists.parquet"),
        "{err}"
    );
    fs::remove_file(sb.path().join("hists.parquet")).unwrap();
    let err = sb.fails(&["run", "p.yaml"]);
    assert!(err.contains("no file matches"), "{err}");
}

#[test]
fn a_locked_workdir_refuses_a_second_run() {
    let sb = Sandbox::new();
    sb.write("p.yaml", SMALL);
    fs::create_dir_all(sb.path().join("dqm-work")).unwrap();
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sb.path().join("dqm-work/.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let err = sb.fails(&["run", "p.yaml"]);
    assert!(err.contains("in use by another pipeline run"), "{err}");
    drop(lock);
    sb.ok(&["run", "p.yaml"]);
}

#[test]
fn medic_data_pipeline_converts_filters_and_is_queryable() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let yaml = fs::read_to_string(format!("{repo}/pipelines/medic_data.yaml"))
        .unwrap()
        .replace("path: data/delphes", &format!("path: {repo}/data/delphes"));
    sb.write("medic.yaml", &yaml);
    let out = sb.ok(&["run", "medic.yaml"]);
    assert_eq!(
        statuses(&out),
        pairs(&[("events", "ran"), ("filtered", "ran"), ("windows", "ran")])
    );
    // Windows: stride 1 inside each segment (5 train folds, the test
    // block), fractions sum to 1: W - 1 fewer windows than events in each.
    let csv = |sql: &str| sb.ok(&["query", "medic.yaml", sql, "--format", "csv"]);
    let per_segment = csv(
        "SELECT coalesce(o.fold, 0) AS segment, o.n - 29 AS expected, coalesce(w.n, 0) AS windows, w.ok \
         FROM (SELECT fold, count(*) AS n FROM windows_order GROUP BY fold) o \
         LEFT JOIN (SELECT fold, count(*) AS n, max(abs(p_0 + p_1 + p_2 + p_3 - 1.0)) < 1e-12 AS ok \
                    FROM windows GROUP BY fold) w ON o.fold IS NOT DISTINCT FROM w.fold \
         ORDER BY segment",
    );
    let rows: Vec<Vec<&str>> = per_segment
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 6, "{per_segment}");
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row[0], k.to_string(), "{per_segment}");
        assert_eq!(row[1], row[2], "{per_segment}");
        assert_eq!(row[3], "true", "{per_segment}");
    }
    let kept: usize = csv("SELECT count(*) FROM filtered")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let test_events: usize = csv("SELECT count(*) FROM windows_order WHERE block = 'test'")
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let test_share = test_events as f64 / kept as f64;
    assert!((0.17..0.23).contains(&test_share), "{test_share}");
    // No physics event (any detector copy of it) is in two segments.
    let leak = csv(
        "SELECT count(*) AS shared FROM (SELECT f.entry FROM windows_order o JOIN filtered f USING (event_id) \
         GROUP BY f.entry HAVING count(DISTINCT coalesce(o.fold, 0)) > 1)",
    );
    assert_eq!(leak.trim(), "shared\n0");
    let csv = sb.ok(&[
        "query",
        "medic.yaml",
        "SELECT label, count(*) AS n, min(n_tracks) >= 10 AND min(n_towers) >= 10 AS ok FROM filtered GROUP BY label ORDER BY label",
        "--format",
        "csv",
    ]);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in &rows {
        let cols: Vec<&str> = row.split(',').collect();
        let n: usize = cols[1].parse().unwrap();
        assert!((480..=500).contains(&n) && cols[2] == "true", "{row}");
    }
    // The dead-HCAL configurations lose hadronic energy: larger mean MET than normal.
    let met = sb.ok(&[
        "query",
        "medic.yaml",
        "SELECT label, avg(met_met) AS met FROM events GROUP BY label ORDER BY label",
        "--format",
        "csv",
    ]);
    let met: Vec<f64> = met
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    // barrel_off, endcap_off, forward_off, normal
    assert!(met[0] > 1.5 * met[3] && met[1] > 1.5 * met[3], "{met:?}");

    // A missing input file is caught by plan, naming the parameter.
    sb.write(
        "bad.yaml",
        &yaml.replace("dijet13_normal_tiny.root", "nope.root"),
    );
    let err = sb.fails(&["plan", "bad.yaml"]);
    assert!(
        err.contains("stage `events`")
            && err.contains("files[0].path")
            && err.contains("nope.root"),
        "{err}"
    );
}

/// `--set` pairs that shrink MEDIC training to seconds: W = 5, 2 folds, one
/// epoch, on the CPU.
const QUICK_MEDIC: [&str; 8] = [
    "--set",
    "windows.window=5",
    "--set",
    "windows.folds=2",
    "--set",
    "model.max_epochs=1",
    "--set",
    "model.device=cpu",
];

/// A shipped MEDIC pipeline whose `pattern` points at the repository's
/// bundled Delphes files, so it runs from a sandbox directory.
/// Every shipped pipeline (and test fixture) plans: its YAML parses, every
/// stage's parameters validate and every input schema fits, without
/// running anything — the study pipelines too heavy to run in the tests
/// included.
#[test]
fn every_shipped_pipeline_plans() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut planned = 0;
    for dir in ["pipelines", "tests/fixtures"] {
        let mut files: Vec<_> = fs::read_dir(format!("{repo}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = fs::read_to_string(&path)
                .unwrap()
                .replace("data/", &format!("{repo}/data/"));
            sb.write(&name, &text);
            let out = sb.pipeline(&["plan", &name]);
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                assert!(text.contains("to run"), "{name}: {text}");
            } else {
                // A pipeline applying another's model plans once that ran.
                assert!(
                    text.contains("no file matches `dqm-work/pipelines/"),
                    "{name}: {text}"
                );
            }
            planned += 1;
        }
    }
    assert!(planned >= 18, "{planned} pipelines");
    assert!(
        !sb.path().join("dqm-work/pipelines").exists(),
        "nothing ran"
    );
}

/// A pipeline of `tests/fixtures/`, its data paths made absolute.
fn fixture_pipeline(name: &str) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    fs::read_to_string(format!("{repo}/tests/fixtures/{name}"))
        .unwrap()
        .replace(
            "pattern: data/delphes",
            &format!("pattern: {repo}/data/delphes"),
        )
}

fn bundled_pipeline(name: &str) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    fs::read_to_string(format!("{repo}/pipelines/{name}"))
        .unwrap()
        .replace(
            "pattern: data/delphes",
            &format!("pattern: {repo}/data/delphes"),
        )
        .replace("path: data/delphes", &format!("path: {repo}/data/delphes"))
}

/// A model trained by one pipeline scores events it never saw in another
/// (`medic_apply.yaml`), read back from Parquet and checked at plan time.
#[test]
fn a_trained_medic_model_is_applied_to_unseen_entries() {
    let sb = Sandbox::new();
    sb.write("w30.yaml", &bundled_pipeline("medic_w30.yaml"));
    sb.write("apply.yaml", &bundled_pipeline("medic_apply.yaml"));
    let w5 = ["--set", "windows.window=5"];
    let mut train = vec!["run", "w30.yaml", "--until", "model"];
    train.extend(QUICK_MEDIC);
    train.extend(["--set", "events.entries=[0,400]"]);
    sb.ok(&train);
    let mut apply = vec!["run", "apply.yaml"];
    apply.extend(w5);
    apply.extend(["--set", "predictions.device=cpu"]);
    let out = sb.ok(&apply);
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |file: &str, sql: &str| {
        let mut args = vec!["query", file, sql, "--format", "csv"];
        args.extend(if file == "w30.yaml" {
            &train[4..]
        } else {
            &apply[2..]
        });
        sb.ok(&args).lines().nth(1).unwrap().to_string()
    };
    // Trained on entries 0-399, applied to 400-499 only.
    assert_eq!(query("w30.yaml", "SELECT max(entry) FROM events"), "399");
    assert_eq!(
        query("apply.yaml", "SELECT min(entry), max(entry) FROM events"),
        "400,499"
    );
    // Every window is scored by both folds; the metrics know the model.
    let windows = query(
        "apply.yaml",
        "SELECT count(*) FROM windows WHERE block = 'test'",
    );
    assert_eq!(query("apply.yaml", "SELECT count(*) FROM windows"), windows);
    assert_eq!(
        query(
            "apply.yaml",
            "SELECT count(*), count(DISTINCT window_id) FROM predictions_folds"
        ),
        format!("{},{windows}", 2 * windows.parse::<usize>().unwrap())
    );
    assert_eq!(
        query(
            "apply.yaml",
            "SELECT window, folds, windows, accuracy BETWEEN 0 AND 1 FROM metrics"
        ),
        format!("5,2,{windows},true")
    );
    // Windows of another W than the model's are refused before running.
    let mut other = vec!["plan", "apply.yaml", "--set", "windows.window=6"];
    other.push("--set");
    other.push("predictions.device=cpu");
    let err = sb.fails(&other);
    assert!(
        err.contains("predictions") && err.contains("W (window) = 6"),
        "{err}"
    );
}

/// The ensemble distilled into one narrow student (`medic_distill.yaml`),
/// shrunk like the main job: one model of width 64 scores the test block,
/// and each comparison pairs the same windows with an interval.
#[test]
fn medic_distill_trains_one_student_and_compares_it_on_the_same_windows() {
    let sb = Sandbox::new();
    sb.write("distill.yaml", &bundled_pipeline("medic_distill.yaml"));
    let students: Vec<String> = ["student", "narrow", "single"]
        .iter()
        .flat_map(|stage| {
            [
                format!("{stage}.max_epochs=1"),
                format!("{stage}.device=cpu"),
            ]
        })
        .collect();
    let mut quick = QUICK_MEDIC.to_vec();
    for set in &students {
        quick.extend(["--set", set.as_str()]);
    }
    let mut run = vec!["run", "distill.yaml"];
    run.extend(&quick);
    let out = sb.ok(&run);
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |sql: &str| {
        let mut args = vec!["query", "distill.yaml", sql, "--format", "csv"];
        args.extend(&quick);
        sb.ok(&args).lines().nth(1).unwrap().to_string()
    };
    // One student, validated on fold 1, of width 64.
    assert_eq!(query("SELECT count(*), min(fold) FROM student"), "1,1");
    assert_eq!(
        query("SELECT strpos(card, '\"embed\":64') > 0 FROM student"),
        "true"
    );
    let test_windows = query("SELECT count(*) FROM windows WHERE block = 'test'");
    assert_eq!(
        query("SELECT count(*), count(DISTINCT fold) FROM student_predictions_folds"),
        format!("{test_windows},1")
    );
    assert_eq!(query("SELECT folds FROM student_metrics"), "1");
    // The comparison's figures are each input's own metrics, the
    // difference theirs, inside its interval.
    let row = query(
        "SELECT c.windows, abs(c.model - s.accuracy) < 1e-12, abs(c.reference - m.accuracy) < 1e-12, \
         abs(c.difference - (s.accuracy - m.accuracy)) < 1e-12, \
         c.difference_lo <= c.difference AND c.difference <= c.difference_hi \
         FROM student_vs_ensemble c, student_metrics s, metrics m WHERE c.metric = 'accuracy'",
    );
    assert_eq!(row, format!("{test_windows},true,true,true,true"));
    assert_eq!(query("SELECT count(*) FROM student_vs_rule"), "5");
    // Fold 1 trained alone is the ensemble's fold 1, to the bit.
    assert_eq!(
        query(
            "SELECT count(*), sum(CASE WHEN s.prob_0 = f.prob_0 AND s.prob_3 = f.prob_3 THEN 1 ELSE 0 END) \
             FROM single_predictions s JOIN predictions_folds f ON s.window_id = f.window_id WHERE f.fold = 1"
        ),
        format!("{test_windows},{test_windows}")
    );
    assert_eq!(
        query("SELECT count(*) FROM student_vs_narrow WHERE difference IS NOT NULL"),
        "5"
    );
    // A teacher without its share of the targets is refused at plan time.
    let mut bad = vec!["plan", "distill.yaml", "--set", "student.distill_weight=0"];
    bad.extend(&quick);
    let err = sb.fails(&bad);
    assert!(
        err.contains("student") && err.contains("distill_weight"),
        "{err}"
    );
}

/// The main job, shrunk with `--set` (W=5, 2 folds, 1 epoch) so it runs in
/// seconds: ROOT -> events -> windows -> ensemble -> predictions -> metrics,
/// plots and alerts, all queryable; bad models are clear errors.
#[test]
fn medic_w30_pipeline_trains_predicts_and_scores_end_to_end() {
    let sb = Sandbox::new();
    let yaml = bundled_pipeline("medic_w30.yaml");
    sb.write("w30.yaml", &yaml);
    let mut quick = QUICK_MEDIC.to_vec();
    quick.extend(["--set", "predictions.device=cpu"]);
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["run", "w30.yaml"];
        args.extend(&quick);
        args.extend(extra);
        args.into_iter().map(String::from).collect()
    };
    let out = sb.ok(&run(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |sql: &str| {
        let mut args = vec!["query", "w30.yaml", sql, "--format", "csv"];
        args.extend(&quick);
        sb.ok(&args)
    };
    let test_windows = query("SELECT count(*) FROM windows WHERE block = 'test'");
    let test_windows: usize = test_windows.lines().nth(1).unwrap().parse().unwrap();
    assert!(test_windows > 300, "{test_windows}");
    // One prediction per test window; the ensemble mean is a distribution.
    let p = query(
        "SELECT count(*) AS n, max(abs(prob_0 + prob_1 + prob_2 + prob_3 - 1.0)) < 1e-5 AS ok, \
         min(vote) >= 0 AND max(vote) <= 3 AS votes FROM predictions",
    );
    assert_eq!(
        p.lines().nth(1).unwrap(),
        format!("{test_windows},true,true")
    );
    // Two folds, each with its per-window probabilities.
    let f = query("SELECT count(DISTINCT fold) AS k, count(*) AS n FROM predictions_folds");
    assert_eq!(f.lines().nth(1).unwrap(), format!("2,{}", 2 * test_windows));
    // The metrics row knows W and the ensemble size; figures are in range.
    let m = query(
        "SELECT window, folds, windows, accuracy BETWEEN 0 AND 1 AS acc, auc BETWEEN 0 AND 1 AS auc, \
         brier BETWEEN 0 AND 2 AS brier FROM metrics",
    );
    assert_eq!(
        m.lines().nth(1).unwrap(),
        format!("5,2,{test_windows},true,true,true")
    );
    // Beside the model: its interval, the tie ceiling and chance, and the
    // physics rule scored the same way on the same windows.
    let m = query(
        "SELECT accuracy_lo <= accuracy AND accuracy <= accuracy_hi, tie_ceiling > chance_accuracy, \
         binary_baseline_accuracy >= 0.5 FROM metrics",
    );
    assert_eq!(m.lines().nth(1).unwrap(), "true,true,true", "{m}");
    let b = query(
        "SELECT b.windows = m.windows, b.tie_ceiling = m.tie_ceiling, b.accuracy > b.chance_accuracy, \
         b.binary_auc > 0.8 FROM baseline_metrics b, metrics m",
    );
    assert_eq!(b.lines().nth(1).unwrap(), "true,true,true,true", "{b}");
    let rule = query("SELECT class FROM baseline_rule WHERE barrel AND endcap AND forward");
    assert_eq!(
        rule.lines().nth(1).unwrap(),
        "0",
        "all regions alive: normal"
    );
    let cm = query("SELECT sum(count) FROM metrics_confusion WHERE matrix = 'multiclass'");
    assert_eq!(cm.lines().nth(1).unwrap(), test_windows.to_string());
    let log = query("SELECT count(*) FROM model_log");
    assert_eq!(log.lines().nth(1).unwrap(), "2");
    let scan = query("SELECT count(*) FROM alerts_scan");
    assert_eq!(scan.lines().nth(1).unwrap(), "35");
    // Plots and PyTorch-loadable weights next to the tables.
    let link = sb.path().join("dqm-work/pipelines/medic_w30");
    for file in [
        "metrics/artifacts/confusion_multiclass.png",
        "metrics/artifacts/confusion_binary.png",
        "metrics/artifacts/roc.png",
        "metrics/artifacts/training_curves.png",
        "model/artifacts/fold_1.safetensors",
        "model/artifacts/fold_2.json",
    ] {
        let bytes = fs::read(link.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        if file.ends_with(".png") {
            assert_eq!(&bytes[1..4], b"PNG", "{file}");
        }
    }

    // The window-size scan plans: nine ensembles gathered by one union.
    sb.write("wscan.yaml", &bundled_pipeline("medic_wscan.yaml"));
    let plan = sb.ok(&["plan", "wscan.yaml"]);
    assert_eq!(plan.matches("[medic_train]").count(), 9, "{plan}");
    assert!(
        plan.contains("table1 [union]") && plan.contains("source, window, folds"),
        "{plan}"
    );

    // Windows of another W than the model's: refused by plan, naming the stage.
    sb.write(
        "mismatch.yaml",
        &format!(
            "{yaml}  windows6:\n    kind: sliding_windows\n    inputs: [filtered]\n    params: {{ window: 6, seed: 42 }}\n  predictions6:\n    kind: medic_infer\n    inputs: [windows6, windows6.order, filtered, model]\n"
        ),
    );
    let mut args = vec!["plan", "mismatch.yaml"];
    args.extend(&quick);
    let err = sb.fails(&args);
    assert!(
        err.contains("predictions6")
            && err.contains("W (window) = 6")
            && err.contains("W (window) = 5"),
        "{err}"
    );

    // A deleted model file: the rerun that needs it fails, naming the file
    // and the way out, and writes nothing.
    let model_dir = fs::canonicalize(link.join("model")).unwrap().join("main");
    for f in fs::read_dir(&model_dir).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let before = sb.cache_entries();
    let args = run(&["--force", "predictions"]);
    let err = sb.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("holds no Parquet file") && err.contains("--force model"),
        "{err}"
    );
    assert_eq!(sb.cache_entries(), before);
    assert!(sb.staging_is_empty());
}

#[test]
fn dinamo_compare_pipeline_scores_both_methods_and_compares_them() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    fs::copy(
        format!("{repo}/pipelines/dinamo_compare.yaml"),
        sb.path().join("compare.yaml"),
    )
    .unwrap();
    // Two short datasets and a small network keep this to seconds.
    let quick = [
        "--set",
        "runs.seed_range=[0, 2]",
        "--set",
        "runs.n_runs=120",
        "--set",
        "runs.n_bad=12",
        "--set",
        "s.historical_runs=40",
        "--set",
        "ml.historical_runs=40",
        "--set",
        "ml.d_model=20",
        "--set",
        "ml.heads=2",
        "--set",
        "ml.feed_forward=20",
        "--set",
        "ml.layers=1",
        "--set",
        "ml.context=8",
        "--set",
        "ml.max_iterations=20",
        "--set",
        "ml.device=cpu",
    ];
    let with = |head: &[&str]| -> Vec<String> {
        head.iter()
            .chain(quick.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = with(&["run", "compare.yaml"]);
    let out = sb.ok(&run.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |sql: &str| {
        let args = with(&["query", "compare.yaml", sql, "--format", "csv"]);
        sb.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The two references score the same runs with the same columns; only
    // DINAMO-S has an alpha.
    let same = query(
        "SELECT count(*), count(s.alpha), count(m.alpha), sum(CASE WHEN m.chi2 > 0 THEN 1 ELSE 0 END) \
         FROM s JOIN ml m ON s.dataset = m.dataset AND s.run = m.run AND s.label = m.label",
    );
    assert_eq!(same.lines().nth(1).unwrap(), "240,240,0,240");
    // One training step per good non-empty run.
    let updates = query(
        "SELECT (SELECT count(*) FROM ml_updates) = \
         (SELECT count(*) FROM ml WHERE label = 0 AND integral > 0)",
    );
    assert_eq!(updates.lines().nth(1).unwrap(), "true");
    // Table 1 layout: 2 methods x 2 regimes x 5 metrics; paired differences
    // of DINAMO-ML against DINAMO-S on both datasets.
    let summary = query(
        "SELECT count(*), count(DISTINCT method) FROM compare \
         WHERE metric = 'balanced_accuracy' AND median BETWEEN 0 AND 1",
    );
    assert_eq!(summary.lines().nth(1).unwrap(), "4,2");
    let paired = query(
        "SELECT method, baseline, n_datasets FROM compare_paired \
         WHERE regime = 'continual' AND metric = 'balanced_accuracy'",
    );
    assert_eq!(paired.lines().nth(1).unwrap(), "DINAMO-ML,DINAMO-S,2");
    let diff = query(
        "SELECT count(*) FROM compare_differences d JOIN ml_metrics m \
         ON d.dataset = m.dataset AND d.regime = m.regime \
         WHERE d.metric = 'balanced_accuracy' AND d.value = m.balanced_accuracy",
    );
    assert_eq!(diff.lines().nth(1).unwrap(), "4");
    let link = sb
        .path()
        .join("dqm-work/pipelines/dinamo_compare/compare/artifacts");
    for file in [
        "distribution_balanced_accuracy.png",
        "distribution_adaptation_time.png",
        "distribution_jaccard.png",
        "score_vs_run_dinamo_s.png",
        "score_vs_run_dinamo_ml.png",
        "reference_examples_dinamo_ml.png",
    ] {
        let bytes = fs::read(link.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&bytes[1..4], b"PNG", "{file}");
    }
    // Each reference draws what it found for the shifter (first dataset).
    for stage in ["s", "ml"] {
        let dir = sb.path().join(format!(
            "dqm-work/pipelines/dinamo_compare/{stage}/artifacts"
        ));
        for file in ["score_vs_run_0.png", "worst_runs_0.png"] {
            let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{stage}/{file}: {e}"));
            assert_eq!(&bytes[1..4], b"PNG", "{stage}/{file}");
        }
    }
    // Same seed, same scores: a forced rerun of DINAMO-ML reproduces them.
    let before = query("SELECT sum(chi2), sum(threshold) FROM ml");
    let rerun = with(&["run", "compare.yaml", "--force", "ml"]);
    sb.ok(&rerun.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(query("SELECT sum(chi2), sum(threshold) FROM ml"), before);
}

/// The shipped study pipeline, on 6 short datasets: its score table carries
/// no per-run vectors, the Jaccard distance comes from `reference.bands`,
/// and every metric is there for every dataset and regime.
#[test]
fn dinamo_s_study_pipeline_keeps_every_metric_without_per_run_vectors() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    fs::copy(
        format!("{repo}/pipelines/dinamo_s_study.yaml"),
        sb.path().join("study.yaml"),
    )
    .unwrap();
    let set = [
        "--set",
        "runs.seed_range=[0, 6]",
        "--set",
        "runs.n_runs=400",
        "--set",
        "runs.n_bad=40",
        "--set",
        "reference.historical_runs=150",
    ];
    let args = |head: &[&'static str]| -> Vec<&str> { head.iter().chain(&set).copied().collect() };
    let out = sb.ok(&args(&["run", "study.yaml"]));
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |sql: &'static str| sb.ok(&args(&["query", "study.yaml", sql, "--format", "csv"]));
    let columns = query("SELECT * FROM reference LIMIT 1");
    let header = columns.lines().next().unwrap();
    assert!(
        header.contains("chi2") && !header.contains("ref_mu"),
        "{header}"
    );
    // 6 datasets x 2 regimes x 100 bins of bands.
    let bands = query("SELECT count(*), count(DISTINCT dataset) FROM reference_bands");
    assert_eq!(bands.lines().nth(1).unwrap(), "1200,6");
    let metrics = query(
        "SELECT count(*), count(jaccard), count(balanced_accuracy), \
         sum(CASE WHEN jaccard > 0 AND jaccard < 1 THEN 1 ELSE 0 END) FROM metrics",
    );
    assert_eq!(metrics.lines().nth(1).unwrap(), "12,12,12,12");

    // The study draws with the generator's `fast` sampler; the default
    // sampler gives other runs for the same seeds, and both give DINAMO-S
    // the accuracy of the paper's datasets (mean over the 6 datasets'
    // continual regimes).
    let accuracy_sql = "SELECT avg(balanced_accuracy) FROM metrics WHERE regime = 'continual'";
    let chi2_sql = "SELECT sum(chi2) FROM reference";
    let fast = (query(accuracy_sql), query(chi2_sql));
    let mut default_args = args(&["run", "study.yaml"]);
    default_args.extend(["--set", "runs.sampler=rand_distr"]);
    sb.ok(&default_args);
    let query_default = |sql: &'static str| {
        let mut a = args(&["query", "study.yaml", sql, "--format", "csv"]);
        a.extend(["--set", "runs.sampler=rand_distr"]);
        sb.ok(&a)
    };
    let default = (query_default(accuracy_sql), query_default(chi2_sql));
    assert_ne!(fast.1, default.1, "the samplers drew the same runs");
    let value = |csv: &str| csv.lines().nth(1).unwrap().parse::<f64>().unwrap();
    let (a, b) = (value(&fast.0), value(&default.0));
    assert!(
        a > 0.85 && b > 0.85 && (a - b).abs() < 0.05,
        "fast {a}, rand_distr {b}"
    );
}

/// A GraphSTAD network small enough to train in seconds.
const SMALL_ARCH: &str =
    "{conv_channels: [4, 8], gcn_features: 2, embed: 16, lstm_hidden: 16, latent: 4}";
/// The same in the paper's layout (`hcal_transfer.yaml`'s).
const SMALL_SHARED_ARCH: &str = "{conv_channels: [4, 8], gcn_features: 2, embed: 16, lstm_hidden: 16, latent: 4, shared_grid: [4, 8]}";

/// The rows of a `pipeline query … --format csv` (header dropped), with the
/// run's `--set`s.
fn csv_rows(sb: &Sandbox, file: &str, sql: &str, sets: &[String]) -> Vec<String> {
    let mut q = vec!["query", file, sql, "--format", "csv"];
    q.extend(sets.iter().map(String::as_str));
    sb.ok(&q).lines().skip(1).map(String::from).collect()
}

fn sets(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// The structured HCAL pipeline, shrunk: maps with RBX gain drift and the
/// anomalies that need space or time. The data can separate methods: under
/// a 20 % RBX gain drift the RBX-median rule finds R_D 0.6 channels the
/// per-channel rule partly misses, and the oracle finds them all; every new
/// anomaly kind reaches Table 7.
#[test]
fn hcal_structured_pipeline_separates_the_rules_under_rbx_drift() {
    let sb = Sandbox::new();
    sb.write("hcal.yaml", &bundled_pipeline("hcal_structured.yaml"));
    let quick = sets(&[
        ("train_maps.fills", "2"),
        ("train_maps.ls_per_fill", "[80, 80]"),
        ("test_maps.fills", "3"),
        ("test_maps.ls_per_fill", "[80, 80]"),
        ("injected.targets_per_fill", "2"),
        ("model.epochs", "2"),
        ("model.streams", "2"),
        ("model.arch", SMALL_ARCH),
    ]);
    let mut args = vec!["run", "hcal.yaml"];
    args.extend(quick.iter().map(String::as_str));
    sb.ok(&args);
    let query = |sql: &str| csv_rows(&sb, "hcal.yaml", sql, &quick);
    assert_eq!(
        query("SELECT count(DISTINCT \"case\"), count(DISTINCT method) FROM table7"),
        ["9,9"]
    );
    let auc = |method: &str| -> f64 {
        query(&format!(
            "SELECT auc FROM table7 WHERE \"case\" = 'degraded_0.6' AND positives = 'single' AND method = '{method}'"
        ))[0]
        .parse()
        .unwrap()
    };
    let (oracle, median, reference) = (auc("oracle"), auc("rbx_median"), auc("reference_signed"));
    assert!(oracle > 0.99, "oracle {oracle}");
    assert!(
        median > reference + 0.05,
        "rbx_median {median} vs reference {reference}"
    );
    // The generated maps carry the truth the oracle reads.
    assert_eq!(
        query("SELECT bool_and(cardinality(expected) = cardinality(occupancy)) FROM test_maps"),
        ["true"]
    );
}

/// The HCAL occupancy pipeline, shrunk with `--set`: Delphes events -> rates
/// -> generated fills -> renormalization -> autoencoder -> injected
/// anomalies on unseen fills -> Table 7; real glitch maps -> their table.
/// Maps of another subdetector than the model's are refused at `plan`.
#[test]
fn hcal_occupancy_pipeline_trains_scores_and_reports_table7() {
    let sb = Sandbox::new();
    sb.write("hcal.yaml", &bundled_pipeline("hcal_occupancy.yaml"));
    let quick = sets(&[
        ("train_maps.fills", "2"),
        ("train_maps.ls_per_fill", "[40, 40]"),
        ("test_maps.fills", "2"),
        ("test_maps.ls_per_fill", "[40, 40]"),
        ("injected.targets_per_fill", "2"),
        ("model.epochs", "2"),
        ("model.streams", "2"),
        ("model.arch", SMALL_ARCH),
        ("real_train_maps.fills", "2"),
        ("real_train_maps.ls_per_fill", "[30, 30]"),
        ("real_model.epochs", "1"),
        ("real_model.streams", "2"),
        ("real_model.arch", SMALL_ARCH),
    ]);
    let mut args = vec!["run", "hcal.yaml"];
    args.extend(quick.iter().map(String::as_str));
    let out = sb.ok(&args);
    assert!(statuses(&out).iter().all(|(_, s)| s == "ran"), "{out}");
    let query = |sql: &str| csv_rows(&sb, "hcal.yaml", sql, &quick);
    // 7 cases x 9 methods, each on 2 fills x 2 target windows; with single
    // channels and an RBX injected, rows for all, single and rbx positives.
    assert_eq!(
        query(
            "SELECT count(*), min(target_maps), max(target_maps), count(DISTINCT method) FROM table7"
        ),
        ["189,4,4,9"]
    );
    // The oracle's pull has its analytic AUC beside it for the scale
    // anomalies (dead, degraded, noisy hot), nowhere else.
    assert_eq!(
        query(
            "SELECT count(*) FROM table7 WHERE analytic_auc IS NOT NULL AND method = 'oracle' AND \"case\" <> 'fully_hot'"
        ),
        ["18"]
    );
    assert_eq!(
        query(
            "SELECT count(*) FROM table7 WHERE analytic_auc IS NOT NULL AND (method <> 'oracle' OR \"case\" = 'fully_hot')"
        ),
        ["0"]
    );
    // Every row has a bootstrap interval over the 2 fills.
    assert_eq!(
        query(
            "SELECT bool_and(auc_boot_lo <= auc_boot_hi AND auc_boot_lo >= 0 AND auc_boot_hi <= 1) FROM table7"
        ),
        ["true"]
    );
    // The rule separates dead channels (~45 expected hits, 0 seen) perfectly;
    // every AUC is a probability with an interval around it.
    assert_eq!(
        query(
            "SELECT auc > 0.99 FROM table7 WHERE method = 'reference' AND \"case\" = 'dead' AND positives = 'all'"
        ),
        ["true"]
    );
    assert_eq!(
        query(
            "SELECT bool_and(auc BETWEEN auc_lo AND auc_hi AND auc_lo >= 0 AND auc_hi <= 1) FROM table7"
        ),
        ["true"]
    );
    // Real glitches: the barrel-off maps light up the barrel; normal has
    // no positive, only a false-positive rate. No event is on both sides:
    // the rates come from entries the maps never use.
    let real = query(
        "SELECT \"case\", detection_at_alpha > 0.5, fpr_at_alpha IS NOT NULL FROM real_table WHERE method = 'reference' ORDER BY \"case\"",
    );
    assert_eq!(real[0], "hcal_barrel_off,true,false");
    assert_eq!(real[3], "normal,,true");
    assert_eq!(
        query(
            "SELECT (SELECT max(entry) FROM rate_events) < (SELECT min(entry) FROM map_events), (SELECT count(*) FROM map_events) > 0"
        ),
        ["true,true"]
    );
    let png = sb
        .path()
        .join("dqm-work/pipelines/hcal_occupancy/scores/artifacts/map_dead.png");
    assert!(fs::metadata(&png).unwrap().len() > 1000, "{png:?}");
    // Endcap maps scored by a barrel model: refused before anything runs.
    let mut bad = bundled_pipeline("hcal_occupancy.yaml");
    bad = bad.replace(
        "params: { subdetector: barrel, fills: 4, first_fill: 101, seed: 12 }",
        "params: { subdetector: endcap, fills: 4, first_fill: 101, seed: 12 }",
    );
    sb.write("bad.yaml", &bad);
    let err = sb.fails(&["plan", "bad.yaml"]);
    assert!(
        err.contains("scores") && err.contains("endcap maps") && err.contains("trained on barrel"),
        "{err}"
    );
}

/// Transfer learning endcap -> barrel, shrunk: every mode trains, the
/// frozen blocks cut the trainable parameters in the paper's order, and the
/// comparison table has one row per mode.
#[test]
fn hcal_transfer_pipeline_compares_modes() {
    let sb = Sandbox::new();
    sb.write("tl.yaml", &bundled_pipeline("hcal_transfer.yaml"));
    let mut pairs = vec![
        ("endcap_maps.fills", "2"),
        ("endcap_maps.ls_per_fill", "[30, 30]"),
        ("barrel_maps.ls_per_fill", "[30, 30]"),
        ("barrel_test_maps.fills", "2"),
        ("barrel_test_maps.ls_per_fill", "[20, 20]"),
        ("barrel_injected.targets_per_fill", "1"),
        ("contaminated_maps.ls_per_fill", "[30, 30]"),
    ];
    let models = [
        "source",
        "scratch",
        "tl4",
        "tl4_tl1",
        "tl4_tl2",
        "tl4_tl2d",
        "tl4_tl2d_bn",
        "tl4_tl2d_bn_bias",
        "tl4_tl3",
        "tl7_tl5",
        "tl7_tl6",
        "scratch_contaminated",
        "tl7_tl6_contaminated",
    ];
    let keys: Vec<(String, String)> = models
        .iter()
        .flat_map(|m| {
            [
                (format!("{m}.epochs"), "1".to_string()),
                (format!("{m}.streams"), "2".to_string()),
                (format!("{m}.arch"), SMALL_SHARED_ARCH.to_string()),
            ]
        })
        .collect();
    pairs.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let quick = sets(&pairs);
    let mut args = vec!["run", "tl.yaml"];
    args.extend(quick.iter().map(String::as_str));
    sb.ok(&args);
    let mut q = vec![
        "query",
        "tl.yaml",
        "SELECT mode, rule_mse >= noise_floor AND noise_floor > 0, frozen_blocks, trainable_params, delta_params, test_mse > 0 FROM table5",
        "--format",
        "csv",
    ];
    q.extend(quick.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = sb
        .ok(&q)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let modes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        modes,
        [
            "scratch", "tl4", "tl4_tl1", "tl4_tl2", "tl4_tl3", "tl4_tl2d", "tl7_tl5", "tl7_tl6"
        ]
    );
    let params: Vec<i64> = rows
        .iter()
        .map(|r| r[r.len() - 3].parse().unwrap())
        .collect();
    assert_eq!(params[0], params[1], "TL-4 / No-TL freezes nothing");
    // Freezing the GCN (TL-1), the CNN (TL-2), both (TL-3): fewer and fewer
    // parameters trained; then the recurrent blocks too (TL-5, TL-6).
    assert!(
        params[1] > params[2] && params[2] > params[3] && params[3] > params[4],
        "{params:?}"
    );
    assert!(params[4] > params[6] && params[6] > params[7], "{params:?}");
    assert!(params[5] < params[1], "TL-2_d freezes the decoder CNN");
    assert!(rows.iter().all(|r| r.last().unwrap() == "true"));
    // The paper's layout: TL-6 trains only the decoder's convolutions and
    // the per-channel offsets (ΔW below −90 %); the rule and the noise
    // floor are there to compare with.
    let tl6: f64 = rows[7][rows[7].len() - 2].parse().unwrap();
    assert!(tl6 < -0.9, "TL-6 ΔW {tl6}");
    assert!(rows.iter().all(|r| r[1] == "true"), "{rows:?}");
    // Table 4: TL-2_d, then its batch norms, then also its biases tuned.
    assert_eq!(
        csv_rows(
            &sb,
            "tl.yaml",
            "SELECT mode, frozen_blocks, trainable_params > lag(trainable_params) OVER (ORDER BY trainable_params) FROM table4",
            &quick
        ),
        [
            "tl4_tl2d,dec_cnn,",
            "tl4_tl2d_bn,dec_cnn /[batch_norm],true",
            "tl4_tl2d_bn_bias,\"dec_cnn /[batch_norm,bias]\",true"
        ]
    );
    // Table 7 of both models on the same injected fills.
    for table in ["table7_scratch", "table7_tl7_tl6"] {
        assert_eq!(
            csv_rows(
                &sb,
                "tl.yaml",
                &format!("SELECT count(DISTINCT \"case\"), min(target_maps) FROM {table}"),
                &quick
            ),
            ["7,2"],
            "{table}"
        );
    }
    // Contamination (Fig. 14): the reference map has learned the three
    // dead training channels as normal and never flags them; the oracle,
    // which knows their healthy rate, does.
    let flagged = |score: &str, alpha: &str| {
        format!(
            "avg(((array_element({score}, 225) > {alpha})::int + (array_element({score}, 297) > {alpha})::int + (array_element({score}, 441) > {alpha})::int) / 3.0)"
        )
    };
    let contamination = csv_rows(
        &sb,
        "tl.yaml",
        &format!(
            "SELECT {} = 0, {} > 0.5 FROM scratch_contaminated_scores",
            flagged("reference_score", "reference_alpha"),
            flagged("oracle_score", "oracle_alpha")
        ),
        &quick,
    );
    assert_eq!(contamination, ["true,true"]);
    assert_eq!(
        csv_rows(
            &sb,
            "tl.yaml",
            "SELECT max(array_element(occupancy, 225)) + max(array_element(occupancy, 441)), min(array_element(expected, 225)) > 0 FROM contaminated_maps",
            &quick
        ),
        ["0.0,true"]
    );
}

/// The transfer study, shrunk (2 seeds, 1 and 2 fills, 1 and 2 epochs):
/// sharded by seed as shipped, the summary recombined over the shards with
/// an interval over seeds, the Fig. 7 figures drawn from all of them.
#[test]
fn hcal_transfer_study_pipeline_summarizes_seeds_over_shards() {
    let sb = Sandbox::new();
    sb.write("study.yaml", &bundled_pipeline("hcal_transfer_study.yaml"));
    let train = format!("{{streams: 2, arch: {SMALL_SHARED_ARCH}}}");
    let quick = sets(&[
        ("endcap_maps.fills", "2"),
        ("endcap_maps.ls_per_fill", "[30, 30]"),
        ("barrel_maps.fills", "2"),
        ("barrel_maps.ls_per_fill", "[30, 30]"),
        ("barrel_test_maps.fills", "2"),
        ("barrel_test_maps.ls_per_fill", "[20, 20]"),
        ("source.epochs", "1"),
        ("source.streams", "2"),
        ("source.arch", SMALL_SHARED_ARCH),
        ("study.seeds", "[1, 2]"),
        ("study.epochs", "[1, 2]"),
        ("study.fills", "[1, 2]"),
        ("study.train", &train),
    ]);
    let mut args = vec!["run", "study.yaml"];
    args.extend(quick.iter().map(String::as_str));
    sb.ok(&args);
    assert_eq!(
        csv_rows(
            &sb,
            "study.yaml",
            "SELECT count(*), count(DISTINCT seed) FROM study",
            &quick
        ),
        ["16,2"],
        "2 modes × 2 seeds × 2 fill counts × 2 budgets"
    );
    let summary = csv_rows(
        &sb,
        "study.yaml",
        "SELECT mode, train_fills, epochs, runs, delta_mse_lo < delta_mse AND delta_mse < delta_mse_hi, delta_params < -0.5, rule_mse > noise_floor FROM study_summary ORDER BY mode, train_fills, epochs",
        &quick,
    );
    assert_eq!(summary.len(), 8, "{summary:?}");
    for row in &summary[..4] {
        assert!(row.starts_with("scratch,") && row.contains(",2,"), "{row}");
    }
    for row in &summary[4..] {
        assert!(
            row.starts_with("tl7_tl6,") && row.ends_with(",2,true,true,true"),
            "{row}"
        );
    }
    let artifacts = sb
        .path()
        .join("dqm-work/pipelines/hcal_transfer_study/study/artifacts");
    for file in [
        "fig7_test_mse.png",
        "fig7_delta_mse.png",
        "fig7_reducible_delta.png",
    ] {
        let bytes = fs::read(artifacts.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&bytes[1..4], b"PNG", "{file}");
    }
}

/// Per-lumisection certification end to end: Delphes events with jets and
/// HT -> runs of LS with bad stretches from the glitch files, events split
/// into disjoint parts -> per-LS histograms -> autoencoders and χ² -> scores
/// with calibration thresholds -> certificate, all queryable.
/// Runs a headless Chromium (Debian's `chromium`, or `$DQM_CHROMIUM`) on
/// `file`, killed after two minutes; returns its stdout.
fn chromium(args: &[String], file: &Path) -> String {
    let binary = std::env::var("DQM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", file.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the report test opens the page in a real browser and needs Chromium \
                 (`{binary}`: {e}); scripts/test.sh installs Debian's `chromium`"
            )
        });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        text
    });
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("chromium {args:?} did not finish in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// `pipeline report` after a full run, loaded in headless Chromium: every
/// embedded image decoded, the named tables present, every stage done, and
/// a screenshot kept in the test output (`target/tmp/report-<name>.png`).
fn report_checked_in_chromium(sb: &Sandbox, file: &str, name: &str, tables: &[&str]) {
    let page = sb.path().join(format!("out/{name}.html"));
    sb.ok(&["report", file, "--out", "out"]);
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("stages are done"), "every stage done");
    assert!(!html.contains("src=\"http"), "nothing fetched at view time");
    let embedded = html.matches("<figure><img").count();
    assert!(embedded >= 3, "{embedded} images embedded");
    let dom = chromium(&["--dump-dom".into()], &page);
    let attr = |key: &str| -> usize {
        let at = dom
            .find(&format!("{key}=\""))
            .unwrap_or_else(|| panic!("no {key} on <body>: the page script did not run"));
        let rest = &dom[at + key.len() + 2..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    assert_eq!(attr("data-images-ok"), embedded, "every image decoded");
    assert_eq!(attr("data-images-broken"), 0);
    for table in tables {
        assert!(
            dom.contains(&format!("data-table=\"{table}\"")),
            "table {table}"
        );
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{name}.png"));
    let _ = fs::remove_file(&shot);
    chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".into(),
        ],
        &page,
    );
    let png = fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "screenshot"
    );
    eprintln!("report screenshot: {}", shot.display());
}

#[test]
fn lumi_certification_pipeline_certifies_the_test_runs() {
    let sb = Sandbox::new();
    sb.write("lumi.yaml", &bundled_pipeline("lumi_certification.yaml"));
    // A bad combination is refused before anything runs.
    let err = sb.fails(&["run", "lumi.yaml", "--set", "certify.min_mes=0"]);
    assert!(err.contains("certify") && err.contains("min_mes"), "{err}");
    assert!(
        !sb.path().join("dqm-work/pipelines").exists(),
        "nothing ran"
    );
    // A report before anything ran names every missing stage instead of failing.
    let out = sb.ok(&["report", "lumi.yaml"]);
    let page = sb.path().join("dqm-work/reports/lumi_certification.html");
    assert!(
        out.contains("dqm-work/reports/lumi_certification.html"),
        "{out}"
    );
    let html = fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("17 of 17 stages have no output yet"),
        "{html}"
    );
    sb.ok(&["run", "lumi.yaml"]);
    report_checked_in_chromium(
        &sb,
        "lumi.yaml",
        "lumi_certification",
        &["certify_totals", "certify", "ae"],
    );
    let query = |sql: &str| {
        sb.ok(&["query", "lumi.yaml", sql, "--format", "csv"])
            .lines()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        query(
            "SELECT run, part, truth, count(*) FROM runs WHERE bad GROUP BY run, part, truth ORDER BY run, truth"
        ),
        [
            "102,test,hcal_barrel_off,29",
            "103,test,hcal_endcap_off,43",
            "104,test,hcal_forward_off,40",
            "105,test,hcal_barrel_off,10",
            "105,test,hcal_endcap_off,5",
            "108,test,hcal_barrel_off,10",
            "108,test,hcal_forward_off,10",
            "201,calibration,hcal_barrel_off,13",
            "201,calibration,hcal_endcap_off,3",
            "202,calibration,hcal_barrel_off,10",
            "202,calibration,hcal_endcap_off,10",
            "202,calibration,hcal_forward_off,10"
        ]
    );
    // Pile-up falls with the luminosity from each fill's peak; the prescale
    // halves run 103's recorded events from LS 150 on, not its luminosity.
    assert_eq!(
        query(
            "SELECT run, round(max(pileup)), round(min(pileup)), max(events) FROM runs WHERE run IN (1, 3, 106) GROUP BY run ORDER BY run"
        ),
        ["1,60.0,30.0,500", "3,80.0,40.0,500", "106,78.0,39.0,500"]
    );
    assert_eq!(
        query(
            "SELECT a.events * 2 - b.events BETWEEN -2 AND 2, abs(a.lumi / b.lumi - 1) < 0.01 FROM runs a JOIN runs b ON a.run = b.run WHERE a.run = 103 AND a.ls = 150 AND b.ls = 149"
        ),
        ["true,true"]
    );
    // 9 MEs per LS, each a unit-area shape.
    assert_eq!(
        query("SELECT count(*), count(DISTINCT me) FROM histograms"),
        ["41400,9"]
    );
    assert_eq!(
        query("SELECT bool_and(abs(array_sum(counts) - 1.0) < 1e-9) FROM histograms"),
        ["true"]
    );
    // One autoencoder per ME, trained on the good run, with its log.
    assert_eq!(
        query("SELECT count(*), bool_and(val_mse > 0 AND best_epoch >= 1) FROM ae"),
        ["9,true"]
    );
    // Both methods score every LS of every ME.
    assert_eq!(
        query(
            "SELECT method, count(*) FROM ae_scores GROUP BY method UNION ALL SELECT method, count(*) FROM chi2_scores GROUP BY method ORDER BY method"
        ),
        ["ae,41400", "chi2,41400"]
    );
    // Barrel and endcap stretches found in the test runs, few false alarms.
    // (every method but lumisaver's recipe: recall; χ²: precision too).
    let pr = query(
        "SELECT method, sum(true_positive), sum(flagged), sum(bad_ls) FROM certify WHERE run IN (102, 103) AND method IN ('ae', 'ae_conditional', 'chi2', 'chi2_pileup') GROUP BY method ORDER BY method",
    );
    assert_eq!(pr.len(), 4, "{pr:?}");
    for row in &pr {
        let v: Vec<f64> = row.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
        assert!(v[0] / v[2] >= 0.9, "recall: {row}");
        assert!(
            !row.starts_with("chi2") || v[0] / v[1] >= 0.9,
            "precision: {row}"
        );
    }
    // The forward ring MEs see forward-off: χ² finds its LS in run 104.
    assert_eq!(
        query("SELECT recall >= 0.95 FROM certify WHERE method = 'chi2' AND run = 104"),
        ["true"]
    );
    // Every method at one false-alarm rate per test run with bad LS, each
    // beside χ² on the same LS (null for χ² itself).
    assert_eq!(
        query(
            "SELECT count(*), count(DISTINCT point), sum(CASE WHEN method = 'chi2' AND recall_minus_baseline IS NULL THEN 1 ELSE 0 END), bool_and(recall BETWEEN 0 AND 1 AND recall_at_fa BETWEEN 0 AND 1) FROM scan"
        ),
        ["30,5,5,true"]
    );
    // The poster's Fig. 7 check: run 104 summed over all its LS is far from
    // good LS at its pile-up, over the LS χ² keeps as close as over the
    // truly good ones; keeping everything keeps the anomaly.
    assert_eq!(
        query(
            "SELECT count(*), count(DISTINCT method), count(DISTINCT run), count(DISTINCT me) FROM remainder"
        ),
        ["576,8,8,9"]
    );
    assert_eq!(
        query(
            "SELECT method, max(chi2_all) > 100 * max(chi2_good), max(chi2_kept) <= 1.1 * max(chi2_good) FROM remainder WHERE run = 104 AND method IN ('chi2', 'flag_nothing') GROUP BY method ORDER BY method"
        ),
        ["chi2,true,true", "flag_nothing,true,false"]
    );
    // The bounds: flagging nothing lets all bad luminosity through and
    // recovers everything; flagging everything the opposite.
    assert_eq!(
        query(
            "SELECT method, round(bad_let_through, 9), round(recovered_fraction, 9) FROM certify_totals WHERE method LIKE 'flag%' ORDER BY method"
        ),
        ["flag_everything,0.0,0.0", "flag_nothing,1.0,1.0"]
    );
    // lumisaver's recipe flags about 1 % of every run, good or not.
    let flagged = query(
        "SELECT min(flagged), max(flagged) FROM certify WHERE method = 'ae_lumisaver' AND bad_kinds = 'good'",
    );
    let v: Vec<f64> = flagged[0].split(',').map(|x| x.parse().unwrap()).collect();
    assert!(v[0] >= 1.0 && v[1] <= 15.0, "{flagged:?}");
    // One decision per method and test LS, consistent with the totals.
    assert_eq!(
        query(
            "SELECT d.method, count(*) = max(t.ls), sum(CASE WHEN d.rejected THEN 1 ELSE 0 END) = max(t.flagged) FROM certify_decisions d JOIN certify_totals t ON d.method = t.method GROUP BY d.method ORDER BY d.method"
        ),
        [
            "ae,true,true",
            "ae_conditional,true,true",
            "ae_lumisaver,true,true",
            "chi2,true,true",
            "chi2_one_run,true,true",
            "chi2_pileup,true,true",
            "flag_everything,true,true",
            "flag_nothing,true,true"
        ]
    );
    assert_eq!(
        query(
            "SELECT count(*) FROM certify_stretches WHERE length >= 3 AND truth <> 'hcal_forward_off' AND run IN (102, 103) AND NOT found AND method NOT IN ('flag_nothing', 'ae_lumisaver')"
        ),
        ["0"]
    );
    // The certificate keeps most of what rejecting whole runs throws away.
    let rec = query(
        "SELECT method, recovered_fraction FROM certify_totals WHERE method <> 'flag_everything' ORDER BY method",
    );
    for row in &rec {
        let f: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert!(f >= 0.9, "{row}");
    }
    // Certificate ranges cover exactly the kept LS.
    assert_eq!(
        query(
            "SELECT c.method, sum(c.last_ls - c.first_ls + 1) = t.ls - t.flagged FROM certify_certificate c JOIN certify_totals t ON c.method = t.method GROUP BY c.method, t.ls, t.flagged ORDER BY c.method"
        ),
        [
            "ae,true",
            "ae_conditional,true",
            "ae_lumisaver,true",
            "chi2,true",
            "chi2_one_run,true",
            "chi2_pileup,true",
            "flag_nothing,true"
        ]
    );
    let golden = sb
        .path()
        .join("dqm-work/pipelines/lumi_certification/certify/artifacts/golden_ae.json");
    for png in [
        "ae_scores/artifacts/run_102.png",
        "ae_scores/artifacts/worst_ls.png",
        "chi2_scores/artifacts/run_103.png",
    ] {
        let path = sb
            .path()
            .join("dqm-work/pipelines/lumi_certification")
            .join(png);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 10_000),
            "{png}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert!(
        json["101"].as_array().is_some_and(|r| !r.is_empty()),
        "{json}"
    );
}

#[test]
fn rl_dqm_pipeline_trains_both_regimes_and_beats_the_threshold_rule() {
    let sb = Sandbox::new();
    sb.write("rl.yaml", &bundled_pipeline("rl_dqm.yaml"));
    // Bad input is refused before anything runs: a negative cost, an
    // unknown policy name.
    let err = sb.fails(&[
        "run",
        "rl.yaml",
        "--set",
        "offline_agent.env.rewards.shifter_call=-1",
    ]);
    assert!(
        err.contains("offline_agent") && err.contains("rewards.shifter_call"),
        "{err}"
    );
    let err = sb.fails(&[
        "run",
        "rl.yaml",
        "--set",
        "offline.policies=[agent, ask_always]",
    ]);
    assert!(
        err.contains("`offline`") && err.contains("ask_always") && err.contains("always_call"),
        "{err}"
    );
    assert!(
        !sb.path().join("dqm-work/pipelines").exists(),
        "nothing ran"
    );
    sb.ok(&["run", "rl.yaml"]);
    let query = |sql: &str| {
        sb.ok(&["query", "rl.yaml", sql, "--format", "csv"])
            .lines()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let floats = |sql: &str| -> Vec<f64> {
        query(sql)[0]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect()
    };
    // 160 datasets x 1700 runs after the warm-up, twice, offline; online
    // the datasets' own bad runs are left out.
    assert_eq!(
        query("SELECT max(steps), count(*) FROM offline_agent"),
        ["544000,266"]
    );
    for agent in ["offline_agent", "online_agent"] {
        // Learned: the last 20 updates earn more per run than the first 20.
        let v = floats(&format!(
            "SELECT avg(CASE WHEN update <= 20 THEN reward_per_run END), avg(CASE WHEN update > (SELECT max(update) - 20 FROM {agent}) THEN reward_per_run END) FROM {agent}"
        ));
        assert!(v[1] > v[0] + 0.05, "{agent}: {v:?}");
        let png = sb.path().join(format!(
            "dqm-work/pipelines/rl_dqm/{agent}/artifacts/learning_curves.png"
        ));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "{agent}"
        );
    }
    for eval in ["offline", "online"] {
        // Every policy on the 20 held-out datasets.
        assert_eq!(
            query(&format!(
                "SELECT count(DISTINCT dataset), min(dataset) FROM {eval}_episodes"
            )),
            ["20,2000"]
        );
        // The frozen agent earns more per run than DINAMO-S's rules and
        // the bounds.
        let v = floats(&format!(
            "SELECT max(CASE WHEN policy = 'agent' THEN reward_per_run END), max(CASE WHEN policy IN ('threshold', 'always_call', 'never_call') THEN reward_per_run END) FROM {eval}"
        ));
        assert!(v[0] > v[1], "{eval}: {v:?}");
        // One expert rule chosen on the development datasets, played with
        // the rules of their frontier.
        assert_eq!(
            query(&format!(
                "SELECT count(*) FROM {eval} WHERE policy = 'expert'"
            )),
            ["1"]
        );
        assert_eq!(
            query(&format!(
                "SELECT count(*) > 2 FROM {eval}_rules WHERE frontier"
            )),
            ["true"]
        );
        // The agent learning on from the shifter and the certification
        // plays the first dataset (fewer runs than one training rollout,
        // so no update yet) exactly as the frozen agent drawing from the
        // same stream, and the stream as a whole otherwise.
        let same = |filter: &str| {
            query(&format!(
                "SELECT count(*) FROM (SELECT dataset, calls, missed_bad, good_kept, reward FROM {eval}_episodes WHERE policy = 'agent_sampled' {filter} EXCEPT SELECT dataset, calls, missed_bad, good_kept, reward FROM {eval}_episodes WHERE policy = 'agent_continual' {filter})"
            ))
        };
        assert_eq!(same("AND dataset = 2000"), ["0"], "{eval}");
        assert_ne!(same(""), ["0"], "{eval}");
        let png = sb.path().join(format!(
            "dqm-work/pipelines/rl_dqm/{eval}/artifacts/effort.png"
        ));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "{eval}"
        );
    }
    // Offline: no more bad runs accepted than DINAMO-S's rule, and at
    // least 30 % fewer shifter calls (upper ends of the paired intervals);
    // the same against the hand rules' frontier at the agent's missed-bad
    // rate.
    let v = floats(
        "SELECT calls_ratio_hi, missed_bad_diff_hi, expert_calls_ratio_hi FROM offline WHERE policy = 'agent'",
    );
    assert!(v[0] <= 0.7 && v[1] <= 0.0 && v[2] <= 0.7, "{v:?}");
    // Online: more good data than any threshold rule calling as rarely;
    // the expert rules' frontier is above the threshold rules' there, and
    // the agent is not below it.
    let v = floats(
        "SELECT good_efficiency_lo, threshold_efficiency_at_same_calls, expert_efficiency_at_same_calls, expert_efficiency_diff_lo FROM online WHERE policy = 'agent'",
    );
    assert!(v[0] > v[1] && v[2] > v[1] && v[3] > -0.05, "{v:?}");
    // The classifiers on the agent's observation: one chosen decision per
    // model, trained on labels that tell bad runs better than chance on
    // the development datasets; with them the best tuned baselines'
    // frontier is at least as good as the hand rules' alone.
    for eval in ["offline", "online"] {
        assert_eq!(
            query(&format!(
                "SELECT count(*) FROM {eval} WHERE policy IN ('logistic', 'boosted')"
            )),
            ["2"]
        );
        let v = floats(&format!(
            "SELECT min(dev_auc_lo) FROM {eval}_classifiers_fit"
        ));
        assert!(v[0] > 0.6, "{eval}: {v:?}");
    }
    let v =
        floats("SELECT best_calls_ratio, expert_calls_ratio FROM offline WHERE policy = 'agent'");
    assert!(v[0] >= v[1] - 1e-9, "{v:?}");
    let v = floats(
        "SELECT best_efficiency_diff, expert_efficiency_diff FROM online WHERE policy = 'agent'",
    );
    assert!(v[0] <= v[1] + 1e-9, "{v:?}");
    // What became of every fault: one row each, by kind beside the
    // baselines' frontier at the agent's calls.
    assert_eq!(
        query(
            "SELECT (SELECT count(*) FROM online_faults WHERE policy = 'agent') = (SELECT sum(faults) FROM online_episodes WHERE policy = 'agent')"
        ),
        ["true"]
    );
    let v = floats(
        "SELECT count(*), sum(faults), count(missed_runs_diff) FROM online_by_kind WHERE policy = 'agent'",
    );
    assert!(v[0] == 3.0 && v[1] > 100.0 && v[2] == 3.0, "{v:?}");
    let v = floats(
        "SELECT false_alarms_per_change, adaptation_time, adaptation_time_hi FROM offline WHERE policy = 'agent'",
    );
    assert!(v[0] >= 0.0 && v[1] >= 0.0 && v[2] >= v[1], "{v:?}");
    // Each observation feature's AUC, for the agent's runs and the rule's;
    // a faulty run's event count is drawn like a working one's, so its
    // integral alone does not tell it.
    assert_eq!(query("SELECT count(*) FROM offline_features"), ["26"]);
    let v = floats("SELECT max(separation) FROM online_features WHERE name = 'ln_integral'");
    assert!(v[0] < 0.6, "{v:?}");
}

/// The Python with uproot, numpy, pandas and pyarrow (`$DQM_PYTHON`;
/// `scripts/test.sh` installs them into the project's virtualenv).
fn python_with_uproot() -> String {
    let python = std::env::var("DQM_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&python)
        .args(["-c", "import uproot, numpy, pandas, pyarrow"])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        check.status.success(),
        "{python} lacks uproot/numpy/pandas/pyarrow (scripts/test.sh installs them and sets DQM_PYTHON): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

/// Runs `scripts/make_dqm_examples.py FLAG TABLE... --out OUT [--formats ...]`
/// (the independent writer) and checks it succeeded.
fn make_dqm_examples(flag: &str, tables: &[PathBuf], out: &Path, formats: Option<&str>) {
    let mut command = Command::new(python_with_uproot());
    command
        .arg(format!(
            "{}/scripts/make_dqm_examples.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(flag)
        .args(tables)
        .arg("--out")
        .arg(out);
    if let Some(formats) = formats {
        command.args(["--formats", formats]);
    }
    let made = command.output().unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A `*_from_dqm` pipeline with its `dqm` stage (`stage`, as written in the
/// file) replaced by a `dqm_root` stage with `params`.
fn with_dqm_root(pipeline: &str, stage: &str, params: &str) -> String {
    let root = pipeline.replace(stage, &format!("kind: dqm_root\n    params: {params}"));
    assert_ne!(root, pipeline, "the ROOT variant replaces the dqm stage");
    root
}

/// Real-format per-LS data through the certification: the project's own
/// per-LS histograms written by an independent writer (uproot: DQM ROOT
/// files with per-LS folders; pandas: the CMS per-LS CSV and Parquet
/// layout), read back by `dqm_root`/`dqm_dataframe`, labelled by a Golden
/// JSON and weighed by the luminosity tool's CSV, give
/// the no-pile-up certification's (`tests/fixtures/lumi_no_pileup.yaml`,
/// whose histograms the shipped examples are) certificate to the LS; the certificate is
/// intersected with the DCS-only JSON and written as CMS JSON.
#[test]
fn lumi_from_dqm_gives_the_native_certificate_from_root_csv_and_parquet() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    sb.write("lumi.yaml", &fixture_pipeline("lumi_no_pileup.yaml"));
    sb.ok(&["run", "lumi.yaml"]);
    let certificate = |file: &str| {
        sb.ok(&[
            "query",
            file,
            "SELECT method, run, first_ls, last_ls FROM certify_certificate ORDER BY method, run, first_ls",
            "--format",
            "csv",
        ])
    };
    let native = certificate("lumi.yaml");
    assert!(native.lines().count() > 20, "{native}");
    // The native histograms before normalization, in every real format.
    let out = sb.pipeline(&[
        "run-stage",
        "lumi.yaml",
        "histograms",
        "--set",
        "histograms.normalize=false",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let table = text
        .lines()
        .find_map(|l| l.split(" rows at ").nth(1))
        .unwrap_or_else(|| panic!("no table path in: {text}"))
        .trim()
        .to_string();
    let formats = sb.path().join("dqm");
    make_dqm_examples(
        "--from-lumi",
        &[sb.path().join(&table).join("main")],
        &formats,
        None,
    );
    let dqm = bundled_pipeline("lumi_from_dqm.yaml")
        .replace("data/dqm/lumi/", &format!("{repo}/data/dqm/lumi/"));
    sb.write("from_dqm.yaml", &dqm);
    // As shipped (the repository's Parquet example), from the CSV and
    // Parquet copies, and from the ROOT files.
    let root = with_dqm_root(
        &dqm,
        &format!(
            "kind: dqm_dataframe\n    params: {{ files: {repo}/data/dqm/lumi/perls.parquet }}"
        ),
        &format!(
            "{{ files: \"{}/*.root\", mes: [\"JetMET/**\"], ls_pattern: \"LS (\\\\d+)/\" }}",
            formats.display()
        ),
    );
    sb.write("from_root.yaml", &root);
    for (file, set) in [
        ("from_dqm.yaml", None),
        (
            "from_dqm.yaml",
            Some(format!("dqm.files={}/perls.csv", formats.display())),
        ),
        (
            "from_dqm.yaml",
            Some(format!("dqm.files={}/perls.parquet", formats.display())),
        ),
        ("from_root.yaml", None),
    ] {
        let mut args = vec!["run", file];
        if let Some(set) = &set {
            args.extend(["--set", set]);
        }
        sb.ok(&args);
        let mut query = vec![
            "query",
            file,
            "SELECT method, run, first_ls, last_ls FROM certify_certificate ORDER BY method, run, first_ls",
            "--format",
            "csv",
        ];
        if let Some(set) = &set {
            query.extend(["--set", set]);
        }
        assert_eq!(sb.ok(&query), native, "{file} {set:?}");
    }
    // The certificate within the DCS-only list, as CMS JSON.
    let json = sb
        .path()
        .join("dqm-work/pipelines/lumi_from_dqm/certified/artifacts/ae.json");
    let certified: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let first = certified["101"][0][0].as_i64().unwrap();
    assert!(
        first >= 3,
        "LS 1-2 are outside the DCS-only list: {certified}"
    );
    let kept = sb.ok(&[
        "query",
        "from_root.yaml",
        "SELECT count(*) FROM certified WHERE first_ls < 3",
        "--format",
        "csv",
    ]);
    assert_eq!(kept.lines().nth(1), Some("0"), "{kept}");
}

/// Real-format run histograms through DINAMO: the generator's runs (seed 70)
/// written by an independent writer (uproot: one DQM ROOT file per run;
/// pandas: the per-run CMS table) and labelled by a Golden JSON give DINAMO-S
/// the generator's scores and metrics run by run, from the shipped example,
/// from a fresh copy and from the ROOT files; DINAMO-S draws the shifter's
/// plots.
#[test]
fn dinamo_from_dqm_scores_every_run_as_on_the_generators_table() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    sb.write(
        "native.yaml",
        "name: native\nstages:\n  runs:\n    kind: synth_runs\n    params: { seeds: [70], n_runs: 400, n_bad: 40 }\n  s:\n    kind: dinamo_s\n    inputs: [runs]\n    params: { alpha: auto, threshold: auto, historical_runs: 100 }\n  s_metrics:\n    kind: dqm_metrics\n    inputs: [s]\n",
    );
    sb.ok(&["run", "native.yaml"]);
    let scores = "SELECT label, score, flagged, historical, alpha, threshold FROM s ORDER BY run";
    // The label-based metrics; the others need the generator's truth
    // (rapid changes, mu and sigma), which real data do not carry.
    let metrics = "SELECT regime, n_runs, n_bad, balanced_accuracy, sensitivity, specificity FROM s_metrics ORDER BY regime";
    let query = |file: &str, sql: &str, set: &Option<String>| {
        let mut args = vec!["query", file, sql, "--format", "csv"];
        if let Some(set) = set {
            args.extend(["--set", set.as_str()]);
        }
        sb.ok(&args)
    };
    let native = (
        query("native.yaml", scores, &None),
        query("native.yaml", metrics, &None),
    );
    assert_eq!(native.0.lines().count(), 401, "{}", native.0);
    let formats = sb.path().join("dqm");
    make_dqm_examples(
        "--from-runs",
        &[sb.path().join("dqm-work/pipelines/native/runs/main")],
        &formats,
        Some("root,parquet"),
    );
    let dqm = bundled_pipeline("dinamo_from_dqm.yaml")
        .replace("data/dqm/dinamo/", &format!("{repo}/data/dqm/dinamo/"));
    sb.write("from_dqm.yaml", &dqm);
    let root = with_dqm_root(
        &dqm,
        &format!(
            "kind: dqm_dataframe\n    # Run histograms: no LS column.\n    params: {{ files: {repo}/data/dqm/dinamo/runs.parquet, columns: {{ ls: null }} }}"
        ),
        &format!(
            "{{ files: \"{}/*.root\", mes: [\"DINAMO/**\"] }}",
            formats.display()
        ),
    );
    sb.write("from_root.yaml", &root);
    for (file, set) in [
        ("from_dqm.yaml", None),
        (
            "from_dqm.yaml",
            Some(format!("dqm.files={}/runs.parquet", formats.display())),
        ),
        ("from_root.yaml", None),
    ] {
        let mut args = vec!["run", file, "--until", "s_metrics"];
        if let Some(set) = &set {
            args.extend(["--set", set.as_str()]);
        }
        sb.ok(&args);
        assert_eq!(query(file, scores, &set), native.0, "{file} {set:?}");
        assert_eq!(query(file, metrics, &set), native.1, "{file} {set:?}");
        let runs = query(
            file,
            "SELECT min(run), max(run), sum(label) FROM runs",
            &set,
        );
        assert_eq!(
            runs.lines().nth(1),
            Some("355000,355399,40"),
            "{file} {set:?}"
        );
    }
    let dir = sb
        .path()
        .join("dqm-work/pipelines/dinamo_from_dqm/s/artifacts");
    for file in ["score_vs_run_0.png", "worst_runs_0.png"] {
        let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&bytes[1..4], b"PNG", "{file}");
    }
}

/// Real-format HCAL occupancy through GraphSTAD: the project's own maps
/// (`hcal_occupancy.yaml` with 4 + 2 fills of 40 LS) written by an
/// independent writer (uproot: per-LS DQM ROOT files, one TH2F iη × iφ on
/// CMS axes; pyarrow: the CMS per-LS Parquet layout) and read back by
/// `maps_from_dqm` give `hcal_occupancy.yaml`'s Table 7 to the last digit,
/// from the shipped example, a fresh copy and the ROOT files.
#[test]
fn hcal_from_dqm_gives_the_native_table7_from_root_and_parquet() {
    let sb = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    sb.write("hcal.yaml", &bundled_pipeline("hcal_occupancy.yaml"));
    let small = [
        "--set",
        "train_maps.fills=4",
        "--set",
        "train_maps.ls_per_fill=[40, 40]",
        "--set",
        "test_maps.fills=2",
        "--set",
        "test_maps.ls_per_fill=[40, 40]",
        "--set",
        "injected.targets_per_fill=4",
    ];
    // The oracle needs the generator's truth, which DQM histograms do not
    // carry, and the luminosity-regression rule sees the luminosity as
    // brilcalc's CSV prints it; every other row must match.
    let table7 = "SELECT method, \"case\", positives, target_maps, anomalous, healthy, auc, auc_lo, auc_hi, auc_boot_lo, auc_boot_hi, fpr_95, detection_at_alpha, localisation FROM table7 WHERE method NOT IN ('oracle', 'lumi_regression') ORDER BY method, \"case\", positives";
    let mut args = vec!["run", "hcal.yaml", "--until", "table7"];
    args.extend(small);
    sb.ok(&args);
    let mut query = vec!["query", "hcal.yaml", table7, "--format", "csv"];
    query.extend(small);
    let native = sb.ok(&query);
    assert_eq!(native.lines().count(), 1 + 7 * 7 * 3, "{native}");
    let maps = |stage: &str| {
        sb.path()
            .join(format!("dqm-work/pipelines/hcal_occupancy/{stage}/main"))
    };
    let formats = sb.path().join("dqm");
    make_dqm_examples(
        "--from-hcal",
        &[maps("train_maps"), maps("test_maps")],
        &formats,
        Some("root,parquet"),
    );
    let dqm = bundled_pipeline("hcal_from_dqm.yaml")
        .replace("data/dqm/hcal/", &format!("{repo}/data/dqm/hcal/"));
    sb.write("from_dqm.yaml", &dqm);
    let root = with_dqm_root(
        &dqm,
        &format!(
            "kind: dqm_dataframe\n    params: {{ files: {repo}/data/dqm/hcal/perls.parquet }}"
        ),
        &format!(
            "{{ files: \"{}/*.root\", mes: [\"Hcal/**\"], ls_pattern: \"LS (\\\\d+)/\" }}",
            formats.display()
        ),
    );
    sb.write("from_root.yaml", &root);
    for (file, set) in [
        ("from_dqm.yaml", None),
        (
            "from_dqm.yaml",
            Some(format!("dqm.files={}/perls.parquet", formats.display())),
        ),
        ("from_root.yaml", None),
    ] {
        let mut args = vec!["run", file];
        let mut query = vec!["query", file, table7, "--format", "csv"];
        if let Some(set) = &set {
            args.extend(["--set", set.as_str()]);
            query.extend(["--set", set.as_str()]);
        }
        sb.ok(&args);
        assert_eq!(sb.ok(&query), native, "{file} {set:?}");
    }
    // The maps carry CMS channel indices: iη ±1…±19, 72 iφ, 1 depth.
    let shape = sb.ok(&[
        "query",
        "from_root.yaml",
        "SELECT count(*), min(cardinality(occupancy)), max(fill) FROM test_maps",
        "--format",
        "csv",
    ]);
    assert_eq!(shape.lines().nth(1), Some("80,2736,102"), "{shape}");
}
