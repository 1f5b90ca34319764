//! Property-based fuzzing of the body-taking endpoints (Workspace, IAM, OpAMP and Cloud
//! Eye) and of the metric query string through the real router
//! (`tower::ServiceExt::oneshot`, real store, correctly signed requests so that the bodies
//! reach their parsers): whatever the body, the answer is a 2xx or a 4xx with the API's JSON
//! error body, never a 5xx (a panic would be a 500 from the catch-panic layer).
//!
//! Longer run: `PROPTEST_CASES=5000 cargo nextest run -p deskfleet-server --test api fuzz`.

use axum::body::Body;
use deskfleet_server::Application;
use deskfleet_server::bootstrap::Bootstrap;
use deskfleet_server::settings::Settings;
use http::Request;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use tower::ServiceExt;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The endpoints that read a request body.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    BatchInstallAgent,
    JobAction,
    BatchDeleteSubJobs,
    CreateToken,
    OpampHttp,
    BatchListMetricData,
    BatchCreateAgentInvocations,
    ListAgentStatus,
}

impl Endpoint {
    fn path(self, project: &str) -> String {
        match self {
            Endpoint::BatchInstallAgent => format!("/v2/{project}/desktops/agents"),
            Endpoint::JobAction => {
                format!("/v2/{project}/workspace-jobs/0196f1a2-0000-7000-8000-000000000000/actions")
            }
            Endpoint::BatchDeleteSubJobs => {
                format!("/v2/{project}/workspace-sub-jobs/batch-delete")
            }
            Endpoint::CreateToken => "/v3/auth/tokens".into(),
            Endpoint::OpampHttp => "/v1/opamp".into(),
            Endpoint::BatchListMetricData => format!("/V1.0/{project}/batch-query-metric-data"),
            Endpoint::BatchCreateAgentInvocations => {
                format!("/v3/{project}/agent-invocations/batch-create")
            }
            Endpoint::ListAgentStatus => format!("/v3/{project}/agent-status/batch-query"),
        }
    }

    fn signed(self) -> bool {
        !matches!(self, Endpoint::CreateToken | Endpoint::OpampHttp)
    }
}

