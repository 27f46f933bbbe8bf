//! A session's streams on the node: its log, a command run in it, and tar archives out of and into it, as
//! `docker logs`, `docker exec` and `docker cp` give them; relayed as [`crate::frame`]s over the agent's
//! connection (the controller's side is `crate::reach`).
//!
//! Only bai's own containers of the connection's cluster are reached (found by name, checked by label,
//! then addressed by id). What the controller sends is data: the command's argv goes to the engine as a
//! list, never through a shell.

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, LogsOptionsBuilder, ResizeExecOptionsBuilder};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::sessions::{checked_name, owned};
use super::*;
use crate::frame::{self, Kind};
use crate::protocol::{ExecStream, LogsStream, Stream as StreamKind, StreamCall};

/// How often a log that follows looks again at a container the engine is restarting.
const RESTART_POLL: Duration = Duration::from_millis(100);

impl Engine {
    /// Runs a stream call to its end (see [`crate::protocol::Stream`] for what each sends and takes).
    pub async fn stream<R, W>(
        &self,
        cluster: &str,
        call: &StreamCall,
        reader: R,
        writer: &mut W,
    ) -> Result<(), DockerError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (container, id) = self.owned_id(cluster, &call.session).await?;
        let io = broke(&container, "the stream");
        match &call.stream {
            StreamKind::Logs(logs) => self.logs(&container, &id, logs, writer).await,
            StreamKind::Exec(exec) => self.exec_attached(&container, &id, exec, reader, writer).await,
            StreamKind::CopyOut { path } => {
                let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
                let mut archive = self.docker.download_from_container(&id, Some(options));
                while let Some(chunk) = archive.next().await {
                    let chunk = chunk.map_err(api(format!("reading {path} out of container {container}")))?;
                    frame::write(writer, Kind::Data, &chunk).await.map_err(io)?;
                }
                frame::write(writer, Kind::End, b"").await.map_err(io)
            }
            StreamKind::CopyIn { path } => {
                // Like `docker cp`: into an existing directory, else as the new name in its parent. The
                // controller learns which from the first frame and names the archive's top entry to match.
                let docker = &self.docker;
                let is_dir = match docker.get_container_archive_info(&id, Some(archive_options(path))).await {
                    Ok(stat) => stat.file_mode & (1 << 31) != 0,
                    Err(e) if is_not_found(&e) => false,
                    Err(e) => return Err(api(format!("looking at {path} in container {container}"))(e)),
                };
                if path.ends_with('/') && !is_dir {
                    return Err(DockerError::Invalid {
                        container: container.clone(),
                        reason: format!("there is no directory {path} to copy into"),
                    });
                }
                let into = if is_dir { path.clone() } else { parent_of(path) };
                frame::write(writer, Kind::Data, serde_json::json!({ "dir": is_dir }).to_string().as_bytes())
                    .await
                    .map_err(io)?;
                let options = UploadToContainerOptionsBuilder::default().path(&into).build();
                let (tx, rx) = tokio::sync::mpsc::channel::<hyper::body::Bytes>(8);
                let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
                let upload = self.docker.upload_to_container(&id, Some(options), bollard::body_stream(body));
                let feed = async move {
                    let mut reader = reader;
                    loop {
                        match frame::read(&mut reader).await {
                            Ok(Some(f)) if f.kind == Kind::Data => {
                                if tx.send(f.payload.into()).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Ok(Some(f)) if f.kind == Kind::End => return Ok(()),
                            Ok(_) => return Err("the archive ended before its end"),
                            Err(_) => return Err("the archive broke off"),
                        }
                    }
                };
                let (uploaded, fed) = tokio::join!(upload, feed);
                fed.map_err(|reason| DockerError::Invalid { container: container.clone(), reason: reason.into() })?;
                uploaded.map_err(api(format!("extracting the archive into {into} in container {container}")))?;
                frame::write(writer, Kind::End, b"").await.map_err(io)
            }
        }
    }

