//! A TCP proxy on a loopback port that can cut the path to what it stands
//! in front of: the edge's way to SQS in the outbox tests and the drill's
//! queue outage. Only the edge goes through it; the worker keeps its own
//! path to the queue, as it would in a regional incident between an edge
//! and AWS.
//!
//! Modes: [`Mode::Forward`] relays bytes both ways; [`Mode::Hang`] accepts
//! and never answers (a request waits for its deadline, as behind a black
//! hole); [`Mode::Refuse`] closes each connection at once. Leaving
//! `Forward` also cuts the connections already open, so a client's pooled
//! keep-alive connection cannot slip past an outage.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Hang,
    Refuse,
}

/// The proxy; it stops when dropped.
pub struct Switch {
    pub addr: SocketAddr,
    mode: Control,
    task: tokio::task::JoinHandle<()>,
}

/// Sets a [`Switch`]'s mode from another task.
#[derive(Clone)]
pub struct Control(Arc<watch::Sender<Mode>>);

impl Control {
    pub fn set(&self, mode: Mode) {
        self.0.send_replace(mode);
    }
}

impl Switch {
    /// Listens on `127.0.0.1:0` in front of `target`, forwarding.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watching) = watch::channel(Mode::Forward);
        let task = tokio::spawn(accept(listener, target, Arc::new(watching)));
        Ok(Self { addr, mode: Control(Arc::new(mode)), task })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.set(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.0.borrow()
    }

    pub fn control(&self) -> Control {
        self.mode.clone()
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        match url.split_once("://") {
            Some((scheme, rest)) => {
                let path = rest.find('/').map_or("", |i| &rest[i..]);
                format!("{scheme}://{}{path}", self.addr)
            }
            None => url.to_owned(),
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Receiver<Mode>>) {
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        let mut watching = (*mode).clone();
        let current = *watching.borrow_and_update();
        match current {
            Mode::Refuse => {
                let _ = client.shutdown().await;
            }
            Mode::Hang => {
                // Held open, unanswered, until the proxy is dropped: one
                // per connection made during the hang.
                held.push(client);
            }
            Mode::Forward => {
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = watching.wait_for(|m| *m != Mode::Forward) => {}
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_hangs_refuses_and_cuts_open_connections() {
        let switch = Switch::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(switch.addr).await.unwrap();
        assert_eq!(round_trip(&mut open).await.as_deref(), Some(&b"ping"[..]));

        switch.set(Mode::Hang);
        assert_eq!(round_trip(&mut open).await, None, "an open connection is cut");
        let mut hung = TcpStream::connect(switch.addr).await.unwrap();
        assert_eq!(round_trip(&mut hung).await, None, "no answer");

        switch.set(Mode::Refuse);
        let mut refused = TcpStream::connect(switch.addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed at once: {read:?}");

        switch.set(Mode::Forward);
        let mut back = TcpStream::connect(switch.addr).await.unwrap();
        assert_eq!(round_trip(&mut back).await.as_deref(), Some(&b"ping"[..]));
        assert_eq!(switch.url_through("http://127.0.0.1:1/000/q.fifo"), format!("http://{}/000/q.fifo", switch.addr));
    }
}
