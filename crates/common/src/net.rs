//! Accepting gRPC connections. The servers bind their own listener (to learn the port before
//! serving, port 0 in tests), and a listener handed to tonic skips tonic's own `tcp_nodelay`;
//! without it a small response waits for the peer's delayed ACK, about 40 ms per call.

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};

/// The listener's connections with Nagle's algorithm off.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
