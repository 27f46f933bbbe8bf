//! `bai port-forward`: listen on this machine and carry each connection to a session's port through its
//! node ([`Tunnel`]: a `direct-tcpip` channel of the node's SSH connection, as `ssh -L` and `kubectl
//! port-forward` do), several connections at once, each on its own task.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::transport::tunnel::Tunnel;

/// One forwarded port: where this machine listens, and the session's address and port on its node.
pub struct Route {
    pub listener: TcpListener,
    pub host: String,
    pub port: u16,
}

/// What happened to one connection, for the command to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Opened {
        from: SocketAddr,
        local: SocketAddr,
        port: u16,
    },
    /// The node could not connect to the session's port (nothing listens there, or the session stopped).
    Refused {
        local: SocketAddr,
        port: u16,
        why: String,
    },
    Closed {
        from: SocketAddr,
        local: SocketAddr,
        port: u16,
        bytes_in: u64,
        bytes_out: u64,
    },
}

/// How much of each direction is read at once: big enough that a download is not held back by small reads.
const BUFFER: usize = 64 * 1024;

/// Whether the session's port answers through the node, before anything listens here: a clear error
/// beats a listener whose every connection fails.
pub async fn check(tunnel: &dyn Tunnel, host: &str, port: u16) -> std::io::Result<()> {
    tunnel.connect(host, port).await.map(drop)
}

/// Accepts on every route until dropped, carrying each connection through `tunnel`.
pub async fn run(routes: Vec<Route>, tunnel: Arc<dyn Tunnel>, report: Arc<dyn Fn(Event) + Send + Sync>) {
    let mut tasks = tokio::task::JoinSet::new();
    for route in routes {
        let (tunnel, report) = (Arc::clone(&tunnel), Arc::clone(&report));
        tasks.spawn(async move {
            let Route { listener, host, port } = route;
            let Ok(local) = listener.local_addr() else { return };
            let host: Arc<str> = Arc::from(host);
            loop {
                let Ok((mut socket, from)) = listener.accept().await else {
                    // Out of descriptors, most likely: wait rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let (tunnel, report, host) = (Arc::clone(&tunnel), Arc::clone(&report), Arc::clone(&host));
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    let mut remote = match tunnel.connect(&host, port).await {
                        Ok(remote) => remote,
                        Err(e) => return report(Event::Refused { local, port, why: e.to_string() }),
                    };
                    report(Event::Opened { from, local, port });
                    let (bytes_out, bytes_in) =
                        tokio::io::copy_bidirectional_with_sizes(&mut socket, &mut remote, BUFFER, BUFFER)
                            .await
                            .unwrap_or((0, 0));
                    report(Event::Closed { from, local, port, bytes_in, bytes_out });
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
