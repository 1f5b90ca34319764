//! Why a console request failed: no usable session, or an API error. Rendered as the
//! sign-in redirect or an error page by [`super::page`].

use crate::error::ApiError;

/// Why a request has no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie, or one the database does not know.
    Missing,
    /// It was valid once and has run out (idle or absolute), or its user lost access.
    Expired,
}

impl NoSession {
    /// The sign-in page's `reason` parameter.
    pub fn reason(self) -> &'static str {
        match self {
            NoSession::Missing => "signin",
            NoSession::Expired => "expired",
        }
    }
}

/// Why a console request failed: no session (to the sign-in page) or an API error (a
/// page that says it in words, with its code).
#[derive(Debug)]
pub enum ConsoleError {
    SignIn(NoSession),
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl From<deskfleet_core::store::StoreError> for ConsoleError {
    fn from(e: deskfleet_core::store::StoreError) -> Self {
        ConsoleError::Api(e.into())
    }
}
