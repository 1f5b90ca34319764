//! The fleet channel against hostile peers: floods of bad credentials, bodies built to
//! hurt, silent connections, stolen instance uids, and a server going away under its
//! guests. Real servers and real sockets throughout.

use crate::harness::{Guest, Local, Server, Ws, eventually, open_ws};
use crate::{FAST, desktops_enrolled, job_done};
use deskfleet_proto::opamp::{
    self as op, AgentCapabilities, AgentToServer, ServerToAgent, decode_ws_frame, encode_ws_frame,
};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BOGUS_BEARERS: [&str; 3] = [
    "DFD1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "DFE1-not-a-token",
    "garbage",
];

fn description(host: &str, ip: &str) -> op::AgentDescription {
    op::AgentDescription {
        identifying_attributes: vec![op::KeyValue::string("service.name", "hostile-test")],
        non_identifying_attributes: vec![
            op::KeyValue::string("host.name", host),
            op::KeyValue::string("os.type", "linux"),
            op::KeyValue::string("host.ip", ip),
        ],
    }
}

/// A first message as a guest sends it: everything about itself, and every capability
/// that gets it a credential and work.
pub(crate) fn full_state(uid: &[u8], host: &str, ip: &str) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        agent_description: Some(description(host, ip)),
        capabilities: AgentCapabilities::bits(&[
            AgentCapabilities::ReportsStatus,
            AgentCapabilities::AcceptsPackages,
            AgentCapabilities::ReportsPackageStatuses,
            AgentCapabilities::AcceptsOpAmpConnectionSettings,
            AgentCapabilities::ReportsHeartbeat,
        ]),
        ..Default::default()
    }
}

pub(crate) fn heartbeat(uid: &[u8], seq: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        ..Default::default()
    }
}

fn fresh_uid() -> Vec<u8> {
    uuid::Uuid::now_v7().as_bytes().to_vec()
}

pub(crate) fn offered_credential(reply: &ServerToAgent) -> Option<String> {
    reply
        .connection_settings
        .as_ref()?
        .offered_bearer()
        .map(str::to_string)
}

/// One plain-HTTP OpAMP exchange: the status, and the decoded answer when it is 200.
pub(crate) async fn post(
    url: &str,
    bearer: Option<&str>,
    msg: &AgentToServer,
) -> (u16, Option<ServerToAgent>) {
    let mut request = crate::harness::http_for(url)
        .post(url)
        .header("content-type", op::CONTENT_TYPE)
        .body(msg.encode_to_vec());
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    let reply = (status == 200).then(|| ServerToAgent::decode(body).expect("a ServerToAgent"));
    (status, reply)
}

/// Asserts a `/v1/*` error answer: `status`, the JSON error body with `code`, and the
/// request id. Returns the body.
async fn assert_json_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(request_id.is_some(), "no X-Request-Id on {status}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if code.starts_with("APIGW.") {
        assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "{body}");
    }
    body
}

pub(crate) async fn send(ws: &mut Ws, msg: &AgentToServer) {
    ws.send(Message::Binary(encode_ws_frame(msg).into()))
        .await
        .unwrap();
}

