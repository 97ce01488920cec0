//! Named exit codes: the CLI's contract with scripts and CI (docs/executor.md, "Exit codes").

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// A run failed, or `verify` found tampering.
    Failed = 1,
    /// The input is invalid: a runbook, a param, a command line.
    Invalid = 2,
    /// A run stopped at an approval gate.
    WaitingForApproval = 3,
    /// Another run holds a lock this one needs.
    LockHeld = 4,
    /// The state store could not be reached or written: a run stopped where its log ends
    /// (`resume` continues it), or none was created.
    StateStore = 5,
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
