//! `delphes_convert`: Delphes ROOT files (read with oxyroot) to an `events`
//! table, one row per event, with MEDIC's track, tower and MET features
//! (paper section 2, Appendix A).
//!
//! oxyroot panics on some inputs and can mis-assign values silently, so every
//! branch read is isolated (a panic becomes an error naming file and branch)
//! and every collection's per-event length is checked against its
//! `<Collection>_size` branch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float32Builder, Int8Array, Int32Array, Int64Array, ListBuilder,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use oxyroot::{RootFile, Slice};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param, within};
use crate::medic::tables::{CLASSES, MET_FEATURES, TOWER_FEATURES, TRACK_FEATURES, strings};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::events;

/// One group of input files and the detector configuration they hold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileGroup {
    /// File or glob pattern (relative to the directory `pipeline` runs in).
    pub path: String,
    /// Detector configuration of these files; must be one of `classes`.
    pub label: String,
}

/// Converts Delphes ROOT files to the `events` table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DelphesConvert {
    /// Input files with their labels, converted in this order.
    pub files: Vec<FileGroup>,
    /// Instead of `files`: one path (or glob) per class, `{label}` standing
    /// for each of `classes` in turn, e.g.
    /// `data/delphes/dijet13_{label}_tiny.root` (handy with `--set`).
    pub pattern: Option<String>,
    /// Name of the tree in every file.
    pub tree: String,
    /// Labels in class-index order (`class` = position in this list).
    pub classes: Vec<String>,
    /// Track features (leaves of the `Track` branch).
    pub track_features: Vec<String>,
    /// Tower features (leaves of the `Tower` branch); `NTimeHits` is an integer leaf.
    pub tower_features: Vec<String>,
    /// MissingET features (leaves of the `MissingET` branch, one entry per event).
    pub met_features: Vec<String>,
    /// Jet features (leaves of the `Jet` branch, e.g. PT, Eta, Phi); empty:
    /// no jet columns. With features, `n_jets` comes too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jet_features: Vec<String>,
    /// Read `ScalarHT.HT` into a `scalar_ht` column (one per event).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scalar_ht: bool,
    /// Events per output batch: files are read in entry ranges of this size,
    /// so memory stays bounded for files of any size.
    pub entries_per_batch: usize,
    /// Only entries in `[first, end)` of every file, e.g. events a trained
    /// model never saw (`[400, 500]` after training on `[0, 400]`); null:
    /// all. Event ids stay those of the full files, so tables of disjoint
    /// ranges never share an id.
    pub entries: Option<[u64; 2]>,
}

impl Default for DelphesConvert {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            pattern: None,
            tree: "Delphes".into(),
            classes: strings(&CLASSES),
            track_features: strings(&TRACK_FEATURES),
            tower_features: strings(&TOWER_FEATURES),
            met_features: strings(&MET_FEATURES),
            jet_features: Vec::new(),
            scalar_ht: false,
            entries_per_batch: 10_000,
            entries: None,
        }
    }
}

impl StageConfig for DelphesConvert {
    const KIND: &'static str = "delphes_convert";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Delphes ROOT files (oxyroot) -> events table: tracks, towers and MET per event, labelled by configuration";
    const INPUTS: (usize, usize) = (0, 0);

    fn validate(&self) -> Result<()> {
        match &self.pattern {
            Some(_) if !self.files.is_empty() => {
                return bad_param("pattern", "give either `files` or `pattern`, not both");
            }
            Some(p) if !p.contains("{label}") => {
                return bad_param("pattern", format!("`{p}` has no `{{label}}` placeholder"));
            }
            None if self.files.is_empty() => {
                return bad_param(
                    "files",
                    "give at least one `{path, label}` (or a `pattern`)",
                );
            }
            _ => {}
        }
        if let Some([first, end]) = self.entries
            && first >= end
        {
            return bad_param("entries", format!("[{first}, {end}) is empty"));
        }
        if self.classes.is_empty() || self.classes.len() > i8::MAX as usize {
            return bad_param("classes", "needs 1 to 127 labels");
        }
        for (i, group) in self.files.iter().enumerate() {
            if !self.classes.contains(&group.label) {
                let why = format!(
                    "`{}` is not one of the classes {:?}",
                    group.label, self.classes
                );
                return within(&format!("files[{i}]"), bad_param("label", why));
            }
        }
        for (name, list) in [
            ("track_features", &self.track_features),
            ("tower_features", &self.tower_features),
        ] {
            if list.is_empty() {
                return bad_param(name, "needs at least one feature");
            }
        }
        Ok(())
    }
}

