//! Prints the headers of signed requests, for load tools that replay them (`wrk`).
//! A signature stays valid while its `X-Sdk-Date` is within the server's skew (15 min).
//!
//! Usage: `sign METHOD URL AK SK PROJECT_ID [BODY_FILE]` prints one request's headers as
//! `Name: value` lines; `sign METHOD URL AK SK PROJECT_ID --lines FILE` signs each line of
//! FILE as a body and prints one JSON object a line: `{"body": ..., "headers": {...}}`.

use deskfleet_proto::sign;

const USAGE: &str = "usage: sign METHOD URL AK SK PROJECT_ID [BODY_FILE | --lines FILE]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some([_, method, url, ak, sk, project]) = args.get(..6) else {
        return Err(USAGE.into());
    };
    let url = reqwest::Url::parse(url)?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let headers_of = |body: &[u8]| {
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("User-Agent".to_string(), "deskfleet-bench".to_string()),
            ("X-Project-Id".to_string(), project.clone()),
            ("Host".to_string(), host.clone()),
        ];
        sign::sign(
            ak,
            sk,
            method,
            url.path(),
            &[],
            &headers,
            body,
            chrono::Utc::now(),
        )
        .headers
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
    };
    let body = match args.get(6..) {
        Some([flag, path]) if flag == "--lines" => {
            for body in std::fs::read_to_string(path)?.lines() {
                let headers: serde_json::Map<String, serde_json::Value> =
                    headers_of(body.as_bytes())
                        .map(|(name, value)| (name, value.into()))
                        .collect();
                println!(
                    "{}",
                    serde_json::json!({ "body": body, "headers": headers })
                );
            }
            return Ok(());
        }
        Some([path]) => std::fs::read(path)?,
        Some([]) | None => Vec::new(),
        Some(_) => return Err(USAGE.into()),
    };
    for (name, value) in headers_of(&body) {
        println!("{name}: {value}");
    }
    Ok(())
}
