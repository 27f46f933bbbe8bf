//! `bai watch FILE`: the CLI edge of the watcher. Loads the lab, starts the probe (or one round with
//! `--once`), serves `--listen`, turns SIGINT/SIGTERM into a clean stop and SIGHUP into a reload, and
//! prints: a live table on a terminal, a line (or JSON object) per event otherwise.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bai::diagnostic::{plain_handler, render_graphical};
use bai::failure::Failure;
use bai::reconcile::Reporter;
use bai::watch::event::Event;
use bai::watch::settings::Overrides;
use bai::watch::status::FleetStatus;
use bai::watch::table::render_table;
use bai::watch::{self, WatchOptions, WatchedLab};
use tokio::sync::mpsc;

use crate::cli::{StatusFormat, WatchArgs};
use crate::commands::{Outcome, Printer, check, remote};

/// How many recent events the live table keeps under it.
const RECENT: usize = 8;

/// The watcher's view of a checked lab: the model and the files to watch for changes.
fn watched(lab: crate::commands::CheckedLab) -> WatchedLab {
    let files = lab.loaded.sources.files().map(|(_, f)| f.path.clone()).collect();
    WatchedLab { config: lab.loaded.config, files }
}

/// A reload: the lab, or its errors rendered for the `config_rejected` event (warnings are not news).
fn reload(path: &std::path::Path, cluster: Option<&str>) -> Result<WatchedLab, String> {
    let lab = check(path, cluster);
    if lab.has_errors() {
        return Err(render_graphical(&lab.problems, &lab.loaded.sources, &plain_handler(100)));
    }
    Ok(watched(lab))
}

pub fn run(args: &WatchArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let first = check(&args.file, cluster);
    printer.diagnostics(&first.problems, &first.loaded.sources);
    if first.has_errors() {
        return Outcome::Failed;
    }
    let lab = watched(first);
    let Some(engine) = remote::start(&args.connect, &lab.config, printer) else { return Outcome::Failed };
    let mut overrides = Overrides {
        interval: args.interval,
        timeout: args.timeout,
        failure_threshold: args.failure_threshold,
        success_threshold: args.success_threshold,
    };
    if args.once {
        // One round decides: a single miss is down, a single answer is up.
        overrides.failure_threshold = Some(1);
        overrides.success_threshold = Some(1);
    }
    let options = Arc::new(WatchOptions {
        connect: engine.options.clone(),
        overrides,
        selectors: args.connect.on.clone(),
        heal: args.heal,
        heal_limit: args.heal_limit,
    });
    let status = Arc::new(Mutex::new(FleetStatus {
        version: bai::protocol::BAI_VERSION.to_string(),
        started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        ..FleetStatus::default()
    }));
    let json = args.format == StatusFormat::Json;
    engine.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = args.listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    printer.fail(Failure::error("bai::watch::listen", format!("cannot listen on {addr}: {e}")));
                    return Outcome::Failed;
                }
            };
            let mut stop = stop_rx.clone();
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(watch::http::serve(listener, status.clone(), shutdown));
            eprintln!("serving /ping, /status and /metrics on http://{addr}");
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        if args.once {
            let printer_task = tokio::spawn(print_lines(events_rx, json, true));
            let good = watch::once(&lab.config, options, status.clone(), events_tx).await;
            let _ = printer_task.await;
            let snapshot = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            if json {
                printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&snapshot).unwrap_or_default()));
            } else {
                printer.stdout(&render_table(&snapshot));
            }
            let _ = stop_tx.send(true);
            return if good { Outcome::Ok } else { Outcome::Failed };
        }
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                printer.fail(Failure::error("bai::watch::signals", format!("cannot handle signals: {e}")));
                return Outcome::Failed;
            }
        };
        let live = !json && std::io::stdout().is_terminal();
        let printer_task = if live {
            tokio::spawn(live_table(events_rx, status.clone()))
        } else {
            tokio::spawn(print_lines(events_rx, json, false))
        };
        let path = args.file.clone();
        let cluster = cluster.map(str::to_string);
        let loader: watch::Loader = Box::new(move || reload(&path, cluster.as_deref()));
        let shutdown = signals.run(reload_tx);
        watch::run(lab, loader, options, status.clone(), events_tx, reload_rx, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = printer_task.await;
        eprintln!("bai watch stopped; every connection closed");
        Outcome::Ok
    })
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on SIGINT or SIGTERM; every SIGHUP asks for a reload meanwhile.
    async fn run(mut self, reload: mpsc::UnboundedSender<()>) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return,
                _ = self.terminate.recv() => return,
                _ = self.hangup.recv() => {
                    let _ = reload.send(());
                }
            }
        }
    }
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// A line per event on stdout (`--format json`: a JSON object per line). With `quiet_good`, only bad
/// news is printed (`--once` ends with the table, which says the rest).
async fn print_lines(mut events: mpsc::UnboundedReceiver<Event>, json: bool, quiet_good: bool) {
    while let Some(event) = events.recv().await {
        if quiet_good && !event.is_bad() && !matches!(event, Event::Heal { .. }) {
            continue;
        }
        let line = if json { event.json(now_ms()) } else { event.line() };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // stdout is gone (a closed pipe): keep draining so the watcher never blocks on us.
            continue;
        }
    }
}

/// The table, redrawn in place every half second and on every event, with the latest events under it.
async fn live_table(mut events: mpsc::UnboundedReceiver<Event>, status: Arc<Mutex<FleetStatus>>) {
    let mut recent: VecDeque<String> = VecDeque::new();
    let mut drawn_lines = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(e) => {
                    let stamp = chrono_free_clock();
                    for (i, line) in e.line().lines().enumerate() {
                        recent.push_back(if i == 0 { format!("{stamp} {line}") } else { format!("         {line}") });
                    }
                    while recent.len() > RECENT {
                        recent.pop_front();
                    }
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        let table = render_table(&status.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut frame = String::new();
        if drawn_lines > 0 {
            // Back to the top of the previous frame, and clear everything below.
            frame.push_str(&format!("\x1b[{drawn_lines}A\r\x1b[J"));
        }
        frame.push_str(&table);
        frame.push('\n');
        for line in &recent {
            frame.push_str(line);
            frame.push('\n');
        }
        drawn_lines = frame.matches('\n').count();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes()).and_then(|_| out.flush());
    }
}

/// `HH:MM:SS` (UTC) for the event log under the live table.
fn chrono_free_clock() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}
