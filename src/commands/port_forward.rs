//! `bai port-forward FILE SESSION [LOCAL:]PORT|NAME…`: listens here and carries each connection to the
//! session's port through its node's SSH connection, until Ctrl-C.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bai::failure::Failure;
use bai::reach::forward::{self, Event, Route};
use bai::reach::{self, Target};
use bai::reconcile::Reporter;

use crate::cli::PortForwardArgs;
use crate::commands::{Outcome, Printer, remote};

/// One `[LOCAL:]PORT|NAME` as typed: the local port (`None`: the session's own; `Some(0)`: any free
/// one) and the session's port, a number or a `port` name.
fn spec(text: &str) -> Result<(Option<u16>, &str), Failure> {
    let bad = || {
        Failure::error("bai::reach::bad_port", format!("`{text}` is not `[LOCAL:]PORT` or `[LOCAL:]NAME`"))
            .help("e.g. `8888`, `jupyter`, `18888:8888`, `:8888` (any free local port)")
    };
    match text.split_once(':') {
        None => Ok((None, text)),
        Some(("", remote)) => Ok((Some(0), remote)),
        Some((local, remote)) => Ok((Some(local.parse().map_err(|_| bad())?), remote)),
    }
    .and_then(|(local, remote)| if remote.is_empty() { Err(bad()) } else { Ok((local, remote)) })
}

pub fn run(args: &PortForwardArgs, cluster: Option<&str>, printer: &Printer) -> Outcome {
    let Some((lab, engine)) = remote::lab(&args.file, cluster, &args.connect, printer) else { return Outcome::Failed };
    let Some(target) = remote::target(&lab, &args.session, &args.connect, printer) else { return Outcome::Failed };
    let mut wanted = Vec::new();
    for text in &args.ports {
        match spec(text).and_then(|(local, remote)| Ok((local, reach::port_of(&target, remote)?))) {
            Ok((local, port)) => wanted.push((local.unwrap_or(port), port)),
            Err(failure) => {
                printer.fail(failure);
                return Outcome::Failed;
            }
        }
    }
    let result = engine.block_on(forward_all(&target, &engine.options, args.address, &wanted));
    engine.leave();
    match result {
        Ok(()) => Outcome::Ok,
        Err(failure) => {
            printer.fail(failure);
            Outcome::Failed
        }
    }
}

async fn forward_all(
    target: &Target<'_>,
    options: &bai::fleet::ConnectOptions,
    address: IpAddr,
    wanted: &[(u16, u16)],
) -> Result<(), Failure> {
    let (node, session) = (target.node_name(), target.session_name());
    let mut conn = reach::connect(target, options).await?;
    let located = reach::locate(target, &mut conn).await?;
    if located.state != "running" {
        return Err(Failure::error(
            "bai::reach::not_running",
            format!("session `{session}` on node `{node}` is not running ({})", located.state),
        )
        .help(format!("`bai logs FILE {session}` shows why; `bai apply FILE` starts it")));
    }
    // The node says where the container is; only an IP address is taken from it.
    let host: IpAddr = located.ip.as_deref().and_then(|ip| ip.parse().ok()).ok_or_else(|| {
        Failure::error("bai::reach::no_address", format!("session `{session}` on node `{node}` has no network address"))
            .help("a session with `network \"none\"` cannot be reached; give it a network")
    })?;
    let tunnel = conn.client.tunnel().ok_or_else(|| {
        Failure::error(
            "bai::reach::no_tunnel",
            format!("node `{node}` is reached in a way that carries no connections"),
        )
    })?;
    let mut routes = Vec::new();
    let mut lines = String::new();
    for &(local, port) in wanted {
        forward::check(tunnel.as_ref(), &host.to_string(), port).await.map_err(|e| {
            Failure::error(
                "bai::reach::port_closed",
                format!("session `{session}` on node `{node}` does not answer on port {port}: {e}"),
            )
            .help("is the program in the session listening on that port (on all its addresses, not only 127.0.0.1)?")
        })?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(address, local)).await.map_err(|e| {
            Failure::error("bai::reach::listen", format!("cannot listen on {}: {e}", SocketAddr::new(address, local)))
                .help("pick another local port (`LOCAL:PORT`), or `:PORT` for any free one")
        })?;
        let at = listener.local_addr().map_err(|e| Failure::error("bai::reach::listen", e.to_string()))?;
        lines.push_str(&format!("Forwarding from {at} -> {port} (session `{session}` on node `{node}`)\n"));
        routes.push(Route { listener, host: host.to_string(), port });
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    }
    let node = node.to_string();
    let report = Arc::new(move |event: Event| {
        if let Event::Refused { local, port, why } = event {
            let _ = writeln!(std::io::stderr(), "node `{node}`: a connection to {local} -> {port} failed: {why}");
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::error("bai::cli::runtime", format!("cannot watch for signals: {e}")))?;
    tokio::select! {
        () = forward::run(routes, tunnel, report) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(conn);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_like_kubectl() {
        assert_eq!(spec("8888").map_err(|f| f.code), Ok((None, "8888")));
        assert_eq!(spec("jupyter").map_err(|f| f.code), Ok((None, "jupyter")));
        assert_eq!(spec("18888:8888").map_err(|f| f.code), Ok((Some(18888), "8888")));
        assert_eq!(spec(":http").map_err(|f| f.code), Ok((Some(0), "http")));
        assert!(spec("x:8888").is_err());
        assert!(spec("8888:").is_err());
    }
}
