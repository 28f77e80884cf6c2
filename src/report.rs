//! `pipeline report`: one self-contained HTML page per pipeline run — the
//! DAG with each stage's state, each stage's rows, time, cache key,
//! parameters and inputs, its small tables rendered, its PNG plots embedded
//! — so a shifter looks instead of reading logs. Nothing is fetched at view
//! time: styles, images and the one small script are inline.
//!
//! The page is built from the cache alone (manifests, Parquet files,
//! artifacts): a stage not run yet is shown as missing, never an error, and
//! a report can be made while a run is under way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::cache::{Manifest, Workdir};
use crate::plan::Plan;
use crate::slurm;

/// Tables with at most this many rows are shown whole; larger ones by their
/// first [`PREVIEW_ROWS`] rows.
const SMALL_TABLE_ROWS: usize = 200;
const PREVIEW_ROWS: usize = 10;
/// Longest cell text (a list column's values are cut here).
const CELL_CHARS: usize = 60;
/// Text artifacts (JSON, CSV, …) up to this size are shown inline.
const INLINE_TEXT_BYTES: u64 = 64 << 10;
/// PNG artifacts up to this size are embedded.
const EMBED_PNG_BYTES: u64 = 8 << 20;
/// Marks a page this command wrote, so a later report may replace it but
/// never a file of the user's.
const GENERATOR: &str = r#"<meta name="generator" content="dqm-pipeline report">"#;

/// What the page says about one stage.
struct StageView<'a> {
    id: &'a str,
    kind: &'a str,
    state: String,
    detail: String,
    manifest: Option<Manifest>,
    layer: usize,
}

