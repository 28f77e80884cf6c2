//! `dqm_dataframe`: per-LS monitoring elements exported as DataFrames (CSV
//! or Parquet, one row per run, LS and ME) into the long histograms table
//! (`dqm::tables`), the same table `dqm_root` writes.
//!
//! The column names default to CMS's per-LS ML exports (`fromrun`,
//! `fromlumi`, `hname`, `metype`, `histo`, `entries`, `Xmin`, `Xmax`,
//! `Xbins`, `Ymin`, `Ymax`, `Ybins`; `histo` holds every bin with under- and
//! overflow, as a list or as a bracketed string of numbers) and are
//! parameters, so any such table reads. `metype` is DQMIO's ME type (3
//! TH1F, 4 TH1S, 5 TH1D, 6 TH2F, 7 TH2S, 8 TH2D, 12 TH1I, 13 TH2I) or a
//! class name. Every ME keeps one binning across rows, and a (run, LS, ME)
//! appears once: either is an error naming the file, row and ME.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::cast_column;
use crate::dqm::histogram::{Axis, Histogram};
use crate::dqm::me_patterns::MePatterns;
use crate::dqm::tables::{Consistency, HistogramRow, histograms_batch, histograms_schema};
use crate::error::{Result, StageError, bad_param, within};
use crate::files::{fingerprint, resolve_glob};
use crate::input::{Input, parquet_schema};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Which column holds what (names as in the files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    /// Run number.
    pub run: String,
    /// Lumisection; `null`: the rows are run histograms.
    pub ls: Option<String>,
    /// ME name.
    pub me: String,
    /// ME type: DQMIO's code or a class name (`TH1F`); `null`: 1-D unless
    /// the y bins say 2-D, stored as TH1D/TH2D.
    pub kind: Option<String>,
    /// Bin contents with under- and overflow, x fastest: a list of numbers
    /// or a string such as `[0, 3, 5.5, 0]`.
    pub contents: String,
    /// Values filled; `null`: the sum of the contents.
    pub entries: Option<String>,
    /// Bins along x (under/overflow not counted), and the range.
    pub x_bins: String,
    pub x_low: String,
    pub x_high: String,
    /// The same along y, for 2-D MEs; `null`: every ME is 1-D.
    pub y_bins: Option<String>,
    pub y_low: Option<String>,
    pub y_high: Option<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            run: "fromrun".into(),
            ls: Some("fromlumi".into()),
            me: "hname".into(),
            kind: Some("metype".into()),
            contents: "histo".into(),
            entries: Some("entries".into()),
            x_bins: "Xbins".into(),
            x_low: "Xmin".into(),
            x_high: "Xmax".into(),
            y_bins: Some("Ybins".into()),
            y_low: Some("Ymin".into()),
            y_high: Some("Ymax".into()),
        }
    }
}

impl Columns {
    fn validate(&self) -> Result<()> {
        let y = [&self.y_bins, &self.y_low, &self.y_high];
        if y.iter().any(|c| c.is_some()) && y.iter().any(|c| c.is_none()) {
            return bad_param("y_bins", "name y_bins, y_low and y_high together, or none");
        }
        Ok(())
    }

    /// (name, why) of every column read.
    fn used(&self) -> Vec<(&str, &'static str)> {
        let mut out = vec![
            (self.run.as_str(), "the run number"),
            (self.me.as_str(), "the ME name"),
            (self.contents.as_str(), "the bin contents"),
            (self.x_bins.as_str(), "the x bins"),
            (self.x_low.as_str(), "the x range"),
            (self.x_high.as_str(), "the x range"),
        ];
        for (c, why) in [
            (&self.ls, "the lumisection"),
            (&self.kind, "the ME type"),
            (&self.entries, "the entries"),
            (&self.y_bins, "the y bins"),
            (&self.y_low, "the y range"),
            (&self.y_high, "the y range"),
        ] {
            if let Some(c) = c {
                out.push((c.as_str(), why));
            }
        }
        out
    }
}

