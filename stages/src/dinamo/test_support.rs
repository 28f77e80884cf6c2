//! The DINAMO family's test fixtures: generated runs tables, made by the
//! `synth_runs` stage itself (the RL family's tests use them too).

use arrow::array::RecordBatch;

use crate::dinamo::generator::RunGenerator;
use crate::dinamo::synth_runs::SynthRuns;
use crate::in_memory::{input_from_batch, run_in_memory};
use crate::input::Input;

/// The runs table of `generator`'s datasets.
pub fn generated_runs(generator: RunGenerator) -> RecordBatch {
    run_in_memory(&SynthRuns(generator), &[])
        .unwrap()
        .table("main")
}

/// [`generated_runs`] written to `dir` as the input `name`.
pub fn runs_input(generator: RunGenerator, dir: &std::path::Path, name: &str) -> Input {
    let batch = generated_runs(generator);
    input_from_batch(name, &batch, &dir.join(format!("{name}.parquet"))).unwrap()
}
