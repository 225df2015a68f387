//! Stop requests: SIGINT and SIGTERM in the binary, a channel in tests.

use tokio::sync::mpsc;

/// Resolves on the first SIGINT or SIGTERM.
pub async fn stop_requested() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Every stop request in turn: the first asks for a graceful shutdown, the second for an
/// exit at once.
#[derive(Debug)]
pub struct StopRequests {
    rx: mpsc::UnboundedReceiver<()>,
}

impl StopRequests {
    /// SIGINT and SIGTERM of this process.
    pub fn os() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                stop_requested().await;
                if tx.send(()).is_err() {
                    return; // nobody listens any more
                }
            }
        });
        Self { rx }
    }

    /// Requests sent by hand (tests).
    pub fn channel() -> (mpsc::UnboundedSender<()>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx })
    }

    /// The next request; never resolves once no request can come any more.
    pub async fn next(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
