//! `bai cp FILE SRC DST`: files and folders between this machine and a session (`SESSION:PATH` on one
//! side), as tar archives the engine reads and writes in the container. What comes out of a session is
//! extracted by `bai::reach::copy::extract`, which writes nothing outside DST whatever the archive holds.

use std::io::Write;
use std::path::{Path, PathBuf};

use bai::failure::Failure;
use bai::frame::Kind;
use bai::protocol::Stream;
use bai::reach::copy::{self, Placing};
use bai::reach::{self, Target};
use bai::reconcile::Reporter;

use crate::cli::CpArgs;
use crate::commands::{CheckedLab, Outcome, Printer, remote};

/// One side of a copy.
enum Side<'a> {
    Local(PathBuf),
    Session { name: &'a str, path: String },
}

/// `SESSION:PATH` names a session of the lab when SESSION is one (a local path that holds a colon is
/// written `./a:b`); a relative PATH is under `/home/work`, the session's working directory.
fn side<'a>(text: &'a str, lab: &CheckedLab) -> Side<'a> {
    if let Some((name, path)) = text.split_once(':')
        && !name.contains('/')
        && lab.config().clusters.iter().any(|c| c.sessions.iter().any(|s| s.name.value.as_str() == name))
    {
        let path = if path.starts_with('/') { path.to_string() } else { format!("/home/work/{path}") };
        return Side::Session { name, path };
    }
    Side::Local(PathBuf::from(text))
}

fn cp_failure(message: impl Into<String>) -> Failure {
    Failure::error("bai::cp::failed", message)
}

pub fn run(args: &CpArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let Some((lab, engine)) = remote::lab(&args.file, cluster, &args.connect, printer) else { return Outcome::Failed };
    let result = match (side(&args.src, &lab), side(&args.dst, &lab)) {
        (Side::Session { name, path }, Side::Local(dest)) => {
            let Some(target) = remote::target(&lab, name, &args.connect, printer) else { return Outcome::Failed };
            engine.block_on(copy_out(&target, &engine.options, path, &dest))
        }
        (Side::Local(src), Side::Session { name, path }) => {
            let Some(target) = remote::target(&lab, name, &args.connect, printer) else { return Outcome::Failed };
            engine.block_on(copy_in(&target, &engine.options, &src, path))
        }
        (Side::Local(_), Side::Local(_)) => {
            let sessions = lab.config().clusters.iter().flat_map(|c| c.sessions.iter().map(|s| s.name.value.as_str()));
            let guess = [&args.src, &args.dst].into_iter().find_map(|t| t.split_once(':').map(|(n, _)| n.to_string()));
            let help = guess.and_then(|g| bai::suggest::help_for(&g, sessions, "sessions"));
            Err(Failure::error("bai::cp::no_session", "neither SRC nor DST is `SESSION:PATH` of a session of the lab")
                .help_opt(help.or_else(|| Some("write the session's side as `SESSION:/path`".into()))))
        }
        (Side::Session { .. }, Side::Session { .. }) => Err(Failure::error(
            "bai::cp::two_sessions",
            "copy between two sessions through this machine, one side at a time",
        )),
    };
    engine.leave();
    match result {
        Ok(summary) => {
            let _ = writeln!(std::io::stderr(), "{summary}");
            Outcome::Ok
        }
        Err(failure) => {
            printer.fail(failure);
            Outcome::Failed
        }
    }
}

/// A reader over chunks sent from the async side, for the blocking extractor.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    held: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.held.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(chunk) => self.held = std::io::Cursor::new(chunk),
                None => return Ok(0),
            }
        }
    }
}

/// A writer that sends what the blocking archiver writes to the async side, in chunks.
struct Sender {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl Write for Sender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx.blocking_send(chunk).map_err(|_| std::io::Error::other("the copy was stopped"))?;
        }
        Ok(())
    }
}

