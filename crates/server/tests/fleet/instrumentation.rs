//! The fleet channel's own metrics, read through a recorder installed in this process
//! (the exporter that serves them is not the fleet's concern): names, labels, and that
//! each moves when what it counts happens.

use crate::harness::{Local, eventually, open_ws};
use crate::hostile::{answer, full_state, heartbeat, offered_credential, post, send};
use deskfleet_client::{Client, Credentials};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Every metric by `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Captured {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
    samples: Mutex<HashMap<String, Arc<Samples>>>,
}

fn id(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Captured {
    fn value(&self, id: &str) -> Arc<AtomicU64> {
        self.values
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn counter(&self, id: &str) -> u64 {
        self.value(id).load(Ordering::Relaxed)
    }

    fn gauge(&self, id: &str) -> f64 {
        f64::from_bits(self.value(id).load(Ordering::Relaxed))
    }

    fn samples(&self, id: &str) -> Vec<f64> {
        let samples = self
            .samples
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .clone();
        samples.0.lock().unwrap().clone()
    }
}

struct Capture(&'static Captured);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.value(&id(key)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.value(&id(key)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = self
            .0
            .samples
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        Histogram::from_arc(samples)
    }
}

/// The process's recorder (one per process: installed by the first test that asks).
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::default());
        metrics::set_global_recorder(Capture(captured)).expect("no other recorder");
        captured
    })
}

const REFUSED: &str = "deskfleet_fleet_admission_refused_total{}";
const CONNECTED: &str = "deskfleet_fleet_connected_desktops{}";
const WS_MESSAGES: &str = "deskfleet_opamp_messages_total{transport=ws}";
const HTTP_MESSAGES: &str = "deskfleet_opamp_messages_total{transport=http}";
const DENIED: &str = "deskfleet_package_downloads_total{result=denied}";
const NOT_FOUND: &str = "deskfleet_package_downloads_total{result=not_found}";
const FAILED_INSTALLS: &str = "deskfleet_install_duration_seconds{outcome=failed}";

#[tokio::test]
async fn the_fleet_metrics_count_what_happens() {
    let m = captured();
    let server = Local::start(|s| {
        s.fleet.max_connections = 1;
        s.fleet.schedule_interval_ms = 50;
    })
    .await;
    let token = server.enrollment_token().await;
    let url = server.opamp_url();
    let (refused, denied, not_found) =
        (m.counter(REFUSED), m.counter(DENIED), m.counter(NOT_FOUND));
    let (ws_messages, http_messages) = (m.counter(WS_MESSAGES), m.counter(HTTP_MESSAGES));
    let failed_installs = m.samples(FAILED_INSTALLS).len();

    // A bad credential is refused before admission: nothing counted as refused.
    assert_eq!(
        open_ws(&url, "DFE1-bogus").await.err().map(|e| e.0),
        Some(401)
    );
    assert_eq!(m.counter(REFUSED), refused);

    let uid = uuid::Uuid::now_v7().as_bytes().to_vec();
    let mut ws = open_ws(&url, &token).await.unwrap();
    send(&mut ws, &full_state(&uid, "metered", "10.2.0.1")).await;
    let credential = offered_credential(&answer(&mut ws).await).unwrap();
    assert_eq!(m.gauge(CONNECTED), 1.0);
    assert!(m.counter(WS_MESSAGES) > ws_messages);

    // The one slot is taken: the next connection is refused, and counted.
    assert_eq!(open_ws(&url, &token).await.err().map(|e| e.0), Some(503));
    assert_eq!(m.counter(REFUSED), refused + 1);

    let http = crate::harness::http_for(&url);
    let package = format!("{}/v1/packages/nothing-here", server.endpoint);
    let r = http.get(&package).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(m.counter(DENIED), denied + 1);
    let r = http
        .get(&package)
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(m.counter(NOT_FOUND), not_found + 1);

    // An install ends (no package is published here: it fails at once) and its
    // duration is recorded with its outcome.
    let project =
        deskfleet_core::ids::ProjectId::parse(server.bootstrap.project_id.clone()).unwrap();
    let desktop = server
        .state
        .store
        .find_desktop_by_instance_uid(&project, &hex::encode(&uid))
        .await
        .unwrap()
        .unwrap()
        .desktop
        .id;
    let client = Client::with_options(
        &server.endpoint,
        &server.bootstrap.project_id,
        Credentials::AkSk {
            access_key: server.bootstrap.access_key.clone(),
            secret_key: server.bootstrap.secret_key.clone(),
        },
        &crate::harness::options_for(&server.endpoint),
    )
    .unwrap();
    client
        .batch_install_agent(&[desktop.as_str().to_owned()])
        .await
        .unwrap();
    let samples = eventually(20, "an install duration recorded", || async {
        let samples = m.samples(FAILED_INSTALLS);
        (samples.len() > failed_installs).then_some(samples)
    })
    .await;
    assert!(
        samples.iter().all(|s| (0.0..60.0).contains(s)),
        "{samples:?}"
    );

    // The same desktop over HTTP: one message of that transport.
    let (status, _) = post(&url, Some(&credential), &heartbeat(&uid, 0)).await;
    assert_eq!(status, 503, "the one slot is still the WebSocket's");
    assert_eq!(m.counter(HTTP_MESSAGES), http_messages + 1);

    // The desktop leaves: no longer connected.
    drop(ws);
    eventually(10, "the desktop counted offline", || async {
        (m.gauge(CONNECTED) == 0.0).then_some(())
    })
    .await;
}
