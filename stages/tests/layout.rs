//! The layout rules of `stages/README.md`, checked on the source tree:
//! every family has the same skeleton (`mod.rs` listing its modules by
//! role, `tables.rs`, library modules, stage files, `test_support.rs`), a
//! stage kind lives in a file named after it, dependencies point one way
//! (contract <- library <- formats <- shared stage code <- stages <-
//! registry) with no circle anywhere in `stages/src` or `src`, stages build
//! errors through the contract's constructors, and no source file or `run`
//! grows past what a reader can hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `root`, by path relative to it (`/`-separated).
fn rust_files(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Every `.rs` file under `stages/src`.
fn sources() -> BTreeMap<String, String> {
    rust_files(&src())
}

/// The registry's kind names.
fn kinds() -> BTreeSet<&'static str> {
    dqm_stages::registry::all().iter().map(|k| k.name).collect()
}

// ---- Reading Rust source: comments, test code, `use` trees ----

/// `text` without comments and string contents (kept as `""`), so that
/// paths in docs or messages are not taken for imports.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            out.push_str("\"\"");
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A character literal such as '"' or '{'.
            out.push_str("' '");
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped character literal: skip to its closing quote.
            let close = text[i + 2..].find('\'').map_or(b.len(), |k| i + 3 + k);
            out.push_str("' '");
            i = close;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `code` (from [`code_only`]) without the items under `#[cfg(test)]`.
fn non_test(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its closing brace, or at `;` if it has none.
        let brace = item.find('{');
        let semi = item.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (k, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The paths of one `use` tree: `a::{b, c::{d, e as f}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return vec![path.replace(char::is_whitespace, "")];
    };
    let prefix = tree[..open].replace(char::is_whitespace, "");
    let body = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand_use(p).into_iter().map(|s| format!("{prefix}{s}")))
        .collect()
}

/// The module a file defines: `dinamo/tables.rs` -> `dinamo::tables`,
/// `dinamo/mod.rs` -> `dinamo`, `lib.rs`/`main.rs` -> the crate root `""`.
fn module_of(file: &str) -> String {
    let m = file.trim_end_matches(".rs");
    let m = m.strip_suffix("/mod").unwrap_or(m);
    if m == "lib" || m == "main" {
        return String::new();
    }
    m.replace('/', "::")
}

/// The modules of a crate that `module` names in `code` (its `use` trees and
/// inline `crate::`/`super::` paths), each the longest module prefix of a path.
fn imports(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let tail = &rest[at + 3..];
        let end = tail.find(';').unwrap_or(tail.len());
        paths.extend(expand_use(&tail[..end]));
        rest = &tail[end..];
    }
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(at) = find_word(rest, start.trim_end_matches("::")) {
            let tail = &rest[at..];
            // `super::super::x`: the path was read from its first segment.
            if tail.starts_with(start) && !rest[..at].ends_with("::") {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                // `crate::{..}` opens a use tree, read above.
                if !tail[..end].ends_with("::") {
                    paths.push(tail[..end].to_string());
                }
            }
            rest = &rest[at + 1..];
        }
    }
    let here: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut out = BTreeSet::new();
    for path in paths {
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let Some(first) = segments.first() else {
            continue;
        };
        let (mut full, mut k): (Vec<&str>, usize) = match *first {
            "crate" => (Vec::new(), 1),
            "self" => (here.clone(), 1),
            "super" => (here.clone(), 0),
            _ => continue,
        };
        while segments.get(k) == Some(&"super") {
            full.pop();
            k += 1;
        }
        full.extend(&segments[k..]);
        for len in (0..=full.len()).rev() {
            let candidate = full[..len].join("::");
            if modules.contains(&candidate) {
                if candidate != module {
                    out.insert(candidate);
                }
                break;
            }
        }
    }
    out
}

/// Position of `word` in `text` as a whole word.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(k) = text[from..].find(word) {
        let at = from + k;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Module -> the modules it imports outside its tests, for the crate whose
/// files are `files` (relative to the crate's source root).
fn import_graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.keys().map(|f| module_of(f)).collect();
    files
        .iter()
        .map(|(file, text)| {
            let module = module_of(file);
            let deps = imports(&module, &non_test(&code_only(text)), &modules);
            (module, deps)
        })
        .collect()
}

/// A circle of imports, if the graph has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

// ---- The families' skeleton ----

/// The role of a module in its family, as its `mod.rs` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `tables.rs`: formats more than one file uses.
    Formats,
    /// Networks and algorithms on plain types.
    Library,
    /// Code the family's stages share that reads its tables.
    Shared,
    /// One stage kind.
    Stage,
    /// `test_support.rs`, under `#[cfg(test)]`.
    Fixtures,
}

/// The headings of a family's `mod.rs`, each starting a group of modules.
const HEADINGS: [(&str, Role); 5] = [
    ("// Formats", Role::Formats),
    ("// Library", Role::Library),
    ("// Shared", Role::Shared),
    ("// Stages", Role::Stage),
    ("// Fixtures", Role::Fixtures),
];

/// The family directories of `stages/src`.
fn families(sources: &BTreeMap<String, String>) -> BTreeSet<String> {
    sources
        .keys()
        .filter_map(|p| p.split_once('/').map(|(family, _)| family.to_string()))
        .collect()
}

/// Module name -> role, read from `<family>/mod.rs`; panics on a line that
/// is neither a doc comment, a heading, a module declaration nor blank.
fn roles(family: &str, mod_rs: &str) -> BTreeMap<String, Role> {
    let mut role = None;
    let mut out = BTreeMap::new();
    let mut test_only = false;
    for line in mod_rs.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//!") {
            continue;
        }
        if let Some((_, r)) = HEADINGS.iter().find(|(h, _)| line.starts_with(h)) {
            role = Some(*r);
            continue;
        }
        if line.starts_with("//") {
            continue; // the heading's continuation
        }
        if line == "#[cfg(test)]" {
            test_only = true;
            continue;
        }
        let name = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .and_then(|l| l.strip_suffix(';'))
            .unwrap_or_else(|| {
                panic!(
                    "{family}/mod.rs: `{line}`: a family's mod.rs holds its doc and its module list only (move code to tables.rs, a library module or test_support.rs)"
                )
            });
        let role = role.unwrap_or_else(|| {
            panic!("{family}/mod.rs: `{line}` comes before any heading ({HEADINGS:?})")
        });
        assert_eq!(
            test_only,
            role == Role::Fixtures,
            "{family}/mod.rs: `{name}`: only the fixtures (test_support) are #[cfg(test)]"
        );
        test_only = false;
        assert!(
            out.insert(name.to_string(), role).is_none(),
            "{family}/mod.rs lists `{name}` twice"
        );
    }
    out
}

