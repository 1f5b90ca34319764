//! Schemas for parameters and fields that the handlers read as plain text but check
//! against a rule (an id's characters, a list of values, bounds): small types whose only
//! purpose is to say that rule in the document, made from the same constants the
//! handlers check with.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

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

/// Any string of at most `max` characters.
pub fn string_up_to(max: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(max))
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
