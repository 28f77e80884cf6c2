//! `pipeline`: runs data-quality-monitoring pipelines declared in YAML.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use dqm_pipeline::cache::Workdir;
use dqm_pipeline::exec::{self, RunOptions, Status};
use dqm_pipeline::spec::PipelineSpec;
use dqm_pipeline::{describe, plan, progress, query, report, slurm};

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Data-quality monitoring pipelines: YAML-declared DAGs of stages over Parquet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Arguments shared by the commands that read a pipeline file.
#[derive(clap::Args)]
struct PipelineArgs {
    /// The pipeline YAML file.
    file: PathBuf,
    /// Where stage outputs are cached (default: $DQM_WORKDIR or ./dqm-work).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Override a parameter: STAGE.PARAM=VALUE (VALUE is YAML; PARAM may be
    /// a dotted path into a nested parameter, e.g. `agent.ppo.clip=0.1`). Repeatable.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
}

impl PipelineArgs {
    fn workdir(&self) -> Workdir {
        let root = self
            .workdir
            .clone()
            .or_else(|| std::env::var_os("DQM_WORKDIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("dqm-work"));
        Workdir::new(root)
    }

    fn plan(&self) -> Result<plan::Plan> {
        let mut spec = PipelineSpec::load(&self.file)?;
        spec.apply_overrides(&self.set)?;
        plan::plan(spec)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: cached stages are skipped, the rest run in dependency order.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Rerun this stage (and everything downstream of it) even if cached. Repeatable.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Run only this stage and the stages it needs.
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
    },
    /// Validate a pipeline and show its DAG, cache keys and output locations.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Run SQL over the cached stage outputs (tables named by stage id).
    Query {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The SQL query.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: query::Format,
    },
    /// List every stage kind with its parameters and output schema.
    Stages,
    /// Write one self-contained HTML page of a pipeline's run: the DAG with
    /// each stage's state, rows, time and cache key, small tables, plots.
    Report {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Folder for `<pipeline name>.html` (default: WORKDIR/reports).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run exactly one stage whose inputs are cached (what a batch job runs).
    RunStage {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The stage id.
        stage: String,
        /// For a sharded stage: run this shard (0-based) and, if it is the
        /// last one missing, assemble the stage's output. Without it, every
        /// missing shard runs here.
        #[arg(long)]
        shard: Option<usize>,
    },
    /// Submit the stages that are not cached as batch jobs, chained by dependencies.
    Submit {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The batch scheduler.
        #[arg(long, value_enum, default_value = "slurm")]
        scheduler: Scheduler,
        /// Slurm partition (default: the cluster's default).
        #[arg(long)]
        partition: Option<String>,
        /// Slurm account to charge.
        #[arg(long)]
        account: Option<String>,
        /// Wall-time limit of each job, unless the stage's `resources` set one (e.g. 02:00:00).
        #[arg(long)]
        time: Option<String>,
        /// Memory of each job, unless the stage's `resources` set one (e.g. 8G).
        #[arg(long)]
        mem: Option<String>,
        /// Print the batch scripts instead of submitting them.
        #[arg(long)]
        dry_run: bool,
        /// Resubmit this stage (and everything downstream) even if cached. Repeatable.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
    },
    /// Show each stage's state: cached, queued, running, failed (with its log), cancelled.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Scheduler {
    Slurm,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            force,
            until,
        } => {
            let plan = pipeline.plan()?;
            let workdir = pipeline.workdir();
            let reports = exec::run(&plan, &workdir, &RunOptions { force, until })?;
            println!(
                "{:<16} {:<16} {:<7} {:>10} {:>9}  output",
                "stage", "kind", "status", "rows", "seconds"
            );
            for r in reports {
                let status = match r.status {
                    Status::Cached => "cached",
                    Status::Ran => "ran",
                    Status::Skipped => "skipped",
                };
                println!(
                    "{:<16} {:<16} {:<7} {:>10} {:>9.2}  {}",
                    r.id,
                    r.kind,
                    status,
                    r.rows,
                    r.seconds,
                    r.path.display()
                );
            }
            println!(
                "tables: {}/pipelines/{}/<stage>/<output>/*.parquet; query with `pipeline query {} \"SQL\"`",
                workdir.root.display(),
                plan.spec.name,
                plan.spec.path.display()
            );
        }
        Command::Plan { pipeline } => {
            let plan = pipeline.plan()?;
            print!("{}", describe::describe_plan(&plan, &pipeline.workdir()));
        }
        Command::Query {
            pipeline,
            sql,
            format,
        } => {
            let plan = pipeline.plan()?;
            let batches = query::query(&plan, &pipeline.workdir(), &sql)?;
            print!("{}", query::render(&batches, format)?);
            if format == query::Format::Table {
                println!();
            }
        }
        Command::Stages => print!("{}", describe::describe_all()),
        Command::Report { pipeline, out } => {
            let plan = pipeline.plan()?;
            let workdir = pipeline.workdir();
            let out = out.unwrap_or_else(|| workdir.root.join("reports"));
            let path = report::write_report(&plan, &workdir, &pipeline.set, &out)?;
            println!("report: {}", path.display());
        }
        Command::RunStage {
            pipeline,
            stage,
            shard,
        } => {
            let plan = pipeline.plan()?;
            let workdir = pipeline.workdir();
            run_one_stage(&plan, &workdir, &stage, shard)?;
        }
        Command::Submit {
            pipeline,
            scheduler: Scheduler::Slurm,
            partition,
            account,
            time,
            mem,
            dry_run,
            force,
        } => {
            let plan = pipeline.plan()?;
            let workdir = pipeline.workdir();
            std::fs::create_dir_all(&workdir.root)?;
            let absolute = |p: &std::path::Path| -> Result<PathBuf> {
                std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let inv = slurm::Invocation {
                binary: std::env::current_exe()?,
                file: absolute(&pipeline.file)?,
                workdir: absolute(&workdir.root)?,
                cwd: std::env::current_dir()?,
                set: pipeline.set.clone(),
            };
            let options = slurm::SubmitOptions {
                partition,
                account,
                time,
                mem,
                dry_run,
                force,
            };
            let (submitted, scripts) = slurm::submit(&plan, &workdir, &inv, &options)?;
            if dry_run {
                for (stage, text) in &scripts {
                    println!("# ---- {stage}.sbatch\n{text}");
                }
            }
            if submitted.is_empty() {
                println!("every stage is cached; nothing to submit");
            } else {
                println!("{:<16} {:<10} {:<26} depends on", "stage", "job", "");
                for s in submitted {
                    println!(
                        "{:<16} {:<10} {:<26} {}",
                        s.stage,
                        s.job_id,
                        s.note,
                        s.depends_on.join(", ")
                    );
                }
                if !dry_run {
                    println!(
                        "follow with `pipeline status {}` (same --set and --workdir)",
                        pipeline.file.display()
                    );
                }
            }
        }
        Command::Status { pipeline } => {
            let plan = pipeline.plan()?;
            let workdir = pipeline.workdir();
            println!("{:<16} {:<14} {:<10} detail", "stage", "state", "job");
            for s in slurm::status(&plan, &workdir)? {
                println!(
                    "{:<16} {:<14} {:<10} {}",
                    s.stage,
                    s.state,
                    s.job_id.as_deref().unwrap_or("-"),
                    s.detail
                );
            }
        }
    }
    Ok(())
}

/// `run-stage`: one stage (or one shard of it) whose inputs are cached,
/// under the workdir's shared lock so parallel jobs do not block each other.
fn run_one_stage(
    plan: &plan::Plan,
    workdir: &Workdir,
    id: &str,
    shard: Option<usize>,
) -> Result<()> {
    let Some(stage) = plan.stage(id) else {
        anyhow::bail!("no stage `{id}` in {}", plan.spec.path.display());
    };
    let _lock = workdir.lock_shared()?;
    for input in &stage.inputs {
        let upstream = plan.stage(&input.stage).expect("planned");
        if workdir.cached(upstream).is_none() {
            anyhow::bail!(
                "stage `{id}`: its input `{}` is not cached in {}; run or submit it first",
                input.stage,
                workdir.root.display()
            );
        }
    }
    if workdir.cached(stage).is_some() {
        println!("{id}: already cached at {}", workdir.entry(stage).display());
        return Ok(());
    }
    let console = progress::Console::new();
    match shard {
        Some(index) if stage.shards > 1 => {
            exec::run_part(plan, stage, workdir, &console, index)?;
            match exec::assemble(plan, stage, workdir, &console, false)? {
                Some(report) => println!(
                    "{id}: shard {index} done; all {} shards assembled: {} rows at {}",
                    stage.shards,
                    report.rows,
                    report.path.display()
                ),
                None => println!(
                    "{id}: shard {index} done ({}/{} shards)",
                    workdir.parts_done(stage),
                    stage.shards
                ),
            }
        }
        Some(index) => anyhow::bail!(
            "stage `{id}` is not sharded (no `shards:` in the file); drop --shard {index}"
        ),
        None => {
            let report = exec::run_stage(plan, stage, workdir, &console)?;
            println!("{id}: {} rows at {}", report.rows, report.path.display());
        }
    }
    Ok(())
}
