//! OpAMP over plain HTTP (`POST /v1/opamp`): one `AgentToServer` in, one `ServerToAgent`
//! out. The session lives in a map between polls, keyed by the bearer and the instance
//! uid, and holds its admission permit there until the agent stops polling.
//!
//! Order matters: the bearer is authenticated from the headers first; only then is the
//! body read (at most [`MAX_MESSAGE_BYTES`]), gunzipped (output bounded the same) and
//! decoded. An unauthenticated request is answered 401 with its body never buffered: at
//! most [`DISCARD_BYTES`] of it are read and dropped (so that a well-behaved client gets
//! to read the answer instead of a reset), and the connection is closed after it. An
//! authenticated request over the message limit has the rest of its body (up to
//! `max_body_bytes`) read and dropped the same way before its 413.

use super::{HttpSession, MAX_MESSAGE_BYTES, Session, auth, base_url};
use crate::AppState;
use crate::auth::secrets::sha256_hex;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;
use deskfleet_proto::opamp::{self as op, AgentToServer};
use prost::Message as _;
use std::time::{Duration, Instant};

/// How much of an unauthenticated request's body is read (and dropped) before answering.
const DISCARD_BYTES: usize = 64 * 1024;
/// How long a refused request's body may take to arrive, up to what is dropped of it.
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads and drops up to `limit` bytes of `body`, for at most [`DISCARD_TIME`].
async fn discard(mut body: Body, limit: usize) {
    use axum::body::HttpBody;
    let drain = async {
        let mut seen = 0;
        while seen <= limit {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            match frame.await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// An answer after which the connection is closed: the request body was not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn too_large() -> ApiError {
    auth::refuse(
        ErrorCode::BodyTooLarge,
        format!("an OpAMP message is at most {MAX_MESSAGE_BYTES} bytes"),
        None,
    )
}

/// The body, read up to the message limit and gunzipped if it says so. Over the limit,
/// up to `drain` bytes more are read and dropped, so that the client reads the 413.
async fn read_message(
    headers: &HeaderMap,
    body: Body,
    drain: usize,
) -> Result<AgentToServer, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MESSAGE_BYTES as u64) {
        discard(body, drain).await;
        return Err(too_large());
    }
    let mut body = body;
    let mut buffer = Vec::new();
    {
        use axum::body::HttpBody;
        loop {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            match frame.await {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if buffer.len() + data.len() > MAX_MESSAGE_BYTES {
                            discard(body, drain).await;
                            return Err(too_large());
                        }
                        buffer.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => {
                    return Err(ApiError::invalid(format!(
                        "the body could not be read: {e}"
                    )));
                }
            }
        }
    }
    let body = Bytes::from(buffer);
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzip {
        // Bounded output: a small body that inflates to gigabytes stops at the limit.
        let inflated = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut limited = std::io::Read::take(
                flate2::read::GzDecoder::new(&body[..]),
                MAX_MESSAGE_BYTES as u64 + 1,
            );
            std::io::Read::read_to_end(&mut limited, &mut out).map(|_| out)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
        match inflated {
            Ok(out) if out.len() <= MAX_MESSAGE_BYTES => Bytes::from(out),
            Ok(_) => return Err(too_large()),
            Err(e) => {
                return Err(ApiError::invalid(format!(
                    "the gzip body could not be decoded: {e}"
                )));
            }
        }
    } else {
        body
    };
    AgentToServer::decode(body)
        .map_err(|e| ApiError::invalid(format!("not an AgentToServer message: {e}")))
}

fn protobuf(reply: &op::ServerToAgent) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(op::CONTENT_TYPE),
        )],
        reply.encode_to_vec(),
    )
        .into_response()
}

/// The guests' OpAMP channel over plain HTTP (`docs/fleet-protocol.md`): one protobuf
/// `AgentToServer` in (gzip allowed), one `ServerToAgent` out.
#[utoipa::path(
    post,
    path = "/v1/opamp",
    tag = crate::openapi::TAG_EXTENSIONS,
    operation_id = "PostOpampMessage",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "An AgentToServer message"),
    responses(
        (status = 200, description = "A ServerToAgent message", content_type = "application/x-protobuf", body = Vec<u8>),
        crate::openapi::FleetErrors,
    ),
    security(("fleet_bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn opamp_http(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let (secret, auth) = match auth::authenticate(&state, &headers).await {
        Ok(authenticated) => authenticated,
        Err(error) => {
            discard(body, DISCARD_BYTES).await;
            return closing(error);
        }
    };
    let msg = match read_message(&headers, body, state.settings.max_body_bytes).await {
        Ok(msg) => msg,
        Err(error) if error.code == ErrorCode::BodyTooLarge => return closing(error),
        Err(error) => return error.into_response(),
    };
    match serve(state, headers, secret, auth, msg).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(
    state: AppState,
    headers: HeaderMap,
    secret: String,
    auth: super::FleetAuth,
    msg: AgentToServer,
) -> Result<Response, ApiError> {
    metrics::counter!("deskfleet_opamp_messages_total", "transport" => "http").increment(1);
    let key = (secret, msg.instance_uid.clone());
    let existing = {
        let mut sessions = state.fleet.http_sessions.lock().await;
        sessions.prune(Duration::from_secs(
            3 * state.settings.fleet.heartbeat_secs.max(1),
        ));
        sessions.take(&key)
    };
    let (mut session, permit) = match existing {
        Some(HttpSession {
            session, _permit, ..
        }) => (session, _permit),
        None => {
            let permit = state
                .fleet
                .admission
                .admit(&state.settings.fleet)
                .map_err(|refused| {
                    auth::refuse(
                        ErrorCode::Unavailable,
                        "too many connections; retry later",
                        Some(refused.retry_after_secs()),
                    )
                })?;
            let session = Session::new(state.clone(), auth, base_url(&state, &headers), None);
            (session, permit)
        }
    };
    let disconnect = msg.agent_disconnect.is_some();
    let reply = match session.handle(msg).await {
        Ok(reply) => reply,
        Err(e) => {
            session.close().await;
            tracing::warn!(error = %e, "fleet session failed");
            return Err(auth::refuse(
                ErrorCode::Unavailable,
                "the server could not process the message; retry later",
                Some(5),
            ));
        }
    };
    if let Some(desktop) = session.desktop_id() {
        state.fleet.touch(desktop);
    }
    if !disconnect {
        // A new credential or uid changes the key the agent should poll with next.
        let next = match reply
            .connection_settings
            .as_ref()
            .and_then(|o| o.offered_bearer().map(str::to_string))
        {
            Some(credential) => (sha256_hex(&credential), reply_uid(&reply, &key.1)),
            None => (key.0.clone(), reply_uid(&reply, &key.1)),
        };
        state.fleet.http_sessions.lock().await.put(
            key,
            next,
            HttpSession {
                session,
                at: Instant::now(),
                _permit: permit,
            },
        );
    }
    Ok(protobuf(&reply))
}

fn reply_uid(reply: &op::ServerToAgent, current: &[u8]) -> Vec<u8> {
    reply
        .agent_identification
        .as_ref()
        .map(|a| a.new_instance_uid.clone())
        .unwrap_or_else(|| current.to_vec())
}
