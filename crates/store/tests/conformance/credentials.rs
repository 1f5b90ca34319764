//! Taking credentials back: failure counters and locks shared by every replica, the
//! credential revision servers poll, and the revoke, disable and delete calls.

use crate::harness::{Ctx, T0, claim, desktops, install, job, project};
use deskfleet_core::fleet::{Claim, DesktopFacts, Enrollment};
use deskfleet_core::ids::{DesktopId, ProjectId, UserId};
use deskfleet_core::job::JobStatus;
use deskfleet_core::model::{AccessKey, AuthFailures, AuthSubject, Lockout, Role, TokenRecord};
use deskfleet_core::store::{Store, StoreError};

const LOCKOUT: Lockout = Lockout {
    failures: 3,
    lock_ms: 60_000,
};

async fn revision(s: &dyn Store) -> i64 {
    s.credential_revision().await.unwrap()
}

/// A user with an admin role on a project of its own and one access key.
async fn user_with_key(s: &dyn Store, name: &str) -> (UserId, ProjectId, String) {
    let domain = s.create_domain(&format!("d-{name}")).await.unwrap();
    let project = s.create_project(&domain.id, "main").await.unwrap();
    let user = s
        .create_user(&domain.id, name, "$argon2id$x")
        .await
        .unwrap();
    s.grant_role(&user.id, &project.id, Role::Admin)
        .await
        .unwrap();
    let ak = format!("AK{}", name.to_uppercase());
    s.create_access_key(&AccessKey {
        access_key: ak.clone(),
        secret_key: "v1:opaque".into(),
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        created_at: T0,
    })
    .await
    .unwrap();
    (user.id, project.id, ak)
}

pub async fn failures_lock_after_the_threshold_and_run_out(ctx: Ctx) {
    let s = &*ctx.store;
    let (user, _, ak) = user_with_key(s, "alice").await;
    let key = AuthSubject::AccessKey(ak);
    let login = AuthSubject::User(user);
    assert_eq!(s.auth_failures(&key).await.unwrap(), None);

    let r0 = revision(s).await;
    let first = s.record_auth_failure(&key, T0, LOCKOUT).await.unwrap();
    assert_eq!(
        first,
        AuthFailures {
            failures: 1,
            locked_until: None
        }
    );
    s.record_auth_failure(&key, T0 + 1, LOCKOUT).await.unwrap();
    assert_eq!(
        revision(s).await,
        r0,
        "counting alone does not move the revision"
    );
    let locked = s.record_auth_failure(&key, T0 + 2, LOCKOUT).await.unwrap();
    assert_eq!(locked.failures, 3);
    assert_eq!(locked.locked_until, Some(T0 + 2 + 60_000));
    assert_eq!(locked.locked_at(T0 + 3), Some(T0 + 2 + 60_000));
    assert!(revision(s).await > r0, "a lock moves the revision");
    assert_eq!(s.auth_failures(&key).await.unwrap(), Some(locked));
    // Subjects are counted apart.
    assert_eq!(s.auth_failures(&login).await.unwrap(), None);

    // A failure during the lock does not extend it.
    let during = s.record_auth_failure(&key, T0 + 10, LOCKOUT).await.unwrap();
    assert_eq!(during.locked_until, locked.locked_until);
    // Once the lock ran out, counting starts afresh.
    let after = s
        .record_auth_failure(&key, T0 + 2 + 60_000, LOCKOUT)
        .await
        .unwrap();
    assert_eq!(
        after,
        AuthFailures {
            failures: 1,
            locked_until: None
        }
    );

    // Clearing (a success, or the admin's unlock) forgets everything, once.
    let r1 = revision(s).await;
    assert!(s.clear_auth_failures(&key).await.unwrap());
    assert_eq!(s.auth_failures(&key).await.unwrap(), None);
    assert!(revision(s).await > r1);
    assert!(!s.clear_auth_failures(&key).await.unwrap());
}

