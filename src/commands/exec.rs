//! `bai exec FILE SESSION -- CMD ARGS…`: a command in a session's container, its input, output and exit
//! code relayed through the node's agent; `-t` with this terminal in raw mode and its size followed.

use std::io::IsTerminal;

use bai::failure::Failure;
use bai::frame::{self, Kind};
use bai::protocol::{ExecStream, Stream};
use bai::reach::{self, Target};
use bai::reconcile::Reporter;
use tokio::io::AsyncReadExt;

use crate::cli::ExecArgs;
use crate::commands::terminal::{self, RawMode};
use crate::commands::{Outcome, Printer, pass_through, remote};

pub fn run(args: &ExecArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    if args.tty && !std::io::stdin().is_terminal() {
        printer.fail(
            Failure::error("bai::exec::no_terminal", "`-t` gives the command a terminal, but this input is not one")
                .help("leave out `-t` to pass input and output as streams"),
        );
        return Outcome::Failed;
    }
    let Some((lab, engine)) = remote::lab(&args.file, cluster, &args.connect, printer) else { return Outcome::Failed };
    let Some(target) = remote::target(&lab, &args.session, &args.connect, printer) else { return Outcome::Failed };
    let result = engine.block_on(exec(&target, &engine.options, args));
    // A read of this terminal may still be parked on a blocking thread: do not wait for it.
    engine.leave();
    match result {
        Ok(code) => Outcome::Exit((code & 0xff) as u8),
        Err(failure) => {
            printer.fail(failure);
            Outcome::Failed
        }
    }
}

async fn exec(target: &Target<'_>, options: &bai::fleet::ConnectOptions, args: &ExecArgs) -> Result<i64, Failure> {
    let conn = reach::connect(target, options).await?;
    let size = if args.tty { terminal::size(1).or_else(|| terminal::size(0)) } else { None };
    let request = ExecStream { argv: args.command.clone(), tty: args.tty, stdin: args.interactive, size };
    let frames = reach::open_stream(target, conn, Stream::Exec(request)).await?;
    let _raw = if args.tty {
        Some(
            RawMode::enter(0)
                .map_err(|e| Failure::error("bai::exec::terminal", format!("cannot set up this terminal: {e}")))?,
        )
    } else {
        None
    };
    let (mut reader, mut writer) = frames.split();
    let interactive = args.interactive;
    let tty = args.tty;
    // Input and window sizes to the node, on a task of their own: output never waits for a keystroke.
    let input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
        let mut reading = interactive;
        loop {
            tokio::select! {
                n = stdin.read(&mut buf), if reading => match n {
                    Ok(0) | Err(_) => {
                        reading = false;
                        if writer.send(Kind::StdinEnd, b"").await.is_err() {
                            return;
                        }
                    }
                    Ok(n) => {
                        if writer.send(Kind::Stdin, &buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
                Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } }, if tty => {
                    if let Some((cols, rows)) = terminal::size(1).or_else(|| terminal::size(0))
                        && writer.send(Kind::Resize, &frame::size_payload(cols, rows)).await.is_err()
                    {
                        return;
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let ended = async {
        loop {
            let Some(frame) = reader.next().await? else {
                return Err(Failure::error(
                    "bai::reach::stream_broken",
                    format!("node `{}`: the command's stream ended without its exit code", target.node_name()),
                ));
            };
            let written = match frame.kind {
                Kind::Stdout | Kind::Stderr => pass_through(frame.kind == Kind::Stderr, &frame.payload),
                Kind::Exit => return Ok(frame.exit_code().unwrap_or(1)),
                _ => Ok(()),
            };
            // Nobody reads the output any more (`bai exec … | head`): end as a pipe's writer does.
            if written.is_err() {
                return Ok(141);
            }
        }
    };
    let code = tokio::select! {
        code = ended => code,
        Some(()) = async { match terminate.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => Ok(143),
        Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => Ok(129),
    };
    input.abort();
    code
}
