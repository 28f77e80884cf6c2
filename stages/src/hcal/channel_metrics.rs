//! `channel_metrics`: the paper's Table 7 on our maps. Per anomaly case and
//! method (the GraphSTAD model, the reference-map rule), on the LS that end
//! an anomalous window: the false-positive rate among healthy channels at
//! the thresholds that detect 90 / 95 / 99 % of the injected channels, the
//! ROC AUC of anomalous vs healthy channels with a 95 % interval
//! (Hanley-McNeil), and at the decision threshold α: detection, FPR and
//! localisation (the fraction of flagged channels inside the injected region).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arrow_util::f64_lists;
use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::tables::scores_schema;
use crate::input::{Input, require_column};
use crate::params::AutoOr;
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use crate::stats::roc_auc;
use dqm_schemas::{column, f64_list, nullable};

/// Table-7 metrics of channel scores.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelMetrics {
    /// Decision threshold α on a_i; `auto`: each method's threshold in the
    /// scores table (`alpha`, `reference_alpha`: chosen on validation maps).
    pub alpha: AutoOr<f64>,
    /// Detection levels of the FPR columns (the paper: 0.90, 0.95, 0.99).
    pub detection: [f64; 3],
}

impl Default for ChannelMetrics {
    fn default() -> Self {
        Self {
            alpha: AutoOr::Auto,
            detection: [0.90, 0.95, 0.99],
        }
    }
}

impl StageConfig for ChannelMetrics {
    const KIND: &'static str = "channel_metrics";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Channel scores with injected truth -> Table 7: FPR at 90/95/99 % detection, AUC with interval, detection, FPR and localisation at α, per case and method";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "scores";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![scores_schema(MapGeometry::of(
            crate::hcal::geometry::Subdetector::Barrel,
        ))]
    }

    fn validate(&self) -> Result<()> {
        if let AutoOr::Value(a) = self.alpha
            && !(a > 0.0)
        {
            return bad_param("alpha", "must be > 0 or `auto`");
        }
        if self.detection.iter().any(|&d| !(d > 0.0 && d <= 1.0)) {
            return bad_param("detection", "levels must be in (0, 1]");
        }
        Ok(())
    }
}

fn metrics_schema() -> SchemaRef {
    let n = |name, doc| nullable(name, DataType::Float64, doc);
    Arc::new(Schema::new(vec![
        column(
            "method",
            DataType::Utf8,
            "graphstad (the model) or reference (training mean map × row medians)",
        ),
        column("case", DataType::Utf8, "Anomaly case"),
        column(
            "target_maps",
            DataType::Int64,
            "LS ending an anomalous window (where the metrics are computed)",
        ),
        column(
            "anomalous",
            DataType::Int64,
            "Injected channels on those LS (positives)",
        ),
        column(
            "healthy",
            DataType::Int64,
            "Other channels on those LS (negatives)",
        ),
        n(
            "fpr_90",
            "FPR among healthy channels at the threshold detecting the first detection level (90 %)",
        ),
        n("fpr_95", "Same at the second level (95 %)"),
        n("fpr_99", "Same at the third level (99 %)"),
        n("auc", "ROC AUC, anomalous vs healthy channels"),
        n("auc_lo", "95 % interval of the AUC, lower (Hanley-McNeil)"),
        n("auc_hi", "95 % interval of the AUC, upper"),
        n(
            "detection_at_alpha",
            "Fraction of anomalous channels with a_i > α",
        ),
        n("fpr_at_alpha", "Fraction of healthy channels with a_i > α"),
        n(
            "localisation",
            "Of the channels flagged at α, the fraction inside the injected region",
        ),
        column(
            "alpha",
            DataType::Float64,
            "α of the method (the last seen when target maps disagree)",
        ),
        column(
            "detection_levels",
            f64_list(),
            "The detection levels of fpr_90 / fpr_95 / fpr_99",
        ),
    ]))
}

/// The FPR at the threshold that detects `level` of the positives: the
/// threshold is the positive score ranked ⌈level · n⌉ from the top, and a
/// channel is flagged at or above it.
pub fn fpr_at_detection(positives: &mut [f64], negatives: &[f64], level: f64) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    positives.sort_unstable_by(|a, b| b.total_cmp(a));
    let k = ((level * positives.len() as f64).ceil() as usize).clamp(1, positives.len());
    let threshold = positives[k - 1];
    Some(negatives.iter().filter(|&&v| v >= threshold).count() as f64 / negatives.len() as f64)
}

