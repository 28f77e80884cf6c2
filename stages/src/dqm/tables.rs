//! The formats of the DQM family: the long histograms table every reader
//! of real DQM data writes (`dqm_root` from ROOT files, `dqm_dataframe`
//! from per-LS DataFrames), one row per (run, LS, ME), so no family stage
//! needs to know where a histogram came from; LS lists (CMS JSON files,
//! certificates) and per-LS luminosity.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, SchemaRef};
use dqm_schemas::{column, f64_list, nullable, schema_of};

use std::collections::BTreeMap;

use crate::arrow_util::f64_lists;
use crate::dqm::brilcalc::{LumiFile, LumiRow};
use crate::dqm::histogram::{Axis, Histogram};
use crate::dqm::ls_ranges::LsRanges;
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};

/// One histogram of one run (and LS) with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramRow {
    /// The file (or table) it was read from.
    pub file: String,
    pub run: i64,
    /// The lumisection, for per-LS MEs; `None` for a run's histogram.
    pub ls: Option<i64>,
    /// The monitoring element's DQM path (`Hcal/DigiTask/Occupancy/depth1`).
    pub me: String,
    pub histogram: Histogram,
}

const AXES: [&str; 3] = ["x", "y", "z"];

/// `dqm_root`'s and `dqm_dataframe`'s output: one row per (run, LS, ME).
pub fn histograms_schema() -> SchemaRef {
    let mut fields = vec![
        column(
            "file",
            DataType::Utf8,
            "File (or table) the histogram was read from",
        ),
        column("run", DataType::Int64, "Run number"),
        nullable(
            "ls",
            DataType::Int64,
            "Lumisection, for per-LS MEs (null: the run's histogram)",
        ),
        column(
            "me",
            DataType::Utf8,
            "Monitoring element: its DQM path without `DQMData/Run <n>/` and `Run summary/` (`Hcal/DigiTask/Occupancy/depth1`)",
        ),
        column(
            "class",
            DataType::Utf8,
            "ROOT class (TH1F, TH2D, TH3F, TProfile, ...)",
        ),
        column("dim", DataType::Int32, "Dimension: 1, 2 or 3"),
    ];
    for (k, axis) in AXES.iter().enumerate() {
        let field = |name: &str, t: DataType, doc: String| {
            if k == 0 {
                column(&format!("{axis}_{name}"), t, &doc)
            } else {
                nullable(
                    &format!("{axis}_{name}"),
                    t,
                    &format!("{doc} (null below {} dimensions)", k + 1),
                )
            }
        };
        fields.push(field(
            "bins",
            DataType::Int32,
            format!("Bins along {axis}, under/overflow not counted"),
        ));
        fields.push(field(
            "low",
            DataType::Float64,
            format!("Low edge of the first {axis} bin"),
        ));
        fields.push(field(
            "high",
            DataType::Float64,
            format!("High edge of the last {axis} bin"),
        ));
        fields.push(nullable(
            &format!("{axis}_edges"),
            f64_list(),
            &format!("The {axis} bin edges (bins + 1) when not uniform; null for uniform bins"),
        ));
    }
    fields.extend([
        column(
            "contents",
            f64_list(),
            "Every bin with under- and overflow, x fastest (ROOT's order): ∏(bins + 2) values; a TProfile's Σ w·y per bin",
        ),
        column("entries", DataType::Float64, "Values filled (fEntries)"),
        column(
            "sum_w",
            DataType::Float64,
            "Sum of weights inside the axes' ranges (fTsumw)",
        ),
        column(
            "sumw2",
            f64_list(),
            "Per-bin Σ w² (a TProfile's Σ w·y²) in the order of `contents`; empty when not stored",
        ),
        nullable(
            "bin_entries",
            f64_list(),
            "TProfile: per-bin Σ w (fBinEntries); null for other classes",
        ),
    ]);
    schema_of(fields)
}

