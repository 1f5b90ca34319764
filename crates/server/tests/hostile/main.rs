//! Hostile clients against a real server process over TLS: stalled uploads, slow and idle
//! connections, bytes that are not HTTP, and the certificate being replaced underneath.
//! Every test reads what a client would see (status, JSON error body, a closed socket) and,
//! where it is about resources, the server's resident memory from `/proc`.

#[allow(dead_code)]
#[path = "../fleet/harness.rs"]
mod harness;
mod raw;

use harness::{Server, eventually};
use raw::{Answer, Raw};
use std::time::{Duration, Instant};

/// Short deadlines, so that the tests wait seconds, not minutes.
const TIGHT: &str = "[http]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 2000\n\
                     idle_timeout_ms = 1500\nhandshake_timeout_ms = 1000\n";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[tokio::test]
async fn the_server_speaks_tls_with_its_own_ca_and_says_where_it_is() {
    let server = Server::start("").await;
    let endpoint = std::fs::read_to_string(server.dir.path().join("endpoint.url")).unwrap();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");

    // The CA in the data directory verifies the server under each loopback name.
    for name in ["localhost", "127.0.0.1"] {
        let mut raw = Raw::connect_as(&server, name).await.expect(name);
        let answer = raw.get("/healthz-not-a-route").await;
        assert_eq!(answer.status, 404, "{name}");
    }
    // Another CA does not: a client that trusts only it refuses the server.
    let stranger = tempfile::tempdir().unwrap();
    let settings = deskfleet_server::settings::Settings {
        data_dir: stranger.path().to_path_buf(),
        ..Default::default()
    };
    deskfleet_server::tls::prepare(&settings, "127.0.0.1:1".parse().unwrap()).unwrap();
    let refused = Raw::connect_with_ca(&server, &stranger.path().join("ca.pem"), "127.0.0.1").await;
    assert!(refused.is_err(), "a client trusting another CA must refuse");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let answer = Raw::plain(&server)
        .await
        .send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        answer.is_none(),
        "plain HTTP must not be answered: {answer:?}"
    );

    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "tls.key"] {
        let mode = std::fs::metadata(server.dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} must be private: {mode:o}");
    }
}

