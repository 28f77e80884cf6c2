//! `alerts`: MEDIC's operating mode (medic.txt section 4): an alert is raised
//! when N consecutive windows have an anomaly score above a threshold, so a
//! single noisy window does not page a shifter. Writes the alerts at the
//! chosen (N, threshold) and, for a grid of both, the false-alert rate and the
//! detection delay, so an experiment can pick its working point.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int8Type, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::quantile;
use dqm_schemas::{column, nullable};

/// Turns per-window anomaly scores into alerts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Anomaly-score threshold of the alert table.
    pub threshold: f64,
    /// N: consecutive windows above the threshold that raise an alert.
    pub consecutive: usize,
    /// Thresholds of the false-alert / delay scan.
    pub scan_thresholds: Vec<f64>,
    /// Values of N of the scan.
    pub scan_consecutive: Vec<usize>,
    /// Class index of the normal configuration: a window is truly anomalous
    /// when the argmax of its soft label is another class.
    pub normal_class: usize,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            consecutive: 3,
            scan_thresholds: vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            scan_consecutive: vec![1, 2, 3, 5, 10],
            normal_class: 0,
        }
    }
}

impl StageConfig for Alerts {
    const KIND: &'static str = "alerts";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Alerts when N consecutive windows score above a threshold, with false-alert rate and detection delay versus N and threshold";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "predictions";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![crate::medic::tables::example_predictions_schema()]
    }

    fn validate(&self) -> Result<()> {
        if self.consecutive == 0 || self.scan_consecutive.contains(&0) {
            return Err(StageError::param("consecutive", "N must be at least 1"));
        }
        if !self.threshold.is_finite() || self.scan_thresholds.iter().any(|t| !t.is_finite()) {
            return Err(StageError::param(
                "threshold",
                "thresholds must be finite numbers",
            ));
        }
        Ok(())
    }
}

fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column(
            "block",
            DataType::Utf8,
            "Block of the windows (sequences never span blocks)",
        ),
        column(
            "window_id",
            DataType::Int64,
            "The window that completed N consecutive windows above the threshold",
        ),
        column("start", DataType::Int64, "Its position in time order"),
        column(
            "streak_start",
            DataType::Int64,
            "Position of the first window of the streak",
        ),
        column(
            "anomaly_score",
            DataType::Float64,
            "Anomaly score of the alerting window",
        ),
        column(
            "true_anomaly",
            DataType::Boolean,
            "Whether the alerting window is truly anomalous (a false alert otherwise)",
        ),
        column(
            "true_class",
            DataType::Int64,
            "Argmax class of the alerting window's soft label",
        ),
    ]))
}

fn scan_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("consecutive", DataType::Int64, "N"),
        column("threshold", DataType::Float64, "Anomaly-score threshold"),
        column(
            "alerts",
            DataType::Int64,
            "Alerts raised (one per streak of at least N windows)",
        ),
        column(
            "false_alerts",
            DataType::Int64,
            "Alerts raised on a truly normal window",
        ),
        column("normal_windows", DataType::Int64, "Truly normal windows"),
        nullable(
            "false_alert_rate",
            DataType::Float64,
            "False alerts per truly normal window",
        ),
        column(
            "episodes",
            DataType::Int64,
            "Glitch episodes: maximal runs of consecutive truly anomalous windows",
        ),
        column(
            "detected",
            DataType::Int64,
            "Episodes with an alert raised inside them",
        ),
        nullable(
            "mean_delay",
            DataType::Float64,
            "Mean windows from an episode's start to its first alert (detected episodes)",
        ),
        nullable("median_delay", DataType::Float64, "Median of the same"),
    ]))
}

/// The columns of the scan table, filled row by row.
#[derive(Default)]
struct ScanColumns {
    consecutive: Vec<i64>,
    threshold: Vec<f64>,
    alerts: Vec<i64>,
    false_alerts: Vec<i64>,
    normal_windows: Vec<i64>,
    false_alert_rate: Vec<Option<f64>>,
    episodes: Vec<i64>,
    detected: Vec<i64>,
    mean_delay: Vec<Option<f64>>,
    median_delay: Vec<Option<f64>>,
}

