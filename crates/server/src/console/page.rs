//! The page frame (head, navigation, footer), the error page, the form extractor, and the
//! small helpers every page uses.

use super::assets;
use super::cookie;
use super::csrf;
pub use super::error::ConsoleError;
use super::error::NoSession;
use super::session::{self, ConsoleUser};
use crate::AppState;
use crate::auth::policy::Api;
use crate::auth::read_body;
use crate::error::ApiError;
use crate::extract::Query;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use deskfleet_core::clock::Millis;
use deskfleet_core::model::Role;
use deskfleet_proto::error::ErrorCode;
use maud::{DOCTYPE, Markup, html};

/// Largest console form body: a hundred desktop ids and a few fields fit many times.
const FORM_BYTES: usize = 64 * 1024;

/// The areas of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Overview,
    Desktops,
    Jobs,
    Packages,
    Enrollment,
    Users,
    Audit,
    None,
}

/// A whole page: `title`, the navigation for `user`, and `body`.
pub fn layout(title: &str, user: Option<&ConsoleUser>, area: Area, body: Markup) -> Markup {
    let nav = [
        (Area::Overview, "/console/", "Overview"),
        (Area::Desktops, "/console/desktops", "Desktops"),
        (Area::Jobs, "/console/jobs", "Jobs"),
        (Area::Packages, "/console/packages", "Packages"),
        (Area::Enrollment, "/console/enrollment", "Enrollment"),
        (Area::Users, "/console/users", "Users"),
        (Area::Audit, "/console/audit", "Audit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · deskfleet" }
                link rel="stylesheet" href=(assets::url("console.css"));
                script src=(assets::url("console.js")) defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "deskfleet" }
                    @if let Some(u) = user {
                        nav aria-label="Main" {
                            ul {
                                @for (a, href, label) in nav {
                                    // Enrollment and users are the administrators', the
                                    // audit trail is the roles' that may read it.
                                    @if (u.role == Role::Admin || !matches!(a, Area::Enrollment | Area::Users))
                                        && (a != Area::Audit || u.may(Api::ListTraces)) {
                                    li {
                                        @if a == area {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                    }
                                }
                            }
                        }
                        div class="who" {
                            span { (u.user_name) " (" (u.role) ")" }
                            form method="post" action="/console/logout" {
                                (csrf_field(u))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    a href="/openapi.json" { "API reference (OpenAPI)" }
                    " · deskfleet console"
                }
            }
        }
    }
}

/// The hidden CSRF field of every form.
pub fn csrf_field(user: &ConsoleUser) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(user.csrf); }
}

/// A time for people: UTC, to the second.
pub fn time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A time or a dash.
pub fn opt_time(ms: Option<Millis>) -> String {
    ms.map(time).unwrap_or_else(|| "-".into())
}

/// The error box: code, message and what to do. A form that shows one failed: its trace
/// says why.
pub fn error_box(e: &ApiError) -> Markup {
    let body = e.body();
    crate::audit::console::note_failure(&body.error_code, &body.error_msg);
    html! {
        div class="error" role="alert" {
            p { strong { "Error " (body.error_code) } ": " (body.error_msg) }
            @if let Some(d) = &body.error_detail { p { (d) } }
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignIn(why) => {
                let mut r = Redirect::to(&format!("/console/login?reason={}", why.reason()))
                    .into_response();
                if why == NoSession::Expired {
                    r.headers_mut()
                        .insert(header::SET_COOKIE, cookie::clear_cookie());
                }
                // A redirect, but a refusal: the audit trail records it as one.
                crate::audit::console::note_failure(
                    ErrorCode::Unauthenticated.code(),
                    &format!("no console session ({})", why.reason()),
                );
                r
            }
            ConsoleError::Api(e) => {
                let status = e.status();
                let title = status.canonical_reason().unwrap_or("Error");
                let page = layout(
                    title,
                    None,
                    Area::None,
                    html! {
                        (error_box(&e))
                        p { a href="/console/" { "Back to the console" } }
                    },
                );
                let mut r = (status, Html(page.into_string())).into_response();
                if let Some(secs) = e.retry_after_secs {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
                }
                r
            }
        }
    }
}

/// An HTML page response.
pub fn page(markup: Markup) -> Response {
    no_store(Html(markup.into_string()).into_response())
}

/// Pages show live state and who is signed in: never cached.
pub fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// After a POST, to a page (303: the browser follows with a GET).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A signed-in form POST whose CSRF token was checked: its user and its fields.
pub struct Form {
    pub user: ConsoleUser,
    pub fields: Query,
}

impl FromRequest<AppState> for Form {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let (parts, body) = request.into_parts();
        let user = session::load(state, &parts.headers).await?;
        let body = read_body(body, FORM_BYTES).await?;
        let raw = std::str::from_utf8(&body)
            .map_err(|_| ApiError::invalid("the form is not valid UTF-8"))?;
        let fields = Query::parse(raw, true)?;
        crate::audit::console::note_console_form(&user.principal(), fields.pairs(), csrf::FIELD);
        csrf::check(&user.csrf, fields.str(csrf::FIELD)?.as_deref())?;
        Ok(Form { user, fields })
    }
}

impl Form {
    /// Authorises `api` for the form's user, as the API would.
    pub fn authorize(
        &self,
        state: &AppState,
        api: Api,
    ) -> Result<deskfleet_core::ids::ProjectId, ApiError> {
        self.user.authorize(state, api)
    }
}

pub async fn to_console_root() -> Redirect {
    Redirect::permanent("/console/")
}

pub async fn not_found() -> ConsoleError {
    ConsoleError::Api(
        ApiError::new(ErrorCode::ApiNotFound).with_detail("no console page has this address"),
    )
}

/// A `<progress>` with its label, for a percentage.
pub fn progress_bar(label: &str, percent: u64, id: Option<&str>) -> Markup {
    html! {
        progress max="100" value=(percent) aria-label=(label) data-progress=[id] { (percent) "%" }
    }
}

/// `s` percent-encoded for a URL query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Refuses a POST that a browser says came from another site (see [`csrf::check_origin`]).
pub async fn same_origin_posts(request: Request, next: Next) -> Response {
    if request.method() == Method::POST
        && let Err(e) = csrf::check_origin(&request)
    {
        return ConsoleError::Api(e).into_response();
    }
    next.run(request).await
}

/// What every console response tells the browser: run only this server's script and
/// style, send forms only here, and never show the console inside another site's frame
/// (a hidden frame could trick a click on "Confirm install").
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        axum::http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}
