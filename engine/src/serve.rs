//! The HTTP/1 accept loop: hyper's connection builder with the limits
//! `axum::serve` does not expose (a header read timeout), TCP_NODELAY, a
//! graceful shutdown, and a per-connection [`ConnectionControl`] that lets a
//! WebSocket session reset its connection when it gives up on a client.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;

/// Handed to every request of a connection (a request extension).
#[derive(Clone, Default)]
pub struct ConnectionControl {
    reset: Arc<AtomicBool>,
}

impl ConnectionControl {
    /// When the connection closes, reset it (RST, SO_LINGER 0) instead of
    /// closing gracefully: a FIN would wait behind data the client never
    /// reads, keeping the connection and its buffers for minutes.
    pub fn reset_on_close(&self) {
        self.reset.store(true, Ordering::Relaxed);
    }
}

/// A TCP stream that honours [`ConnectionControl::reset_on_close`] when dropped
/// (also after an upgrade: hyper hands this very stream to the WebSocket).
struct ControlledStream {
    tcp: TcpStream,
    control: ConnectionControl,
}

impl Drop for ControlledStream {
    fn drop(&mut self) {
        if self.control.reset.load(Ordering::Relaxed)
            && let Err(error) = self.tcp.set_zero_linger()
        {
            tracing::debug!(%error, "cannot set SO_LINGER 0 before a reset");
        }
    }
}

impl AsyncRead for ControlledStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlledStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `stopping` turns true, then stops
/// accepting, lets requests in progress finish and returns. Upgraded
/// connections (WebSocket sessions) close on `stopping` by themselves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    // Every connection task holds a receiver; shutdown waits for them all.
    let (connections_done, connection_alive) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stopping| *stopping) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Pushes are small frames: without TCP_NODELAY each waits for the
        // client's delayed ACK (~40 ms).
        drop(tcp.set_nodelay(true));
        let control = ConnectionControl::default();
        let stream = ControlledStream { tcp, control: control.clone() };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(control.clone());
            let mut router = router.clone();
            // A Router is always ready: no poll_ready needed before call.
            async move {
                Ok::<_, Infallible>(router.call(request.map(Body::new)).await.unwrap_or_else(|never| match never {}))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let mut stopping = stopping.clone();
        let alive = connection_alive.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.wait_for(|stopping| *stopping), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    drop(connection_alive);
    connections_done.closed().await;
    Ok(())
}
