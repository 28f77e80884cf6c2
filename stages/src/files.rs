//! External input files: glob resolution and change fingerprints, shared by
//! the stages that read files from outside the pipeline.

use std::path::PathBuf;

use crate::error::{Result, StageError};

/// Files matching `pattern`, sorted; an error naming `param` if none match.
pub fn resolve_glob(pattern: &str, param: &str) -> Result<Vec<PathBuf>> {
    let err = |why: String| StageError::param(param, why);
    let mut files = Vec::new();
    for entry in glob::glob(pattern).map_err(|e| err(format!("bad glob `{pattern}`: {e}")))? {
        let path = entry.map_err(|e| err(e.to_string()))?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(err(format!("no file matches `{pattern}`")));
    }
    Ok(files)
}

/// Path, size and modification time of each file: enough for the cache to
/// notice an edited or replaced input without hashing its content.
pub fn fingerprint(files: &[PathBuf]) -> Result<String> {
    let mut parts = Vec::new();
    for file in files {
        let meta = std::fs::metadata(file).map_err(|e| StageError::io(file.clone(), e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        parts.push(format!("{}:{}:{}", file.display(), meta.len(), modified));
    }
    Ok(parts.join("\n"))
}