    /// The id of the session's container, once it is known to be bai's for `cluster`.
    async fn owned_id(&self, cluster: &str, session: &str) -> Result<(String, String), DockerError> {
        let container = checked_name(cluster, session)?;
        let invalid = |reason: &str| DockerError::Invalid { container: container.clone(), reason: reason.into() };
        let Some(existing) = self.inspect_container(&container).await? else {
            return Err(invalid("there is no such container"));
        };
        if !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, session) {
            return Err(DockerError::NotOwned { container, cluster: cluster.to_string() });
        }
        let id = existing.id.ok_or_else(|| invalid("Docker reported no id for it"))?;
        Ok((container, id))
    }

    /// The container's log. Following, it goes on across restarts by the engine (a restart policy): when
    /// the engine's stream ends, the container is looked at again, and while the engine restarts it the
    /// log is taken up again after what was already there. Lines are always asked with their time stamp
    /// for that; the stamp is cut off again unless it was asked for.
    ///
    /// The engine stamps each stream's lines as it reads them and writes both streams into one log, so the
    /// stamps of the log's lines are in order within a stream but not across them: a pass is never
    /// filtered by stamp. When a followed log ends the container has stopped and every line it wrote is
    /// in the log, so the next pass skips every line stamped no later than the latest stamp seen (the
    /// `horizon`): those were sent, or left out by `--tail`/`--since`.
    async fn logs<W: AsyncWrite + Unpin>(
        &self,
        container: &str,
        id: &str,
        req: &LogsStream,
        writer: &mut W,
    ) -> Result<(), DockerError> {
        let docker = &self.docker;
        let io = broke(container, "the log stream");
        // Now, to the nanosecond, on the engine's own clock (the agent runs beside it): a line stamped before
        // it was there before the log was asked for.
        let opened_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or((0, 0), |d| (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()));
        // The latest stamp seen; `None` until the first pass ends.
        let mut horizon: Option<(i64, u32)> = None;
        let mut latest: (i64, u32) = opened_at;
        loop {
            let mut options =
                LogsOptionsBuilder::default().follow(req.follow).stdout(true).stderr(true).timestamps(true);
            options = match horizon {
                // Docker's `since` is whole seconds, inclusive: lines of that second already there are
                // skipped below.
                Some((secs, _)) => options.since(i32::try_from(secs).unwrap_or(i32::MAX)),
                None => {
                    let since = req.since.map_or(0, |s| i32::try_from(s.max(0)).unwrap_or(i32::MAX));
                    let tail = req.tail.map_or_else(|| "all".to_string(), |n| n.to_string());
                    options.since(since).tail(&tail)
                }
            };
            let mut lines = docker.logs(id, Some(options.build()));
            while let Some(item) = lines.next().await {
                let (kind, message) = match item.map_err(api(format!("reading the log of container {container}")))? {
                    LogOutput::StdErr { message } => (Kind::Stderr, message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => (Kind::Stdout, message),
                    LogOutput::StdIn { .. } => continue,
                };
                let (stamp, line) = split_stamp(&message);
                if let Some(stamp) = stamp {
                    if horizon.is_some_and(|h| stamp <= h) {
                        continue;
                    }
                    latest = latest.max(stamp);
                }
                let out = if req.timestamps { &message[..] } else { line };
                frame::write(writer, kind, out).await.map_err(io)?;
            }
            if !req.follow || !self.comes_back(id).await? {
                return frame::write(writer, Kind::End, b"").await.map_err(io);
            }
            horizon = Some(latest);
        }
    }

    /// Whether a container whose log ended runs again (the engine restarted it, or is about to).
    async fn comes_back(&self, id: &str) -> Result<bool, DockerError> {
        loop {
            let Some(inspect) = self.inspect_container(id).await? else { return Ok(false) };
            let state = inspect.state.unwrap_or_default();
            if state.running == Some(true) && state.restarting != Some(true) {
                return Ok(true);
            }
            if state.restarting != Some(true) {
                return Ok(false);
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
    }

    /// A command in the running container, attached: input from `Stdin` frames, output as frames, then
    /// its exit code. A pseudo-terminal takes `Resize` frames. When the controller goes away the relay
    /// ends; Docker has no way to stop an exec'd process, so the program sees its input end (and, with a
    /// terminal, a hang-up once the engine closes it).
    async fn exec_attached<R, W>(
        &self,
        container: &str,
        id: &str,
        req: &ExecStream,
        mut reader: R,
        writer: &mut W,
    ) -> Result<(), DockerError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let docker = &self.docker;
        let action = || format!("running {:?} in container {container}", req.argv.join(" "));
        let config = ExecConfig {
            cmd: Some(req.argv.clone()),
            attach_stdin: Some(req.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(req.tty),
            ..Default::default()
        };
        let created = docker.create_exec(id, config).await.map_err(api(action()))?;
        let start = StartExecOptions { detach: false, tty: req.tty, output_capacity: None };
        let StartExecResults::Attached { mut output, mut input } =
            docker.start_exec(&created.id, Some(start)).await.map_err(api(action()))?
        else {
            return Err(DockerError::Invalid {
                container: container.to_string(),
                reason: "the engine did not attach".into(),
            });
        };
        let resize = |(cols, rows): (u16, u16)| {
            let exec = created.id.clone();
            async move {
                let options = ResizeExecOptionsBuilder::default().w(i32::from(cols)).h(i32::from(rows)).build();
                // A resize the engine refuses (the process just ended) is not worth ending the stream for.
                let _ = docker.resize_exec(&exec, options).await;
            }
        };
        if let (true, Some(size)) = (req.tty, req.size) {
            resize(size).await;
        }
        let io = broke(container, "the exec stream");
        if !req.stdin {
            let _ = input.shutdown().await;
        }
        // Two loops side by side rather than one `select!` over both reads: a frame half read when the
        // other side wins would be lost.
        let pump_in = async {
            let mut input_open = req.stdin;
            loop {
                let Ok(Some(f)) = frame::read(&mut reader).await else { return };
                match f.kind {
                    // A program that stopped reading closes its input: the rest of it is dropped.
                    Kind::Stdin if input_open => input_open = input.write_all(&f.payload).await.is_ok(),
                    Kind::StdinEnd if input_open => {
                        input_open = false;
                        let _ = input.shutdown().await;
                    }
                    Kind::Resize => {
                        if let (true, Some(size)) = (req.tty, f.size()) {
                            resize(size).await;
                        }
                    }
                    _ => {}
                }
            }
        };
        let pump_out = async {
            while let Some(item) = output.next().await {
                let (kind, message) = match item.map_err(api(action()))? {
                    LogOutput::StdErr { message } => (Kind::Stderr, message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => (Kind::Stdout, message),
                    LogOutput::StdIn { .. } => continue,
                };
                frame::write(writer, kind, &message).await.map_err(io)?;
            }
            Ok::<(), DockerError>(())
        };
        tokio::select! {
            done = pump_out => done?,
            // The controller is gone: nobody reads the output any more.
            () = pump_in => return Ok(()),
        }
        // The output ends a moment before the engine files the exit code.
        let mut pause = Duration::from_millis(5);
        for _ in 0..40 {
            let inspect = docker.inspect_exec(&created.id).await.map_err(api(action()))?;
            if inspect.running != Some(true)
                && let Some(code) = inspect.exit_code
            {
                return frame::write(writer, Kind::Exit, &frame::exit_payload(code)).await.map_err(io);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Err(DockerError::Invalid {
            container: container.to_string(),
            reason: "the engine never told the command's exit code".into(),
        })
    }
}

/// A stream to the controller that broke (it went away, most likely), as the call's error.
fn broke<'a>(container: &'a str, what: &'a str) -> impl Fn(std::io::Error) -> DockerError + Copy + 'a {
    move |e| DockerError::Invalid { container: container.to_string(), reason: format!("{what} broke: {e}") }
}

fn archive_options(path: &str) -> bollard::query_parameters::ContainerArchiveInfoOptions {
    bollard::query_parameters::ContainerArchiveInfoOptionsBuilder::default().path(path).build()
}

/// The directory above an absolute path in the container (`/` above `/x`).
fn parent_of(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

/// A log line's time stamp as Docker writes it (`2026-12-06T10:00:00.123456789Z `) and the line after it.
fn split_stamp(message: &[u8]) -> (Option<(i64, u32)>, &[u8]) {
    let Some(space) = message.iter().take(40).position(|&b| b == b' ') else { return (None, message) };
    match std::str::from_utf8(&message[..space]).ok().and_then(crate::utc::Utc::parse_rfc3339) {
        Some(stamp) => (Some(stamp), &message[space + 1..]),
        None => (None, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_split_from_lines() {
        let (stamp, line) = split_stamp(b"2026-12-06T10:00:00.5Z hello world\n");
        assert_eq!(stamp, Some((1_796_551_200, 500_000_000)));
        assert_eq!(line, b"hello world\n");
        assert_eq!(split_stamp(b"no stamp here\n"), (None, &b"no stamp here\n"[..]));
        assert_eq!(split_stamp(b""), (None, &b""[..]));
    }

    #[test]
    fn parents_of_container_paths() {
        assert_eq!(parent_of("/x"), "/");
        assert_eq!(parent_of("/home/work/new"), "/home/work");
        assert_eq!(parent_of("/home/work/new/"), "/home/work");
    }
}
