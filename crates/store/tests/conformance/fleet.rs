//! The fleet: enrollment, desktop identity, facts, agent state, metrics, packages, and
//! the engine calls the fleet connection makes (waiting work, running work, reports).

use crate::harness::{
    Ctx, DELIVER, EXECUTE, T0, all, claim, desktops, install, job, new_desktop, project, sub_job_of,
};
use deskfleet_core::fleet::{
    Claim, DesktopFacts, Enrolled, Enrollment, EnrollmentGrant, PackageMeta, SubJobReport,
};
use deskfleet_core::ids::{DesktopId, ProjectId, SubJobId};
use deskfleet_core::job::{JobStatus, Stage, SubJobStatus};
use deskfleet_core::model::{AgentFilter, AgentState, DesktopFilter, Outcome};
use deskfleet_core::store::{Expired, Store, StoreError};
use tokio::task::JoinSet;

fn facts(hostname: &str, ips: &[&str]) -> DesktopFacts {
    DesktopFacts {
        hostname: hostname.to_owned(),
        os_type: "Linux".to_owned(),
        ip_addresses: ips.iter().map(|ip| (*ip).to_owned()).collect(),
    }
}

fn enrollment(uid: &str, hostname: &str, credential: &str) -> Enrollment {
    Enrollment {
        instance_uid: uid.to_owned(),
        facts: facts(hostname, &["10.9.0.1", "fe80::1"]),
        credential_sha256: credential.to_owned(),
        claim: None,
    }
}

/// An enrollment that claims `desktop` with the desktop-bound token `token`.
fn claiming(
    uid: &str,
    hostname: &str,
    credential: &str,
    desktop: &DesktopId,
    token: &str,
) -> Enrollment {
    Enrollment {
        claim: Some(Claim {
            desktop: desktop.clone(),
            token_sha256: token.to_owned(),
        }),
        ..enrollment(uid, hostname, credential)
    }
}

fn grant(project: &ProjectId, desktop: Option<&DesktopId>) -> Option<EnrollmentGrant> {
    Some(EnrollmentGrant {
        project: project.clone(),
        desktop: desktop.cloned(),
    })
}

async fn enroll(s: &dyn Store, p: &ProjectId, e: &Enrollment, now: i64) -> Enrolled {
    s.enroll_desktop(p, e, now).await.expect("enroll")
}

async fn desktop_count(s: &dyn Store, p: &ProjectId) -> i64 {
    s.list_desktops(p, &DesktopFilter::default(), all())
        .await
        .unwrap()
        .0
}

pub async fn enrollment_tokens_expire(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    s.create_enrollment_token(&p, None, "tok-a", T0, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        s.find_enrollment_token("tok-a", T0).await.unwrap(),
        grant(&p, None)
    );
    assert_eq!(
        s.find_enrollment_token("tok-a", T0 + 999).await.unwrap(),
        grant(&p, None)
    );
    assert_eq!(
        s.find_enrollment_token("tok-a", T0 + 1000).await.unwrap(),
        None,
        "expired at its expiry time"
    );
    assert_eq!(s.find_enrollment_token("tok-b", T0).await.unwrap(), None);
    assert!(matches!(
        s.create_enrollment_token(&p, None, "tok-a", T0, T0 + 5000)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.create_enrollment_token(&ProjectId::generate(), None, "tok-c", T0, T0 + 5000)
            .await,
        Err(StoreError::NotFound)
    ));
    let other = project(s, "other").await;
    s.create_enrollment_token(&other, None, "tok-d", T0, T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        s.find_enrollment_token("tok-d", T0).await.unwrap(),
        grant(&other, None)
    );
}