/// (family, module) -> role, for every family.
fn all_roles(sources: &BTreeMap<String, String>) -> BTreeMap<(String, String), Role> {
    let mut out = BTreeMap::new();
    for family in families(sources) {
        let mod_rs = sources
            .get(&format!("{family}/mod.rs"))
            .unwrap_or_else(|| panic!("family `{family}` has no mod.rs"));
        for (module, role) in roles(&family, mod_rs) {
            out.insert((family.clone(), module), role);
        }
    }
    out
}

#[test]
fn every_family_has_the_skeleton_and_its_mod_rs_lists_each_module_by_role() {
    let sources = sources();
    let kinds = kinds();
    let roles = all_roles(&sources);
    let families = families(&sources);
    assert!(families.len() >= 5, "{families:?}");
    for family in &families {
        let files: BTreeSet<String> = sources
            .keys()
            .filter_map(|p| p.strip_prefix(&format!("{family}/")))
            .filter(|f| *f != "mod.rs")
            .map(|f| {
                assert!(!f.contains('/'), "{family}/{f}: families are flat");
                f.trim_end_matches(".rs").to_string()
            })
            .collect();
        let listed: BTreeSet<String> = roles
            .keys()
            .filter(|(f, _)| f == family)
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(
            files, listed,
            "{family}/mod.rs must list every file of the family once"
        );
        assert_eq!(
            roles.get(&(family.clone(), "tables".into())),
            Some(&Role::Formats),
            "{family} has no tables.rs under `// Formats`"
        );
        for module in &files {
            let role = roles[&(family.clone(), module.clone())];
            let is_kind = kinds.contains(module.as_str());
            assert_eq!(
                role == Role::Stage,
                is_kind,
                "{family}/{module}.rs: under `// Stages` exactly when it is a registry kind"
            );
            assert_eq!(
                role == Role::Formats,
                module == "tables",
                "{family}/{module}.rs: `// Formats` holds tables.rs only"
            );
            assert_eq!(
                role == Role::Fixtures,
                module == "test_support",
                "{family}/{module}.rs: `// Fixtures` holds test_support.rs only"
            );
        }
    }
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

/// Module path (`dinamo::dinamo_s`) of every stage file.
fn stage_modules(sources: &BTreeMap<String, String>) -> BTreeSet<String> {
    let kinds = kinds();
    sources
        .keys()
        .filter(|p| {
            let stem = Path::new(p).file_stem().unwrap().to_str().unwrap();
            kinds.contains(stem)
        })
        .map(|p| module_of(p))
        .collect()
}

#[test]
fn only_the_registry_imports_a_stage_file_outside_tests() {
    let sources = sources();
    let graph = import_graph(&sources);
    let stages = stage_modules(&sources);
    for (module, deps) in &graph {
        // The registry lists the stages; fixtures are test code.
        if module == "registry" || module.ends_with("::test_support") {
            continue;
        }
        if let Some(dep) = deps.intersection(&stages).next() {
            panic!(
                "`{module}` imports the stage file `{dep}` outside its tests: move what they share to a family's tables.rs or a library module"
            );
        }
    }
}

#[test]
fn library_modules_import_neither_formats_nor_shared_code_nor_fixtures() {
    let sources = sources();
    let graph = import_graph(&sources);
    let roles: BTreeMap<String, Role> = all_roles(&sources)
        .into_iter()
        .map(|((family, module), role)| (format!("{family}::{module}"), role))
        .collect();
    let mut libraries = 0;
    for (module, role) in &roles {
        let deps = &graph[module];
        if *role == Role::Library {
            libraries += 1;
            for dep in deps {
                let dep_role = roles.get(dep).copied();
                assert!(
                    matches!(dep_role, None | Some(Role::Library)),
                    "library module `{module}` imports `{dep}` ({dep_role:?}): a library works on plain types; readers go in tables.rs"
                );
            }
        }
        for dep in deps {
            if *role == Role::Fixtures {
                break; // fixtures are test code and may build on each other
            }
            assert_ne!(
                roles.get(dep),
                Some(&Role::Fixtures),
                "`{module}` imports the test fixtures `{dep}` outside its tests"
            );
        }
    }
    assert!(libraries >= 10, "{libraries} library modules");
}

#[test]
fn only_the_library_root_and_nothing_else_reaches_the_registry() {
    let sources = sources();
    let graph = import_graph(&sources);
    for (module, deps) in &graph {
        if module == "registry" || module.is_empty() {
            continue;
        }
        assert!(
            !deps.contains("registry"),
            "`{module}` imports the registry: stages import the contract (stage, error, input), never the list of stages"
        );
    }
}

#[test]
fn the_contract_imports_no_stage_and_no_helper() {
    let graph = import_graph(&sources());
    let contract = ["stage", "error", "input"];
    for module in contract {
        for dep in &graph[module] {
            // The contract may use itself and one Arrow helper (casting a
            // key column while scanning row groups).
            assert!(
                contract.contains(&dep.as_str()) || dep == "arrow_util",
                "`{module}` (the stage contract) imports `{dep}`"
            );
        }
    }
}

#[test]
fn no_circle_in_the_imports_of_stages_or_the_engine() {
    // (crate, its source root, whether to keep only the library's files,
    // imports the reader must find at least).
    let roots = [
        ("stages/src", src(), false, 100),
        ("src", workspace().join("src"), true, 10),
        // The fuzz harness names its modules from its root (`alloc_cap::`),
        // which this reader does not follow: checked for what it finds.
        ("src/bin/fuzz", workspace().join("src/bin/fuzz"), false, 0),
    ];
    for (name, root, library_only, least) in roots {
        let mut files = rust_files(&root);
        if library_only {
            // The engine library: its binaries (main.rs, bin/) are crates of their own.
            files.retain(|f, _| f != "main.rs" && !f.starts_with("bin/"));
        }
        let graph = import_graph(&files);
        let edges: usize = graph.values().map(BTreeSet::len).sum();
        assert!(edges >= least, "{name}: only {edges} imports found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{name}: modules import each other in a circle: {cycle:?}");
        }
    }
}

