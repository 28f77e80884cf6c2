//! `runs_from_dqm`: the run histograms of one monitoring element across
//! runs (the histograms table of `dqm_root` or `dqm_dataframe`) as the runs
//! table `dinamo_s` and `dinamo_ml` read: one dataset, runs in run order,
//! a histogram per run, labels from a list of good runs when one is given.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::arrow_util::f64_lists;
use crate::dqm::tables::{
    Consistency, HistogramRow, histograms_schema as dqm_histograms_schema, read_histograms,
    read_ls_lists, require_histograms, require_ls_lists,
};
use crate::error::{Result, StageError, bad_param};
use crate::input::Input;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::{runs, schema_of};

/// Builds a DINAMO runs table from real run histograms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunsFromDqm {
    /// The ME (as in the histograms table), 1-D.
    pub me: String,
    /// The dataset id written (one monitored sequence of runs).
    pub dataset: i64,
    /// Keep the under- and overflow bins as the first and last bins (false:
    /// the ME's bins only, as a DQM plot shows them).
    pub flow: bool,
}

impl StageConfig for RunsFromDqm {
    const KIND: &'static str = "runs_from_dqm";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "One ME's run histograms (dqm_root/dqm_dataframe) as a DINAMO runs table, in run order; a run is bad when a good-run list (cms_json) leaves it out";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str =
        "histograms (dqm_root, dqm_dataframe), then optionally a good-run list (cms_json)";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![dqm_histograms_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.me.is_empty() {
            return bad_param("me", "name the ME whose run histograms DINAMO follows");
        }
        Ok(())
    }
}

/// The runs table written: the columns `dinamo_s` reads, and the range.
fn output_schema() -> SchemaRef {
    schema_of([
        runs::dataset(),
        runs::run(),
        runs::label(),
        runs::counts(),
        runs::lo(),
        runs::hi(),
    ])
}

impl Stage for RunsFromDqm {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_histograms(
            &inputs[0],
            "histograms",
            "real MEs (`dqm_root`, `dqm_dataframe`)",
        )?;
        if let Some(list) = inputs.get(1) {
            require_ls_lists(list, "good runs", "a good-run list (`cms_json`)")?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: output_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let good = match ctx.inputs.get(1) {
            Some(input) => Some(good_runs(input)?),
            None => None,
        };
        let input = &ctx.inputs[0];
        // Run -> (counts, lo, hi), in run order.
        let mut by_run: BTreeMap<i64, (Vec<f64>, f64, f64)> = BTreeMap::new();
        let mut consistency = Consistency::default();
        for batch in input.batches() {
            for h in read_histograms(&batch?, &input.name)? {
                if h.me != self.me {
                    continue;
                }
                by_run.insert(h.run, self.counts(&h, &mut consistency)?);
            }
        }
        if by_run.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no run histogram of ME `{}` (parameter `me`)",
                input.name, self.me
            )));
        }
        let n = by_run.len();
        let label = |run: &i64| -> i8 {
            match &good {
                Some(list) if !list.contains(run) => 1,
                _ => 0,
            }
        };
        let bad = by_run.keys().filter(|r| label(r) == 1).count();
        ctx.reporter.info(&format!(
            "{n} runs of `{}` ({bad} bad{}), {} bins each",
            self.me,
            if good.is_some() {
                " by the good-run list"
            } else {
                ", no list given"
            },
            by_run.values().next().map_or(0, |v| v.0.len())
        ));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![self.dataset; n])),
            Arc::new(Int64Array::from_iter_values(by_run.keys().copied())),
            Arc::new(Int8Array::from_iter_values(by_run.keys().map(label))),
            Arc::new(f64_lists(by_run.values().map(|v| v.0.as_slice()))),
            Arc::new(Float64Array::from_iter_values(by_run.values().map(|v| v.1))),
            Arc::new(Float64Array::from_iter_values(by_run.values().map(|v| v.2))),
        ];
        ctx.output
            .write("main", RecordBatch::try_new(output_schema(), columns)?)
    }
}

