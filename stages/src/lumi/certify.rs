//! `certify`: from flagged LS to a certificate. The LS of the certified runs
//! that no chosen ME flags are kept, written as Golden-JSON-style ranges
//! `{"run": [[first_ls, last_ls], ...]}` (one file per scoring method), and
//! the certificate is judged against the truth: LS precision and recall,
//! per ME and per bad stretch, and the poster's figure of merit — the
//! luminosity of good LS that rejecting whole runs (any bad LS → run out)
//! throws away and the certificate keeps — beside the bad luminosity it lets
//! through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::tables::{read_luminosity, require_luminosity};
use crate::error::{Result, StageError, bad_param};
use crate::input::Input;
use crate::lumi::tables::{LsScore, read_scores, require_ls_columns, scores_schema};
use crate::lumi::tally::{Decision, Tally, opt_f64, tally_columns, tally_fields};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::wilson;
use dqm_schemas::{column, nullable};

/// Certifies LS from the flags of one or more scoring methods.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Certify {
    /// MEs whose flags reject an LS; empty: every ME.
    pub mes: Vec<String>,
    /// An LS is rejected when at least this many of those MEs are over (1:
    /// any). A detector problem moves several MEs at once, statistical
    /// noise rarely does. An LS empty in an ME is always rejected.
    pub min_mes: usize,
    /// Parts of the events (`lumi_runs` `parts`) whose runs are certified
    /// and judged: runs a model was trained or calibrated on are left out.
    pub parts: Vec<String>,
}

impl Default for Certify {
    fn default() -> Self {
        Self {
            mes: Vec::new(),
            min_mes: 1,
            parts: vec!["test".into()],
        }
    }
}

impl StageConfig for Certify {
    const KIND: &'static str = "certify";
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "Per-LS flags of scoring methods -> Golden-JSON certificate per method, LS precision/recall per run, ME and bad stretch, luminosity recovered against run-level rejection and bad luminosity let through, beside flag-nothing and flag-everything";
    const INPUTS: (usize, usize) = (1, 9);
    const INPUT_ROLES: &'static str = "scores tables, then optionally the luminosity table (`brilcalc_lumi`) the LS luminosity came from: its unit is the figures'";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![scores_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.min_mes == 0 || (!self.mes.is_empty() && self.min_mes > self.mes.len()) {
            return bad_param(
                "min_mes",
                format!("{}: must be between 1 and the number of MEs", self.min_mes),
            );
        }
        if self.parts.is_empty() {
            return bad_param("parts", "name at least one part to certify (e.g. test)");
        }
        Ok(())
    }
}

/// Ranges of consecutive kept LS of one run, from (LS, kept) in LS order;
/// a missing LS number breaks a range.
pub fn kept_ranges(ls: &[(i64, bool)]) -> Vec<[i64; 2]> {
    let mut ranges: Vec<[i64; 2]> = Vec::new();
    for &(l, _) in ls.iter().filter(|x| x.1) {
        match ranges.last_mut() {
            Some(r) if r[1] + 1 == l => r[1] = l,
            _ => ranges.push([l, l]),
        }
    }
    ranges
}

fn runs_schema() -> SchemaRef {
    let mut fields = vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column(
            "bad_kinds",
            DataType::Utf8,
            "Truth of the run's bad LS (`good`: none)",
        ),
    ];
    fields.extend(tally_fields(false));
    Arc::new(Schema::new(fields))
}

fn totals_schema() -> SchemaRef {
    let mut fields = vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("runs", DataType::Int64, "Runs certified"),
        column(
            "lumi_unit",
            DataType::Utf8,
            "Unit of the luminosity columns: the luminosity file's (`/pb`, `/ub`) when `certify` is given it, else `/pb` (the simulated LS)",
        ),
    ];
    fields.extend(tally_fields(true));
    Arc::new(Schema::new(fields))
}

fn per_me_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("me", DataType::Utf8, "Monitored element"),
        column("truth", DataType::Utf8, "Kind of LS (`good` or the glitch)"),
        column("ls", DataType::Int64, "LS of that kind"),
        column("over", DataType::Int64, "LS this ME alone flags"),
        column(
            "fraction",
            DataType::Float64,
            "over / ls (recall for bad kinds, false-alarm rate for good)",
        ),
        nullable(
            "fraction_lo",
            DataType::Float64,
            "Wilson 95 % interval, low",
        ),
        nullable(
            "fraction_hi",
            DataType::Float64,
            "Wilson 95 % interval, high",
        ),
    ]))
}

