//! The library's error type and the exit codes it maps to.
//!
//! Exit codes are part of rookery's interface (README, "Exit codes"): scripts and CI
//! pipelines branch on them, so each failure class keeps its number.

use std::process::ExitCode;

use crate::config::diagnostic::Diagnostics;

/// Documented exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Ok = 0,
    /// The operation failed (I/O, a failed deploy step, an internal error).
    Failed = 1,
    /// Bad flags or arguments.
    Usage = 2,
    /// The inventory or playbook is invalid; nothing was touched.
    Config = 3,
    /// The operation ran, but some hosts failed; the others succeeded.
    HostsFailed = 4,
    /// Another deploy holds the cluster's deploy lock.
    Locked = 5,
    // 6 was "not available in this build yet", used while engines were missing;
    // it is not reused, so scripts written then cannot mistake a new meaning.
    /// A host presented a changed or revoked host key; nothing ran on any host.
    HostKey = 7,
    /// A deploy stopped before its end: a host failed beyond the failure budget
    /// (and was switched back), a quorum did not return in time, or the coordination
    /// session was lost. Finished hosts keep the new release; run the same command to
    /// resume.
    Stopped = 8,
    /// A service's canaries baked clean and the deploy waits for `rookery rollout
    /// --promote` (the service has no `auto_promote`). Nothing failed.
    AwaitingPromotion = 9,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(Diagnostics),
    #[error("--limit `{pattern}`: {reason}")]
    Limit { pattern: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("no inventory given: pass `-i FILE` or set ROOKERY_INVENTORY")]
    NoInventory,
    /// A changed or revoked host key: the run stops before any command.
    #[error("{0}")]
    Untrusted(crate::transport::HostError),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Config,
            Error::Limit { .. } | Error::NoInventory | Error::Usage(_) => Exit::Usage,
            Error::Untrusted(_) => Exit::HostKey,
        }
    }
}

/// The exit status for an error that reached `main`.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for e in err.chain() {
        if let Some(e) = e.downcast_ref::<Error>() {
            return e.exit();
        }
        if let Some(crate::coordination::CoordError::Locked { .. }) = e.downcast_ref() {
            return Exit::Locked;
        }
    }
    Exit::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_exits_with_5() {
        let e = anyhow::Error::new(crate::coordination::CoordError::Locked {
            cluster: "c".into(),
            holder: crate::coordination::Holder::me("d"),
        })
        .context("starting the deploy");
        assert_eq!(exit_for(&e), Exit::Locked);
        assert_eq!(exit_for(&anyhow::anyhow!("x")), Exit::Failed);
    }
}