impl RunsFromDqm {
    /// The counts DINAMO reads from one run histogram of the ME, with its
    /// range; refuses what is not a run's 1-D histogram of counts.
    fn counts(
        &self,
        h: &HistogramRow,
        consistency: &mut Consistency,
    ) -> Result<(Vec<f64>, f64, f64)> {
        let at = |why: String| {
            StageError::data(format!(
                "file `{}`, run {} ME `{}`: {why}",
                h.file, h.run, h.me
            ))
        };
        if let Some(ls) = h.ls {
            return Err(at(format!(
                "a histogram of LS {ls}: DINAMO follows run histograms (read the files without `ls_pattern`, or `columns.ls: null`)"
            )));
        }
        let histogram = &h.histogram;
        let [axis] = histogram.axes.as_slice() else {
            return Err(at(format!(
                "a {}-D histogram ({}): DINAMO reads 1-D ones",
                histogram.dimension(),
                histogram.class
            )));
        };
        if histogram.bin_entries.is_some() {
            return Err(at(format!(
                "a {} holds means per bin, not counts: DINAMO reads histograms of counts",
                histogram.class
            )));
        }
        consistency.check(h).map_err(at)?;
        let c = &histogram.contents;
        let counts = if self.flow {
            c.clone()
        } else {
            c[1..c.len() - 1].to_vec()
        };
        if let Some(v) = counts.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(at(format!("a bin of {v}: counts must be finite and ≥ 0")));
        }
        Ok((counts, axis.low, axis.high))
    }
}

