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
    #[error("takes {expected}, got {found} input table(s)")]
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

    /// A wrong number of input tables; `expected` names what the stage
    /// takes ("2 inputs (models, histograms)", "pairs of inputs (models,
    /// scores)").
    pub fn input_count(expected: impl Into<String>, found: usize) -> Self {
        Self::InputCount {
            expected: expected.into(),
            found,
        }
    }

    /// An input table without a column the stage needs; `why` says what for.
    pub fn missing_column(input: &str, column: &str, why: &str) -> Self {
        Self::MissingColumn {
            input: input.to_string(),
            column: column.to_string(),
            why: why.to_string(),
        }
    }

    /// An input column whose type the stage cannot read.
    pub fn wrong_type(input: &str, column: &str, found: &DataType, expected: &str) -> Self {
        Self::WrongType {
            input: input.to_string(),
            column: column.to_string(),
            found: found.clone(),
            expected: expected.to_string(),
        }
    }

    /// The one way a nested parameter block reports its path: the block's
    /// `validate` names its parameters relative to itself (`shifter_call`),
    /// and whoever holds the block puts the block's YAML key in front
    /// (`rewards.shifter_call`, then `env.rewards.shifter_call`). Errors
    /// other than a parameter's pass unchanged.
    pub fn under(self, block: &str) -> Self {
        match self {
            Self::Param { param, why } => Self::Param {
                param: format!("{block}.{param}"),
                why,
            },
            other => other,
        }
    }

    /// The parameter's path and what is wrong with it, when this error is
    /// about a parameter.
    pub fn as_param(&self) -> Option<(&str, &str)> {
        match self {
            Self::Param { param, why } => Some((param, why)),
            _ => None,
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

/// `result` of a nested parameter block's `validate`, its parameter paths
/// put under `block` ([`StageError::under`]).
pub fn within<T>(block: &str, result: Result<T>) -> Result<T> {
    result.map_err(|e| e.under(block))
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
        let rewards = bad_param::<()>("shifter_call", "must be >= 0");
        let nested = within("env", within("rewards", rewards));
        assert_eq!(
            nested.unwrap_err().as_param(),
            Some(("env.rewards.shifter_call", "must be >= 0"))
        );
        let data = StageError::data("no rows").under("env");
        assert!(data.as_param().is_none());
        assert_eq!(data.to_string(), "no rows");
        let e = StageError::input_count("2 inputs (models, histograms)", 3);
        assert_eq!(
            e.to_string(),
            "takes 2 inputs (models, histograms), got 3 input table(s)"
        );
        let caught = std::panic::catch_unwind(|| panic!("tree `Delphes` is broken")).unwrap_err();
        assert_eq!(
            StageError::from_panic(caught.as_ref()).to_string(),
            "tree `Delphes` is broken"
        );
    }
}