/// One block's windows in time order.
struct Sequence {
    block: String,
    window_id: Vec<i64>,
    start: Vec<i64>,
    score: Vec<f64>,
    class: Vec<i64>,
}

fn read(input: &Input) -> Result<Vec<Sequence>> {
    let mut rows: Vec<(String, i64, i64, f64, i64)> = Vec::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str| batch.column_by_name(n).expect("checked").clone();
        let (block, id, start, score, class) = (
            col("block"),
            col("window_id"),
            col("start"),
            col("anomaly_score"),
            col("argmax_class"),
        );
        let block = block.as_string::<i32>();
        let id = id.as_primitive::<Int64Type>();
        let start = start.as_primitive::<Int64Type>();
        let score = score.as_primitive::<Float64Type>();
        let class = class.as_primitive::<Int8Type>();
        for i in 0..batch.num_rows() {
            if !score.value(i).is_finite() {
                return Err(StageError::data(format!(
                    "input `{}`: window {} has a non-finite anomaly_score",
                    input.name,
                    id.value(i)
                )));
            }
            rows.push((
                block.value(i).to_string(),
                id.value(i),
                start.value(i),
                score.value(i),
                class.value(i) as i64,
            ));
        }
    }
    if rows.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no windows",
            input.name
        )));
    }
    rows.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let mut out: Vec<Sequence> = Vec::new();
    for (block, id, start, score, class) in rows {
        if out.last().is_none_or(|s| s.block != block) {
            out.push(Sequence {
                block: block.clone(),
                window_id: vec![],
                start: vec![],
                score: vec![],
                class: vec![],
            });
        }
        let s = out.last_mut().expect("pushed");
        s.window_id.push(id);
        s.start.push(start);
        s.score.push(score);
        s.class.push(class);
    }
    Ok(out)
}

/// Indices of the windows raising an alert (the N-th window of each streak
/// above `threshold`) and the streak's first index.
pub fn alert_points(scores: &[f64], threshold: f64, n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut streak = 0;
    for (i, &s) in scores.iter().enumerate() {
        streak = if s > threshold { streak + 1 } else { 0 };
        if streak == n {
            out.push((i, i + 1 - n));
        }
    }
    out
}

/// (episodes, detected, delays) of `alerts` against the truth `anomalous`.
pub fn detection(anomalous: &[bool], alerts: &[usize]) -> (usize, usize, Vec<f64>) {
    let mut alerting = vec![false; anomalous.len()];
    for &a in alerts {
        alerting[a] = true;
    }
    let (mut episodes, mut delays) = (0, Vec::new());
    let mut i = 0;
    while i < anomalous.len() {
        if !anomalous[i] {
            i += 1;
            continue;
        }
        let begin = i;
        while i < anomalous.len() && anomalous[i] {
            i += 1;
        }
        episodes += 1;
        if let Some(first) = (begin..i).find(|&k| alerting[k]) {
            delays.push((first - begin) as f64);
        }
    }
    (episodes, delays.len(), delays)
}