/// `rows` as a batch of [`histograms_schema`].
pub fn histograms_batch(rows: &[HistogramRow]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.file.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.run))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.ls))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.me.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.histogram.class.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.histogram.dimension() as i32),
        )),
    ];
    for k in 0..AXES.len() {
        let axis = |r: &HistogramRow| r.histogram.axes.get(k).cloned();
        let axes: Vec<Option<Axis>> = rows.iter().map(axis).collect();
        columns.push(Arc::new(Int32Array::from_iter(
            axes.iter().map(|a| a.as_ref().map(|a| a.bins as i32)),
        )));
        columns.push(Arc::new(Float64Array::from_iter(
            axes.iter().map(|a| a.as_ref().map(|a| a.low)),
        )));
        columns.push(Arc::new(Float64Array::from_iter(
            axes.iter().map(|a| a.as_ref().map(|a| a.high)),
        )));
        columns.push(Arc::new(optional_lists(
            axes.iter()
                .map(|a| a.as_ref().and_then(|a| a.edges.as_deref())),
        )));
    }
    columns.extend([
        Arc::new(f64_lists(
            rows.iter().map(|r| r.histogram.contents.as_slice()),
        )) as ArrayRef,
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.histogram.entries),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.histogram.sum_w),
        )),
        Arc::new(f64_lists(rows.iter().map(|r| r.histogram.sumw2.as_slice()))),
        Arc::new(optional_lists(
            rows.iter().map(|r| r.histogram.bin_entries.as_deref()),
        )),
    ]);
    Ok(RecordBatch::try_new(histograms_schema(), columns)?)
}

/// A list column of f64 with nulls where `None`.
fn optional_lists<'a>(values: impl Iterator<Item = Option<&'a [f64]>>) -> ListArray {
    let mut builder =
        arrow::array::ListBuilder::new(arrow::array::Float64Builder::new()).with_field(Arc::new(
            arrow::datatypes::Field::new("item", DataType::Float64, false),
        ));
    for v in values {
        match v {
            Some(v) => {
                builder.values().append_slice(v);
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    builder.finish()
}

/// Checks at plan time that `schema` is a histograms table; `why` says who
/// reads it.
pub fn require_histograms(schema: &SchemaRef, input: &str, why: &str) -> Result<()> {
    for field in histograms_schema().fields() {
        let t = field.data_type().clone();
        require_column(schema, input, field.name(), why, &t.to_string(), |f| {
            f == &t
        })?;
    }
    Ok(())
}

/// The rows of a histograms-table batch.
pub fn read_histograms(batch: &RecordBatch, input: &str) -> Result<Vec<HistogramRow>> {
    let col = |name: &str| -> Result<&ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| {
            StageError::missing_column(input, name, "a histograms table (`dqm_root`)")
        })
    };
    let strings = |name: &str| -> Result<&StringArray> { Ok(col(name)?.as_string::<i32>()) };
    let (file, me, class) = (strings("file")?, strings("me")?, strings("class")?);
    let run = col("run")?.as_primitive::<Int64Type>();
    let ls = col("ls")?.as_primitive::<Int64Type>();
    let dim = col("dim")?.as_primitive::<Int32Type>();
    let list = |name: &str| -> Result<&ListArray> { Ok(col(name)?.as_list::<i32>()) };
    let values = |l: &ListArray, i: usize| -> Vec<f64> {
        l.value(i).as_primitive::<Float64Type>().values().to_vec()
    };
    let mut axis_columns = Vec::new();
    for axis in AXES {
        axis_columns.push((
            col(&format!("{axis}_bins"))?.as_primitive::<Int32Type>(),
            col(&format!("{axis}_low"))?.as_primitive::<Float64Type>(),
            col(&format!("{axis}_high"))?.as_primitive::<Float64Type>(),
            list(&format!("{axis}_edges"))?,
        ));
    }
    let (contents, sumw2, bin_entries) = (list("contents")?, list("sumw2")?, list("bin_entries")?);
    let entries = col("entries")?.as_primitive::<Float64Type>();
    let sum_w = col("sum_w")?.as_primitive::<Float64Type>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let d = dim.value(i);
        if !(1..=3).contains(&d) {
            return Err(StageError::data(format!(
                "input `{input}`, ME `{}` run {}: dimension {d}",
                me.value(i),
                run.value(i)
            )));
        }
        let axes = axis_columns[..d as usize]
            .iter()
            .map(|(bins, low, high, edges)| Axis {
                bins: bins.value(i).max(0) as usize,
                low: low.value(i),
                high: high.value(i),
                edges: (!edges.is_null(i)).then(|| values(edges, i)),
            })
            .collect();
        rows.push(HistogramRow {
            file: file.value(i).to_string(),
            run: run.value(i),
            ls: (!ls.is_null(i)).then(|| ls.value(i)),
            me: me.value(i).to_string(),
            histogram: Histogram {
                class: class.value(i).to_string(),
                axes,
                contents: values(contents, i),
                entries: entries.value(i),
                sum_w: sum_w.value(i),
                sumw2: values(sumw2, i),
                bin_entries: (!bin_entries.is_null(i)).then(|| values(bin_entries, i)),
            },
        });
    }
    Ok(rows)
}

