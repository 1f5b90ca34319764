//! Extractors that turn bad input into precise `WKS.0001` errors instead of axum's
//! plain-text rejections.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use deskfleet_core::model::Page;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

/// A JSON body (already buffered and size-checked by the auth middleware).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(format!("the request body could not be read: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(
                ApiError::invalid("The request message input by the interface is empty.")
                    .with_detail("send a JSON object as the request body"),
            );
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::invalid(format!("the request body is not valid: {e}"))
                .with_detail("see the API reference for the fields and their types")
        })
    }
}

/// Path parameters, with a 400 instead of axum's rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::invalid(format!("invalid path parameter: {e}")))
    }
}

/// The query string as decoded pairs, keeping repeated keys (`status=A&status=B`), with
/// typed getters that say exactly what is wrong.
pub struct Query(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::parse(parts.uri.query().unwrap_or(""), false)
    }
}

impl Query {
    /// Decodes `key=value&...`; with `form`, `+` stands for a space, as in an HTML form's
    /// `application/x-www-form-urlencoded` body.
    pub fn parse(raw: &str, form: bool) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                let s = if form {
                    std::borrow::Cow::Owned(s.replace('+', " "))
                } else {
                    std::borrow::Cow::Borrowed(s)
                };
                percent_decode_str(&s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        let what = if form {
                            "form field"
                        } else {
                            "query parameter"
                        };
                        ApiError::invalid(format!("{what} {k:?} is not valid UTF-8"))
                    })
            };
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query(pairs))
    }

    /// The single value of `key`; an empty value counts as absent.
    /// Every (key, value) pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn str(&self, key: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(ApiError::invalid(format!(
                "query parameter {key} may be given only once"
            ))),
            (Some(v), None) if !v.is_empty() => Ok(Some(v.clone())),
            _ => Ok(None),
        }
    }

    /// Every non-empty value of a repeatable `key`, which may be given at most `max` times
    /// (empty values count: the bound is on the query, as the OpenAPI document says it).
    pub fn all(&self, key: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let given = self.0.iter().filter(|(k, _)| k == key).count();
        if given > max {
            return Err(ApiError::invalid(format!(
                "query parameter {key} is given {given} times; at most {max} are allowed"
            )));
        }
        Ok(self
            .0
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect())
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.str(key)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(format!(
                "query parameter {key} must be true or false, not {other:?}"
            ))),
        }
    }

    pub fn int(&self, key: &str, max: u32, default: u32) -> Result<u32, ApiError> {
        match self.str(key)? {
            None => Ok(default),
            Some(v) => v.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::invalid(format!(
                    "query parameter {key} must be an integer from 0 to {max}, not {v:?}"
                ))
            }),
        }
    }

    /// `limit` and `offset` with the API's bounds.
    pub fn page(
        &self,
        max_limit: u32,
        default_limit: u32,
        max_offset: u32,
    ) -> Result<Page, ApiError> {
        Ok(Page {
            limit: self.int("limit", max_limit, default_limit)?,
            offset: self.int("offset", max_offset, 0)?,
        })
    }
}