impl Stage for Alerts {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let s = &inputs[0];
        let why = "alerts read the predictions of `medic_infer`";
        require_column(s, "predictions", "block", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        for c in ["window_id", "start"] {
            require_column(s, "predictions", c, why, "Int64", |t| t == &DataType::Int64)?;
        }
        require_column(s, "predictions", "anomaly_score", why, "Float64", |t| {
            t == &DataType::Float64
        })?;
        require_column(s, "predictions", "argmax_class", why, "Int8", |t| {
            t == &DataType::Int8
        })?;
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: alerts_schema(),
            },
            OutputSpec {
                name: "scan",
                schema: scan_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let seqs = read(&ctx.inputs[0])?;
        let normal = self.normal_class as i64;
        let (mut block, mut id, mut start, mut streak, mut score, mut truth, mut class) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for s in &seqs {
            for (i, first) in alert_points(&s.score, self.threshold, self.consecutive) {
                block.push(s.block.clone());
                id.push(s.window_id[i]);
                start.push(s.start[i]);
                streak.push(s.start[first]);
                score.push(s.score[i]);
                truth.push(s.class[i] != normal);
                class.push(s.class[i]);
            }
        }
        ctx.reporter.info(&format!(
            "{} alerts at N = {}, threshold {} ({} false)",
            id.len(),
            self.consecutive,
            self.threshold,
            truth.iter().filter(|t| !**t).count()
        ));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(block)),
            Arc::new(Int64Array::from(id)),
            Arc::new(Int64Array::from(start)),
            Arc::new(Int64Array::from(streak)),
            Arc::new(Float64Array::from(score)),
            Arc::new(BooleanArray::from(truth)),
            Arc::new(Int64Array::from(class)),
        ];
        ctx.output
            .write("main", RecordBatch::try_new(alerts_schema(), columns)?)?;

        // One row per (N, threshold).
        let mut scan = ScanColumns::default();
        for &n in &self.scan_consecutive {
            for &t in &self.scan_thresholds {
                let (mut alerts, mut false_alerts, mut normals, mut episodes, mut detected) =
                    (0, 0, 0, 0, 0);
                let mut delays = Vec::new();
                for s in &seqs {
                    let anomalous: Vec<bool> = s.class.iter().map(|&c| c != normal).collect();
                    let points: Vec<usize> = alert_points(&s.score, t, n)
                        .into_iter()
                        .map(|p| p.0)
                        .collect();
                    alerts += points.len() as i64;
                    false_alerts += points.iter().filter(|&&i| !anomalous[i]).count() as i64;
                    normals += anomalous.iter().filter(|a| !**a).count() as i64;
                    let (e, d, mut dl) = detection(&anomalous, &points);
                    episodes += e as i64;
                    detected += d as i64;
                    delays.append(&mut dl);
                }
                delays.sort_by(f64::total_cmp);
                scan.consecutive.push(n as i64);
                scan.threshold.push(t);
                scan.alerts.push(alerts);
                scan.false_alerts.push(false_alerts);
                scan.normal_windows.push(normals);
                scan.false_alert_rate
                    .push((normals > 0).then(|| false_alerts as f64 / normals as f64));
                scan.episodes.push(episodes);
                scan.detected.push(detected);
                scan.mean_delay.push(
                    (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64),
                );
                scan.median_delay.push(quantile(&delays, 0.5));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(scan.consecutive)),
            Arc::new(Float64Array::from(scan.threshold)),
            Arc::new(Int64Array::from(scan.alerts)),
            Arc::new(Int64Array::from(scan.false_alerts)),
            Arc::new(Int64Array::from(scan.normal_windows)),
            Arc::new(Float64Array::from(scan.false_alert_rate)),
            Arc::new(Int64Array::from(scan.episodes)),
            Arc::new(Int64Array::from(scan.detected)),
            Arc::new(Float64Array::from(scan.mean_delay)),
            Arc::new(Float64Array::from(scan.median_delay)),
        ];
        ctx.output
            .write("scan", RecordBatch::try_new(scan_schema(), columns)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_needs_n_consecutive_windows_above_threshold() {
        let scores = [0.9, 0.2, 0.8, 0.7, 0.9, 0.95, 0.1, 0.6, 0.7];
        assert_eq!(alert_points(&scores, 0.5, 3), vec![(4, 2)]);
        assert_eq!(alert_points(&scores, 0.5, 2), vec![(3, 2), (8, 7)]);
        assert_eq!(alert_points(&scores, 0.5, 1).len(), 3);
        assert!(alert_points(&scores, 0.99, 1).is_empty());
    }

    #[test]
    fn detection_delay_counts_windows_from_episode_start() {
        let truth = [false, true, true, true, false, true, true, false];
        // Alerts at 3 (inside episode 1, delay 2) and 7 (a normal window).
        let (episodes, detected, delays) = detection(&truth, &[3, 7]);
        assert_eq!((episodes, detected), (2, 1));
        assert_eq!(delays, vec![2.0]);
    }
}
