//! Property-based fuzzing of the `SDK-HMAC-SHA256` side a network peer reaches: the
//! `Authorization` parser and the request verifier. Arbitrary bytes and mutations of valid
//! headers never panic; what parses round-trips; a verified request stops verifying when
//! any signed part of it changes.
//!
//! The run is short by default (a few hundred cases a property); a longer one is
//! `PROPTEST_CASES=100000 cargo nextest run -p deskfleet-proto --test fuzz_sign`
//! (figures in docs/fuzzing.md).

use chrono::DateTime;
use deskfleet_proto::sign::{
    ALGORITHM, SignError, canonical_query, canonical_uri, parse_authorization, parse_sdk_date,
    sign, verify,
};
use proptest::prelude::*;
use proptest::sample::Index;

const AK: &str = "HPUAFUZZACCESSKEY000";
const SK: &str = "fuzz-secret-key";

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // A failing case is kept beside this file (`*.proptest-regressions`) and run first
        // from then on.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// A valid header field name.
fn token() -> impl Strategy<Value = String> {
    "[a-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// What a network peer may put in an `Authorization` header: mostly the right shape.
fn authorization_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9=_./+-]{0,24}".prop_map(|v| format!("Access={v}")),
        prop::collection::vec(token(), 0..5).prop_map(|v| format!("SignedHeaders={}", v.join(";"))),
        "[0-9a-f]{60,68}".prop_map(|v| format!("Signature={v}")),
        "[ -~]{0,16}",
    ];
    (
        prop_oneof![Just(ALGORITHM.to_owned()), "[ -~]{0,20}"],
        prop::collection::vec(part, 0..5),
        prop_oneof![Just(", "), Just(","), Just(" , "), Just(";")],
    )
        .prop_map(|(alg, parts, sep)| format!("{alg} {}", parts.join(sep)))
}

