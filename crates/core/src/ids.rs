//! Identifier newtypes. Each can only be built by `parse`, which enforces the limits of the
//! wire spec, so a handler that holds a `DesktopId` holds a valid one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused; the message is meant for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct IdError {
    pub field: &'static str,
    pub reason: String,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let allowed: fn(char) -> bool = $allowed;
                if value.is_empty() {
                    return Err(IdError { field: $field, reason: "must not be empty".into() });
                }
                let len = value.chars().count();
                if len > $max {
                    return Err(IdError {
                        field: $field,
                        reason: format!("is {len} characters long; at most {} are allowed", $max),
                    });
                }
                if let Some(c) = value.chars().find(|c| !allowed(*c)) {
                    return Err(IdError {
                        field: $field,
                        reason: format!("contains the character {c:?}, which is not allowed"),
                    });
                }
                Ok(Self(value))
            }

            /// A fresh random identifier (32 lowercase hex digits, like the real service's).
            pub fn generate() -> Self {
                Self(uuid::Uuid::new_v4().simple().to_string())
            }

            /// A fresh time-ordered identifier (UUIDv7, 32 lowercase hex digits), for rows
            /// whose index inserts should append rather than land on random pages.
            pub fn time_ordered() -> Self {
                Self(uuid::Uuid::now_v7().simple().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn printable(c: char) -> bool {
    !c.is_control()
}

string_id!(
    /// A project (`{project_id}` in every `/v2` path): 1..=255 of `[A-Za-z0-9_-]`.
    ProjectId, "project_id", 255, id_char
);
string_id!(
    /// A desktop: 1..=255 printable characters (the wire allows any string up to 255).
    DesktopId, "desktop_id", 255, printable
);
string_id!(
    /// A job (task): 1..=255 printable characters.
    JobId, "job_id", 255, printable
);
string_id!(
    /// A sub-job (sub-task): 1..=255 printable characters.
    SubJobId, "sub_job_id", 255, printable
);
string_id!(
    /// An IAM user.
    UserId, "user_id", 64, id_char
);
string_id!(
    /// An IAM domain (account).
    DomainId, "domain_id", 64, id_char
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits_are_enforced() {
        assert!(DesktopId::parse("").is_err());
        assert!(DesktopId::parse("a".repeat(255)).is_ok());
        let err = DesktopId::parse("a".repeat(256)).unwrap_err();
        assert_eq!(err.field, "desktop_id");
        assert!(err.reason.contains("256"));
        assert!(ProjectId::parse("abc/def").is_err());
        assert!(DesktopId::parse("line\nbreak").is_err());
        assert_eq!(ProjectId::generate().as_str().len(), 32);
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_what_fits(s in "\\PC{0,300}") {
            let n = s.chars().count();
            prop_assert_eq!(DesktopId::parse(s.clone()).is_ok(), (1..=255).contains(&n));
        }

        #[test]
        fn project_ids_round_trip(s in "[A-Za-z0-9_-]{1,255}") {
            let id = ProjectId::parse(s.clone()).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
