//! The audit trail: a change commits with its trace or not at all; the chain has no gaps
//! under concurrency; ListTraces' filters and paging; tampering with rows is named by
//! `verify_store`; a pruned, sealed prefix still verifies.

use crate::harness::{Ctx, T0, at, claim, desktops, finish, install, project};
use deskfleet_core::audit::{self, Seal, Trace, TraceFilter, TraceUser, Verification};
use deskfleet_core::ids::{DesktopId, ProjectId};
use deskfleet_core::store::Store;
use deskfleet_store::audit::{AuditScope, Described, Stage};
use std::sync::Arc;

fn draft(project: &ProjectId, name: &str, time: i64) -> Trace {
    Trace {
        trace_id: uuid::Uuid::new_v4().to_string(),
        trace_name: name.to_owned(),
        trace_rating: "normal".into(),
        trace_type: "ApiCall".into(),
        code: "200".into(),
        time,
        user: TraceUser::iam("u1", "ops-admin", "d1", "acme", "AK1"),
        service_type: "Workspace".into(),
        resource_type: "workspace".into(),
        project_id: project.as_str().to_owned(),
        enterprise_project_id: "0".into(),
        tracker_name: "system".into(),
        ..Trace::default()
    }
}

fn job_scope(project: &ProjectId, time: i64) -> AuditScope {
    let scope = AuditScope::new(draft(project, "batchInstallCesAgent", time));
    scope.set_describe(Arc::new(|out: &dyn std::any::Any| {
        out.downcast_ref::<deskfleet_core::model::Job>()
            .map(|job| Described {
                response: format!("{{\"job_id\":\"{}\"}}", job.id),
                resource_id: None,
            })
    }));
    scope
}

fn window() -> TraceFilter {
    TraceFilter {
        after: 0,
        before: i64::MAX,
        ..TraceFilter::default()
    }
}

async fn verify(s: &dyn Store) -> Verification {
    audit::verify_store(s).await.unwrap()
}

/// An install of `ds` in `scope`, which must commit with its trace; the job and the trace.
async fn install_audited(
    s: &dyn Store,
    scope: &AuditScope,
    p: &ProjectId,
    ds: &[DesktopId],
) -> (deskfleet_core::model::Job, Trace) {
    let job = scope
        .run(s.create_install_job(p, ds, "batchInstallCesAgent", at(T0)))
        .await
        .unwrap();
    assert_eq!(scope.stage(), Stage::Committed);
    let committed = scope.committed().unwrap();
    assert_eq!(committed.response, format!("{{\"job_id\":\"{}\"}}", job.id));
    assert!(committed.record_time >= committed.time);
    (job, committed)
}

pub async fn a_change_and_its_trace_commit_together(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let scope = job_scope(&p, T0);
    let (job, committed) = install_audited(s, &scope, &p, &ds).await;

    let listed = s.list_traces(&p, &window(), 10).await.unwrap();
    assert_eq!(listed, vec![committed]);
    // A second write in the same scope carries nothing more: the cancel ended the job,
    // which records the job's end (the server's own trace), and nothing else.
    let asked = |traces: Vec<Trace>| -> usize {
        traces
            .iter()
            .filter(|t| t.trace_type != "SystemAction")
            .count()
    };
    scope.run(s.cancel_job(&p, &job.id, T0)).await.unwrap();
    let listed = s.list_traces(&p, &window(), 10).await.unwrap();
    assert_eq!((listed.len(), asked(listed)), (2, 1));
    // Writes outside any scope carry nothing.
    s.create_install_job(&p, &ds, "batchInstallCesAgent", at(T0))
        .await
        .unwrap();
    assert_eq!(asked(s.list_traces(&p, &window(), 10).await.unwrap()), 1);
    let v = verify(s).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.checked, 2);
}

