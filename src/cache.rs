//! The workdir: content-addressed stage outputs, written to a staging
//! directory and renamed into place only when complete, plus the lock that
//! keeps two runs from writing the same workdir.
//!
//! Layout:
//! ```text
//! WORKDIR/cache/<kind>-<key16>/manifest.json     provenance, rows, schema, wall time
//! WORKDIR/cache/<kind>-<key16>/<output>/*.parquet  one directory per output table
//! WORKDIR/cache/<kind>-<key16>/artifacts/          plots, models
//! WORKDIR/pipelines/<pipeline>/<stage> -> ../../cache/<kind>-<key16>
//! WORKDIR/parts/<kind>-<key16>-of-<n>/<index>/     finished shards awaiting assembly
//! WORKDIR/slurm/<pipeline>/                       batch scripts, job ids, job logs
//! WORKDIR/tmp/                                    staging (never read)
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::PlannedStage;

/// What a finished stage output records about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
    pub version: u32,
    pub key: String,
    pub params: Value,
    pub inputs: Vec<ManifestInput>,
    pub outputs: Vec<ManifestOutput>,
    pub wall_seconds: f64,
    pub created_unix: u64,
    pub dqm_pipeline_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestInput {
    pub stage: String,
    pub output: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestOutput {
    pub name: String,
    pub table: String,
    pub rows: u64,
    pub files: Vec<String>,
    pub schema: Vec<String>,
}

/// A workdir on disk.
#[derive(Debug, Clone)]
pub struct Workdir {
    pub root: PathBuf,
}

impl Workdir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Final directory of a stage's output.
    pub fn entry(&self, stage: &PlannedStage) -> PathBuf {
        self.root.join("cache").join(stage.cache_name())
    }

    /// The manifest of a complete cached output, if there is one.
    pub fn cached(&self, stage: &PlannedStage) -> Option<Manifest> {
        let text = fs::read_to_string(self.entry(stage).join("manifest.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Parquet files of one output of a cached stage, in name order.
    pub fn output_files(&self, stage: &PlannedStage, output: &str) -> Result<Vec<PathBuf>> {
        let dir = self.entry(stage).join(output);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("cached output {} is unreadable", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "cached output {} holds no Parquet file; rerun with --force {}",
                dir.display(),
                stage.id
            );
        }
        Ok(files)
    }

    /// A fresh staging directory for a stage; removed on drop unless committed.
    pub fn stage_dir(&self, stage: &PlannedStage) -> Result<Staging> {
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let dir = tmp.join(format!(
            "{}-{}-{}",
            stage.cache_name(),
            std::process::id(),
            unique_suffix()
        ));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging { dir: Some(dir) })
    }

    /// Moves a complete staging directory to the stage's entry. An existing
    /// entry (a forced rerun) is moved aside first and removed after.
    pub fn commit(&self, staging: Staging, stage: &PlannedStage) -> Result<PathBuf> {
        let target = self.entry(stage);
        fs::create_dir_all(target.parent().expect("cache dir"))
            .context("cannot create the cache directory")?;
        let dir = staging.into_path();
        let old = if target.exists() {
            let aside = self.root.join("tmp").join(format!(
                "replaced-{}-{}",
                stage.cache_name(),
                unique_suffix()
            ));
            fs::rename(&target, &aside)
                .with_context(|| format!("cannot move {} aside", target.display()))?;
            Some(aside)
        } else {
            None
        };
        fs::rename(&dir, &target)
            .with_context(|| format!("cannot move {} to {}", dir.display(), target.display()))?;
        if let Some(old) = old {
            let _ = fs::remove_dir_all(old);
        }
        Ok(target)
    }

    /// Where the finished shards of a sharded stage wait for assembly.
    pub fn parts_root(&self, stage: &PlannedStage) -> PathBuf {
        self.root
            .join("parts")
            .join(format!("{}-of-{}", stage.cache_name(), stage.shards))
    }

    /// The directory of one finished shard.
    pub fn part_dir(&self, stage: &PlannedStage, index: usize) -> PathBuf {
        self.parts_root(stage).join(format!("{index:05}"))
    }

    /// Whether shard `index` finished (its directory is renamed into place
    /// only when complete).
    pub fn part_done(&self, stage: &PlannedStage, index: usize) -> bool {
        self.part_dir(stage, index).join("part.json").is_file()
    }

    /// Finished shards of a stage, for `status`.
    pub fn parts_done(&self, stage: &PlannedStage) -> usize {
        (0..stage.shards)
            .filter(|&i| self.part_done(stage, i))
            .count()
    }

    /// Moves a complete shard's staging directory into place.
    pub fn commit_part(&self, staging: Staging, stage: &PlannedStage, index: usize) -> Result<()> {
        let target = self.part_dir(stage, index);
        fs::create_dir_all(self.parts_root(stage)).context("cannot create the parts directory")?;
        let dir = staging.into_path();
        if target.exists() {
            let aside = self.root.join("tmp").join(format!(
                "replaced-part-{}-{}",
                stage.cache_name(),
                unique_suffix()
            ));
            fs::rename(&target, &aside)?;
            let _ = fs::remove_dir_all(aside);
        }
        fs::rename(&dir, &target)
            .with_context(|| format!("cannot move {} to {}", dir.display(), target.display()))?;
        Ok(())
    }

    /// Serializes the assembly of a stage's parts between concurrent jobs.
    pub fn parts_lock(&self, stage: &PlannedStage) -> Result<File> {
        let root = self.root.join("parts");
        fs::create_dir_all(&root)?;
        let path = root.join(format!("{}-of-{}.lock", stage.cache_name(), stage.shards));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    /// Removes the parts of an assembled stage.
    pub fn remove_parts(&self, stage: &PlannedStage) {
        let _ = fs::remove_dir_all(self.parts_root(stage));
        let _ = fs::remove_file(self.root.join("parts").join(format!(
            "{}-of-{}.lock",
            stage.cache_name(),
            stage.shards
        )));
    }

    /// Points `pipelines/<pipeline>/<stage>` at a stage's current output.
    pub fn link(&self, pipeline: &str, stage: &PlannedStage) -> Result<()> {
        let dir = self.root.join("pipelines").join(pipeline);
        fs::create_dir_all(&dir)?;
        let link = dir.join(&stage.id);
        let tmp = dir.join(format!(".{}.{}", stage.id, unique_suffix()));
        let target = Path::new("../../cache").join(stage.cache_name());
        std::os::unix::fs::symlink(&target, &tmp)?;
        fs::rename(&tmp, &link).with_context(|| format!("cannot update {}", link.display()))?;
        Ok(())
    }

    /// Takes the workdir's lock shared: batch jobs (`run-stage`) run side by
    /// side, but not next to a local `pipeline run` of the same workdir.
    pub fn lock_shared(&self) -> Result<WorkdirLock> {
        self.take_lock(true)
    }

    /// Takes the workdir's exclusive lock, failing at once if another run
    /// holds it (with that run's process id).
    pub fn lock(&self) -> Result<WorkdirLock> {
        self.take_lock(false)
    }

    fn take_lock(&self, shared: bool) -> Result<WorkdirLock> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create workdir {}", self.root.display()))?;
        let path = self.root.join(".lock");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let taken = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim().if_empty("batch jobs");
                if shared {
                    bail!(
                        "workdir {} is in use by a local `pipeline run` ({holder}); a batch job cannot run beside it: resubmit when it is done",
                        self.root.display()
                    );
                }
                bail!(
                    "workdir {} is in use by another pipeline run ({holder}); wait for it to finish or pass another --workdir",
                    self.root.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).context(format!("cannot lock {}", path.display()));
            }
        }
        if !shared {
            file.set_len(0)?;
            write!(file, "pid {}", std::process::id())?;
            // Nobody else writes this workdir now: what a killed run left
            // half-made can go.
            self.sweep();
        }
        Ok(WorkdirLock { _file: file })
    }

    /// Removes what an interrupted run (kill -9, power loss) leaves behind:
    /// staging directories and entries moved aside under `tmp/`, and
    /// half-made stage links under `pipelines/`. Never a cache entry, a
    /// finished shard or a link in place. Only under the exclusive lock.
    fn sweep(&self) {
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        let Ok(pipelines) = fs::read_dir(self.root.join("pipelines")) else {
            return;
        };
        for dir in pipelines.flatten() {
            let Ok(links) = fs::read_dir(dir.path()) else {
                continue;
            };
            for link in links.flatten() {
                if link.file_name().to_string_lossy().starts_with('.') {
                    let _ = fs::remove_file(link.path());
                }
            }
        }
    }
}

