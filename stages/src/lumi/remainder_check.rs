//! `remainder_check`: the poster's Fig. 7 check — does a run stop being
//! anomalous once the LS a method flags are removed? For every method,
//! run and ME, the run's histogram summed over three sets of LS is
//! compared with what good LS at the same pile-up give (the sum over the
//! set of each LS's entries times its reference shape, as
//! `lumi_chi2_score` makes it): all LS (no certificate), the LS the method
//! keeps, and the truly good LS (a perfect certificate). χ²/ndf of the
//! kept LS near that of the good ones: the anomaly is gone; near that of
//! all LS: it stayed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::column_as;
use crate::error::{Result, StageError, bad_param};
use crate::input::require_column;
use crate::lumi::reference::{PileupMatched, Reference, in_entries};
use crate::lumi::tables::{
    LsHistogram, by_me, histograms_schema, read_histograms, require_histograms,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::{column, nullable};

/// Run minus flagged LS against good LS at the same pile-up.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RemainderCheck {
    /// Good runs whose good LS make the reference shapes.
    pub reference_runs: Vec<i64>,
    /// 0: one reference shape; k > 0: each LS's reference is the sum of the
    /// k good reference LS nearest to it in pile-up.
    pub pileup_neighbours: usize,
    /// MEs checked (empty: every ME).
    pub mes: Vec<String>,
}

impl Default for RemainderCheck {
    fn default() -> Self {
        Self {
            reference_runs: vec![1],
            pileup_neighbours: 30,
            mes: Vec::new(),
        }
    }
}

impl StageConfig for RemainderCheck {
    const KIND: &'static str = "remainder_check";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Per-LS histograms + certify's decisions -> per method, run and ME, χ²/ndf of the run summed over all, kept and truly good LS against good LS at the same pile-up (the poster's Fig. 7 check)";
    const INPUTS: (usize, usize) = (2, 2);
    const INPUT_ROLES: &'static str = "histograms, decisions (`certify`'s `decisions` output)";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![histograms_schema(), decisions_input()]
    }

    fn validate(&self) -> Result<()> {
        if self.reference_runs.is_empty() {
            return bad_param("reference_runs", "name at least one good run");
        }
        Ok(())
    }
}

/// The columns read of `certify`'s `decisions`.
fn decisions_input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column("ls", DataType::Int64, "LS"),
        column(
            "rejected",
            DataType::Boolean,
            "The certificate rejects the LS",
        ),
    ]))
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column("me", DataType::Utf8, "Monitored element"),
        column("ls", DataType::Int64, "LS of the run"),
        column("kept_ls", DataType::Int64, "LS the method keeps"),
        column("good_ls", DataType::Int64, "Truly good LS"),
        column("bad_kept", DataType::Int64, "Bad LS the method keeps"),
        column(
            "chi2_all",
            DataType::Float64,
            "χ²/ndf of the run summed over all its LS against good LS at the same pile-up (no certificate)",
        ),
        nullable(
            "chi2_kept",
            DataType::Float64,
            "The same over the LS the method keeps (null: none kept)",
        ),
        nullable(
            "chi2_good",
            DataType::Float64,
            "The same over the truly good LS (a perfect certificate; null: none)",
        ),
        nullable(
            "excess",
            DataType::Float64,
            "chi2_kept − chi2_good: ≈ 0 when the anomaly went with the flagged LS",
        ),
    ]))
}

/// Per ME, per (run, LS): the LS's contents.
type ContentsByMe = BTreeMap<String, HashMap<(i64, i64), LsContents>>;

/// (method, run) → [(LS, rejected)].
type DecisionsByRun = BTreeMap<(String, i64), Vec<(i64, bool)>>;

/// One LS of one ME: observed contents and expected ones (entries times
/// the LS's reference shape).
struct LsContents {
    observed: Vec<f64>,
    expected: Vec<f64>,
    bad: bool,
}

