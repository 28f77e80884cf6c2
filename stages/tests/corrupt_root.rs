//! Regression tests for the fuzzing findings (`scripts/reliability/fuzz.sh`,
//! `tests/fixtures/fuzz_findings.json`): corrupt Delphes files, each a few
//! byte writes over a bundled file, that made the ROOT reader ask for up to
//! 2 GiB in one allocation (a length read from the file sized a buffer
//! before anything checked it). Each must now end in a clear error naming
//! the file, without a panic escaping the stage and — through the capped
//! allocator below, as in the fuzz harness — without any single allocation
//! above 256 MiB (the process aborts if one is asked for, failing the run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;

use dqm_stages::in_memory::run_in_memory;
use dqm_stages::medic::delphes_convert::{DelphesConvert, FileGroup};
use dqm_stages::stage::Stage;
use serde_json::Value;

const BOUND: usize = 256 << 20;

struct Capped;

// SAFETY: forwards every call to the system allocator; only aborts before.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > BOUND {
            std::process::abort();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > BOUND {
            std::process::abort();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > BOUND {
            std::process::abort();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The finding's file: its byte writes over the base, then the truncation.
fn corrupt_copy(finding: &Value, dir: &std::path::Path, index: usize) -> PathBuf {
    let base = repo().join(finding["base"].as_str().unwrap());
    let mut bytes = std::fs::read(&base).unwrap();
    for write in finding["writes"].as_array().unwrap() {
        let at = write[0].as_u64().unwrap() as usize;
        let new = hex(write[1].as_str().unwrap());
        bytes[at..at + new.len()].copy_from_slice(&new);
    }
    if let Some(n) = finding["truncate"].as_u64() {
        bytes.truncate(n as usize);
    }
    let path = dir.join(format!("finding-{index}.root"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_fuzz_finding_is_a_clear_error_without_a_huge_allocation() {
    let text =
        std::fs::read_to_string(repo().join("stages/tests/fixtures/fuzz_findings.json")).unwrap();
    let findings: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(findings.len() >= 8, "the findings file lists them all");
    let dir = tempfile::tempdir().unwrap();
    for (i, finding) in findings.iter().enumerate() {
        let what = finding["what"].as_str().unwrap();
        // Each finding asked for more than the bound before the fixes.
        assert!(
            finding["requested_bytes"].as_u64().unwrap() > BOUND as u64,
            "{what}"
        );
        let path = corrupt_copy(finding, dir.path(), i);
        let mut stage = DelphesConvert {
            files: vec![FileGroup {
                path: path.display().to_string(),
                label: "normal".into(),
            }],
            entries_per_batch: 200,
            ..Default::default()
        };
        if finding["jets"].as_bool().unwrap() {
            stage.jet_features = vec!["PT".into(), "Eta".into(), "Phi".into()];
            stage.scalar_ht = true;
        }
        let err = stage
            .outputs(&[])
            .and_then(|_| run_in_memory(&stage, &[]))
            .err()
            .unwrap_or_else(|| panic!("{what}: read without an error"))
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{what}: {err}");
        let expect = finding["expect"].as_str().unwrap();
        assert!(
            err.contains(expect),
            "{what}: expected `{expect}` in: {err}"
        );
    }
}

/// `dqm-fuzz dqm` (seed 7, input 194239): six bit flips in a DQM file made
/// a TH3's axes claim ~2^31 bins each, and the cell count overflowed
/// (a panic in a debug build, a wrong count in a release one). Now a clear
/// error naming the file.
#[test]
fn a_histogram_whose_axes_overflow_the_cell_count_is_a_clear_error() {
    use dqm_stages::dqm::dqm_root::{DqmRoot, OtherClasses};
    let finding = serde_json::json!({
        "base": "data/dqm/reader/DQM_V0001_R000355114__JetMET__Run2022E-Example__DQMIO.root",
        "writes": [[107734, "63"], [62105, "3a"], [2764, "b5"], [23747, "d0"], [102564, "20"], [51981, "08"]],
        "truncate": null,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = corrupt_copy(&finding, dir.path(), 0);
    let stage = DqmRoot {
        files: path.display().to_string(),
        mes: vec!["**".into()],
        other_classes: OtherClasses::Skip,
        batch_size: 16,
        ..Default::default()
    };
    let err = run_in_memory(&stage, &[]).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("overflow the number of cells"), "{err}");
}