fn stretches_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column(
            "first_ls",
            DataType::Int64,
            "First LS of the truly bad stretch",
        ),
        column("last_ls", DataType::Int64, "Last LS"),
        column("length", DataType::Int64, "LS in the stretch"),
        column("truth", DataType::Utf8, "Glitch"),
        column("flagged", DataType::Int64, "LS of the stretch rejected"),
        column(
            "found",
            DataType::Boolean,
            "At least one LS of the stretch rejected",
        ),
    ]))
}

fn decisions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column("ls", DataType::Int64, "LS"),
        column("pileup", DataType::Float64, "Mean pile-up of the LS"),
        column("lumi", DataType::Float64, "Luminosity of the LS"),
        column("truth", DataType::Utf8, "`good` or the glitch"),
        column("bad", DataType::Boolean, "Truth: the LS is bad"),
        column(
            "mes_over",
            DataType::Int64,
            "Chosen MEs over their threshold",
        ),
        column(
            "rejected",
            DataType::Boolean,
            "The certificate rejects the LS",
        ),
    ]))
}

fn certificate_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("method", DataType::Utf8, "Scoring method"),
        column("run", DataType::Int64, "Run"),
        column("first_ls", DataType::Int64, "First LS of a kept range"),
        column(
            "last_ls",
            DataType::Int64,
            "Last LS of the range (inclusive)",
        ),
    ]))
}

/// A row of `per_me`: how often one ME alone flags one kind of LS.
struct MeRow {
    method: String,
    me: String,
    truth: String,
    ls: u64,
    over: u64,
}

/// A row of `stretches`: one truly bad stretch and its LS rejected.
struct StretchRow {
    method: String,
    run: i64,
    first: i64,
    last: i64,
    truth: String,
    flagged: i64,
}

/// Everything certify writes, built row by row.
#[derive(Default)]
struct Tables {
    /// (method, run, bad kinds, tally)
    runs: Vec<(String, i64, String, Tally)>,
    /// (method, runs, tally)
    totals: Vec<(String, i64, Tally)>,
    per_me: Vec<MeRow>,
    stretches: Vec<StretchRow>,
    /// (method, run, kept range)
    certificate: Vec<(String, i64, [i64; 2])>,
    /// (method, the LS's decision, chosen MEs over)
    decisions: Vec<(String, Decision, i64)>,
}

impl Certify {
    /// The scores of every input, by method.
    fn methods(&self, scores: &[Input]) -> Result<BTreeMap<String, Vec<LsScore>>> {
        let mut methods: BTreeMap<String, Vec<LsScore>> = BTreeMap::new();
        let mut from: BTreeMap<String, String> = BTreeMap::new();
        for input in scores {
            for row in read_scores(input)? {
                if let Some(other) = from.insert(row.method.clone(), input.name.clone())
                    && other != input.name
                {
                    return Err(StageError::data(format!(
                        "inputs `{other}` and `{}` both hold scores of method `{}`",
                        input.name, row.method
                    )));
                }
                if BOUNDS.contains(&row.method.as_str()) {
                    return Err(StageError::data(format!(
                        "input `{}`: method name `{}` is reserved for the bounds certify adds (rename the method)",
                        input.name, row.method
                    )));
                }
                if self.parts.contains(&row.key.part) {
                    methods.entry(row.method.clone()).or_default().push(row);
                }
            }
        }
        if methods.is_empty() {
            return Err(StageError::data(format!(
                "no scored LS of parts {:?} in the inputs",
                self.parts
            )));
        }
        Ok(methods)
    }

