//! The OpAMP WebSocket: opening it with the right credential, and one session on it.
//!
//! A session sends the full state first, then whatever the agent produces (package
//! progress, health, metrics) and a heartbeat when nothing else was sent for a heartbeat
//! interval, while it applies every `ServerToAgent`. It ends on shutdown, on a new
//! credential (to reconnect with it), on the server's `Unavailable`, or when the socket
//! fails; [`crate::run`] decides what comes next.

use std::time::Duration;

use deskfleet_proto::opamp::{AgentToServer, ServerToAgent, decode_ws_frame, encode_ws_frame};
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Handled};
use crate::backoff::parse_retry_after;
use crate::tls::Transport;

/// The upgrade (TCP connect, TLS, HTTP handshake) must finish within this.
pub const CONNECT_TIMEOUT: Duration = crate::tls::CONNECT_TIMEOUT;

/// How long the goodbye waits for the server to acknowledge `agent_disconnect`.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest message accepted from the server. Offers and settings are small; this
/// only bounds what a broken server can make the guest buffer.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the server refused the connection with HTTP {status}")]
    Refused {
        status: StatusCode,
        /// From `Retry-After` (on 429 and 503).
        retry_after: Option<Duration>,
    },
    #[error("timed out after {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error("invalid request: {0}")]
    Request(String),
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
}

impl ConnectError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Opens the OpAMP WebSocket with `Authorization: Bearer <secret>`, over TLS with the
/// transport's configuration for `wss://`. A server that fails verification never sees
/// the request (nor the credential).
pub async fn connect(
    url: &Url,
    bearer: &str,
    transport: &Transport,
) -> Result<WsStream, ConnectError> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Request(e.to_string()))?;
    let value = HeaderValue::from_str(&format!("Bearer {bearer}"))
        .map_err(|_| ConnectError::Request("the credential is not a valid header value".into()))?;
    request.headers_mut().insert(header::AUTHORIZATION, value);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connector = transport.tls_config().map(Connector::Rustls);
    if connector.is_none() && url.scheme() == "wss" {
        return Err(ConnectError::Request(
            "wss:// without a TLS configuration".into(),
        ));
    }
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Ok((ws, _response))) => {
            transport.keep_pinned_ca().await;
            Ok(ws)
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let retry_after = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then(|| {
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            })
            .flatten();
            Err(ConnectError::Refused {
                status,
                retry_after,
            })
        }
        Ok(Err(error)) => Err(ConnectError::WebSocket(error)),
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Shutdown was requested; `agent_disconnect` was sent.
    Shutdown,
    /// A new credential (or identity) arrived: reconnect with it now.
    Reconnect,
    /// The server is overloaded (`Unavailable`): come back after this, at the earliest.
    RetryAfter(Option<Duration>),
    /// The socket closed or failed.
    Lost(String),
}

/// The outcome of one session, and whether the server answered at all (a session in
/// which the server answered counts as a success for the reconnect backoff).
#[derive(Debug)]
pub struct SessionOutcome {
    pub end: SessionEnd,
    pub server_answered: bool,
}

/// Runs one session on an open socket until it ends.
pub(crate) async fn session(
    agent: &mut Agent,
    ws: WsStream,
    shutdown: &CancellationToken,
) -> SessionOutcome {
    let (mut sink, mut stream) = ws.split();
    let mut server_answered = false;
    agent.set_connected(true);
    let first = agent.full_state_message();
    let end = match send(&mut sink, &first).await {
        Err(error) => SessionEnd::Lost(format!("sending the first message: {error}")),
        Ok(()) => {
            let mut last_sent = Instant::now();
            loop {
                let heartbeat_at = agent.heartbeat().map(|every| last_sent + every);
                let step = tokio::select! {
                    _ = shutdown.cancelled() => Step::Leave(SessionEnd::Shutdown),
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Binary(data))) => {
                            match decode_ws_frame::<ServerToAgent>(&data) {
                                Ok(msg) => {
                                    server_answered = true;
                                    match agent.handle_server_message(msg).await {
                                        Handled::Continue => Step::Flush,
                                        Handled::Reconnect => Step::Leave(SessionEnd::Reconnect),
                                        Handled::RetryAfter(after) => Step::Leave(SessionEnd::RetryAfter(after)),
                                    }
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "undecodable message from the server; ignored");
                                    Step::Flush
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => Step::Leave(SessionEnd::Lost(match frame {
                            Some(frame) => format!("closed by the server: {} {}", frame.code, frame.reason),
                            None => "closed by the server".to_owned(),
                        })),
                        // Pings are answered by tungstenite itself; text has no meaning here.
                        Some(Ok(_)) => Step::Flush,
                        Some(Err(error)) => Step::Leave(SessionEnd::Lost(error.to_string())),
                        None => Step::Leave(SessionEnd::Lost("the connection ended".to_owned())),
                    },
                    Some(event) = agent.next_event() => {
                        agent.handle_event(event).await;
                        Step::Flush
                    }
                    _ = sleep_until_opt(heartbeat_at), if heartbeat_at.is_some() => {
                        agent.push_heartbeat();
                        Step::Flush
                    }
                };
                // Whatever the step produced goes out before the session may end, so a
                // reconnect or goodbye never swallows a status report.
                let mut failed = None;
                for msg in agent.take_outbox() {
                    if let Err(error) = send(&mut sink, &msg).await {
                        failed = Some(error.to_string());
                        break;
                    }
                    last_sent = Instant::now();
                }
                if let Some(error) = failed {
                    break SessionEnd::Lost(format!("sending: {error}"));
                }
                if let Step::Leave(end) = step {
                    break end;
                }
            }
        }
    };
    agent.set_connected(false);
    match &end {
        SessionEnd::Shutdown | SessionEnd::Reconnect => {
            // The goodbye, then the close handshake. The server handles messages in
            // order, so once it has answered our Close (or dropped the socket) it has
            // processed `agent_disconnect` and let go of this connection: the next one
            // is not mistaken for a clone of this desktop.
            let bye = agent.disconnect_message();
            if send(&mut sink, &bye).await.is_ok() && sink.send(Message::Close(None)).await.is_ok()
            {
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                    while let Some(Ok(msg)) = stream.next().await {
                        if matches!(msg, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
            let _ = sink.close().await;
        }
        SessionEnd::RetryAfter(_) => {
            let _ = sink.send(Message::Close(None)).await;
            let _ = sink.close().await;
        }
        SessionEnd::Lost(_) => {}
    }
    SessionOutcome {
        end,
        server_answered,
    }
}

enum Step {
    Flush,
    Leave(SessionEnd),
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<WsStream, Message>,
    msg: &AgentToServer,
) -> Result<(), tungstenite::Error> {
    sink.send(Message::Binary(encode_ws_frame(msg).into()))
        .await
}