// ---- LS lists (`cms_json`; `certify`'s `certificate` has the same columns) ----

/// A list of LS ranges per label: the `list` of a `cms_json` table or the
/// `method` of a certificate.
pub fn ls_lists_schema() -> SchemaRef {
    schema_of([
        column(
            "list",
            DataType::Utf8,
            "Name of the list (`golden`, `dcs`, or a certificate's method)",
        ),
        column("run", DataType::Int64, "Run"),
        column("first_ls", DataType::Int64, "First LS of the range"),
        column(
            "last_ls",
            DataType::Int64,
            "Last LS of the range (inclusive)",
        ),
    ])
}

/// `ranges` as rows of [`ls_lists_schema`] labelled `list`.
pub fn ls_lists_batch(list: &str, ranges: &LsRanges) -> Result<RecordBatch> {
    let rows: Vec<(i64, i64, i64)> = ranges.ranges().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![list; rows.len()])),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    Ok(RecordBatch::try_new(ls_lists_schema(), columns)?)
}

/// Checks that `schema` holds LS lists: `run`, `first_ls`, `last_ls` and a
/// label column (`list`, or a certificate's `method`); returns the label's name.
pub fn require_ls_lists(schema: &SchemaRef, input: &str, why: &str) -> Result<&'static str> {
    for c in ["run", "first_ls", "last_ls"] {
        require_column(
            schema,
            input,
            c,
            why,
            "an integer",
            crate::arrow_util::is_integer,
        )?;
    }
    let label = ["list", "method"]
        .into_iter()
        .find(|c| schema.index_of(c).is_ok())
        .ok_or_else(|| StageError::missing_column(input, "list (or method)", why))?;
    require_column(schema, input, label, why, "Utf8", |t| t == &DataType::Utf8)?;
    Ok(label)
}

/// The lists of an LS-list table, by label.
pub fn read_ls_lists(input: &Input, why: &str) -> Result<BTreeMap<String, LsRanges>> {
    let label = require_ls_lists(&input.schema, &input.name, why)?;
    let mut out: BTreeMap<String, LsRanges> = BTreeMap::new();
    for batch in input.batches() {
        let batch = batch?;
        let int = |c: &str| crate::arrow_util::column_as(&batch, c, &DataType::Int64, &input.name);
        let (run, first, last) = (int("run")?, int("first_ls")?, int("last_ls")?);
        let (run, first, last) = (
            run.as_primitive::<Int64Type>(),
            first.as_primitive::<Int64Type>(),
            last.as_primitive::<Int64Type>(),
        );
        let names = batch
            .column_by_name(label)
            .expect("checked")
            .as_string::<i32>();
        for i in 0..batch.num_rows() {
            let (a, b) = (first.value(i), last.value(i));
            if run.is_null(i) || first.is_null(i) || last.is_null(i) || !(1 <= a && a <= b) {
                return Err(StageError::data(format!(
                    "input `{}`, row {}: run {} [{a}, {b}] is not a range of LS ≥ 1",
                    input.name,
                    i + 1,
                    run.value(i)
                )));
            }
            out.entry(names.value(i).to_string())
                .or_default()
                .insert(run.value(i), a, b);
        }
    }
    Ok(out)
}

// ---- Per-LS luminosity (`brilcalc_lumi`) ----

