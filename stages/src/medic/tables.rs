//! The tables that pass between MEDIC stages and what they carry in their
//! schema metadata: the window table (and its `order`), the models table and
//! the predictions table, with the parameter structs stored as JSON in them.
//! Stages of this family import these formats from here, never from each
//! other's files; the `example_*` schemas document them in `pipeline stages`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int8Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::input::{Input, require_column};
use crate::medic::metrics::Predictions;
use crate::medic::model::MedicArch;
use dqm_schemas::{column, events, nullable};

/// The detector configurations of the Delphes samples, in class-index order.
pub const CLASSES: [&str; 4] = [
    "normal",
    "hcal_barrel_off",
    "hcal_endcap_off",
    "hcal_forward_off",
];
/// Track features of the events table by default (leaves of `Track`).
pub const TRACK_FEATURES: [&str; 7] = ["P", "PT", "Eta", "Phi", "CtgTheta", "C", "L"];
/// Tower features by default (leaves of `Tower`).
pub const TOWER_FEATURES: [&str; 8] = ["ET", "Eta", "Phi", "E", "T", "NTimeHits", "Eem", "Ehad"];
/// MET features by default (leaves of `MissingET`).
pub const MET_FEATURES: [&str; 3] = ["MET", "Eta", "Phi"];

/// Owned copies of a list of names.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- The window table (`sliding_windows`) ----

/// How windows are split into train and test blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Physics events (all detector copies of one, see `group_by`) cut into
    /// a test block and `folds` contiguous train sub-blocks before
    /// windowing; windows never cross a block: leak-free test and validation.
    #[default]
    Blocks,
    /// Windows split at random after windowing (medic.txt): leaky.
    Windows,
}

/// How a window table was made: the `sliding_windows` parameters, stored as
/// JSON in the table's schema metadata ([`WINDOWS_KEY`]) so a model stage can
/// check W, the object counts and the feature lists, and rebuild identical
/// tensors. The stage's YAML parameters are exactly these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSpec {
    /// Events per window (W).
    pub window: usize,
    /// Seed of the shuffle and of every window's object re-sampling.
    pub seed: u64,
    /// Tracks per event in a window: chosen uniformly without replacement, zero-padded.
    pub n_tracks: usize,
    /// Towers per event in a window, likewise.
    pub n_towers: usize,
    /// Fraction of the physics events in the train block; the rest is the test block.
    /// With `split: windows`, the fraction of windows in the train block.
    pub train_fraction: f64,
    /// `blocks`: cut the shuffled physics events into a test block and
    /// `folds` train sub-blocks before windowing (no event, nor a detector
    /// copy of one, in two blocks). `windows`: the paper's protocol, a
    /// random split of the overlapping windows, so test windows share events
    /// with train windows (for comparison with the paper only).
    pub split: Split,
    /// Cross-validation folds k of `medic_train` (one model each, the
    /// ensemble of all k). `split: blocks`: k contiguous sub-blocks of the
    /// train block, windows built inside each, so a fold's validation
    /// windows share no event with its training windows. `split: windows`:
    /// k folds of random train windows, stratified by argmax class.
    pub folds: usize,
    /// Events-table column (Int64) whose equal values mark copies of one
    /// physics event simulated with different detector configurations
    /// (Delphes: `entry`, equal to `Event.Number` in every configuration's
    /// file); copies always land in the same block. Null: every event is its
    /// own group (files that are not copies of one generator run).
    pub group_by: Option<String>,
    /// Number of classes: the window label is p_0 .. p_{n_classes-1}.
    pub n_classes: usize,
    /// Also write each window's tensors as fixed-size list columns (small data, export).
    pub materialize: bool,
    /// Track features (columns `track_<feature>` of the events table), in tensor order.
    pub track_features: Vec<String>,
    /// Tower features (columns `tower_<feature>`), in tensor order.
    pub tower_features: Vec<String>,
    /// MET features (columns `met_<feature>`), in tensor order.
    pub met_features: Vec<String>,
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            window: 30,
            seed: 0,
            n_tracks: 30,
            n_towers: 30,
            train_fraction: 0.8,
            split: Split::Blocks,
            folds: 5,
            group_by: Some("entry".into()),
            n_classes: 4,
            materialize: false,
            track_features: strings(&TRACK_FEATURES),
            tower_features: strings(&TOWER_FEATURES),
            met_features: strings(&MET_FEATURES),
        }
    }
}