pub async fn failures_from_concurrent_callers_all_count(ctx: Ctx) {
    let store = ctx.store.clone();
    let subject = AuthSubject::User(UserId::generate());
    let lockout = Lockout {
        failures: 1000,
        lock_ms: 1,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (store, subject) = (store.clone(), subject.clone());
        tasks.spawn(async move {
            store
                .record_auth_failure(&subject, T0 + i, lockout)
                .await
                .unwrap()
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(
        store
            .auth_failures(&subject)
            .await
            .unwrap()
            .unwrap()
            .failures,
        20
    );
    drop(store);
}

pub async fn projects_of_a_user_are_those_with_a_role(ctx: Ctx) {
    let s = &*ctx.store;
    let domain = s.create_domain("acme").await.unwrap();
    let a = s.create_project(&domain.id, "cn-north-4").await.unwrap();
    let b = s
        .create_project(&domain.id, "ap-southeast-1")
        .await
        .unwrap();
    let _c = s.create_project(&domain.id, "eu-west-0").await.unwrap();
    let user = s.create_user(&domain.id, "bob", "h").await.unwrap();
    assert_eq!(s.list_user_projects(&user.id, None).await.unwrap(), vec![]);
    s.grant_role(&user.id, &a.id, Role::Readonly).await.unwrap();
    s.grant_role(&user.id, &b.id, Role::Admin).await.unwrap();
    assert_eq!(
        s.list_user_projects(&user.id, None).await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.list_user_projects(&user.id, Some("cn-north-4"))
            .await
            .unwrap(),
        vec![a]
    );
    assert_eq!(
        s.list_user_projects(&user.id, Some("eu-west-0"))
            .await
            .unwrap(),
        vec![]
    );
}

pub async fn secret_keys_are_replaced_only_if_unchanged(ctx: Ctx) {
    let s = &*ctx.store;
    let (_, _, ak) = user_with_key(s, "carol").await;
    assert_eq!(s.list_access_keys().await.unwrap().len(), 1);
    assert!(!s.replace_secret_key(&ak, "stale", "v1:new").await.unwrap());
    assert!(
        s.replace_secret_key(&ak, "v1:opaque", "v1:new")
            .await
            .unwrap()
    );
    assert!(
        !s.replace_secret_key(&ak, "v1:opaque", "v1:other")
            .await
            .unwrap()
    );
    assert_eq!(
        s.find_access_key(&ak).await.unwrap().unwrap().secret_key,
        "v1:new"
    );
    assert!(!s.replace_secret_key("AKNONE", "a", "b").await.unwrap());
}

pub async fn deleting_a_key_forgets_it_and_its_failures(ctx: Ctx) {
    let s = &*ctx.store;
    let (_, _, ak) = user_with_key(s, "dave").await;
    let subject = AuthSubject::AccessKey(ak.clone());
    s.record_auth_failure(&subject, T0, LOCKOUT).await.unwrap();
    let r0 = revision(s).await;
    s.delete_access_key(&ak).await.unwrap();
    assert!(revision(s).await > r0);
    assert_eq!(s.find_access_key(&ak).await.unwrap(), None);
    assert_eq!(s.auth_failures(&subject).await.unwrap(), None);
    assert!(matches!(
        s.delete_access_key(&ak).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn users_are_disabled_enabled_and_lose_their_tokens(ctx: Ctx) {
    let s = &*ctx.store;
    let (user, project, _) = user_with_key(s, "erin").await;
    assert!(!s.find_user_by_id(&user).await.unwrap().unwrap().disabled);
    let r0 = revision(s).await;
    s.set_user_disabled(&user, true).await.unwrap();
    assert!(s.find_user_by_id(&user).await.unwrap().unwrap().disabled);
    assert!(
        s.find_user("d-erin", "erin")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(revision(s).await > r0);
    s.set_user_disabled(&user, false).await.unwrap();
    assert!(!s.find_user_by_id(&user).await.unwrap().unwrap().disabled);
    assert!(matches!(
        s.set_user_disabled(&UserId::generate(), true).await,
        Err(StoreError::NotFound)
    ));

    for (i, sha) in ["a".repeat(64), "b".repeat(64)].iter().enumerate() {
        let record = TokenRecord {
            user_id: user.clone(),
            project_id: project.clone(),
            issued_at: T0 + i as i64,
            expires_at: T0 + 86_400_000,
        };
        s.insert_token(sha, &record).await.unwrap();
    }
    let r1 = revision(s).await;
    assert_eq!(s.revoke_user_tokens(&user).await.unwrap(), 2);
    assert!(revision(s).await > r1);
    assert_eq!(s.find_token(&"a".repeat(64)).await.unwrap(), None);
    assert_eq!(s.revoke_user_tokens(&user).await.unwrap(), 0);
    assert!(matches!(
        s.revoke_user_tokens(&UserId::generate()).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn a_role_change_moves_the_revision(ctx: Ctx) {
    let s = &*ctx.store;
    let (user, project, _) = user_with_key(s, "frank").await;
    let r0 = revision(s).await;
    s.grant_role(&user, &project, Role::Readonly).await.unwrap();
    assert!(revision(s).await > r0);
}

pub async fn enrollment_tokens_are_revoked(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    s.create_enrollment_token(&p, None, "tok", T0, T0 + 1000)
        .await
        .unwrap();
    let grant = s.find_enrollment_token("tok", T0).await.unwrap();
    assert_eq!(grant.map(|g| (g.project, g.desktop)), Some((p, None)));
    s.revoke_enrollment_token("tok").await.unwrap();
    assert_eq!(s.find_enrollment_token("tok", T0).await.unwrap(), None);
    assert!(matches!(
        s.revoke_enrollment_token("tok").await,
        Err(StoreError::NotFound)
    ));
}

pub async fn deleting_a_desktop_removes_it_and_its_work(ctx: Ctx) {
    let s = &*ctx.store;
    let p = project(s, "main").await;
    let other = project(s, "other").await;
    let ds = desktops(s, &p, 2).await;
    s.create_enrollment_token(&p, Some(&ds[0]), "bound", T0, T0 + 1000)
        .await
        .unwrap();
    let enrolled = s
        .enroll_desktop(
            &p,
            &Enrollment {
                instance_uid: "uid-1".into(),
                facts: DesktopFacts {
                    hostname: ds_name(s, &p, &ds[0]).await,
                    os_type: "Linux".into(),
                    ip_addresses: vec!["10.0.0.9".into()],
                },
                credential_sha256: "cred-1".into(),
                claim: Some(Claim {
                    desktop: ds[0].clone(),
                    token_sha256: "bound".into(),
                }),
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(enrolled.desktop.id, ds[0], "the import is claimed");
    s.record_metrics(&ds[0], "{}", T0).await.unwrap();
    // One job on both desktops: the first desktop's sub-job runs when it is deleted.
    let j = install(s, &p, &ds, T0).await;
    claim(s, &ds[0], T0 + 1).await;

    assert!(matches!(
        s.delete_desktop(&other, &ds[0], T0 + 2).await,
        Err(StoreError::NotFound)
    ));
    let r0 = revision(s).await;
    s.delete_desktop(&p, &ds[0], T0 + 2).await.unwrap();
    assert!(revision(s).await > r0);
    assert_eq!(s.get_desktop(&p, &ds[0]).await.unwrap(), None);
    assert_eq!(s.find_desktop_by_credential("cred-1").await.unwrap(), None);
    assert_eq!(s.get_metrics(&p, &ds[0]).await.unwrap(), None);
    let (job_now, subs) = job(s, &p, &j.id).await;
    assert_eq!(subs.len(), 1, "the deleted desktop's sub-job went with it");
    assert_eq!(subs[0].desktop_id, ds[1]);
    assert_eq!(job_now.status, JobStatus::Waiting);
    assert!(matches!(
        s.delete_desktop(&p, &ds[0], T0 + 3).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_desktop(&p, &DesktopId::generate(), T0 + 3).await,
        Err(StoreError::NotFound)
    ));
}

async fn ds_name(s: &dyn Store, p: &ProjectId, d: &DesktopId) -> String {
    s.get_desktop(p, d).await.unwrap().unwrap().computer_name
}

/// Another replica (or an admin command) changes a credential or queues work through its
/// own store: this store's subscribers hear of it at once (PostgreSQL). SQLite cannot
/// tell (one server; its poll sees an admin command's change).
pub async fn changes_are_signalled_to_every_replica(ctx: Ctx) {
    use deskfleet_core::store::Signal;
    use std::time::Duration;
    let s = &*ctx.store;
    let Some(mut credentials) = s.subscribe(Signal::Credentials) else {
        assert_eq!(s.backend(), "sqlite");
        assert!(s.subscribe(Signal::Work).is_none());
        s.raise(Signal::Work);
        return;
    };
    let mut work = s
        .subscribe(Signal::Work)
        .expect("both signals are listened to");
    const AT_ONCE: Duration = Duration::from_secs(5);
    // The listener raises both once it listens (what came before is not known).
    tokio::time::timeout(AT_ONCE, credentials.raised())
        .await
        .expect("the listener starts");
    tokio::time::timeout(AT_ONCE, work.raised())
        .await
        .expect("the listener starts");

    let other = deskfleet_store::connect(ctx.url()).await.unwrap();
    let domain = other.create_domain("acme").await.unwrap();
    let user = other.create_user(&domain.id, "bob", "h").await.unwrap();
    other.set_user_disabled(&user.id, true).await.unwrap();
    tokio::time::timeout(AT_ONCE, credentials.raised())
        .await
        .expect("a credential change on another replica is signalled");

    other.raise(Signal::Work);
    tokio::time::timeout(AT_ONCE, work.raised())
        .await
        .expect("work queued on another replica is signalled");
}
