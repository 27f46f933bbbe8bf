//! Running fixed commands on a node: their bounded output, a process left running, and the agent's
//! stdio as a byte stream ([`AgentStream`]). Stdin crosses as bytes and never meets a shell.

use super::*;

/// What a finished remote command left behind.
#[derive(Clone, Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How much of a command's stdin is read and queued at once.
pub(super) const UPLOAD_CHUNK: usize = 256 * 1024;

/// A long-running remote command: its stdio as an [`AgentStream`] and a view of how it is doing.
pub struct RemoteProcess {
    pub stream: AgentStream,
    pub status: RemoteStatus,
}

/// Remote stderr (its last 64 KiB) and exit status of a command started with [`SshSession::spawn`].
/// Clones share the same state.
#[derive(Clone)]
pub struct RemoteStatus {
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl RemoteStatus {
    /// What the command wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// How the command ended, once its channel closed.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }

    /// Waits until the channel closes: stderr and the status are filed as the stream's reader reads, so
    /// this resolves once the reader has read to its end (or was dropped: then `Unknown`).
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or(ExitStatus::Unknown),
            Err(_) => ExitStatus::Unknown,
        }
    }
}

/// Kept in [`AgentStream::keepalive`]: the channel's write half and the connection itself, so the
/// stream outlives a dropped [`SshSession`].
pub(super) struct ExecChannel {
    pub(super) write: Option<ChannelWriteHalf<Msg>>,
    pub(super) _session: Arc<Connection>,
}

impl Drop for ExecChannel {
    fn drop(&mut self) {
        // Closing the channel makes sshd close the remote command's stdin and stdout: the agent sees EOF
        // and exits. Sending it needs the runtime, which is gone only when the whole program is ending
        // (and the connection with it).
        if let (Some(write), Ok(runtime)) = (self.write.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = write.close().await;
            });
        }
    }
}

impl SshSession {
    /// Runs a fixed command; returns exit status, stdout, stderr. `stdin` (if any) is sent, then EOF.
    /// A non-zero exit is not an error here: the caller decides.
    pub async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<Output, SshError> {
        self.run_with(command, stdin).await
    }

    pub(super) async fn run_with<R: AsyncRead + Unpin>(
        &self,
        command: &str,
        stdin: Option<R>,
    ) -> Result<Output, SshError> {
        let (mut read, write) = self.open(command).await?.split();
        let send = async {
            let fed = feed(&write, stdin).await;
            if fed.is_err() {
                // Without the rest of its input (and an EOF) the command would wait forever.
                let _ = write.close().await;
            }
            fed
        };
        let receive = collect(&mut read);
        tokio::pin!(send, receive);
        // Send and receive at once: a command may answer, or exit, before it has read all of its input.
        // Once the channel has closed, input still unsent has nowhere to go (and would wait forever for a
        // window): the output is the answer.
        let mut sent = None;
        let (output, refused) = loop {
            tokio::select! {
                fed = &mut send, if sent.is_none() => sent = Some(fed),
                received = &mut receive => break received,
            }
        };
        if refused {
            return Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: command.to_owned(),
                status: "the server refused to run it".to_owned(),
                stderr: String::new(),
            });
        }
        match sent {
            Some(Err(FeedError::Local(source))) => Err(SshError::Io {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                what: format!("cannot read the input for `{command}`"),
                source,
            }),
            // Without an exit status the failed write is all we know; with one, the status says more.
            Some(Err(FeedError::Channel(e))) if output.status == ExitStatus::Unknown => Err(self.session_error(e)),
            _ => Ok(output),
        }
    }

    /// Like [`run`](Self::run), but a non-zero exit is a [`SshError::Remote`] named `what`.
    pub(super) async fn run_checked<R: AsyncRead + Unpin>(
        &self,
        what: &str,
        command: &str,
        stdin: Option<R>,
    ) -> Result<Output, SshError> {
        let output = self.run_with(command, stdin).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: what.to_owned(),
                status: output.status.to_string(),
                stderr: output.stderr_text(),
            })
        }
    }

    /// Starts a long-running command (the agent) and returns its stdio as an [`AgentStream`]: reader =
    /// remote stdout, writer = remote stdin (shutting it down sends EOF). Remote stderr is collected; use
    /// [`spawn`](Self::spawn) to read it.
    pub async fn exec_stream(&self, command: &str) -> Result<AgentStream, SshError> {
        Ok(self.spawn(command).await?.stream)
    }

    /// [`exec_stream`](Self::exec_stream) plus the command's stderr and exit status.
    pub async fn spawn(&self, command: &str) -> Result<RemoteProcess, SshError> {
        let (mut read, write) = self.open(command).await?.split();
        // sshd answers the exec request before the command's first output: a refusal is known here, and
        // would otherwise leave a stream that never ends.
        let first = match read.wait().await {
            Some(ChannelMsg::Success) => None,
            Some(ChannelMsg::Failure) | None => {
                return Err(SshError::Remote {
                    node: self.node.clone(),
                    host: self.host.clone(),
                    port: self.port,
                    command: command.to_owned(),
                    status: "the server refused to run it".to_owned(),
                    stderr: String::new(),
                });
            }
            Some(other) => Some(other),
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (exit_tx, exit_rx) = watch::channel(None);
        let stdout = ExecStdout::new(read, first, Arc::clone(&stderr), exit_tx);
        let writer = write.make_writer();
        let keepalive = ExecChannel { write: Some(write), _session: Arc::clone(&self.handle) };
        Ok(RemoteProcess {
            stream: AgentStream {
                reader: Box::new(stdout),
                writer: Box::new(writer),
                keepalive: Box::new(keepalive),
                tunnel: None,
            },
            status: RemoteStatus { stderr, exit: exit_rx },
        })
    }
}