trait IfEmpty {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str;
}
impl IfEmpty for str {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str {
        if self.is_empty() { other } else { self }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{nanos:x}{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Held for the whole run; the OS releases the lock when the process ends,
/// even if it crashes.
pub struct WorkdirLock {
    _file: File,
}

/// A staging directory that disappears unless committed, so a failed or
/// interrupted stage leaves no output behind.
pub struct Staging {
    dir: Option<PathBuf>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.as_deref().expect("not committed")
    }

    fn into_path(mut self) -> PathBuf {
        self.dir.take().expect("not committed")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Writes a file atomically: a temporary sibling, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", unique_suffix()));
    {
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exclusive_lock_sweeps_what_a_killed_run_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wd = Workdir::new(root);
        // A killed run's staging directory, an entry moved aside, a
        // half-made link; and a finished entry with its link.
        for d in [
            "tmp/synth_runs-abc-123-9f",
            "tmp/replaced-x-1",
            "cache/synth_runs-abc",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("tmp/synth_runs-abc-123-9f/part-00000.parquet"),
            b"half",
        )
        .unwrap();
        fs::write(root.join("cache/synth_runs-abc/manifest.json"), b"{}").unwrap();
        fs::create_dir_all(root.join("pipelines/p")).unwrap();
        for name in ["runs", ".runs.9f1"] {
            std::os::unix::fs::symlink(
                "../../cache/synth_runs-abc",
                root.join("pipelines/p").join(name),
            )
            .unwrap();
        }
        // A batch job's shared lock leaves everything (other jobs may be staging).
        drop(wd.lock_shared().unwrap());
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 2);
        let _lock = wd.lock().unwrap();
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(root.join("cache/synth_runs-abc/manifest.json").is_file());
        assert!(root.join("pipelines/p/runs").exists());
        assert!(fs::symlink_metadata(root.join("pipelines/p/.runs.9f1")).is_err());
    }
}
