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

/// How much of a command's stdin is read and queued at once: two SSH packets, fine enough for an upload
/// to keep pace with the node ([`flow`]).
pub(super) const UPLOAD_CHUNK: usize = 64 * 1024;

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

/// An exec channel's write half and the connection itself, kept in [`AgentStream::keepalive`] so the
/// stream outlives a dropped [`SshSession`]; closes the channel when dropped, so whatever is not handed
/// over as a stream ends.
pub(super) struct ExecChannel {
    pub(super) write: Arc<ChannelWriteHalf<Msg>>,
    pub(super) _session: Arc<Connection>,
}

impl Drop for ExecChannel {
    fn drop(&mut self) {
        // Closing the channel makes sshd close the remote command's stdin and stdout: the agent sees EOF
        // and exits. Sending it needs the runtime, which is gone only when the whole program is ending
        // (and the connection with it).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let write = Arc::clone(&self.write);
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
        let channel = self.open(command).await?;
        let id = channel.id();
        let window = stdin.is_some().then(|| self.handle.windows.watch(id));
        let (mut read, write) = channel.split();
        let send = async {
            let fed = feed(&write, stdin, window).await;
            self.handle.windows.closed(id);
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
        Ok(self.spawn_parts(command).await?.into_process())
    }

    /// [`spawn`](Self::spawn)'s parts before they become a stream, for a caller that talks to the command
    /// on the channel itself first (an upload paced by the window, [`send_paced`]).
    pub(super) async fn spawn_parts(&self, command: &str) -> Result<Spawned, SshError> {
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
        let channel = ExecChannel { write: Arc::new(write), _session: Arc::clone(&self.handle) };
        Ok(Spawned { stdout, channel, status: RemoteStatus { stderr, exit: exit_rx } })
    }
}

/// A command started by [`SshSession::spawn_parts`]: its stdout, the channel (closed when dropped unless
/// handed over), its status.
pub(super) struct Spawned {
    pub(super) stdout: ExecStdout,
    pub(super) channel: ExecChannel,
    pub(super) status: RemoteStatus,
}

impl Spawned {
    /// The channel's write half.
    pub(super) fn write(&self) -> &ChannelWriteHalf<Msg> {
        &self.channel.write
    }