#[tokio::test]
async fn requests_that_are_not_http_get_the_json_error_body() {
    let server = Server::start("").await;
    let huge_header = format!(
        "GET /v2/p/desktops HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let cases: [(&[u8], u16); 5] = [
        (b"GET /v2/p/desktops HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\x02\r\n\r\n", 400),
        (
            b"POST /v2/p/desktops/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
            400,
        ),
        (huge_header.as_bytes(), 431),
        (long_uri.as_bytes(), 414),
        (b"BREW\x00 / HTTP/1.1\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let mut raw = Raw::connect(&server).await.unwrap();
        let answer = raw.send(request).await.expect("an answer");
        assert_eq!(answer.status, status, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["error_code"], "APIGW.0201", "{body}");
        assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
        let id = body["request_id"].as_str().expect("request_id");
        assert_eq!(answer.header("x-request-id"), Some(id));
    }

    // The unauthenticated password request is small: a large body is refused, not parsed.
    let big = "a".repeat(200_000);
    let mut raw = Raw::connect(&server).await.unwrap();
    let answer = raw
        .send(
            format!(
                "POST /v3/auth/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            )
            .as_bytes(),
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());

    // A body declared larger than the limit is refused before a byte of it is read.
    let mut raw = Raw::connect(&server).await.unwrap();
    let answer = raw
        .signed(
            &server,
            "POST",
            "/desktops/agents",
            &[],
            Some(20 * 1024 * 1024),
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.json()["error_code"], "APIGW.0201");
}

#[tokio::test]
async fn stalled_uploads_hold_little_memory_and_are_cut_at_the_deadline() {
    let server = Server::start(TIGHT).await;
    let pid = server.pid();
    // Warm up: the first requests allocate what every later one reuses.
    for _ in 0..3 {
        let mut raw = Raw::connect(&server).await.unwrap();
        raw.signed(&server, "GET", "/desktops", &[], None)
            .await
            .unwrap();
    }
    let before = rss_kib(pid);

    // 40 uploads that declare 12 MiB, send 4 MiB and stall: 20 with no credential at all,
    // 20 with a known access key but a signature that cannot match.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..40 {
        let mut raw = Raw::connect(&server).await.unwrap();
        let head = if i % 2 == 0 {
            raw::unsigned_upload_head(12 * 1024 * 1024)
        } else {
            raw::badly_signed_upload_head(&server, 12 * 1024 * 1024)
        };
        raw.write(head.as_bytes()).await;
        raw.write_for(&vec![b'x'; 4 * 1024 * 1024], Duration::from_secs(1))
            .await;
        stalled.push(raw);
    }
    let during = rss_kib(pid);
    let grown_mib = during.saturating_sub(before) as f64 / 1024.0;
    println!(
        "stalled uploads: resident before {before} KiB, with 40 stalled {during} KiB (+{grown_mib:.1} MiB)"
    );
    assert!(
        grown_mib < 50.0,
        "40 stalled uploads grew the server by {grown_mib:.1} MiB"
    );

    // Each is answered (401 at once, or 408/503) and closed, none later than the deadlines.
    let mut statuses = Vec::new();
    for mut raw in stalled {
        let answer = raw.read_answer(Duration::from_secs(10)).await;
        statuses.push(answer.as_ref().map(|a| a.status));
        assert!(
            raw.closed_within(Duration::from_secs(10)).await,
            "left open"
        );
    }
    let elapsed = started.elapsed();
    println!("stalled uploads: answers {statuses:?}, all closed after {elapsed:?}");
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s, Some(401) | Some(408) | Some(503))),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(401)).count(),
        20,
        "requests without a credential are refused before their body: {statuses:?}"
    );
    // Nothing stays: memory returns near where it was.
    let after = eventually(10, "memory released", || async {
        let now = rss_kib(pid);
        (now.saturating_sub(before) < 20 * 1024).then_some(now)
    })
    .await;
    println!("stalled uploads: resident after {after} KiB");
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_signed_requests_still_served() {
    let server = Server::start(&format!("{TIGHT}max_connections = 300\n")).await;
    raise_descriptor_limit();

    // Slowloris: five connections that send a header byte every 300 ms, never finishing.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut raw = Raw::connect(&server).await.unwrap();
        raw.write(b"GET /v2/p/desktops HTTP/1.1\r\nHost: x\r\n")
            .await;
        slow.push(raw);
    }
    // A thousand connections that connect and say nothing (no TLS handshake even).
    let mut idle = Vec::new();
    for _ in 0..1000 {
        match tokio::net::TcpStream::connect(server.addr()).await {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connecting: {e}"),
        }
    }
    // Signed requests are served meanwhile, each on a new connection.
    let started = Instant::now();
    let mut served = 0;
    for _ in 0..20 {
        let mut raw = Raw::connect(&server).await.expect("a new connection");
        let answer = raw
            .signed(&server, "GET", "/desktops", &[], None)
            .await
            .expect("answered");
        assert_eq!(answer.status, 200, "{}", answer.text());
        served += 1;
    }
    println!(
        "idle flood: {served} signed requests served among 1000 idle and 5 slow connections in {:?}",
        started.elapsed()
    );
    // The slow ones are cut by the header deadline despite their trickle.
    for raw in &mut slow {
        let closed = raw
            .trickle_until_closed(
                b"X-A: b\r\n",
                Duration::from_millis(300),
                Duration::from_secs(5),
            )
            .await;
        assert!(
            closed,
            "a slowloris connection outlived the header deadline"
        );
    }
    // The idle ones are closed by the server (handshake deadline or eviction).
    for stream in &mut idle {
        assert!(
            raw::tcp_closed_within(stream, Duration::from_secs(5)).await,
            "an idle connection stayed open"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let server = Server::start("").await;
    let mut open = Raw::connect(&server).await.unwrap();
    let first = open.peer_leaf();
    assert_eq!(open.get("/nope").await.status, 404);

    // Issue a new leaf into the data directory, as an operator renewing it would.
    let settings = deskfleet_server::settings::Settings {
        data_dir: server.dir.path().to_path_buf(),
        ..Default::default()
    };
    deskfleet_server::tls::prepare(&settings, server.addr()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let renewed = eventually(10, "the new certificate served", || async {
        let raw = Raw::connect(&server).await.ok()?;
        (raw.peer_leaf() != first).then_some(raw)
    })
    .await;
    drop(renewed);
    // The connection opened before the reload still works, with its old certificate.
    assert_eq!(open.get("/nope").await.status, 404);
    assert!(server.log().contains("certificate reloaded"));
}

#[tokio::test]
async fn tls_off_is_said_in_the_endpoint_and_the_log() {
    let server = Server::start("[tls]\nenabled = false\n").await;
    let endpoint = std::fs::read_to_string(server.dir.path().join("endpoint.url")).unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(server.log().contains("TLS is off"), "{}", server.log());
    let answer = Raw::plain(&server)
        .await
        .send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("plain HTTP answered");
    assert_eq!(answer.status, 404);
    let _ = Answer::text;
}

fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}