/// A describer that can tell the answer from the job's id alone lets the store complete
/// the trace before the write; what commits is the same as when the write completes it.
pub async fn a_trace_completed_before_its_write_commits_with_the_job_it_names(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let ahead_scope = || {
        let scope = AuditScope::new(draft(&p, "batchInstallCesAgent", T0));
        scope.set_describe(Arc::new(|out: &dyn std::any::Any| {
            let id = out
                .downcast_ref::<deskfleet_core::ids::JobId>()
                .or_else(|| {
                    out.downcast_ref::<deskfleet_core::model::Job>()
                        .map(|j| &j.id)
                })?;
            Some(Described {
                response: format!("{{\"job_id\":\"{id}\"}}"),
                resource_id: Some(format!("for-{id}")),
            })
        }));
        scope
    };
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let (job, committed) = install_audited(s, &ahead_scope(), &p, &ds).await;
        assert_eq!(committed.resource_id, format!("for-{}", job.id));
        jobs.push((job, committed));
    }
    // Fail: nothing is recorded, the draft is the caller's again, and it holds no answer.
    let scope = ahead_scope();
    let unknown = vec![DesktopId::parse("nope".to_owned()).unwrap()];
    assert!(
        scope
            .run(s.create_install_job(&p, &unknown, "batchInstallCesAgent", at(T0)))
            .await
            .is_err()
    );
    assert_eq!(scope.stage(), Stage::Open);
    assert_eq!(scope.draft().response, "");
    let listed = s.list_traces(&p, &window(), 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    for (job, committed) in &jobs {
        assert!(listed.contains(committed), "{} not listed", job.id);
    }
    let v = verify(s).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.checked, 3);
}

pub async fn a_failed_change_leaves_no_trace_and_the_draft_open(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let unknown = vec![DesktopId::parse("nope".to_owned()).unwrap()];
    let scope = job_scope(&p, T0);
    let err = scope
        .run(s.create_install_job(&p, &unknown, "batchInstallCesAgent", at(T0)))
        .await;
    assert!(err.is_err());
    assert_eq!(
        scope.stage(),
        Stage::Open,
        "the draft is the caller's to record"
    );
    assert!(s.list_traces(&p, &window(), 10).await.unwrap().is_empty());
    assert_eq!(s.trace_head().await.unwrap().seq, 0);
    // The caller records the failure on its own.
    let mut failure = scope.draft();
    failure.code = "400".into();
    failure.trace_rating = "warning".into();
    s.append_trace(&failure).await.unwrap();
    // Listed from its commit on, chained (at once on SQLite) by the chainer.
    assert_eq!(
        s.list_traces(&p, &window(), 10).await.unwrap(),
        vec![failure]
    );
    s.chain_traces(100).await.unwrap();
    let chained = s.trace_chain(1, 10).await.unwrap();
    assert_eq!(chained.len(), 1);
    assert_eq!(chained[0].seq, 1);
    assert_eq!(chained[0].prev_hash, audit::GENESIS_HASH);
    assert!(verify(s).await.ok());
}