    /// The stream and status [`SshSession::spawn`] returns; the stream keeps the connection alive.
    pub(super) fn into_process(self) -> RemoteProcess {
        let writer = self.channel.write.make_writer();
        RemoteProcess {
            stream: AgentStream {
                reader: Box::new(self.stdout),
                writer: Box::new(writer),
                keepalive: Box::new(self.channel),
                tunnel: None,
            },
            status: self.status,
        }
    }
}

pub(super) enum FeedError {
    /// Reading the local input failed.
    Local(std::io::Error),
    /// The channel refused the data.
    Channel(russh::Error),
}

/// Sends `stdin` (if any) and then EOF, paced as [`send_paced`] does.
pub(super) async fn feed<R: AsyncRead + Unpin>(
    write: &ChannelWriteHalf<Msg>,
    stdin: Option<R>,
    window: Option<watch::Receiver<flow::Window>>,
) -> Result<(), FeedError> {
    if let Some(stdin) = stdin {
        send_paced(write, stdin, window).await?;
    }
    write.eof().await.map_err(FeedError::Channel)
}

/// Sends all of `input` on the channel, without an EOF after it; returns how many bytes went. Where the
/// channel's `window` is known and worth it, what the node has not consumed is kept under
/// [`flow::IN_FLIGHT`] (see [`flow`] for why).
pub(super) async fn send_paced<R: AsyncRead + Unpin>(
    write: &ChannelWriteHalf<Msg>,
    mut input: R,
    mut window: Option<watch::Receiver<flow::Window>>,
) -> Result<u64, FeedError> {
    if let Some(w) = &mut window {
        // sshd grants a session channel's window as its command starts, a moment after the exec.
        let _ = tokio::time::timeout(flow::PATIENCE, w.wait_for(|w| w.remaining > 0)).await;
    }
    let mut window = window.filter(|w| w.borrow().worth_pacing());
    // The window granted once the command started, nothing sent yet.
    let capacity = window.as_ref().map_or(0, |w| w.borrow().remaining);
    // Sent since the window's latest adjustment was seen.
    let mut sent_since = 0u64;
    let mut sent = 0u64;
    // Large chunks handed over as owned bytes: russh's `data` copies through an 8 KiB buffer, one SSH
    // packet per 8 KiB where OpenSSH takes 32 KiB; the agent upload took 60% longer that way.
    loop {
        let mut chunk = vec![0u8; UPLOAD_CHUNK];
        let n = input.read(&mut chunk).await.map_err(FeedError::Local)?;
        if n == 0 {
            return Ok(sent);
        }
        chunk.truncate(n);
        if let Some(w) = &mut window
            && !keep_pace(w, capacity, &mut sent_since, n as u64).await
        {
            window = None;
        }
        write.data_bytes(chunk).await.map_err(FeedError::Channel)?;
        sent_since += n as u64;
        sent += n as u64;
    }
}

/// Waits until `next` more bytes keep what the node has not consumed under [`flow::IN_FLIGHT`] (for an
/// upload that started with the window `capacity`), or for [`flow::PATIENCE`] at most. `false` once the
/// channel is gone (nothing to wait for any more).
async fn keep_pace(window: &mut watch::Receiver<flow::Window>, capacity: u32, sent_since: &mut u64, next: u64) -> bool {
    loop {
        if window.has_changed().unwrap_or(false) {
            window.borrow_and_update();
            *sent_since = 0;
        }
        let in_flight = window.borrow().in_flight(capacity, *sent_since);
        if in_flight == 0 || in_flight + next <= flow::IN_FLIGHT {
            return true;
        }
        match tokio::time::timeout(flow::PATIENCE, window.changed()).await {
            // `changed` marks the adjustment seen.
            Ok(Ok(())) => *sent_since = 0,
            Ok(Err(_)) => return false,
            // Sent anyway: an upload always progresses.
            Err(_) => return true,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const OPENSSH: u32 = 2 * 1024 * 1024;

    fn window(remaining: u32) -> (watch::Sender<flow::Window>, watch::Receiver<flow::Window>) {
        watch::channel(flow::Window { remaining })
    }

    #[tokio::test]
    async fn an_upload_under_the_limit_goes_on_at_once() {
        let (_tx, mut rx) = window(OPENSSH);
        let mut sent = 0;
        assert!(keep_pace(&mut rx, OPENSSH, &mut sent, 64 * 1024).await);
        let mut sent = flow::IN_FLIGHT - 64 * 1024;
        assert!(keep_pace(&mut rx, OPENSSH, &mut sent, 64 * 1024).await);
    }

    #[tokio::test]
    async fn an_upload_ahead_of_the_node_waits_for_its_adjustment() {
        let (tx, mut rx) = window(OPENSSH);
        let mut sent = flow::IN_FLIGHT;
        let adjust = async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            // The node consumed all but 64 KiB of what was sent.
            tx.send_modify(|w| w.remaining = OPENSSH - 64 * 1024);
        };
        let started = std::time::Instant::now();
        let (paced, ()) = tokio::join!(keep_pace(&mut rx, OPENSSH, &mut sent, 64 * 1024), adjust);
        assert!(paced);
        assert_eq!(sent, 0, "counted afresh from the adjustment");
        assert!(started.elapsed() < flow::PATIENCE, "woken by the adjustment, not by patience");
    }

    #[tokio::test]
    async fn an_upload_never_waits_longer_than_patience_nor_on_a_closed_channel() {
        let (tx, mut rx) = window(OPENSSH - flow::IN_FLIGHT as u32);
        let mut sent = 0;
        let started = std::time::Instant::now();
        assert!(keep_pace(&mut rx, OPENSSH, &mut sent, 64 * 1024).await, "sent anyway");
        assert!(started.elapsed() >= flow::PATIENCE);
        drop(tx);
        assert!(!keep_pace(&mut rx, OPENSSH, &mut sent, 64 * 1024).await, "nothing to wait for on a closed channel");
    }
}
