//! `/healthz` and `/readyz` on a healthy server, without credentials.

use crate::SETTINGS;
use crate::harness::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_credentials() {
    let server = Server::start(SETTINGS).await;
    let (status, body) = server.get("/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    for _ in 0..3 {
        let (status, body) = server.get("/readyz").await.unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    }
    // Nothing else is routed under it.
    let (status, _) = server.get("/readyz/x").await.unwrap();
    assert_eq!(status, 404);
}
