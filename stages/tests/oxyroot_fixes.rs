//! The vendored oxyroot fixes (vendor/README.md), each exercised on real
//! Delphes files written by ROOT 6.40, value by value against numbers read
//! independently with uproot 5 (`tests/fixtures/delphes_uproot.json`).

use std::path::PathBuf;

use oxyroot::{RootFile, Slice};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> Value {
    let text =
        std::fs::read_to_string(repo().join("stages/tests/fixtures/delphes_uproot.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Count, float64 sum and the first 3 values of entry 7 of one branch.
fn summarize(path: &PathBuf, branch: &str) -> (usize, f64, Vec<f64>) {
    let mut file = RootFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tree = file.get_tree("Delphes").unwrap();
    let b = tree
        .branch(branch)
        .unwrap_or_else(|| panic!("{}: no branch {branch}", path.display()));
    let rows: Vec<Vec<f64>> = if branch == "Tower.NTimeHits" {
        b.as_iter::<Slice<i32>>()
            .unwrap()
            .map(|s| s.into_vec().into_iter().map(f64::from).collect())
            .collect()
    } else {
        b.as_iter::<Slice<f32>>()
            .unwrap()
            .map(|s| s.into_vec().into_iter().map(f64::from).collect())
            .collect()
    };
    assert_eq!(
        rows.len() as i64,
        tree.entries(),
        "{branch}: one row per entry"
    );
    let count = rows.iter().map(Vec::len).sum();
    let sum = rows.iter().flatten().sum();
    (count, sum, rows[7].iter().take(3).copied().collect())
}

fn check_file(path: PathBuf, expected: &Value) {
    for (branch, want) in expected["branches"].as_object().unwrap() {
        let (count, sum, entry7) = summarize(&path, branch);
        assert_eq!(
            count as u64,
            want["count"].as_u64().unwrap(),
            "{}: {branch} count",
            path.display()
        );
        let want_sum = want["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
            "{}: {branch} sum {sum} vs {want_sum}",
            path.display()
        );
        // The stored values are float32: compare them exactly at that precision.
        let want7: Vec<f32> = want["entry7"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got7: Vec<f32> = entry7.iter().map(|&v| v as f32).collect();
        assert_eq!(got7, want7, "{}: {branch} entry 7", path.display());
    }
}

/// Fixes 1-3: streamer titles with `[` inside (0.1.25: `todo!()` panic),
/// TStreamerInfo v10 and TAttMarker v3 (0.1.25: version errors). Every
/// MEDIC branch of the four bundled files equals uproot's values.
#[test]
fn bundled_delphes_files_read_identically_to_uproot() {
    let fixture = fixture();
    for name in [
        "dijet13_normal_tiny.root",
        "dijet13_hcal_barrel_off_tiny.root",
        "dijet13_hcal_endcap_off_tiny.root",
        "dijet13_hcal_forward_off_tiny.root",
    ] {
        check_file(
            repo().join("data/delphes").join(name),
            &fixture["files"][name],
        );
    }
}

/// Fix 4: ZSTD (0.1.25: `unimplemented!()`), and the rewritten chunk loop
/// for LZ4 and LZMA: the same 500 events in each compression read
/// identically. These files are the shared reference set, beside the clone
/// (`../shared`, or `$DQM_SHARED`), as on CI.
#[test]
fn zstd_lz4_and_lzma_files_read_identically_to_uproot() {
    let shared = std::env::var_os("DQM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    let dir = shared.join("delphes/compression");
    assert!(
        dir.is_dir(),
        "{} is missing: set DQM_SHARED to the shared data directory",
        dir.display()
    );
    let fixture = fixture();
    for algo in ["zstd", "lz4", "lzma"] {
        let name = format!("dijet13_normal_tiny_{algo}.root");
        check_file(dir.join(&name), &fixture["files"][name.as_str()]);
        // And the same numbers as the ZLIB original.
        assert_eq!(
            fixture["files"][name.as_str()]["branches"],
            fixture["files"]["dijet13_normal_tiny.root"]["branches"]
        );
    }
}
