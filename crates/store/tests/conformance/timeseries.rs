//! The agents' time series: batched ingest, roll-up exactly once, retention, the reads of
//! Cloud Eye's metric API, and project isolation.

use crate::harness::{Ctx, T0, desktops, project};
use deskfleet_core::clock::Millis;
use deskfleet_core::ids::DesktopId;
use deskfleet_core::metrics::{
    Aggregate, LatestReport, MetricBatch, NewSeries, Point, RetentionPolicy, SeriesFilter,
    SeriesKey, Tier,
};
use deskfleet_core::store::Store;

const MIN5: Millis = 300_000;
const HOUR: Millis = 3_600_000;
/// An hour boundary near `T0`.
const B: Millis = T0 / HOUR * HOUR;

fn key(desktop: &DesktopId, metric: &str, mount: Option<&str>) -> SeriesKey {
    SeriesKey {
        desktop: desktop.clone(),
        metric: metric.to_owned(),
        mount_point: mount.map(str::to_owned),
    }
}

fn series(k: &SeriesKey, unit: &'static str) -> NewSeries {
    NewSeries {
        key: k.clone(),
        unit,
        origin: k.mount_point.as_ref().map(|_| "/".to_owned()),
    }
}

/// Minutes of one value each.
fn points(k: &SeriesKey, values: &[(Millis, f64)]) -> Vec<Point> {
    values
        .iter()
        .map(|(at, value)| Point {
            series: k.id(),
            minute: Aggregate::of(*at, *value),
        })
        .collect()
}

/// The minute starting at `at` of the given values.
fn minute(k: &SeriesKey, at: Millis, values: &[f64]) -> Point {
    let mut agg = Aggregate::of(at, values[0]);
    for v in &values[1..] {
        agg.merge(&Aggregate::of(at, *v));
    }
    Point {
        series: k.id(),
        minute: agg,
    }
}

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        raw_ms: 2 * HOUR,
        five_minutes_ms: 6 * HOUR,
        one_hour_ms: 48 * HOUR,
        rollup_delay_ms: 60_000,
        buckets_per_step: 100,
    }
}

/// (at, count, sum, min, max) of each aggregate.
fn stats(aggs: &[Aggregate]) -> Vec<(Millis, u64, f64, f64, f64)> {
    aggs.iter()
        .map(|a| (a.at, a.count, a.sum, a.min, a.max))
        .collect()
}

/// Runs roll-up steps at `now` until one does nothing.
async fn settle(s: &dyn Store, now: Millis) {
    for _ in 0..100 {
        let out = s.roll_up_metrics(&policy(), now).await.unwrap();
        if out.rolled_up + out.deleted == 0 {
            return;
        }
    }
    panic!("roll-up did not settle");
}

