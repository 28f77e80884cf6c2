//! DINAMO (arXiv dinamo.txt): synthetic runs, the DINAMO-S reference, and the
//! DQM metrics of section 3.

pub mod ewma;
pub mod metrics;
pub mod ml;
pub mod synth;

use std::collections::{HashSet, VecDeque};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use crate::api::{Input, Result, StageError};
use crate::arrow_util::cast_column;

/// Splits a table into its datasets while streaming it, so a stage holds one
/// chunk of datasets in memory, not the whole table.
///
/// Rows of one dataset must be contiguous (as every stage here writes them);
/// a dataset id that reappears after another is an error asking the user to
/// sort the table. Without a `dataset` column the table is dataset 0.
pub struct DatasetGroups<'a> {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + 'a>,
    input: String,
    dataset_column: Option<usize>,
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
            current: None,
            pending: Vec::new(),
            seen: HashSet::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(id) = self.current.take() {
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
            return Err(StageError::Data(format!(
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
                    return Err(StageError::Data(format!(
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
