//! The one error type of lifeboat's commands, and the exit code each kind maps to. The engine
//! and the store return it; only the CLI prints it (`error: ...`), once, in `cli::main`.

use crate::diagnostics::Diagnostic;
use crate::exit::Exit;
use crate::runbook::Source;
use crate::store::LockError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What was given is wrong: a flag, a param, a run or step that does not exist, a runbook
    /// this version cannot run. Nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// A runbook does not validate; its diagnostics are rendered against its text.
    #[error("the runbook does not validate")]
    Runbook {
        /// The runbook's text (a field named `source` would be taken for the error's cause).
        file: Box<Source>,
        diagnostics: Vec<Diagnostic>,
    },
    /// Another run holds what this command needs (a lock, the run itself).
    #[error("{0}")]
    Held(String),
    /// The command could not do its work: a log that fails verification, a run that failed,
    /// a report that could not be written.
    #[error("{0}")]
    Failed(String),
    /// The state store could not be reached or written (a full disk, permissions, a database
    /// gone). A run stopped where its log ends, and `resume` continues it once the store is
    /// fixed; or no run was created at all.
    #[error("{0}")]
    Store(String),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid(_) | Error::Runbook { .. } => Exit::Invalid,
            Error::Held(_) => Exit::LockHeld,
            Error::Failed(_) => Exit::Failed,
            Error::Store(_) => Exit::StateStore,
        }
    }

    pub fn invalid(e: impl std::fmt::Display) -> Error {
        Error::Invalid(e.to_string())
    }

    pub fn failed(e: impl std::fmt::Display) -> Error {
        Error::Failed(e.to_string())
    }

    pub fn runbook(source: Source, diagnostics: Vec<Diagnostic>) -> Error {
        Error::Runbook {
            file: Box::new(source),
            diagnostics,
        }
    }
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        match e {
            LockError::Held { .. } | LockError::Paused { .. } => Error::Held(e.to_string()),
            LockError::Io { .. } | LockError::Store { .. } => Error::Store(e.to_string()),
        }
    }
}

impl From<crate::engine::EngineError> for Error {
    fn from(e: crate::engine::EngineError) -> Error {
        match e {
            crate::engine::EngineError::Log(_) => Error::Store(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