/// Byte-level mutations: flip, insert, delete, truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match *m {
            Mutation::Flip(ref i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= b;
            }
            Mutation::Insert(ref i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, b);
            }
            Mutation::Delete(ref i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(ref i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// A signed request as the server receives it.
struct Received {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn from_signed(method: &str, path: &str, host: &str, query: &str, body: &[u8]) -> Self {
        let signed = sign(
            AK,
            SK,
            method,
            path,
            &parse_pairs(query),
            &[("Host".to_owned(), host.to_owned())],
            body,
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        );
        let mut headers = http::HeaderMap::new();
        for (name, value) in &signed.headers {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let uri = if signed.query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", signed.query)
        };
        Received {
            method: http::Method::from_bytes(method.as_bytes()).unwrap(),
            uri: uri.parse().unwrap(),
            headers,
            body: body.to_vec(),
        }
    }

    fn verify(&self) -> Result<(), SignError> {
        let value = self.headers["authorization"].to_str().unwrap().to_owned();
        let auth = parse_authorization(&value)?;
        verify(
            &self.method,
            &self.uri,
            &self.headers,
            &self.body,
            &auth,
            SK.as_bytes(),
        )
    }
}

fn parse_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn authorization_parser_never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        // What reaches the parser is a header value that was valid UTF-8 (`to_str`), or
        // the lossy form of anything else.
        let text = String::from_utf8_lossy(&raw);
        let _ = parse_authorization(&text);
        let _ = parse_sdk_date(&text);
        let _ = canonical_uri(&text);
        let _ = canonical_query(&text);
        if let Ok(value) = http::HeaderValue::from_bytes(&raw)
            && let Ok(s) = value.to_str()
        {
            let _ = parse_authorization(s);
        }
    }

    #[test]
    fn authorization_like_headers_parse_to_their_parts(raw in authorization_like()) {
        if let Ok(auth) = parse_authorization(&raw) {
            // Whatever parses is made of pieces of the input, and formats back to a
            // header that parses to the same thing.
            prop_assert!(raw.contains(auth.access_key));
            prop_assert!(raw.contains(auth.signature));
            prop_assert_eq!(auth.signature.len(), 64);
            let formatted = format!(
                "{ALGORITHM} Access={}, SignedHeaders={}, Signature={}",
                auth.access_key,
                auth.signed_headers.join(";"),
                auth.signature
            );
            prop_assert_eq!(parse_authorization(&formatted), Ok(auth));
        }
    }

    #[test]
    fn authorization_format_then_parse_round_trips(
        ak in "[A-Za-z0-9=_./+-]{1,40}",
        names in prop::collection::vec(token(), 1..8),
        sig in "[0-9a-f]{64}",
        order in Just([0usize, 1, 2]).prop_shuffle(),
        spaces in prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("\t"), Just("  ")], 6),
    ) {
        let parts = [
            format!("Access={ak}"),
            format!("SignedHeaders={}", names.join(";")),
            format!("Signature={sig}"),
        ];
        let header = format!(
            "{}{ALGORITHM} {}{}{},{}{}{},{}{}{}",
            spaces[0],
            spaces[1], parts[order[0]], spaces[2],
            spaces[3], parts[order[1]], spaces[4],
            spaces[5], parts[order[2]], spaces[0],
        );
        let auth = parse_authorization(&header).unwrap();
        prop_assert_eq!(auth.access_key, ak.as_str());
        prop_assert_eq!(&auth.signed_headers, &names.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(auth.signature, sig.as_str());
    }

    #[test]
    fn mutated_valid_headers_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..64),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let request = Received::from_signed("POST", "/v2/p/desktops/agents", "h:8087", "a=1", &body);
        let valid = request.headers["authorization"].as_bytes().to_vec();
        let mutated = mutate(valid.clone(), &mutations);
        let text = String::from_utf8_lossy(&mutated);
        if let Ok(auth) = parse_authorization(&text) {
            // A mutated header verifies only if the mutation left what is signed intact.
            let verified = verify(&request.method, &request.uri, &request.headers, &request.body, &auth, SK.as_bytes());
            if verified.is_ok() {
                let original = parse_authorization(std::str::from_utf8(&valid).unwrap()).unwrap();
                prop_assert_eq!(auth.signature, original.signature);
            }
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_requests(
        method in prop::collection::vec(any::<u8>(), 1..10),
        uri in "[ -~]{0,80}",
        headers in prop::collection::vec((token(), prop::collection::vec(any::<u8>(), 0..40)), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..128),
        date in prop_oneof!["[0-9]{8}T[0-9]{6}Z", "[ -~]{0,20}"],
        signed in prop::collection::vec(token(), 0..6),
        sig in "[0-9a-f]{64}",
    ) {
        let Ok(method) = http::Method::from_bytes(&method) else { return Ok(()) };
        let Ok(uri) = uri.parse::<http::Uri>() else { return Ok(()) };
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(value)) {
                map.append(n, v);
            }
        }
        if let Ok(v) = http::HeaderValue::from_str(&date) {
            map.insert("x-sdk-date", v);
        }
        map.insert("host", http::HeaderValue::from_static("example.com"));
        let mut names: Vec<String> = vec!["host".into(), "x-sdk-date".into()];
        names.extend(signed);
        names.extend(headers.iter().map(|(n, _)| n.clone()));
        let header = format!("{ALGORITHM} Access={AK}, SignedHeaders={}, Signature={sig}", names.join(";"));
        let auth = parse_authorization(&header).unwrap();
        // A random signature never matches (2^-256).
        prop_assert!(verify(&method, &uri, &map, &body, &auth, SK.as_bytes()).is_err());
    }

    #[test]
    fn any_change_to_a_signed_part_breaks_the_signature(
        segments in prop::collection::vec("[a-zA-Z0-9 %/_.~-]{0,12}", 1..4),
        query in "([a-z]{1,4}=[a-z0-9]{0,4}&){0,3}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        which in 0usize..4,
    ) {
        let path = format!(
            "/{}",
            segments
                .iter()
                .map(|s| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string())
                .collect::<Vec<_>>()
                .join("/")
        );
        let mut request = Received::from_signed("POST", &path, "h:8087", &query, &body);
        prop_assert_eq!(request.verify(), Ok(()));
        match which {
            0 => request.method = http::Method::PUT,
            1 => request.uri = format!("{path}x").parse().unwrap(),
            2 => {
                request.headers.insert("host", http::HeaderValue::from_static("other:8087"));
            }
            _ => request.body.push(b'!'),
        }
        prop_assert_eq!(request.verify(), Err(SignError::SignatureMismatch));
    }
}
