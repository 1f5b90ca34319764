//! `/openapi.json`: served without credentials, OpenAPI 3.1, and the same list of routes
//! as the router, both ways.

use crate::helpers::TestApp;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .http()
        .get(format!("{}/openapi.json", app.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.expect("the document is JSON")
}

/// `(METHOD, path)` of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_describes_every_family() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["Workspace", "IAM", "Cloud Eye", "Cloud Trace", "Extensions"])
    );
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["aksk"]["name"], "Authorization");
    assert_eq!(schemes["token"]["name"], "X-Auth-Token");
    let ops = operations(&doc);
    assert!(ops.contains(&("POST".into(), "/v2/{project_id}/desktops/agents".into())));
    assert!(ops.contains(&("POST".into(), "/v3/auth/tokens".into())));
    assert!(ops.contains(&("GET".into(), "/v3/{project_id}/traces".into())));
    assert!(ops.contains(&("GET".into(), "/v3/{project_id}/trackers".into())));
    assert!(ops.contains(&(
        "POST".into(),
        "/v3/{project_id}/agent-invocations/batch-create".into()
    )));
    assert!(ops.contains(&("GET".into(), "/V1.0/{project_id}/metric-data".into())));
    // Every operation has a tag, an id and a success answer; the extensions are marked.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let tag = op["tags"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no tag"));
            assert!(
                op["operationId"].is_string(),
                "{method} {path}: no operationId"
            );
            let extension = op.get("x-deskfleet-extension") == Some(&Value::Bool(true));
            assert_eq!(tag == "Extensions", extension, "{method} {path}: mark");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "101"),
                "{method} {path}: no success answer"
            );
            for (status, response) in responses {
                assert!(
                    response["headers"]["X-Request-Id"].is_object(),
                    "{method} {path} {status}: X-Request-Id"
                );
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["BatchInstallAgentRequest"]["properties"]["max_concurrency"]["x-deskfleet-extension"],
        true
    );
    assert!(
        schemas["BatchInstallAgentRequest"]["properties"]["desktop_ids"]
            .get("x-deskfleet-extension")
            .is_none()
    );
    assert_eq!(
        schemas["AgentsCondition"]["properties"]["connection"]["x-deskfleet-extension"],
        true
    );
    app.stop().await;
}

/// Every operation of the document reaches a handler: none falls through to the
/// router's `APIGW.0101` fallback.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    let http = app.http();
    for (method, path) in operations(&doc) {
        let url = path
            .replace("{project_id}", app.project())
            .replace("{job_id}", "0123456789abcdef0123456789abcdef")
            .replace("{desktop_id}", "0123456789abcdef0123456789abcdef")
            .replace("{package_id}", "nothing");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = http
            .request(method.clone(), format!("{}{url}", app.endpoint()))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("APIGW.0101"),
            "{method} {path} is documented but not routed: {status} {body}"
        );
    }
    app.stop().await;
}

/// Every API route is registered with `utoipa_axum::routes!`, which takes its path and
/// method from the handler's `#[utoipa::path]`: a plain `.route(...)` in the modules that
/// make the API would add a route the document does not list. (Pages for browsers, which
/// are not the API, live elsewhere and are not scanned.)
#[test]
fn no_route_bypasses_the_document() {
    fn walk(path: &Path, found: &mut Vec<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), found);
            }
            return;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                if code.contains(call) {
                    found.push(format!("{}:{}: {code}", path.display(), n + 1));
                }
            }
        }
    }
    let mut found = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for api in ["routes", "fleet", "openapi", "observe.rs"] {
        walk(&src.join(api), &mut found);
    }
    assert!(
        found.is_empty(),
        "routes added without an OpenAPI operation (use routes!(handler) with #[utoipa::path]):\n{}",
        found.join("\n")
    );
}