/// χ²/ndf of summed observed against summed expected contents; `None`
/// for an empty set.
pub fn summed_chi2_ndf<'a>(rows: impl Iterator<Item = (&'a [f64], &'a [f64])>) -> Option<f64> {
    let (mut observed, mut expected): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (o, e) in rows {
        if observed.is_empty() {
            (observed, expected) = (vec![0.0; o.len()], vec![0.0; e.len()]);
        }
        observed.iter_mut().zip(o).for_each(|(s, v)| *s += v);
        expected.iter_mut().zip(e).for_each(|(s, v)| *s += v);
    }
    let total: f64 = expected.iter().sum();
    if !(total > 0.0) {
        return None;
    }
    let chi2: f64 = observed
        .iter()
        .zip(&expected)
        .filter(|(_, e)| **e > 0.0)
        .map(|(&o, &e)| (o - e).powi(2) / e)
        .sum();
    Some(chi2 / (observed.len() as f64 - 1.0).max(1.0))
}

/// A row of the output.
struct Row {
    method: String,
    run: i64,
    me: String,
    counts: [i64; 4],
    chi2: [Option<f64>; 3],
}

impl RemainderCheck {
    /// Per ME, per (run, LS): observed and expected contents.
    fn contents(&self, histograms: &[LsHistogram], input: &str) -> Result<ContentsByMe> {
        let mut out = BTreeMap::new();
        for (me, rows) in by_me(histograms, input)? {
            if !self.mes.is_empty() && !self.mes.iter().any(|m| m == me) {
                continue;
            }
            let good: Vec<&LsHistogram> = rows
                .iter()
                .filter(|h| self.reference_runs.contains(&h.key.run) && !h.key.bad)
                .copied()
                .collect();
            let missing = || {
                StageError::data(format!(
                    "input `{input}`: ME `{me}` has no entries in the good LS of reference runs {:?}",
                    self.reference_runs
                ))
            };
            let single = Reference::new(&good).ok_or_else(missing)?;
            let matched = (self.pileup_neighbours > 0)
                .then(|| PileupMatched::new(&good, self.pileup_neighbours))
                .transpose()
                .map_err(|why| StageError::data(format!("input `{input}`: ME `{me}`: {why}")))?;
            let mut by_ls = HashMap::new();
            for h in rows {
                let observed = in_entries(h);
                let n: f64 = observed.iter().sum();
                let reference = match &matched {
                    Some(m) => m.reference_for(h.key.pileup).ok_or_else(missing)?,
                    None => Reference {
                        shape: single.shape.clone(),
                        entries: single.entries,
                    },
                };
                // A bin the reference never filled counts with half a
                // reference entry, as in `lumi_chi2_score`.
                let floor = 0.5 / reference.entries;
                let expected = reference.shape.iter().map(|p| n * p.max(floor)).collect();
                by_ls.insert(
                    (h.key.run, h.key.ls),
                    LsContents {
                        observed,
                        expected,
                        bad: h.key.bad,
                    },
                );
            }
            out.insert(me.to_string(), by_ls);
        }
        if out.is_empty() {
            return Err(StageError::param(
                "mes",
                format!("none of {:?} is in input `{input}`", self.mes),
            ));
        }
        Ok(out)
    }
}

/// (method, run) → [(LS, rejected)] from `certify`'s decisions.
fn read_decisions(input: &crate::input::Input) -> Result<DecisionsByRun> {
    let mut out = DecisionsByRun::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str, t: &DataType| column_as(&batch, n, t, &input.name);
        let (method, run, ls, rejected) = (
            col("method", &DataType::Utf8)?,
            col("run", &DataType::Int64)?,
            col("ls", &DataType::Int64)?,
            col("rejected", &DataType::Boolean)?,
        );
        let (method, run, ls, rejected) = (
            method.as_string::<i32>(),
            run.as_primitive::<Int64Type>(),
            ls.as_primitive::<Int64Type>(),
            rejected.as_boolean(),
        );
        for i in 0..batch.num_rows() {
            if rejected.is_null(i) {
                return Err(StageError::data(format!(
                    "input `{}`, column `rejected`: null at row {i}",
                    input.name
                )));
            }
            out.entry((method.value(i).to_string(), run.value(i)))
                .or_default()
                .push((ls.value(i), rejected.value(i)));
        }
    }
    Ok(out)
}

