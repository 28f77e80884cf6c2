//! `dqm-fuzz`: mutation fuzzing of the places where outside bytes enter
//! the pipeline — the pipeline YAML loader (parse, overrides, plan), the
//! Delphes ROOT reader (the `delphes_convert` stage, as a run calls it) and
//! the DQM histogram reader (the `dqm_root` stage) — on stable Rust
//! (`scripts/reliability/fuzz.sh`).
//!
//! A supervisor starts a worker process that mutates corpus files with a
//! seeded generator (input `i` depends only on the seed and `i`) and runs
//! each through the target. A worker that crashes (a panic outside the
//! stage's own guard, an abort), asks for one allocation beyond the bound
//! ([`alloc_cap`]), or takes longer than the timeout on one input is a
//! finding: the supervisor saves the input's recipe under `OUT/findings/`
//! and restarts the worker after it. `--replay FINDING.json` reruns one.

mod alloc_cap;
mod root_mutations;
mod yaml_mutations;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use dqm_pipeline::{plan, spec::PipelineSpec};
use dqm_stages::dqm::dqm_root::{DqmRoot, OtherClasses};
use dqm_stages::in_memory::run_in_memory;
use dqm_stages::medic::delphes_convert::{DelphesConvert, FileGroup};
use dqm_stages::stage::Stage;

#[global_allocator]
static ALLOCATOR: alloc_cap::Capped = alloc_cap::Capped;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    /// Pipeline YAML: parse, `--set` overrides, plan.
    Yaml,
    /// Delphes ROOT files through the `delphes_convert` stage.
    Root,
    /// DQM ROOT files of histograms through the `dqm_root` stage.
    Dqm,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dqm-fuzz",
    about = "Mutation fuzzing of the YAML loader and the ROOT readers"
)]
struct Args {
    /// What to fuzz.
    #[arg(value_enum)]
    target: Target,
    /// Corpus files to mutate (pipeline YAML, Delphes or DQM ROOT files).
    #[arg(long, num_args = 1.., required_unless_present = "replay")]
    corpus: Vec<PathBuf>,
    /// How long to fuzz (seconds of wall time).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seed of the mutation generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder: the current input, findings and summary.json.
    #[arg(long, default_value = "fuzz-out")]
    out: PathBuf,
    /// One input taking longer than this is a hang (seconds).
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The largest single allocation allowed (MiB).
    #[arg(long, default_value_t = 1024)]
    max_alloc_mib: usize,
    /// Rerun one saved finding (its JSON) in this process and print the outcome.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Internal: run as the worker, from this input number.
    #[arg(long, hide = true)]
    worker_from: Option<u64>,
}

/// One input: how it was made from the corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recipe {
    target: Target,
    iteration: u64,
    /// The corpus file it was made from.
    base: PathBuf,
    description: Vec<String>,
    /// ROOT, DQM: the byte patch of `base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<root_mutations::Patch>,
    /// YAML: the whole mutated text.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// ROOT: also read the jet and ScalarHT branches; DQM: read per-LS
    /// folders (`ls_pattern`).
    #[serde(default)]
    jets: bool,
}

/// What one input did.
enum Outcome {
    Ok(usize),
    Error(String),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.replay {
        alloc_cap::set_bound(args.max_alloc_mib << 20);
        return replay(path, &args.out);
    }
    match args.worker_from {
        Some(from) => worker(&args, from),
        None => supervise(&args),
    }
}

struct Corpus {
    files: Vec<(PathBuf, Vec<u8>, Option<root_mutations::Layout>)>,
}

impl Corpus {
    fn load(target: Target, paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for p in paths {
            let bytes = std::fs::read(p).with_context(|| format!("corpus {}", p.display()))?;
            let layout = match target {
                Target::Root | Target::Dqm => Some(
                    root_mutations::Layout::read(&bytes)
                        .map_err(|e| anyhow::anyhow!("corpus {}: {e}", p.display()))?,
                ),
                Target::Yaml => None,
            };
            // Absolute, so a finding replays from any directory.
            files.push((std::fs::canonicalize(p)?, bytes, layout));
        }
        if files.is_empty() {
            bail!("no corpus files");
        }
        Ok(Self { files })
    }

    /// Input `iteration`, a pure function of (seed, iteration), with the
    /// bytes of the corpus file it is made from.
    fn recipe(&self, target: Target, seed: u64, iteration: u64) -> (Recipe, &[u8]) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(iteration);
        let (base, bytes, layout) = &self.files[rng.random_range(0..self.files.len())];
        let stack = if rng.random_bool(0.25) { 2 } else { 1 };
        let mut recipe = Recipe {
            target,
            iteration,
            base: base.clone(),
            description: Vec::new(),
            patch: None,
            text: None,
            jets: rng.random_bool(0.25),
        };
        match layout {
            Some(layout) => {
                let patch = root_mutations::mutate(bytes, layout, &mut rng, stack);
                recipe.description = patch.description.clone();
                recipe.patch = Some(patch);
            }
            None => {
                let text = String::from_utf8_lossy(bytes);
                let (text, description) = yaml_mutations::mutate(&text, &mut rng, stack);
                recipe.description = description;
                recipe.text = Some(text);
            }
        }
        (recipe, bytes)
    }
}