/// One row per LS of the luminosity tool's CSV.
pub fn luminosity_schema() -> SchemaRef {
    schema_of([
        column("run", DataType::Int64, "Run"),
        column("fill", DataType::Int64, "LHC fill"),
        column("ls", DataType::Int64, "Lumisection"),
        column("time", DataType::Utf8, "Time stamp as the file gives it"),
        column(
            "beam_status",
            DataType::Utf8,
            "Beam status (`STABLE BEAMS`, ...)",
        ),
        column(
            "energy",
            DataType::Float64,
            "Beam energy (GeV); NaN when the file has none",
        ),
        column(
            "delivered",
            DataType::Float64,
            "Delivered luminosity, in `unit`",
        ),
        column(
            "recorded",
            DataType::Float64,
            "Recorded luminosity, in `unit`",
        ),
        column(
            "avgpu",
            DataType::Float64,
            "Average pile-up; NaN when the file has none",
        ),
        column("source", DataType::Utf8, "Luminometer"),
        column(
            "unit",
            DataType::Utf8,
            "Luminosity unit of the file's header (`/ub`, `/pb`)",
        ),
    ])
}

/// A brilcalc file's rows as a batch of [`luminosity_schema`].
pub fn luminosity_batch(file: &LumiFile) -> Result<RecordBatch> {
    let r = &file.rows;
    let strings = |f: fn(&LumiRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(r.iter().map(f)))
    };
    let ints = |f: fn(&LumiRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(r.iter().map(f)))
    };
    let floats = |f: fn(&LumiRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(r.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        ints(|l| l.run),
        ints(|l| l.fill),
        ints(|l| l.ls),
        strings(|l| l.time.as_str()),
        strings(|l| l.beam_status.as_str()),
        floats(|l| l.energy),
        floats(|l| l.delivered),
        floats(|l| l.recorded),
        floats(|l| l.avgpu),
        strings(|l| l.source.as_str()),
        Arc::new(StringArray::from(vec![file.unit.as_str(); r.len()])),
    ];
    Ok(RecordBatch::try_new(luminosity_schema(), columns)?)
}

/// Per-LS luminosity by (run, LS): (recorded, average pile-up), and the unit.
pub struct Luminosity {
    pub unit: String,
    pub by_ls: std::collections::HashMap<(i64, i64), (f64, f64)>,
}

/// Checks that `schema` is a luminosity table ([`luminosity_schema`]).
pub fn require_luminosity(schema: &SchemaRef, input: &str) -> Result<()> {
    let why = "per-LS luminosity (`brilcalc_lumi`)";
    for f in luminosity_schema().fields() {
        let t = f.data_type().clone();
        require_column(schema, input, f.name(), why, &t.to_string(), |x| x == &t)?;
    }
    Ok(())
}

/// Reads a luminosity table ([`luminosity_schema`]).
pub fn read_luminosity(input: &Input) -> Result<Luminosity> {
    require_luminosity(&input.schema, &input.name)?;
    let mut out = Luminosity {
        unit: String::new(),
        by_ls: Default::default(),
    };
    for batch in input.batches() {
        let batch = batch?;
        let col = |c: &str| batch.column_by_name(c).expect("checked").clone();
        let (run, ls) = (col("run"), col("ls"));
        let (run, ls) = (
            run.as_primitive::<Int64Type>(),
            ls.as_primitive::<Int64Type>(),
        );
        let (rec, pu) = (col("recorded"), col("avgpu"));
        let (rec, pu) = (
            rec.as_primitive::<Float64Type>(),
            pu.as_primitive::<Float64Type>(),
        );
        let unit = col("unit");
        let unit = unit.as_string::<i32>();
        for i in 0..batch.num_rows() {
            if out.unit.is_empty() {
                out.unit = unit.value(i).to_string();
            } else if out.unit != unit.value(i) {
                return Err(StageError::data(format!(
                    "input `{}`: luminosity in `{}` and `{}`: give files of one unit",
                    input.name,
                    out.unit,
                    unit.value(i)
                )));
            }
            if out
                .by_ls
                .insert((run.value(i), ls.value(i)), (rec.value(i), pu.value(i)))
                .is_some()
            {
                return Err(StageError::data(format!(
                    "input `{}`: run {} LS {} appears twice",
                    input.name,
                    run.value(i),
                    ls.value(i)
                )));
            }
        }
    }
    Ok(out)
}

/// What a reader checks across the rows it writes: every ME keeps one
/// binning, and each (run, LS, ME) appears once (the families index
/// histograms by them).
#[derive(Debug, Default)]
pub struct Consistency {
    binnings: std::collections::HashMap<String, Vec<Axis>>,
    seen: std::collections::HashSet<(i64, Option<i64>, String)>,
}

