//! A desktop's connection: connects, disconnects, batched last-seen times, and the run
//! state filter that is derived from them.

use crate::harness::{Ctx, T0, all, desktops, project};
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::model::{Desktop, DesktopFilter};
use deskfleet_core::presence::{Connection, Presence};
use deskfleet_core::store::{Store, StoreError};

/// Three heartbeat intervals of 1 s.
const WINDOW: Millis = 3_000;

async fn desktop(s: &dyn Store, p: &ProjectId, id: &DesktopId) -> Desktop {
    s.get_desktop(p, id).await.unwrap().expect("desktop")
}

async fn connection(s: &dyn Store, p: &ProjectId, id: &DesktopId) -> Connection {
    desktop(s, p, id).await.connection
}

pub async fn connects_and_disconnects_are_recorded(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let d = desktops(s, &p, 1).await.remove(0);
    assert_eq!(connection(s, &p, &d).await, Connection::default());
    assert_eq!(
        connection(s, &p, &d).await.presence(T0, WINDOW),
        Presence::Never
    );

    s.record_connected(&d, T0).await.unwrap();
    let c = connection(s, &p, &d).await;
    assert_eq!(
        c,
        Connection {
            connected_at: Some(T0),
            disconnected_at: None,
            last_seen_at: Some(T0),
        }
    );
    assert_eq!(
        c.presence(T0 + 100, WINDOW),
        Presence::Online {
            since: T0,
            last_seen: T0
        }
    );

    // A goodbye for a connection that is not the current one changes nothing.
    assert!(
        !s.record_disconnected(&d, T0 - 5, T0 + 50, T0 + 50)
            .await
            .unwrap()
    );
    assert_eq!(connection(s, &p, &d).await, c);

    assert!(
        s.record_disconnected(&d, T0, T0 + 2_000, T0 + 1_500)
            .await
            .unwrap()
    );
    let c = connection(s, &p, &d).await;
    assert_eq!(
        c,
        Connection {
            connected_at: None,
            disconnected_at: Some(T0 + 2_000),
            last_seen_at: Some(T0 + 1_500),
        }
    );
    assert_eq!(
        c.presence(T0 + 2_001, WINDOW),
        Presence::Offline {
            since: T0 + 2_000,
            last_seen: Some(T0 + 1_500)
        },
        "offline at once, not after the window"
    );
    // Recorded once.
    assert!(
        !s.record_disconnected(&d, T0, T0 + 3_000, T0 + 3_000)
            .await
            .unwrap()
    );

    // A reconnect: online again, since then.
    s.record_connected(&d, T0 + 4_000).await.unwrap();
    let c = connection(s, &p, &d).await;
    assert_eq!(
        (c.connected_at, c.disconnected_at),
        (Some(T0 + 4_000), None)
    );
    assert!(c.presence(T0 + 4_000, WINDOW).is_online());

    let unknown = DesktopId::generate();
    assert!(matches!(
        s.record_connected(&unknown, T0).await,
        Err(StoreError::NotFound)
    ));
    assert!(!s.record_disconnected(&unknown, T0, T0, T0).await.unwrap());
}

pub async fn last_seen_is_batched_and_only_moves_forward(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 3).await;
    for d in &ds {
        s.record_connected(d, T0).await.unwrap();
    }
    assert_eq!(s.record_last_seen(&[]).await.unwrap(), 0);
    let seen = vec![
        (ds[0].clone(), T0 + 1_000),
        (ds[1].clone(), T0 + 2_000),
        // The latest of two entries for one desktop wins.
        (ds[1].clone(), T0 + 2_500),
        (DesktopId::generate(), T0 + 9_000),
    ];
    assert_eq!(s.record_last_seen(&seen).await.unwrap(), 2);
    assert_eq!(
        connection(s, &p, &ds[0]).await.last_seen_at,
        Some(T0 + 1_000)
    );
    assert_eq!(
        connection(s, &p, &ds[1]).await.last_seen_at,
        Some(T0 + 2_500)
    );
    assert_eq!(connection(s, &p, &ds[2]).await.last_seen_at, Some(T0));
    // Never back: a late batch with an older time changes nothing.
    assert_eq!(
        s.record_last_seen(&[(ds[0].clone(), T0 + 500)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        connection(s, &p, &ds[0]).await.last_seen_at,
        Some(T0 + 1_000)
    );

    // A desktop that stays connected but goes silent goes offline after the window.
    let c = connection(s, &p, &ds[2]).await;
    assert!(c.presence(T0 + WINDOW, WINDOW).is_online());
    assert_eq!(
        c.presence(T0 + WINDOW + 1, WINDOW),
        Presence::Offline {
            since: T0,
            last_seen: Some(T0)
        }
    );

    // A big batch is one call.
    let many: Vec<(DesktopId, Millis)> = desktops(s, &p, 500)
        .await
        .into_iter()
        .map(|d| (d, T0 + 7))
        .collect();
    assert_eq!(s.record_last_seen(&many).await.unwrap(), 500);
}

pub async fn the_status_filter_follows_the_connection(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 4).await;
    let now = T0 + 10_000;
    // 0: online; 1: connected but silent past the window; 2: disconnected; 3: never.
    s.record_connected(&ds[0], T0).await.unwrap();
    s.record_last_seen(&[(ds[0].clone(), now - 1_000)])
        .await
        .unwrap();
    s.record_connected(&ds[1], T0).await.unwrap();
    s.record_connected(&ds[2], T0).await.unwrap();
    s.record_disconnected(&ds[2], T0, now - 100, now - 100)
        .await
        .unwrap();
    let p = &p;
    let ids = |status: &str, seen_after: Option<Millis>| {
        let filter = DesktopFilter {
            status: Some(status.to_owned()),
            seen_after,
            ..Default::default()
        };
        async move {
            let (total, rows) = s.list_desktops(p, &filter, all()).await.unwrap();
            let mut ids: Vec<DesktopId> = rows.into_iter().map(|d| d.id).collect();
            assert_eq!(total, ids.len() as i64);
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<DesktopId>| {
        v.sort();
        v
    };
    let cutoff = Some(now - WINDOW);
    assert_eq!(
        ids("ACTIVE", cutoff).await,
        sorted(vec![ds[0].clone(), ds[3].clone()])
    );
    assert_eq!(
        ids("SHUTOFF", cutoff).await,
        sorted(vec![ds[1].clone(), ds[2].clone()])
    );
    // Without a cutoff, the stored status.
    assert_eq!(ids("ACTIVE", None).await, sorted(ds.clone()));
    assert!(ids("SHUTOFF", None).await.is_empty());
}
