//! First start: an empty store gets a domain, a project, an admin user with a generated
//! password and one access key. They are returned once (the binary prints them) and
//! written to `DATA_DIR/bootstrap.json` with mode 0600.

use crate::AppState;
use crate::admin;
use anyhow::Context;
use deskfleet_core::model::Role;
use deskfleet_core::store::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    pub domain_name: String,
    pub project_id: String,
    pub project_name: String,
    pub user_name: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("domain_name", &self.domain_name)
            .field("project_id", &self.project_id)
            .field("user_name", &self.user_name)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

pub async fn bootstrap_if_empty(state: &AppState) -> anyhow::Result<Option<Bootstrap>> {
    let b = &state.settings.bootstrap;
    if state
        .store
        .find_domain_by_name(&b.domain_name)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let domain = match state.store.create_domain(&b.domain_name).await {
        Ok(d) => d,
        // Another replica bootstrapped the same database first.
        Err(StoreError::AlreadyExists(_)) => return Ok(None),
        Err(e) => return Err(e).context("creating the bootstrap domain"),
    };
    let store = state.store.as_ref();
    let project = store.create_project(&domain.id, &b.project_name).await?;
    let (user, password) = admin::create_user(store, &domain.name, &b.user_name, None).await?;
    store.grant_role(&user.id, &project.id, Role::Admin).await?;
    let (access_key, secret_key) = admin::create_access_key(
        store,
        &state.keyring,
        &user.id,
        &project.id,
        state.clock.now(),
    )
    .await?;
    let created = Bootstrap {
        domain_name: domain.name,
        project_id: project.id.into_string(),
        project_name: project.name,
        user_name: user.name,
        password,
        access_key,
        secret_key,
    };
    crate::auth::files::write_private(
        &state.settings.data_dir.join("bootstrap.json"),
        &serde_json::to_vec_pretty(&created)?,
    )?;
    tracing::info!(project_id = %created.project_id, user = %created.user_name, "bootstrapped an empty store");
    Ok(Some(created))
}
