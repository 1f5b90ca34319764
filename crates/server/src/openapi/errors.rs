//! The error answers of each dialect, as `IntoResponses` sets the operations list beside
//! their own answers: the Workspace body, Cloud Eye's v3 and V1.0 bodies (each with the
//! gateway's beside it), Keystone's, and the fleet channel's.

use std::collections::BTreeMap;
use utoipa::IntoResponses;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// The error answers an authenticated operation may give besides its own: statuses with
/// what they mean. Not every operation gives every one (a GET has no body to time out),
/// but each may.
const AUTHENTICATED_ERRORS: [(u16, &str); 8] = [
    (
        400,
        "A parameter is missing, malformed or out of range; the message says what to fix",
    ),
    (
        401,
        "APIGW.0301: the credential is missing, malformed, wrong, expired or locked",
    ),
    (
        403,
        "The caller's role does not grant the action, or the credential is of another project",
    ),
    (408, "The request body did not arrive in time"),
    (413, "The request body is larger than the limit"),
    (
        429,
        "The per-user, per-API request rate was exceeded; Retry-After says when to retry",
    ),
    (
        500,
        "Something failed inside the server; the cause is logged, not sent",
    ),
    (
        503,
        "Storage is unavailable, or too many large bodies are being received; Retry-After \
         says when to retry",
    ),
];

fn error_responses(
    statuses: &[(u16, &str)],
    schema: impl Fn() -> RefOr<Schema>,
) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let mut response = ResponseBuilder::new().description(*description).content(
                "application/json",
                ContentBuilder::new().schema(Some(schema())).build(),
            );
            // Throttling and unavailability say when to come back (when they know).
            if matches!(status, 429 | 503) {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// One of a service's own error body and the gateway's: authentication, size and
/// throttling are answered by the gateway in front of every service.
fn or_gateway(service: &str) -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(schema_ref(service))
        .item(schema_ref("ErrorBody"))
        .into()
}

/// The errors of a Workspace (and `/v3/projects`) operation: the Workspace body.
pub struct WorkspaceErrors;

impl IntoResponses for WorkspaceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || schema_ref("ErrorBody"))
    }
}

/// The errors of a Cloud Eye v3 operation: `taskmgr.NNNN`, or the gateway's body.
pub struct CesV3Errors;

impl IntoResponses for CesV3Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || or_gateway("TaskmgrErrorBody"))
    }
}

/// The errors of a Cloud Eye V1.0 (metric) operation: the hybrid `ces.NNNN` body, or the
/// gateway's.
pub struct CesV1Errors;

impl IntoResponses for CesV1Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || or_gateway("MetricErrorBody"))
    }
}

/// The errors of a Cloud Trace Service operation: `CTS.NNNN` (404 `CTS.0214` for an
/// unknown tracker), or the gateway's body.
pub struct CtsErrors;

impl IntoResponses for CtsErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut statuses = AUTHENTICATED_ERRORS.to_vec();
        statuses.push((404, "CTS.0214: no tracker has that name"));
        error_responses(&statuses, || or_gateway("CtsErrorBody"))
    }
}

/// The errors of the Keystone token operations: the Keystone body.
pub struct KeystoneErrors;

impl IntoResponses for KeystoneErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            &[
                (
                    400,
                    "The request body is invalid; the message says what to fix",
                ),
                (
                    401,
                    "Wrong user name or password, a locked or disabled user, no role on the \
                     project in scope, or a missing or invalid X-Auth-Token",
                ),
                (408, "The request body did not arrive in time"),
                (413, "The request body is larger than the limit"),
                (
                    500,
                    "Something failed inside the server; the cause is logged, not sent",
                ),
                (
                    503,
                    "Too many logins are being checked, or storage is unavailable; retry",
                ),
            ],
            || schema_ref("KeystoneError"),
        )
    }
}

/// The errors of the fleet channel and of the probes: the Workspace body.
pub struct FleetErrors;

impl IntoResponses for FleetErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            &[
                (
                    400,
                    "The message is not a valid request; the message says why",
                ),
                (
                    401,
                    "APIGW.0301: no bearer, or an unknown, spent or expired credential",
                ),
                (403, "The credential may not do this"),
                (404, "No such package"),
                (408, "The request body did not arrive in time"),
                (413, "The request body is larger than the limit"),
                (
                    500,
                    "Something failed inside the server; the cause is logged, not sent",
                ),
                (
                    503,
                    "The server is busy, shutting down, or its storage is unavailable; \
                     Retry-After says when to retry",
                ),
            ],
            || schema_ref("ErrorBody"),
        )
    }
}
