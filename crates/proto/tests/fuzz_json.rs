//! Property-based fuzzing of the JSON request bodies a client sends (Workspace v2 and IAM
//! v3 DTOs): arbitrary bytes and mutations of valid bodies are refused or accepted, never
//! a panic; valid bodies round-trip; nesting beyond serde_json's limit is an error, not a
//! stack overflow. The same bodies through the real router: `crates/server/tests/api/fuzz.rs`.
//!
//! Longer run: `PROPTEST_CASES=100000 cargo nextest run -p deskfleet-proto --test fuzz_json`.

use deskfleet_proto::iam::TokenRequest;
use deskfleet_proto::workspace::{
    BatchInstallAgentRequest, DeleteSubJobsRequest, JobActionRequest,
};
use proptest::prelude::*;
use proptest::sample::Index;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        // A failing case is kept beside this file (`*.proptest-regressions`) and run first
        // from then on.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// Every request body the server parses, from the same bytes.
fn parse_all(data: &[u8]) {
    let _ = serde_json::from_slice::<BatchInstallAgentRequest>(data);
    let _ = serde_json::from_slice::<JobActionRequest>(data);
    let _ = serde_json::from_slice::<DeleteSubJobsRequest>(data);
    let _ = serde_json::from_slice::<TokenRequest>(data);
    let _ = serde_json::from_slice::<serde_json::Value>(data);
}

/// Valid bodies of each kind, with strings that exercise escaping.
fn valid_body() -> impl Strategy<Value = Vec<u8>> {
    let s = || "\\PC{0,20}";
    prop_oneof![
        prop::collection::vec(s(), 0..8).prop_map(|desktop_ids| {
            serde_json::to_vec(&BatchInstallAgentRequest { desktop_ids, max_concurrency: None, max_errors: None }).unwrap()
        }),
        s().prop_map(|op_type| serde_json::to_vec(&JobActionRequest { op_type }).unwrap()),
        (
            prop::option::of(prop::collection::vec(s(), 0..4)),
            prop::option::of(s())
        )
            .prop_map(|(job_ids, delete_by_status)| {
                serde_json::to_vec(&DeleteSubJobsRequest {
                    job_ids,
                    delete_by_status,
                })
                .unwrap()
            }),
        (s(), s(), s()).prop_map(|(domain, user, password)| {
            serde_json::to_vec(&serde_json::json!({"auth": {"identity": {
                "methods": ["password"],
                "password": {"user": {"domain": {"name": domain}, "name": user, "password": password}}
            }, "scope": {"project": {"name": "cn-north-4"}}}}))
            .unwrap()
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    /// JSON's structural characters, where they hurt most.
    Structural(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            prop::sample::select(b"{}[]\",:\\0-e.".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Structural(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => bytes[i.index(len)] ^= b,
            Mutation::Insert(i, b) | Mutation::Structural(i, b) => {
                bytes.insert(i.index(len + 1), *b)
            }
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_body_parsers(data in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&data);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(body in valid_body(), mutations in prop::collection::vec(mutation(), 1..6)) {
        parse_all(&mutate(body, &mutations));
    }

    #[test]
    fn valid_bodies_round_trip(ids in prop::collection::vec("\\PC{0,40}", 0..20), op in "\\PC{0,20}") {
        let install = BatchInstallAgentRequest { desktop_ids: ids.clone(), max_concurrency: None, max_errors: None };
        let text = serde_json::to_vec(&install).unwrap();
        prop_assert_eq!(serde_json::from_slice::<BatchInstallAgentRequest>(&text).unwrap(), install);
        let action = JobActionRequest { op_type: op };
        let text = serde_json::to_vec(&action).unwrap();
        prop_assert_eq!(serde_json::from_slice::<JobActionRequest>(&text).unwrap(), action);
        let delete = DeleteSubJobsRequest { job_ids: Some(ids), delete_by_status: None };
        let text = serde_json::to_vec(&delete).unwrap();
        prop_assert_eq!(serde_json::from_slice::<DeleteSubJobsRequest>(&text).unwrap(), delete);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in [&b"["[..], &br#"{"a":"#[..]] {
        let mut body = br#"{"desktop_ids":"#.to_vec();
        body.extend(open.repeat(100_000));
        assert!(serde_json::from_slice::<BatchInstallAgentRequest>(&body).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&body[15..]).is_err());
    }
}