fn body_for(endpoint: Endpoint, project_desktops: &[String]) -> BoxedStrategy<Vec<u8>> {
    let arbitrary = prop::collection::vec(any::<u8>(), 0..256);
    let valid: BoxedStrategy<Vec<u8>> = match endpoint {
        Endpoint::BatchInstallAgent => {
            let known = project_desktops.to_vec();
            prop::collection::vec(
                prop_oneof![prop::sample::select(known), "\\PC{0,300}"],
                0..120,
            )
            .prop_map(|ids| serde_json::to_vec(&serde_json::json!({ "desktop_ids": ids })).unwrap())
            .boxed()
        }
        Endpoint::JobAction => prop_oneof![Just("retry".to_owned()), "\\PC{0,20}"]
            .prop_map(|op| serde_json::to_vec(&serde_json::json!({ "op_type": op })).unwrap())
            .boxed(),
        Endpoint::BatchDeleteSubJobs => (
            prop::option::of(prop::collection::vec("\\PC{0,40}", 0..5)),
            prop::option::of(prop_oneof![Just("SUCCESS".to_owned()), "\\PC{0,10}"]),
        )
            .prop_map(|(ids, status)| {
                serde_json::to_vec(&serde_json::json!({ "job_ids": ids, "delete_by_status": status }))
                    .unwrap()
            })
            .boxed(),
        Endpoint::CreateToken => ("\\PC{0,12}", "\\PC{0,12}")
            .prop_map(|(user, password)| {
                serde_json::to_vec(&serde_json::json!({"auth": {"identity": {
                    "methods": ["password"],
                    "password": {"user": {"domain": {"name": "deskfleet"}, "name": user, "password": password}}
                }}}))
                .unwrap()
            })
            .boxed(),
        Endpoint::OpampHttp => prop::collection::vec(any::<u8>(), 0..64).boxed(),
        // Well-formed bodies with varied content (own and unknown desktops, metrics and
        // ranges); the mutated and arbitrary ones below are the malformed half.
        Endpoint::BatchListMetricData => {
            let desktop = prop_oneof![
                prop::sample::select(project_desktops.to_vec()),
                "[a-f0-9-]{1,40}"
            ];
            let metric = (
                prop::sample::select(vec!["cpu_usage", "mem_usedPercent", "disk_usedPercent", "net_bitRecv", "no_such_metric"]),
                desktop,
            )
                .prop_map(|(name, desktop)| {
                    serde_json::json!({"namespace": "AGT.ECS", "metric_name": name,
                        "dimensions": [{"name": "instance_id", "value": desktop}]})
                });
            (
                prop::collection::vec(metric, 1..6),
                prop::sample::select(vec!["1", "300", "3600", "86400"]),
                prop::sample::select(vec!["average", "max", "min", "sum", "variance"]),
                1_700_000_000_000i64..1_700_000_600_000,
                1..86_400_000i64,
            )
                .prop_map(|(metrics, period, filter, from, span)| {
                    serde_json::to_vec(&serde_json::json!({
                        "metrics": metrics, "period": period, "filter": filter,
                        "from": from, "to": from + span
                    }))
                    .unwrap()
                })
                .boxed()
        }
        Endpoint::BatchCreateAgentInvocations => (
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(project_desktops.to_vec()),
                    "[a-zA-Z0-9-]{1,64}"
                ],
                1..6,
            ),
            prop::sample::select(vec!["INSTALL", "UPDATE", "ROLLBACK", "RETRY", "UNINSTALL"]),
        )
            .prop_map(|(ids, kind)| {
                let ids_field = if matches!(kind, "RETRY" | "ROLLBACK") {
                    "invocation_ids"
                } else {
                    "instance_ids"
                };
                serde_json::to_vec(&serde_json::json!({
                    ids_field: ids, "invocation_type": kind, "invocation_target": "telescope"
                }))
                .unwrap()
            })
            .boxed(),
        Endpoint::ListAgentStatus => (
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(project_desktops.to_vec()),
                    "[a-zA-Z0-9-]{1,64}"
                ],
                1..6,
            ),
            prop::option::of(prop::sample::select(vec!["running", "unknown", "none"])),
            prop::option::of(Just("telescope")),
        )
            .prop_map(|(ids, status, extension)| {
                serde_json::to_vec(&serde_json::json!({
                    "instance_ids": ids, "uniagent_status": status, "extension_name": extension
                }))
                .unwrap()
            })
            .boxed(),
    };
    let mutated = (
        valid.clone(),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 0..4),
    )
        .prop_map(|(mut body, edits)| {
            for (i, b, kind) in edits {
                let len = body.len();
                match kind {
                    0 if len > 0 => body[i.index(len)] = b,
                    1 => body.insert(i.index(len + 1), b),
                    _ => body.truncate(i.index(len + 1)),
                }
            }
            body
        });
    prop_oneof![arbitrary, valid, mutated].boxed()
}

fn request(endpoint: Endpoint, boot: &Bootstrap, body: Vec<u8>) -> Request<Body> {
    let path = endpoint.path(&boot.project_id);
    let content_type = match endpoint {
        Endpoint::OpampHttp => deskfleet_proto::opamp::CONTENT_TYPE,
        _ => "application/json;charset=UTF-8",
    };
    let mut builder = Request::post(&path).header("content-type", content_type);
    if endpoint.signed() {
        let signed = deskfleet_proto::sign::sign(
            &boot.access_key,
            &boot.secret_key,
            "POST",
            &path,
            &[],
            &[
                ("Host".to_owned(), "localhost".to_owned()),
                ("Content-Type".to_owned(), content_type.to_owned()),
            ],
            &body,
            chrono::Utc::now(),
        );
        for (name, value) in signed.headers {
            if !name.eq_ignore_ascii_case("content-type") {
                builder = builder.header(name, value);
            }
        }
    } else {
        builder = builder.header("host", "localhost");
    }
    builder.body(Body::from(body)).unwrap()
}