#[test]
fn the_import_reader_sees_a_circle_and_nested_use_trees() {
    let files = BTreeMap::from([
        ("lib.rs".to_string(), "pub mod a;\npub mod b;".to_string()),
        (
            "a/mod.rs".to_string(),
            "pub mod x;\npub mod y;\n// crate::b::z in a comment\n".to_string(),
        ),
        (
            "a/x.rs".to_string(),
            "use crate::{b::Thing, a::y::{self, Other as O}};\nfn f() { let s = \"crate::c\"; }"
                .to_string(),
        ),
        (
            "a/y.rs".to_string(),
            "fn g() { super::super::b::h(); }".to_string(),
        ),
        (
            "b.rs".to_string(),
            "#[cfg(test)]\nmod tests { use crate::a::x; }\npub fn h() {}".to_string(),
        ),
    ]);
    let graph = import_graph(&files);
    assert_eq!(graph["a::x"], BTreeSet::from(["b".into(), "a::y".into()]));
    assert_eq!(graph["a::y"], BTreeSet::from(["b".into()]));
    assert!(graph["a"].is_empty(), "comments are not imports");
    assert!(graph["b"].is_empty(), "test modules are not imports");
    assert_eq!(find_cycle(&graph), None);
    let mut circular = files.clone();
    circular.insert("b.rs".into(), "use crate::a::x::f;".into());
    let cycle = find_cycle(&import_graph(&circular)).unwrap();
    assert!(cycle.contains(&"b".to_string()) && cycle.contains(&"a::x".to_string()));
}

