//! Prints the headers of one signed request, for load tools that replay it (`wrk`).
//! A signature stays valid while its `X-Sdk-Date` is within the server's skew (15 min).
//!
//! Usage: `sign METHOD URL AK SK PROJECT_ID [BODY_FILE]`; prints `Name: value` lines.

use deskfleet_proto::sign;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, method, url, ak, sk, project] = &args[..6] else {
        return Err("usage: sign METHOD URL AK SK PROJECT_ID [BODY_FILE]".into());
    };
    let body = match args.get(6) {
        Some(path) => std::fs::read(path)?,
        None => Vec::new(),
    };
    let url = reqwest::Url::parse(url)?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("User-Agent".to_string(), "deskfleet-bench".to_string()),
        ("X-Project-Id".to_string(), project.clone()),
        ("Host".to_string(), host),
    ];
    let signed = sign::sign(
        ak,
        sk,
        method,
        url.path(),
        &[],
        &headers,
        &body,
        chrono::Utc::now(),
    );
    for (name, value) in signed.headers {
        if !name.eq_ignore_ascii_case("host") {
            println!("{name}: {value}");
        }
    }
    Ok(())
}