/// A server's router on a fresh SQLite store (kept alive with its directory), its
/// bootstrap credentials and two imported desktops.
fn fixture() -> (
    tokio::runtime::Runtime,
    (tempfile::TempDir, Application),
    axum::Router,
    Bootstrap,
    Vec<String>,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.throttle.enabled = false;
    settings.packages.publish_bundled_monitor = false;
    let app = rt.block_on(Application::build(settings)).unwrap();
    let boot = app.bootstrap.clone().unwrap();
    let router = deskfleet_server::routes::router(app.state().clone());
    let desktops: Vec<String> = rt.block_on(async {
        let json = serde_json::to_vec(&serde_json::json!([
            {"computer_name": "fz-1", "ip_address": "10.9.0.1", "os_type": "Linux"},
            {"computer_name": "fz-2", "ip_address": "10.9.0.2", "os_type": "Linux"},
        ]))
        .unwrap();
        let project = deskfleet_core::ids::ProjectId::parse(boot.project_id.clone()).unwrap();
        deskfleet_server::admin::import_desktops(
            app.state().store.as_ref(),
            &project,
            &json,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id.into_string())
        .collect()
    });

    (rt, (dir, app), router, boot, desktops)
}

#[test]
fn request_bodies_never_get_a_server_error() {
    let (rt, _keep, router, boot, desktops) = fixture();
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<(String, u16), u32>::new());
    for (endpoint, default_cases) in [
        (Endpoint::BatchInstallAgent, 96),
        (Endpoint::JobAction, 48),
        (Endpoint::BatchDeleteSubJobs, 48),
        // Each well-formed login hashes a password (argon2): fewer cases.
        (Endpoint::CreateToken, 16),
        (Endpoint::OpampHttp, 32),
        (Endpoint::BatchListMetricData, 64),
        (Endpoint::BatchCreateAgentInvocations, 48),
        (Endpoint::ListAgentStatus, 32),
    ] {
        let mut runner = TestRunner::new(Config {
            cases: cases(default_cases),
            ..Config::default()
        });
        runner
            .run(&body_for(endpoint, &desktops), |body| {
                let sent = body.clone();
                let response = rt
                    .block_on(router.clone().oneshot(request(endpoint, &boot, body)))
                    .unwrap();
                let status = response.status();
                *seen
                    .borrow_mut()
                    .entry((format!("{endpoint:?}"), status.as_u16()))
                    .or_default() += 1;
                let bytes = rt
                    .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                    .unwrap();
                prop_assert!(
                    !status.is_server_error(),
                    "{endpoint:?} {status} for body {:?}: {}",
                    String::from_utf8_lossy(&sent),
                    String::from_utf8_lossy(&bytes)
                );
                if status.is_client_error() && !matches!(endpoint, Endpoint::OpampHttp) {
                    let json: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|e| TestCaseError::fail(format!("{endpoint:?} {status}: {e}")))?;
                    // `/v2` errors carry `error_code`; `/v3` ones have the Keystone shape.
                    match endpoint {
                        Endpoint::CreateToken => prop_assert!(
                            json["error"]["code"].as_u64() == Some(u64::from(status.as_u16())),
                            "{json}"
                        ),
                        _ => prop_assert!(json["error_code"].is_string(), "{json}"),
                    }
                    // An auth failure here would mean the body never reached its parser.
                    prop_assert!(
                        !(endpoint.signed() && status == 401),
                        "{endpoint:?}: signature refused: {json}"
                    );
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{endpoint:?}: {e}"));
    }
    // The bodies reached their handlers: the fuzzed installs were refused by validation,
    // and the same path accepts a well-formed one (whether a random list came out all
    // valid is left to chance, so it is not what the test leans on).
    let seen = seen.into_inner();
    println!("answers (endpoint, status) -> count: {seen:?}");
    assert!(
        seen.contains_key(&("BatchInstallAgent".to_owned(), 400)),
        "{seen:?}"
    );
    // The Cloud Eye bodies reached their handlers both ways: refused, and answered.
    for endpoint in [
        "BatchListMetricData",
        "BatchCreateAgentInvocations",
        "ListAgentStatus",
    ] {
        let answered = seen
            .iter()
            .any(|((e, status), _)| e == endpoint && (200..300).contains(status));
        let refused = seen.contains_key(&(endpoint.to_owned(), 400));
        assert!(answered && refused, "{endpoint}: {seen:?}");
    }
    let well_formed = serde_json::to_vec(&serde_json::json!({ "desktop_ids": desktops })).unwrap();
    let accepted = rt
        .block_on(
            router
                .clone()
                .oneshot(request(Endpoint::BatchInstallAgent, &boot, well_formed)),
        )
        .unwrap();
    assert_eq!(accepted.status(), 200);
}

/// A signed GET of `path` with `query` (unencoded pairs).
fn signed_get(boot: &Bootstrap, path: &str, query: &[(String, String)]) -> Request<Body> {
    let signed = deskfleet_proto::sign::sign(
        &boot.access_key,
        &boot.secret_key,
        "GET",
        path,
        query,
        &[("Host".to_owned(), "localhost".to_owned())],
        b"",
        chrono::Utc::now(),
    );
    let mut builder = Request::get(format!("{path}?{}", signed.query));
    for (name, value) in signed.headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).unwrap()
}