/// The file format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// By extension: `.parquet` or `.csv`.
    #[default]
    Auto,
    Csv,
    Parquet,
}

/// Reads per-LS ME tables into the histograms table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DqmDataframe {
    /// File or glob pattern, relative to the directory `pipeline` runs in;
    /// read in sorted order.
    pub files: String,
    /// CSV or Parquet (`auto`: by extension).
    pub format: Format,
    /// The CSV field separator (one character; CMS exports use `,`, some `;`).
    pub delimiter: String,
    /// The column mapping.
    pub columns: Columns,
    /// ME name patterns (`*` within a folder, `**` across folders); an ME
    /// is read when any matches.
    pub mes: Vec<String>,
}

impl Default for DqmDataframe {
    fn default() -> Self {
        Self {
            files: String::new(),
            format: Format::Auto,
            delimiter: ",".into(),
            columns: Columns::default(),
            mes: vec!["**".into()],
        }
    }
}

impl StageConfig for DqmDataframe {
    const KIND: &'static str = "dqm_dataframe";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Per-LS ME tables (CSV or Parquet; CMS per-LS export columns by default, any mapping in YAML) into one row per (run, LS, ME), 1-D and 2-D, checked for one binning per ME and unique (run, LS, ME)";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        if self.files.trim().is_empty() {
            return bad_param("files", "name the tables (a path or a glob)");
        }
        if self.delimiter.len() != 1 {
            return bad_param("delimiter", "give one ASCII character");
        }
        MePatterns::new(&self.mes).map_err(|e| StageError::param("mes", e))?;
        within("columns", self.columns.validate())
    }
}

/// DQMIO's ME type codes (the index of its tree per type) as classes.
pub fn class_of_code(code: i64) -> Option<&'static str> {
    Some(match code {
        3 => "TH1F",
        4 => "TH1S",
        5 => "TH1D",
        6 => "TH2F",
        7 => "TH2S",
        8 => "TH2D",
        12 => "TH1I",
        13 => "TH2I",
        _ => return None,
    })
}

/// The numbers of a contents string: `[1, 2.5, 3]`, `1 2.5 3` or `1;2`.
pub fn parse_numbers(text: &str) -> std::result::Result<Vec<f64>, String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("`{t}` is not a finite number"))
        })
        .collect()
}

impl DqmDataframe {
    fn files(&self) -> Result<Vec<PathBuf>> {
        resolve_glob(&self.files, "files")
    }

    fn is_parquet(&self, path: &Path) -> bool {
        match self.format {
            Format::Parquet => true,
            Format::Csv => false,
            Format::Auto => path.extension().is_some_and(|e| e == "parquet"),
        }
    }

    /// The record batches of one file.
    fn batches(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        if self.is_parquet(path) {
            let input = Input::from_files(path.display().to_string(), vec![path.to_path_buf()])?;
            return input.read_all();
        }
        let at = |e: arrow::error::ArrowError| StageError::data(format!("{}: {e}", path.display()));
        let delimiter = self.delimiter.as_bytes()[0];
        let open = || std::fs::File::open(path).map_err(|e| StageError::io(path, e));
        let format = arrow::csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(delimiter);
        let (schema, _) = format.infer_schema(open()?, Some(1000)).map_err(at)?;
        let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
            .with_format(format)
            .with_batch_size(1024)
            .build(open()?)
            .map_err(at)?;
        reader.map(|b| b.map_err(at)).collect()
    }

