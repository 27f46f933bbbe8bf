//! A session's streams on the node: its log, a command run in it, and tar archives out of and into it, as
//! `docker logs`, `docker exec` and `docker cp` give them; relayed as [`crate::frame`]s over the agent's
//! connection (the controller's side is `crate::reach`).
//!
//! Only bai's own containers of the connection's cluster are reached (found by name, checked by label,
//! then addressed by id). What the controller sends is data: the command's argv goes to the engine as a
//! list, never through a shell.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
        let (container, id, tty) = self.owned_id(cluster, &call.session).await?;
        let io = broke(&container, "the stream");
        let archive = |path: &str| format!("/containers/{}/archive{}", segment(&id), query(&[("path", path)]));
        match &call.stream {
            StreamKind::Logs(logs) => self.logs(&container, &id, tty, logs, writer).await,
            StreamKind::Exec(exec) => self.exec_attached(&container, &id, exec, reader, writer).await,
            StreamKind::CopyOut { path } => {
                let failed = || api(format!("reading {path} out of container {container}"));
                let mut reply = self.docker.send("GET", &archive(path), Body::Empty).await.map_err(failed())?;
                let mut chunk = vec![0; 64 * 1024];
                loop {
                    let n = reply.read(&mut chunk).await.map_err(failed())?;
                    if n == 0 {
                        break;
                    }
                    frame::write(writer, Kind::Data, &chunk[..n]).await.map_err(io)?;
                }
                frame::write(writer, Kind::End, b"").await.map_err(io)
            }
            StreamKind::CopyIn { path } => {
                // Like `docker cp`: into an existing directory, else as the new name in its parent. The
                // controller learns which from the first frame and names the archive's top entry to match.
                let is_dir = match self.docker.send("HEAD", &archive(path), Body::Empty).await {
                    Ok(stat) => is_directory(stat.path_stat()),
                    Err(e) if e.is_not_found() => false,
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
                let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
                let target = archive(&into);
                let upload = self.docker.call("PUT", &target, Body::TarChunks(rx));
                let feed = async move {
                    let mut reader = reader;
                    loop {
                        match frame::read(&mut reader).await {
                            Ok(Some(f)) if f.kind == Kind::Data => {
                                if tx.send(f.payload).await.is_err() {
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

    /// The name and id of the session's container, once it is known to be bai's for `cluster`, and
    /// whether it has a terminal (its log is then one raw stream).
    async fn owned_id(&self, cluster: &str, session: &str) -> Result<(String, String, bool), DockerError> {
        let container = checked_name(cluster, session)?;
        let invalid = |reason: &str| DockerError::Invalid { container: container.clone(), reason: reason.into() };
        let Some(existing) = self.inspect_container(&container).await? else {
            return Err(invalid("there is no such container"));
        };
        if !owned(existing.config.as_ref().and_then(|c| c.labels.as_ref()), cluster, session) {
            return Err(DockerError::NotOwned { container, cluster: cluster.to_string() });
        }
        let tty = existing.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
        let id = existing.id.ok_or_else(|| invalid("Docker reported no id for it"))?;
        Ok((container, id, tty))
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
        tty: bool,
        req: &LogsStream,
        writer: &mut W,
    ) -> Result<(), DockerError> {
        let io = broke(container, "the log stream");
        // Now, to the nanosecond, on the engine's own clock (the agent runs beside it): a line stamped before
        // it was there before the log was asked for.
        let opened_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or((0, 0), |d| (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()));
        // The latest stamp seen; `None` until the first pass ends.
        let mut horizon: Option<(i64, u32)> = None;
        let mut latest: (i64, u32) = opened_at;
        let failed = || api(format!("reading the log of container {container}"));
        loop {
            let follow = if req.follow { "1" } else { "0" };
            let (since, tail) = match horizon {
                // Docker's `since` is whole seconds, inclusive: lines of that second already there are
                // skipped below.
                Some((secs, _)) => (secs.to_string(), "all".to_string()),
                None => {
                    let since = req.since.map_or(0, |s| s.max(0));
                    (since.to_string(), req.tail.map_or_else(|| "all".to_string(), |n| n.to_string()))
                }
            };
            let options = [
                ("follow", follow),
                ("stdout", "1"),
                ("stderr", "1"),
                ("timestamps", "1"),
                ("since", &since),
                ("tail", &tail),
            ];
            let path = format!("/containers/{}/logs{}", segment(id), query(&options));
            let mut lines = self.docker.send("GET", &path, Body::Empty).await.map_err(failed())?;
            loop {
                // A container with a terminal has one raw stream, cut into lines here as the engine would.
                let item = if tty { raw_line(&mut lines).await } else { lines.frame().await };
                let (kind, message) = match item.map_err(failed())? {
                    None => break,
                    Some((2, message)) => (Kind::Stderr, message),
                    Some((1, message)) => (Kind::Stdout, message),
                    Some(_) => continue,
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
        let action = || format!("running {:?} in container {container}", req.argv.join(" "));
        let config = models::ExecConfig {
            cmd: req.argv.clone(),
            attach_stdin: req.stdin,
            attach_stdout: true,
            attach_stderr: true,
            tty: req.tty,
        };
        let created = self.create_exec(id, &config).await.map_err(api(action()))?;
        let exec = segment(&created.id);
        let start = serde_json::to_vec(&models::ExecStart { detach: false, tty: req.tty }).unwrap_or_default();
        let attached =
            self.docker.upgrade(&format!("/exec/{exec}/start"), Body::Json(start)).await.map_err(api(action()))?;
        let (mut output, mut input) = tokio::io::split(attached);
        let resize = |(cols, rows): (u16, u16)| {
            let path = format!("/exec/{exec}/resize{}", query(&[("h", &rows.to_string()), ("w", &cols.to_string())]));
            async move {
                // A resize the engine refuses (the process just ended) is not worth ending the stream for.
                let _ = self.post(&path, Body::Empty).await;
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
            let mut raw = vec![0; 32 * 1024];
            loop {
                // With a terminal the output is one raw stream; without, frames of stdout and stderr.
                let item = if req.tty {
                    match output.read(&mut raw).await {
                        Ok(0) => Ok(None),
                        Ok(n) => Ok(Some((1, raw[..n].to_vec()))),
                        Err(source) => Err(EngineError::Io { what: "reading the command's output", source }),
                    }
                } else {
                    client::read_frame(&mut output).await
                };
                let (kind, message) = match item.map_err(api(action()))? {
                    None => break,
                    Some((2, message)) => (Kind::Stderr, message),
                    Some((1, message)) => (Kind::Stdout, message),
                    Some(_) => continue,
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
            let inspect: models::ExecInspect =
                self.docker.get(&format!("/exec/{exec}/json")).await.map_err(api(action()))?;
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

/// Whether the engine's stat of a path in a container (`X-Docker-Container-Path-Stat`, base64 of JSON)
/// says it is a directory: Go's `os.ModeDir` bit of its mode.
fn is_directory(stat: Option<&str>) -> bool {
    let Some(json) = stat.and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()) else { return false };
    serde_json::from_slice::<models::PathStat>(&json).is_ok_and(|stat| stat.mode & (1 << 31) != 0)
}

/// The next line of a raw log stream (a container with a terminal), line end included, as stdout.
async fn raw_line(reply: &mut client::Reply) -> Result<Option<(u8, Vec<u8>)>, EngineError> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.last() != Some(&b'\n') && line.len() < 64 * 1024 {
        if reply.read(&mut byte).await? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    Ok((!line.is_empty()).then_some((1, line)))
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
    fn directories_are_told_by_the_engines_stat() {
        let stat = |json: &str| base64::engine::general_purpose::STANDARD.encode(json);
        assert!(is_directory(Some(&stat(r#"{"name":"work","size":4096,"mode":2147484141}"#))));
        assert!(!is_directory(Some(&stat(r#"{"name":"f","size":3,"mode":420}"#))));
        assert!(!is_directory(Some("not base64!")));
        assert!(!is_directory(None));
    }

    #[test]
    fn parents_of_container_paths() {
        assert_eq!(parent_of("/x"), "/");
        assert_eq!(parent_of("/home/work/new"), "/home/work");
        assert_eq!(parent_of("/home/work/new/"), "/home/work");
    }
}
