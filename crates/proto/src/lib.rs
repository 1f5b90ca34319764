//! Wire types of deskfleet: what crosses the network, and nothing else.
//!
//! - [`workspace`]: the Huawei Cloud Workspace v2 request and response bodies that the
//!   official SDKs send and parse (field names are facts of the wire, not choices).
//! - [`iam`]: the Keystone-shaped `/v3` bodies (tokens, projects, error envelope).
//! - [`error`]: the catalogue of error codes (`WKS.*`, `APIGW.*`) with their HTTP status.
//! - [`opamp`]: the OpAMP agent-management messages (`prost`) and their WebSocket and
//!   HTTP framing.
//! - [`sign`]: the `SDK-HMAC-SHA256` request signature, both sides (sign and verify).
//! - [`enrollment`]: the enrollment token's format (secret and CA fingerprint).
//!
//! Invariant: this crate is pure data and pure functions. It must not depend on tokio,
//! axum, sqlx or any other runtime, so that every other crate (server, client, guest)
//! can share it without dragging a runtime along.

pub mod enrollment;
pub mod error;
pub mod iam;
pub mod opamp;
pub mod sign;
pub mod workspace;
