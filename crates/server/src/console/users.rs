//! Users and access keys of the project, for administrators: create a user with a role
//! (its password shown once), disable and enable users, create an access key (its secret
//! shown once) and delete one. The same functions as `deskfleet-server admin users|access-keys`;
//! every change moves the credential revision, so every replica drops what it cached.

use super::page::{Area, ConsoleError, Form, csrf_field, error_box, layout, page, see_other, time};
use super::session::ConsoleUser;
use crate::AppState;
use crate::admin;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use deskfleet_core::ids::{ProjectId, UserId};
use deskfleet_core::model::{Role, User};
use maud::{Markup, html};

async fn listing(
    state: &AppState,
    user: &ConsoleUser,
    project: &ProjectId,
) -> Result<Markup, ConsoleError> {
    let users = state.store.list_project_users(project).await?;
    let keys: Vec<_> = state
        .store
        .list_access_keys()
        .await?
        .into_iter()
        .filter(|k| &k.project_id == project)
        .collect();
    Ok(html! {
        table {
            caption { "Users with a role on this project" }
            thead { tr {
                th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "State" }
                th scope="col" { "Access keys" } th scope="col" { "Actions" }
            } }
            tbody {
                @for (u, role) in &users {
                    @let id = u.id.as_str();
                    tr {
                        th scope="row" { (u.name) }
                        td { (role) }
                        td { @if u.disabled { "disabled" } @else { "enabled" } }
                        td {
                            @for k in keys.iter().filter(|k| k.user_id == u.id) {
                                form method="post" action={"/console/keys/" (k.access_key) "/delete"} class="inline" {
                                    (csrf_field(user))
                                    code { (k.access_key) } " (" (time(k.created_at)) ") "
                                    button type="submit" aria-label={"Delete access key " (k.access_key)} { "Delete" }
                                }
                            }
                        }
                        td {
                            div class="actions" {
                                form method="post" action={"/console/users/" (id) "/keys"} {
                                    (csrf_field(user))
                                    button type="submit" aria-label={"New access key for " (u.name)} { "New access key" }
                                }
                                @if u.id != user.user_id {
                                    form method="post" action={"/console/users/" (id) (if u.disabled { "/enable" } else { "/disable" })} {
                                        (csrf_field(user))
                                        button type="submit" aria-label={(if u.disabled { "Enable " } else { "Disable " }) (u.name)} {
                                            @if u.disabled { "Enable" } @else { "Disable" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="new-user-h" {
            h2 id="new-user-h" { "Create a user" }
            form method="post" action="/console/users" class="confirm" {
                (csrf_field(user))
                label for="name" { "User name" }
                input id="name" name="name" required autocomplete="off";
                label for="role" { "Role on this project" }
                select id="role" name="role" {
                    option value="readonly" selected { "readonly" }
                    option value="admin" { "admin" }
                }
                label for="new-password" { "Password (empty: one is generated)" }
                input id="new-password" name="password" type="password" autocomplete="new-password";
                button type="submit" { "Create user" }
            }
        }
    })
}

async fn render(
    state: &AppState,
    user: &ConsoleUser,
    project: &ProjectId,
    before: Markup,
    status: axum::http::StatusCode,
) -> Result<Response, ConsoleError> {
    let list = listing(state, user, project).await?;
    let markup = layout(
        "Users and access keys",
        Some(user),
        Area::Users,
        html! { (before) (list) },
    );
    Ok(super::page::no_store(
        (status, Html(markup.into_string())).into_response(),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ManageIdentity)?;
    let list = listing(&state, &user, &project).await?;
    Ok(page(layout(
        "Users and access keys",
        Some(&user),
        Area::Users,
        list,
    )))
}

async fn refused(
    state: &AppState,
    user: &ConsoleUser,
    project: &ProjectId,
    e: ApiError,
) -> Result<Response, ConsoleError> {
    render(state, user, project, error_box(&e), e.status()).await
}

/// A user of this project, by id; others are not this console's to change.
async fn project_user(
    state: &AppState,
    project: &ProjectId,
    raw: String,
) -> Result<User, ApiError> {
    let id = UserId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))?;
    state
        .store
        .list_project_users(project)
        .await?
        .into_iter()
        .map(|(u, _)| u)
        .find(|u| u.id == id)
        .ok_or_else(|| ApiError::not_found(format!("user {id} has no role on this project")))
}

pub async fn create(State(state): State<AppState>, form: Form) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::ManageIdentity)?;
    let user = &form.user;
    let name = form.fields.str("name")?.unwrap_or_default();
    let name = name.trim().to_owned();
    let role = match form.fields.str("role")?.unwrap_or_default().parse::<Role>() {
        Ok(r) => r,
        Err(e) => return refused(&state, user, &project, ApiError::invalid(e)).await,
    };
    if name.is_empty() || name.len() > 64 {
        let e = ApiError::invalid("the user name must have 1 to 64 characters");
        return refused(&state, user, &project, e).await;
    }
    let password = form.fields.str("password")?.filter(|p| !p.is_empty());
    let Some(p) = state.store.find_project(&project).await? else {
        return Err(ApiError::not_found(format!("project {project} does not exist")).into());
    };
    let created = admin::create_user(
        state.store.as_ref(),
        &p.domain.name,
        &name,
        password.clone(),
    )
    .await;
    let (new_user, password_shown) = match created {
        Ok(u) => u,
        Err(e) => {
            return refused(&state, user, &project, ApiError::invalid(format!("{e:#}"))).await;
        }
    };
    state.store.grant_role(&new_user.id, &project, role).await?;
    tracing::info!(user = %user.user_name, created = %new_user.name, %role, "user created in the console");
    let notice = html! {
        div class="notice stack" role="status" {
            p { "User " strong { (new_user.name) } " created with the role " (role) "." }
            @if password.is_none() {
                label for="generated" { "Its password, shown only now" }
                input id="generated" readonly value=(password_shown);
            }
        }
    };
    render(&state, user, &project, notice, axum::http::StatusCode::OK).await
}

async fn set_disabled(
    state: AppState,
    form: Form,
    raw: String,
    disabled: bool,
) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::ManageIdentity)?;
    let target = match project_user(&state, &project, raw).await {
        Ok(u) => u,
        Err(e) => return refused(&state, &form.user, &project, e).await,
    };
    if target.id == form.user.user_id {
        let e = ApiError::invalid("you cannot disable your own user; ask another administrator");
        return refused(&state, &form.user, &project, e).await;
    }
    admin::set_user_disabled(state.store.as_ref(), &target, disabled)
        .await
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    if disabled {
        state.store.delete_user_console_sessions(&target.id).await?;
    }
    tracing::info!(user = %form.user.user_name, target = %target.name, disabled, "user state changed in the console");
    Ok(see_other("/console/users"))
}

pub async fn disable(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    set_disabled(state, form, raw, true).await
}

pub async fn enable(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    set_disabled(state, form, raw, false).await
}

pub async fn create_key(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::ManageIdentity)?;
    let target = match project_user(&state, &project, raw).await {
        Ok(u) => u,
        Err(e) => return refused(&state, &form.user, &project, e).await,
    };
    let (ak, sk) = admin::create_access_key(
        state.store.as_ref(),
        &state.keyring,
        &target.id,
        &project,
        state.clock.now(),
    )
    .await
    .map_err(|e| ApiError::internal(&format!("{e:#}")))?;
    tracing::info!(user = %form.user.user_name, target = %target.name, access_key = %ak, "access key created in the console");
    let notice = html! {
        div class="notice stack" role="status" {
            p { "Access key created for " strong { (target.name) } ". The secret key is shown only now." }
            label for="new-ak" { "Access key (AK)" }
            input id="new-ak" readonly value=(ak) size="30";
            label for="new-sk" { "Secret key (SK)" }
            input id="new-sk" readonly value=(sk) size="50";
        }
    };
    render(
        &state,
        &form.user,
        &project,
        notice,
        axum::http::StatusCode::OK,
    )
    .await
}

pub async fn delete_key(
    State(state): State<AppState>,
    ApiPath(ak): ApiPath<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    let project = form.authorize(&state, Api::ManageIdentity)?;
    let found = state.store.find_access_key(&ak).await?;
    if found.is_none_or(|k| k.project_id != project) {
        let e = ApiError::not_found(format!("access key {ak} does not exist in this project"));
        return refused(&state, &form.user, &project, e).await;
    }
    admin::delete_access_key(state.store.as_ref(), &ak)
        .await
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    tracing::info!(user = %form.user.user_name, access_key = %ak, "access key deleted in the console");
    Ok(see_other("/console/users"))
}