pub async fn concurrent_changes_chain_without_gaps(ctx: Ctx) {
    let store = ctx.store.clone();
    let p = project(&*store, "main").await;
    let ds = desktops(&*store, &p, 8).await;
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let (s, p, ds) = (store.clone(), p.clone(), ds.clone());
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                s.append_trace(&draft(&p, "loginFailed", T0 + i))
                    .await
                    .map(|_| ())
            } else {
                let d = vec![ds[(i % 8) as usize].clone()];
                job_scope(&p, T0 + i)
                    .run(s.create_install_job(&p, &d, "batchInstallCesAgent", at(T0)))
                    .await
                    .map(|_| ())
            }
        }));
    }
    // Chainers run meanwhile, several at once (as on several replicas), in small batches.
    let mut chainers = Vec::new();
    for _ in 0..3 {
        let s = store.clone();
        chainers.push(tokio::spawn(async move {
            for _ in 0..20 {
                s.chain_traces(3).await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for c in chainers {
        c.await.unwrap();
    }
    while store.chain_traces(7).await.unwrap() > 0 {}
    let head = store.trace_head().await.unwrap();
    assert_eq!(head.seq, 40);
    let chain = store.trace_chain(1, 100).await.unwrap();
    let seqs: Vec<i64> = chain.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let v = verify(&*store).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.checked, 40);
}

pub async fn traces_filter_page_and_stay_in_their_project(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let other = project(s, "other").await;
    let mut ids = Vec::new();
    for i in 0..5i64 {
        let mut t = draft(&p, "batchInstallCesAgent", T0 + i * 1000);
        t.resource_id = format!("desk-{i}");
        if i == 3 {
            t.trace_name = "batchDeleteSubJob".into();
            t.trace_rating = "warning".into();
            t.user = TraceUser::iam("u2", "auditor", "d1", "acme", "AK2");
        }
        ids.push(t.trace_id.clone());
        s.append_trace(&t).await.unwrap();
    }
    s.append_trace(&draft(&other, "batchInstallCesAgent", T0))
        .await
        .unwrap();

    let all = s.list_traces(&p, &window(), 10).await.unwrap();
    let got: Vec<&str> = all.iter().map(|t| t.trace_id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(got, newest_first, "newest first, own project only");

    let pr = &p;
    let by = |f: TraceFilter| async move { s.list_traces(pr, &f, 10).await.unwrap() };
    let one = by(TraceFilter {
        trace_name: Some("batchDeleteSubJob".into()),
        ..window()
    })
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].trace_id, ids[3]);
    for f in [
        TraceFilter {
            user: Some("auditor".into()),
            ..window()
        },
        TraceFilter {
            access_key_id: Some("AK2".into()),
            ..window()
        },
        TraceFilter {
            trace_rating: Some("warning".into()),
            ..window()
        },
        TraceFilter {
            resource_id: Some("desk-3".into()),
            ..window()
        },
        TraceFilter {
            trace_id: Some(ids[3].clone()),
            ..window()
        },
    ] {
        let got = by(f.clone()).await;
        assert_eq!(got.len(), 1, "{f:?}");
        assert_eq!(got[0].trace_id, ids[3]);
    }
    assert!(
        by(TraceFilter {
            user: Some("Auditor".into()),
            ..window()
        })
        .await
        .is_empty(),
        "filters are case-sensitive"
    );
    // Exclusive bounds.
    let inside = by(TraceFilter {
        after: T0 + 1000,
        before: T0 + 4000,
        ..window()
    })
    .await;
    assert_eq!(inside.len(), 2);
    // Paging from the last trace of a page.
    let first = s.list_traces(&p, &window(), 2).await.unwrap();
    let last = first.last().unwrap();
    let next = by(TraceFilter {
        older_than: Some((last.time, last.trace_id.clone())),
        ..window()
    })
    .await;
    let got: Vec<&str> = next.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(got, newest_first[2..].to_vec());
    assert_eq!(
        s.trace_time(&p, &ids[0]).await.unwrap(),
        Some(T0),
        "a trace's time, for paging"
    );
    assert_eq!(s.trace_time(&other, &ids[0]).await.unwrap(), None);
}

/// Runs one SQL statement directly on the test's database, as an intruder would.
async fn tamper(url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        c.execute(sql).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        c.execute(sql).await.unwrap();
    }
}

async fn five_traces(s: &dyn Store) -> Vec<String> {
    let p = project(s, "main").await;
    let mut ids = Vec::new();
    for i in 0..5i64 {
        let t = draft(&p, "batchInstallCesAgent", T0 + i);
        ids.push(t.trace_id.clone());
        s.append_trace(&t).await.unwrap();
    }
    s.chain_traces(100).await.unwrap();
    ids
}

pub async fn tampering_is_named_by_verify(ctx: Ctx) {
    let s = ctx.store.clone();
    let ids = five_traces(&*s).await;
    assert!(verify(&*s).await.ok());
    let url = ctx.url().to_owned();

    // Altered content.
    tamper(
        &url,
        "UPDATE traces SET content = REPLACE(content, 'ops-admin', 'someone') WHERE seq = 3",
    )
    .await;
    let v = verify(&*s).await;
    let f = v.fault.clone().unwrap();
    assert_eq!(
        (f.seq, f.kind, f.trace_id.as_str()),
        (3, "altered", ids[2].as_str())
    );
    assert!(!v.ok());
    // Altered filter column only: still named.
    tamper(
        &url,
        "UPDATE traces SET content = REPLACE(content, 'someone', 'ops-admin') WHERE seq = 3",
    )
    .await;
    assert!(verify(&*s).await.ok(), "restored");
    tamper(
        &url,
        "UPDATE traces SET project_id = 'elsewhere' WHERE seq = 2",
    )
    .await;
    let f = verify(&*s).await.fault.unwrap();
    assert_eq!((f.seq, f.kind), (2, "altered"));
    let p2 = s.trace_chain(1, 10).await.unwrap()[0].columns[1].1.clone();
    tamper(
        &url,
        &format!("UPDATE traces SET project_id = '{p2}' WHERE seq = 2"),
    )
    .await;
    assert!(verify(&*s).await.ok(), "restored");

    // A well-formed trace added after the head, hash and link correct.
    let last = s.trace_chain(5, 1).await.unwrap().remove(0);
    let mut forged: Trace = serde_json::from_str(&last.content).unwrap();
    forged.trace_id = "forged".into();
    let content = audit::content(&forged);
    let hash = audit::chain_hash(&last.hash, 6, &content);
    tamper(
        &url,
        &format!(
            "INSERT INTO traces (seq, trace_id, project_id, at, trace_name, trace_rating, \
             service_type, resource_type, resource_id, resource_name, user_name, access_key_id, \
             enterprise_project_id, content, prev_hash, hash) VALUES (6, 'forged', '{}', {}, \
             '{}', 'normal', 'Workspace', 'workspace', '', '', 'ops-admin', 'AK1', '0', '{}', \
             '{}', '{hash}')",
            forged.project_id,
            forged.time,
            forged.trace_name,
            content.replace('\'', "''"),
            last.hash
        ),
    )
    .await;
    let f = verify(&*s).await.fault.unwrap();
    assert_eq!((f.seq, f.kind), (6, "inserted"));
    tamper(&url, "DELETE FROM traces WHERE seq = 6").await;
    assert!(verify(&*s).await.ok(), "restored");

    // A seal over the head, then a deletion in the middle.
    let head = s.trace_head().await.unwrap();
    s.add_seal(&Seal {
        seq: head.seq,
        hash: head.hash.clone(),
        signed_at: T0,
        signature: String::new(),
        public_key: String::new(),
    })
    .await
    .unwrap();
    tamper(&url, "DELETE FROM traces WHERE seq = 4").await;
    let f = verify(&*s).await.fault.unwrap();
    assert_eq!((f.seq, f.kind), (5, "deleted"));

    // Deleting the tail: the head and the seal say so.
    tamper(&url, "DELETE FROM traces WHERE seq >= 4").await;
    let v = verify(&*s).await;
    assert_eq!(v.fault.unwrap().kind, "deleted");
    assert!(!v.head_matches);
    assert_eq!(v.broken_seals, vec![head.seq]);
}

pub async fn pruning_a_sealed_prefix_still_verifies(ctx: Ctx) {
    let s = &*ctx.store;
    five_traces(s).await;
    // Nothing sealed: nothing may go.
    assert_eq!(s.prune_traces(T0 + 100).await.unwrap(), 0);
    let third = s.trace_chain(3, 1).await.unwrap().remove(0);
    s.add_seal(&Seal {
        seq: 3,
        hash: third.hash.clone(),
        signed_at: T0,
        signature: String::new(),
        public_key: String::new(),
    })
    .await
    .unwrap();
    // Traces older than T0+4 are 1..4, but only up to the seal (3) go.
    assert_eq!(s.prune_traces(T0 + 4).await.unwrap(), 3);
    let head = s.trace_head().await.unwrap();
    assert_eq!((head.pruned_seq, head.seq), (3, 5));
    let v = verify(s).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.checked, 2);
    // Appends go on after pruning.
    let p = project(s, "again").await;
    s.append_trace(&draft(&p, "loginFailed", T0 + 9))
        .await
        .unwrap();
    assert!(verify(s).await.ok());
}

