//! Enrollment tokens: create one (optionally bound to a desktop), shown once with the
//! command line that starts a guest with it, ready to copy; revoke one by its value (the
//! database keeps only hashes, so a token cannot be listed back). The same functions as
//! `deskfleet-server admin enrollment-tokens create|revoke`.

use super::page::{Area, ConsoleError, Form, csrf_field, error_box, layout, page, time};
use super::session::ConsoleUser;
use crate::AppState;
use crate::admin;
use crate::auth::policy::Api;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

/// Longest lifetime the console offers: a year.
const MAX_TTL_HOURS: u64 = 24 * 365;

fn forms(state: &AppState, user: &ConsoleUser) -> Markup {
    html! {
        section aria-labelledby="create-h" {
            h2 id="create-h" { "Create a token" }
            form method="post" action="/console/enrollment" class="confirm" {
                (csrf_field(user))
                label for="ttl_hours" { "Valid for (hours)" }
                input id="ttl_hours" name="ttl_hours" inputmode="numeric" required
                    value=(state.settings.fleet.enrollment_token_ttl_hours);
                label for="desktop" { "Only for this imported desktop (id, optional)" }
                input id="desktop" name="desktop";
                button type="submit" { "Create token" }
            }
        }
        section aria-labelledby="revoke-h" {
            h2 id="revoke-h" { "Revoke a token" }
            form method="post" action="/console/enrollment/revoke" class="confirm" {
                (csrf_field(user))
                label for="token" { "Token to revoke" }
                input id="token" name="token" required autocomplete="off";
                button type="submit" { "Revoke token" }
            }
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, ConsoleError> {
    user.authorize(&state, Api::CreateEnrollmentToken)?;
    let body = html! {
        p { "A guest enrolls its desktop with a token; a token bound to a desktop enrolls only that one." }
        (forms(&state, &user))
    };
    Ok(page(layout(
        "Enrollment",
        Some(&user),
        Area::Enrollment,
        body,
    )))
}

fn error_page(state: &AppState, user: &ConsoleUser, e: &ApiError) -> Response {
    let body = html! { (error_box(e)) (forms(state, user)) };
    let markup = layout("Enrollment", Some(user), Area::Enrollment, body);
    (e.status(), Html(markup.into_string())).into_response()
}

/// The server's address as this browser reached it.
fn server_url(state: &AppState, headers: &HeaderMap) -> String {
    let scheme = if state.settings.tls.enabled {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("SERVER:PORT");
    format!("{scheme}://{host}")
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::CreateEnrollmentToken)?;
    let user = &form.user;
    let ttl = form.fields.str("ttl_hours")?;
    let ttl = match ttl.as_deref().map(str::trim).map(str::parse::<u64>) {
        Some(Ok(h)) if (1..=MAX_TTL_HOURS).contains(&h) => h,
        _ => {
            let e = ApiError::invalid(format!(
                "ttl_hours must be a whole number of hours from 1 to {MAX_TTL_HOURS}"
            ));
            return Ok(error_page(&state, user, &e));
        }
    };
    let desktop = form.fields.str("desktop")?;
    let desktop = desktop.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let issued = admin::issue_enrollment_token(
        state.store.as_ref(),
        &state.settings.data_dir,
        &project,
        desktop,
        ttl,
        state.clock.now(),
    )
    .await;
    // The CA's fingerprint rides in the token, so the guest verifies the server from its
    // first packet (as the admin command prints it).
    let admin::IssuedToken { token, expires_at } = match issued {
        Ok(issued) => issued,
        Err(e) => {
            let e = match e {
                admin::IssueError::NoSuchDesktop(_) => ApiError::not_found(e.to_string()),
                admin::IssueError::Store(e) => e.into(),
                e @ admin::IssueError::CaFile(_) => ApiError::internal(&e),
            };
            return Ok(error_page(&state, user, &e));
        }
    };
    let command = format!(
        "install -d -m 700 /etc/deskfleet\n\
         install -m 600 /dev/null /etc/deskfleet/enrollment.token\n\
         echo '{token}' > /etc/deskfleet/enrollment.token\n\
         deskfleet-guest --server {} --enrollment-token-file /etc/deskfleet/enrollment.token \\\n  \
         --trusted-key /etc/deskfleet/package-signing.pub --state-dir /var/lib/deskfleet-guest",
        server_url(&state, &headers)
    );
    tracing::info!(user = %user.user_name, project = %project, "enrollment token created in the console");
    let body = html! {
        div class="notice" role="status" {
            p { "Token created. It is shown only now; it expires " (time(expires_at)) "." }
        }
        div class="stack" {
            label for="token-value" { "Token" }
            input id="token-value" readonly value=(token);
            label for="guest-command" { "Start a guest with it (on the desktop, as root)" }
            textarea id="guest-command" readonly rows="6" { (command) }
            p { "The guest verifies packages with the server's public signing key: copy "
                code { "package-signing.pub" } " from the server's data directory to "
                code { "/etc/deskfleet/" } " first." }
        }
        div class="actions" {
            button type="button" data-copy="guest-command" { "Copy the command line" }
        }
        form method="post" action="/console/enrollment/revoke" {
            (csrf_field(user))
            input type="hidden" name="token" value=(token);
            button type="submit" { "Revoke this token" }
        }
        p { a href="/console/enrollment" { "Back to enrollment" } }
    };
    Ok(page(layout(
        "Enrollment token created",
        Some(user),
        Area::Enrollment,
        body,
    )))
}

pub async fn revoke(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    form.authorize(&state, Api::RevokeEnrollmentToken)?;
    let user = &form.user;
    let token = form.fields.str("token")?.unwrap_or_default();
    if let Err(e) = admin::revoke_enrollment_token(state.store.as_ref(), token.trim()).await {
        let e = ApiError::invalid(format!("{e:#}"));
        return Ok(error_page(&state, user, &e));
    }
    tracing::info!(user = %user.user_name, "enrollment token revoked in the console");
    let body = html! {
        div class="notice" role="status" { p { "The token is revoked: no guest can enroll with it any more." } }
        (forms(&state, user))
    };
    Ok(page(layout(
        "Enrollment",
        Some(user),
        Area::Enrollment,
        body,
    )))
}
