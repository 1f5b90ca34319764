//! The web console at `/console/`: server-rendered HTML pages for operators, served by the
//! server itself over the same listener and TLS, with nothing fetched from elsewhere.
//!
//! Shape: every page is an HTML document rendered here (maud, checked at compile time);
//! every change is an HTML form POST that works without JavaScript. One small script
//! (`assets/console/console.js`) adds live job progress and "select all"; one stylesheet.
//! Both are compiled into the binary.
//!
//! Security: a sign-in creates a session row (see [`session`]) whose random id travels in
//! an `HttpOnly; Secure; SameSite=Strict` cookie (see [`cookie`]); every POST carries a
//! per-session CSRF token and must come from this origin (see [`csrf`]).
//!
//! Modules, lowest first (each uses only those above it): `cookie`, `csrf`, `error`,
//! `assets`, `charts`; `session`; `page` (the frame, the error page, the form extractor);
//! then one module per area, of which `install` and `agents` reuse `desktops`' filters. Every page and action is
//! authorised through [`crate::AppState::authorize`] with the same [`Api`] as the
//! equivalent API call, and writes call the same functions as the API handlers, so the
//! console can do exactly what the user's role lets the API do, with the same errors.
//!
//! [`Api`]: crate::auth::policy::Api

mod agents;
mod assets;
mod audit;
mod charts;
mod cookie;
mod csrf;
mod desktop;
mod desktops;
mod enrollment;
mod error;
mod install;
mod jobs;
mod login;
mod overview;
mod page;
mod session;
mod users;

use crate::AppState;
use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::routing::{get, post};

pub use cookie::COOKIE;

/// The console's routes, under `/console`. Empty when `console.enabled` is off.
pub fn routes(state: &AppState) -> Router<AppState> {
    if !state.settings.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/console", get(page::to_console_root))
        .route("/console/", get(overview::show))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/desktops", get(desktops::show))
        .route("/console/desktops/{desktop_id}", get(desktop::show))
        .route(
            "/console/install",
            get(install::confirm).post(install::submit),
        )
        .route("/console/packages", get(agents::packages))
        .route(
            "/console/agents/upgrade",
            get(agents::upgrade_confirm).post(agents::upgrade),
        )
        .route(
            "/console/agents/rollback",
            get(agents::rollback_confirm).post(agents::rollback),
        )
        .route(
            "/console/enrollment",
            get(enrollment::show).post(enrollment::create),
        )
        .route("/console/enrollment/revoke", post(enrollment::revoke))
        .route("/console/users", get(users::show).post(users::create))
        .route("/console/users/{user_id}/disable", post(users::disable))
        .route("/console/users/{user_id}/enable", post(users::enable))
        .route("/console/users/{user_id}/keys", post(users::create_key))
        .route("/console/keys/{access_key}/delete", post(users::delete_key))
        .route("/console/audit", get(audit::show))
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/{job_id}", get(jobs::show))
        .route("/console/jobs/{job_id}/progress", get(jobs::progress))
        .route("/console/jobs/{job_id}/retry", post(jobs::retry))
        .route("/console/jobs/{job_id}/cancel", post(jobs::cancel))
        .route(
            "/console/{*rest}",
            get(page::not_found).post(page::not_found),
        )
        .route_layer(from_fn(page::same_origin_posts))
        // Outside the origin check, so that a forged form's refusal is recorded too.
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::audit::console::record,
        ))
        .route_layer(map_response(page::security_headers))
}
