//! A remote command's stdout, read straight from its SSH channel.
//!
//! Every message of an exec channel arrives on one queue: stdout data, stderr data, end of file, the exit
//! status, the close. Reading stdout therefore also files away the stderr tail and the exit status as they
//! pass, and stdout ends only when the channel closes, with the status known by then. Reading the queue in
//! the caller's task (rather than pumping it through a pipe from a task of its own) keeps one task hop and
//! one copy off every answer: `bai watch` reads hundreds of them a second.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use russh::{ChannelMsg, ChannelReadHalf, Sig};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;

use super::exit_status::ExitStatus;

/// The most remote stderr kept for a long-running command: its tail is what explains a crash, and an
/// agent that logs forever must not grow the controller's memory.
const STDERR_LIMIT: usize = 64 * 1024;

/// The [`AsyncRead`] over a channel's stdout; see the module documentation.
pub struct ExecStdout {
    read: ChannelReadHalf,
    /// Stdout received beyond what the last read could take.
    rest: Vec<u8>,
    taken: usize,
    /// End of file was seen: stdout is over, the rest of the queue is status.
    eof: bool,
    status: ExitStatus,
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: watch::Sender<Option<ExitStatus>>,
}

impl ExecStdout {
    /// Reads `read`, starting with `first` when the exec request's answer was already followed by
    /// output.
    pub fn new(
        read: ChannelReadHalf,
        first: Option<ChannelMsg>,
        stderr: Arc<Mutex<Vec<u8>>>,
        exit: watch::Sender<Option<ExitStatus>>,
    ) -> Self {
        let mut stdout =
            ExecStdout { read, rest: Vec::new(), taken: 0, eof: false, status: ExitStatus::Unknown, stderr, exit };
        if let Some(message) = first {
            let mut nowhere = ReadBuf::new(&mut []);
            // Only stdout can be left over (kept in `rest`); status messages are filed right away.
            if stdout.file(message, &mut nowhere) {
                stdout.closed();
            }
        }
        stdout
    }

    /// Files one message; true when the channel is over.
    fn file(&mut self, message: ChannelMsg, buf: &mut ReadBuf<'_>) -> bool {
        match message {
            ChannelMsg::Data { data } if !self.eof => {
                let now = data.len().min(buf.remaining());
                buf.put_slice(&data[..now]);
                self.rest.extend_from_slice(&data[now..]);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let mut tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
                tail.extend_from_slice(&data);
                if tail.len() > STDERR_LIMIT {
                    let excess = tail.len() - STDERR_LIMIT;
                    tail.drain(..excess);
                }
            }
            ChannelMsg::Eof => self.eof = true,
            ChannelMsg::ExitStatus { exit_status } => self.status = ExitStatus::Code(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => self.status = ExitStatus::Signal(signal_text(&signal_name)),
            ChannelMsg::Close => return true,
            _ => {}
        }
        false
    }

    fn closed(&mut self) {
        self.eof = true;
        self.exit.send_replace(Some(self.status.clone()));
    }
}

impl AsyncRead for ExecStdout {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.rest.len() {
            let now = (this.rest.len() - this.taken).min(buf.remaining());
            buf.put_slice(&this.rest[this.taken..this.taken + now]);
            this.taken += now;
            if this.taken == this.rest.len() {
                this.rest.clear();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.exit.borrow().is_some() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        loop {
            // `recv` is cancel-safe and keeps the waker it registered, so a fresh future per poll is fine.
            let polled = pin!(this.read.wait()).poll(cx);
            let message = match polled {
                Poll::Ready(Some(message)) => message,
                Poll::Ready(None) => {
                    this.closed();
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            if this.file(message, buf) {
                this.closed();
                return Poll::Ready(Ok(()));
            }
            if buf.filled().len() > before && (buf.remaining() == 0 || !this.rest.is_empty()) {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// A signal's name as OpenSSH sends it (`KILL`, `TERM`, …).
pub(crate) fn signal_text(signal: &Sig) -> String {
    match signal {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}
