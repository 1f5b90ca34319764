//! The listener in front of the router: TLS, and bounds on what a connection may hold.
//!
//! Every accepted connection holds a permit of a semaphore sized `http.max_connections`
//! for as long as it lives, so the server never runs out of descriptors for the requests
//! it is serving. At the cap, the connection that has been idle longest is asked to close
//! (as nginx reuses keep-alive connections) and the new one waits briefly for its permit;
//! if nothing is idle it is refused. Deadlines: the TLS handshake, the request headers
//! (hyper's header timer), the body (in the handlers that read it), and idleness (no
//! request in progress and no bytes either way).
//!
//! hyper answers requests it cannot parse (bad header bytes, an over-long URI or header
//! block, conflicting Content-Lengths) by itself, with an empty body. [`Watched`] sees
//! those answers go out, since no handler produced them, and replaces them with the API's
//! JSON error body, so that every error the server sends carries an `error_code` and a
//! request id.

use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use deskfleet_proto::error::ErrorCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The most bytes of a request head (request line and headers) read before answering
/// 431; a request line alone longer than `http::Uri` allows is answered 414.
const MAX_HEAD_BYTES: usize = 96 * 1024;

/// What the listener needs to know; from `Settings::http`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn from_settings(http: &crate::settings::HttpSettings) -> Self {
        Self {
            max_connections: descriptor_bounded(http.max_connections),
            handshake_timeout: Duration::from_millis(http.handshake_timeout_ms),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms.max(1)),
            shutdown_grace: Duration::from_millis(http.shutdown_grace_ms),
        }
    }
}

/// Raises the soft descriptor limit to the hard one, and keeps the connection cap well
/// below it: WebSockets, the database and package files need descriptors too.
fn descriptor_bounded(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
        limit = getrlimit(Resource::Nofile);
    }
    match limit.current {
        Some(fds) => {
            let bound = (fds / 2).max(16) as usize;
            if wanted > bound {
                tracing::warn!(
                    wanted,
                    bound,
                    descriptors = fds,
                    "http.max_connections lowered to half the descriptor limit"
                );
            }
            wanted.min(bound)
        }
        None => wanted,
    }
}

/// A connection as the listener sees it.
struct Conn {
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// Responses the router produced / response heads seen going out.
    produced: AtomicU64,
    heads: AtomicU64,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_active: AtomicU64,
    epoch: Instant,
    /// Asks the connection to close once its current request is answered.
    close: CancellationToken,
}

impl Conn {
    fn new(epoch: Instant) -> Self {
        let conn = Self {
            in_flight: AtomicUsize::new(0),
            produced: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            epoch,
            close: CancellationToken::new(),
        };
        conn.touch();
        conn
    }

    fn touch(&self) {
        self.last_active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(
            now.saturating_sub(self.last_active.load(Ordering::Relaxed)),
        ))
    }

    /// Called when a response head goes out: true when the router produced it.
    fn claim_head(&self) -> bool {
        let produced = self.produced.load(Ordering::Acquire);
        self.heads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |heads| {
                (heads < produced).then_some(heads + 1)
            })
            .is_ok()
    }
}

