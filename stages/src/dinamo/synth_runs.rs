//! `synth_runs`: the DINAMO synthetic run generator (paper appendix A,
//! Algorithm 1) with the parameters of appendix A.1 as defaults.
//!
//! Each run is a histogram of a Gaussian whose mean drifts slowly, jumps at
//! rapid changes, and, for bad runs, is distorted further (mean and width
//! shifts, dead bins). Where the paper's text and pseudocode differ we follow
//! the text and say so on the parameter.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int8Array, Int32Array, Int64Array, RecordBatch,
};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::generator::{RunGenerator, SynthRun};
use crate::error::Result;
use crate::parallel::streamed_in_order;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Generates one dataset of runs per seed.
///
/// The parameters are a [`RunGenerator`] (the generator as a library,
/// shared with environments that redraw runs the way it does).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SynthRuns(pub RunGenerator);

impl std::ops::Deref for SynthRuns {
    type Target = RunGenerator;
    fn deref(&self) -> &RunGenerator {
        &self.0
    }
}

impl StageConfig for SynthRuns {
    const KIND: &'static str = "synth_runs";
    const VERSION: u32 = 2;
    const SUMMARY: &'static str = "DINAMO synthetic generator: one dataset of histogram runs per seed (drifts, jumps, dead bins)";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
}

impl SynthRuns {
    /// One dataset's runs as rows of `dqm_schemas::runs::schema()`.
    fn to_batch(&self, dataset: u64, runs: &[SynthRun]) -> Result<RecordBatch> {
        let n = runs.len();
        let counts = crate::arrow_util::f64_lists(runs.iter().map(|r| r.counts.as_slice()));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![dataset as i64; n])),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(Int8Array::from_iter_values(runs.iter().map(|r| r.label))),
            Arc::new(counts),
            Arc::new(Float64Array::from(vec![self.range[0]; n])),
            Arc::new(Float64Array::from(vec![self.range[1]; n])),
            Arc::new(Float64Array::from_iter_values(runs.iter().map(|r| r.mu))),
            Arc::new(Float64Array::from_iter_values(runs.iter().map(|r| r.sigma))),
            Arc::new(BooleanArray::from_iter(
                runs.iter().map(|r| Some(r.rapid_change)),
            )),
            Arc::new(Int32Array::from_iter_values(
                runs.iter().map(|r| r.n_dead_bins),
            )),
        ];
        Ok(RecordBatch::try_new(dqm_schemas::runs::schema(), columns)?)
    }
}

impl Stage for SynthRuns {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: dqm_schemas::runs::schema(),
        }])
    }

    fn shardable(&self) -> bool {
        true
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let all = self.seed_list();
        let seeds = &all[ctx.shard.range(all.len())];
        let progress = ctx.reporter.progress(seeds.len() as u64, "datasets");
        // Datasets are generated on every thread and written in seed order
        // while later ones are generated; at most a few per thread wait to
        // be written, so memory stays bounded however many seeds there are.
        let output = &mut *ctx.output;
        streamed_in_order(
            seeds,
            8 * rayon::current_num_threads(),
            progress.as_ref(),
            |&seed| self.to_batch(seed, &self.generate(seed)),
            |batch| output.write("main", batch?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;

    fn small(seeds: Vec<u64>) -> SynthRuns {
        SynthRuns(RunGenerator {
            seeds: Some(seeds),
            n_runs: 1000,
            n_bad: 100,
            ..Default::default()
        })
    }

    fn run_stage(stage: &SynthRuns) -> RecordBatch {
        run_in_memory(stage, &[]).unwrap().table("main")
    }

    #[test]
    fn same_seed_same_table_different_seed_different_table() {
        let a = run_stage(&small(vec![1, 2]));
        let b = run_stage(&small(vec![1, 2]));
        assert_eq!(a, b);
        let c = run_stage(&small(vec![1, 3]));
        assert_ne!(a, c);
        // Each seed is reproducible on its own: dataset 2 alone equals dataset 2 in a pair.
        let alone = run_stage(&small(vec![2]));
        assert_eq!(alone, a.slice(1000, 1000));
        assert_eq!(a.schema(), dqm_schemas::runs::schema());
    }

    #[test]
    fn seed_range_is_half_open() {
        let stage = SynthRuns(RunGenerator {
            seed_range: Some([3, 6]),
            n_runs: 10,
            n_bad: 1,
            ..Default::default()
        });
        assert_eq!(stage.seed_list(), vec![3, 4, 5]);
        let table = run_stage(&stage);
        let datasets = table
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            datasets
                .values()
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3
        );
        let counts = table.column(3).as_list::<i32>();
        assert_eq!(counts.value(0).as_primitive::<Float64Type>().len(), 100);
    }
}
