//! A trained ensemble in memory: every fold of a models table loaded as a
//! network (inference), and the same ensemble as a teacher whose per-event
//! probabilities a narrower student learns from (`medic_train` with a
//! teacher input).

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int32Type};
use tch::{Device, Kind, Tensor, nn};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::medic::batches::ModelBatch;
use crate::medic::model::Medic;
use crate::medic::tables::{FeatureStats, ModelCard, ModelSpec, WindowSpec, first_difference};
use crate::nn::load_weights;

/// One fold's model, loaded from a models-table row.
pub struct LoadedFold {
    pub fold: i32,
    pub card: ModelCard,
    pub model: Medic,
    _vs: nn::VarStore,
}

/// Loads every fold of a models table onto `device`, checking each card
/// against the windows it will score.
pub fn load_models(input: &Input, windows: &WindowSpec, device: Device) -> Result<Vec<LoadedFold>> {
    let why = "the models table of `medic_train`";
    let fold_idx = require_column(&input.schema, &input.name, "fold", why, "Int32", |t| {
        t == &DataType::Int32
    })?;
    let mut folds = Vec::new();
    crate::nn::each_model_row(input, why, |batch, i, card: ModelCard, weights| {
        let fold = batch.column(fold_idx).as_primitive::<Int32Type>().value(i);
        let at = format!("input `{}`, fold {fold}", input.name);
        card.spec.check_windows(windows, &at)?;
        let vs = nn::VarStore::new(device);
        let model = Medic::new(&vs.root(), card.spec.arch.clone());
        load_weights(&vs, weights, &at)?;
        folds.push(LoadedFold {
            fold,
            card,
            model,
            _vs: vs,
        });
        Ok(())
    })?;
    let first = (
        folds[0].card.normalization.clone(),
        folds[0].card.spec.log_energies,
    );
    if let Some(f) = folds
        .iter()
        .find(|f| (f.card.normalization.clone(), f.card.spec.log_energies) != first)
    {
        return Err(StageError::data(format!(
            "input `{}`: fold {} standardizes its inputs differently from fold {}",
            input.name, f.fold, folds[0].fold
        )));
    }
    Ok(folds)
}

/// A trained ensemble used as a teacher: the mean over its folds of each
/// event's class probabilities, which a student's per-event head is
/// trained towards.
pub struct Teacher {
    folds: Vec<LoadedFold>,
}

impl Teacher {
    /// Loads the models table `input` as a teacher for a student trained on
    /// windows made with `windows`. Every fold needs a per-event head (the
    /// probabilities it hands on are per event).
    pub fn load(input: &Input, windows: &WindowSpec, device: Device) -> Result<Self> {
        let folds = load_models(input, windows, device)?;
        if let Some(f) = folds.iter().find(|f| !f.model.arch.has_event_head()) {
            return Err(StageError::data(format!(
                "input `{}`, fold {}: the teacher has no per-event head (train it with event_loss_weight > 0)",
                input.name, f.fold
            )));
        }
        Ok(Self { folds })
    }

    /// How the teacher standardized its inputs: (statistics, ln(1 + x) of
    /// energies). A student must feed it the same numbers.
    pub fn standardization(&self) -> (Option<&FeatureStats>, bool) {
        let card = &self.folds[0].card;
        (card.normalization.as_ref(), card.spec.log_energies)
    }

    /// `[N, classes]` the teacher's mean probabilities of the events a
    /// forward pass over `batch` encodes, in the order of its `per_event`
    /// output: every fold in evaluation mode, no gradient.
    pub fn event_probs(&self, batch: &ModelBatch) -> Tensor {
        tch::no_grad(|| {
            let k = self.folds.len() as f64;
            let mut sum: Option<Tensor> = None;
            for f in &self.folds {
                let p = batch
                    .forward(&f.model, false)
                    .per_event
                    .expect("checked at load: every fold has an event head")
                    .exp();
                sum = Some(match sum {
                    Some(s) => s + p,
                    None => p,
                });
            }
            (sum.expect("a models table has at least one fold") / k).to_kind(Kind::Float)
        })
    }
}

/// Plan-time checks of a teacher's models table (its `teacher` spec)
/// against a student's windows and its (`normalize_features`,
/// `log_energies`): the same windows (so the teacher's training never saw
/// this test block), a per-event head, and the same input standardization.
pub fn check_teacher(
    teacher: &ModelSpec,
    windows: &WindowSpec,
    standardization: (bool, bool),
) -> Result<()> {
    teacher.check_windows(windows, "teacher")?;
    if let Some(field) = first_difference(&teacher.windows, windows) {
        return Err(StageError::data(format!(
            "input `teacher`: its models were trained on windows made with another `{field}` than these; a teacher must come from the same windows, or the events it trained on could be in this test block"
        )));
    }
    if !teacher.arch.has_event_head() {
        return Err(StageError::data(
            "input `teacher`: the teacher has no per-event head (train it with event_loss_weight > 0)",
        ));
    }
    if (teacher.normalize_features, teacher.log_energies) != standardization {
        return Err(StageError::data(format!(
            "input `teacher`: the teacher was trained with normalize_features = {}, log_energies = {}; the student must use the same",
            teacher.normalize_features, teacher.log_energies
        )));
    }
    Ok(())
}
