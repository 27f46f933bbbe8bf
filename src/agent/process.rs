//! The agent as a process: what `bai agent` and the small `bai-agent` binary both run. The node is sent
//! `bai-agent` when it sits beside the controller's `bai` and was built with it ([`crate::agent::binary`]):
//! under a third of `bai`'s size, it holds none of the lab language, the planner, the SSH client or the CLI.
//! Both take the same arguments, so either one can be installed under the content address.

use std::io::Write as _;

use crate::agent::home::Home;
use crate::agent::serve::serve;
use crate::agent::stdio;
use crate::protocol::AGENT_READY;

/// What the agent was asked to do, from its command line (`agent [--expect-size BYTES] [--place SHA256]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentArgs {
    /// Check first that this binary is this many bytes, then say it is ready (how the controller starts
    /// an installed agent over SSH).
    pub expect_size: Option<u64>,
    /// This binary is an upload not yet in place: hash it and rename it into its content address when
    /// it is this SHA-256, else remove it and end ([`crate::agent::place`]).
    pub place: Option<String>,
}

impl AgentArgs {
    /// Reads `bai-agent`'s arguments (those after the program name): the `agent` subcommand `bai` takes,
    /// then `--expect-size BYTES` or `--expect-size=BYTES`. Hand-parsed: a parser crate would be most of
    /// a binary meant to be small, and these are written by the controller alone.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, String> {
        let mut args = args.into_iter();
        match args.next().as_deref() {
            Some("agent") => {}
            Some(other) => {
                return Err(format!("unknown command `{}`; bai-agent only runs `agent`", other.escape_debug()));
            }
            None => return Err("missing command; bai-agent only runs `agent`".to_owned()),
        }
        let mut parsed = Self::default();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            if flag != "--expect-size" && flag != "--place" {
                return Err(format!("unexpected argument `{}`", arg.escape_debug()));
            }
            let value = match inline {
                Some(value) => value,
                None => args.next().ok_or_else(|| format!("`{flag}` needs a value"))?,
            };
            if flag == "--place" {
                if !crate::agent::installed::is_sha256(&value) {
                    return Err(format!("`--place` takes a SHA-256 in hex, not `{}`", value.escape_debug()));
                }
                parsed.place = Some(value);
                continue;
            }
            let bytes = value
                .parse()
                .map_err(|_| format!("`--expect-size` takes a number of bytes, not `{}`", value.escape_debug()))?;
            parsed.expect_size = Some(bytes);
        }
        Ok(parsed)
    }
}

/// Runs the agent until the controller hangs up; `false` when it failed (said on stderr).
pub fn run(args: AgentArgs) -> bool {
    if let Some(sha256) = &args.place {
        // An upload started from its temporary name: in place, or removed, before anything else.
        let placed = std::env::current_exe()
            .map_err(|source| crate::agent::place::PlaceError::Io { what: "cannot find its own file", source })
            .and_then(|exe| crate::agent::place::place(&exe, sha256, args.expect_size));
        if let Err(e) = placed {
            eprintln!("bai agent: {e}");
            return false;
        }
    }
    if let Some(expected) = args.expect_size {
        // The content address is only ever written by a rename after a verified upload, so the size is
        // enough to tell a copy truncated or rewritten since; hashing it on every connection is not.
        let own = std::fs::metadata("/proc/self/exe").or_else(|_| std::env::current_exe().and_then(std::fs::metadata));
        let ready = own.is_ok_and(|m| m.len() == expected);
        if let Err(e) = writeln!(std::io::stdout(), "{}", if ready { AGENT_READY } else { "stale" }) {
            eprintln!("bai agent: cannot write: {e}");
            return false;
        }
        let _ = std::io::stdout().flush();
        if !ready {
            return true;
        }
        // An installed agent started by the controller: it marks itself used and lets go of agents nobody
        // ran for a month. Beside the serving, and best effort: a node where it fails keeps its agents.
        if let (Ok(exe), Some(home)) = (std::env::current_exe(), std::env::var_os("HOME")) {
            let _ = std::thread::Builder::new().name("tend".into()).spawn(move || {
                let _ = crate::agent::installed::tend(&exe, std::path::Path::new(&home), std::time::SystemTime::now());
            });
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bai agent: cannot start: {e}");
            return false;
        }
    };
    let served = runtime.block_on(async {
        let (input, output, _restore) = stdio::standard();
        serve(input, output, Home::from_env()).await
    });
    // A call abandoned when the controller hung up may have left blocking work behind (a file read on
    // the blocking pool): the agent ends now rather than waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match served {
        Ok(()) => true,
        Err(e) => {
            eprintln!("bai agent: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentArgs, String> {
        AgentArgs::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn takes_what_the_controller_writes() {
        let hash = "ab".repeat(32);
        let args = |expect_size, place: Option<&str>| Ok(AgentArgs { expect_size, place: place.map(str::to_owned) });
        assert_eq!(parse(&["agent"]), args(None, None));
        assert_eq!(parse(&["agent", "--expect-size", "123"]), args(Some(123), None));
        assert_eq!(parse(&["agent", "--expect-size=7"]), args(Some(7), None));
        assert_eq!(parse(&["agent", "--expect-size", "7", "--place", &hash]), args(Some(7), Some(&hash)));
        assert_eq!(parse(&["agent", &format!("--place={hash}")]), args(None, Some(&hash)));
    }

    #[test]
    fn refuses_anything_else() {
        assert!(parse(&[]).unwrap_err().contains("missing command"));
        assert!(parse(&["apply"]).unwrap_err().contains("unknown command `apply`"));
        assert!(parse(&["agent", "--expect-size"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["agent", "--expect-size", "-1"]).unwrap_err().contains("not `-1`"));
        assert!(parse(&["agent", "--expect-sizes=1"]).unwrap_err().contains("unexpected argument"));
        assert!(parse(&["agent", "extra\n"]).unwrap_err().contains("`extra\\n`"));
        assert!(parse(&["agent", "--place"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["agent", "--place", "../bai"]).unwrap_err().contains("not `../bai`"));
        assert!(parse(&["agent", "--place", &"AB".repeat(32)]).unwrap_err().contains("SHA-256"));
    }
}
