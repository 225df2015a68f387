//! A handle on the TCP connection a request arrived on, so a "commit then drop" fault can close
//! the socket without writing a response. axum owns the connection, so the handle is a
//! duplicated file descriptor of the same socket taken when the connection is accepted;
//! `shutdown(Both)` on it ends the connection for everyone, and the client sees the connection
//! closed before any response byte.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

/// Per-connection handle, available to handlers through `ConnectInfo<ConnHandle>`.
#[derive(Clone, Debug)]
pub struct ConnHandle(Option<Arc<std::net::TcpStream>>);

impl Connected<IncomingStream<'_, TcpListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let dup = stream.io().as_fd().try_clone_to_owned().ok();
        ConnHandle(dup.map(|fd| Arc::new(std::net::TcpStream::from(fd))))
    }
}

impl ConnHandle {
    /// Closes the connection in both directions. Best effort: if the socket is already gone
    /// the client has its connection error anyway.
    pub fn drop_connection(&self) {
        if let Some(stream) = &self.0 {
            stream.shutdown(Shutdown::Both).ok();
        }
    }
}