pub(super) enum FeedError {
    /// Reading the local input failed.
    Local(std::io::Error),
    /// The channel refused the data.
    Channel(russh::Error),
}

/// Sends a command's stdin, if any, then EOF.
pub(super) async fn feed<R: AsyncRead + Unpin>(
    write: &ChannelWriteHalf<Msg>,
    stdin: Option<R>,
) -> Result<(), FeedError> {
    if let Some(mut stdin) = stdin {
        // Large chunks handed over as owned bytes: russh's `data` copies through an 8 KiB buffer, one SSH
        // packet per 8 KiB where OpenSSH takes 32 KiB; the agent upload took 60% longer that way.
        loop {
            let mut chunk = vec![0u8; UPLOAD_CHUNK];
            let n = stdin.read(&mut chunk).await.map_err(FeedError::Local)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            write.data_bytes(chunk).await.map_err(FeedError::Channel)?;
        }
    }
    write.eof().await.map_err(FeedError::Channel)
}

/// The most of a fixed command's stdout and of its stderr kept: bai's own commands print a few lines,
/// and a node that prints more is not believed for longer.
pub(super) const MAX_OUTPUT: usize = 64 * 1024;

pub(super) fn keep(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// Collects a finished command's output (each stream cut at [`MAX_OUTPUT`]). Returns it and whether the
/// server refused the exec request.
pub(super) async fn collect(read: &mut ChannelReadHalf) -> (Output, bool) {
    let mut output = Output { status: ExitStatus::Unknown, stdout: Vec::new(), stderr: Vec::new() };
    let mut refused = false;
    // The exit status may arrive before the last data: read until the channel closes.
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => keep(&mut output.stdout, &data),
            ChannelMsg::ExtendedData { data, ext: 1 } => keep(&mut output.stderr, &data),
            ChannelMsg::ExitStatus { exit_status } => output.status = ExitStatus::Code(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => output.status = ExitStatus::Signal(signal_text(&signal_name)),
            // A refused exec leaves the channel open with nothing to wait for.
            ChannelMsg::Failure => {
                refused = true;
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (output, refused)
}

/// `word` as one literal word for a POSIX login shell: as is when it holds only safe characters, else
/// single quoted (`'\''` for a quote inside). For paths the node itself reported, such as
/// [`SshSession::install_agent`]'s; never a license to pass config values to a shell.
pub fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
