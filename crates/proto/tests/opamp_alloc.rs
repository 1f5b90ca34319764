//! Decoding an OpAMP message allocates in proportion to its size: whatever a peer sends,
//! at most [`BYTES_PER_INPUT_BYTE`] bytes of heap per byte received (plus a constant), so
//! the server's message size limit (1 MiB) bounds the memory one message can cost.
//!
//! The heap is measured with a counting global allocator, which is why this is a test
//! binary of its own with a single test: nothing else allocates while it measures.
//!
//! Longer run: `PROPTEST_CASES=100000 cargo nextest run -p deskfleet-proto --test opamp_alloc`.

use deskfleet_proto::opamp::{AgentToServer, ServerToAgent, decode_ws_frame};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The worst amplification measured is that of the `many_empty_attributes` input below
/// (see docs/fuzzing.md); this leaves room above it and still bounds a 1 MiB message to
/// well under a hundred megabytes.
const BYTES_PER_INPUT_BYTE: usize = 64;
const CONSTANT: usize = 64 * 1024;

/// Heap bytes obtained while decoding `data` as each message a peer may send.
fn decode_cost(data: &[u8]) -> usize {
    let region = Region::new(GLOBAL);
    let a = decode_ws_frame::<AgentToServer>(data);
    let b = AgentToServer::decode(data);
    let c = ServerToAgent::decode(data);
    let stats = region.change();
    drop((a, b, c));
    stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize
}

fn bound(len: usize) -> usize {
    BYTES_PER_INPUT_BYTE * len + CONSTANT
}

fn put_len(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `field` (length-delimited) holding `inner`.
fn wrap(field: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    put_len(inner.len(), &mut out);
    out.extend_from_slice(inner);
    out
}

/// Inputs built to make the decoder allocate the most per byte: repeated empty
/// sub-messages (2 bytes on the wire each, a whole struct in memory) and maps of
/// distinct keys.
fn worst_cases(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let n = size / 2;
    // AgentToServer.agent_description(3).identifying_attributes(1): empty KeyValues.
    let empty_kvs: Vec<u8> = [0x0a, 0x00].repeat(n);
    let many_empty_attributes = wrap(3, &empty_kvs);
    // AgentToServer.health(5).attributes(7): empty KeyValues.
    let health_attrs: Vec<u8> = [0x3a, 0x00].repeat(n);
    let many_health_attributes = wrap(5, &health_attrs);
    // AgentToServer.health(5).component_health_map(6): distinct 2-byte keys, empty values.
    let mut map = Vec::new();
    for i in 0..(size / 8).min(65_536) {
        let entry = wrap(1, &[(i >> 8) as u8 & 0x7f, i as u8 & 0x7f]);
        map.extend(wrap(6, &entry));
    }
    let many_health_components = wrap(5, &map);
    // AgentToServer.package_statuses(8).packages(1): distinct keys, empty statuses.
    let mut packages = Vec::new();
    for i in 0..(size / 8).min(65_536) {
        let entry = wrap(1, &[(i >> 8) as u8 & 0x7f, i as u8 & 0x7f]);
        packages.extend(wrap(1, &entry));
    }
    let many_packages = wrap(8, &packages);
    // An array value of empty AnyValues: agent_description.identifying_attributes[0].value.
    let array = wrap(5, &[0x0a, 0x00].repeat(n)); // AnyValue.array_value(5).values(1)
    let kv = wrap(2, &array); // KeyValue.value(2)
    let many_array_values = wrap(3, &wrap(1, &kv));
    vec![
        ("many_empty_attributes", many_empty_attributes),
        ("many_health_attributes", many_health_attributes),
        ("many_health_components", many_health_components),
        ("many_packages", many_packages),
        ("many_array_values", many_array_values),
    ]
}

#[test]
fn decoding_allocates_in_proportion_to_the_input() {
    let worst = std::cell::RefCell::new((0.0f64, String::new()));
    let note = |name: &str, len: usize, cost: usize| {
        let ratio = cost as f64 / len.max(1) as f64;
        if len >= 1024 && ratio > worst.borrow().0 {
            *worst.borrow_mut() = (ratio, format!("{name} ({len} bytes -> {cost} bytes)"));
        }
        assert!(
            cost <= bound(len),
            "{name}: {len} input bytes cost {cost} heap bytes (> {})",
            bound(len)
        );
    };

    // Crafted worst cases, up to the server's 1 MiB limit.
    for size in [1_024, 64 * 1024, 1024 * 1024] {
        for (name, data) in worst_cases(size) {
            assert!(
                AgentToServer::decode(data.as_slice()).is_ok(),
                "{name} is a valid message"
            );
            let mut framed = vec![0];
            framed.extend_from_slice(&data);
            note(name, framed.len(), decode_cost(&framed));
        }
    }

    // Arbitrary bytes, and random repetitions of short valid-looking pieces.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        (
            prop::collection::vec(any::<u8>(), 1..8),
            1usize..512,
            1u8..16
        )
            .prop_map(|(piece, times, field)| {
                let mut framed = vec![0];
                framed.extend(wrap(field, &piece.repeat(times)));
                framed
            }),
    ];
    runner
        .run(&input, |data| {
            note("arbitrary", data.len(), decode_cost(&data));
            Ok(())
        })
        .unwrap();
    let (ratio, what) = worst.into_inner();
    println!("worst amplification: {ratio:.1} heap bytes per input byte, {what}");
}