/// One input file with its label and first event id.
#[derive(Debug, Clone)]
struct SourceFile {
    path: PathBuf,
    label: String,
    class: i8,
}

/// Runs `f`, turning a panic inside oxyroot into an error naming the file and branch.
fn guarded<T>(
    path: &Path,
    branch: &str,
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StageError::data(format!(
            "{}: branch `{branch}`: {e}",
            path.display()
        ))),
        Err(panic) => {
            let msg = crate::error::panic_message(panic.as_ref());
            // oxyroot's iterators unwrap the errors of the baskets they read.
            let msg = msg
                .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
                .unwrap_or(&msg);
            Err(StageError::data(format!(
                "{}: branch `{branch}`: the file is corrupt or not a ROOT layout the reader knows (the reader stopped with: {msg})",
                path.display()
            )))
        }
    }
}

/// Opens a file's tree once; every branch is then read from it.
fn open_tree(path: &Path, tree: &str) -> Result<oxyroot::ReaderTree> {
    guarded(path, tree, || {
        let mut file =
            RootFile::open(path).map_err(|e| format!("not a readable ROOT file: {e}"))?;
        file.get_tree(tree)
            .map_err(|e| format!("no tree `{tree}`: {e}"))
    })
}

/// A streaming reader of one branch's per-event values, as f32 (integer
/// leaves converted).
fn branch_reader<'a>(
    path: &Path,
    tree: &'a oxyroot::ReaderTree,
    branch: &str,
) -> Result<Box<dyn Iterator<Item = Vec<f32>> + 'a>> {
    guarded(path, branch, || {
        let b = tree
            .branch(branch)
            .ok_or_else(|| "no such branch in the file".to_string())?;
        // Float leaves are most; integer leaves (Tower.NTimeHits) are converted.
        match b.as_iter::<Slice<f32>>() {
            Ok(iter) => {
                Ok(Box::new(iter.map(|s| s.into_vec())) as Box<dyn Iterator<Item = Vec<f32>>>)
            }
            Err(float_err) => match b.as_iter::<Slice<i32>>() {
                Ok(iter) => Ok(Box::new(
                    iter.map(|s| s.into_vec().into_iter().map(|v| v as f32).collect()),
                ) as Box<dyn Iterator<Item = Vec<f32>>>),
                Err(_) => Err(format!("not a float or integer collection ({float_err})")),
            },
        }
    })
}

/// The `<Collection>_size` branch: objects per event.
fn read_sizes(path: &Path, tree: &oxyroot::ReaderTree, collection: &str) -> Result<Vec<i32>> {
    let branch = format!("{collection}_size");
    guarded(path, &branch, || {
        let b = tree
            .branch(&branch)
            .ok_or_else(|| "no such branch in the file".to_string())?;
        Ok(b.as_iter::<i32>().map_err(|e| e.to_string())?.collect())
    })
}