impl WindowSpec {
    /// The parameters a window table was made with, from its schema metadata.
    pub fn from_schema(schema: &SchemaRef, input: &str) -> Result<Self> {
        let spec = schema.metadata().get(WINDOWS_KEY).ok_or_else(|| {
            StageError::data(format!(
                "input `{input}` is not a `sliding_windows` table: its schema has no `{WINDOWS_KEY}` metadata"
            ))
        })?;
        serde_json::from_str(spec).map_err(|e| {
            StageError::data(format!(
                "input `{input}`: unreadable `{WINDOWS_KEY}` metadata: {e}"
            ))
        })
    }

    /// Events-table column names of the track, tower and MET features.
    pub fn column_names(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            self.track_features
                .iter()
                .map(|f| events::column("Track", f))
                .collect(),
            self.tower_features
                .iter()
                .map(|f| events::column("Tower", f))
                .collect(),
            self.met_features
                .iter()
                .map(|f| format!("met_{}", f.to_lowercase()))
                .collect(),
        )
    }

    /// Checks that an events table has every column the windows are built from.
    pub fn check_events_schema(&self, schema: &SchemaRef, input: &str) -> Result<()> {
        let why = "sliding_windows reads the events table";
        require_column(schema, input, "event_id", why, "Int64", |t| {
            t == &DataType::Int64
        })?;
        require_column(schema, input, "class", why, "Int8", |t| {
            t == &DataType::Int8
        })?;
        if let Some(group) = &self.group_by {
            require_column(
                schema,
                input,
                group,
                "`group_by` names the column marking copies of one physics event",
                "Int64",
                |t| t == &DataType::Int64,
            )?;
        }
        let (tr, tw, met) = self.column_names();
        for c in tr.iter().chain(&tw) {
            require_column(schema, input, c, why, "List<Float32>", |t| {
                t == &events::f32_list()
            })?;
        }
        for c in &met {
            require_column(schema, input, c, why, "Float32", |t| {
                t == &DataType::Float32
            })?;
        }
        Ok(())
    }
}

/// The `windows` table's columns.
pub fn windows_schema(cfg: &WindowSpec) -> SchemaRef {
    let mut fields = vec![
        column(
            "window_id",
            DataType::Int64,
            "Window id, unique over both blocks",
        ),
        column(
            "block",
            DataType::Utf8,
            "train or test: the contiguous block of the shuffled sequence the window lies in",
        ),
        column(
            "start",
            DataType::Int64,
            "Position of the window's first event in the shuffled order (table `<stage>_order`)",
        ),
        nullable(
            "fold",
            DataType::Int32,
            "split: blocks: the train sub-block (1..folds) the window lies in, whose model validates on it; null for test windows and for split: windows",
        ),
    ];
    for c in 0..cfg.n_classes {
        fields.push(column(
            &format!("p_{c}"),
            DataType::Float64,
            &format!("Fraction of the window's events of class {c}"),
        ));
    }
    fields.push(column(
        "argmax_class",
        DataType::Int8,
        "Class with the largest fraction (lowest index on ties)",
    ));
    fields.push(column(
        "sample_seed",
        DataType::UInt64,
        "Seed of this window's object re-sampling",
    ));
    if cfg.materialize {
        let fsl = |n: usize| {
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                n as i32,
            )
        };
        let (w, ft, fw, fm) = (
            cfg.window,
            cfg.track_features.len(),
            cfg.tower_features.len(),
            cfg.met_features.len(),
        );
        fields.push(column(
            "tracks",
            fsl(w * cfg.n_tracks * ft),
            "Track tensor [W, n_tracks, F_track], row-major",
        ));
        fields.push(column(
            "towers",
            fsl(w * cfg.n_towers * fw),
            "Tower tensor [W, n_towers, F_tower], row-major",
        ));
        fields.push(column(
            "met",
            fsl(w * fm),
            "MET tensor [W, F_met], row-major",
        ));
    }
    let spec = serde_json::to_string(cfg).expect("plain data serializes");
    Arc::new(Schema::new(fields).with_metadata(HashMap::from([(WINDOWS_KEY.to_string(), spec)])))
}