#[test]
fn stages_build_errors_only_through_the_contract_constructors() {
    for (path, text) in sources() {
        if path == "error.rs" {
            continue;
        }
        let code = code_only(&text);
        let mut rest = code.as_str();
        while let Some(at) = rest.find("StageError::") {
            let tail = &rest[at + "StageError::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let after = tail[name.len()..].trim_start();
            assert!(
                !(name.starts_with(char::is_uppercase) && after.starts_with('{')),
                "{path} builds `StageError::{name} {{ .. }}` by hand: use its constructor in error.rs"
            );
            rest = &tail[name.len()..];
        }
    }
}

#[test]
fn parameter_paths_are_nested_with_within_not_spelled_with_dots() {
    for (path, text) in sources() {
        for call in ["bad_param(", "StageError::param(", "param(&format!("] {
            for (k, _) in text.match_indices(call) {
                let tail = text[k + call.len()..].trim_start();
                let tail = tail.strip_prefix("&format!(").unwrap_or(tail);
                if let Some(literal) = tail.strip_prefix('"') {
                    let name = &literal[..literal.find('"').unwrap()];
                    assert!(
                        !name.contains('.'),
                        "{path}: parameter `{name}`: a nested block's validate names its own keys, and the stage holding it adds the block's (error::within)"
                    );
                }
            }
        }
    }
}

#[test]
fn every_kind_documents_its_outputs() {
    for kind in dqm_stages::registry::all() {
        match (kind.describe_outputs)() {
            Ok(Some(outputs)) => assert!(!outputs.is_empty(), "`{}`: no output", kind.name),
            Ok(None) => assert_eq!(
                kind.name, "read_parquet",
                "only read_parquet's output is its files' columns"
            ),
            Err(e) => panic!("`pipeline stages` cannot describe `{}`: {e}", kind.name),
        }
        if kind.inputs.1 > 0 {
            assert!(
                !kind.input_roles.is_empty(),
                "`{}` takes inputs but does not name them (INPUT_ROLES)",
                kind.name
            );
        }
    }
}

/// Lines of a function whose signature starts on `line` (0-based): up to
/// the closing brace at the signature's indentation.
fn function_lines(lines: &[&str], line: usize) -> usize {
    let indent = lines[line].len() - lines[line].trim_start().len();
    let close = format!("{}}}", " ".repeat(indent));
    lines[line + 1..]
        .iter()
        .position(|l| *l == close)
        .map_or(0, |k| k + 2)
}

#[test]
fn no_source_file_over_900_lines_and_no_run_over_120() {
    let root = workspace();
    for dir in ["src", "stages/src", "stages/benches", "schemas/src"] {
        for (path, text) in rust_files(&root.join(dir)) {
            let lines = text.lines().count();
            assert!(
                lines <= 900,
                "{dir}/{path}: {lines} lines; split it along its jobs"
            );
        }
    }
    let sources = sources();
    let stages = stage_modules(&sources);
    for (path, text) in &sources {
        if !stages.contains(&module_of(path)) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (k, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("fn run(") {
                let n = function_lines(&lines, k);
                assert!(
                    n <= 120,
                    "{path}: `run` is {n} lines; break it into named steps"
                );
            }
        }
    }
}