/// The runs of a good-run list (`cms_json`'s one list): a run is good when
/// the list certifies any of its LS.
fn good_runs(input: &Input) -> Result<BTreeSet<i64>> {
    let lists = read_ls_lists(input, "a good-run list (`cms_json`)")?;
    let [(_, list)] = lists.iter().collect::<Vec<_>>()[..] else {
        return Err(StageError::data(format!(
            "input `{}` holds {} lists; give one good-run list",
            input.name,
            lists.len()
        )));
    };
    Ok(list.ranges().map(|(run, _, _)| run).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqm::histogram::{Axis, Histogram};
    use crate::dqm::ls_ranges::LsRanges;
    use crate::dqm::tables::{histograms_batch, ls_lists_batch};
    use crate::in_memory::{input_from_batch, run_in_memory};
    use arrow::array::{AsArray, ListArray};
    use arrow::datatypes::{Float64Type, Int8Type, Int64Type};

    /// A run's 1-D histogram of `me` over (0, 3) with these bins, under-
    /// and overflow included.
    fn row(run: i64, ls: Option<i64>, me: &str, contents: &[f64]) -> HistogramRow {
        HistogramRow {
            file: format!("run{run}.root"),
            run,
            ls,
            me: me.into(),
            histogram: Histogram {
                class: "TH1F".into(),
                axes: vec![Axis {
                    bins: contents.len() - 2,
                    low: 0.0,
                    high: 3.0,
                    edges: None,
                }],
                contents: contents.to_vec(),
                entries: contents.iter().sum(),
                sum_w: contents[1..contents.len() - 1].iter().sum(),
                sumw2: vec![],
                bin_entries: None,
            },
        }
    }

    fn stage() -> RunsFromDqm {
        RunsFromDqm {
            me: "Jet/eta".into(),
            dataset: 7,
            flow: false,
        }
    }

    fn run(
        stage: &RunsFromDqm,
        rows: &[HistogramRow],
        good: Option<&[i64]>,
    ) -> Result<RecordBatch> {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = vec![
            input_from_batch(
                "hists",
                &histograms_batch(rows).unwrap(),
                &dir.path().join("h.parquet"),
            )
            .unwrap(),
        ];
        if let Some(good) = good {
            let mut list = LsRanges::default();
            for &r in good {
                list.insert(r, 1, 10);
            }
            inputs.push(
                input_from_batch(
                    "golden",
                    &ls_lists_batch("golden", &list).unwrap(),
                    &dir.path().join("g.parquet"),
                )
                .unwrap(),
            );
        }
        stage.outputs(&inputs.iter().map(|i| i.schema.clone()).collect::<Vec<_>>())?;
        Ok(run_in_memory(stage, &inputs)?.table("main"))
    }

    /// Runs come out in run order whatever the input order; other MEs are
    /// left out; the flow bins go unless asked for; a run outside the
    /// good-run list is bad, one inside (any LS) good.
    #[test]
    fn one_mes_runs_in_run_order_labelled_by_the_list() {
        let rows = [
            row(300, None, "Jet/eta", &[9.0, 1.0, 2.0, 3.0, 8.0]),
            row(100, None, "Jet/eta", &[0.0, 4.0, 5.0, 6.0, 1.0]),
            row(100, None, "Jet/phi", &[0.0, 1.0, 1.0, 1.0, 0.0]),
            row(200, None, "Jet/eta", &[0.0, 0.0, 7.0, 0.0, 0.0]),
        ];
        let out = run(&stage(), &rows, Some(&[100, 300, 999])).unwrap();
        let col = |n: &str| out.column_by_name(n).unwrap().clone();
        assert_eq!(
            col("run").as_primitive::<Int64Type>().values(),
            &[100, 200, 300]
        );
        assert_eq!(
            col("dataset").as_primitive::<Int64Type>().values(),
            &[7, 7, 7]
        );
        assert_eq!(col("label").as_primitive::<Int8Type>().values(), &[0, 1, 0]);
        let counts = |b: &RecordBatch, i: usize| -> Vec<f64> {
            let l = b
                .column_by_name("counts")
                .unwrap()
                .as_any()
                .downcast_ref::<ListArray>()
                .unwrap()
                .value(i);
            l.as_primitive::<Float64Type>().values().to_vec()
        };
        assert_eq!(counts(&out, 0), [4.0, 5.0, 6.0]);
        assert_eq!(counts(&out, 2), [1.0, 2.0, 3.0]);
        assert_eq!(col("lo").as_primitive::<Float64Type>().values(), &[0.0; 3]);
        assert_eq!(col("hi").as_primitive::<Float64Type>().values(), &[3.0; 3]);
        // With the flow bins, and without a list (every run good).
        let flow = RunsFromDqm {
            flow: true,
            ..stage()
        };
        let out = run(&flow, &rows, None).unwrap();
        assert_eq!(counts(&out, 2), [9.0, 1.0, 2.0, 3.0, 8.0]);
        let labels = out
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int8Type>()
            .values()
            .to_vec();
        assert_eq!(labels, [0, 0, 0]);
    }

    /// What DINAMO cannot follow is refused, naming the file, run and ME.
    #[test]
    fn what_is_not_a_run_histogram_of_counts_is_refused() {
        let ok = row(1, None, "Jet/eta", &[0.0, 1.0, 2.0, 3.0, 0.0]);
        let message = |rows: &[HistogramRow]| run(&stage(), rows, None).unwrap_err().to_string();
        let per_ls = message(&[row(1, Some(4), "Jet/eta", &[0.0, 1.0, 2.0, 0.0])]);
        assert!(
            per_ls.contains("run1.root") && per_ls.contains("LS 4"),
            "{per_ls}"
        );
        let mut two_d = ok.clone();
        two_d.histogram.class = "TH2F".into();
        two_d.histogram.axes.push(two_d.histogram.axes[0].clone());
        two_d.histogram.contents = vec![1.0; 25];
        assert!(message(&[two_d]).contains("2-D histogram (TH2F)"));
        let mut profile = ok.clone();
        profile.histogram.class = "TProfile".into();
        profile.histogram.bin_entries = Some(vec![1.0; 5]);
        assert!(message(&[profile]).contains("means per bin"));
        let mut rebinned = row(2, None, "Jet/eta", &[0.0, 1.0, 2.0, 0.0]);
        rebinned.file = "late.root".into();
        let e = message(&[ok.clone(), rebinned]);
        assert!(e.contains("late.root") && e.contains("binning"), "{e}");
        let twice = message(&[ok.clone(), ok.clone()]);
        assert!(twice.contains("holds this ME twice"), "{twice}");
        let negative = message(&[row(1, None, "Jet/eta", &[0.0, -1.0, 2.0, 3.0, 0.0])]);
        assert!(negative.contains("a bin of -1"), "{negative}");
        let absent = message(&[row(1, None, "Jet/phi", &[0.0, 1.0, 0.0])]);
        assert!(
            absent.contains("no run histogram of ME `Jet/eta`"),
            "{absent}"
        );
        assert_eq!(
            RunsFromDqm {
                me: String::new(),
                ..stage()
            }
            .validate()
            .unwrap_err()
            .as_param()
            .unwrap()
            .0,
            "me"
        );
    }
}