/// The open connections, for evicting an idle one at the cap.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn insert(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the connection idle longest to close; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let conns = self.lock();
        let idlest = conns
            .values()
            .filter(|c| !c.close.is_cancelled())
            .filter_map(|c| Some((c.idle_for()?, c)))
            .max_by_key(|(idle, _)| *idle);
        match idlest {
            Some((_, conn)) => {
                conn.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// requests in progress finish for up to the grace period, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let epoch = Instant::now();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning; the
                    // idle deadlines free descriptors meanwhile.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    metrics::counter!("deskfleet_http_accept_errors_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match admit(&permits, &registry).await {
            Some(permit) => permit,
            None => {
                metrics::counter!("deskfleet_http_connections_refused_total").increment(1);
                tracing::debug!(%peer, "connection refused: at http.max_connections");
                continue;
            }
        };
        let conn = Arc::new(Conn::new(epoch));
        let id = registry.insert(conn.clone());
        let task = Connection {
            app: app.clone(),
            tls: tls.clone(),
            limits: limits.clone(),
            conn,
            peer,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        };
        let registry = registry.clone();
        tracker.spawn(async move {
            let _permit = permit;
            metrics::gauge!("deskfleet_http_connections").increment(1.0);
            task.run(stream).await;
            metrics::gauge!("deskfleet_http_connections").decrement(1.0);
            registry.remove(id);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// A permit for a new connection: at once, or after asking an idle connection to make
/// room.
async fn admit(permits: &Arc<Semaphore>, registry: &Registry) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Some(permit);
    }
    if !registry.evict_idlest() {
        return None;
    }
    tokio::time::timeout(Duration::from_millis(250), permits.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

struct Connection {
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    conn: Arc<Conn>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        match self.tls.clone() {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(stream));
                // A connection still in its handshake is idle: when it is asked to make
                // room (or the server stops) it goes at once, not at the deadline.
                let handshake = tokio::select! {
                    done = handshake => done,
                    _ = self.conn.close.cancelled() => return,
                    _ = self.shutdown.cancelled() => return,
                };
                match handshake {
                    Ok(Ok(stream)) => self.http(stream).await,
                    Ok(Err(e)) => {
                        metrics::counter!("deskfleet_tls_handshake_failures_total").increment(1);
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("deskfleet_tls_handshake_failures_total").increment(1);
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    }
                }
            }
            None => self.http(stream).await,
        }
    }

    async fn http<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Watched::new(stream, self.conn.clone()));
        let (app, conn, peer) = (self.app.clone(), self.conn.clone(), self.peer);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let (app, conn) = (app.clone(), conn.clone());
            conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let response = app.oneshot(request).await;
                conn.produced.fetch_add(1, Ordering::AcqRel);
                conn.in_flight.fetch_sub(1, Ordering::AcqRel);
                conn.touch();
                response
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            let idle_check = tokio::time::sleep(self.limits.idle_timeout / 4);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.hard_stop.cancelled() => return,
                _ = self.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = self.conn.close.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = idle_check, if !closing => {
                    if self.conn.idle_for().is_some_and(|idle| idle >= self.limits.idle_timeout) {
                        tracing::debug!(peer = %self.peer, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// A connection's byte stream, noting activity and replacing hyper's own bodiless error
/// answers with the API's JSON error body.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
    /// Our replacement answer, still to be written.
    pending: Vec<u8>,
}

impl<S> Watched<S> {
    fn new(inner: S, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            conn,
            pending: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(status) = response_status(buf)
            && status >= 400
            && !self.conn.claim_head()
        {
            tracing::debug!(status, "replacing hyper's answer to an unparsable request");
            self.pending = parse_error_answer(status);
            self.conn.touch();
            // hyper's bytes are consumed either way; ours go out now or on the next
            // write, flush or shutdown.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        if response_status(buf).is_some_and(|s| s >= 200) {
            // A head the router produced (1xx interim answers are not counted).
            let _ = self.conn.claim_head();
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.conn.touch();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The status of an HTTP/1.1 response head at the start of `buf`.
fn response_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// The whole answer, head and JSON body, to a request hyper could not parse.
fn parse_error_answer(status: u16) -> Vec<u8> {
    let code = match status {
        414 => ErrorCode::UriTooLong,
        431 => ErrorCode::HeadersTooLarge,
        _ => ErrorCode::MalformedRequest,
    };
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let body = crate::error::REQUEST_ID.sync_scope(request_id.clone(), || {
        ApiError::new(code).with_detail(code_detail(code)).body()
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn code_detail(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::UriTooLong => "the request line is too long; shorten the path and query",
        ErrorCode::HeadersTooLarge => {
            "the request headers are too large (at most 100 headers of about 96 KiB together); send fewer or shorter headers"
        }
        _ => {
            "the request could not be parsed as HTTP/1.1: check the method, the path, header names and values (visible ASCII), and that Content-Length is given once"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_are_told_from_ours() {
        let conn = Conn::new(Instant::now());
        assert!(!conn.claim_head(), "nothing produced yet");
        conn.produced.fetch_add(1, Ordering::AcqRel);
        assert!(conn.claim_head());
        assert!(!conn.claim_head());
        assert_eq!(response_status(b"HTTP/1.1 431 Request"), Some(431));
        assert_eq!(response_status(b"{\"HTTP/1.1 431"), None);
        let answer = String::from_utf8(parse_error_answer(431)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error_code"], "APIGW.0201");
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}