/// Schema-metadata key of the window table holding the `sliding_windows`
/// parameters (JSON), so a model trained on it can check W, the object
/// counts and the feature lists, and rebuild identical tensors.
pub const WINDOWS_KEY: &str = "dqm.medic.windows";

/// The `order` table: the shuffled event sequence and its blocks.
pub fn order_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column(
            "position",
            DataType::Int64,
            "Position in the shuffled event sequence",
        ),
        column("event_id", DataType::Int64, "The event at this position"),
        column("block", DataType::Utf8, "train or test"),
        nullable(
            "fold",
            DataType::Int32,
            "split: blocks: the train sub-block (1..folds) of the position; null in the test block and for split: windows",
        ),
    ]))
}

/// Per-feature mean and standard deviation of real objects (padding excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub track_mean: Vec<f32>,
    pub track_std: Vec<f32>,
    pub tower_mean: Vec<f32>,
    pub tower_std: Vec<f32>,
    pub met_mean: Vec<f32>,
    pub met_std: Vec<f32>,
}

// ---- The models table (`medic_train`) ----

/// Schema-metadata key of the models table: the [`ModelSpec`] as JSON, so
/// inference can check at plan time that its windows fit the models.
pub const MODEL_KEY: &str = "dqm.medic.model";

/// What every fold of an ensemble shares: the network and the windows it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: MedicArch,
    /// The `sliding_windows` parameters of the training windows.
    pub windows: WindowSpec,
    pub normalize_features: bool,
    pub folds: usize,
    /// Energies and momenta enter as ln(1 + x) (`medic_train`
    /// `log_energies`); absent (false) in older models.
    #[serde(default)]
    pub log_energies: bool,
}

/// One fold's model card, stored as JSON next to its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    #[serde(flatten)]
    pub spec: ModelSpec,
    /// 1-based fold number.
    pub fold: usize,
    /// Standardization of the inputs (from the train block), when enabled.
    pub normalization: Option<FeatureStats>,
}

impl ModelSpec {
    /// The spec of an ensemble of `folds` default-sized MEDIC networks for
    /// windows made with `windows`.
    pub fn new(
        windows: WindowSpec,
        mask_padding: bool,
        normalize_features: bool,
        folds: usize,
    ) -> Self {
        Self {
            arch: MedicArch {
                track_features: windows.track_features.len() as i64,
                tower_features: windows.tower_features.len() as i64,
                met_features: windows.met_features.len() as i64,
                classes: windows.n_classes as i64,
                mask_padding,
                ..MedicArch::default()
            },
            windows,
            normalize_features,
            folds,
            log_energies: false,
        }
    }

    /// Reads the spec from a models table's schema.
    pub fn from_schema(schema: &SchemaRef, input: &str) -> Result<Self> {
        let json = schema.metadata().get(MODEL_KEY).ok_or_else(|| {
            StageError::data(format!(
                "input `{input}` is not a MEDIC models table (from `medic_train`): its schema has no `{MODEL_KEY}` metadata"
            ))
        })?;
        serde_json::from_str(json).map_err(|e| {
            StageError::data(format!("input `{input}`: unreadable `{MODEL_KEY}`: {e}"))
        })
    }