pub async fn desktop_bound_tokens_name_a_desktop_of_their_project(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let other = project(s, "other").await;
    let d = desktops(s, &p, 1).await.remove(0);
    s.create_enrollment_token(&p, Some(&d), "tok-d", T0, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        s.find_enrollment_token("tok-d", T0).await.unwrap(),
        grant(&p, Some(&d))
    );
    assert!(
        matches!(
            s.create_enrollment_token(&other, Some(&d), "tok-x", T0, T0 + 1000)
                .await,
            Err(StoreError::NotFound)
        ),
        "a desktop of another project"
    );
    assert!(matches!(
        s.create_enrollment_token(&p, Some(&DesktopId::generate()), "tok-y", T0, T0 + 1000)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.find_enrollment_token("tok-x", T0).await.unwrap(), None);
}

pub async fn enroll_creates_a_new_desktop(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    desktops(s, &p, 2).await;
    let e = enrollment("uid-1", "Build-Host", "cred-1");
    let Enrolled {
        desktop,
        matched_import,
    } = enroll(s, &p, &e, T0 + 7).await;
    assert!(!matched_import);
    assert_eq!(desktop.id.as_str().len(), 32);
    assert_eq!(desktop.project_id, p);
    assert_eq!(desktop.computer_name, "Build-Host");
    assert_eq!(desktop.ip_address, "10.9.0.1", "the first address");
    assert_eq!(desktop.os_type, "Linux");
    assert_eq!(desktop.status, "ACTIVE");
    assert_eq!(desktop.enterprise_project_id, "0");
    assert!(desktop.tags.is_empty());
    assert_eq!(desktop.created_at, T0 + 7);
    assert_eq!(desktop.agent, None);
    assert_eq!(
        s.get_desktop(&p, &desktop.id).await.unwrap().as_ref(),
        Some(&desktop)
    );
    assert_eq!(desktop_count(s, &p).await, 3);

    let identity = s
        .find_desktop_by_credential("cred-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.desktop, desktop);
    assert_eq!(identity.instance_uid.as_deref(), Some("uid-1"));
    assert_eq!(identity.hostname.as_deref(), Some("Build-Host"));

    // A desktop that reports no address gets an empty one.
    let mut bare = enrollment("uid-2", "bare", "cred-2");
    bare.facts.ip_addresses.clear();
    let bare = enroll(s, &p, &bare, T0 + 8).await;
    assert!(!bare.matched_import);
    assert_eq!(bare.desktop.ip_address, "");
    assert_ne!(bare.desktop.id, desktop.id);
    assert_eq!(desktop_count(s, &p).await, 4);
}

pub async fn enroll_never_takes_over_the_holder_of_a_uid(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let first = enroll(s, &p, &enrollment("uid-1", "pc-a", "cred-1"), T0).await;
    // The same uid, from the same host name or another, with or without a claim.
    let imported = desktops(s, &p, 1).await.remove(0);
    s.create_enrollment_token(&p, Some(&imported), "tok-1", T0, T0 + 1000)
        .await
        .unwrap();
    for again in [
        enrollment("uid-1", "PC-A", "cred-2"),
        enrollment("uid-1", "pc-b", "cred-3"),
        claiming("uid-1", "pc-a", "cred-4", &imported, "tok-1"),
    ] {
        let clash = s.enroll_desktop(&p, &again, T0 + 5).await;
        assert!(
            matches!(clash, Err(StoreError::AlreadyExists(_))),
            "{clash:?}"
        );
        assert_eq!(
            s.find_desktop_by_credential(&again.credential_sha256)
                .await
                .unwrap(),
            None
        );
    }
    let holder = s
        .find_desktop_by_credential("cred-1")
        .await
        .unwrap()
        .expect("the holder keeps its credential");
    assert_eq!(holder.desktop, first.desktop);
    assert_eq!(holder.hostname.as_deref(), Some("pc-a"));
    assert_eq!(desktop_count(s, &p).await, 2);
    assert_eq!(
        s.find_enrollment_token("tok-1", T0).await.unwrap(),
        grant(&p, Some(&imported)),
        "a failed claim does not spend the token"
    );
}

pub async fn only_a_desktop_bound_token_claims_an_imported_desktop(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let mut imported = new_desktop("KIOSK-7", "10.0.0.7");
    imported.enterprise_project_id = Some("ep-1".to_owned());
    let imported = s.import_desktops(&p, &[imported], T0).await.unwrap();
    let kiosk = imported[0].id.clone();

    // A project-wide enrollment of the same name is a new desktop: a name is no proof.
    let by_name = enroll(s, &p, &enrollment("uid-0", "Kiosk-7", "cred-0"), T0 + 5).await;
    assert!(!by_name.matched_import);
    assert_ne!(by_name.desktop.id, kiosk);

    s.create_enrollment_token(&p, Some(&kiosk), "tok-k", T0, T0 + 1000)
        .await
        .unwrap();
    let claimed = enroll(
        s,
        &p,
        &claiming("uid-1", "kiosk-7", "cred-1", &kiosk, "tok-k"),
        T0 + 10,
    )
    .await;
    assert!(claimed.matched_import);
    let d = &claimed.desktop;
    assert_eq!(d.id, kiosk);
    assert_eq!(d.computer_name, "KIOSK-7", "the imported name is kept");
    assert_eq!(d.tags, imported[0].tags);
    assert_eq!(d.enterprise_project_id, "ep-1");
    assert_eq!(d.created_at, T0);
    assert_eq!(d.ip_address, "10.9.0.1", "what the desktop reports");
    assert_eq!(d.os_type, "Linux");
    let identity = s
        .find_desktop_by_instance_uid(&p, "uid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&identity.desktop, d);
    assert_eq!(identity.hostname.as_deref(), Some("kiosk-7"));
    assert_eq!(
        s.find_enrollment_token("tok-k", T0 + 11).await.unwrap(),
        None,
        "spent by the claim"
    );

    // Spent: it claims nothing again, not even with another uid.
    let again = s
        .enroll_desktop(
            &p,
            &claiming("uid-2", "kiosk-7", "cred-2", &kiosk, "tok-k"),
            T0 + 12,
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );
    // A fresh token for a desktop that connected once grants and claims nothing either.
    s.create_enrollment_token(&p, Some(&kiosk), "tok-k2", T0, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(s.find_enrollment_token("tok-k2", T0).await.unwrap(), None);
    let again = s
        .enroll_desktop(
            &p,
            &claiming("uid-3", "kiosk-7", "cred-3", &kiosk, "tok-k2"),
            T0 + 13,
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );
    assert_eq!(
        s.find_desktop_by_credential("cred-1")
            .await
            .unwrap()
            .map(|i| i.desktop.id),
        Some(kiosk.clone()),
        "the claimant keeps its credential"
    );
    // An expired token claims nothing.
    let late = s
        .import_desktops(&p, &[new_desktop("late", "10.0.0.9")], T0)
        .await
        .unwrap();
    s.create_enrollment_token(&p, Some(&late[0].id), "tok-l", T0, T0 + 20)
        .await
        .unwrap();
    let expired = s
        .enroll_desktop(
            &p,
            &claiming("uid-4", "late", "cred-4", &late[0].id, "tok-l"),
            T0 + 20,
        )
        .await;
    assert!(
        matches!(expired, Err(StoreError::AlreadyExists(_))),
        "{expired:?}"
    );
    assert_eq!(desktop_count(s, &p).await, 3);
}

pub async fn concurrent_claims_with_one_token_claim_once(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let kiosk = desktops(&*ctx.store, &p, 1).await.remove(0);
    ctx.store
        .create_enrollment_token(&p, Some(&kiosk), "tok", T0, T0 + 1000)
        .await
        .unwrap();
    let mut enrollments = JoinSet::new();
    for i in 0..8 {
        let (store, p, kiosk) = (ctx.store.clone(), p.clone(), kiosk.clone());
        enrollments.spawn(async move {
            let e = claiming(
                &format!("uid-{i}"),
                "pc-0",
                &format!("cred-{i}"),
                &kiosk,
                "tok",
            );
            store.enroll_desktop(&p, &e, T0 + 1).await
        });
    }
    let results = enrollments.join_all().await;
    let claimed: Vec<&Enrolled> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(claimed.len(), 1, "{results:?}");
    assert!(claimed[0].matched_import);
    assert_eq!(claimed[0].desktop.id, kiosk);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::AlreadyExists(_))),
        "{results:?}"
    );
    assert_eq!(desktop_count(&*ctx.store, &p).await, 1);
}

pub async fn lookups_by_credential_and_uid(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let d = enroll(s, &p, &enrollment("uid-1", "pc", "cred-1"), T0)
        .await
        .desktop;
    assert_eq!(s.find_desktop_by_credential("cred-x").await.unwrap(), None);
    assert_eq!(
        s.find_desktop_by_instance_uid(&p, "uid-x").await.unwrap(),
        None
    );
    let other = project(s, "other").await;
    assert_eq!(
        s.find_desktop_by_instance_uid(&other, "uid-1")
            .await
            .unwrap(),
        None,
        "uids are looked up within a project"
    );
    let agent = AgentState {
        version: "1.2.3".to_owned(),
        healthy: true,
        reported_at: T0 + 3,
    };
    s.record_agent_state(&d.id, Some(&agent)).await.unwrap();
    let by_credential = s
        .find_desktop_by_credential("cred-1")
        .await
        .unwrap()
        .unwrap();
    let by_uid = s
        .find_desktop_by_instance_uid(&p, "uid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_credential, by_uid);
    assert_eq!(by_credential.desktop.id, d.id);
    assert_eq!(by_credential.desktop.agent, Some(agent));
    // An imported desktop that never connected has no identity yet.
    let imported = desktops(s, &p, 1).await;
    let identity = s.find_desktop_by_instance_uid(&p, "").await.unwrap();
    assert_eq!(identity, None);
    assert_eq!(
        s.get_desktop(&p, &imported[0])
            .await
            .unwrap()
            .unwrap()
            .agent,
        None
    );
}

pub async fn facts_and_agent_state(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    s.create_enrollment_token(&p, Some(&ds[0]), "tok-0", T0, T0 + 1000)
        .await
        .unwrap();
    let d = enroll(
        s,
        &p,
        &claiming("uid-1", "pc-0", "cred-1", &ds[0], "tok-0"),
        T0,
    )
    .await
    .desktop;
    assert_eq!(d.id, ds[0], "claimed pc-0");

    s.record_desktop_facts(
        &d.id,
        &facts("renamed", &["192.168.1.5", "10.1.1.1"]),
        T0 + 1,
    )
    .await
    .unwrap();
    let identity = s
        .find_desktop_by_credential("cred-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.hostname.as_deref(), Some("renamed"));
    assert_eq!(identity.desktop.computer_name, "pc-0", "not renamed");
    assert_eq!(identity.desktop.ip_address, "192.168.1.5");
    assert_eq!(identity.desktop.os_type, "Linux");
    // No address reported: the last known one stays.
    let mut quiet = facts("renamed", &[]);
    quiet.os_type = "Windows".to_owned();
    s.record_desktop_facts(&d.id, &quiet, T0 + 2).await.unwrap();
    let now = s.get_desktop(&p, &d.id).await.unwrap().unwrap();
    assert_eq!(
        (now.ip_address.as_str(), now.os_type.as_str()),
        ("192.168.1.5", "Windows")
    );
    assert!(matches!(
        s.record_desktop_facts(&DesktopId::generate(), &quiet, T0)
            .await,
        Err(StoreError::NotFound)
    ));

    let installed = |v| AgentFilter {
        is_installed: Some(v),
        ..Default::default()
    };
    let pr = &p;
    let count = |f: AgentFilter| async move {
        let (total, conditions) = s.list_agent_conditions(pr, &f, all()).await.unwrap();
        (
            total,
            conditions
                .into_iter()
                .map(|c| c.desktop)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(count(installed(true)).await.0, 0);
    let agent = AgentState {
        version: "2.0.0".to_owned(),
        healthy: false,
        reported_at: T0 + 4,
    };
    s.record_agent_state(&ds[1], Some(&agent)).await.unwrap();
    let desktop = s.get_desktop(&p, &ds[1]).await.unwrap().unwrap();
    assert_eq!(desktop.agent, Some(agent.clone()));
    let (n, listed) = count(installed(true)).await;
    assert_eq!(n, 1);
    assert_eq!(listed[0].id, ds[1]);
    assert_eq!(listed[0].agent, Some(agent));
    let (n, listed) = count(installed(false)).await;
    assert_eq!((n, &listed[0].id), (1, &ds[0]));

    let healthy = AgentState {
        version: "2.0.1".to_owned(),
        healthy: true,
        reported_at: T0 + 5,
    };
    s.record_agent_state(&ds[1], Some(&healthy)).await.unwrap();
    assert_eq!(
        s.get_desktop(&p, &ds[1]).await.unwrap().unwrap().agent,
        Some(healthy)
    );
    s.record_agent_state(&ds[1], None).await.unwrap();
    assert_eq!(
        s.get_desktop(&p, &ds[1]).await.unwrap().unwrap().agent,
        None
    );
    assert_eq!(count(installed(true)).await.0, 0);
    assert_eq!(count(installed(false)).await.0, 2);
    assert!(matches!(
        s.record_agent_state(&DesktopId::generate(), None).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn metrics_keep_the_latest_per_desktop(ctx: Ctx) {
    let s = &*ctx.store;
    let a = project(s, "a").await;
    let b = project(s, "b").await;
    let da = desktops(s, &a, 2).await;
    let db = desktops(s, &b, 1).await;
    assert_eq!(s.get_metrics(&a, &da[0]).await.unwrap(), None);
    s.record_metrics(&da[0], r#"{"cpu":1}"#, T0).await.unwrap();
    s.record_metrics(&db[0], r#"{"cpu":9}"#, T0).await.unwrap();
    let got = s.get_metrics(&a, &da[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            &got.desktop_id,
            &got.project_id,
            got.json.as_str(),
            got.received_at
        ),
        (&da[0], &a, r#"{"cpu":1}"#, T0)
    );
    s.record_metrics(&da[0], r#"{"cpu":2}"#, T0 + 5)
        .await
        .unwrap();
    let got = s.get_metrics(&a, &da[0]).await.unwrap().unwrap();
    assert_eq!(
        (got.json.as_str(), got.received_at),
        (r#"{"cpu":2}"#, T0 + 5)
    );
    assert_eq!(s.get_metrics(&a, &da[1]).await.unwrap(), None);
    assert_eq!(
        s.get_metrics(&b, &da[0]).await.unwrap(),
        None,
        "another project's desktop"
    );
    assert_eq!(s.get_metrics(&a, &db[0]).await.unwrap(), None);
    assert_eq!(
        s.get_metrics(&b, &db[0]).await.unwrap().unwrap().json,
        r#"{"cpu":9}"#
    );
    assert!(matches!(
        s.record_metrics(&DesktopId::generate(), "{}", T0).await,
        Err(StoreError::NotFound)
    ));
}

pub fn package(
    id: &str,
    version: &str,
    platform: &str,
    created_at: i64,
    blob: &[u8],
) -> PackageMeta {
    PackageMeta {
        withdrawn_at: None,
        id: id.to_owned(),
        name: "deskfleet-monitor".to_owned(),
        version: version.to_owned(),
        platform: platform.to_owned(),
        size: blob.len() as u64,
        sha256: format!("sha-of-{id}"),
        signature: format!("sig-of-{id}"),
        created_at,
    }
}

pub async fn packages_publish_latest_and_get(ctx: Ctx) {
    let s = &*ctx.store;
    const LINUX: &str = "linux-x86_64";
    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX).await.unwrap(),
        None
    );
    // Every byte value, and more than a page or two.
    let big: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
    let v1 = package("p1", "1.0.0", LINUX, T0, b"\x00\x01\xffv1");
    let v2 = package("p2", "2.0.0", LINUX, T0 + 10, &big);
    let arm = package("p3", "3.0.0", "linux-aarch64", T0 + 20, b"arm");
    s.publish_package(&v1, b"\x00\x01\xffv1").await.unwrap();
    s.publish_package(&v2, &big).await.unwrap();
    s.publish_package(&arm, b"arm").await.unwrap();
    // Published later but built earlier: not the latest.
    let late = package("p4", "1.5.0", LINUX, T0 + 5, b"late");
    s.publish_package(&late, b"late").await.unwrap();

    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        s.latest_package("deskfleet-monitor", "linux-aarch64")
            .await
            .unwrap(),
        Some(arm)
    );
    assert_eq!(s.latest_package("other", LINUX).await.unwrap(), None);
    assert_eq!(
        s.get_package("p2").await.unwrap(),
        Some((v2.clone(), big.clone()))
    );
    assert_eq!(
        s.get_package("p1").await.unwrap(),
        Some((v1, b"\x00\x01\xffv1".to_vec()))
    );
    assert_eq!(s.get_package("nope").await.unwrap(), None);

    let again = package("p5", "2.0.0", LINUX, T0 + 30, b"again");
    assert!(matches!(
        s.publish_package(&again, b"again").await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.get_package("p5").await.unwrap(), None);
    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX)
            .await
            .unwrap()
            .map(|m| m.id),
        Some("p2".to_owned())
    );
    // Two published in the same millisecond: the one stored last is the latest.
    let tie = package("p6", "2.0.1", LINUX, T0 + 10, b"tie");
    s.publish_package(&tie, b"tie").await.unwrap();
    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX).await.unwrap(),
        Some(tie)
    );
}

pub async fn withdrawn_versions_are_kept_but_not_offered(ctx: Ctx) {
    let s = &*ctx.store;
    const LINUX: &str = "linux-x86_64";
    let old = package("w1", "1.0.0", LINUX, T0, b"old");
    let new = package("w2", "2.0.0", LINUX, T0 + 10, b"new");
    let new_arm = package("w3", "2.0.0", "linux-aarch64", T0 + 10, b"arm");
    for (p, blob) in [(&old, b"old"), (&new, b"new"), (&new_arm, b"arm")] {
        s.publish_package(p, blob).await.unwrap();
    }
    assert_eq!(
        s.set_package_withdrawn("deskfleet-monitor", "2.0.0", Some(T0 + 20))
            .await
            .unwrap(),
        2,
        "every platform's build of the version"
    );
    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX).await.unwrap(),
        Some(old.clone()),
        "a withdrawn version is no longer the newest"
    );
    assert_eq!(
        s.latest_package("deskfleet-monitor", "linux-aarch64")
            .await
            .unwrap(),
        None
    );
    let found = s
        .find_package_version("deskfleet-monitor", "2.0.0", LINUX)
        .await
        .unwrap()
        .expect("a withdrawn version is still found");
    assert_eq!(found.withdrawn_at, Some(T0 + 20));
    assert!(s.get_package("w2").await.unwrap().is_some(), "and served");
    assert_eq!(
        s.find_package_version("deskfleet-monitor", "9.9.9", LINUX)
            .await
            .unwrap(),
        None
    );
    let listed: Vec<_> = s
        .list_packages("deskfleet-monitor")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.platform, p.version, p.withdrawn_at.is_some()))
        .collect();
    assert_eq!(
        listed,
        [
            ("linux-aarch64".to_owned(), "2.0.0".to_owned(), true),
            (LINUX.to_owned(), "2.0.0".to_owned(), true),
            (LINUX.to_owned(), "1.0.0".to_owned(), false),
        ]
    );
    assert_eq!(
        s.set_package_withdrawn("deskfleet-monitor", "2.0.0", None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.latest_package("deskfleet-monitor", LINUX).await.unwrap(),
        Some(new)
    );
    assert_eq!(
        s.set_package_withdrawn("deskfleet-monitor", "7.0.0", Some(T0))
            .await
            .unwrap(),
        0
    );
}

pub async fn waiting_work_lists_waiting_leaders_only(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 5).await;
    let waiting = |limit| async move {
        let mut ids = s.desktops_with_waiting_work(limit).await.unwrap();
        ids.sort();
        ids
    };
    assert!(waiting(100).await.is_empty());

    // ds[0]: a WAITING leader with a follower. ds[1]: RUNNING, with a WAITING follower.
    // ds[2]: done. ds[3]: waits, queued later than ds[0]. ds[4]: nothing.
    let first = install(s, &p, &ds[..3], T0).await;
    claim(s, &ds[1], T0 + 1).await;
    let done = claim(s, &ds[2], T0 + 1).await;
    assert!(
        s.finish_sub_job(&done.id, &Outcome::Success, T0 + 2)
            .await
            .unwrap()
    );
    let second = install(s, &p, &ds[..2], T0 + 3).await;
    install(s, &p, &ds[3..4], T0 + 4).await;
    assert_eq!(
        sub_job_of(s, &p, &second.id, &ds[1]).await.status,
        SubJobStatus::Waiting,
        "a follower of a running install still waits"
    );
    let mut expected = vec![ds[0].clone(), ds[3].clone()];
    expected.sort();
    assert_eq!(waiting(100).await, expected);
    assert_eq!(
        s.desktops_with_waiting_work(1).await.unwrap(),
        [ds[0].clone()],
        "the earliest delivery deadline first"
    );

    // Canceling the waiting leader hands the install to its follower, which now waits.
    s.cancel_job(&p, &first.id, T0 + 5).await.unwrap();
    assert_eq!(waiting(100).await, expected);
    claim(s, &ds[0], T0 + 6).await;
    assert_eq!(waiting(100).await, [ds[3].clone()]);
    // Work that timed out waits no more.
    s.expire_overdue(T0 + 4 + DELIVER + 1).await.unwrap();
    assert!(waiting(100).await.is_empty());
}

pub async fn running_sub_job_is_the_running_leader(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let j1 = install(s, &p, &ds[..1], T0).await;
    let j2 = install(s, &p, &ds[..1], T0 + 1).await;
    assert_eq!(s.running_sub_job(&ds[0]).await.unwrap(), None, "waiting");
    let leader = claim(s, &ds[0], T0 + 2).await;
    assert_eq!(leader.job_id, j1.id);
    let running = s.running_sub_job(&ds[0]).await.unwrap().unwrap();
    assert_eq!(running, sub_job_of(s, &p, &j1.id, &ds[0]).await);
    assert_eq!(running.status, SubJobStatus::Running);
    assert_eq!(
        sub_job_of(s, &p, &j2.id, &ds[0]).await.status,
        SubJobStatus::Running,
        "the follower runs along, but is not the one to report on"
    );
    assert_eq!(s.running_sub_job(&ds[1]).await.unwrap(), None);
    assert!(
        s.finish_sub_job(&leader.id, &Outcome::Success, T0 + 3)
            .await
            .unwrap()
    );
    assert_eq!(s.running_sub_job(&ds[0]).await.unwrap(), None);
}

fn progress(sub_job: &SubJobId, stage: Stage, process: i32, execute_by: i64) -> SubJobReport {
    SubJobReport::Progress {
        sub_job: sub_job.clone(),
        stage,
        process,
        execute_by,
    }
}

fn done(sub_job: &SubJobId, outcome: Outcome) -> SubJobReport {
    SubJobReport::Finish {
        sub_job: sub_job.clone(),
        outcome,
    }
}

pub async fn reports_record_progress_and_results(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 1).await;
    let j1 = install(s, &p, &ds, T0).await;
    let leader = claim(s, &ds[0], T0 + 1).await;
    // Created while the leader runs: it waits until the next report mirrors the leader.
    let j2 = install(s, &p, &ds, T0 + 2).await;
    assert_eq!(
        sub_job_of(s, &p, &j2.id, &ds[0]).await.status,
        SubJobStatus::Waiting
    );

    let pct = Stage::Downloading.process(Some(50));
    let pushed = T0 + 10 * EXECUTE;
    assert_eq!(
        s.apply_reports(
            &[progress(&leader.id, Stage::Downloading, pct, pushed)],
            T0 + 3
        )
        .await
        .unwrap(),
        [true]
    );
    for j in [&j1, &j2] {
        let sub = sub_job_of(s, &p, &j.id, &ds[0]).await;
        assert_eq!(
            (sub.status, sub.stage, sub.process),
            (SubJobStatus::Running, Stage::Downloading, pct)
        );
        assert_eq!(job(s, &p, &j.id).await.0.status, JobStatus::Running);
    }
    // The execution deadline moved out.
    assert_eq!(
        s.expire_overdue(T0 + 2 * EXECUTE).await.unwrap(),
        Expired::default()
    );

    assert_eq!(
        s.apply_reports(&[done(&leader.id, Outcome::Success)], T0 + 4)
            .await
            .unwrap(),
        [true]
    );
    for j in [&j1, &j2] {
        let sub = sub_job_of(s, &p, &j.id, &ds[0]).await;
        assert_eq!(
            (sub.status, sub.stage, sub.process, sub.end_time),
            (SubJobStatus::Success, Stage::Healthy, 100, Some(T0 + 4))
        );
        let (finished, _) = job(s, &p, &j.id).await;
        assert_eq!(
            (finished.status, finished.end_time),
            (JobStatus::Success, Some(T0 + 4))
        );
    }

    // Reported twice: recorded once.
    let before = (job(s, &p, &j1.id).await, job(s, &p, &j2.id).await);
    let late = Outcome::Failed {
        code: "WKS.00990008".into(),
        reason: "late".into(),
    };
    assert_eq!(
        s.apply_reports(
            &[
                done(&leader.id, Outcome::Success),
                done(&leader.id, late),
                progress(&leader.id, Stage::Installing, 70, pushed),
            ],
            T0 + 9
        )
        .await
        .unwrap(),
        [false, false, false]
    );
    assert_eq!((job(s, &p, &j1.id).await, job(s, &p, &j2.id).await), before);
    assert_eq!(s.apply_reports(&[], T0).await.unwrap(), Vec::<bool>::new());
}

pub async fn reports_about_work_not_running_change_nothing(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 2).await;
    let j1 = install(s, &p, &ds, T0).await;
    let j2 = install(s, &p, &ds[..1], T0 + 1).await;
    claim(s, &ds[0], T0 + 2).await;
    let waiting = sub_job_of(s, &p, &j1.id, &ds[1]).await;
    let follower = sub_job_of(s, &p, &j2.id, &ds[0]).await;
    assert_eq!(follower.status, SubJobStatus::Running);
    let before = (job(s, &p, &j1.id).await, job(s, &p, &j2.id).await);
    let reports = [
        done(&waiting.id, Outcome::Success),
        progress(&waiting.id, Stage::Installing, 70, T0 + EXECUTE),
        done(&follower.id, Outcome::Success),
        progress(&follower.id, Stage::Installing, 70, T0 + EXECUTE),
        done(&SubJobId::generate(), Outcome::Success),
    ];
    assert_eq!(s.apply_reports(&reports, T0 + 3).await.unwrap(), [false; 5]);
    assert_eq!((job(s, &p, &j1.id).await, job(s, &p, &j2.id).await), before);
    assert_eq!(
        s.desktops_with_waiting_work(10).await.unwrap(),
        [ds[1].clone()]
    );
}

pub async fn a_mixed_batch_of_reports_applies_in_order(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let ds = desktops(s, &p, 4).await;
    let j = install(s, &p, &ds, T0).await;
    let follower_job = install(s, &p, &ds[..1], T0 + 1).await;
    let a = claim(s, &ds[0], T0 + 2).await;
    let b = claim(s, &ds[1], T0 + 2).await;
    let c = claim(s, &ds[2], T0 + 2).await;
    let d = sub_job_of(s, &p, &j.id, &ds[3]).await;
    let failed = Outcome::Failed {
        code: "WKS.00990004".into(),
        reason: "download failed".into(),
    };
    let deadline = T0 + EXECUTE;
    let reports = [
        progress(&a.id, Stage::Installing, 70, deadline),
        done(&b.id, failed.clone()),
        done(&d.id, Outcome::Success),
        progress(&c.id, Stage::Verifying, 60, deadline),
        done(&a.id, Outcome::Success),
        done(&a.id, Outcome::Success),
        progress(&b.id, Stage::Installing, 70, deadline),
    ];
    assert_eq!(
        s.apply_reports(&reports, T0 + 5).await.unwrap(),
        [true, true, false, true, true, false, false]
    );
    let sub = |desktop: usize| sub_job_of(s, &p, &j.id, &ds[desktop]);
    let a_now = sub(0).await;
    assert_eq!(
        (a_now.status, a_now.stage, a_now.end_time),
        (SubJobStatus::Success, Stage::Healthy, Some(T0 + 5))
    );
    let b_now = sub(1).await;
    assert_eq!(b_now.status, SubJobStatus::Failed);
    assert_eq!(b_now.stage, Stage::Delivered, "where it failed");
    assert_eq!(b_now.error_code.as_deref(), Some("WKS.00990004"));
    let c_now = sub(2).await;
    assert_eq!(
        (c_now.status, c_now.stage, c_now.process),
        (SubJobStatus::Running, Stage::Verifying, 60)
    );
    assert_eq!(sub(3).await, d, "never claimed, untouched");
    let f = sub_job_of(s, &p, &follower_job.id, &ds[0]).await;
    assert_eq!(
        (f.status, f.end_time),
        (SubJobStatus::Success, Some(T0 + 5))
    );
    assert_eq!(
        job(s, &p, &follower_job.id).await.0.status,
        JobStatus::Success
    );
    let (mid, _) = job(s, &p, &j.id).await;
    assert_eq!((mid.status, mid.error_code), (JobStatus::Running, None));

    // The rest ends the job: it fails with b's failure as its first.
    let d = claim(s, &ds[3], T0 + 6).await;
    let last = [done(&c.id, Outcome::Success), done(&d.id, Outcome::Success)];
    assert_eq!(s.apply_reports(&last, T0 + 7).await.unwrap(), [true, true]);
    let (end, _) = job(s, &p, &j.id).await;
    assert_eq!(end.status, JobStatus::Fail);
    assert_eq!(end.error_code.as_deref(), Some("WKS.00990004"));
    assert_eq!((end.begin_time, end.end_time), (Some(T0), Some(T0 + 7)));
}

/// Many desktops of one job report at once: every report lands, and the job, written by
/// each of them, ends counting them all.
pub async fn concurrent_reports_all_land(ctx: Ctx) {
    let p = project(&*ctx.store, "main").await;
    let ds = desktops(&*ctx.store, &p, 40).await;
    let s = &*ctx.store;
    let j1 = install(s, &p, &ds, T0).await;
    let mut leaders = Vec::new();
    for d in &ds {
        leaders.push(claim(s, d, T0 + 1).await);
    }
    // Every other desktop has a second install following the first.
    let evens: Vec<DesktopId> = ds.iter().step_by(2).cloned().collect();
    let j2 = install(s, &p, &evens, T0 + 2).await;
    let mut calls = JoinSet::new();
    for (i, leader) in leaders.into_iter().enumerate() {
        let store = ctx.store.clone();
        calls.spawn(async move {
            let pct = Stage::Downloading.process(Some(30));
            let step = progress(&leader.id, Stage::Downloading, pct, T0 + EXECUTE);
            let first = store.apply_reports(&[step], T0 + 3).await?;
            let outcome = if i % 10 == 9 {
                Outcome::Failed {
                    code: "WKS.00990008".into(),
                    reason: format!("failure {i}"),
                }
            } else {
                Outcome::Success
            };
            // Half the results come the single-report way: both must count right
            // however they interleave.
            let second = if i % 2 == 0 {
                store
                    .apply_reports(&[done(&leader.id, outcome)], T0 + 4)
                    .await?
            } else {
                vec![store.finish_sub_job(&leader.id, &outcome, T0 + 4).await?]
            };
            Ok::<_, StoreError>((first, second))
        });
    }
    for result in calls.join_all().await {
        assert_eq!(result.expect("apply reports"), (vec![true], vec![true]));
    }
    let (first, subs) = job(s, &p, &j1.id).await;
    assert_eq!(first.status, JobStatus::Fail);
    assert_eq!(
        subs.iter()
            .filter(|s| s.status == SubJobStatus::Success)
            .count(),
        36
    );
    assert!(subs.iter().all(|s| s.status.is_terminal()));
    let (second, subs) = job(s, &p, &j2.id).await;
    assert!(subs.iter().all(|s| s.status.is_terminal()), "{subs:#?}");
    assert_eq!(second.end_time, Some(T0 + 4));
    assert!(s.desktops_with_waiting_work(100).await.unwrap().is_empty());
}
