//! The parts of `medic_train`'s training loop that are not the loop: the
//! loss (window KL, the per-event term, a teacher's share), class weights,
//! the learning-rate schedule, the per-pass tallies, and the `main`, `log`
//! and `folds` tables a run writes.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::medic::batches::{ModelBatch, WindowData};
use crate::medic::tables::{ModelCard, ModelSpec, folds_schema, log_schema, models_schema};

/// How the learning rate moves over the epochs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// lr · (1 + cos(π (epoch − 1) / max_epochs)) / 2.
    Cosine,
}

impl LrSchedule {
    /// The learning rate of `epoch` (1-based) of `max_epochs`.
    pub fn rate(self, base: f64, epoch: usize, max_epochs: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let x = (epoch - 1) as f64 / max_epochs.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            }
        }
    }
}

/// Sums over the windows of one pass, turned into means by [`Tally::mean`].
#[derive(Default)]
pub struct Tally {
    pub kl: f64,
    pub correct: f64,
    pub brier: f64,
    pub n: f64,
    pub events_correct: f64,
    pub events: f64,
}

impl Tally {
    pub fn add(&mut self, batch: &ModelBatch, log_probs: &Tensor, kl_sum: f64) {
        let probs = log_probs.detach().exp();
        self.kl += kl_sum;
        self.correct += probs
            .argmax(-1, false)
            .eq_tensor(batch.class())
            .sum(Kind::Float)
            .double_value(&[]);
        self.brier += (probs - batch.target())
            .square()
            .sum(Kind::Float)
            .double_value(&[]);
        self.n += batch.rows().len() as f64;
    }

    /// Counts the events whose per-event head names their class.
    pub fn add_events(&mut self, log_probs: &Tensor, class: &Tensor) {
        self.events_correct += log_probs
            .argmax(-1, false)
            .eq_tensor(class)
            .sum(Kind::Float)
            .double_value(&[]);
        self.events += class.numel() as f64;
    }

    /// Means over the windows (events) of the pass.
    pub fn mean(&self) -> Figures {
        let n = self.n.max(1.0);
        Figures {
            kl: self.kl / n,
            accuracy: self.correct / n,
            brier: self.brier / n,
            event_accuracy: (self.events > 0.0).then(|| self.events_correct / self.events),
        }
    }
}

/// Class weights ∝ 1/count over `rows`, normalized to sum to the number of
/// classes; an absent class gets 0.
pub fn class_weights(classes: impl Iterator<Item = i64>, n_classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n_classes];
    for c in classes {
        counts[c as usize] += 1;
    }
    let inv: Vec<f64> = counts
        .iter()
        .map(|&n| if n > 0 { 1.0 / n as f64 } else { 0.0 })
        .collect();
    let total: f64 = inv.iter().sum();
    inv.iter()
        .map(|w| {
            if total > 0.0 {
                w * n_classes as f64 / total
            } else {
                0.0
            }
        })
        .collect()
}

/// The per-event term of the loss: the events' log-probabilities `[N, C]`,
/// their own classes `[N]`, the term's weight, and with a teacher its mean
/// probabilities of the same events `[N, C]` with their share of the target.
pub struct EventTerm {
    pub log_probs: Tensor,
    pub class: Tensor,
    pub weight: f64,
    pub teacher: Option<(Tensor, f64)>,
}

/// The loss minimized: the mean of the class-weighted window KLs `kl`
/// `[B]`, plus, with the per-event head, `weight` × the mean cross-entropy
/// of each event's target under its log-probabilities. The target is the
/// event's own class, or with a teacher (1 − share) × that class + share ×
/// the teacher's probabilities.
pub fn training_loss(kl: &Tensor, events: Option<&EventTerm>) -> Tensor {
    let loss = kl.mean(Kind::Float);
    let Some(e) = events else { return loss };
    let own = e.log_probs.nll_loss(&e.class);
    let term = match &e.teacher {
        None => own,
        // The cross-entropy is linear in the target.
        Some((probs, share)) => {
            let soft = -(probs * &e.log_probs)
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float);
            own * (1.0 - share) + soft * *share
        }
    };
    loss + term * e.weight
}

/// Mean KL, accuracy and Brier score of one pass over some windows.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub kl: f64,
    pub accuracy: f64,
    pub brier: f64,
    /// Accuracy of the per-event head on the events of the pass, if any.
    pub event_accuracy: Option<f64>,
}

/// One row of the `log` output: a fold's epoch.
pub struct EpochLog {
    pub fold: usize,
    pub epoch: usize,
    pub train: Figures,
    pub val: Figures,
    pub improved: bool,
}

/// What a trained fold leaves behind.
pub struct FoldResult {
    pub best_epoch: usize,
    pub epochs: usize,
    /// Validation figures at `best_epoch`.
    pub best: Figures,
    pub train_windows: usize,
    pub val_windows: usize,
    pub card: ModelCard,
    pub weights: Vec<u8>,
}

/// The `folds` table: the fold (from 1) that validates each train window.
pub fn folds_batch(data: &WindowData, rows: &[usize], fold_of: &[usize]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        folds_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|&r| data.rows[r].window_id),
            )),
            Arc::new(Int32Array::from_iter_values(
                fold_of.iter().map(|&f| f as i32 + 1),
            )),
        ],
    )?)
}

