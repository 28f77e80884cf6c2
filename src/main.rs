//! `pipeline`: runs data-quality-monitoring pipelines declared in YAML.

mod cache;
mod describe;
mod exec;
mod plan;
mod progress;
mod query;
mod spec;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cache::Workdir;
use crate::exec::{RunOptions, Status};
use crate::spec::PipelineSpec;

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
    /// Override a parameter: STAGE.PARAM=VALUE (VALUE is YAML). Repeatable.
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
    }
    Ok(())
}