impl Consistency {
    /// Records `row`; an error (a sentence) when it breaks either rule.
    pub fn check(&mut self, row: &HistogramRow) -> std::result::Result<(), String> {
        let axes = &row.histogram.axes;
        match self.binnings.get(&row.me) {
            Some(first) if first != axes => {
                return Err(format!(
                    "binning {} differs from {} of the same ME in an earlier row (an ME keeps one binning)",
                    describe(axes),
                    describe(first)
                ));
            }
            Some(_) => {}
            None => {
                self.binnings.insert(row.me.clone(), axes.clone());
            }
        }
        if !self.seen.insert((row.run, row.ls, row.me.clone())) {
            return Err(format!(
                "run {}{} holds this ME twice",
                row.run,
                row.ls.map_or(String::new(), |ls| format!(" LS {ls}"))
            ));
        }
        Ok(())
    }
}

/// `[10 in (0, 5); 3 in (-1, 1)]`.
fn describe(axes: &[Axis]) -> String {
    let parts: Vec<String> = axes
        .iter()
        .map(|a| match &a.edges {
            None => format!("{} in ({}, {})", a.bins, a.low, a.high),
            Some(e) => format!("{} with edges {e:?}", a.bins),
        })
        .collect();
    format!("[{}]", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_the_table_both_ways() {
        let h = |class: &str, axes: Vec<Axis>, profile: bool| {
            let n: usize = axes.iter().map(|a| a.bins + 2).product();
            Histogram {
                class: class.into(),
                axes,
                contents: (0..n).map(|v| v as f64 * 0.5).collect(),
                entries: 42.0,
                sum_w: 40.0,
                sumw2: if profile { vec![1.0; n] } else { Vec::new() },
                bin_entries: profile.then(|| vec![2.0; n]),
            }
        };
        let uniform = |bins| Axis {
            bins,
            low: -1.0,
            high: 1.0,
            edges: None,
        };
        let rows = vec![
            HistogramRow {
                file: "a.root".into(),
                run: 1,
                ls: None,
                me: "A/h1".into(),
                histogram: h("TH1F", vec![uniform(3)], false),
            },
            HistogramRow {
                file: "a.root".into(),
                run: 1,
                ls: Some(7),
                me: "A/map".into(),
                histogram: h(
                    "TH2D",
                    vec![
                        uniform(2),
                        Axis {
                            bins: 2,
                            low: 0.0,
                            high: 3.0,
                            edges: Some(vec![0.0, 1.0, 3.0]),
                        },
                    ],
                    false,
                ),
            },
            HistogramRow {
                file: "b.root".into(),
                run: 2,
                ls: None,
                me: "B/p".into(),
                histogram: h("TProfile", vec![uniform(4)], true),
            },
        ];
        let batch = histograms_batch(&rows).unwrap();
        require_histograms(&batch.schema(), "h", "test").unwrap();
        assert_eq!(read_histograms(&batch, "h").unwrap(), rows);
        assert!(batch.column_by_name("z_bins").unwrap().is_null(0));
    }

    #[test]
    fn one_binning_per_me_and_each_run_ls_me_once() {
        let row = |run, ls, bins| HistogramRow {
            file: "f".into(),
            run,
            ls,
            me: "A/h".into(),
            histogram: Histogram {
                class: "TH1F".into(),
                axes: vec![Axis {
                    bins,
                    low: 0.0,
                    high: 1.0,
                    edges: None,
                }],
                contents: vec![0.0; bins + 2],
                entries: 0.0,
                sum_w: 0.0,
                sumw2: Vec::new(),
                bin_entries: None,
            },
        };
        let mut c = Consistency::default();
        c.check(&row(1, Some(1), 4)).unwrap();
        c.check(&row(1, Some(2), 4)).unwrap();
        c.check(&row(2, None, 4)).unwrap();
        let twice = c.check(&row(1, Some(2), 4)).unwrap_err();
        assert!(twice.contains("run 1 LS 2 holds this ME twice"), "{twice}");
        let binning = c.check(&row(3, Some(1), 5)).unwrap_err();
        assert!(
            binning.contains("[5 in (0, 1)] differs from [4 in (0, 1)]"),
            "{binning}"
        );
    }
}