    /// Checks that windows made with `windows` have the shape and features
    /// this model was trained on.
    pub fn check_windows(&self, windows: &WindowSpec, input: &str) -> Result<()> {
        let m = &self.windows;
        let fmt = |v: &dyn std::fmt::Debug| format!("{v:?}");
        let compared: [(&str, String, String); 7] = [
            ("W (window)", fmt(&m.window), fmt(&windows.window)),
            ("n_tracks", fmt(&m.n_tracks), fmt(&windows.n_tracks)),
            ("n_towers", fmt(&m.n_towers), fmt(&windows.n_towers)),
            ("n_classes", fmt(&m.n_classes), fmt(&windows.n_classes)),
            (
                "track_features",
                fmt(&m.track_features),
                fmt(&windows.track_features),
            ),
            (
                "tower_features",
                fmt(&m.tower_features),
                fmt(&windows.tower_features),
            ),
            (
                "met_features",
                fmt(&m.met_features),
                fmt(&windows.met_features),
            ),
        ];
        match compared
            .into_iter()
            .find(|(_, model, found)| model != found)
        {
            Some((what, model, found)) => Err(StageError::data(format!(
                "input `{input}`: windows have {what} = {found}, but the model was trained with {what} = {model}"
            ))),
            None => Ok(()),
        }
    }
}

/// The first field whose value differs between window parameters `a` and
/// `b`, as they serialize (to name it in an error).
pub fn first_difference(a: &WindowSpec, b: &WindowSpec) -> Option<String> {
    let (a, b) = (serde_json::to_value(a).ok()?, serde_json::to_value(b).ok()?);
    let (a, b) = (a.as_object()?, b.as_object()?);
    a.iter()
        .find(|(key, value)| b.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
}

/// The models table of `medic_train`: one row per fold, card and weights.
pub fn models_schema(spec: &ModelSpec) -> SchemaRef {
    let meta = serde_json::to_string(spec).expect("plain data serializes");
    Arc::new(
        Schema::new(vec![
            column("fold", DataType::Int32, "Fold number, 1 to k"),
            column(
                "best_epoch",
                DataType::Int32,
                "Epoch whose parameters were kept (lowest validation KL)",
            ),
            column("epochs", DataType::Int32, "Epochs run before stopping"),
            column("val_kl", DataType::Float64, "Validation KL at best_epoch"),
            column(
                "val_accuracy",
                DataType::Float64,
                "Validation accuracy (argmax vs argmax of the soft label) at best_epoch",
            ),
            column(
                "val_brier",
                DataType::Float64,
                "Validation Brier score (eq. 3.3: sum over classes, mean over windows) at best_epoch",
            ),
            column("train_windows", DataType::Int64, "Windows the fold trained on"),
            column("val_windows", DataType::Int64, "Windows of the fold's validation part"),
            column(
                "card",
                DataType::Utf8,
                "Model card JSON: architecture, window parameters, input standardization",
            ),
            column(
                "weights",
                DataType::Binary,
                "The fold's parameters and batch-norm statistics as a safetensors file",
            ),
        ])
        .with_metadata(HashMap::from([(MODEL_KEY.to_string(), meta)])),
    )
}

// ---- The predictions table (`medic_infer`, `medic_baseline`) ----

/// Which windows to score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Blocks {
    /// The held-out test block (what the metrics are computed on).
    #[default]
    Test,
    /// The train block.
    Train,
    /// Both.
    All,
}

/// The predictions table: the window's truth, the ensemble mean and vote.
pub fn predictions_schema(n_classes: usize, metadata: HashMap<String, String>) -> SchemaRef {
    let mut fields = vec![
        column("window_id", DataType::Int64, "Window id (window table)"),
        column("block", DataType::Utf8, "train or test"),
        column(
            "start",
            DataType::Int64,
            "Position of the window's first event in the shuffled order: windows in time order",
        ),
    ];
    for c in 0..n_classes {
        fields.push(column(
            &format!("p_{c}"),
            DataType::Float64,
            &format!("True fraction of class {c} in the window (soft label)"),
        ));
    }
    fields.push(column(
        "argmax_class",
        DataType::Int8,
        "True class: argmax of the soft label (lowest index on ties)",
    ));
    for c in 0..n_classes {
        fields.push(column(
            &format!("prob_{c}"),
            DataType::Float64,
            &format!("Ensemble-mean predicted probability of class {c} (eq. 3.6)"),
        ));
    }
    fields.extend([
        column(
            "vote",
            DataType::Int8,
            "Majority vote of the folds' argmax classes (eq. 3.4); ties go to the larger ensemble-mean probability"),
        column(
            "vote_share",
            DataType::Float64,
            "Fraction of folds voting for `vote`"),
        column(
            "anomaly_score",
            DataType::Float64,
            "1 − ensemble-mean probability of the normal class"),
    ]);
    Arc::new(Schema::new(fields).with_metadata(metadata))
}
/// Classes of a predictions table: its `prob_<c>` columns.
fn n_classes(schema: &SchemaRef) -> usize {
    (0..)
        .take_while(|c| schema.index_of(&format!("prob_{c}")).is_ok())
        .count()
}

