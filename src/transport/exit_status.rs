//! How a remote command ended, as an SSH channel reports it: a leaf that the session code and its
//! stdout stream both use.

use std::fmt;

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    /// Killed by a signal, named as OpenSSH names it (`KILL`, `TERM`, …).
    Signal(String),
    /// The channel closed without reporting a status (the connection dropped, or sshd died).
    Unknown,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitStatus::Unknown => f.write_str("no exit status: the channel closed"),
        }
    }
}
