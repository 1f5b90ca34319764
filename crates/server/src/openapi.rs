//! The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`.
//!
//! Nothing in it is written by hand: every operation comes from a handler's
//! `#[utoipa::path]` annotation and every body from the wire type's `ToSchema` derive.
//! The route modules register their handlers through `utoipa_axum::routes!`, which takes
//! the path and method from that annotation, so the router and the document are one list
//! and cannot drift (`tests/api/openapi.rs` holds them to it). `routes/mod.rs` builds the
//! document once and serves it.
//!
//! deskfleet's own operations carry the `Extensions` tag and, like the fields deskfleet
//! adds to the public bodies, the vendor extension `x-deskfleet-extension: true`. A field
//! is an extension when its doc comment says so (it starts with "Extension" or
//! "deskfleet extension"), so the mark follows the code's own words.

use crate::AppState;
use crate::routes::ces::error::{MetricErrorBody, TaskmgrErrorBody};
use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::iam::KeystoneError;
use std::collections::BTreeMap;
use utoipa::openapi::extensions::{Extensions, ExtensionsBuilder};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayItems, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The vendor extension on deskfleet's own operations and fields.
pub const EXTENSION_MARK: &str = "x-deskfleet-extension";

pub const TAG_WORKSPACE: &str = "Workspace";
pub const TAG_IAM: &str = "IAM";
pub const TAG_CES: &str = "Cloud Eye";
pub const TAG_EXTENSIONS: &str = "Extensions";

/// The security scheme names operations refer to.
pub const AKSK: &str = "aksk";
pub const TOKEN: &str = "token";
pub const FLEET_BEARER: &str = "fleet_bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "deskfleet",
        description = "Huawei Cloud Workspace's Installing an Agent API (and the job and desktop \
            APIs beside it), the IAM subset the SDKs use, the Cloud Eye agent and metric subset, \
            and deskfleet's documented extensions. Every operation but the IAM password login, \
            the probes, the fleet channel and this document is authenticated with an AK/SK \
            signature or an IAM token. See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "this server")),
    tags(
        (name = "Workspace", description = "Workspace v2: BatchInstallAgent, \
            ListAgentsInstallCondition, jobs and sub-jobs, desktops. Errors are the Workspace \
            body (`WKS.NNNN`), or the gateway's (`APIGW.NNNN`, with `request_id`)."),
        (name = "IAM", description = "The Keystone-compatible part of IAM: password tokens, \
            token validation, project discovery. Token errors have the Keystone shape."),
        (name = "Cloud Eye", description = "Cloud Eye (CES): agent status and agent invocations \
            (v3, `taskmgr.NNNN` errors) and metric data (V1.0, the hybrid `ces.NNNN` body). \
            Gateway errors stay `APIGW.NNNN`."),
        (name = "Extensions", description = "deskfleet's own operations: the desktop monitor, \
            probes, Prometheus metrics, the guests' OpAMP channel and package downloads, and \
            this document. Every one, and every field deskfleet adds to a public body, carries \
            `x-deskfleet-extension: true`."),
    ),
    components(schemas(ErrorBody, KeystoneError, TaskmgrErrorBody, MetricErrorBody)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The credentials the API takes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            AKSK,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An SDK-HMAC-SHA256 signature by an access key (AK/SK), as the Huawei Cloud \
                 SDKs make it: `Authorization: SDK-HMAC-SHA256 Access=<AK>, \
                 SignedHeaders=<names>, Signature=<hex>` with an `X-Sdk-Date` header \
                 (`YYYYMMDDTHHMMSSZ`) among the signed ones. See docs/signing.md.",
            ))),
        );
        components.add_security_scheme(
            TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "An IAM token: the `X-Subject-Token` header of `POST /v3/auth/tokens`.",
            ))),
        );
        components.add_security_scheme(
            FLEET_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A desktop's enrollment token or its desktop credential \
                         (docs/fleet-protocol.md).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document of `routes`: the operations they carry, under this API's info, tags and
/// security schemes, with the extension marks.
pub fn build(routes: OpenApiRouter<AppState>) -> Document {
    let mut doc = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes)
        .into_openapi();
    mark_extensions(&mut doc);
    empty_query_values_are_absent(&mut doc);
    doc
}