/// The `log` table: every fold's epochs.
pub fn log_batch(log: &[EpochLog]) -> Result<RecordBatch> {
    let float = |f: fn(&EpochLog) -> f64| Float64Array::from_iter_values(log.iter().map(f));
    let int =
        |f: fn(&EpochLog) -> usize| Int32Array::from_iter_values(log.iter().map(|r| f(r) as i32));
    Ok(RecordBatch::try_new(
        log_schema(),
        vec![
            Arc::new(int(|r| r.fold)),
            Arc::new(int(|r| r.epoch)),
            Arc::new(float(|r| r.train.kl)),
            Arc::new(float(|r| r.train.accuracy)),
            Arc::new(float(|r| r.train.brier)),
            Arc::new(float(|r| r.val.kl)),
            Arc::new(float(|r| r.val.accuracy)),
            Arc::new(float(|r| r.val.brier)),
            Arc::new(Float64Array::from_iter(
                log.iter().map(|r| r.val.event_accuracy),
            )),
            Arc::new(BooleanArray::from_iter(
                log.iter().map(|r| Some(r.improved)),
            )),
        ],
    )?)
}

/// The `main` table: one row per fold's model, card and weights.
pub fn models_batch(spec: &ModelSpec, results: &[FoldResult]) -> Result<RecordBatch> {
    let cards: Vec<String> = results
        .iter()
        .map(|r| serde_json::to_string(&r.card).expect("plain data serializes"))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            results.iter().map(|r| r.card.fold as i32),
        )),
        Arc::new(Int32Array::from_iter_values(
            results.iter().map(|r| r.best_epoch as i32),
        )),
        Arc::new(Int32Array::from_iter_values(
            results.iter().map(|r| r.epochs as i32),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.kl),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.accuracy),
        )),
        Arc::new(Float64Array::from_iter_values(
            results.iter().map(|r| r.best.brier),
        )),
        Arc::new(Int64Array::from_iter_values(
            results.iter().map(|r| r.train_windows as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            results.iter().map(|r| r.val_windows as i64),
        )),
        Arc::new(StringArray::from(cards)),
        Arc::new(BinaryArray::from_iter_values(
            results.iter().map(|r| r.weights.as_slice()),
        )),
    ];
    Ok(RecordBatch::try_new(models_schema(spec), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_loss_is_added_by_hand() {
        let kl = Tensor::from_slice(&[0.2f32, 0.4]);
        let p = Tensor::from_slice(&[0.5f32, 0.25, 0.25, 1e-9, 0.1, 0.25, 0.6, 0.05])
            .view([2, 4])
            .log();
        let class = Tensor::from_slice(&[0i64, 1]);
        let without = training_loss(&kl, None).double_value(&[]);
        assert!((without - 0.3).abs() < 1e-6, "{without}");
        // 0.3 + 0.5 · (−ln 0.5 − ln 0.25) / 2
        let term = |teacher| EventTerm {
            log_probs: p.shallow_clone(),
            class: class.shallow_clone(),
            weight: 0.5,
            teacher,
        };
        let with = training_loss(&kl, Some(&term(None))).double_value(&[]);
        let want = 0.3 + 0.5 * (2f64.ln() + 4f64.ln()) / 2.0;
        assert!((with - want).abs() < 1e-5, "{with} vs {want}");
        // A teacher that puts event 0 on class 1 and event 1 on class 2,
        // with a share of 0.25: targets (0.75, 0.25, 0, 0) and (0, 0.75,
        // 0.25, 0).
        let teacher = Tensor::from_slice(&[0f32, 1., 0., 0., 0., 0., 1., 0.]).view([2, 4]);
        let distilled = training_loss(&kl, Some(&term(Some((teacher, 0.25))))).double_value(&[]);
        let event0 = -(0.75 * 0.5f64.ln() + 0.25 * 0.25f64.ln());
        let event1 = -(0.75 * 0.25f64.ln() + 0.25 * 0.6f64.ln());
        let want = 0.3 + 0.5 * (event0 + event1) / 2.0;
        assert!((distilled - want).abs() < 1e-5, "{distilled} vs {want}");
    }

    #[test]
    fn cosine_schedule_by_hand() {
        let r = |e| LrSchedule::Cosine.rate(1e-3, e, 10);
        assert!((r(1) - 1e-3).abs() < 1e-15);
        assert!((r(6) - 0.5e-3).abs() < 1e-12, "{}", r(6));
        assert!(r(10) > 0.0 && r(10) < 0.03e-3);
        assert_eq!(LrSchedule::Constant.rate(1e-3, 7, 10), 1e-3);
    }

    /// Encode-once training with the per-event head, log energies and the
    /// cosine schedule: seeded, and the head travels with the weights.
    #[test]
    fn class_weights_are_inverse_counts_summing_to_the_class_count() {
        let w = class_weights([0, 0, 0, 1].into_iter(), 3);
        // 1/3 and 1/1, scaled to sum to 3; the absent class gets 0.
        assert!((w[0] - 0.75).abs() < 1e-12 && (w[1] - 2.25).abs() < 1e-12 && w[2] == 0.0);
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-12);
    }
}