    fn certify(&self, method: &str, scores: &[LsScore], tables: &mut Tables) -> Result<String> {
        let present: BTreeSet<&str> = scores.iter().map(|r| r.me.as_str()).collect();
        if let Some(me) = self.mes.iter().find(|m| !present.contains(m.as_str())) {
            return Err(StageError::param(
                "mes",
                format!("method `{method}` has no scores of ME `{me}` (MEs: {present:?})"),
            ));
        }
        let chosen = |me: &str| self.mes.is_empty() || self.mes.iter().any(|m| m == me);
        // One decision per LS: rejected when at least `min_mes` chosen MEs
        // are over, or one is empty.
        let mut over: BTreeMap<(i64, i64), (usize, bool)> = BTreeMap::new();
        let mut by_ls: BTreeMap<(i64, i64), Decision> = BTreeMap::new();
        let mut per_me: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for r in scores {
            let d = by_ls
                .entry((r.key.run, r.key.ls))
                .or_insert_with(|| Decision {
                    key: r.key.clone(),
                    rejected: false,
                });
            if chosen(&r.me) {
                let o = over.entry((r.key.run, r.key.ls)).or_default();
                o.0 += usize::from(r.over);
                o.1 |= r.score.is_none();
                d.rejected = o.0 >= self.min_mes || o.1;
            }
            let c = per_me
                .entry((r.me.clone(), r.key.truth.clone()))
                .or_default();
            c.0 += 1;
            c.1 += u64::from(r.over);
        }
        for ((me, truth), (ls, over)) in per_me {
            tables.per_me.push(MeRow {
                method: method.to_string(),
                me,
                truth,
                ls,
                over,
            });
        }
        let mut total = Tally::default();
        let mut golden: BTreeMap<String, Vec<[i64; 2]>> = BTreeMap::new();
        for (at, d) in &by_ls {
            let mes_over = over.get(at).map_or(0, |o| o.0 as i64);
            tables
                .decisions
                .push((method.to_string(), d.clone(), mes_over));
        }
        let decisions: Vec<&Decision> = by_ls.values().collect();
        let mut n_runs = 0;
        for run in decisions.chunk_by(|a, b| a.key.run == b.key.run) {
            n_runs += 1;
            let number = run[0].key.run;
            let t = Tally::of_run(run);
            total.add(&t);
            let kinds: BTreeSet<&str> = run
                .iter()
                .filter(|d| d.key.bad)
                .map(|d| d.key.truth.as_str())
                .collect();
            let kinds = if kinds.is_empty() {
                "good".to_string()
            } else {
                kinds.into_iter().collect::<Vec<_>>().join("+")
            };
            tables.runs.push((method.to_string(), number, kinds, t));
            let ls: Vec<(i64, bool)> = run.iter().map(|d| (d.key.ls, !d.rejected)).collect();
            let ranges = kept_ranges(&ls);
            for r in &ranges {
                tables.certificate.push((method.to_string(), number, *r));
            }
            golden.insert(number.to_string(), ranges);
            // Truly bad stretches and how much of each was rejected.
            for stretch in run.chunk_by(|a, b| a.key.bad == b.key.bad && a.key.ls + 1 == b.key.ls) {
                if stretch[0].key.bad {
                    tables.stretches.push(StretchRow {
                        method: method.to_string(),
                        run: number,
                        first: stretch[0].key.ls,
                        last: stretch[stretch.len() - 1].key.ls,
                        truth: stretch[0].key.truth.clone(),
                        flagged: stretch.iter().filter(|d| d.rejected).count() as i64,
                    });
                }
            }
        }
        tables.totals.push((method.to_string(), n_runs, total));
        Ok(serde_json::to_string_pretty(&golden).expect("plain data serializes"))
    }
}

/// Method names of the bounds.
const BOUNDS: [&str; 2] = ["flag_nothing", "flag_everything"];

/// The two certificates every method lies between, on the LS the methods
/// scored: `flag_nothing` (run-level certification of every run as good:
/// recovers everything, lets all bad luminosity through) and
/// `flag_everything` (keeps nothing).
fn bounding_methods(methods: &BTreeMap<String, Vec<LsScore>>) -> Vec<(String, Vec<LsScore>)> {
    let Some(rows) = methods.values().next() else {
        return Vec::new();
    };
    BOUNDS
        .into_iter()
        .map(|name| {
            let flag = name == "flag_everything";
            let rows = rows
                .iter()
                .map(|r| LsScore {
                    method: name.to_string(),
                    raw_score: Some(f64::from(u8::from(flag))),
                    score: Some(f64::from(u8::from(flag))),
                    threshold: 0.5,
                    over: flag,
                    ..r.clone()
                })
                .collect();
            (name.to_string(), rows)
        })
        .collect()
}

/// How many of the inputs are scores tables: all but a last one that is
/// the luminosity table (it has the `unit` column scores tables lack).
fn scores_inputs<'a>(n: usize, schema: impl Fn(usize) -> &'a SchemaRef) -> usize {
    if n > 0 && schema(n - 1).index_of("unit").is_ok() {
        n - 1
    } else {
        n
    }
}

