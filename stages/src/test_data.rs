//! The bundled Delphes sample (`data/delphes/`) for the tests of every
//! family that reads Delphes events.

use crate::in_memory::{input_from_batch, run_in_memory};
use crate::input::Input;
use crate::medic::delphes_convert::{DelphesConvert, FileGroup};

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