#[test]
fn metric_queries_never_get_a_server_error() {
    let (rt, _keep, router, boot, desktops) = fixture();
    let keys = prop_oneof![
        prop::sample::select(vec![
            "namespace",
            "metric_name",
            "dim.0",
            "dim.1",
            "dim.2",
            "dim.3",
            "filter",
            "period",
            "from",
            "to",
            "start",
            "limit",
            "order",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ];
    let values = prop_oneof![
        prop::sample::select(vec![
            "AGT.ECS".to_owned(),
            "cpu_usage".to_owned(),
            format!("instance_id,{}", desktops[0]),
            "mount_point,0123456789abcdef0123456789abcdef".to_owned(),
            "average".to_owned(),
            "300".to_owned(),
            "1".to_owned(),
            "1700000000000".to_owned(),
            "9999999999999999999".to_owned(),
            "-1".to_owned(),
        ]),
        "\\PC{0,40}",
    ];
    let paths = prop::sample::select(vec!["metric-data", "metrics"]);
    let mut runner = TestRunner::new(Config {
        cases: cases(128),
        ..Config::default()
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(
            &(paths, prop::collection::vec((keys, values), 0..10)),
            |(which, query)| {
                let path = format!("/V1.0/{}/{which}", boot.project_id);
                let response = rt
                    .block_on(router.clone().oneshot(signed_get(&boot, &path, &query)))
                    .unwrap();
                let status = response.status();
                *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
                let bytes = rt
                    .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                    .unwrap();
                prop_assert!(
                    !status.is_server_error(),
                    "{status} for {path} {query:?}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                let json: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("{status}: {e}")))?;
                if status.is_client_error() {
                    prop_assert!(json["error_code"].is_string(), "{json}");
                    prop_assert!(status != 401, "signature refused: {json}");
                }
                Ok(())
            },
        )
        .unwrap();
    let seen = seen.into_inner();
    println!("answers status -> count: {seen:?}");
    // Both outcomes were reached: queries refused by validation and queries answered.
    assert!(
        seen.contains_key(&400) && seen.contains_key(&200),
        "{seen:?}"
    );
}