/// The next OpAMP answer on `ws` (pings and pongs skipped).
pub(crate) async fn answer(ws: &mut Ws) -> ServerToAgent {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => return decode_ws_frame(&data).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// Waits (at most `secs`) for the server to close `ws`; returns the close code.
async fn closed_by_server(ws: &mut Ws, secs: u64) -> Option<CloseCode> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed instead of closing: {e}"),
                None => panic!("the connection ended without a Close"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .expect("the server closed the connection in time")
}

// ---------------------------------------------------------------------------- admission

#[tokio::test]
async fn a_flood_of_bogus_bearers_refuses_no_legitimate_guest() {
    let server = Server::start("[fleet]\nmax_new_connections_per_sec = 10\n").await;
    let token = server.enrollment_token();
    let url = server.opamp_url();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let not_401 = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (url, stop, attempts, not_401) =
            (url.clone(), stop.clone(), attempts.clone(), not_401.clone());
        flood.spawn(async move {
            let http = crate::harness::http_for(&url);
            let bearer = BOGUS_BEARERS[i % BOGUS_BEARERS.len()];
            while !stop.load(Ordering::Relaxed) {
                let status = if i % 2 == 0 {
                    match open_ws(&url, bearer).await {
                        Ok(_) => 101,
                        Err((status, _)) => status,
                    }
                } else {
                    http.post(&url)
                        .bearer_auth(bearer)
                        .body(vec![0u8; 64])
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                };
                attempts.fetch_add(1, Ordering::Relaxed);
                if status != 401 {
                    not_401.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // The flood is well past the admission rate before the guests come.
    eventually(30, "the flood under way", || async {
        (attempts.load(Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    let mut guests = Vec::new();
    for n in 0..8 {
        match open_ws(&url, &token).await {
            Ok(ws) => guests.push(ws),
            Err((status, body)) => panic!("legitimate guest {n} refused: {status} {body}"),
        }
    }
    let during = attempts.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    flood.join_all().await;
    assert_eq!(
        not_401.load(Ordering::Relaxed),
        0,
        "every bogus request gets 401"
    );
    assert!(during >= 100, "{during} flood requests");
    // A bogus bearer gets the JSON error of the gateway.
    let response = crate::harness::http_for(&url)
        .post(&url)
        .bearer_auth(BOGUS_BEARERS[0])
        .send()
        .await
        .unwrap();
    assert_json_error(response, 401, "APIGW.0301").await;
    assert_eq!(guests.len(), 8);
}

#[tokio::test]
async fn an_unauthenticated_body_is_refused_before_it_is_read() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let url = server.opamp_url();
    let http = crate::harness::http_for(&url);
    // 32 MiB of zeros in about 32 KiB: inflated, far over the message limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..32 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let garbage = b"\x1f\x8b this is not gzip, nor protobuf".to_vec();
    let gzip_post = |bearer: Option<&str>, body: &[u8]| {
        let mut request = http
            .post(&url)
            .header("content-type", op::CONTENT_TYPE)
            .header("content-encoding", "gzip")
            .body(body.to_vec());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    for bearer in [None, Some(BOGUS_BEARERS[0]), Some(BOGUS_BEARERS[1])] {
        let started = Instant::now();
        let response = gzip_post(bearer, &bomb).await.unwrap();
        assert_json_error(response, 401, "APIGW.0301").await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?} for a refusal",
            started.elapsed()
        );
        // A body that would fail to decode is not decoded either: 401, not 400.
        let response = gzip_post(bearer, &garbage).await.unwrap();
        assert_json_error(response, 401, "APIGW.0301").await;
    }
    // Authenticated, the same bodies are decoded, within bounds.
    let response = gzip_post(Some(&token), &bomb).await.unwrap();
    assert_json_error(response, 413, "APIGW.0201").await;
    let response = gzip_post(Some(&token), &garbage).await.unwrap();
    assert_json_error(response, 400, "WKS.0001").await;
    // Nothing was enrolled by any of it.
    assert_eq!(
        server
            .client()
            .list_desktops(&[])
            .await
            .unwrap()
            .total_count,
        0
    );
}

#[tokio::test]
async fn every_fleet_error_carries_the_json_error_body() {
    let server = Server::start("[fleet]\nmax_new_connections_per_sec = 1\n").await;
    let token = server.enrollment_token();
    let url = server.opamp_url();
    let http = crate::harness::http_for(&url);

    // 401: no bearer, on both routes.
    assert_json_error(http.post(&url).send().await.unwrap(), 401, "APIGW.0301").await;
    let package_url = format!("{}/v1/packages/no-such-package", server.endpoint);
    assert_json_error(
        http.get(&package_url).send().await.unwrap(),
        401,
        "APIGW.0301",
    )
    .await;
    // 403: an enrollment token does not download packages.
    let response = http
        .get(&package_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_json_error(response, 403, "WKS.0403").await;
    // 404: an unknown package, to an enrolled desktop.
    let (status, reply) = post(
        &url,
        Some(&token),
        &full_state(&fresh_uid(), "json-errors", "10.7.0.1"),
    )
    .await;
    assert_eq!(status, 200);
    let credential = offered_credential(&reply.unwrap()).expect("a credential");
    let response = http
        .get(&package_url)
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_json_error(response, 404, "WKS.0202").await;
    // 400: not an OpAMP message.
    let response = http
        .post(&url)
        .bearer_auth(&credential)
        .body(b"\xff\xff\xff not protobuf".to_vec())
        .send()
        .await
        .unwrap();
    assert_json_error(response, 400, "WKS.0001").await;
    // 413: a body over the message limit.
    let response = http
        .post(&url)
        .bearer_auth(&credential)
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_json_error(response, 413, "APIGW.0201").await;
    // 503 with Retry-After: one new connection a second is admitted; the next is not.
    let mut refused = None;
    for _ in 0..5 {
        if let Err((status, body)) = open_ws(&url, &token).await {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a connection refused at the admission rate");
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], "APIGW.0201", "{body}");
    let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
    let status = response.status().as_u16();
    if status == 503 {
        assert!(response.headers().contains_key("retry-after"));
        assert_json_error(response, 503, "APIGW.0201").await;
    } else {
        // Admitted, but a plain GET is no WebSocket upgrade.
        assert_json_error(response, 400, "WKS.0001").await;
    }
}

// ------------------------------------------------------------------- silent connections

#[tokio::test]
async fn a_silent_websocket_is_closed_after_three_heartbeats_and_goes_offline() {
    let server = Local::start(|s| s.fleet.heartbeat_secs = 1).await;
    let token = server.enrollment_token().await;
    let project =
        deskfleet_core::ids::ProjectId::parse(server.bootstrap.project_id.clone()).unwrap();
    let connect = |host: &'static str| {
        let (url, token) = (server.opamp_url(), token.clone());
        async move {
            let uid = fresh_uid();
            let mut ws = open_ws(&url, &token).await.unwrap();
            send(&mut ws, &full_state(&uid, host, "10.8.0.1")).await;
            let reply = answer(&mut ws).await;
            assert!(offered_credential(&reply).is_some());
            (ws, uid)
        }
    };
    let (mut silent, silent_uid) = connect("silent").await;
    let last_sent = Instant::now();
    let (mut chatty, chatty_uid) = connect("chatty").await;
    let desktop = |uid: Vec<u8>| {
        let (store, project) = (server.state.store.clone(), project.clone());
        async move {
            store
                .find_desktop_by_instance_uid(&project, &hex::encode(uid))
                .await
                .unwrap()
                .unwrap()
                .desktop
                .id
        }
    };
    let silent_id = desktop(silent_uid).await;
    let chatty_id = desktop(chatty_uid.clone()).await;
    assert!(server.state.fleet.is_connected(&silent_id));

    // One guest keeps talking at its heartbeat; the other says nothing more.
    let talking = tokio::spawn(async move {
        for seq in 1..=10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            send(&mut chatty, &heartbeat(&chatty_uid, seq)).await;
            answer(&mut chatty).await;
        }
        chatty
    });
    let code = closed_by_server(&mut silent, 10).await;
    let silent_for = last_sent.elapsed();
    assert_eq!(code, Some(CloseCode::Normal));
    assert!(
        silent_for >= Duration::from_millis(2900),
        "closed after {silent_for:?}, before three heartbeat intervals"
    );
    assert!(
        !server.state.fleet.is_connected(&silent_id),
        "the silent desktop is offline once closed"
    );
    // The one that talks is still there after more than three intervals.
    let _chatty = talking.await.expect("a guest that talks is not closed");
    assert!(server.state.fleet.is_connected(&chatty_id));
}

// -------------------------------------------------------------------------- shutdown

#[tokio::test]
async fn shutdown_closes_every_fleet_connection_with_going_away() {
    let mut server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let guests: Vec<Guest> = (0..2)
        .map(|i| Guest::start(&server, &token, &format!("leaving-{i}")))
        .collect();
    desktops_enrolled(&server, 2).await;
    // Each guest reconnects with its new credential after enrolling: wait for that
    // second connection, so that the shutdown finds every guest connected.
    for guest in &guests {
        eventually(30, "the guest connected with its credential", || async {
            (guest.log().matches(" connected ").count() >= 2).then_some(())
        })
        .await;
    }
    let uid = fresh_uid();
    let mut raw = open_ws(&server.opamp_url(), &token).await.unwrap();
    send(&mut raw, &full_state(&uid, "leaving-raw", "10.6.0.1")).await;
    answer(&mut raw).await;

    let took = server
        .terminate(15)
        .expect("the server stops within 15 s with guests connected");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(closed_by_server(&mut raw, 5).await, Some(CloseCode::Away));
    for guest in &guests {
        eventually(10, "the guest told of the shutdown", || async {
            guest
                .log()
                .contains("the server is shutting down")
                .then_some(())
        })
        .await;
    }
}

/// Enrolls a hand-driven desktop, then connects it with its credential as a guest does;
/// returns that connection and the desktop's uid.
async fn raw_desktop(server: &Server, token: &str, host: &str) -> (Ws, Vec<u8>) {
    let mut uid = fresh_uid();
    let mut ws = open_ws(&server.opamp_url(), token).await.unwrap();
    send(&mut ws, &full_state(&uid, host, "10.7.0.1")).await;
    let reply = answer(&mut ws).await;
    if let Some(id) = &reply.agent_identification {
        uid = id.new_instance_uid.clone();
    }
    let credential = offered_credential(&reply).expect("a credential");
    let _ = ws.close(None).await;
    let mut ws = open_ws(&server.opamp_url(), &credential).await.unwrap();
    // This machine's platform, so that the published monitor is offered.
    let mut first = full_state(&uid, host, "10.7.0.1");
    if let Some(description) = &mut first.agent_description {
        let arch = op::KeyValue::string("host.arch", std::env::consts::ARCH);
        description.non_identifying_attributes.push(arch);
    }
    send(&mut ws, &first).await;
    answer(&mut ws).await;
    (ws, uid)
}

#[tokio::test]
async fn a_draining_server_lets_the_install_in_flight_finish_and_closes_idle_connections_at_once() {
    let mut server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let (mut busy, busy_uid) = raw_desktop(&server, &token, "drain-busy").await;
    let busy_id = desktops_enrolled(&server, 1).await.remove(0);
    let (mut idle, _) = raw_desktop(&server, &token, "drain-idle").await;
    desktops_enrolled(&server, 2).await;
    let job = server
        .client()
        .batch_install_agent(std::slice::from_ref(&busy_id))
        .await
        .unwrap()
        .job_id;
    let offered = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), busy.next()).await;
        let Ok(Some(Ok(Message::Binary(frame)))) = frame else {
            panic!("no offer came ({frame:?}):\n{}", server.log());
        };
        let reply: ServerToAgent = decode_ws_frame(&frame).unwrap();
        if let Some(available) = reply.packages_available {
            break available.packages.into_values().next().unwrap().version;
        }
    };

    let stopping = tokio::task::spawn_blocking(move || {
        let took = server.terminate(60);
        (server, took)
    });
    // The idle desktop is sent away at once, to reconnect elsewhere.
    assert_eq!(closed_by_server(&mut idle, 10).await, Some(CloseCode::Away));
    // The busy one is still served: it reports the end of its install, which is recorded,
    // and only then is it sent away too.
    let mut statuses = std::collections::BTreeMap::new();
    statuses.insert(
        "deskfleet-monitor".to_string(),
        op::PackageStatus {
            name: "deskfleet-monitor".into(),
            agent_has_version: offered.clone(),
            server_offered_version: offered,
            status: op::PackageStatusEnum::Installed as i32,
            ..Default::default()
        },
    );
    let report = AgentToServer {
        instance_uid: busy_uid,
        sequence_num: 2,
        package_statuses: Some(op::PackageStatuses {
            packages: statuses,
            ..Default::default()
        }),
        ..Default::default()
    };
    send(&mut busy, &report).await;
    assert!(answer(&mut busy).await.error_response.is_none());
    assert_eq!(closed_by_server(&mut busy, 10).await, Some(CloseCode::Away));
    let (mut server, took) = stopping.await.unwrap();
    assert!(took.is_some(), "the server stopped once its install ended");

    server.restart().await;
    let info = job_done(&server, &job, 10).await;
    assert_eq!(info.status, "SUCCESS", "{info:#?}");
}

// ------------------------------------------------------------------------ enrollment

#[tokio::test]
async fn an_enrollment_token_cannot_take_over_an_enrolled_desktop() {
    let server = Server::start(FAST).await;
    let token = server.enrollment_token();
    let mut victim = Guest::start(&server, &token, "victim-pc");
    victim.enrolled().await;
    let ids = desktops_enrolled(&server, 1).await;
    let (victim_uid, victim_credential) = victim.identity();
    let victim_credential = victim_credential.unwrap();
    let victim_uid = hex::decode(victim_uid).unwrap();

    // The uid from the guest's log, the victim's host name, a project enrollment token.
    let url = server.opamp_url();
    let (status, reply) = post(
        &url,
        Some(&token),
        &full_state(&victim_uid, "victim-pc", "10.5.0.1"),
    )
    .await;
    assert_eq!(status, 200);
    let reply = reply.unwrap();
    let new_uid = reply
        .agent_identification
        .as_ref()
        .expect("a new identity for a known uid")
        .new_instance_uid
        .clone();
    assert_ne!(new_uid, victim_uid);
    let stolen = offered_credential(&reply).expect("a credential of its own");
    assert_ne!(stolen, victim_credential);
    let after = desktops_enrolled(&server, 2).await;
    assert!(after.contains(&ids[0]));

    // The victim's credential still works: over HTTP, and for the guest reconnecting.
    let (status, _) = post(&url, Some(&victim_credential), &heartbeat(&victim_uid, 0)).await;
    assert_eq!(status, 200, "the victim's credential was revoked");
    victim.kill();
    victim.launch(&server, &token);
    // The victim's install goes to the victim.
    let job = server
        .client()
        .batch_install_agent(&ids)
        .await
        .unwrap()
        .job_id;
    assert_eq!(
        job_done(&server, &job, 60).await.status,
        "SUCCESS",
        "{}",
        victim.log()
    );
    assert!(
        !victim.monitor_pids().is_empty(),
        "the agent runs on the victim"
    );
}

#[tokio::test]
async fn only_a_desktop_bound_token_claims_an_imported_desktop_and_its_work() {
    let server = Server::start(FAST).await;
    let file = server.dir.path().join("desktops.json");
    std::fs::write(
        &file,
        r#"[{"computer_name":"kiosk-1","ip_address":"10.4.0.1","os_type":"Linux"}]"#,
    )
    .unwrap();
    let imported = server.admin(&[
        "desktops",
        "import",
        "--project",
        &server.bootstrap.project_id,
        file.to_str().unwrap(),
    ]);
    let kiosk = imported[0]["desktop_id"].as_str().unwrap().to_string();
    let client = server.client();
    let job = client
        .batch_install_agent(std::slice::from_ref(&kiosk))
        .await
        .unwrap()
        .job_id;

    // A project token and the right host name are not enough: a new desktop, no work.
    let token = server.enrollment_token();
    let url = server.opamp_url();
    let uid = fresh_uid();
    let (status, reply) = post(&url, Some(&token), &full_state(&uid, "kiosk-1", "10.4.0.1")).await;
    assert_eq!(status, 200);
    let reply = reply.unwrap();
    assert!(
        reply.packages_available.is_none(),
        "the queued install went to the attacker"
    );
    let attacker = offered_credential(&reply).unwrap();
    for seq in 1..4 {
        let (status, reply) = post(&url, Some(&attacker), &heartbeat(&uid, seq)).await;
        assert_eq!(status, 200);
        assert!(reply.unwrap().packages_available.is_none());
    }
    let ids = desktops_enrolled(&server, 2).await;
    assert!(ids.contains(&kiosk));
    let info = client.show_job(&job).await.unwrap();
    assert_eq!(info.sub_jobs[0].status, "WAITING", "{info:#?}");

    // The token issued for the desktop claims it, and its queued install with it.
    let bound = server.desktop_enrollment_token(&kiosk);
    let guest = Guest::start(&server, &bound, "kiosk-1");
    guest.enrolled().await;
    assert_eq!(
        job_done(&server, &job, 60).await.status,
        "SUCCESS",
        "{}",
        guest.log()
    );
    assert_eq!(desktops_enrolled(&server, 2).await.len(), 2);
    // Spent: it admits nobody else.
    let (status, _) = post(
        &url,
        Some(&bound),
        &full_state(&fresh_uid(), "kiosk-1", "10.4.0.1"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_connection_holds_its_admission_slot_exactly_as_long_as_it_lives() {
    let server = Local::start(|s| {
        s.fleet.max_connections = 2;
        s.fleet.max_new_connections_per_sec = 1000;
        s.fleet.heartbeat_secs = 1;
    })
    .await;
    let token = server.enrollment_token().await;
    let url = server.opamp_url();
    let first = open_ws(&url, &token).await.unwrap();
    let _second = open_ws(&url, &token).await.unwrap();
    let Err((status, body)) = open_ws(&url, &token).await else {
        panic!("a third connection admitted over max_connections = 2");
    };
    assert_eq!(status, 503, "{body}");
    // A connection that goes away (no Close, the socket just drops) frees its slot.
    drop(first);
    let _third = eventually(10, "a slot freed by the dropped connection", || async {
        open_ws(&url, &token).await.ok()
    })
    .await;
    // Full again, for HTTP agents too.
    let enroll = full_state(&fresh_uid(), "http-agent", "10.3.0.1");
    assert_eq!(post(&url, Some(&token), &enroll).await.0, 503);
    // The two silent WebSockets are closed after three heartbeat intervals, and their
    // slots go to whoever comes next.
    let started = Instant::now();
    let (status, reply) = eventually(15, "a slot freed by the idle close", || async {
        let (status, reply) = post(&url, Some(&token), &enroll).await;
        (status == 200).then_some((status, reply))
    })
    .await;
    assert_eq!(status, 200);
    assert!(offered_credential(&reply.unwrap()).is_some());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_agent_that_cannot_adopt_a_new_identity_is_one_new_desktop_not_one_per_poll() {
    let mut server = Server::start(FAST).await;
    let token = server.enrollment_token();
    // A plain OpAMP client: it takes neither credentials nor new uids, and keeps
    // presenting the token and its uid (answering every poll with its full state).
    let uid = fresh_uid();
    let mut message = full_state(&uid, "stock-agent", "10.1.0.1");
    message.capabilities = AgentCapabilities::bits(&[AgentCapabilities::ReportsStatus]);
    let (status, reply) = post(&server.opamp_url(), Some(&token), &message).await;
    assert_eq!(status, 200);
    assert!(reply.unwrap().agent_identification.is_none());
    desktops_enrolled(&server, 1).await;
    // Its session is lost with the server; its uid is now known, so it gets a new one.
    server.kill_and_restart().await;
    let url = server.opamp_url();
    let (status, reply) = post(&url, Some(&token), &message).await;
    assert_eq!(status, 200);
    assert!(reply.unwrap().agent_identification.is_some());
    for seq in 1..6 {
        message.sequence_num = seq;
        let (status, reply) = post(&url, Some(&token), &message).await;
        assert_eq!(status, 200);
        assert!(reply.unwrap().agent_identification.is_none(), "poll {seq}");
    }
    assert_eq!(
        server
            .client()
            .list_desktops(&[])
            .await
            .unwrap()
            .total_count,
        2,
        "one new desktop for the lost session, not one per poll"
    );
}