/// The file each input is written to in the output folder (a DQM file
/// name carries its run, as DQM's own do).
fn input_name(target: Target) -> &'static str {
    match target {
        Target::Root => "current.root",
        Target::Dqm => "DQM_V0001_R000000001__current.root",
        Target::Yaml => "current.yaml",
    }
}

/// Writes the input a recipe describes (`base`: its corpus file's bytes)
/// to `dir/current.{root,yaml}`.
fn materialize(recipe: &Recipe, base: &[u8], dir: &Path) -> Result<PathBuf> {
    let (path, bytes) = match recipe.target {
        Target::Root | Target::Dqm => {
            let patch = recipe.patch.as_ref().context("a ROOT recipe has a patch")?;
            (dir.join(input_name(recipe.target)), patch.apply(base))
        }
        Target::Yaml => (
            dir.join(input_name(recipe.target)),
            recipe
                .text
                .clone()
                .context("a YAML recipe has text")?
                .into_bytes(),
        ),
    };
    std::fs::write(&path, bytes).with_context(|| path.display().to_string())?;
    Ok(path)
}

/// Runs one input through the target, as `pipeline` would.
fn run_target(recipe: &Recipe, input: &Path) -> Outcome {
    match recipe.target {
        Target::Root => {
            let mut stage = DelphesConvert {
                files: vec![FileGroup {
                    path: input.display().to_string(),
                    label: "normal".into(),
                }],
                entries_per_batch: 200,
                ..Default::default()
            };
            if recipe.jets {
                stage.jet_features = vec!["PT".into(), "Eta".into(), "Phi".into()];
                stage.scalar_ht = true;
            }
            read_with(&stage)
        }
        Target::Dqm => {
            let stage = DqmRoot {
                files: input.display().to_string(),
                mes: vec!["**".into()],
                ls_pattern: recipe.jets.then(|| r"LS (\d+)/".to_string()),
                other_classes: OtherClasses::Skip,
                // Objects outside a `Run <n>` folder take the run of the
                // input's name (`input_name`).
                run_pattern: r"_R0*(\d+)".into(),
                batch_size: 16,
            };
            read_with(&stage)
        }
        Target::Yaml => {
            let text = recipe.text.as_deref().unwrap_or_default();
            let result = PipelineSpec::parse(text, input)
                .and_then(|mut spec| {
                    spec.apply_overrides(&[])?;
                    Ok(spec)
                })
                .and_then(plan::plan)
                .map(|p| p.stages.len());
            match result {
                Ok(n) => Outcome::Ok(n),
                Err(e) => Outcome::Error(format!("{e:#}")),
            }
        }
    }
}

