//! The layout rules of `stages/README.md`, checked on the source tree: a
//! stage kind lives in a file named after it, dependencies point one way
//! (contract <- stages <- registry), and the stage files of one family share
//! formats through the family's modules, not through each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `stages/src`, by path relative to it.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &src(), &mut out);
    out
}

/// The part of a file before its test module.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap()
}

/// `use` lines and inline paths that name `module` (as `crate::<module>`).
fn names(text: &str, module: &str) -> bool {
    text.contains(&format!("crate::{module}"))
}

#[test]
fn every_kind_lives_in_a_file_named_after_it() {
    let sources = sources();
    for kind in dqm_stages::registry::all() {
        let file = format!("{}.rs", kind.name);
        let found: Vec<&String> = sources
            .keys()
            .filter(|p| Path::new(p).file_name().unwrap().to_str() == Some(&file))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "stage kind `{}`: files {found:?}",
            kind.name
        );
        let text = &sources[found[0]];
        assert!(
            text.contains(&format!("const KIND: &'static str = \"{}\";", kind.name)),
            "{} does not declare KIND = \"{}\"",
            found[0],
            kind.name
        );
    }
}

#[test]
fn only_the_library_root_and_nothing_else_reaches_the_registry() {
    for (path, text) in sources() {
        if path == "registry.rs" || path == "lib.rs" {
            continue;
        }
        assert!(
            !names(&text, "registry") && !text.contains("registry::"),
            "{path} imports the registry: stages import the contract (stage, error, input), never the list of stages"
        );
    }
}

#[test]
fn the_contract_imports_no_stage_and_no_helper() {
    let sources = sources();
    let contract = ["stage.rs", "error.rs", "input.rs"];
    for path in contract {
        let text = &sources[path];
        for (other, _) in sources.iter() {
            let module = other.trim_end_matches(".rs").trim_end_matches("/mod");
            let module = module.split('/').next().unwrap();
            // The contract may use itself and one Arrow helper (casting a
            // key column while scanning row groups).
            if contract.contains(&other.as_str()) || module == "arrow_util" {
                continue;
            }
            assert!(
                !names(non_test(text), &format!("{module}::")),
                "{path} (the stage contract) imports `{module}`"
            );
        }
    }
}

#[test]
fn stage_files_of_a_family_do_not_import_each_other() {
    let sources = sources();
    let kinds: Vec<&'static str> = dqm_stages::registry::all().iter().map(|k| k.name).collect();
    // (family, kind) of every stage file inside a family directory.
    let stage_files: Vec<(String, String)> = sources
        .keys()
        .filter_map(|p| {
            let (family, file) = p.split_once('/')?;
            let kind = file.strip_suffix(".rs")?;
            kinds
                .contains(&kind)
                .then(|| (family.to_string(), kind.to_string()))
        })
        .collect();
    assert!(stage_files.len() >= 10, "{stage_files:?}");
    for (family, kind) in &stage_files {
        let text = non_test(&sources[&format!("{family}/{kind}.rs")]);
        for (other_family, other) in &stage_files {
            if other == kind {
                continue;
            }
            for path in [
                format!("crate::{other_family}::{other}"),
                format!("super::{other}"),
            ] {
                assert!(
                    !text.contains(&path),
                    "{family}/{kind}.rs uses `{path}` outside its tests: move what they share to the family's tables or data module"
                );
            }
        }
    }
}
