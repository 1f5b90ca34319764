//! Sign-in and sign-out. The password is checked by [`crate::auth::password`], the same
//! check as `POST /v3/auth/tokens`, so wrong passwords count against the same lockout.

use super::cookie;
use super::page::{ConsoleError, Form, layout, page, see_other};
use super::session::{self, ConsoleUser};
use crate::AppState;
use crate::auth::password::{LoginRefused, check_password};
use crate::auth::read_body;
use crate::error::ApiError;
use crate::extract::Query;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use deskfleet_proto::error::ErrorCode;
use maud::html;

/// The sign-in page; a signed-in user goes on to the overview.
pub async fn form(State(state): State<AppState>, request: Request) -> Response {
    if session::load(&state, request.headers()).await.is_ok() {
        return see_other("/console/");
    }
    let query = Query::parse(request.uri().query().unwrap_or(""), false)
        .ok()
        .and_then(|q| q.str("reason").ok().flatten());
    let notice = match query.as_deref() {
        Some("expired") => Some("Your session has ended. Sign in again."),
        Some("signout") => Some("You have signed out."),
        Some("signin") => Some("Sign in to use the console."),
        _ => None,
    };
    page(sign_in_page(&state, notice, None, ""))
}

fn sign_in_page(
    state: &AppState,
    notice: Option<&str>,
    error: Option<&str>,
    user_name: &str,
) -> maud::Markup {
    layout(
        "Sign in",
        None,
        super::page::Area::None,
        html! {
            @if let Some(n) = notice { p class="notice" role="status" { (n) } }
            @if let Some(e) = error { div class="error" role="alert" { p { (e) } } }
            form method="post" action="/console/login" class="signin" {
                label for="domain" { "Account (domain)" }
                input id="domain" name="domain" required autocomplete="organization"
                    value=(state.settings.bootstrap.domain_name);
                label for="user" { "User name" }
                input id="user" name="user" required autocomplete="username" value=(user_name);
                label for="password" { "Password" }
                input id="password" name="password" type="password" required autocomplete="current-password";
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// Checks the password and, for a user with a role on a project, creates the session.
pub async fn submit(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ConsoleError> {
    let body = read_body(request.into_body(), crate::routes::PUBLIC_BODY_BYTES).await?;
    let raw =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the form is not valid UTF-8"))?;
    let fields = Query::parse(raw, true)?;
    crate::audit::console::note_form_fields(fields.pairs(), "");
    let domain = fields.str("domain")?.unwrap_or_default();
    let user_name = fields.str("user")?.unwrap_or_default();
    let password = fields.str("password")?.unwrap_or_default();
    let refuse = |status: StatusCode, message: &str| {
        let markup = sign_in_page(&state, None, Some(message), &user_name);
        Ok((status, Html(markup.into_string())).into_response())
    };
    let user = match check_password(&state, &domain, &user_name, password).await {
        Ok(user) => user,
        Err(LoginRefused::BadCredentials) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "The account, user name or password is wrong.",
            );
        }
        Err(LoginRefused::Locked { secs }) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "This user is locked after too many wrong passwords; try again in {secs} seconds."
                ),
            );
        }
        Err(LoginRefused::Busy) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins are being checked; try again in a few seconds.",
            );
        }
        Err(LoginRefused::Disabled) => {
            return refuse(StatusCode::UNAUTHORIZED, "This user is disabled.");
        }
        Err(LoginRefused::Store(e)) => return Err(e.into()),
    };
    // The console works on one project: the user's first one with a role.
    let project = state
        .store
        .list_user_projects(&user.id, None)
        .await?
        .into_iter()
        .next();
    let Some(project) = project else {
        return Err(ApiError::new(ErrorCode::Forbidden)
            .with_detail(format!(
                "user {} has no role on any project; ask an administrator for one",
                user.name
            ))
            .into());
    };
    crate::audit::note_project(&project.id);
    let id = session::create(&state, &user, &project.id).await?;
    tracing::info!(user = %user.name, project = %project.id, "console sign-in");
    let mut response = see_other("/console/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie::set_cookie(&id, state.settings.console.absolute_timeout_secs),
    );
    Ok(response)
}

/// Deletes the session: its cookie no longer works, wherever it was copied.
pub async fn logout(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    let user: &ConsoleUser = &form.user;
    state
        .store
        .delete_console_session(&user.session_sha256)
        .await?;
    tracing::info!(user = %user.user_name, "console sign-out");
    let mut response = see_other("/console/login?reason=signout");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie::clear_cookie());
    Ok(response)
}
