//! The MEDIC family's test fixtures, and the bundled Delphes sample
//! (`data/delphes/`) as an events table for every family that reads Delphes
//! events (hcal and lumi tests use [`bundled_convert`] and [`converted`]).

use crate::in_memory::{input_from_batch, run_in_memory};
use crate::input::Input;
use crate::medic::delphes_convert::{DelphesConvert, FileGroup};
use crate::medic::metrics::Predictions;
use crate::medic::tables::WindowSpec;

/// Path of a bundled file, `dijet13_<label>_tiny.root`.
pub fn bundled(label: &str) -> String {
    format!(
        "{}/../data/delphes/dijet13_{label}_tiny.root",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A converter of the bundled files of `labels`, default features.
pub fn bundled_convert(labels: &[&str]) -> DelphesConvert {
    DelphesConvert {
        files: labels
            .iter()
            .map(|l| FileGroup {
                path: bundled(l),
                label: l.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Runs `convert` and writes its events table to `dir`.
pub fn converted(dir: &std::path::Path, convert: &DelphesConvert) -> Input {
    let batch = run_in_memory(convert, &[]).unwrap().table("main");
    input_from_batch("events", &batch, &dir.join("events.parquet")).unwrap()
}

/// Converts the bundled files of `labels` and writes them to `dir`.
pub fn bundled_events(dir: &std::path::Path, labels: &[&str]) -> Input {
    converted(dir, &bundled_convert(labels))
}

/// The three inputs of a MEDIC model stage (windows, order, events) for
/// small windows of the bundled `normal` and `hcal_barrel_off` files, the
/// train block cut into `folds` sub-blocks.
pub fn model_inputs(
    dir: &std::path::Path,
    window: usize,
    train_fraction: f64,
    folds: usize,
) -> Vec<Input> {
    model_inputs_with(
        dir,
        WindowSpec {
            window,
            seed: 11,
            train_fraction,
            folds,
            ..Default::default()
        },
    )
}

/// [`model_inputs`] for any window parameters.
pub fn model_inputs_with(dir: &std::path::Path, spec: WindowSpec) -> Vec<Input> {
    let window = spec.window;
    let events = bundled_events(dir, &["normal", "hcal_barrel_off"]);
    let cfg = crate::medic::sliding_windows::SlidingWindows(spec);
    let out = run_in_memory(&cfg, std::slice::from_ref(&events)).unwrap();
    let windows = input_from_batch(
        "windows",
        &out.table("main"),
        &dir.join(format!("windows{window}.parquet")),
    )
    .unwrap();
    let order = input_from_batch(
        "order",
        &out.table("order"),
        &dir.join(format!("order{window}.parquet")),
    )
    .unwrap();
    vec![windows, order, events]
}

/// Four windows of two classes (0 normal) with figures worked by hand.
pub fn hand_made_predictions() -> Predictions {
    // 4 windows, 2 classes; class 0 = normal.
    Predictions {
        truth: vec![vec![1.0, 0.6, 0.2, 0.0], vec![0.0, 0.4, 0.8, 1.0]],
        argmax: vec![0, 0, 1, 1],
        prob: vec![vec![0.9, 0.4, 0.3, 0.2], vec![0.1, 0.6, 0.7, 0.8]],
        vote: vec![0, 1, 1, 1],
        start: vec![0, 1, 2, 3],
        window_id: vec![10, 11, 12, 13],
    }
}

/// A MEDIC network of `arch` on the CPU, initialized from seed 1.
pub fn medic(
    arch: crate::medic::model::MedicArch,
) -> (tch::nn::VarStore, crate::medic::model::Medic) {
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let m = crate::medic::model::Medic::new(&vs.root(), arch);
    (vs, m)
}
