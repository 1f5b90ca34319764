//! The audit trail of admin commands (`deskfleet-server admin ...`): each command that
//! changes the database runs in an audit scope, so its first write commits its trace;
//! `verify`, `export` and `seal` work on the trail itself.

use super::catalog;
use super::seal::check_seal;
use deskfleet_core::audit::{Rating, Trace, TraceUser, Verification, verify_store};
use deskfleet_core::clock::Millis;
use deskfleet_core::store::Store;
use deskfleet_store::audit::{AuditScope, Stage};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

/// The operating-system user running the command ("" if unknown).
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

/// The audit scope of an admin command, if it is one that changes the database.
pub fn scope(path: &str, now: Millis) -> Option<AuditScope> {
    let (name, resource_type) = catalog::admin_entry(path)?;
    let login = os_user();
    let mut user = TraceUser::iam("", &login, "", "", "");
    user.kind = "SystemUser".to_owned();
    user.invoked_by = vec!["deskfleet-server admin".to_owned()];
    Some(AuditScope::new(Trace {
        trace_id: deskfleet_core::audit::new_trace_id(),
        trace_name: name.to_owned(),
        trace_rating: Rating::Normal.as_str().to_owned(),
        trace_type: "SystemAction".to_owned(),
        request: serde_json::json!({ "command": format!("admin {path}") }).to_string(),
        code: "200".to_owned(),
        time: now,
        user,
        service_type: "deskfleet".to_owned(),
        resource_type: resource_type.to_owned(),
        enterprise_project_id: "0".to_owned(),
        operation_id: Some(format!("admin {path}")),
        tracker_name: "system".to_owned(),
        ..Trace::default()
    }))
}

/// After the command: if its trace was not committed with a change (it failed, or its
/// change went through a write that carries no trace), record it on its own. A command
/// that succeeded but whose trace cannot be written fails.
pub async fn finish(
    store: &dyn Store,
    scope: &AuditScope,
    outcome: &anyhow::Result<()>,
    now: Millis,
) -> anyhow::Result<()> {
    if scope.stage() == Stage::Committed {
        return Ok(());
    }
    let mut trace = scope.draft();
    trace.record_time = now.max(trace.time);
    if let Err(e) = outcome {
        trace.code = "400".to_owned();
        trace.trace_rating = Rating::Warning.as_str().to_owned();
        trace.location_info = Some(format!("{e:#}").chars().take(300).collect());
    }
    store
        .append_trace(&trace)
        .await
        .map_err(|e| anyhow::anyhow!("the command's trace could not be recorded: {e}"))?;
    Ok(())
}

/// What `admin audit verify` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub chain: Verification,
    /// Seals whose signature does not hold, with why.
    pub bad_signatures: Vec<(i64, String)>,
    pub seals: usize,
    pub ok: bool,
}

/// Verifies the chain and the seals' signatures against `trusted` keys.
pub async fn verify(store: &dyn Store, trusted: &[VerifyingKey]) -> anyhow::Result<Report> {
    let chain = verify_store(store).await?;
    let seals = store.list_seals().await?;
    let bad_signatures: Vec<(i64, String)> = seals
        .iter()
        .filter_map(|s| check_seal(s, trusted).err().map(|why| (s.seq, why)))
        .collect();
    let ok = chain.ok() && bad_signatures.is_empty();
    Ok(Report {
        chain,
        bad_signatures,
        seals: seals.len(),
        ok,
    })
}