    /// The histograms of one batch; `first_row` numbers its rows in the file.
    fn rows(
        &self,
        batch: &RecordBatch,
        path: &Path,
        first_row: usize,
        patterns: &MePatterns,
        consistency: &mut Consistency,
    ) -> Result<Vec<HistogramRow>> {
        let file = path.display().to_string();
        let mapped = Mapped::new(&self.columns, batch, &file)?;
        let mut out = Vec::new();
        for i in 0..batch.num_rows() {
            let me = mapped.me(i);
            if !patterns.matches(me) {
                continue;
            }
            let row = first_row + i + 1;
            let at = |why: String| StageError::data(format!("{file}, row {row}, ME `{me}`: {why}"));
            let histogram = mapped.histogram(i).map_err(at)?;
            let row = HistogramRow {
                file: file.clone(),
                run: mapped.int(&mapped.run, i, "run").map_err(at)?,
                ls: mapped
                    .ls
                    .as_ref()
                    .map(|l| mapped.int(l, i, "lumisection"))
                    .transpose()
                    .map_err(at)?,
                me: me.to_string(),
                histogram,
            };
            consistency.check(&row).map_err(at)?;
            out.push(row);
        }
        Ok(out)
    }
}

/// An axis's columns: bins, low and high edges.
type AxisColumns = (ArrayRef, ArrayRef, ArrayRef);

/// The mapped columns of one batch, cast to the types they are read as.
struct Mapped {
    run: ArrayRef,
    ls: Option<ArrayRef>,
    me: ArrayRef,
    /// The ME type: codes (Int64) or class names (Utf8).
    kind: Option<ArrayRef>,
    entries: Option<ArrayRef>,
    x: AxisColumns,
    y: Option<AxisColumns>,
    /// Strings of numbers (Utf8) or lists of them (`List<Float64>`).
    contents: ArrayRef,
    contents_name: String,
}

