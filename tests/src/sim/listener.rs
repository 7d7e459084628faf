//! The API port, which `down` mode really closes.
//!
//! A closed port is what a restarting CRM looks like: new connections are
//! refused (`ECONNREFUSED`), not answered with an error. So `down` stops the
//! axum server for the API port and drops its socket, and leaving `down`
//! binds the same address again (with `SO_REUSEADDR`, so connections of the
//! old socket lingering in `TIME_WAIT` do not block it).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

/// Pending connections the kernel queues before accepting; a drill's burst
/// after an outage should not see refusals from a full backlog.
const BACKLOG: u32 = 1024;

/// The API listener, open or closed, always on the same address.
#[derive(Debug)]
pub struct ApiListener {
    addr: SocketAddr,
    router: Router,
    serving: Option<Serving>,
}

#[derive(Debug)]
struct Serving {
    /// Dropping or sending tells the server to stop accepting.
    stop: oneshot::Sender<()>,
    /// Resolves (with an error) once the listening socket is dropped.
    closed: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl ApiListener {
    /// Binds `requested` (port 0 picks one, kept from then on) and serves.
    pub fn bind(requested: SocketAddr, router: Router) -> io::Result<Self> {
        let listener = bind_reusable(requested)?;
        let addr = listener.local_addr()?;
        let mut this = Self { addr, router, serving: None };
        this.serve(listener);
        Ok(this)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Listens again on the same address; nothing to do if already open.
    pub fn open(&mut self) -> io::Result<()> {
        if self.serving.is_none() {
            let listener = bind_reusable(self.addr)?;
            self.serve(listener);
            debug!(addr = %self.addr, "API listener open");
        }
        Ok(())
    }

    /// Stops accepting and returns once the listening socket is closed.
    /// Open connections are shut down gracefully in the background: idle
    /// keep-alive ones close at once, in-flight requests finish first.
    pub async fn close(&mut self) {
        if let Some(serving) = self.serving.take() {
            // The server may already have stopped, in which case the socket is gone too.
            let _ = serving.stop.send(());
            let _ = serving.closed.await;
            debug!(addr = %self.addr, "API listener closed");
        }
    }

    /// Closes the port and waits up to `grace` for in-flight requests.
    pub async fn shutdown(&mut self, grace: Duration) {
        let Some(serving) = self.serving.take() else {
            return;
        };
        let _ = serving.stop.send(());
        if tokio::time::timeout(grace, serving.task).await.is_err() {
            warn!("API connections did not drain in time");
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stop_signal) = oneshot::channel::<()>();
        let (closed_tx, closed) = oneshot::channel();
        let listener = ClosingListener { inner: listener, _closed: closed_tx };
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            let stopped = async move {
                // A dropped sender is a stop request as well.
                let _ = stop_signal.await;
            };
            if let Err(err) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                error!(%err, "API server failed");
            }
        });
        self.serving = Some(Serving { stop, closed, task });
    }
}

fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A `TcpListener` that reports when axum drops it: axum closes the socket
/// as soon as a graceful shutdown begins but only returns after every
/// connection has finished, and `down` must not wait for those.
struct ClosingListener {
    // Field order matters: the socket is dropped before the report is sent.
    inner: TcpListener,
    _closed: oneshot::Sender<()>,
}

impl Listener for ClosingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (TcpStream, SocketAddr)> + Send {
        Listener::accept(&mut self.inner)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(&self.inner)
    }
}
