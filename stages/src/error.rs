//! What can go wrong inside a stage, and the constructors stages use to say
//! so. Every error names enough context (stage parameter, file, column,
//! dataset) for a physicist to find the cause; the engine adds the stage id.

use std::path::{Path, PathBuf};

use arrow::datatypes::DataType;

/// What can go wrong inside a stage. Build one with the constructors below
/// ([`StageError::param`], [`StageError::io`], ...) rather than by hand.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("input `{input}` has no column `{column}` (needed: {why})")]
    MissingColumn {
        input: String,
        column: String,
        why: String,
    },
    #[error("input `{input}`: column `{column}` has type {found}, expected {expected}")]
    WrongType {
        input: String,
        column: String,
        found: DataType,
        expected: String,
    },
    #[error("expected {expected} input table(s), got {found}")]
    InputCount { expected: String, found: usize },
    #[error("invalid parameter `{param}`: {why}")]
    Param { param: String, why: String },
    #[error("{0}")]
    Data(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = StageError> = std::result::Result<T, E>;

impl StageError {
    /// A parameter the stage cannot use; `param` is its name in the YAML.
    pub fn param(param: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Param {
            param: param.into(),
            why: why.into(),
        }
    }

    /// Input data the stage cannot use (the message names input and column).
    pub fn data(message: impl Into<String>) -> Self {
        Self::Data(message.into())
    }

    /// A file-system error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A Parquet error while reading or writing `path`.
    pub fn parquet(path: impl AsRef<Path>, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A panic caught on a worker thread, turned into an error so one bad
    /// file or batch fails the stage instead of the process.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        Self::Data(panic_message(payload))
    }
}

/// `Err(StageError::param(..))`: the one-liner of `validate` methods.
pub fn bad_param<T>(param: &str, why: impl Into<String>) -> Result<T> {
    Err(StageError::param(param, why))
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_name_their_context() {
        let e = StageError::param("alpha", "must be in (0, 1)");
        assert_eq!(
            e.to_string(),
            "invalid parameter `alpha`: must be in (0, 1)"
        );
        let e = StageError::io(
            "/no/such/file.parquet",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e.to_string().starts_with("/no/such/file.parquet: "), "{e}");
        let e = bad_param::<()>("window", "must be at least 1").unwrap_err();
        assert!(matches!(e, StageError::Param { ref param, .. } if param == "window"));
        let caught = std::panic::catch_unwind(|| panic!("tree `Delphes` is broken")).unwrap_err();
        assert_eq!(
            StageError::from_panic(caught.as_ref()).to_string(),
            "tree `Delphes` is broken"
        );
    }
}