/// Plan-time check of a predictions table (`medic_infer`,
/// `medic_baseline`); returns its number of classes.
pub fn check_predictions(schema: &SchemaRef, input: &str) -> Result<usize> {
    let why = "medic_metrics reads the predictions of `medic_infer`";
    let nc = n_classes(schema);
    if nc < 2 {
        return Err(StageError::missing_column(
            input,
            "prob_0, prob_1, ...",
            why,
        ));
    }
    let f64_ = |t: &DataType| t == &DataType::Float64;
    for c in 0..nc {
        require_column(schema, input, &format!("p_{c}"), why, "Float64", f64_)?;
        require_column(schema, input, &format!("prob_{c}"), why, "Float64", f64_)?;
    }
    for c in ["argmax_class", "vote"] {
        require_column(schema, input, c, why, "Int8", |t| t == &DataType::Int8)?;
    }
    for c in ["start", "window_id"] {
        require_column(schema, input, c, why, "Int64", |t| t == &DataType::Int64)?;
    }
    Ok(nc)
}

/// A predictions table, read into memory.
pub fn read_predictions(input: &Input) -> Result<Predictions> {
    let nc = check_predictions(&input.schema, &input.name)?;
    let mut p = Predictions {
        truth: vec![Vec::new(); nc],
        argmax: Vec::new(),
        prob: vec![Vec::new(); nc],
        vote: Vec::new(),
        start: Vec::new(),
        window_id: Vec::new(),
    };
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str| batch.column_by_name(n).expect("checked").clone();
        for c in 0..nc {
            p.truth[c].extend(
                col(&format!("p_{c}"))
                    .as_primitive::<Float64Type>()
                    .values(),
            );
            p.prob[c].extend(
                col(&format!("prob_{c}"))
                    .as_primitive::<Float64Type>()
                    .values(),
            );
        }
        p.argmax.extend(
            col("argmax_class")
                .as_primitive::<Int8Type>()
                .values()
                .iter()
                .map(|&v| v as usize),
        );
        p.start
            .extend(col("start").as_primitive::<Int64Type>().values());
        p.window_id
            .extend(col("window_id").as_primitive::<Int64Type>().values());
        p.vote.extend(
            col("vote")
                .as_primitive::<Int8Type>()
                .values()
                .iter()
                .map(|&v| v as usize),
        );
    }
    if p.vote.is_empty() {
        return Err(StageError::data(format!(
            "input `{}` has no predictions",
            input.name
        )));
    }
    if let Some(i) = (0..p.vote.len()).find(|&i| p.argmax[i] >= nc || p.vote[i] >= nc) {
        return Err(StageError::data(format!(
            "input `{}`: row {i} has a class outside 0..{nc}",
            input.name
        )));
    }
    Ok(p)
}

/// One point of a training curve: a fold's epoch in the training log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub fold: i32,
    pub epoch: i32,
    pub train_kl: f64,
    pub val_kl: f64,
}