fn f32_lists(rows: &[Vec<f32>]) -> ArrayRef {
    let mut builder = ListBuilder::with_capacity(Float32Builder::new(), rows.len())
        .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for row in rows {
        builder.values().append_slice(row);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

impl DelphesConvert {
    /// The file groups to read: `files`, or one per class from `pattern`.
    pub fn groups(&self) -> Vec<FileGroup> {
        match &self.pattern {
            Some(p) => self
                .classes
                .iter()
                .map(|label| FileGroup {
                    path: p.replace("{label}", label),
                    label: label.clone(),
                })
                .collect(),
            None => self.files.clone(),
        }
    }

    fn sources(&self) -> Result<Vec<SourceFile>> {
        let mut out = Vec::new();
        let what = if self.pattern.is_some() {
            "pattern"
        } else {
            "files"
        };
        for (i, group) in self.groups().iter().enumerate() {
            let class = self
                .classes
                .iter()
                .position(|c| *c == group.label)
                .unwrap_or(0) as i8;
            for path in crate::files::resolve_glob(
                &group.path,
                &if self.pattern.is_some() {
                    format!("{what} (label `{}`)", group.label)
                } else {
                    format!("{what}[{i}].path")
                },
            )? {
                out.push(SourceFile {
                    path,
                    label: group.label.clone(),
                    class,
                });
            }
        }
        Ok(out)
    }

    /// The `events` schema for this stage's feature lists.
    pub fn events_schema(&self) -> SchemaRef {
        events::schema_with_jets(
            &self.track_features,
            &self.tower_features,
            &self.met_features,
            &self.jet_features,
            self.scalar_ht,
        )
    }

    fn entries(&self, path: &Path) -> Result<i64> {
        guarded(path, &self.tree, || {
            let mut file =
                RootFile::open(path).map_err(|e| format!("not a readable ROOT file: {e}"))?;
            let tree = file
                .get_tree(&self.tree)
                .map_err(|e| format!("no tree `{}`: {e}", self.tree))?;
            Ok(tree.entries())
        })
    }

    /// Converts one file in batches of `entries_per_batch` events, handing
    /// each to `emit` (which returns false to stop early); `first_id` is the
    /// file's first event id. Only one batch of the file is in memory at once.
    fn stream_file(
        &self,
        source: &SourceFile,
        first_id: i64,
        emit: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        let path = source.path.as_path();
        let tree = open_tree(path, &self.tree)?;
        let entries = tree.entries();
        let track_sizes = read_sizes(path, &tree, "Track")?;
        let tower_sizes = read_sizes(path, &tree, "Tower")?;
        let jet_sizes = if self.jet_features.is_empty() {
            vec![0; entries.max(0) as usize]
        } else {
            read_sizes(path, &tree, "Jet")?
        };
        for (name, sizes) in [
            ("Track_size", &track_sizes),
            ("Tower_size", &tower_sizes),
            ("Jet_size", &jet_sizes),
        ] {
            if sizes.len() as i64 != entries {
                return Err(StageError::data(format!(
                    "{}: branch `{name}` has {} entries, the tree has {entries}",
                    path.display(),
                    sizes.len()
                )));
            }
        }
        // One streaming reader per branch, all advanced together.
        let mut readers = Vec::new();
        let ht = if self.scalar_ht {
            vec!["HT".to_string()]
        } else {
            Vec::new()
        };
        for (collection, features) in [
            ("Track", &self.track_features),
            ("Tower", &self.tower_features),
            ("MissingET", &self.met_features),
            ("Jet", &self.jet_features),
            ("ScalarHT", &ht),
        ] {
            for feature in features {
                let branch = format!("{collection}.{feature}");
                let iter = branch_reader(path, &tree, &branch)?;
                readers.push((collection, branch, iter));
            }
        }
        let step = self.entries_per_batch.max(1) as i64;
        let (keep_from, keep_to) = match self.entries {
            Some([a, b]) => (a as i64, (b as i64).min(entries)),
            None => (0, entries),
        };
        let mut start = 0i64;
        while start < keep_to {
            let n = step.min(entries - start) as usize;
            let range = start as usize..start as usize + n;
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(
                    first_id + start..first_id + start + n as i64,
                )),
                Arc::new(StringArray::from(vec![path.display().to_string(); n])),
                Arc::new(Int64Array::from_iter_values(start..start + n as i64)),
                Arc::new(StringArray::from(vec![source.label.clone(); n])),
                Arc::new(Int8Array::from(vec![source.class; n])),
                Arc::new(Int32Array::from(track_sizes[range.clone()].to_vec())),
                Arc::new(Int32Array::from(tower_sizes[range.clone()].to_vec())),
            ];
            let mut jets_counted = false;
            for (collection, branch, iter) in readers.iter_mut() {
                if *collection == "Jet" && !jets_counted {
                    columns.push(Arc::new(Int32Array::from(
                        jet_sizes[range.clone()].to_vec(),
                    )));
                    jets_counted = true;
                }
                let rows: Vec<Vec<f32>> =
                    guarded(path, branch, || Ok(iter.by_ref().take(n).collect()))?;
                if rows.len() != n {
                    return Err(StageError::data(format!(
                        "{}: branch `{branch}` ends at entry {}, the tree has {entries}",
                        path.display(),
                        start as usize + rows.len()
                    )));
                }
                let expected = |e: usize| match *collection {
                    "Track" => track_sizes[start as usize + e] as usize,
                    "Tower" => tower_sizes[start as usize + e] as usize,
                    "Jet" => jet_sizes[start as usize + e] as usize,
                    _ => 1,
                };
                if let Some(e) = (0..n).find(|&e| rows[e].len() != expected(e)) {
                    return Err(StageError::data(format!(
                        "{}: branch `{branch}` has {} values at entry {} but {} expects {}: the reader mis-assigned values",
                        path.display(),
                        rows[e].len(),
                        start as usize + e,
                        if matches!(*collection, "MissingET" | "ScalarHT") {
                            "one per event".to_string()
                        } else {
                            format!("{collection}_size")
                        },
                        expected(e)
                    )));
                }
                if matches!(*collection, "MissingET" | "ScalarHT") {
                    columns.push(Arc::new(Float32Array::from_iter_values(
                        rows.iter().map(|r| r[0]),
                    )));
                } else {
                    columns.push(f32_lists(&rows));
                }
            }
            // Entries before `keep_from` are read (the branch readers only
            // go forward) and dropped.
            let lo = (keep_from - start).clamp(0, n as i64) as usize;
            let hi = (keep_to - start).clamp(0, n as i64) as usize;
            let batch = RecordBatch::try_new(self.events_schema(), columns)?;
            if hi > lo && !emit(batch.slice(lo, hi - lo)) {
                return Ok(());
            }
            start += n as i64;
        }
        Ok(())
    }
}