impl Stage for Certify {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let n = scores_inputs(inputs.len(), |i| &inputs[i]);
        if n == 0 {
            return Err(StageError::data(
                "give the scores tables first; the luminosity table comes last",
            ));
        }
        if let Some(lumi) = inputs.get(n) {
            require_luminosity(lumi, "luminosity")?;
        }
        for (i, schema) in inputs[..n].iter().enumerate() {
            require_ls_columns(
                schema,
                &format!("scores #{}", i + 1),
                "a scores table (`lumi_ae_score`, `lumi_chi2_score`)",
                &[
                    ("me", DataType::Utf8),
                    ("method", DataType::Utf8),
                    ("over", DataType::Boolean),
                ],
            )?;
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: runs_schema(),
            },
            OutputSpec {
                name: "totals",
                schema: totals_schema(),
            },
            OutputSpec {
                name: "per_me",
                schema: per_me_schema(),
            },
            OutputSpec {
                name: "stretches",
                schema: stretches_schema(),
            },
            OutputSpec {
                name: "certificate",
                schema: certificate_schema(),
            },
            OutputSpec {
                name: "decisions",
                schema: decisions_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let n = scores_inputs(ctx.inputs.len(), |i| &ctx.inputs[i].schema);
        let unit = match ctx.inputs.get(n) {
            Some(input) => read_luminosity(input)?.unit,
            None => "/pb".to_string(),
        };
        let mut methods = self.methods(&ctx.inputs[..n])?;
        let bounds = bounding_methods(&methods);
        methods.extend(bounds);
        let mut tables = Tables::default();
        for (method, scores) in &methods {
            let json = self.certify(method, scores, &mut tables)?;
            let path = ctx.artifacts.join(format!("golden_{method}.json"));
            std::fs::write(&path, json).map_err(|e| StageError::io(&path, e))?;
        }
        for (method, _, t) in &tables.totals {
            ctx.reporter.info(&format!(
                "{method}: {} LS, {} bad, {} flagged, precision {}, recall {}; recovered {:.3} of {:.3} {unit} run-level rejection throws away; bad let through {:.3} {unit} ({})",
                t.ls,
                t.bad,
                t.flagged,
                t.precision().map_or("-".into(), |p| format!("{p:.3}")),
                t.recall().map_or("-".into(), |r| format!("{r:.3}")),
                t.lumi_recovered,
                t.lumi_thrown,
                t.lumi_bad_kept,
                t.bad_let_through()
                    .map_or("no bad LS".into(), |f| format!("{:.1} % of the bad", 100.0 * f))
            ));
        }
        write_tables(&tables, &unit, ctx)
    }
}