pub async fn a_trace_that_cannot_be_written_fails_its_change(ctx: Ctx) {
    let s = ctx.store.clone();
    let p = project(&*s, "main").await;
    let ds = desktops(&*s, &p, 1).await;
    let t = draft(&p, "batchInstallCesAgent", T0);
    // A trace whose id is taken cannot be written (trace ids are unique).
    s.append_trace(&t).await.unwrap();
    let scope = AuditScope::new(t.clone());
    let result = scope
        .run(s.create_install_job(&p, &ds, "batchInstallCesAgent", at(T0)))
        .await;
    assert!(result.is_err(), "the change is refused with its trace");
    assert_eq!(scope.stage(), Stage::Open);
    let (_, subs) = s
        .list_sub_jobs(
            &p,
            &Default::default(),
            deskfleet_core::model::Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert!(subs.is_empty(), "nothing of the change was kept");
    s.chain_traces(100).await.unwrap();
    assert_eq!(s.trace_head().await.unwrap().seq, 1);
    // Once chained (PostgreSQL: no longer in the inbox), its id is still taken.
    assert!(
        s.append_trace(&t).await.is_err(),
        "a chained trace's id is taken"
    );
    s.chain_traces(100).await.unwrap();
    assert_eq!(s.trace_head().await.unwrap().seq, 1);
    // The same on a plain write path.
    let scope = AuditScope::new(draft(&p, "x", T0));
    let dup = scope.draft();
    s.append_trace(&dup).await.unwrap();
    let before = s
        .list_desktops(&p, &Default::default(), crate::harness::all())
        .await
        .unwrap()
        .0;
    let r = scope
        .run(s.import_desktops(&p, &[crate::harness::new_desktop("pc-x", "10.1.1.1")], T0))
        .await;
    assert!(r.is_err());
    let after = s
        .list_desktops(&p, &Default::default(), crate::harness::all())
        .await
        .unwrap()
        .0;
    assert_eq!(before, after);
    assert!(audit::verify_store(&*s).await.unwrap().ok());
}

pub async fn a_job_records_its_end_once_with_the_change_that_ended_it(ctx: Ctx) {
    use deskfleet_core::model::Outcome;
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let j = install(s, &p, &ds, T0).await;
    let ends = |traces: Vec<Trace>| -> Vec<Trace> {
        traces
            .into_iter()
            .filter(|t| t.trace_type == "SystemAction")
            .collect()
    };
    let first = claim(s, &ds[0], T0).await;
    finish(s, &first.id, &Outcome::Success, T0 + 5).await;
    assert!(
        ends(s.list_traces(&p, &window(), 10).await.unwrap()).is_empty(),
        "the job has not ended"
    );
    let second = claim(s, &ds[1], T0).await;
    let failure = Outcome::Failed {
        code: "WKS.00990008".into(),
        reason: "the package did not verify".into(),
    };
    finish(s, &second.id, &failure, T0 + 7).await;
    let end = ends(s.list_traces(&p, &window(), 10).await.unwrap());
    assert_eq!(end.len(), 1, "{end:?}");
    let t = &end[0];
    assert_eq!(t.trace_name, "batchInstallCesAgent");
    assert_eq!(t.resource_id, j.id.as_str());
    assert_eq!(t.project_id, p.as_str());
    assert_eq!(
        (t.code.as_str(), t.trace_rating.as_str()),
        ("200", "warning")
    );
    assert_eq!(t.source_ip, "");
    assert_eq!(t.time, T0 + 7);
    let response: serde_json::Value = serde_json::from_str(&t.response).unwrap();
    assert_eq!(response["status"], "FAIL");
    assert_eq!(
        (
            response["success_num"].as_u64(),
            response["fail_num"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(t.location_info.as_deref().unwrap().contains("WKS.00990008"));
    // A result reported again ends nothing again.
    assert!(
        !s.finish_sub_job(&second.id, &failure, T0 + 9)
            .await
            .unwrap()
    );
    assert_eq!(
        ends(s.list_traces(&p, &window(), 10).await.unwrap()).len(),
        1
    );
    let v = verify(s).await;
    assert!(v.ok(), "{v:?}");
}