fn worker(args: &Args, from: u64) -> Result<()> {
    alloc_cap::set_bound(args.max_alloc_mib << 20);
    let corpus = Corpus::load(args.target, &args.corpus)?;
    let mut stdout = std::io::stdout().lock();
    for iteration in from.. {
        let (recipe, base) = corpus.recipe(args.target, args.seed, iteration);
        std::fs::write(
            args.out.join("current.json"),
            serde_json::to_vec_pretty(&recipe)?,
        )?;
        let input = materialize(&recipe, base, &args.out)?;
        let line = match run_target(&recipe, &input) {
            Outcome::Ok(n) => format!("R {iteration} ok {n}"),
            Outcome::Error(e) => format!("R {iteration} error {}", e.replace('\n', " | ")),
        };
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}

fn replay(path: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let finding: serde_json::Value = serde_json::from_str(&text)?;
    let recipe: Recipe = serde_json::from_value(finding["recipe"].clone())
        .with_context(|| format!("{}: no `recipe`", path.display()))?;
    std::fs::create_dir_all(out)?;
    let base =
        std::fs::read(&recipe.base).with_context(|| format!("base {}", recipe.base.display()))?;
    let input = materialize(&recipe, &base, out)?;
    println!(
        "replaying {}: {}",
        path.display(),
        recipe.description.join("; ")
    );
    match run_target(&recipe, &input) {
        Outcome::Ok(n) => println!("ok ({n})"),
        Outcome::Error(e) => println!("error: {e}"),
    }
    Ok(())
}

/// Tallies of a fuzzing session.
#[derive(Default, Serialize)]
struct Summary {
    target: String,
    seed: u64,
    seconds: f64,
    inputs: u64,
    ok: u64,
    clean_errors: u64,
    /// Errors whose message does not name the input file.
    errors_not_naming_the_file: u64,
    /// Panics inside the reader that the stage's guard turned into an error.
    reader_panics_caught: u64,
    crashes: u64,
    hangs: u64,
    allocations_beyond_bound: u64,
    /// The most frequent error messages (digits and the path normalized).
    top_errors: Vec<(String, u64)>,
    findings: Vec<String>,
    examples_not_naming_the_file: Vec<String>,
}

fn normalize(message: &str, input: &str) -> String {
    let m = message.replace(input, "FILE");
    let mut out = String::with_capacity(m.len());
    let mut last_digit = false;
    for c in m.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out.chars().take(160).collect()
}

fn supervise(args: &Args) -> Result<()> {
    if args.out.exists() {
        bail!(
            "{} exists: give a new --out (findings are never overwritten)",
            args.out.display()
        );
    }
    let findings_dir = args.out.join("findings");
    std::fs::create_dir_all(&findings_dir)?;
    let out = std::fs::canonicalize(&args.out)?;
    let input_name = out.join(input_name(args.target)).display().to_string();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut summary = Summary {
        target: format!("{:?}", args.target).to_lowercase(),
        seed: args.seed,
        ..Default::default()
    };
    let mut messages: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        let stderr_path = out.join("worker.stderr");
        // A killed worker leaves the stage's scratch folders behind: keep them here.
        let scratch = out.join("tmp");
        std::fs::create_dir_all(&scratch)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(match args.target {
                Target::Root => "root",
                Target::Dqm => "dqm",
                Target::Yaml => "yaml",
            })
            .arg("--corpus")
            .args(&args.corpus)
            .args(["--seed", &args.seed.to_string()])
            .args(["--max-alloc-mib", &args.max_alloc_mib.to_string()])
            .arg("--out")
            .arg(&out)
            .args(["--worker-from", &next.to_string()])
            .env("TMPDIR", &scratch)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let kind = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            match rx.recv_timeout(Duration::from_secs(args.timeout).min(left)) {
                Ok(Ok(line)) => {
                    let mut parts = line.splitn(4, ' ');
                    let (_, iteration, status, rest) = (
                        parts.next(),
                        parts.next().and_then(|s| s.parse::<u64>().ok()),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    next = iteration.map_or(next, |i| i + 1);
                    summary.inputs += 1;
                    if status == "ok" {
                        summary.ok += 1;
                    } else {
                        summary.clean_errors += 1;
                        if rest.contains("the reader stopped with") {
                            summary.reader_panics_caught += 1;
                        }
                        if !rest.contains(&input_name) {
                            summary.errors_not_naming_the_file += 1;
                            if summary.examples_not_naming_the_file.len() < 10 {
                                summary
                                    .examples_not_naming_the_file
                                    .push(rest.chars().take(300).collect());
                            }
                        }
                        *messages.entry(normalize(rest, &input_name)).or_default() += 1;
                    }
                    if last_report.elapsed() > Duration::from_secs(30) {
                        eprintln!(
                            "[{:>5.0} s] {} inputs: {} ok, {} clean errors, {} findings",
                            start.elapsed().as_secs_f64(),
                            summary.inputs,
                            summary.ok,
                            summary.clean_errors,
                            summary.findings.len()
                        );
                        last_report = Instant::now();
                    }
                }
                Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => break Some("crash"),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        break None;
                    }
                    break Some("hang");
                }
            }
        };
        let _ = child.kill();
        let status = child.wait()?;
        let Some(mut kind) = kind else { break };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if stderr.contains("ALLOCATION BEYOND BOUND") {
            kind = "allocation";
        }
        match kind {
            "hang" => summary.hangs += 1,
            "allocation" => summary.allocations_beyond_bound += 1,
            _ => summary.crashes += 1,
        }
        summary.inputs += 1;
        let recipe: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("current.json"))?)?;
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let name = format!("{kind}-{next}.json");
        let finding = serde_json::json!({
            "kind": kind,
            "exit": status.to_string(),
            "stderr_tail": tail,
            "recipe": recipe,
        });
        std::fs::write(
            findings_dir.join(&name),
            serde_json::to_vec_pretty(&finding)?,
        )?;
        eprintln!(
            "FINDING {name}: {kind} ({status}); {}",
            recipe["description"]
        );
        summary.findings.push(name);
        next += 1;
    }
    summary.seconds = start.elapsed().as_secs_f64();
    let mut top: Vec<(String, u64)> = messages.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(15);
    summary.top_errors = top;
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(out.join("summary.json"), &json)?;
    println!("{json}");
    Ok(())
}

/// Plans and runs a source stage (no inputs) on the mutated file: the rows
/// it read, or its error.
fn read_with(stage: &dyn Stage) -> Outcome {
    let result = stage
        .outputs(&[])
        .and_then(|_| run_in_memory(stage, &[]))
        .map(|out| out.table("main").num_rows());
    match result {
        Ok(rows) => Outcome::Ok(rows),
        Err(e) => Outcome::Error(e.to_string()),
    }
}
