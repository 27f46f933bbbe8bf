//! `bai logs FILE SESSION`: a session's output as its container's log holds it, stdout to stdout and
//! stderr to stderr; `--all`: every session, lines interleaved as they come, each led by its name (the
//! way `docker compose logs` shows them).

use std::io::IsTerminal;

use bai::failure::Failure;
use bai::frame::Kind;
use bai::protocol::{LogsStream, Stream};
use bai::reach::{self, Target};
use bai::reconcile::Reporter;

use crate::cli::LogsArgs;
use crate::commands::{Outcome, Printer, pass_through, remote};

pub fn run(args: &LogsArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let Some((lab, engine)) = remote::lab(&args.file, cluster, &args.connect, printer) else { return Outcome::Failed };
    let targets: Vec<Target<'_>> = match &args.session {
        Some(name) => match remote::target(&lab, name, &args.connect, printer) {
            Some(target) => vec![target],
            None => return Outcome::Failed,
        },
        None => reach::all(lab.config())
            .into_iter()
            .filter(|t| bai::fleet::select::selected(t.node, &args.connect.on))
            .collect(),
    };
    let request = LogsStream { follow: args.follow, tail: args.tail, since: args.since, timestamps: args.timestamps };
    let escape = !args.raw && std::io::stdout().is_terminal();
    let width = if args.all { targets.iter().map(|t| t.session_name().len()).max().unwrap_or(0) } else { 0 };
    let failures = engine.block_on(async {
        let streams = targets.iter().map(|target| {
            let prefix = args.all.then(|| format!("{:width$} | ", target.session_name()));
            follow(target, &engine.options, request.clone(), prefix, escape)
        });
        let all = futures_util::future::join_all(streams);
        tokio::select! {
            failures = all => failures.into_iter().filter_map(Result::err).collect::<Vec<_>>(),
            _ = tokio::signal::ctrl_c() => Vec::new(),
        }
    });
    let failed = !failures.is_empty();
    printer.failures(&failures);
    engine.leave();
    if failed { Outcome::Failed } else { Outcome::Ok }
}

/// One session's log to its end, each line led by `prefix` when there is one.
async fn follow(
    target: &Target<'_>,
    options: &bai::fleet::ConnectOptions,
    request: LogsStream,
    prefix: Option<String>,
    escape: bool,
) -> Result<(), Failure> {
    let conn = reach::connect(target, options).await?;
    let mut frames = reach::open_stream(target, conn, Stream::Logs(request)).await?;
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    loop {
        let Some(frame) = frames.next().await? else {
            return Err(Failure::error(
                "bai::reach::stream_broken",
                format!("node `{}`: the log of session `{}` broke off", target.node_name(), target.session_name()),
            ));
        };
        let err = match frame.kind {
            Kind::Stdout => false,
            Kind::Stderr => true,
            Kind::End => return Ok(()),
            _ => continue,
        };
        let text = match &prefix {
            // Whole lines only behind a prefix, so that two sessions' halves never share one.
            Some(prefix) => {
                let held = &mut partial[usize::from(err)];
                held.extend_from_slice(&frame.payload);
                let Some(end) = held.iter().rposition(|&b| b == b'\n') else { continue };
                let lines: Vec<u8> = held.drain(..=end).collect();
                String::from_utf8_lossy(&lines)
                    .split_inclusive('\n')
                    .map(|l| format!("{prefix}{l}"))
                    .collect::<String>()
                    .into_bytes()
            }
            None => frame.payload,
        };
        let text = if escape {
            bai::untrusted::escape_output(&String::from_utf8_lossy(&text)).into_owned().into_bytes()
        } else {
            text
        };
        // The reader went away (`bai logs … | head`): nothing more to show.
        if pass_through(err, &text).is_err() {
            return Ok(());
        }
    }
}