/// The training and validation KL of every fold and epoch of a training
/// log ([`log_schema`]), in table order.
pub fn read_training_curves(log: &Input) -> Result<Vec<CurvePoint>> {
    let why = "the training log of `medic_train` (for the training-curve plot)";
    for c in ["fold", "epoch"] {
        require_column(&log.schema, &log.name, c, why, "Int32", |t| {
            t == &DataType::Int32
        })?;
    }
    for c in ["train_kl", "val_kl"] {
        require_column(&log.schema, &log.name, c, why, "Float64", |t| {
            t == &DataType::Float64
        })?;
    }
    let mut points = Vec::new();
    for batch in log.batches() {
        let batch = batch?;
        let col = |n: &str| batch.column_by_name(n).expect("checked").clone();
        let (fold, epoch, train, val) = (col("fold"), col("epoch"), col("train_kl"), col("val_kl"));
        let (fold, epoch) = (
            fold.as_primitive::<Int32Type>(),
            epoch.as_primitive::<Int32Type>(),
        );
        let (train, val) = (
            train.as_primitive::<Float64Type>(),
            val.as_primitive::<Float64Type>(),
        );
        for i in 0..batch.num_rows() {
            points.push(CurvePoint {
                fold: fold.value(i),
                epoch: epoch.value(i),
                train_kl: train.value(i),
                val_kl: val.value(i),
            });
        }
    }
    Ok(points)
}

// ---- The training log and folds (`medic_train`) ----

/// `medic_train`'s training log (its `log` output; `medic_metrics` plots
/// it): one row per fold and epoch.
pub fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("fold", DataType::Int32, "Fold number, 1 to k"),
        column("epoch", DataType::Int32, "Epoch, from 1"),
        column(
            "train_kl",
            DataType::Float64,
            "Mean class-weighted KL over the training part (the loss minimized)",
        ),
        column(
            "train_accuracy",
            DataType::Float64,
            "Accuracy on the training part, in training mode (dropout on)",
        ),
        column(
            "train_brier",
            DataType::Float64,
            "Brier score on the training part",
        ),
        column(
            "val_kl",
            DataType::Float64,
            "Mean KL over the validation part",
        ),
        column(
            "val_accuracy",
            DataType::Float64,
            "Accuracy on the validation part",
        ),
        column(
            "val_brier",
            DataType::Float64,
            "Brier score on the validation part",
        ),
        nullable(
            "val_event_accuracy",
            DataType::Float64,
            "Accuracy of the per-event head on the validation events (null without one)",
        ),
        column(
            "improved",
            DataType::Boolean,
            "Whether this epoch lowered the best validation KL (its parameters were kept)",
        ),
    ]))
}

/// `medic_train`'s `folds` output: which fold validates each train window.
pub fn folds_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("window_id", DataType::Int64, "A train-block window"),
        column(
            "fold",
            DataType::Int32,
            "The fold whose model validates on this window (all other folds train on it)",
        ),
    ]))
}

/// The window and model parameters the predictions carry on (schema
/// metadata), so metrics know W and the ensemble size.
pub fn carried_metadata(windows: &SchemaRef, models: &SchemaRef) -> HashMap<String, String> {
    [(WINDOWS_KEY, windows), (MODEL_KEY, models)]
        .into_iter()
        .filter_map(|(key, schema)| Some((key.to_string(), schema.metadata().get(key)?.clone())))
        .collect()
}

/// The events table with the default features (documentation examples).
pub fn example_events_schema() -> SchemaRef {
    events::schema(
        &strings(&TRACK_FEATURES),
        &strings(&TOWER_FEATURES),
        &strings(&MET_FEATURES),
    )
}

/// The three inputs of a model stage for default windows: windows, order,
/// events (documentation examples).
pub fn example_window_inputs() -> Vec<SchemaRef> {
    let windows = WindowSpec::default();
    vec![
        windows_schema(&windows),
        order_schema(),
        example_events_schema(),
    ]
}

/// The models table of a default ensemble on default windows.
pub fn example_models_schema() -> SchemaRef {
    let windows = WindowSpec::default();
    models_schema(&ModelSpec::new(windows, false, true, 5))
}

/// The predictions table of a default ensemble on default windows.
pub fn example_predictions_schema() -> SchemaRef {
    let spec = WindowSpec::default();
    predictions_schema(
        spec.n_classes,
        carried_metadata(&windows_schema(&spec), &example_models_schema()),
    )
}