impl Stage for RemainderCheck {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        require_histograms(&inputs[0], "histograms")?;
        for f in decisions_input().fields() {
            let t = f.data_type().clone();
            require_column(
                &inputs[1],
                "decisions",
                f.name(),
                "`certify`'s `decisions` output",
                &t.to_string(),
                |x| x == &t,
            )?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let histograms = read_histograms(&ctx.inputs[0])?;
        let contents = self.contents(&histograms, &ctx.inputs[0].name)?;
        let decisions = read_decisions(&ctx.inputs[1])?;
        let mut rows = Vec::new();
        for ((method, run), ls) in &decisions {
            for (me, by_ls) in &contents {
                let mut of_run = Vec::with_capacity(ls.len());
                for (l, rejected) in ls {
                    let c = by_ls.get(&(*run, *l)).ok_or_else(|| {
                        StageError::data(format!(
                            "input `{}` has no histogram of ME `{me}` for run {run} LS {l} that input `{}` certifies",
                            ctx.inputs[0].name, ctx.inputs[1].name
                        ))
                    })?;
                    of_run.push((c, *rejected));
                }
                let chi2 = |keep: &dyn Fn(&(&LsContents, bool)) -> bool| {
                    summed_chi2_ndf(
                        of_run
                            .iter()
                            .filter(|x| keep(x))
                            .map(|(c, _)| (c.observed.as_slice(), c.expected.as_slice())),
                    )
                };
                let count = |keep: &dyn Fn(&(&LsContents, bool)) -> bool| {
                    of_run.iter().filter(|x| keep(x)).count() as i64
                };
                rows.push(Row {
                    method: method.clone(),
                    run: *run,
                    me: me.clone(),
                    counts: [
                        of_run.len() as i64,
                        count(&|x| !x.1),
                        count(&|x| !x.0.bad),
                        count(&|x| !x.1 && x.0.bad),
                    ],
                    chi2: [chi2(&|_| true), chi2(&|x| !x.1), chi2(&|x| !x.0.bad)],
                });
            }
        }
        ctx.reporter.info(&format!(
            "{} (method, run, ME) remainders checked",
            rows.len()
        ));
        let ints = |k: usize| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.counts[k]),
            ))
        };
        let floats = |k: usize| -> ArrayRef {
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.chi2[k])))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.method.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.run))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.me.as_str()),
            )),
            ints(0),
            ints(1),
            ints(2),
            ints(3),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.chi2[0].unwrap_or(f64::NAN)),
            )),
            floats(1),
            floats(2),
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| Some(r.chi2[1]? - r.chi2[2]?)),
            )),
        ];
        ctx.output
            .write("main", RecordBatch::try_new(schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: two LS expected (10, 10) each; observed (10, 10) and
    /// (14, 6): summed (24, 16) against (20, 20) → (16 + 16) / 20 = 1.6.
    #[test]
    fn summed_chi2_by_hand() {
        let e = [10.0, 10.0];
        let (a, b) = ([10.0, 10.0], [14.0, 6.0]);
        let both = [(&a[..], &e[..]), (&b[..], &e[..])];
        assert!((summed_chi2_ndf(both.into_iter()).unwrap() - 1.6).abs() < 1e-12);
        assert_eq!(summed_chi2_ndf([(&a[..], &e[..])].into_iter()), Some(0.0));
        assert_eq!(summed_chi2_ndf(std::iter::empty()), None);
    }
}
