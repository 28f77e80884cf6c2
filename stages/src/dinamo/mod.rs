//! DINAMO (arXiv dinamo.txt): synthetic runs, the DINAMO-S and DINAMO-ML
//! references, the DQM metrics of section 3 and the comparison of methods.

pub mod bands;
pub mod batched_reference;
pub mod dinamo_ml;
pub mod dinamo_s;
pub mod dqm_compare;
pub mod dqm_metrics;
pub mod reference_net;
pub mod scores;
pub mod synth_runs;

use std::collections::{HashSet, VecDeque};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use crate::arrow_util::cast_column;
use crate::error::{Result, StageError};
use crate::input::Input;
use crate::stage::Shard;

/// Splits a table into its datasets while streaming it, so a stage holds one
/// chunk of datasets in memory, not the whole table.
///
/// Rows of one dataset must be contiguous (as every stage here writes them);
/// a dataset id that reappears after another is an error asking the user to
/// sort the table. Without a `dataset` column the table is dataset 0.
pub struct DatasetGroups<'a> {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'a>,
    input: String,
    dataset_column: Option<usize>,
    /// The datasets of this shard (all when `None`).
    keep: Option<HashSet<i64>>,
    current: Option<i64>,
    pending: Vec<RecordBatch>,
    seen: HashSet<i64>,
    ready: VecDeque<(i64, RecordBatch)>,
    done: bool,
}

