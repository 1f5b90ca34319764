//! OpAMP over WebSocket (`GET /v1/opamp` with an upgrade): one task per connection that
//! answers every message and delivers work when the scheduler wakes it.
//!
//! Lifetimes: the upgrade is authenticated (headers only) before it counts against
//! admission; the connection then owns its admission permit until its task ends. The
//! task ends when the guest leaves, when the guest is silent for three heartbeat
//! intervals (a half-open TCP connection must not hold a desktop "connected" forever),
//! or when the server shuts down; in the last two cases the server sends a Close first.

use super::{
    FleetAuth, MAX_MESSAGE_BYTES, Push, Session, auth, bad_request, base_url, unavailable,
};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;
use deskfleet_proto::opamp::{self as op, AgentToServer, decode_ws_frame, encode_ws_frame};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

/// How long a Close we send may take to go out before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The guests' OpAMP channel over WebSocket (`docs/fleet-protocol.md`): protobuf
/// `AgentToServer` and `ServerToAgent` frames. The request is a WebSocket upgrade
/// (`Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`,
/// `Sec-WebSocket-Key`); any other GET is answered 400.
#[utoipa::path(
    get,
    path = "/v1/opamp",
    tag = crate::openapi::TAG_EXTENSIONS,
    operation_id = "ConnectOpampWebSocket",
    responses(
        (status = 101, description = "Switched to WebSocket: OpAMP frames follow"),
        crate::openapi::FleetErrors,
    ),
    security(("fleet_bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn opamp_ws(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let fleet = &state.fleet;
    if fleet.shutdown.is_cancelled() {
        return auth::refuse(
            ErrorCode::Unavailable,
            "the server is shutting down; retry later",
            Some(5),
        )
        .into_response();
    }
    let auth = match auth::authenticate(&state, &parts.headers).await {
        Ok((_, auth)) => auth,
        Err(error) => return error.into_response(),
    };
    let permit = match fleet.admission.admit(&state.settings.fleet) {
        Ok(permit) => permit,
        Err(refused) => {
            return auth::refuse(
                ErrorCode::Unavailable,
                "too many connections; retry later",
                Some(refused.retry_after_secs()),
            )
            .into_response();
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return auth::refuse(
                ErrorCode::InvalidParameter,
                format!("GET /v1/opamp must be a WebSocket upgrade: {rejection}"),
                None,
            )
            .into_response();
        }
    };
    let base = base_url(&state, &parts.headers);
    let sessions = state.fleet.sessions.clone();
    // Small buffers: tens of thousands of mostly idle connections must fit in memory.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            sessions.track_future(serve_socket(state, auth, base, socket, permit))
        })
}

/// Why the server ends a connection of its own accord.
enum Ending {
    Shutdown,
    Idle,
}

/// One WebSocket connection: answer every message, and deliver work when woken.
async fn serve_socket(
    state: AppState,
    auth: FleetAuth,
    base: String,
    mut socket: WebSocket,
    permit: OwnedSemaphorePermit,
) {
    // Held, not used: the connection's admission slot, given back when this task ends.
    let _permit = permit;
    let (push_tx, mut push_rx) = mpsc::channel(4);
    let mut session = Session::new(state.clone(), auth, base, Some(push_tx));
    let idle_after = Duration::from_secs(3 * state.settings.fleet.heartbeat_secs.max(1));
    let mut idle_at = Instant::now() + idle_after;
    // Once the server drains: when this connection must close even with work in flight.
    let mut drain_by: Option<Instant> = None;
    let ending = loop {
        if drain_by.is_some() && !session.busy() {
            break Some(Ending::Shutdown);
        }
        let reply = tokio::select! {
            _ = state.fleet.shutdown.cancelled(), if drain_by.is_none() => {
                drain_by = Some(Instant::now() + Duration::from_secs(state.settings.fleet.drain_secs));
                continue;
            }
            _ = tokio::time::sleep_until(drain_by.unwrap_or(idle_at)), if drain_by.is_some() => {
                tracing::info!(desktop_id = ?session.desktop_id(), "closing a connection with work in flight at the end of the drain");
                break Some(Ending::Shutdown);
            }
            _ = tokio::time::sleep_until(idle_at) => break Some(Ending::Idle),
            incoming = socket.recv() => {
                // Any frame from the guest, pings included, shows the connection is alive.
                idle_at = Instant::now() + idle_after;
                match incoming {
                    Some(Ok(Message::Binary(data))) => {
                        metrics::counter!("deskfleet_opamp_messages_total", "transport" => "ws").increment(1);
                        match decode_ws_frame::<AgentToServer>(&data) {
                            Ok(msg) => {
                                let disconnect = msg.agent_disconnect.is_some();
                                let reply = session.handle(msg).await;
                                if disconnect {
                                    if let Ok(reply) = reply {
                                        let _ = socket.send(Message::Binary(encode_ws_frame(&reply).into())).await;
                                    }
                                    break None;
                                }
                                reply
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "undecodable OpAMP frame");
                                Ok(bad_request(&e.to_string()))
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue, // text, ping, pong: nothing to answer
                }
            },
            Some(Push::Wake) = push_rx.recv() => {
                let mut reply = op::ServerToAgent { instance_uid: session.instance_uid().to_vec(), ..Default::default() };
                match session.deliver(&mut reply).await {
                    Ok(()) if reply.packages_available.is_some() => Ok(reply),
                    Ok(()) => continue,
                    Err(e) => Err(e),
                }
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "fleet session failed; the guest will reconnect");
                unavailable(5)
            }
        };
        if socket
            .send(Message::Binary(encode_ws_frame(&reply).into()))
            .await
            .is_err()
        {
            break None;
        }
    };
    // Unregister first: the desktop is offline from now on, whatever the goodbye does.
    session.close().await;
    let (code, reason) = match ending {
        None => return,
        Some(Ending::Shutdown) => (
            close_code::AWAY,
            "the server is shutting down; reconnect (to another replica)",
        ),
        Some(Ending::Idle) => {
            tracing::info!(desktop_id = ?session.desktop_id(), idle_secs = idle_after.as_secs(), "closing a silent fleet connection");
            (
                close_code::NORMAL,
                "no message for three heartbeat intervals",
            )
        }
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close)).await;
}
