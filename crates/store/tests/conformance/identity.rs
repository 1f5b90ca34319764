use crate::harness::{Ctx, T0};
use deskfleet_core::ids::{DomainId, ProjectId, UserId};
use deskfleet_core::model::{AccessKey, Role, TokenRecord};
use deskfleet_core::store::StoreError;

pub async fn domains_and_projects(ctx: Ctx) {
    let s = &*ctx.store;
    let acme = s.create_domain("acme").await.unwrap();
    assert_eq!(
        s.find_domain_by_name("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(s.find_domain_by_name("ACME").await.unwrap(), None);
    assert!(matches!(
        s.create_domain("acme").await,
        Err(StoreError::AlreadyExists(_))
    ));

    let other = s.create_domain("other").await.unwrap();
    let p1 = s.create_project(&acme.id, "cn-north-4").await.unwrap();
    assert_eq!(p1.domain, acme);
    assert_eq!(s.find_project(&p1.id).await.unwrap(), Some(p1.clone()));
    assert!(matches!(
        s.create_project(&acme.id, "cn-north-4").await,
        Err(StoreError::AlreadyExists(_))
    ));
    // Names are unique per domain, not globally.
    let p2 = s.create_project(&other.id, "cn-north-4").await.unwrap();
    let p3 = s.create_project(&acme.id, "ap-southeast-1").await.unwrap();
    assert_ne!(p1.id, p2.id);

    let of_acme = s.list_projects(Some(&acme.id), None).await.unwrap();
    assert_eq!(of_acme, vec![p3.clone(), p1.clone()], "ordered by name");
    let named = s.list_projects(None, Some("cn-north-4")).await.unwrap();
    assert_eq!(named.len(), 2);
    assert!(named.contains(&p1) && named.contains(&p2));
    assert_eq!(
        s.list_projects(Some(&other.id), Some("cn-north-4"))
            .await
            .unwrap(),
        vec![p2]
    );
    assert_eq!(s.list_projects(None, None).await.unwrap().len(), 3);

    let nowhere = DomainId::generate();
    assert!(matches!(
        s.create_project(&nowhere, "x").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.find_project(&ProjectId::generate()).await.unwrap(), None);
}

pub async fn users_roles_keys_and_tokens(ctx: Ctx) {
    let s = &*ctx.store;
    let acme = s.create_domain("acme").await.unwrap();
    let other = s.create_domain("other").await.unwrap();
    let project = s.create_project(&acme.id, "main").await.unwrap();
    let second = s.create_project(&acme.id, "second").await.unwrap();

    let alice = s
        .create_user(&acme.id, "alice", "$argon2id$x")
        .await
        .unwrap();
    assert_eq!(alice.domain, acme);
    assert_eq!(alice.password_hash, "$argon2id$x");
    assert_eq!(
        s.find_user("acme", "alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(s.find_user("other", "alice").await.unwrap(), None);
    assert_eq!(
        s.find_user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(s.find_user_by_id(&UserId::generate()).await.unwrap(), None);
    assert!(matches!(
        s.create_user(&acme.id, "alice", "h").await,
        Err(StoreError::AlreadyExists(_))
    ));
    let other_alice = s.create_user(&other.id, "alice", "h2").await.unwrap();
    assert_eq!(
        s.find_user("other", "alice").await.unwrap(),
        Some(other_alice)
    );

    assert_eq!(s.find_role(&alice.id, &project.id).await.unwrap(), None);
    s.grant_role(&alice.id, &project.id, Role::Readonly)
        .await
        .unwrap();
    assert_eq!(
        s.find_role(&alice.id, &project.id).await.unwrap(),
        Some(Role::Readonly)
    );
    s.grant_role(&alice.id, &project.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        s.find_role(&alice.id, &project.id).await.unwrap(),
        Some(Role::Admin),
        "granting again replaces the role"
    );
    assert_eq!(s.find_role(&alice.id, &second.id).await.unwrap(), None);

    let key = AccessKey {
        access_key: "AKDESKFLEET0001".to_owned(),
        secret_key: "s3cr3t".to_owned(),
        user_id: alice.id.clone(),
        project_id: project.id.clone(),
        created_at: T0,
    };
    s.create_access_key(&key).await.unwrap();
    assert_eq!(
        s.find_access_key("AKDESKFLEET0001").await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(s.find_access_key("AKNOPE").await.unwrap(), None);
    let mut again = key.clone();
    again.secret_key = "different".to_owned();
    assert!(matches!(
        s.create_access_key(&again).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.find_access_key("AKDESKFLEET0001")
            .await
            .unwrap()
            .unwrap()
            .secret_key,
        "s3cr3t"
    );

    let token = TokenRecord {
        user_id: alice.id.clone(),
        project_id: project.id.clone(),
        issued_at: T0,
        expires_at: T0 + 86_400_000,
    };
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    s.insert_token(sha, &token).await.unwrap();
    assert_eq!(s.find_token(sha).await.unwrap(), Some(token.clone()));
    assert_eq!(s.find_token(&"0".repeat(64)).await.unwrap(), None);
    assert!(matches!(
        s.insert_token(sha, &token).await,
        Err(StoreError::AlreadyExists(_))
    ));
}