impl Mapped {
    fn new(c: &Columns, batch: &RecordBatch, file: &str) -> Result<Self> {
        for (name, why) in c.used() {
            if batch.column_by_name(name).is_none() {
                return Err(StageError::missing_column(file, name, why));
            }
        }
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            cast_column(batch.column_by_name(name).expect("checked"), to, file, name)
        };
        let ints = |name: &str| column(name, &DataType::Int64);
        let floats = |name: &str| column(name, &DataType::Float64);
        let kind = match c.kind.as_deref() {
            None => None,
            Some(k) => Some(
                match batch.column_by_name(k).expect("checked").data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => column(k, &DataType::Utf8)?,
                    _ => ints(k)?,
                },
            ),
        };
        let raw = batch.column_by_name(&c.contents).expect("checked");
        let contents = match raw.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => column(&c.contents, &DataType::Utf8)?,
            DataType::List(_) | DataType::LargeList(_) => {
                column(&c.contents, &dqm_schemas::f64_list())?
            }
            other => {
                return Err(StageError::wrong_type(
                    file,
                    &c.contents,
                    other,
                    "a list of numbers or a string of them",
                ));
            }
        };
        Ok(Self {
            run: ints(&c.run)?,
            ls: c.ls.as_deref().map(ints).transpose()?,
            me: column(&c.me, &DataType::Utf8)?,
            kind,
            entries: c.entries.as_deref().map(floats).transpose()?,
            x: (ints(&c.x_bins)?, floats(&c.x_low)?, floats(&c.x_high)?),
            y: match (&c.y_bins, &c.y_low, &c.y_high) {
                (Some(b), Some(l), Some(h)) => Some((ints(b)?, floats(l)?, floats(h)?)),
                _ => None,
            },
            contents,
            contents_name: c.contents.clone(),
        })
    }

    fn me(&self, i: usize) -> &str {
        let me = self.me.as_string::<i32>();
        if me.is_null(i) { "" } else { me.value(i) }
    }

    fn int(&self, a: &ArrayRef, i: usize, what: &str) -> std::result::Result<i64, String> {
        let a = a.as_primitive::<Int64Type>();
        if a.is_null(i) {
            return Err(format!("no {what}"));
        }
        Ok(a.value(i))
    }

    fn float(&self, a: &ArrayRef, i: usize, what: &str) -> std::result::Result<f64, String> {
        let a = a.as_primitive::<Float64Type>();
        if a.is_null(i) || !a.value(i).is_finite() {
            return Err(format!("no finite {what}"));
        }
        Ok(a.value(i))
    }

    fn axis(
        &self,
        (bins, low, high): &AxisColumns,
        i: usize,
        which: &str,
    ) -> std::result::Result<Axis, String> {
        let n = self.int(bins, i, &format!("{which} bins"))?;
        let bins = usize::try_from(n)
            .ok()
            .filter(|&b| b >= 1)
            .ok_or_else(|| format!("{n} {which} bins"))?;
        Ok(Axis {
            bins,
            low: self.float(low, i, &format!("{which} low edge"))?,
            high: self.float(high, i, &format!("{which} high edge"))?,
            edges: None,
        })
    }

    /// Every bin of row `i`, under/overflow included.
    fn values(&self, i: usize) -> std::result::Result<Vec<f64>, String> {
        if self.contents.is_null(i) {
            return Err("no bin contents".into());
        }
        match self.contents.data_type() {
            DataType::Utf8 => parse_numbers(self.contents.as_string::<i32>().value(i))
                .map_err(|e| format!("column `{}`: {e}", self.contents_name)),
            _ => Ok(self
                .contents
                .as_list::<i32>()
                .value(i)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()),
        }
    }

    /// The class of row `i`: from its type code or name, else 1-D or 2-D by
    /// its y bins.
    fn class(&self, i: usize) -> std::result::Result<String, String> {
        let class = match &self.kind {
            Some(k) if k.data_type() == &DataType::Utf8 => {
                let k = k.as_string::<i32>();
                (!k.is_null(i)).then(|| k.value(i).trim().to_string())
            }
            Some(k) => {
                let code = self.int(k, i, "ME type")?;
                let class = class_of_code(code).ok_or_else(|| {
                    format!("ME type {code} is not a 1-D or 2-D histogram (3-8, 12, 13)")
                })?;
                Some(class.to_string())
            }
            None => None,
        };
        Ok(class.unwrap_or_else(|| {
            let two_d = self.y.as_ref().is_some_and(|(b, _, _)| {
                let b = b.as_primitive::<Int64Type>();
                !b.is_null(i) && b.value(i) > 0
            });
            if two_d { "TH2D" } else { "TH1D" }.into()
        }))
    }

    /// The histogram of row `i`.
    fn histogram(&self, i: usize) -> std::result::Result<Histogram, String> {
        let class = self.class(i)?;
        let dim = match class.as_str() {
            c if c.len() == 4 && c.starts_with("TH1") => 1,
            c if c.len() == 4 && c.starts_with("TH2") => 2,
            c => {
                return Err(format!(
                    "class {c} is not a 1-D or 2-D histogram (TH1x, TH2x)"
                ));
            }
        };
        let mut axes = vec![self.axis(&self.x, i, "x")?];
        if dim == 2 {
            let y = self
                .y
                .as_ref()
                .ok_or("a 2-D ME, and no y columns are named")?;
            axes.push(self.axis(y, i, "y")?);
        }
        let values = self.values(i)?;
        let expected: usize = axes.iter().map(|a| a.bins + 2).product();
        if values.len() != expected {
            return Err(format!(
                "{} bin contents for {:?} bins; expected {expected} (under- and overflow included)",
                values.len(),
                axes.iter().map(|a| a.bins).collect::<Vec<_>>()
            ));
        }
        let entries = match &self.entries {
            Some(e) => self.float(e, i, "entries")?,
            None => values.iter().sum(),
        };
        Ok(Histogram {
            class,
            sum_w: inner_sum(&values, &axes),
            axes,
            contents: values,
            entries,
            sumw2: Vec::new(),
            bin_entries: None,
        })
    }
}

/// The sum of the bins inside every axis's range (under/overflow left out):
/// the sum of weights a table without ROOT's fTsumw stands for.
fn inner_sum(values: &[f64], axes: &[Axis]) -> f64 {
    let widths: Vec<usize> = axes.iter().map(|a| a.bins + 2).collect();
    values
        .iter()
        .enumerate()
        .filter(|(k, _)| {
            let mut k = *k;
            widths.iter().zip(axes).all(|(w, a)| {
                let i = k % w;
                k /= w;
                (1..=a.bins).contains(&i)
            })
        })
        .map(|(_, v)| v)
        .sum()
}