impl Stage for DelphesConvert {
    fn outputs(&self, _inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        if !self.files.is_empty() || self.pattern.is_some() {
            self.sources()?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: self.events_schema(),
        }])
    }

    fn external_fingerprint(&self) -> Result<Option<String>> {
        let files: Vec<PathBuf> = self.sources()?.into_iter().map(|s| s.path).collect();
        Ok(Some(crate::files::fingerprint(&files)?))
    }

    fn shardable(&self) -> bool {
        true
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let all = self.sources()?;
        // Entry counts first, so event ids are unique and independent of
        // which file finishes first (or which shard reads it).
        let mut first_ids = Vec::with_capacity(all.len());
        let mut next = 0i64;
        for s in &all {
            first_ids.push(next);
            next += self.entries(&s.path)?;
        }
        let mine = ctx.shard.range(all.len());
        let first_ids = first_ids[mine.clone()].to_vec();
        let sources = &all[mine];
        let progress = ctx.reporter.progress(sources.len() as u64, "files");
        // Files are read in parallel by a few workers, each file into a
        // small bounded channel; the output is written in file order.
        // Workers take files in order, so the file the writer waits for has
        // always started. Memory: a few batches per worker, whatever the
        // file sizes.
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..sources.len())
            .map(|_| std::sync::mpsc::sync_channel::<Result<RecordBatch>>(2))
            .unzip();
        let senders: Vec<std::sync::Mutex<Option<_>>> = senders
            .into_iter()
            .map(|t| std::sync::Mutex::new(Some(t)))
            .collect();
        let next_file = std::sync::atomic::AtomicUsize::new(0);
        let output = &mut *ctx.output;
        let mut result = Ok(());
        std::thread::scope(|scope| {
            for _ in 0..rayon::current_num_threads().min(sources.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next_file.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= sources.len() {
                            break;
                        }
                        let tx = senders[i]
                            .lock()
                            .expect("not poisoned")
                            .take()
                            .expect("each file once");
                        let mut emit = |batch: RecordBatch| tx.send(Ok(batch)).is_ok();
                        if let Err(e) = self.stream_file(&sources[i], first_ids[i], &mut emit) {
                            let _ = tx.send(Err(e));
                        }
                        progress.inc(1);
                    }
                });
            }
            // Drain every channel (even after an error) so no worker blocks.
            for rx in receivers {
                for batch in rx {
                    if result.is_ok() {
                        result = batch.and_then(|b| output.write("main", b));
                    }
                }
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float32Type, Int32Type};

    fn data(name: &str) -> String {
        format!("{}/../data/delphes/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn stage(files: &[(&str, &str)]) -> DelphesConvert {
        DelphesConvert {
            files: files
                .iter()
                .map(|(p, l)| FileGroup {
                    path: p.to_string(),
                    label: l.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn col<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        batch.column_by_name(name).unwrap()
    }

    #[test]
    fn reads_jets_and_scalar_ht_and_leaves_default_params_unchanged() {
        let mut s = stage(&[(&data("dijet13_normal_tiny.root"), "normal")]);
        // Off by default, and absent from the canonical parameters, so the
        // cache keys of existing pipelines do not change.
        let params = serde_json::to_value(&s).unwrap();
        assert!(params.get("jet_features").is_none() && params.get("scalar_ht").is_none());
        s.jet_features = vec!["PT".into(), "Eta".into(), "Phi".into()];
        s.scalar_ht = true;
        let table = run_in_memory(&s, &[]).unwrap().table("main");
        assert_eq!(table.schema(), s.events_schema());
        let n_jets = col(&table, "n_jets").as_primitive::<Int32Type>();
        let pt = col(&table, "jet_pt").as_list::<i32>();
        let eta = col(&table, "jet_eta").as_list::<i32>();
        let ht = col(&table, "scalar_ht").as_primitive::<Float32Type>();
        let mut jets = 0;
        for i in 0..table.num_rows() {
            let pts = pt.value(i);
            let pts = pts.as_primitive::<Float32Type>();
            assert_eq!(pts.len(), n_jets.value(i) as usize, "row {i}");
            assert_eq!(eta.value(i).len(), pts.len());
            jets += pts.len();
            // HT sums the transverse momenta of the jets and the other
            // objects of the event: never less than the jets' sum.
            let sum: f32 = pts.values().iter().sum();
            assert!(
                ht.value(i) >= sum * (1.0 - 1e-5),
                "row {i}: HT {} < {sum}",
                ht.value(i)
            );
        }
        // Dijet events (pT-hat > 50 GeV): about two jets per event or more.
        assert!(jets >= 2 * table.num_rows(), "{jets} jets");
    }

    #[test]
    fn converts_bundled_files_with_unique_ids_and_consistent_lengths() {
        let s = stage(&[
            (&data("dijet13_normal_tiny.root"), "normal"),
            (
                &data("dijet13_hcal_barrel_off_tiny.root"),
                "hcal_barrel_off",
            ),
        ]);
        s.validate().unwrap();
        let table = run_in_memory(&s, &[]).unwrap().table("main");
        assert_eq!(table.num_rows(), 1000);
        let ids = col(&table, "event_id").as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            ids.values()
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            1000
        );
        let classes = col(&table, "class").as_primitive::<arrow::datatypes::Int8Type>();
        assert_eq!(classes.value(0), 0);
        assert_eq!(classes.value(999), 1);
        // List lengths equal n_tracks / n_towers.
        let n_tracks = col(&table, "n_tracks").as_primitive::<Int32Type>();
        let pt = col(&table, "track_pt").as_list::<i32>();
        for i in 0..table.num_rows() {
            assert_eq!(pt.value(i).len() as i32, n_tracks.value(i));
        }
        // Tracks are identical across configurations for the same entry.
        for e in [0usize, 7, 499] {
            assert_eq!(
                pt.value(e).as_primitive::<Float32Type>(),
                pt.value(500 + e).as_primitive::<Float32Type>()
            );
        }
        assert_eq!(table.schema(), s.events_schema());
    }

    /// Reading in entry ranges (bounded memory) gives exactly the table read
    /// in one go, in batches of the requested size.
    #[test]
    fn entry_ranges_give_the_same_table() {
        let files = [
            (data("dijet13_normal_tiny.root"), "normal"),
            (data("dijet13_hcal_endcap_off_tiny.root"), "hcal_endcap_off"),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(p, l)| (p.as_str(), *l)).collect();
        let whole = run_in_memory(&stage(&files), &[]).unwrap();
        let chunked_stage = DelphesConvert {
            entries_per_batch: 7,
            ..stage(&files)
        };
        let chunked = run_in_memory(&chunked_stage, &[]).unwrap();
        assert_eq!(
            whole.tables["main"].len(),
            2,
            "one batch per file by default"
        );
        assert_eq!(chunked.tables["main"].len(), 2 * 500_usize.div_ceil(7));
        assert!(chunked.tables["main"].iter().all(|b| b.num_rows() <= 7));
        assert_eq!(whole.table("main"), chunked.table("main"));
        // An entry range is the same rows of the whole table, in any batching.
        let whole = whole.table("main");
        for per_batch in [7, 10_000] {
            let part = DelphesConvert {
                entries: Some([95, 103]),
                entries_per_batch: per_batch,
                ..stage(&files)
            };
            let part = run_in_memory(&part, &[]).unwrap().table("main");
            let expected = arrow::compute::concat_batches(
                &whole.schema(),
                &[whole.slice(95, 8), whole.slice(500 + 95, 8)],
            )
            .unwrap();
            assert_eq!(part, expected, "entries_per_batch {per_batch}");
        }
        let empty = DelphesConvert {
            entries: Some([5, 5]),
            ..stage(&files)
        };
        assert!(
            empty
                .validate()
                .unwrap_err()
                .to_string()
                .contains("entries")
        );
    }

    /// HCAL towers (Ehad > 0) are absent in each glitch's dead eta region.
    #[test]
    fn dead_hcal_regions_have_no_hadronic_towers() {
        for (label, lo, hi) in [
            ("hcal_barrel_off", 0.0, 1.653),
            ("hcal_endcap_off", 1.653, 4.525),
            ("hcal_forward_off", 4.525, 5.0),
        ] {
            let count = |file: &str| {
                let table = run_in_memory(&stage(&[(&data(file), label)]), &[])
                    .unwrap()
                    .table("main");
                let eta = col(&table, "tower_eta").as_list::<i32>().clone();
                let ehad = col(&table, "tower_ehad").as_list::<i32>().clone();
                let mut n = 0;
                for i in 0..table.num_rows() {
                    let (eta, ehad) = (eta.value(i), ehad.value(i));
                    let (eta, ehad) = (
                        eta.as_primitive::<Float32Type>(),
                        ehad.as_primitive::<Float32Type>(),
                    );
                    n += (0..eta.len())
                        .filter(|&k| {
                            ehad.value(k) > 0.0 && (lo..hi).contains(&(eta.value(k).abs() as f64))
                        })
                        .count();
                }
                n
            };
            assert_eq!(count(&format!("dijet13_{label}_tiny.root")), 0, "{label}");
            assert!(
                count("dijet13_normal_tiny.root") > 100,
                "normal has HCAL towers in the {label} region"
            );
        }
    }

    #[test]
    fn a_pattern_names_one_file_per_class() {
        let pattern = data("dijet13_{label}_tiny.root");
        let s = DelphesConvert {
            pattern: Some(pattern.clone()),
            ..Default::default()
        };
        s.validate().unwrap();
        let groups = s.groups();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[1].label, "hcal_barrel_off");
        assert_eq!(groups[1].path, data("dijet13_hcal_barrel_off_tiny.root"));
        assert_eq!(s.sources().unwrap().len(), 4);
        // Both ways at once, or no placeholder: parameter errors.
        let both = DelphesConvert {
            files: stage(&[(&data("dijet13_normal_tiny.root"), "normal")]).files,
            ..s.clone()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let fixed = DelphesConvert {
            pattern: Some(data("dijet13_normal_tiny.root")),
            ..Default::default()
        };
        assert!(
            fixed
                .validate()
                .unwrap_err()
                .to_string()
                .contains("{label}")
        );
        // A class without its file is caught at plan time, naming the label.
        let missing = DelphesConvert {
            pattern: Some(data("dijet13_{label}_nope.root")),
            ..Default::default()
        };
        let err = missing.outputs(&[]).unwrap_err().to_string();
        assert!(err.contains("label `normal`"), "{err}");
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        // Missing file.
        let err = stage(&[("no/such/file.root", "normal")])
            .outputs(&[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no file matches"), "{err}");
        // Not a ROOT file.
        let junk = dir.path().join("junk.root");
        std::fs::write(&junk, b"definitely not ROOT").unwrap();
        let err = run_in_memory(&stage(&[(junk.to_str().unwrap(), "normal")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.root"), "{err}");
        // Truncated copy of a real file.
        let bytes = std::fs::read(data("dijet13_normal_tiny.root")).unwrap();
        let cut = dir.path().join("cut.root");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = run_in_memory(&stage(&[(cut.to_str().unwrap(), "normal")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut.root"), "{err}");
        // A branch the file does not have.
        let mut s = stage(&[(&data("dijet13_normal_tiny.root"), "normal")]);
        s.track_features.push("Nonexistent".into());
        let err = run_in_memory(&s, &[]).unwrap_err().to_string();
        assert!(err.contains("Track.Nonexistent"), "{err}");
        // A label that is not a class.
        let err = stage(&[(&data("dijet13_normal_tiny.root"), "broken")])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken"), "{err}");
    }
}