/// An empty query value counts as absent (`extract::Query`; the SDKs send `start=` for an
/// unset marker): every optional query parameter, and every item of a list, also takes
/// `""`.
fn empty_query_values_are_absent(doc: &mut Document) {
    let empty: RefOr<Schema> = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0))
        .description(Some("empty: the same as leaving the parameter out"))
        .into();
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let optional_query = parameter.parameter_in == ParameterIn::Query
                    && parameter.required == Required::False;
                let Some(schema) = parameter.schema.take() else {
                    continue;
                };
                let or_empty = |schema: RefOr<Schema>| -> RefOr<Schema> {
                    AnyOfBuilder::new().item(schema).item(empty.clone()).into()
                };
                parameter.schema = Some(match schema {
                    // `status=A&status=`: the empty one is left out.
                    RefOr::T(Schema::Array(mut list)) if optional_query => {
                        list.items = match list.items {
                            ArrayItems::RefOrSchema(items) => {
                                ArrayItems::RefOrSchema(Box::new(or_empty(*items)))
                            }
                            other => other,
                        };
                        RefOr::T(Schema::Array(list))
                    }
                    schema if optional_query => or_empty(schema),
                    schema => schema,
                });
            }
        }
    }
}

fn mark() -> Extensions {
    ExtensionsBuilder::new()
        .add(EXTENSION_MARK, serde_json::Value::Bool(true))
        .build()
}

fn is_extension_doc(description: Option<&String>) -> bool {
    description.is_some_and(|d| d.starts_with("Extension") || d.starts_with("deskfleet extension"))
}

/// Puts `x-deskfleet-extension: true` on the `Extensions` operations and on the fields
/// whose doc comments call them extensions.
fn mark_extensions(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let tagged = operation
                .tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(|t| t == TAG_EXTENSIONS));
            if tagged {
                operation
                    .extensions
                    .get_or_insert_with(Default::default)
                    .merge(mark());
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::Object(object)) = schema else {
            continue;
        };
        for property in object.properties.values_mut() {
            let RefOr::T(property) = property else {
                continue;
            };
            let (marked, extensions) = match property {
                Schema::Object(o) => (is_extension_doc(o.description.as_ref()), &mut o.extensions),
                Schema::Array(a) => (is_extension_doc(a.description.as_ref()), &mut a.extensions),
                // An optional reference (`Option<T>`): the doc comment is on the reference.
                Schema::OneOf(o) => (
                    is_extension_doc(o.description.as_ref())
                        || o.items.iter().any(|item| match item {
                            RefOr::Ref(r) => is_extension_doc(Some(&r.description)),
                            RefOr::T(_) => false,
                        }),
                    &mut o.extensions,
                ),
                Schema::AllOf(a) => (is_extension_doc(a.description.as_ref()), &mut a.extensions),
                Schema::AnyOf(a) => (is_extension_doc(a.description.as_ref()), &mut a.extensions),
                _ => continue,
            };
            if marked {
                extensions
                    .get_or_insert_with(Default::default)
                    .merge(mark());
            }
        }
    }
}

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
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema())).build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
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
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || schema_ref("ErrorBody"))
    }
}

/// The errors of a Cloud Eye v3 operation: `taskmgr.NNNN`, or the gateway's body.
pub struct CesV3Errors;

impl IntoResponses for CesV3Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || or_gateway("TaskmgrErrorBody"))
    }
}

/// The errors of a Cloud Eye V1.0 (metric) operation: the hybrid `ces.NNNN` body, or the
/// gateway's.
pub struct CesV1Errors;

impl IntoResponses for CesV1Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&AUTHENTICATED_ERRORS, || or_gateway("MetricErrorBody"))
    }
}

/// The errors of the Keystone token operations: the Keystone body.
pub struct KeystoneErrors;

impl IntoResponses for KeystoneErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
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
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
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

/// Declares a type whose only purpose is a schema (for a parameter or field the handler
/// reads as a plain string but checks against a rule): `PartialSchema` from `$schema`.
macro_rules! schema_type {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use schema_type;

/// A string of `min..=max` characters matching `pattern` (`usize::MAX`: no maximum).
pub fn pattern_string(pattern: &str, min: usize, max: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length((max != usize::MAX).then_some(max))
        .description(Some(description))
        .into()
}

/// A string that is one of `values`.
pub fn one_of_strings<'a>(values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// An integer that is one of `values`.
pub fn one_of_integers(values: impl IntoIterator<Item = i64>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .enum_values(Some(values))
        .into()
}

/// An integer from `min` to `max`.
pub fn integer_between(min: i64, max: i64, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .into()
}

/// Characters that are not control characters (Unicode Cc), as the ids of the wire allow.
const PRINTABLE: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]+$";

schema_type!(
    /// A project id: 1 to 255 of `[A-Za-z0-9_-]`.
    ProjectIdParam => pattern_string("^[A-Za-z0-9_-]+$", 1, 255, "A project id")
);
schema_type!(
    /// A desktop, job or sub-job id: 1 to 255 printable characters.
    PrintableId => pattern_string(PRINTABLE, 1, 255, "An id: 1 to 255 printable characters")
);
