//! `GET /metrics`: the Prometheus text format, request counts by route template, job gauges
//! from the store, and the optional bearer token.

use crate::helpers::TestApp;
use std::collections::BTreeMap;

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict reader of the sample lines of the Prometheus text format (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let Some((name, rest)) = series.split_once('{') else {
                return (series.to_owned(), BTreeMap::new(), value);
            };
            let mut labels = BTreeMap::new();
            let mut rest = rest.strip_suffix('}').expect("labels end with }");
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("a closing quote") {
                        (_, '\\') => match chars.next().expect("an escaped char").1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_owned(), value);
                rest = after[end + 1..].trim_start_matches(',');
            }
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// The value of the sample `name` whose labels include `want` (0 when there is none).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
    found.first().copied().unwrap_or(0.0)
}

async fn scrape(app: &TestApp, bearer: Option<&str>) -> reqwest::Response {
    let mut request = app.http().get(format!("{}/metrics", app.endpoint()));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn samples(app: &TestApp, bearer: Option<&str>) -> (String, Vec<Sample>) {
    let r = scrape(app, bearer).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

const INSTALL_ROUTE: &str = "/v2/{project_id}/desktops/agents";
const INSTALL: [(&str, &str); 3] = [
    ("method", "POST"),
    ("route", INSTALL_ROUTE),
    ("status", "200"),
];

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_jobs_by_state() {
    // Counted at every scrape, so that the second scrape sees the jobs just made.
    let app = TestApp::spawn_with(|s| s.metrics.job_count_interval_ms = 0).await;
    let desktops = app.import_desktops(3).await;
    let (_, before) = samples(&app, None).await;

    let admin = app.admin();
    admin.batch_install_agent(&desktops).await.unwrap();
    admin.batch_install_agent(&desktops[..1]).await.unwrap();
    let unmatched = app
        .http()
        .get(format!("{}/no/such/{}", app.endpoint(), "path-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(unmatched.status(), 404);

    let (text, after) = samples(&app, None).await;
    let delta =
        |name: &str, want: &[(&str, &str)]| value(&after, name, want) - value(&before, name, want);
    assert_eq!(delta("deskfleet_http_requests_total", &INSTALL), 2.0);
    assert_eq!(
        delta(
            "deskfleet_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    // A histogram, with the request in its +Inf bucket and a positive sum.
    assert!(text.contains("# TYPE deskfleet_http_request_duration_seconds histogram"));
    let mut inf = INSTALL.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        delta("deskfleet_http_request_duration_seconds_bucket", &inf),
        2.0
    );
    assert!(delta("deskfleet_http_request_duration_seconds_sum", &INSTALL) > 0.0);
    // Bounded cardinality: no raw path or id ever becomes a label value.
    for (_, labels, _) in &after {
        for v in labels.values() {
            assert!(
                !v.contains(app.project()) && !v.contains("path-123"),
                "raw path in a label: {v}"
            );
        }
    }
    // No guest is connected: every sub-job waits (3 + 1), and so do both jobs.
    assert_eq!(
        value(&after, "deskfleet_sub_jobs", &[("state", "WAITING")]),
        4.0
    );
    assert_eq!(
        value(&after, "deskfleet_sub_jobs", &[("state", "SUCCESS")]),
        0.0
    );
    assert_eq!(
        value(&after, "deskfleet_jobs", &[("state", "WAITING")]),
        2.0
    );
    for state in ["RUNNING", "SUCCESS", "FAIL"] {
        assert!(
            text.contains(&format!("deskfleet_jobs{{state=\"{state}\"}} 0")),
            "every job state is listed: {state}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_behind_a_bearer_token_answer_only_that_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "s3cret-scrape-token\n").unwrap();
    let path = token_file.clone();
    let app = TestApp::spawn_with(move |s| s.metrics.bearer_token_file = Some(path)).await;

    for bearer in [None, Some("wrong"), Some("s3cret-scrape-toke"), Some("")] {
        let r = scrape(&app, bearer).await;
        assert_eq!(r.status(), 401, "{bearer:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"deskfleet-metrics\""
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error_code"], "APIGW.0301", "{body}");
        assert!(body["request_id"].is_string(), "{body}");
    }
    let (text, _) = samples(&app, Some("s3cret-scrape-token")).await;
    assert!(text.contains("deskfleet_jobs{state=\"WAITING\"}"), "{text}");

    // Rotated on disk: the next scrape takes the new token, and the old one no longer works.
    std::fs::write(&token_file, "rotated").unwrap();
    assert_eq!(
        scrape(&app, Some("s3cret-scrape-token")).await.status(),
        401
    );
    assert_eq!(scrape(&app, Some("rotated")).await.status(), 200);

    // An empty file never means "open".
    std::fs::write(&token_file, "").unwrap();
    assert_eq!(scrape(&app, None).await.status(), 500);
    assert_eq!(scrape(&app, Some("")).await.status(), 500);
    app.stop().await;
}

#[test]
fn the_reader_handles_escapes_and_braces_in_label_values() {
    let s = parse("# HELP x y\nm{a=\"/v2/{p}/x\",b=\"q\\\"u\\\\o\"} 3\nn 1.5\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].1["a"], "/v2/{p}/x");
    assert_eq!(s[0].1["b"], "q\"u\\o");
    assert_eq!(value(&s, "m", &[("a", "/v2/{p}/x")]), 3.0);
    assert_eq!(value(&s, "n", &[]), 1.5);
}

#[tokio::test]
async fn a_flood_of_scrapes_counts_the_jobs_once_per_interval() {
    // `/metrics` is open by default: scraping it must not be a way to load the database.
    let app = TestApp::spawn_with(|s| s.metrics.job_count_interval_ms = 60_000).await;
    for _ in 0..20 {
        samples(&app, None).await;
    }
    let (_, last) = samples(&app, None).await;
    let counted = value(
        &last,
        "deskfleet_store_operation_duration_seconds_count",
        &[("op", "count_by_state")],
    );
    assert_eq!(
        counted, 1.0,
        "21 scrapes within the interval counted {counted} times"
    );
    assert!(value(&last, "deskfleet_jobs", &[("state", "SUCCESS")]) >= 0.0);
}