async fn copy_out(
    target: &Target<'_>,
    options: &bai::fleet::ConnectOptions,
    path: String,
    dest: &Path,
) -> Result<String, Failure> {
    let placing = Placing::local(dest).map_err(cp_failure)?;
    let conn = reach::connect(target, options).await?;
    let shown = format!("{}:{path}", target.session_name());
    let mut frames = reach::open_stream(target, conn, Stream::CopyOut { path }).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let extracting = tokio::task::spawn_blocking(move || {
        copy::extract(Chunks { rx, held: std::io::Cursor::new(Vec::new()) }, &placing)
    });
    let received = async {
        loop {
            match frames.next().await? {
                Some(f) if f.kind == Kind::Data => {
                    // The extractor stopped (it refused an entry): its error says why.
                    if tx.send(f.payload).await.is_err() {
                        return Ok(());
                    }
                }
                Some(f) if f.kind == Kind::End => return Ok(()),
                Some(_) => {}
                None => return Err(cp_failure(format!("node `{}`: the archive broke off", target.node_name()))),
            }
        }
    };
    let received: Result<(), Failure> = received.await;
    drop(tx);
    let extracted = extracting.await.map_err(|e| cp_failure(e.to_string()))?;
    received?;
    let done = extracted.map_err(|why| {
        cp_failure(format!("copying {shown} stopped: {why}"))
            .help("what a session writes is not trusted: entries that would land outside the destination are refused")
    })?;
    let mut summary = format!(
        "copied {}, {}, {} ({}) from {shown} to {}",
        count(done.files, "file", "files"),
        count(done.dirs, "directory", "directories"),
        count(done.links, "link", "links"),
        bai::config::value::format_size_approx(done.bytes),
        dest.display()
    );
    if !done.skipped.is_empty() {
        summary.push_str(&format!("; skipped {} devices or FIFOs: {}", done.skipped.len(), done.skipped.join(", ")));
    }
    Ok(summary)
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn copy_in(
    target: &Target<'_>,
    options: &bai::fleet::ConnectOptions,
    src: &Path,
    path: String,
) -> Result<String, Failure> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| cp_failure(format!("{}: {e}", src.display())))?;
    let own_name = src
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| cp_failure(format!("{} has no file name to copy", src.display())))?;
    let conn = reach::connect(target, options).await?;
    let shown = format!("{}:{path}", target.session_name());
    let new_name = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
    let mut frames = reach::open_stream(target, conn, Stream::CopyIn { path }).await?;
    // The node first tells whether the destination is a directory: into it, or as the new name.
    let into_dir = match frames.next().await? {
        Some(f) if f.kind == Kind::Data => serde_json::from_slice::<serde_json::Value>(&f.payload)
            .ok()
            .and_then(|v| v.get("dir").and_then(serde_json::Value::as_bool))
            .unwrap_or(false),
        _ => return Err(cp_failure(format!("node `{}`: the session's side did not start", target.node_name()))),
    };
    let name = if into_dir || new_name.is_empty() { own_name } else { new_name };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let src_owned = src.to_path_buf();
    let packing = tokio::task::spawn_blocking(move || {
        let mut out = Sender { tx, buf: Vec::with_capacity(CHUNK) };
        copy::pack(&src_owned, &name, &mut out).and_then(|()| out.flush().map_err(|e| e.to_string()))
    });
    let mut bytes = 0u64;
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        frames.send(Kind::Data, &chunk).await?;
    }
    packing.await.map_err(|e| cp_failure(e.to_string()))?.map_err(cp_failure)?;
    frames.send(Kind::End, b"").await?;
    match frames.next().await? {
        Some(f) if f.kind == Kind::End => {}
        _ => return Err(cp_failure(format!("node `{}`: the copy into {shown} did not finish", target.node_name()))),
    }
    let what = if meta.is_dir() { "directory" } else { "file" };
    Ok(format!(
        "copied the {what} {} ({} archived) to {shown}",
        src.display(),
        bai::config::value::format_size_approx(bytes)
    ))
}
