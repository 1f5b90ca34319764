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

mod errors;
mod schemas;

pub use errors::{
    CesV1Errors, CesV3Errors, CtsErrors, FleetErrors, KeystoneErrors, WorkspaceErrors,
};
pub(crate) use schemas::schema_type;
pub use schemas::{
    PrintableId, ProjectIdParam, integer_between, one_of_integers, one_of_strings, pattern_string,
    string_up_to,
};

use crate::AppState;
use crate::audit::listing::CtsErrorBody;
use crate::routes::ces::error::{MetricErrorBody, TaskmgrErrorBody};
use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::iam::KeystoneError;
use utoipa::openapi::Required;
use utoipa::openapi::extensions::{Extensions, ExtensionsBuilder};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AnyOfBuilder, ArrayItems, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The vendor extension on deskfleet's own operations and fields.
pub const EXTENSION_MARK: &str = "x-deskfleet-extension";

pub const TAG_WORKSPACE: &str = "Workspace";
pub const TAG_IAM: &str = "IAM";
pub const TAG_CES: &str = "Cloud Eye";
pub const TAG_CTS: &str = "Cloud Trace";
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
        (name = "Cloud Trace", description = "Cloud Trace Service (CTS): the audit trail's \
            traces and its one tracker (docs/audit.md). Errors are `CTS.NNNN`, or the gateway's."),
        (name = "Extensions", description = "deskfleet's own operations: the desktop monitor, \
            probes, Prometheus metrics, the guests' OpAMP channel and package downloads, and \
            this document. Every one, and every field deskfleet adds to a public body, carries \
            `x-deskfleet-extension: true`."),
    ),
    components(schemas(ErrorBody, KeystoneError, TaskmgrErrorBody, MetricErrorBody, CtsErrorBody)),
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
    every_answer_has_a_request_id(&mut doc);
    doc
}

/// Every answer carries `X-Request-Id` (the request-id middleware of `routes/mod.rs`).
fn every_answer_has_a_request_id(doc: &mut Document) {
    let header = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "The request's id, also in the server's log and in gateway error bodies",
        ))
        .build();
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .insert("X-Request-Id".to_owned(), header.clone());
                }
            }
        }
    }
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