/// Writes `DIR/<pipeline>.html` and returns its path. A page this command
/// wrote before is replaced (atomically); any other file there is refused.
pub fn write_report(
    plan: &Plan,
    workdir: &Workdir,
    overrides: &[String],
    out_dir: &Path,
) -> Result<PathBuf> {
    let html = render(plan, workdir, overrides)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let path = out_dir.join(format!("{}.html", plan.spec.name));
    if path.exists() {
        // The marker sits in the page's head: its first 4 kB decide.
        let mut head = Vec::new();
        if let Ok(file) = File::open(&path) {
            let _ = std::io::Read::read_to_end(&mut std::io::Read::take(file, 4096), &mut head);
        }
        if !String::from_utf8_lossy(&head).contains(GENERATOR) {
            bail!(
                "{} exists and is not a page `pipeline report` wrote: not overwriting it (give another --out)",
                path.display()
            );
        }
    }
    let tmp = out_dir.join(format!(
        ".{}.html.tmp-{}",
        plan.spec.name,
        std::process::id()
    ));
    std::fs::write(&tmp, html).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The page.
pub fn render(plan: &Plan, workdir: &Workdir, overrides: &[String]) -> Result<String> {
    let layers = layers(plan);
    // `status` lists the plan's stages in order, each with its manifest.
    let views: Vec<StageView> = plan
        .stages
        .iter()
        .zip(slurm::status(plan, workdir)?)
        .map(|(stage, status)| {
            let state = match status.state.as_str() {
                "cached" => "done",
                "not submitted" => "not run",
                other => other,
            }
            .to_string();
            StageView {
                id: &stage.id,
                kind: stage.kind,
                detail: if state == "done" {
                    String::new()
                } else {
                    status.detail
                },
                state,
                manifest: status.manifest,
                layer: layers[&stage.id],
            }
        })
        .collect();

    let mut h = String::new();
    let name = &plan.spec.name;
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{GENERATOR}\n\
         <title>{} — dqm-pipeline report</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        esc(name)
    );
    let _ = writeln!(h, "<h1>Pipeline <code>{}</code></h1>", esc(name));
    provenance(&mut h, plan, workdir, overrides);
    let missing: Vec<&StageView> = views.iter().filter(|v| v.state != "done").collect();
    if missing.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"banner ok\" id=\"missing\">All {} stages are done.</p>",
            views.len()
        );
    } else {
        let list: Vec<String> = missing
            .iter()
            .map(|v| {
                format!(
                    "<a href=\"#stage-{0}\">{0}</a> ({1})",
                    esc(v.id),
                    esc(&v.state)
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<p class=\"banner missing\" id=\"missing\">{} of {} stages have no output yet: {}. \
             Run them with <code>pipeline run {}</code>.</p>",
            missing.len(),
            views.len(),
            list.join(", "),
            esc(&plan.spec.path.display().to_string())
        );
    }
    h.push_str("<h2>Pipeline graph</h2>\n");
    h.push_str(&dag_svg(plan, &views));
    overview_table(&mut h, plan, &views);
    for (stage, view) in plan.stages.iter().zip(&views) {
        stage_section(&mut h, plan, workdir, stage, view)?;
    }
    h.push_str(SCRIPT);
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

fn provenance(h: &mut String, plan: &Plan, workdir: &Workdir, overrides: &[String]) {
    let file = plan.spec.path.display().to_string();
    let sets = if overrides.is_empty() {
        "none".to_string()
    } else {
        overrides
            .iter()
            .map(|s| format!("<code>--set {}</code>", esc(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        h,
        "<table class=\"kv\">\n\
         <tr><th>pipeline file</th><td><code>{}</code></td></tr>\n\
         <tr><th>overrides</th><td>{sets}</td></tr>\n\
         <tr><th>workdir</th><td><code>{}</code></td></tr>\n\
         <tr><th>report by</th><td>dqm-pipeline {} (<code>pipeline report</code>), {}</td></tr>\n\
         <tr><th>query</th><td><code>pipeline query {} \"SELECT * FROM &lt;stage&gt; LIMIT 10\"</code></td></tr>\n\
         </table>",
        esc(&file),
        esc(&workdir.root.display().to_string()),
        env!("CARGO_PKG_VERSION"),
        utc(now_unix()),
        esc(&file),
    );
}

fn overview_table(h: &mut String, plan: &Plan, views: &[StageView]) {
    h.push_str(
        "<h2>Stages</h2>\n<table class=\"data\" id=\"overview\">\n<tr><th>stage</th><th>kind</th>\
         <th>state</th><th>rows</th><th>seconds</th><th>cache key</th><th>inputs</th></tr>\n",
    );
    for (stage, v) in plan.stages.iter().zip(views) {
        let (rows, seconds) = match &v.manifest {
            Some(m) => (
                m.outputs.first().map_or(0, |o| o.rows).to_string(),
                format!("{:.2}", m.wall_seconds),
            ),
            None => ("—".into(), "—".into()),
        };
        let inputs = input_links(stage);
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td><a href=\"#stage-{1}\">{1}</a></td><td>{2}</td><td>{3}</td>\
             <td class=\"num\">{rows}</td><td class=\"num\">{seconds}</td>\
             <td><code title=\"{4}\">{5}</code></td><td class=\"wrap\">{6}</td></tr>",
            state_class(&v.state),
            esc(v.id),
            esc(v.kind),
            esc(&v.state),
            esc(&stage.key),
            esc(&stage.key[..stage.key.len().min(12)]),
            inputs.join(", ")
        );
    }
    h.push_str("</table>\n");
}

/// Links to the upstream sections a stage reads (`stage.output`).
fn input_links(stage: &crate::plan::PlannedStage) -> Vec<String> {
    stage
        .inputs
        .iter()
        .map(|i| {
            format!(
                "<a href=\"#stage-{0}\">{0}</a>.{1}",
                esc(&i.stage),
                esc(&i.output)
            )
        })
        .collect()
}

fn stage_section(
    h: &mut String,
    plan: &Plan,
    workdir: &Workdir,
    stage: &crate::plan::PlannedStage,
    view: &StageView,
) -> Result<()> {
    let _ = writeln!(
        h,
        "<section class=\"stage {}\" id=\"stage-{}\">\n<h2>{} <span class=\"kind\">{}</span> \
         <span class=\"state\">{}</span></h2>",
        state_class(&view.state),
        esc(view.id),
        esc(view.id),
        esc(view.kind),
        esc(&view.state)
    );
    let inputs = input_links(stage);
    let consumers: Vec<String> = plan
        .stages
        .iter()
        .filter(|s| s.inputs.iter().any(|i| i.stage == stage.id))
        .map(|s| format!("<a href=\"#stage-{0}\">{0}</a>", esc(&s.id)))
        .collect();
    let _ = writeln!(
        h,
        "<table class=\"kv\">\n<tr><th>inputs</th><td>{}</td></tr>\n<tr><th>used by</th><td>{}</td></tr>\n\
         <tr><th>cache key</th><td><code>{}</code></td></tr>",
        if inputs.is_empty() {
            "none".into()
        } else {
            inputs.join(", ")
        },
        if consumers.is_empty() {
            "none".into()
        } else {
            consumers.join(", ")
        },
        esc(&stage.key)
    );
    match &view.manifest {
        Some(m) => {
            let _ = writeln!(
                h,
                "<tr><th>ran</th><td>{} in {:.2} s, dqm-pipeline {} (stage version {})</td></tr>\n\
                 <tr><th>output</th><td><code>{}</code></td></tr>\n</table>",
                utc(m.created_unix),
                m.wall_seconds,
                esc(&m.dqm_pipeline_version),
                m.version,
                esc(&workdir.entry(stage).display().to_string())
            );
        }
        None => {
            let _ = writeln!(
                h,
                "<tr><th>state</th><td>{}{}</td></tr>\n</table>\n\
                 <p class=\"banner missing\">No output yet.</p>",
                esc(&view.state),
                if view.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&view.detail))
                }
            );
        }
    }
    let _ = writeln!(
        h,
        "<details><summary>parameters</summary><pre>{}</pre></details>",
        esc(&serde_json::to_string_pretty(&stage.params).unwrap_or_default())
    );
    if let Some(m) = &view.manifest {
        let entry = workdir.entry(stage);
        for output in &m.outputs {
            table_view(h, &entry, output)?;
        }
        artifacts(h, &entry.join("artifacts"))?;
    }
    h.push_str("</section>\n");
    Ok(())
}

/// One output table: whole when small, else its first rows.
fn table_view(h: &mut String, entry: &Path, output: &crate::cache::ManifestOutput) -> Result<()> {
    let total = output.rows as usize;
    let limit = if total <= SMALL_TABLE_ROWS {
        total
    } else {
        PREVIEW_ROWS
    };
    let _ = writeln!(
        h,
        "<h3>table <code>{}</code> — {} rows{}</h3>",
        esc(&output.table),
        total,
        if limit < total {
            format!(
                ", the first {limit} shown (all: <code>pipeline query … \"SELECT * FROM {}\"</code>)",
                esc(&output.table)
            )
        } else {
            String::new()
        }
    );
    let mut batches = Vec::new();
    let mut have = 0usize;
    for file in &output.files {
        if have >= limit {
            break;
        }
        let path = entry.join(file);
        let reader =
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let rows = ParquetRecordBatchReaderBuilder::try_new(reader)
            .and_then(|b| b.with_batch_size(limit.max(1)).build())
            .with_context(|| format!("cannot read {}", path.display()))?;
        for batch in rows {
            let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
            let take = batch.num_rows().min(limit - have);
            have += take;
            batches.push(batch.slice(0, take));
            if have >= limit {
                break;
            }
        }
    }
    html_table(h, &batches, &output.table);
    Ok(())
}

fn html_table(h: &mut String, batches: &[RecordBatch], name: &str) {
    let Some(first) = batches.first() else {
        h.push_str("<p class=\"note\">(empty)</p>\n");
        return;
    };
    let _ = writeln!(
        h,
        "<div class=\"scroll\"><table class=\"data\" data-table=\"{}\">\n<tr>",
        esc(name)
    );
    for field in first.schema().fields() {
        let _ = write!(
            h,
            "<th title=\"{}\">{}</th>",
            esc(&field.data_type().to_string()),
            esc(field.name())
        );
    }
    h.push_str("</tr>");
    let options = FormatOptions::default().with_null("null");
    for batch in batches {
        let formatters: Vec<Option<ArrayFormatter>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            h.push_str("<tr>");
            for (col, formatter) in batch.columns().iter().zip(&formatters) {
                let numeric = col.data_type().is_numeric();
                let text = cell(col.as_ref(), row, formatter.as_ref());
                let _ = writeln!(
                    h,
                    "<td{}>{}</td>",
                    if numeric { " class=\"num\"" } else { "" },
                    esc(&text)
                );
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("</table></div>\n");
}

/// A cell's text: floats to 4 significant figures (the full values are one
/// `pipeline query` away), everything else as Arrow prints it, cut short.
fn cell(col: &dyn Array, row: usize, formatter: Option<&ArrayFormatter>) -> String {
    if col.is_null(row) {
        return "null".into();
    }
    let float = match col.data_type() {
        DataType::Float64 => col
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .map(|a| a.value(row)),
        DataType::Float32 => col
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .map(|a| a.value(row) as f64),
        _ => None,
    };
    if let Some(v) = float {
        return short_float(v);
    }
    // Model weights and other blobs: their size, not megabytes of hex.
    let blob = match col.data_type() {
        DataType::Binary => col
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>()
            .map(|a| a.value(row).len()),
        DataType::LargeBinary => col
            .as_any()
            .downcast_ref::<arrow::array::LargeBinaryArray>()
            .map(|a| a.value(row).len()),
        _ => None,
    };
    if let Some(n) = blob {
        return format!("<{n} bytes>");
    }
    let text = formatter.map_or_else(|| "?".into(), |f| f.value(row).to_string());
    if text.chars().count() > CELL_CHARS {
        let cut: String = text.chars().take(CELL_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// 4 significant figures; scientific notation for very large or small values.
fn short_float(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The stage's artifacts: PNGs embedded, small text files inline, the rest listed.
fn artifacts(h: &mut String, dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    if files.is_empty() {
        return Ok(());
    }
    files.sort();
    h.push_str("<h3>artifacts</h3>\n<div class=\"figures\">\n");
    let mut others = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("png") && size <= EMBED_PNG_BYTES {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let _ = writeln!(
                h,
                "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                esc(&rel),
                base64(&bytes)
            );
        } else {
            others.push((rel, size, path.clone(), ext.to_ascii_lowercase()));
        }
    }
    h.push_str("</div>\n");
    for (rel, size, path, ext) in others {
        let text_like = matches!(
            ext.as_str(),
            "json" | "txt" | "csv" | "tsv" | "log" | "yaml"
        );
        if text_like && size <= INLINE_TEXT_BYTES {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = writeln!(
                h,
                "<details><summary>{} ({size} bytes)</summary><pre>{}</pre></details>",
                esc(&rel),
                esc(&text)
            );
        } else {
            let _ = writeln!(
                h,
                "<p class=\"note\">{} ({size} bytes): <code>{}</code></p>",
                esc(&rel),
                esc(&path.display().to_string())
            );
        }
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Each stage's column in the graph: the longest path from a stage without inputs.
fn layers(plan: &Plan) -> BTreeMap<String, usize> {
    let mut layer = BTreeMap::new();
    // Plan order is a topological order: inputs come first.
    for stage in &plan.stages {
        let l = stage
            .inputs
            .iter()
            .filter_map(|i| layer.get(&i.stage))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        layer.insert(stage.id.clone(), l);
    }
    layer
}

/// The DAG as inline SVG: one column per layer, each box a link to its section.
fn dag_svg(plan: &Plan, views: &[StageView]) -> String {
    const W: usize = 180;
    const H: usize = 46;
    const GAP_X: usize = 60;
    const GAP_Y: usize = 16;
    let mut rows_in_layer: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for v in views {
        let row = rows_in_layer.entry(v.layer).or_default();
        pos.insert(v.id, (10 + v.layer * (W + GAP_X), 10 + *row * (H + GAP_Y)));
        *row += 1;
    }
    let width = 20 + (rows_in_layer.len()) * (W + GAP_X) - GAP_X;
    let height = 20 + rows_in_layer.values().max().copied().unwrap_or(1) * (H + GAP_Y) - GAP_Y;
    let mut s = format!(
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"pipeline graph\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
    );
    for stage in &plan.stages {
        let (tx, ty) = pos[stage.id.as_str()];
        for input in &stage.inputs {
            let (fx, fy) = pos[input.stage.as_str()];
            let (x1, y1, x2, y2) = (fx + W, fy + H / 2, tx, ty + H / 2);
            let mid = (x1 + x2) / 2;
            let _ = writeln!(
                s,
                "<path class=\"edge\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\" marker-end=\"url(#arrow)\"><title>{} → {}</title></path>",
                esc(&format!("{}.{}", input.stage, input.output)),
                esc(&stage.id)
            );
        }
    }
    for v in views {
        let (x, y) = pos[v.id];
        let _ = writeln!(
            s,
            "<a href=\"#stage-{0}\"><g class=\"node {1}\"><title>{0} ({2}): {3}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\"/>\
             <text x=\"{4}\" y=\"{5}\" class=\"id\">{0}</text>\
             <text x=\"{4}\" y=\"{6}\" class=\"sub\">{2} · {3}</text></g></a>",
            esc(v.id),
            state_class(&v.state),
            esc(v.kind),
            esc(&v.state),
            x + 8,
            y + 19,
            y + 36
        );
    }
    s.push_str("</svg>\n");
    s
}

fn state_class(state: &str) -> &'static str {
    match state {
        "done" => "done",
        "queued" | "running" => "running",
        "failed" | "cancelled" => "failed",
        _ => "missing",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, padded), for embedding images.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix seconds (civil-from-days, Howard Hinnant).
fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1em;margin:1.2em 0 .4em}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em}
table.kv th{text-align:left;padding-right:1em;color:#555;font-weight:normal;vertical-align:top}
table.data{border-collapse:collapse;font-size:.85em}
table.data th,table.data td{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}
table.data th{background:#f0f0f0;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.data td.wrap{white-space:normal}
div.scroll{max-height:32em;overflow:auto;margin-bottom:.5em}
.banner{padding:.5em .8em;border-radius:4px}
.banner.ok{background:#e3f4e3}.banner.missing{background:#fff3cd}
section.stage{border-top:2px solid #ccc;margin-top:2em}
section.stage.missing h2 .state{color:#a66f00}section.stage.failed h2 .state{color:#b00}
section.stage.done h2 .state{color:#2a7a2a}
.kind{color:#666;font-weight:normal;font-size:.85em}
.state{font-size:.8em;font-weight:normal;margin-left:.6em}
.figures{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;flex:0 1 640px;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}
figure.broken figcaption{color:#b00;font-weight:bold}
.note{color:#666;font-size:.85em}
svg.dag{max-width:100%;height:auto}
svg.dag rect{stroke:#666;stroke-width:1.2}
svg.dag .done rect{fill:#d9f2d9}svg.dag .missing rect{fill:#f4f4f4;stroke-dasharray:4 3}
svg.dag .running rect{fill:#fff3cd}svg.dag .failed rect{fill:#f8d7da}
svg.dag text.id{font-size:13px;font-weight:600}svg.dag text.sub{font-size:11px;fill:#555}
svg.dag .edge{fill:none;stroke:#888;stroke-width:1.3}
";

/// Marks images the browser could not decode (a damaged artifact) and
/// records the counts on `<body>` (`data-images-ok`, `data-images-broken`).
const SCRIPT: &str = "<script>
window.addEventListener('load', function () {
  var ok = 0, broken = 0;
  document.querySelectorAll('figure img').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok++; } else {
      broken++; img.parentNode.classList.add('broken');
      img.parentNode.querySelector('figcaption').textContent += ' (could not be decoded)';
    }
  });
  document.body.dataset.imagesOk = ok; document.body.dataset.imagesBroken = broken;
});
</script>
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PipelineSpec;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn floats_are_shown_to_four_significant_figures() {
        assert_eq!(short_float(0.8823529411764706), "0.8824");
        assert_eq!(short_float(261.9047), "261.9");
        assert_eq!(short_float(2.0), "2");
        assert_eq!(short_float(12345.678), "12346");
        assert_eq!(short_float(0.000123), "1.230e-4");
        assert_eq!(short_float(-3.5e7), "-3.500e7");
        assert_eq!(short_float(f64::NAN), "NaN");
        assert_eq!(short_float(0.0), "0");
    }

    #[test]
    fn blobs_show_their_size_and_long_text_is_cut() {
        let weights = arrow::array::BinaryArray::from(vec![&[0u8; 3000][..]]);
        assert_eq!(cell(&weights, 0, None), "<3000 bytes>");
        let text = arrow::array::StringArray::from(vec!["x".repeat(100)]);
        let options = FormatOptions::default();
        let f = ArrayFormatter::try_new(&text, &options).unwrap();
        let shown = cell(&text, 0, Some(&f));
        assert_eq!(shown.chars().count(), CELL_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn unix_seconds_become_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }

    fn diamond() -> Plan {
        let yaml = "name: diamond\nstages:\n  runs:\n    kind: synth_runs\n    params: {seed_range: [0, 2], n_runs: 20, n_bad: 2}\n  \
                    ref_a:\n    kind: dinamo_s\n    inputs: [runs]\n  ref_b:\n    kind: dinamo_s\n    inputs: [runs]\n    params: {alpha: 0.5}\n  \
                    both:\n    kind: union\n    inputs: [ref_a, ref_b]\n";
        let spec = PipelineSpec::parse(yaml, Path::new("diamond.yaml")).unwrap();
        crate::plan::plan(spec).unwrap()
    }

    #[test]
    fn graph_columns_are_the_longest_path_from_a_source() {
        let plan = diamond();
        let layers = layers(&plan);
        assert_eq!(layers["runs"], 0);
        assert_eq!(layers["ref_a"], 1);
        assert_eq!(layers["ref_b"], 1);
        assert_eq!(layers["both"], 2);
    }

    #[test]
    fn a_pipeline_not_yet_run_gets_a_page_naming_every_missing_stage() {
        let plan = diamond();
        let dir = tempfile::tempdir().unwrap();
        let workdir = Workdir::new(dir.path().join("work"));
        let out = dir.path().join("report");
        let path = write_report(&plan, &workdir, &["runs.n_runs=20".into()], &out).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.contains("4 of 4 stages have no output yet"), "{html}");
        for id in ["runs", "ref_a", "ref_b", "both"] {
            assert!(html.contains(&format!("id=\"stage-{id}\"")), "{id}");
            assert!(html.contains(&format!("<a href=\"#stage-{id}\">")), "{id}");
        }
        // Four edges in the graph, one per input.
        assert_eq!(html.matches("class=\"edge\"").count(), 4);
        assert!(html.contains("--set runs.n_runs=20"));
        // Nothing is fetched at view time.
        assert!(!html.contains("src=\"http"), "external resource");
        // A second report replaces the first; a file of the user's is refused.
        write_report(&plan, &workdir, &[], &out).unwrap();
        std::fs::write(&path, "my notes").unwrap();
        let err = write_report(&plan, &workdir, &[], &out).unwrap_err();
        assert!(err.to_string().contains("not overwriting"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "my notes");
    }
}