/// Writes every output of `certify`.
fn write_tables(tables: &Tables, unit: &str, ctx: &mut RunContext<'_>) -> Result<()> {
    let strs = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from_iter_values(v)) };
    let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from_iter_values(v)) };

    let r = &tables.runs;
    let mut columns = vec![
        strs(r.iter().map(|x| x.0.as_str()).collect()),
        ints(r.iter().map(|x| x.1).collect()),
        strs(r.iter().map(|x| x.2.as_str()).collect()),
    ];
    columns.extend(tally_columns(
        &r.iter().map(|x| &x.3).collect::<Vec<_>>(),
        false,
    ));
    ctx.output
        .write("main", RecordBatch::try_new(runs_schema(), columns)?)?;

    let t = &tables.totals;
    let mut columns = vec![
        strs(t.iter().map(|x| x.0.as_str()).collect()),
        ints(t.iter().map(|x| x.1).collect()),
        strs(t.iter().map(|_| unit).collect()),
    ];
    columns.extend(tally_columns(
        &t.iter().map(|x| &x.2).collect::<Vec<_>>(),
        true,
    ));
    ctx.output
        .write("totals", RecordBatch::try_new(totals_schema(), columns)?)?;

    let m = &tables.per_me;
    let interval = |x: &MeRow| wilson(x.over, x.ls);
    let columns = vec![
        strs(m.iter().map(|x| x.method.as_str()).collect()),
        strs(m.iter().map(|x| x.me.as_str()).collect()),
        strs(m.iter().map(|x| x.truth.as_str()).collect()),
        ints(m.iter().map(|x| x.ls as i64).collect()),
        ints(m.iter().map(|x| x.over as i64).collect()),
        Arc::new(Float64Array::from_iter_values(
            m.iter().map(|x| x.over as f64 / x.ls as f64),
        )) as ArrayRef,
        opt_f64(m.iter().map(|x| interval(x).map(|i| i.0))),
        opt_f64(m.iter().map(|x| interval(x).map(|i| i.1))),
    ];
    ctx.output
        .write("per_me", RecordBatch::try_new(per_me_schema(), columns)?)?;

    let s = &tables.stretches;
    let columns = vec![
        strs(s.iter().map(|x| x.method.as_str()).collect()),
        ints(s.iter().map(|x| x.run).collect()),
        ints(s.iter().map(|x| x.first).collect()),
        ints(s.iter().map(|x| x.last).collect()),
        ints(s.iter().map(|x| x.last - x.first + 1).collect()),
        strs(s.iter().map(|x| x.truth.as_str()).collect()),
        ints(s.iter().map(|x| x.flagged).collect()),
        Arc::new(BooleanArray::from(
            s.iter().map(|x| x.flagged > 0).collect::<Vec<_>>(),
        )) as ArrayRef,
    ];
    ctx.output.write(
        "stretches",
        RecordBatch::try_new(stretches_schema(), columns)?,
    )?;

    let d = &tables.decisions;
    let columns = vec![
        strs(d.iter().map(|x| x.0.as_str()).collect()),
        ints(d.iter().map(|x| x.1.key.run).collect()),
        ints(d.iter().map(|x| x.1.key.ls).collect()),
        Arc::new(Float64Array::from_iter_values(
            d.iter().map(|x| x.1.key.pileup),
        )) as ArrayRef,
        Arc::new(Float64Array::from_iter_values(
            d.iter().map(|x| x.1.key.lumi),
        )),
        strs(d.iter().map(|x| x.1.key.truth.as_str()).collect()),
        Arc::new(BooleanArray::from(
            d.iter().map(|x| x.1.key.bad).collect::<Vec<_>>(),
        )),
        ints(d.iter().map(|x| x.2).collect()),
        Arc::new(BooleanArray::from(
            d.iter().map(|x| x.1.rejected).collect::<Vec<_>>(),
        )),
    ];
    ctx.output.write(
        "decisions",
        RecordBatch::try_new(decisions_schema(), columns)?,
    )?;

    let c = &tables.certificate;
    let columns = vec![
        strs(c.iter().map(|x| x.0.as_str()).collect()),
        ints(c.iter().map(|x| x.1).collect()),
        ints(c.iter().map(|x| x.2[0]).collect()),
        ints(c.iter().map(|x| x.2[1]).collect()),
    ];
    ctx.output.write(
        "certificate",
        RecordBatch::try_new(certificate_schema(), columns)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lumi::tables::LsKey;

    #[test]
    fn kept_ranges_merge_consecutive_good_ls_exactly() {
        let ls = [
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (6, true),
            (7, true),
            (8, false),
        ];
        assert_eq!(
            kept_ranges(&ls),
            [[1, 2], [4, 4], [6, 7]],
            "LS 5 missing breaks the range"
        );
        assert_eq!(kept_ranges(&[(1, false)]), Vec::<[i64; 2]>::new());
    }

    fn decision(run: i64, ls: i64, bad: bool, rejected: bool, lumi: f64) -> Decision {
        Decision {
            key: LsKey {
                run,
                ls,
                part: "test".into(),
                events: 1,
                lumi,
                truth: if bad { "hcal_barrel_off" } else { "good" }.into(),
                bad,
                pileup: 0.0,
            },
            rejected,
        }
    }

    #[test]
    fn recovered_luminosity_by_hand() {
        // Run with a bad LS: LS 1 good kept (1.0), LS 2 bad rejected (2.0),
        // LS 3 good rejected (4.0), LS 4 bad kept (8.0).
        let run = [
            decision(5, 1, false, false, 1.0),
            decision(5, 2, true, true, 2.0),
            decision(5, 3, false, true, 4.0),
            decision(5, 4, true, false, 8.0),
        ];
        let t = Tally::of_run(&run.iter().collect::<Vec<_>>());
        assert_eq!((t.ls, t.bad, t.flagged, t.true_positive), (4, 2, 2, 1));
        assert_eq!((t.precision(), t.recall()), (Some(0.5), Some(0.5)));
        assert_eq!(
            (t.lumi, t.lumi_good, t.lumi_kept, t.lumi_bad_kept),
            (15.0, 5.0, 9.0, 8.0)
        );
        assert_eq!(
            (t.lumi_run_level, t.lumi_thrown, t.lumi_recovered),
            (0.0, 5.0, 1.0)
        );
        assert_eq!(t.recovered_fraction(), Some(0.2));
        assert_eq!(t.bad_let_through(), Some(0.8), "8 of 10 bad let through");
        // A good run: run-level keeps it all, nothing thrown, a false alarm costs 1.0.
        let good = [
            decision(6, 1, false, true, 1.0),
            decision(6, 2, false, false, 3.0),
        ];
        let g = Tally::of_run(&good.iter().collect::<Vec<_>>());
        assert_eq!(
            (g.lumi_run_level, g.lumi_thrown, g.lumi_kept),
            (4.0, 0.0, 3.0)
        );
        assert_eq!(
            (g.precision(), g.recall(), g.recovered_fraction()),
            (Some(0.0), None, None)
        );
        let mut all = t.clone();
        all.add(&g);
        assert_eq!(
            (all.lumi_thrown, all.lumi_recovered, all.flagged),
            (5.0, 1.0, 3)
        );
    }

    /// The luminosity figures are in the luminosity file's unit when
    /// `certify` is given its table (last input), and `/pb` without it; a
    /// luminosity table first is refused at plan time.
    #[test]
    fn totals_carry_the_luminosity_files_unit() {
        use crate::dqm::brilcalc;
        use crate::dqm::tables::luminosity_batch;
        use crate::in_memory::{input_from_batch, run_in_memory};
        use crate::lumi::tables::scores_batch;
        use arrow::array::AsArray;
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<LsScore> = (1..=4)
            .map(|ls| LsScore {
                key: decision(9, ls, ls == 3, false, 0.5).key,
                me: "met".into(),
                method: "ae".into(),
                raw_score: Some(ls as f64),
                score: Some(ls as f64),
                threshold: 2.5,
                over: ls >= 3,
            })
            .collect();
        let scores = input_from_batch(
            "scores",
            &scores_batch(&rows).unwrap(),
            &dir.path().join("s.parquet"),
        )
        .unwrap();
        let file = brilcalc::parse(
            "#run:fill,ls,time,beamstatus,E(GeV),delivered(/ub),recorded(/ub),avgpu,source\n\
             9:100,1:1,01/01/26 00:00:00,STABLE BEAMS,6800,500,500,30,HFOC\n",
        )
        .unwrap();
        let lumi = input_from_batch(
            "lumi",
            &luminosity_batch(&file).unwrap(),
            &dir.path().join("l.parquet"),
        )
        .unwrap();
        let unit = |inputs: &[Input]| {
            let out = run_in_memory(&Certify::default(), inputs).unwrap();
            let totals = out.table("totals");
            let units = totals
                .column_by_name("lumi_unit")
                .unwrap()
                .as_string::<i32>();
            let kept = totals
                .column_by_name("lumi_bad_kept")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0);
            (units.value(0).to_string(), kept)
        };
        assert_eq!(
            unit(&[scores.clone(), lumi.clone()]),
            ("/ub".to_string(), 0.0)
        );
        assert_eq!(unit(std::slice::from_ref(&scores)).0, "/pb");
        // The bounds, on the same LS: flag nothing lets all bad luminosity
        // through and recovers all that is thrown; flag everything neither.
        let out = run_in_memory(&Certify::default(), std::slice::from_ref(&scores)).unwrap();
        let totals = out.table("totals");
        let col = |n: &str| totals.column_by_name(n).unwrap().clone();
        let methods: Vec<String> = (0..totals.num_rows())
            .map(|i| col("method").as_string::<i32>().value(i).to_string())
            .collect();
        assert_eq!(methods, ["ae", "flag_everything", "flag_nothing"]);
        let f = |n: &str, i: usize| {
            col(n)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(i)
        };
        assert_eq!(f("bad_let_through", 0), 0.0, "ae rejects LS 3 and 4");
        assert_eq!(
            (f("bad_let_through", 1), f("recovered_fraction", 1)),
            (0.0, 0.0)
        );
        assert_eq!(
            (f("bad_let_through", 2), f("recovered_fraction", 2)),
            (1.0, 1.0)
        );
        let mut renamed = rows.clone();
        renamed[0].method = "flag_nothing".into();
        let clash = input_from_batch(
            "scores",
            &scores_batch(&renamed).unwrap(),
            &dir.path().join("c.parquet"),
        )
        .unwrap();
        let err = run_in_memory(&Certify::default(), &[clash])
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserved"), "{err}");
        let schemas = [lumi.schema.clone(), scores.schema.clone()];
        assert!(Certify::default().outputs(&schemas).is_err());
    }
}
