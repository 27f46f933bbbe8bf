//! A way through a node to an address it can reach: what `bai port-forward` carries each connection over.
//! Over SSH it is a `direct-tcpip` channel on the node's connection (what `ssh -L` asks of sshd); for a
//! `local=#true` node, the node is this machine and the connection is made directly.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// Both directions of one forwarded connection.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connection being opened through a node.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Duplex>>> + Send + 'a>>;

/// Opens TCP connections from a node to addresses it can reach.
pub trait Tunnel: Send + Sync {
    /// A connection from the node to `host:port`; refused when the node cannot connect there.
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> Connecting<'a>;
}

/// The node is this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Tunnel for Direct {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> Connecting<'a> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Duplex>)
        })
    }
}
