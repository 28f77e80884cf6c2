//! MEDIC (medic.txt): Delphes events to the tables the MEDIC classifier
//! trains on.

pub mod alerts;
pub mod batches;
pub mod data;
pub mod delphes_convert;
pub mod filter_events;
pub mod medic_baseline;
pub mod medic_infer;
pub mod medic_metrics;
pub mod medic_train;
pub mod model;
pub mod sliding_windows;
pub mod tables;

/// The bundled Delphes sample as an events table, for the MEDIC stages' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use crate::medic::tables::WindowSpec;

    /// Converts the bundled files of `labels` and writes them to `dir`.
    pub fn bundled_events(dir: &std::path::Path, labels: &[&str]) -> Input {
        crate::test_data::converted(dir, &crate::test_data::bundled_convert(labels))
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
}
