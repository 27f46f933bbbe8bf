//! The agent's stdin and stdout as streams the runtime polls for readiness.
//!
//! `tokio::io::stdin()`/`stdout()` do every read and write on a blocking-pool thread, so each request
//! crossed threads four times (read, hand over, write, hand back) on the node. sshd and the local
//! transport give the agent pipes (or a socket): those are made non-blocking and registered with the
//! runtime's reactor instead, and a request costs one wake-up. Anything else (a terminal, a file) keeps
//! tokio's blocking adapters. The descriptors' blocking mode is restored when the agent ends, so a shell
//! pipeline that shares them is left as it was.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// The agent's request stream (stdin).
pub type Input = Pin<Box<dyn AsyncRead + Send>>;
/// The agent's response stream (stdout).
pub type Output = Pin<Box<dyn AsyncWrite + Send>>;

/// What kind of file a standard stream is, as far as polling it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pipe,
    Socket,
    Other,
}

fn kind(fd: BorrowedFd<'_>) -> Kind {
    let Ok(owned) = fd.try_clone_to_owned() else { return Kind::Other };
    let Ok(meta) = std::fs::File::from(owned).metadata() else { return Kind::Other };
    let t = meta.file_type();
    if t.is_fifo() {
        Kind::Pipe
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::Other
    }
}

/// Puts a descriptor back in blocking mode when dropped: the agent shares the open file with whoever
/// started it.
pub struct Restore {
    fds: Vec<i32>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for &fd in &self.fds {
            // SAFETY: fcntl on a descriptor number; at worst it fails with EBADF, which is ignored.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
                }
            }
        }
    }
}

/// The process's stdin and stdout, polled by the current runtime where the files allow it. Must be
/// called inside a runtime with I/O enabled.
pub fn standard() -> (Input, Output, Restore) {
    let mut restore = Restore { fds: Vec::new() };
    let stdin = io::stdin();
    let input: Input = match reactor_reader(stdin.as_fd()) {
        Ok(Some(reader)) => {
            restore.fds.push(stdin.as_fd().as_raw_fd());
            reader
        }
        _ => Box::pin(tokio::io::stdin()),
    };
    let stdout = io::stdout();
    let output: Output = match reactor_writer(stdout.as_fd()) {
        Ok(Some(writer)) => {
            restore.fds.push(stdout.as_fd().as_raw_fd());
            writer
        }
        _ => Box::pin(tokio::io::stdout()),
    };
    (input, output, restore)
}

fn reactor_reader(fd: BorrowedFd<'_>) -> io::Result<Option<Input>> {
    match kind(fd) {
        Kind::Pipe => Ok(Some(Box::pin(pipe::Receiver::from_owned_fd(fd.try_clone_to_owned()?)?))),
        Kind::Socket => Ok(Some(Box::pin(socket(fd.try_clone_to_owned()?)?))),
        Kind::Other => Ok(None),
    }
}

fn reactor_writer(fd: BorrowedFd<'_>) -> io::Result<Option<Output>> {
    match kind(fd) {
        Kind::Pipe => Ok(Some(Box::pin(pipe::Sender::from_owned_fd(fd.try_clone_to_owned()?)?))),
        Kind::Socket => Ok(Some(Box::pin(socket(fd.try_clone_to_owned()?)?))),
        Kind::Other => Ok(None),
    }
}

fn socket(fd: OwnedFd) -> io::Result<tokio::net::UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    #[test]
    fn pipes_and_sockets_are_polled_and_files_are_not() {
        let (read, write) = io::pipe().expect("pipe");
        assert_eq!(kind(read.as_fd()), Kind::Pipe);
        assert_eq!(kind(write.as_fd()), Kind::Pipe);
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert_eq!(kind(a.as_fd()), Kind::Socket);
        let file = tempfile::tempfile().expect("temp file");
        assert_eq!(kind(file.as_fd()), Kind::Other);
        assert!(reactor_reader(file.as_fd()).expect("a plain file is not an error").is_none());
    }

    #[test]
    fn a_pipe_carries_lines_both_ways_and_is_blocking_again_afterwards() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (in_read, mut in_write) = io::pipe().expect("pipe");
        let (mut out_read, out_write) = io::pipe().expect("pipe");
        let raw = [in_read.as_raw_fd(), out_write.as_raw_fd()];
        runtime.block_on(async {
            let reader = reactor_reader(in_read.as_fd()).expect("reader").expect("a pipe is polled");
            let mut writer = reactor_writer(out_write.as_fd()).expect("writer").expect("a pipe is polled");
            let _restore = Restore { fds: raw.to_vec() };
            std::io::Write::write_all(&mut in_write, b"{\"id\":1}\n").expect("write request");
            let mut lines = BufReader::new(reader).lines();
            let line = lines.next_line().await.expect("read").expect("a line");
            assert_eq!(line, "{\"id\":1}");
            writer.write_all(b"answer\n").await.expect("write answer");
            // SAFETY: F_GETFL on descriptors this test owns.
            let nonblocking = raw.iter().all(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK != 0);
            assert!(nonblocking, "polled descriptors are non-blocking while the agent runs");
        });
        let mut answer = [0u8; 7];
        std::io::Read::read_exact(&mut out_read, &mut answer).expect("read answer");
        assert_eq!(&answer, b"answer\n");
        // SAFETY: F_GETFL on descriptors this test owns.
        let blocking = raw.iter().all(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK == 0);
        assert!(blocking, "the restore guard puts them back in blocking mode");
    }
}
