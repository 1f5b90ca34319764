//! A real desktop's figures through Cloud Eye's metric API: a real guest runs the real
//! monitoring agent, and what it reported (as the monitor API shows it) comes back as
//! `AGT.ECS` points from ShowMetricData, and its series from ListMetrics; another
//! project sees none of it.

use crate::harness::{Guest, Server, eventually};
use crate::{FAST, desktops_enrolled, job_done, q};
use deskfleet_client::{Client, Credentials};
use reqwest::Method;
use serde_json::Value;

async fn ces_get(client: &Client, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let raw = client
        .send_under("V1.0", Method::GET, &[path], &q(query), None, &[])
        .await
        .unwrap();
    let body = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
    (raw.status, body)
}

#[tokio::test]
async fn a_desktops_real_figures_come_back_through_show_metric_data() {
    let server = Server::start(&format!(
        "{FAST}[metric_data]\nflush_interval_ms = 100\nminute_grace_secs = 0\n\
         [throttle]\nenabled = false\n"
    ))
    .await;
    let token = server.enrollment_token();
    let _guest = Guest::start(&server, &token, "ces-desk");
    let ids = desktops_enrolled(&server, 1).await;
    let desktop = ids[0].clone();
    let client = server.client();
    let job = client.batch_install_agent(&ids).await.unwrap().job_id;
    let info = job_done(&server, &job, 90).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}\n{}", server.log());

    let dim0 = format!("instance_id,{desktop}");
    // A report the monitor API shows...
    let report = eventually(30, "a report in the monitor API", || async {
        let raw = client
            .send_v2(Method::GET, &["desktop-monitor", &desktop], &[], None, &[])
            .await
            .ok()?;
        let latest: Value = serde_json::from_slice(&raw.body).ok()?;
        latest["metrics"]["collected_at_ms"].as_i64()?;
        Some(latest["metrics"].clone())
    })
    .await;
    let at = report["collected_at_ms"].as_i64().unwrap();
    let used = report["memory"]["used_percent"].as_f64().unwrap();
    // ...counts in the raw minute it falls in, written once that minute has closed.
    let minute = at / 60_000 * 60_000;
    let (from, to) = (minute.to_string(), (minute + 60_000).to_string());
    let point = |filter: &'static str, period: &'static str| {
        let (client, dim0, from, to) = (&client, &dim0, &from, &to);
        async move {
            let (status, body) = ces_get(
                client,
                "metric-data",
                &[
                    ("namespace", "AGT.ECS"),
                    ("metric_name", "mem_usedPercent"),
                    ("dim.0", dim0),
                    ("filter", filter),
                    ("period", period),
                    ("from", from),
                    ("to", to),
                ],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["datapoints"].as_array()?.first().cloned()
        }
    };
    let raw = eventually(100, "the report's minute written", || point("average", "1")).await;
    assert_eq!(raw["timestamp"], minute, "a raw point is a minute: {raw}");
    assert_eq!(raw["unit"], "%");
    let max = point("max", "60").await.unwrap();
    let min = point("min", "60").await.unwrap();
    let avg = point("average", "60").await.unwrap();
    assert_eq!(avg["average"], raw["average"], "period 1 and 60 agree");
    let (lo, hi) = (min["min"].as_f64().unwrap(), max["max"].as_f64().unwrap());
    assert!(
        lo <= used && used <= hi,
        "the report's {used} lies in its minute's {lo}..{hi}"
    );

    // A 5-minute average lies within the raw values it covers.
    let now = crate::harness::now_ms();
    let (from, to) = ((now - 3_600_000).to_string(), (now + 60_000).to_string());
    let series = |metric: &'static str, filter: &'static str, period: &'static str| {
        let (client, dim0, from, to) = (&client, &dim0, &from, &to);
        async move {
            let (status, body) = ces_get(
                client,
                "metric-data",
                &[
                    ("namespace", "AGT.ECS"),
                    ("metric_name", metric),
                    ("dim.0", dim0),
                    ("filter", filter),
                    ("period", period),
                    ("from", from),
                    ("to", to),
                ],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["datapoints"].as_array().cloned().unwrap_or_default()
        }
    };
    let raw: Vec<f64> = series("cpu_usage", "average", "1")
        .await
        .iter()
        .filter_map(|p| p["average"].as_f64())
        .collect();
    assert!(!raw.is_empty());
    let avg = series("cpu_usage", "average", "300").await;
    let last = avg.last().expect("a 5-minute point");
    assert_eq!(last["timestamp"].as_i64().unwrap() % 300_000, 0);
    let lo = raw.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = raw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let value = last["average"].as_f64().unwrap();
    assert!(
        lo - 1e-9 <= value && value <= hi + 1e-9,
        "{value} in {lo}..{hi}"
    );

    // The CLI shows the same raw minutes, the desktop named by its computer name.
    let data_dir = server.dir.path().to_str().unwrap();
    let cli = |output: &'static [&'static str]| {
        let out = std::process::Command::new(crate::harness::bin("deskfleet"))
            .args([
                "--data-dir",
                data_dir,
                "metrics",
                "ces-desk",
                "--period",
                "1",
            ])
            .args(["--since", "1h"])
            .args(output)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown: Value = serde_json::from_str(&cli(&["-o", "json"])).unwrap();
    let shown: Vec<f64> = shown["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert!(
        shown.len() >= raw.len() && shown[..raw.len()] == raw[..],
        "the CLI's {shown:?} begin with the API's {raw:?}"
    );
    let table = cli(&[]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("TIMESTAMP") && header.contains("VALUE") && header.contains("UNIT"),
        "{table}"
    );
    assert!(table.lines().count() > raw.len(), "{table}");

    // ListMetrics: the desktop's series, disks with a 32-hex mount_point id.
    let (status, listed) = ces_get(&client, "metrics", &[("dim.0", &dim0)]).await;
    assert_eq!(status, 200, "{listed}");
    let metrics = listed["metrics"].as_array().unwrap();
    let names: Vec<&str> = metrics
        .iter()
        .map(|m| m["metric_name"].as_str().unwrap())
        .collect();
    for name in [
        "cpu_usage",
        "cpu_usage_user",
        "mem_usedPercent",
        "load_average5",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let disk = metrics
        .iter()
        .find(|m| m["metric_name"] == "disk_usedPercent")
        .expect("a disk series");
    let mount = disk["dimensions"][1]["value"].as_str().unwrap();
    assert_eq!(disk["dimensions"][1]["name"], "mount_point");
    assert!(mount.len() == 32 && mount.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(listed["meta_data"]["total"], metrics.len());

    // A bad period is ces.0013 in both shapes of the v1 error body.
    let (status, body) = ces_get(
        &client,
        "metric-data",
        &[
            ("namespace", "AGT.ECS"),
            ("metric_name", "cpu_usage"),
            ("dim.0", &dim0),
            ("filter", "average"),
            ("period", "7"),
            ("from", &from),
            ("to", &to),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], "ces.0013");
    assert_eq!(body["message"]["code"], "ces.0013");

    // Another project sees nothing of this desktop.
    let other = server.admin(&["projects", "create", "--name", "ces-other"]);
    let other_id = other["project_id"].as_str().unwrap().to_owned();
    server.admin(&[
        "users",
        "create",
        "--name",
        "ces-other-admin",
        "--project",
        &other_id,
        "--role",
        "admin",
    ]);
    let key = server.admin(&[
        "access-keys",
        "create",
        "--user",
        "ces-other-admin",
        "--project",
        &other_id,
    ]);
    let outsider = Client::with_options(
        &server.endpoint,
        &other_id,
        Credentials::AkSk {
            access_key: key["access_key"].as_str().unwrap().to_owned(),
            secret_key: key["secret_key"].as_str().unwrap().to_owned(),
        },
        &server.options(),
    )
    .unwrap();
    let (status, body) = ces_get(
        &outsider,
        "metric-data",
        &[
            ("namespace", "AGT.ECS"),
            ("metric_name", "cpu_usage"),
            ("dim.0", &dim0),
            ("filter", "average"),
            ("period", "1"),
            ("from", &from),
            ("to", &to),
        ],
    )
    .await;
    assert_eq!(
        (status, body["datapoints"].clone()),
        (200, Value::Array(vec![]))
    );
    let (status, body) = ces_get(&outsider, "metrics", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["meta_data"]["total"], 0);
}
