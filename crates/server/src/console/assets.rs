//! The console's one stylesheet and one script, compiled into the binary and served with
//! a content hash in their URL (`?v=`), an `ETag`, and a year of caching: a new build
//! changes the URL, so a browser never runs a stale script against new pages.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// The first 16 hex digits of the body's SHA-256.
    hash: String,
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    let asset = |name, content_type, body: &'static str| Asset {
        name,
        content_type,
        body,
        hash: hex::encode(&Sha256::digest(body.as_bytes())[..8]),
    };
    [
        asset(
            "console.css",
            "text/css; charset=utf-8",
            include_str!("../../assets/console/console.css"),
        ),
        asset(
            "console.js",
            "text/javascript; charset=utf-8",
            include_str!("../../assets/console/console.js"),
        ),
    ]
});

/// The versioned URL of an asset.
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/console/assets/{}?v={}", a.name, a.hash),
        None => format!("/console/assets/{name}"),
    }
}

pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", asset.hash);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