impl Stage for DqmDataframe {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        Ok(vec![OutputSpec {
            name: "main",
            schema: histograms_schema(),
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        Ok(Some(fingerprint(&self.files()?)?))
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let files = self.files()?;
        let progress = ctx.reporter.progress(files.len() as u64, "files");
        let mut consistency = Consistency::default();
        let patterns = MePatterns::new(&self.mes).map_err(|e| StageError::param("mes", e))?;
        let mut written = 0;
        for path in &files {
            if self.is_parquet(path) {
                // The footer first: a table that is not Parquet fails here, by name.
                parquet_schema(path)?;
            }
            let mut first_row = 0;
            let mut found = 0;
            for batch in self.batches(path)? {
                let rows = self.rows(&batch, path, first_row, &patterns, &mut consistency)?;
                first_row += batch.num_rows();
                found += rows.len();
                if !rows.is_empty() {
                    ctx.output.write("main", histograms_batch(&rows)?)?;
                }
            }
            if found == 0 {
                return Err(StageError::data(format!(
                    "{}: no ME matches `mes` {:?}",
                    path.display(),
                    self.mes
                )));
            }
            written += found;
            progress.inc(1);
        }
        ctx.reporter
            .info(&format!("{written} histograms from {} tables", files.len()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_strings_and_type_codes() {
        assert_eq!(
            parse_numbers("[0, 1.5, 2e3, -4]").unwrap(),
            [0.0, 1.5, 2000.0, -4.0]
        );
        assert_eq!(parse_numbers(" 1 2\t3 ").unwrap(), [1.0, 2.0, 3.0]);
        assert!(parse_numbers("[1, two, 3]").unwrap_err().contains("`two`"));
        assert!(parse_numbers("[1, nan]").is_err());
        assert_eq!(class_of_code(3), Some("TH1F"));
        assert_eq!(class_of_code(6), Some("TH2F"));
        assert_eq!(class_of_code(2), None, "strings are not histograms");
        // 2 x bins, 1 y bin: the inside bins of a (4 x 3) table.
        let axes = [
            Axis {
                bins: 2,
                low: 0.0,
                high: 1.0,
                edges: None,
            },
            Axis {
                bins: 1,
                low: 0.0,
                high: 1.0,
                edges: None,
            },
        ];
        let values: Vec<f64> = (0..12).map(f64::from).collect();
        // Inside: x in 1..=2, y = 1 -> cells 5 and 6.
        assert_eq!(inner_sum(&values, &axes), 11.0);
    }

    fn example(name: &str) -> String {
        format!("{}/../data/dqm/reader/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn read(stage: &DqmDataframe) -> Result<Vec<HistogramRow>> {
        let out = crate::in_memory::run_in_memory(stage, &[])?;
        crate::dqm::tables::read_histograms(&out.table("main"), "main")
    }

    fn stage(files: &str) -> DqmDataframe {
        DqmDataframe {
            files: files.into(),
            ..Default::default()
        }
    }

    /// The CMS-layout table of the example histograms reads the same from
    /// CSV (contents as strings) and Parquet (as lists), and equals what
    /// `dqm_root` reads from the ROOT files for every bin.
    #[test]
    fn csv_parquet_and_root_agree_bin_by_bin() {
        let csv = read(&stage(&example("perls.csv"))).unwrap();
        let parquet = read(&stage(&example("perls.parquet"))).unwrap();
        assert_eq!(csv.len(), parquet.len());
        assert!(csv.len() > 40, "{}", csv.len());
        for (a, b) in csv.iter().zip(&parquet) {
            assert_eq!(
                (a.run, a.ls, &a.me, &a.histogram),
                (b.run, b.ls, &b.me, &b.histogram)
            );
        }
        let root = crate::in_memory::run_in_memory(
            &crate::dqm::dqm_root::DqmRoot {
                files: example("DQM_*.root"),
                other_classes: crate::dqm::dqm_root::OtherClasses::Skip,
                ..Default::default()
            },
            &[],
        )
        .unwrap()
        .table("main");
        let root = crate::dqm::tables::read_histograms(&root, "root").unwrap();
        let mut compared = 0;
        for row in &csv {
            let r = root
                .iter()
                .find(|r| r.run == row.run && r.me == row.me)
                .unwrap_or_else(|| panic!("{} {} not in the ROOT files", row.run, row.me));
            let factor = row.ls.unwrap() as f64;
            let scaled: Vec<f64> = r.histogram.contents.iter().map(|v| v * factor).collect();
            assert_eq!(row.histogram.contents, scaled, "{} {}", row.run, row.me);
            // A table holds each axis's bins and range, not variable edges.
            let uniform: Vec<(usize, f64, f64)> = r
                .histogram
                .axes
                .iter()
                .map(|a| (a.bins, a.low, a.high))
                .collect();
            let read: Vec<(usize, f64, f64)> = row
                .histogram
                .axes
                .iter()
                .map(|a| (a.bins, a.low, a.high))
                .collect();
            assert_eq!(read, uniform, "{}", row.me);
            assert_eq!(row.histogram.class, r.histogram.class, "{}", row.me);
            compared += 1;
        }
        assert_eq!(compared, csv.len());
        assert!(csv.iter().any(|r| r.histogram.dimension() == 2));
        assert!(csv.iter().any(|r| r.ls == Some(2)));
    }

    /// Each bad table is refused naming the file, the row and the ME.
    #[test]
    fn bad_tables_are_refused_by_file_row_and_me() {
        let dir = tempfile::tempdir().unwrap();
        let header = "fromrun,fromlumi,hname,metype,histo,entries,Xmin,Xmax,Xbins,Ymin,Ymax,Ybins";
        let refuse = |name: &str, rows: &[&str]| -> String {
            let path = dir.path().join(name);
            let mut text = vec![header.to_string()];
            text.extend(rows.iter().map(|r| r.to_string()));
            std::fs::write(&path, text.join("\n") + "\n").unwrap();
            let err = read(&stage(&path.display().to_string()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            err
        };
        let good = r#"1,1,A/h,3,"[0, 1, 2, 0]",3,0,2,2,0,0,0"#;
        assert_eq!(
            read(&stage(&{
                let p = dir.path().join("good.csv");
                std::fs::write(&p, format!("{header}\n{good}\n")).unwrap();
                p.display().to_string()
            }))
            .unwrap()
            .len(),
            1
        );
        let e = refuse(
            "words.csv",
            &[r#"1,1,A/h,3,"[0, one, 2, 0]",3,0,2,2,0,0,0"#],
        );
        assert!(e.contains("row 1, ME `A/h`") && e.contains("`one`"), "{e}");
        let e = refuse("count.csv", &[r#"1,1,A/h,3,"[1, 2]",3,0,2,2,0,0,0"#]);
        assert!(
            e.contains("2 bin contents") && e.contains("under- and overflow"),
            "{e}"
        );
        let e = refuse("twice.csv", &[good, good]);
        assert!(e.contains("row 2") && e.contains("twice"), "{e}");
        let e = refuse(
            "binning.csv",
            &[good, r#"1,2,A/h,3,"[0, 1, 2, 3, 0]",3,0,2,3,0,0,0"#],
        );
        assert!(e.contains("row 2") && e.contains("differs"), "{e}");
        let e = refuse("string.csv", &[r#"1,1,A/h,2,"[0, 1, 2, 0]",3,0,2,2,0,0,0"#]);
        assert!(e.contains("ME type 2"), "{e}");
        let path = dir.path().join("nocol.csv");
        std::fs::write(&path, "fromrun,fromlumi,hname,metype\n1,1,A/h,3\n").unwrap();
        let e = read(&stage(&path.display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nocol.csv") && e.contains("no column `histo`"),
            "{e}"
        );
    }
}