/// Hanley & McNeil (1982) 95 % interval of an AUC from n₊ positives and n₋ negatives.
pub fn auc_interval(auc: f64, n_pos: usize, n_neg: usize) -> (f64, f64) {
    let (np, nn) = (n_pos as f64, n_neg as f64);
    let q1 = auc / (2.0 - auc);
    let q2 = 2.0 * auc * auc / (1.0 + auc);
    let var = (auc * (1.0 - auc) + (np - 1.0) * (q1 - auc * auc) + (nn - 1.0) * (q2 - auc * auc))
        / (np * nn);
    let se = var.max(0.0).sqrt();
    ((auc - 1.96 * se).max(0.0), (auc + 1.96 * se).min(1.0))
}

#[derive(Default)]
struct Pool {
    alpha: f64,
    maps: usize,
    positives: Vec<f64>,
    negatives: Vec<f64>,
    flagged: usize,
    flagged_inside: usize,
}

impl Stage for ChannelMetrics {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let why = "a scores table (`graphstad_score`)";
        require_column(&inputs[0], "scores", "case", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
        require_column(&inputs[0], "scores", "target", why, "Boolean", |t| {
            t == &DataType::Boolean
        })?;
        require_column(
            &inputs[0],
            "scores",
            "injected",
            why,
            "List<Boolean>",
            |t| matches!(t, DataType::List(f) if f.data_type() == &DataType::Boolean),
        )?;
        for c in ["score", "reference_score"] {
            require_column(&inputs[0], "scores", c, why, "List<Float64>", |t| {
                t == &f64_list()
            })?;
        }
        for c in ["alpha", "reference_alpha"] {
            require_column(&inputs[0], "scores", c, why, "Float64", |t| {
                t == &DataType::Float64
            })?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: metrics_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let pools = self.pools(input)?;
        if pools.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` has no target LS (no injected anomaly windows): run `inject_anomalies` on the maps first",
                input.name
            )));
        }
        let mut rows: Vec<(String, String, Pool)> = pools
            .into_iter()
            .map(|((k, case), pool)| (METHODS[k].0.to_string(), case, pool))
            .collect();
        let batch = self.metrics_batch(&mut rows)?;
        for (i, row) in rows.iter().enumerate() {
            let get = |c: &str| {
                let a = batch
                    .column_by_name(c)
                    .unwrap()
                    .as_primitive::<Float64Type>();
                if a.is_null(i) { f64::NAN } else { a.value(i) }
            };
            ctx.reporter.info(&format!(
                "{:>9} {:<16} AUC {:.4} FPR@99% {:.2e} detection@α={:.2} {:.3} FPR@α {:.1e} localisation {:.3}",
                row.0,
                row.1,
                get("auc"),
                get("fpr_99"),
                row.2.alpha,
                get("detection_at_alpha"),
                get("fpr_at_alpha"),
                get("localisation")
            ));
        }
        ctx.output.write("main", batch)
    }
}

/// The scores compared, each with its threshold column: (method, score
/// column, α column).
const METHODS: [(&str, &str, &str); 2] = [
    ("graphstad", "score", "alpha"),
    ("reference", "reference_score", "reference_alpha"),
];

impl ChannelMetrics {
    /// The channel scores of the target LS, pooled per (method, case).
    fn pools(&self, input: &Input) -> Result<BTreeMap<(usize, String), Pool>> {
        let mut pools: BTreeMap<(usize, String), Pool> = BTreeMap::new();
        for batch in input.batches() {
            let batch = batch?;
            let col = |n: &str| batch.column_by_name(n).expect("planned");
            let case = col("case");
            let case = case.as_string::<i32>();
            let target = col("target");
            let target = target.as_boolean();
            let injected = col("injected");
            let injected = injected.as_list::<i32>();
            for (k, (_, column, alpha_column)) in METHODS.iter().enumerate() {
                let scores = col(column);
                let scores = scores.as_list::<i32>();
                let alphas = col(alpha_column);
                let alphas = alphas.as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    if !target.value(i) {
                        continue;
                    }
                    let mask = injected.value(i);
                    let mask = mask.as_boolean();
                    let values = scores.value(i);
                    let values = values.as_primitive::<Float64Type>();
                    if mask.len() != values.len() {
                        return Err(StageError::data(format!(
                            "input `{}`, row {i}: `injected` and `{column}` differ in length",
                            input.name
                        )));
                    }
                    let alpha = match self.alpha {
                        AutoOr::Auto => alphas.value(i),
                        AutoOr::Value(a) => a,
                    };
                    let pool = pools.entry((k, case.value(i).to_string())).or_default();
                    pool.maps += 1;
                    pool.alpha = alpha;
                    for (j, &v) in values.values().iter().enumerate() {
                        let positive = mask.value(j);
                        if positive {
                            pool.positives.push(v);
                        } else {
                            pool.negatives.push(v);
                        }
                        if v > alpha {
                            pool.flagged += 1;
                            pool.flagged_inside += usize::from(positive);
                        }
                    }
                }
            }
        }
        Ok(pools)
    }

    /// One row per (method, case): FPR at each detection level, AUC with its
    /// interval, detection, FPR and localisation at α.
    fn metrics_batch(&self, rows: &mut [(String, String, Pool)]) -> Result<RecordBatch> {
        let mut fpr: [Vec<Option<f64>>; 3] = Default::default();
        let (mut auc, mut lo, mut hi, mut det, mut fpa, mut loc) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (_, _, p) in rows.iter_mut() {
            for (l, level) in self.detection.iter().enumerate() {
                fpr[l].push(fpr_at_detection(&mut p.positives, &p.negatives, *level));
            }
            let labels: Vec<bool> = std::iter::repeat_n(true, p.positives.len())
                .chain(std::iter::repeat_n(false, p.negatives.len()))
                .collect();
            let all: Vec<f64> = p.positives.iter().chain(&p.negatives).copied().collect();
            let a = roc_auc(&all, &labels);
            let interval = a.map(|a| auc_interval(a, p.positives.len(), p.negatives.len()));
            auc.push(a);
            lo.push(interval.map(|i| i.0));
            hi.push(interval.map(|i| i.1));
            let frac = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
            det.push(frac(
                p.positives.iter().filter(|&&v| v > p.alpha).count(),
                p.positives.len(),
            ));
            fpa.push(frac(
                p.negatives.iter().filter(|&&v| v > p.alpha).count(),
                p.negatives.len(),
            ));
            loc.push(frac(p.flagged_inside, p.flagged));
        }
        let opt = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
        let [f90, f95, f99] = fpr;
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.maps as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.positives.len() as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2.negatives.len() as i64),
            )),
            opt(f90),
            opt(f95),
            opt(f99),
            opt(auc),
            opt(lo),
            opt(hi),
            opt(det),
            opt(fpa),
            opt(loc),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.2.alpha),
            )),
            Arc::new(f64_lists(std::iter::repeat_n(&self.detection[..], n))),
        ];
        Ok(RecordBatch::try_new(metrics_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpr_at_detection_by_hand() {
        // Positives 10, 8, 6, 4: detecting 75 % needs threshold 6.
        let mut pos = vec![4.0, 10.0, 6.0, 8.0];
        let neg = [1.0, 5.0, 6.0, 7.0, 2.0];
        assert_eq!(fpr_at_detection(&mut pos, &neg, 0.75), Some(2.0 / 5.0));
        assert_eq!(fpr_at_detection(&mut pos, &neg, 1.0), Some(3.0 / 5.0));
        assert_eq!(fpr_at_detection(&mut pos, &neg, 0.25), Some(0.0));
        assert_eq!(fpr_at_detection(&mut [], &neg, 0.9), None);
    }

    #[test]
    fn auc_interval_narrows_with_counts_and_stays_in_unit_range() {
        let (a, b) = auc_interval(0.9, 10, 10);
        let (c, d) = auc_interval(0.9, 1000, 1000);
        assert!(a < c && d < b && a < 0.9 && b > 0.9);
        assert_eq!(auc_interval(1.0, 50, 50), (1.0, 1.0));
    }
}
