//! The audit trail with real processes: a guest's enrollment and the admin commands leave
//! their traces (no token in them), and `admin audit verify` on the real binary passes on
//! a clean chain and names a trace altered in the database.

use crate::harness::{Guest, Server, bin};
use crate::{FAST, desktops_enrolled};
use std::process::Command;

fn verify(server: &Server) -> (bool, serde_json::Value) {
    let out = Command::new(bin("deskfleet-server"))
        .arg("--data-dir")
        .arg(server.dir.path())
        .args(["admin", "audit", "verify"])
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_and_admin_commands_are_traced_and_verify_names_tampering() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let guest = Guest::start(&server, &token, "audited");
    guest.enrolled().await;
    let ids = desktops_enrolled(&server, 1).await;
    server.admin(&["audit", "seal"]);

    let store = deskfleet_store::connect_data_dir(server.dir.path())
        .await
        .unwrap();
    let chain = store.trace_chain(1, 1000).await.unwrap();
    let traces: Vec<deskfleet_core::audit::Trace> = chain
        .iter()
        .map(|t| serde_json::from_str(&t.content).unwrap())
        .collect();
    let enrolled: Vec<_> = traces
        .iter()
        .filter(|t| t.trace_name == "enrollDesktop")
        .collect();
    assert_eq!(enrolled.len(), 1, "{traces:?}");
    assert_eq!(enrolled[0].resource_id, ids[0]);
    assert_eq!(enrolled[0].project_id, server.bootstrap.project_id);
    assert_eq!(enrolled[0].user.kind, "DesktopGuest");
    let token_traces: Vec<_> = traces
        .iter()
        .filter(|t| t.trace_name == "createEnrollmentToken")
        .collect();
    assert_eq!(token_traces.len(), 1, "{traces:?}");
    assert_eq!(token_traces[0].trace_type, "SystemAction");
    assert_eq!(token_traces[0].project_id, server.bootstrap.project_id);
    let all = serde_json::to_string(&traces).unwrap();
    assert!(!all.contains(&token), "the enrollment token is in a trace");

    let (ok, report) = verify(&server);
    assert!(ok, "{report}");
    assert_eq!(report["seals"], 1);

    // Alter the enrollment's trace in the database, as an intruder with SQL access would.
    let seq = chain
        .iter()
        .find(|t| t.content.contains("enrollDesktop"))
        .unwrap()
        .seq;
    drop(store);
    let db = server.dir.path().join(deskfleet_store::DATA_DIR_FILE);
    {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        c.execute(
            format!(
                "UPDATE traces SET content = replace(content, 'audited', 'someone') \
                 WHERE seq = {seq}"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let (ok, report) = verify(&server);
    assert!(!ok, "{report}");
    assert_eq!(report["fault"]["seq"], seq);
    assert_eq!(report["fault"]["kind"], "altered");
    drop(guest);
}