pub async fn metric_ingest_writes_series_points_and_the_latest_report(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let b = project(s, "b").await;
    let da = desktops(s, &a, 1).await.remove(0);
    let db = desktops(s, &b, 1).await.remove(0);
    let ghost = DesktopId::generate();
    let cpu_a = key(&da, "cpu_usage", None);
    let disk_a = key(&da, "disk_free", Some("0123456789abcdef0123456789abcdef"));
    let cpu_b = key(&db, "cpu_usage", None);
    let cpu_ghost = key(&ghost, "cpu_usage", None);
    let mut batch = MetricBatch {
        now: B,
        series: vec![
            series(&cpu_a, "%"),
            series(&disk_a, "GB"),
            series(&cpu_b, "%"),
            series(&cpu_ghost, "%"),
        ],
        points: [
            vec![minute(&cpu_a, B, &[10.0, 20.5])],
            points(&cpu_a, &[(B + 60_000, 7.0)]),
            points(&disk_a, &[(B, 3.25)]),
            points(&cpu_b, &[(B, 99.0)]),
        ]
        .concat(),
        latest: vec![
            LatestReport {
                desktop: da.clone(),
                json: r#"{"cpu":{"usage_percent":20.5}}"#.to_owned(),
                received_at: B + 10_000,
            },
            LatestReport {
                desktop: ghost.clone(),
                json: "{}".to_owned(),
                received_at: B,
            },
        ],
    };
    assert_eq!(s.ingest_metrics(&batch).await.unwrap(), 4);
    // A minute written again (a late report, the flush at shutdown) merges into its row;
    // a series written twice is one series.
    batch.latest.clear();
    batch.points = vec![minute(&cpu_a, B, &[1.0])];
    assert_eq!(s.ingest_metrics(&batch).await.unwrap(), 1);

    let raw = s
        .metric_aggregates(&a, &[cpu_a.id()], Tier::Raw, B, B + HOUR)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        stats(&raw),
        vec![(B, 3, 31.5, 1.0, 20.5), (B + 60_000, 1, 7.0, 7.0, 7.0)]
    );
    assert_eq!(raw[0].sum_sq, 100.0 + 420.25 + 1.0);
    // `to` is exclusive, `from` inclusive.
    let one = s
        .metric_aggregates(&a, &[cpu_a.id()], Tier::Raw, B + 1, B + 60_001)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats(&one), vec![(B + 60_000, 1, 7.0, 7.0, 7.0)]);
    // Another project sees nothing of it, and only its own.
    assert!(
        s.metric_aggregates(&b, &[cpu_a.id()], Tier::Raw, B, B + HOUR)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
    assert_eq!(
        s.metric_aggregates(&b, &[cpu_b.id()], Tier::Raw, B, B + HOUR)
            .await
            .unwrap()
            .remove(0)
            .len(),
        1
    );
    // Both projects' series in one read: each project sees only its own.
    let both = s
        .metric_aggregates(&a, &[cpu_b.id(), cpu_a.id()], Tier::Raw, B, B + HOUR)
        .await
        .unwrap();
    assert!(both[0].is_empty());
    assert_eq!(both[1], raw);
    // Not rolled up yet: the 5-minute tier aggregates the raw points itself.
    let five = s
        .metric_aggregates(&a, &[cpu_a.id()], Tier::FiveMinutes, B, B + HOUR)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats(&five), vec![(B, 4, 38.5, 1.0, 20.5)]);
    assert_eq!(five[0].sum_sq, 100.0 + 420.25 + 1.0 + 49.0);

    let (listed, total) = s
        .list_metric_series(
            &a,
            &SeriesFilter {
                limit: 100,
                ..SeriesFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    let names: Vec<_> = listed.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["cpu_usage", "disk_free"]);
    assert_eq!(listed[1].unit, "GB");
    assert_eq!(listed[1].mount_point, disk_a.mount_point);
    // The series of a desktop that does not exist was not written.
    let (_, total_b) = s
        .list_metric_series(
            &b,
            &SeriesFilter {
                limit: 100,
                ..SeriesFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(total_b, 1);

    let latest = s.get_metrics(&a, &da).await.unwrap().unwrap();
    assert_eq!(
        (latest.json.as_str(), latest.received_at),
        (r#"{"cpu":{"usage_percent":20.5}}"#, B + 10_000)
    );

    // Deleting the desktop takes its series with it.
    s.delete_desktop(&a, &da, B).await.unwrap();
    assert!(
        s.metric_aggregates(&a, &[cpu_a.id()], Tier::Raw, B, B + HOUR)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
}

pub async fn metric_rollups_are_exact_once_and_retention_keeps_what_is_not_rolled_up(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let d = desktops(s, &a, 1).await.remove(0);
    let cpu = key(&d, "cpu_usage", None);
    // Two hours of a point every minute: value = minute of the hour.
    let values: Vec<(Millis, f64)> = (0..120)
        .map(|m| (B + m * 60_000, (m % 60) as f64))
        .collect();
    s.ingest_metrics(&MetricBatch {
        now: B,
        series: vec![series(&cpu, "%")],
        points: points(&cpu, &values),
        latest: vec![],
    })
    .await
    .unwrap();
    let expected_five: Vec<_> = (0..24)
        .map(|i| {
            let vs: Vec<f64> = (0..5).map(|k| ((i * 5 + k) % 60) as f64).collect();
            (B + i * MIN5, 5u64, vs.iter().sum::<f64>(), vs[0], vs[4])
        })
        .collect();
    let before = s
        .metric_aggregates(&a, &[cpu.id()], Tier::FiveMinutes, B, B + 2 * HOUR)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats(&before), expected_five);

    // Roll up everything that ended a minute before B + 2 h + 1 min.
    let now = B + 2 * HOUR + 60_000;
    settle(s, now).await;
    // Running the steps again adds nothing twice.
    settle(s, now).await;
    let five = s
        .metric_aggregates(&a, &[cpu.id()], Tier::FiveMinutes, B, B + 2 * HOUR)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats(&five), expected_five, "rolled up exactly once");
    let hours = s
        .metric_aggregates(&a, &[cpu.id()], Tier::OneHour, B, B + 2 * HOUR)
        .await
        .unwrap()
        .remove(0);
    let hour_sum: f64 = (0..60).map(f64::from).sum();
    assert_eq!(
        stats(&hours),
        vec![
            (B, 60, hour_sum, 0.0, 59.0),
            (B + HOUR, 60, hour_sum, 0.0, 59.0)
        ]
    );
    // Sum of squares survives the roll-ups: the variance of 0..59.
    let var = hours[0].variance();
    assert!((var - (3600.0 - 1.0) / 12.0).abs() < 1e-6, "{var}");

    // Newer minutes not rolled up yet: one read joins the roll-ups before the mark with
    // the raw minutes after it, bucketed alike, for every series asked, in the order
    // asked (a series asked twice answers twice, an unknown one with nothing).
    let newer: Vec<(Millis, f64)> = (120..130).map(|m| (B + m * 60_000, 1.0)).collect();
    s.ingest_metrics(&MetricBatch {
        now,
        series: vec![],
        points: points(&cpu, &newer),
        latest: vec![],
    })
    .await
    .unwrap();
    let other = key(&d, "mem_usedPercent", None);
    let mut read = s
        .metric_aggregates(
            &a,
            &[cpu.id(), other.id(), cpu.id()],
            Tier::FiveMinutes,
            B + HOUR,
            B + 2 * HOUR + 2 * MIN5,
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert!(read[1].is_empty());
    assert_eq!(read[0], read[2]);
    let joined = read.remove(0);
    let mut expected = expected_five[12..].to_vec();
    expected.push((B + 2 * HOUR, 5, 5.0, 1.0, 1.0));
    expected.push((B + 2 * HOUR + MIN5, 5, 5.0, 1.0, 1.0));
    assert_eq!(stats(&joined), expected);

    // Raw points older than two hours are gone already (B + 1 min is the cutoff now).
    assert!(
        s.metric_aggregates(&a, &[cpu.id()], Tier::Raw, B, B + 60_000)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
    // A late value for a bucket already rolled up merges into its raw minute only.
    let late = B + 2 * MIN5 + 60_000;
    s.ingest_metrics(&MetricBatch {
        now,
        series: vec![],
        points: points(&cpu, &[(late, 1000.0)]),
        latest: vec![],
    })
    .await
    .unwrap();
    settle(s, now).await;
    let third = s
        .metric_aggregates(
            &a,
            &[cpu.id()],
            Tier::FiveMinutes,
            B + 2 * MIN5,
            B + 3 * MIN5,
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats(&third), vec![expected_five[2]]);
    assert_eq!(
        stats(
            &s.metric_aggregates(&a, &[cpu.id()], Tier::Raw, late, late + 60_000)
                .await
                .unwrap()
                .remove(0)
        ),
        vec![(late, 2, 1011.0, 11.0, 1000.0)]
    );

    // Past the raw retention (2 h) raw points go; their roll-ups answer for them.
    let later = B + 5 * HOUR;
    settle(s, later).await;
    assert!(
        s.metric_aggregates(&a, &[cpu.id()], Tier::Raw, B, B + 2 * HOUR)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
    assert_eq!(
        stats(
            &s.metric_aggregates(&a, &[cpu.id()], Tier::FiveMinutes, B, B + 2 * HOUR)
                .await
                .unwrap()
                .remove(0)
        ),
        expected_five
    );
    // Past the 5-minute retention (6 h), the hours remain; past 48 h, nothing.
    settle(s, B + 8 * HOUR).await;
    assert!(
        s.metric_aggregates(&a, &[cpu.id()], Tier::FiveMinutes, B, B + 2 * HOUR)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
    assert_eq!(
        s.metric_aggregates(&a, &[cpu.id()], Tier::OneHour, B, B + 2 * HOUR)
            .await
            .unwrap()
            .remove(0)
            .len(),
        2
    );
    settle(s, B + 51 * HOUR).await;
    assert!(
        s.metric_aggregates(&a, &[cpu.id()], Tier::OneHour, B, B + 2 * HOUR)
            .await
            .unwrap()
            .remove(0)
            .is_empty()
    );
}

pub async fn metric_rollup_steps_are_bounded(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let d = desktops(s, &a, 1).await.remove(0);
    let cpu = key(&d, "cpu_usage", None);
    let values: Vec<(Millis, f64)> = (0..6).map(|i| (B + i * MIN5, i as f64)).collect();
    s.ingest_metrics(&MetricBatch {
        now: B,
        series: vec![series(&cpu, "%")],
        points: points(&cpu, &values),
        latest: vec![],
    })
    .await
    .unwrap();
    let one_bucket = RetentionPolicy {
        buckets_per_step: 1,
        ..policy()
    };
    let now = B + HOUR;
    let mut steps = 0;
    loop {
        let out = s.roll_up_metrics(&one_bucket, now).await.unwrap();
        if out.rolled_up == 0 {
            break;
        }
        assert_eq!(out.rolled_up, 1, "one 5-minute bucket per step");
        steps += 1;
    }
    assert_eq!(steps, 6);
}

pub async fn metric_series_list_filters_orders_and_pages(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let ds = desktops(s, &a, 3).await;
    let mut sorted = ds.clone();
    sorted.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut new = Vec::new();
    for d in &ds {
        new.push(series(&key(d, "cpu_usage", None), "%"));
        new.push(series(&key(d, "mem_usedPercent", None), "%"));
    }
    new.push(series(&key(&ds[0], "disk_free", Some("aa")), "GB"));
    new.push(series(&key(&ds[0], "disk_free", Some("bb")), "GB"));
    s.ingest_metrics(&MetricBatch {
        now: B,
        series: new,
        points: vec![],
        latest: vec![],
    })
    .await
    .unwrap();
    let pa = &a;
    let list = |filter: SeriesFilter| async move {
        let (series, total) = s.list_metric_series(pa, &filter).await.unwrap();
        let keys: Vec<(String, String, Option<String>)> = series
            .into_iter()
            .map(|s| (s.metric, s.desktop.into_string(), s.mount_point))
            .collect();
        (keys, total)
    };
    let (all, total) = list(SeriesFilter {
        limit: 1000,
        ..SeriesFilter::default()
    })
    .await;
    assert_eq!(total, 8);
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(all, expected, "ordered by metric, desktop, mount point");
    // Pages of 3, each starting after the last of the one before, cover all in order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let (page, total) = list(SeriesFilter {
            limit: 3,
            after: after.clone(),
            ..SeriesFilter::default()
        })
        .await;
        assert_eq!(total, 8, "total ignores paging");
        let Some(last) = page.last().cloned() else {
            break;
        };
        after = Some((last.0, last.1, last.2.unwrap_or_default()));
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // Descending.
    let (desc, _) = list(SeriesFilter {
        limit: 1000,
        descending: true,
        ..SeriesFilter::default()
    })
    .await;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(desc, reversed);
    // Filters.
    let (cpu, total) = list(SeriesFilter {
        metric: Some("cpu_usage".into()),
        limit: 1000,
        ..SeriesFilter::default()
    })
    .await;
    assert_eq!(total, 3);
    assert_eq!(
        cpu.iter().map(|k| k.1.clone()).collect::<Vec<_>>(),
        sorted
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect::<Vec<_>>()
    );
    let (one, _) = list(SeriesFilter {
        desktop: Some(ds[0].clone()),
        mount_point: Some("bb".into()),
        limit: 1000,
        ..SeriesFilter::default()
    })
    .await;
    assert_eq!(
        one,
        vec![(
            "disk_free".to_owned(),
            ds[0].as_str().to_owned(),
            Some("bb".to_owned())
        )]
    );
    // Another project lists nothing.
    let b = project(s, "b").await;
    let (none, total) = s
        .list_metric_series(
            &b,
            &SeriesFilter {
                limit: 1000,
                ..SeriesFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 0);
}