impl<'a> DatasetGroups<'a> {
    pub fn new(input: &'a Input) -> Self {
        Self {
            batches: Box::new(input.batches()),
            input: input.name.clone(),
            dataset_column: input.schema.index_of("dataset").ok(),
            keep: None,
            current: None,
            pending: Vec::new(),
            seen: HashSet::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// The datasets of one shard: the input's datasets (in input order) are
    /// split into `shard.count` contiguous blocks and only the row groups
    /// holding block `shard.index` are read.
    pub fn for_shard(input: &'a Input, shard: Shard) -> Result<Self> {
        if shard == Shard::WHOLE || input.schema.index_of("dataset").is_err() {
            // Without a dataset column the table is one dataset: shard 0 has it.
            let mut groups = Self::new(input);
            if shard.index > 0 {
                groups.done = true;
            }
            return Ok(groups);
        }
        let keys = input.row_group_keys("dataset")?;
        let mut order: Vec<i64> = Vec::new();
        for k in keys.iter().flatten().flatten() {
            if order.last() != Some(k) {
                order.push(*k);
            }
        }
        let mine: HashSet<i64> = order[shard.range(order.len())].iter().copied().collect();
        let selection: Vec<Vec<usize>> = keys
            .iter()
            .map(|groups| {
                (0..groups.len())
                    .filter(|&g| groups[g].iter().any(|k| mine.contains(k)))
                    .collect()
            })
            .collect();
        let mut groups = Self::new(input);
        groups.batches = Box::new(input.batches_in(selection));
        groups.keep = Some(mine);
        Ok(groups)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(id) = self.current.take() {
            if self.keep.as_ref().is_some_and(|keep| !keep.contains(&id)) {
                // Another shard's dataset sharing a row group with ours.
                self.pending.clear();
                return Ok(());
            }
            let schema = self.pending[0].schema();
            let batch = arrow::compute::concat_batches(&schema, &self.pending)?;
            self.pending.clear();
            self.ready.push_back((id, batch));
        }
        Ok(())
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(col) = self.dataset_column else {
            self.current.get_or_insert(0);
            self.pending.push(batch);
            return Ok(());
        };
        let ids = cast_column(batch.column(col), &DataType::Int64, &self.input, "dataset")?;
        if ids.null_count() > 0 {
            return Err(StageError::data(format!(
                "input `{}`: null in column `dataset`",
                self.input
            )));
        }
        let ids = ids.as_primitive::<Int64Type>().values();
        let mut start = 0;
        while start < ids.len() {
            let id = ids[start];
            let mut end = start + 1;
            while end < ids.len() && ids[end] == id {
                end += 1;
            }
            if self.current != Some(id) {
                self.flush()?;
                if !self.seen.insert(id) {
                    return Err(StageError::data(format!(
                        "input `{}`: rows of dataset {id} are not contiguous; sort the table by dataset",
                        self.input
                    )));
                }
                self.current = Some(id);
            }
            self.pending.push(batch.slice(start, end - start));
            start = end;
        }
        Ok(())
    }

    /// Up to `n` complete datasets, in input order; empty at the end.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<(i64, RecordBatch)>> {
        while self.ready.len() < n && !self.done {
            match self.batches.next() {
                Some(batch) => self.push(batch?)?,
                None => {
                    self.done = true;
                    self.flush()?;
                }
            }
        }
        let take = n.min(self.ready.len());
        Ok(self.ready.drain(..take).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::{input_from_batch, run_in_memory, run_shard_in_memory};
    use crate::stage::Stage;
    use arrow::array::{Array, RecordBatch};

    /// Runs `stage` whole and as `count` shards; returns (whole, concatenated parts) of `output`.
    fn whole_and_sharded(
        stage: &dyn Stage,
        inputs: &[Input],
        output: &str,
        count: usize,
    ) -> (RecordBatch, RecordBatch) {
        let whole = run_in_memory(stage, inputs).unwrap().table(output);
        let parts: Vec<RecordBatch> = (0..count)
            .flat_map(|index| {
                let out = run_shard_in_memory(stage, inputs, Shard { index, count }).unwrap();
                out.tables.get(output).cloned().unwrap_or_default()
            })
            .collect();
        let joined = arrow::compute::concat_batches(&whole.schema(), &parts).unwrap();
        (whole, joined)
    }

    #[test]
    fn shards_concatenated_in_order_are_the_whole_output() {
        let dir = tempfile::tempdir().unwrap();
        let synth = synth_runs::SynthRuns {
            seed_range: Some([0, 5]),
            n_runs: 120,
            n_bad: 12,
            ..Default::default()
        };
        let (whole, parts) = whole_and_sharded(&synth, &[], "main", 3);
        assert_eq!(whole, parts);
        // Two files, as two upstream shards would leave them.
        let a = input_from_batch("a", &whole.slice(0, 240), &dir.path().join("a.parquet")).unwrap();
        let b =
            input_from_batch("b", &whole.slice(240, 360), &dir.path().join("b.parquet")).unwrap();
        let runs = Input {
            name: "runs".into(),
            schema: a.schema.clone(),
            files: vec![a.files[0].clone(), b.files[0].clone()],
        };
        let s = dinamo_s::DinamoS {
            historical_runs: 40,
            ..Default::default()
        };
        let (whole, parts) = whole_and_sharded(&s, std::slice::from_ref(&runs), "main", 4);
        assert_eq!(whole.num_rows(), 600);
        assert_eq!(whole, parts);
        let scores = input_from_batch("scores", &whole, &dir.path().join("s.parquet")).unwrap();
        let m = dqm_metrics::DqmMetrics::default();
        let (whole, parts) = whole_and_sharded(&m, std::slice::from_ref(&scores), "main", 2);
        assert_eq!(whole, parts);
        // The summary is recombined from the concatenated per-dataset rows.
        let main = input_from_batch("main", &parts, &dir.path().join("m.parquet")).unwrap();
        let mut recombined = crate::in_memory::MemoryOutput::default();
        m.recombine(
            &std::collections::BTreeMap::from([("main".to_string(), main)]),
            &mut recombined,
        )
        .unwrap();
        let summary = run_in_memory(&m, &[scores]).unwrap().table("summary");
        assert_eq!(recombined.table("summary"), summary);
    }
    /// The Jaccard distance is the same whether `dqm_metrics` builds the
    /// bands from the per-run vectors or reads a reference stage's `bands`
    /// table, and a score table without per-run vectors (the study's) gives
    /// every metric of the full one.
    #[test]
    fn bands_table_gives_the_same_metrics_as_per_run_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let synth = synth_runs::SynthRuns {
            seed_range: Some([0, 3]),
            n_runs: 300,
            n_bad: 30,
            ..Default::default()
        };
        let runs = run_in_memory(&synth, &[]).unwrap().table("main");
        let runs = input_from_batch("runs", &runs, &dir.path().join("runs.parquet")).unwrap();
        let metrics = |s: &dinamo_s::DinamoS, with_bands: bool, tag: &str| {
            let out = run_in_memory(s, std::slice::from_ref(&runs)).unwrap();
            let scores = input_from_batch(
                "scores",
                &out.table("main"),
                &dir.path().join(format!("{tag}.parquet")),
            )
            .unwrap();
            let bands = input_from_batch(
                "bands",
                &out.table("bands"),
                &dir.path().join(format!("{tag}_bands.parquet")),
            )
            .unwrap();
            assert_eq!(out.table("bands").num_rows(), 3 * 2 * 100);
            let inputs = if with_bands {
                vec![scores, bands]
            } else {
                vec![scores]
            };
            run_in_memory(&dqm_metrics::DqmMetrics::default(), &inputs)
                .unwrap()
                .table("main")
        };
        let full = dinamo_s::DinamoS {
            historical_runs: 100,
            ..Default::default()
        };
        let from_vectors = metrics(&full, false, "a");
        let from_table = metrics(&full, true, "b");
        assert_eq!(from_vectors, from_table);
        let jaccard = from_vectors
            .column_by_name("jaccard")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        assert_eq!(jaccard.null_count(), 0);
        assert!(jaccard.values().iter().all(|j| (0.0..1.0).contains(j)));
        let compact = dinamo_s::DinamoS {
            per_run_vectors: false,
            ..full.clone()
        };
        let out = run_in_memory(&compact, std::slice::from_ref(&runs)).unwrap();
        assert!(out.table("main").column_by_name("ref_mu").is_none());
        assert_eq!(metrics(&compact, true, "c"), from_vectors);
        // Without vectors or a bands input the distance is unknown, not made up.
        let scores =
            input_from_batch("s", &out.table("main"), &dir.path().join("d.parquet")).unwrap();
        let no_bands = run_in_memory(&dqm_metrics::DqmMetrics::default(), &[scores])
            .unwrap()
            .table("main");
        assert_eq!(no_bands.column_by_name("jaccard").unwrap().null_count(), 6);
    }
}
