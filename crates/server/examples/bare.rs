//! The benchmark baseline: a bare axum endpoint that parses the BatchInstallAgent body and
//! answers a JSON job id, with no authentication and no storage. `bench/api/run.sh`
//! measures deskfleet's real endpoint against it in the same run.
//!
//! Usage: `bare ADDR` (e.g. `127.0.0.1:0`); prints the bound address.

use axum::routing::post;
use axum::{Json, Router};
use deskfleet_proto::workspace::{BatchInstallAgentRequest, JobIdResponse};

async fn install(Json(request): Json<BatchInstallAgentRequest>) -> Json<JobIdResponse> {
    Json(JobIdResponse {
        job_id: format!(
            "{}-{}",
            uuid::Uuid::new_v4().simple(),
            request.desktop_ids.len()
        ),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    let app = Router::new().route("/v2/{project_id}/desktops/agents", post(install));
    axum::serve(listener, app).await?;
    Ok(())
}
