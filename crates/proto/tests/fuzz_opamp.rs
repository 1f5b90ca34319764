//! Property-based fuzzing of the OpAMP decoders a network peer reaches: the WebSocket frame
//! (`decode_ws_frame`) and the protobuf messages (`AgentToServer` on the server,
//! `ServerToAgent` on the guest). Arbitrary bytes and mutations of valid messages never
//! panic; valid messages round-trip. Allocation bounds are in `opamp_alloc.rs`.
//!
//! Longer run: `PROPTEST_CASES=100000 cargo nextest run -p deskfleet-proto --test fuzz_opamp`.

use deskfleet_proto::opamp::{
    AgentCapabilities, AgentDescription, AgentToServer, AnyValue, ArrayValue, ComponentHealth,
    FrameError, KeyValue, KeyValueList, PackageDownloadDetails, PackageStatus, PackageStatuses,
    ServerToAgent, any_value, decode_ws_frame, encode_ws_frame,
};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;

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

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        ".{0,12}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        // NaN != NaN would break the round-trip comparison, not the decoder.
        (-1e9f64..1e9).prop_map(any_value::Value::DoubleValue),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(any_value::Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec((".{0,6}", inner), 0..4).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: Some(value),
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(
        (".{0,10}", prop::option::of(any_value())).prop_map(|(key, value)| KeyValue { key, value }),
        0..4,
    )
}

fn health() -> impl Strategy<Value = ComponentHealth> {
    let leaf = (
        any::<bool>(),
        any::<u64>(),
        ".{0,16}",
        ".{0,8}",
        attributes(),
    )
        .prop_map(
            |(healthy, start, last_error, status, attributes)| ComponentHealth {
                healthy,
                start_time_unix_nano: start,
                last_error,
                status,
                status_time_unix_nano: start / 2,
                component_health_map: Default::default(),
                attributes,
            },
        );
    leaf.prop_recursive(3, 12, 3, |inner| {
        (
            inner.clone(),
            prop::collection::btree_map(".{0,6}", inner, 0..3),
        )
            .prop_map(|(mut h, map)| {
                h.component_health_map = map;
                h
            })
    })
}

fn package_statuses() -> impl Strategy<Value = PackageStatuses> {
    let status = (
        ".{0,12}",
        ".{0,8}",
        prop::collection::vec(any::<u8>(), 0..32),
        0i32..5,
        prop::option::of((0.0f64..100.0, 0.0f64..1e9)),
    )
        .prop_map(|(name, version, hash, status, download)| PackageStatus {
            name,
            agent_has_version: version.clone(),
            agent_has_hash: hash.clone(),
            server_offered_version: version,
            server_offered_hash: hash,
            status,
            error_message: String::new(),
            download_details: download.map(|(p, r)| PackageDownloadDetails {
                download_percent: p,
                download_bytes_per_second: r,
            }),
        });
    (
        prop::collection::btree_map(".{0,12}", status, 0..3),
        prop::collection::vec(any::<u8>(), 0..32),
        ".{0,16}",
    )
        .prop_map(|(packages, hash, error_message)| PackageStatuses {
            packages,
            server_provided_all_packages_hash: hash,
            error_message,
        })
}

/// A valid `AgentToServer` as a guest sends it: identity, description, health, packages.
fn agent_to_server() -> impl Strategy<Value = AgentToServer> {
    (
        prop::collection::vec(any::<u8>(), 16),
        any::<u64>(),
        prop::option::of((attributes(), attributes())),
        prop::option::of(health()),
        prop::option::of(package_statuses()),
        any::<bool>(),
        0u64..4,
    )
        .prop_map(
            |(uid, seq, description, health, packages, disconnect, flags)| AgentToServer {
                instance_uid: uid,
                sequence_num: seq,
                agent_description: description.map(|(identifying, other)| AgentDescription {
                    identifying_attributes: identifying,
                    non_identifying_attributes: other,
                }),
                capabilities: AgentCapabilities::bits(&[
                    AgentCapabilities::ReportsStatus,
                    AgentCapabilities::ReportsHealth,
                ]),
                health,
                package_statuses: packages,
                agent_disconnect: disconnect.then(Default::default),
                flags,
                ..Default::default()
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    /// Overwrite with a large varint, where length prefixes and tags live.
    BigVarint(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        any::<Index>().prop_map(Mutation::BigVarint),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => bytes[i.index(len)] ^= b,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::BigVarint(i) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_ws_frame::<AgentToServer>(&data);
        let _ = decode_ws_frame::<ServerToAgent>(&data);
        let _ = AgentToServer::decode(data.as_slice());
        let _ = ServerToAgent::decode(data.as_slice());
    }

    #[test]
    fn valid_messages_round_trip(msg in agent_to_server()) {
        let frame = encode_ws_frame(&msg);
        prop_assert_eq!(frame[0], 0, "the frame header is the varint 0");
        prop_assert_eq!(decode_ws_frame::<AgentToServer>(&frame).unwrap(), msg.clone());
        prop_assert_eq!(AgentToServer::decode(&frame[1..]).unwrap(), msg);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        msg in agent_to_server(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let frame = mutate(encode_ws_frame(&msg), &mutations);
        match decode_ws_frame::<AgentToServer>(&frame) {
            // Whatever decodes encodes again, and that decodes to the same message.
            Ok(decoded) => {
                let again = encode_ws_frame(&decoded);
                prop_assert_eq!(decode_ws_frame::<AgentToServer>(&again).unwrap(), decoded);
            }
            Err(FrameError::Empty) => prop_assert!(frame.is_empty()),
            Err(_) => {}
        }
        let _ = AgentToServer::decode(frame.as_slice());
        let _ = decode_ws_frame::<ServerToAgent>(&frame);
    }

    #[test]
    fn frame_headers_other_than_zero_are_refused(header in 1u64.., payload in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut frame = Vec::new();
        let mut v = header;
        while v >= 0x80 {
            frame.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        frame.push(v as u8);
        frame.extend(payload);
        let refused = matches!(decode_ws_frame::<AgentToServer>(&frame), Err(FrameError::UnsupportedHeader(h)) if h == header);
        prop_assert!(refused);
    }
}

#[test]
fn deeply_nested_health_is_refused_not_a_stack_overflow() {
    // ComponentHealth nests through its map; 10 000 levels in a few tens of kilobytes
    // would overflow a stack without prost's recursion limit.
    let mut payload: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        // map entry {key: "", value: <payload>} as field 6 of ComponentHealth
        let mut value = vec![0x12];
        put_len(payload.len(), &mut value);
        value.extend_from_slice(&payload);
        let mut entry = vec![0x32];
        put_len(value.len(), &mut entry);
        entry.extend(value);
        payload = entry;
    }
    let mut msg = vec![0x2a]; // AgentToServer.health (field 5)
    put_len(payload.len(), &mut msg);
    msg.extend(payload);
    assert!(AgentToServer::decode(msg.as_slice()).is_err());
}

fn put_len(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
