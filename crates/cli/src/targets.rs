//! Choosing desktops: ids or computer names, `--all`, `--tag KEY=VALUE`, `--from-file`.
//!
//! The project's desktops are listed once (in pages of 1,000); every name or id must
//! match exactly one desktop, and the result keeps the order given, without duplicates.

use crate::args::Targets;
use crate::exit::usage;
use deskfleet_client::Client;
use deskfleet_proto::workspace::SimpleDesktopInfo;
use std::io::Read;

/// Desktops per job or invocation: the API takes at most this many ids per call.
pub const BATCH: usize = 100;

/// The desktops `targets` names, by id; fails when none is chosen.
pub async fn resolve(client: &Client, targets: &Targets) -> anyhow::Result<Vec<SimpleDesktopInfo>> {
    let mut wanted = targets.desktops.clone();
    if let Some(path) = &targets.from_file {
        wanted.extend(read_list(path)?);
    }
    let tags = targets
        .tag
        .iter()
        .map(|t| parse_tag(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if wanted.is_empty() && !targets.all && tags.is_empty() {
        return Err(usage(
            "no desktop chosen: give ids or names, --all, --tag KEY=VALUE or --from-file FILE",
        ));
    }
    let fleet = list_all(client).await?;
    select(&fleet, &wanted, targets.all, &tags)
}

/// Every desktop of the project.
pub async fn list_all(client: &Client) -> anyhow::Result<Vec<SimpleDesktopInfo>> {
    let mut all = vec![];
    loop {
        let page = client
            .list_desktops(&[
                ("limit".into(), "1000".into()),
                ("offset".into(), all.len().to_string()),
            ])
            .await?;
        let n = page.desktops.len();
        all.extend(page.desktops);
        if n == 0 || all.len() as i64 >= page.total_count {
            return Ok(all);
        }
    }
}

/// One desktop by id or computer name.
pub async fn one(client: &Client, id_or_name: &str) -> anyhow::Result<SimpleDesktopInfo> {
    let fleet = list_all(client).await?;
    let mut chosen = select(&fleet, &[id_or_name.to_string()], false, &[])?;
    Ok(chosen.remove(0))
}

pub fn select(
    fleet: &[SimpleDesktopInfo],
    wanted: &[String],
    all: bool,
    tags: &[(String, Option<String>)],
) -> anyhow::Result<Vec<SimpleDesktopInfo>> {
    let mut chosen: Vec<SimpleDesktopInfo> = vec![];
    let push = |d: &SimpleDesktopInfo, chosen: &mut Vec<SimpleDesktopInfo>| {
        if !chosen.iter().any(|c| c.desktop_id == d.desktop_id) {
            chosen.push(d.clone());
        }
    };
    let mut unknown = vec![];
    for w in wanted {
        if let Some(d) = fleet.iter().find(|d| &d.desktop_id == w) {
            push(d, &mut chosen);
            continue;
        }
        let named: Vec<_> = fleet.iter().filter(|d| &d.computer_name == w).collect();
        match named.as_slice() {
            [] => unknown.push(w.clone()),
            [d] => push(d, &mut chosen),
            many => {
                return Err(usage(format!(
                    "{w:?} names {} desktops ({}): give their ids",
                    many.len(),
                    many.iter()
                        .map(|d| d.desktop_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(usage(format!(
            "no desktop with the id or name {}",
            unknown
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if all || !tags.is_empty() {
        for d in fleet {
            let tagged = tags.iter().all(|(k, v)| {
                d.tags
                    .iter()
                    .any(|t| &t.key == k && v.as_ref().is_none_or(|v| &t.value == v))
            });
            if tagged {
                push(d, &mut chosen);
            }
        }
    }
    if chosen.is_empty() {
        return Err(usage("the selection matches no desktop"));
    }
    Ok(chosen)
}

fn parse_tag(t: &str) -> anyhow::Result<(String, Option<String>)> {
    match t.split_once('=') {
        Some(("", _)) => Err(usage(format!("--tag {t:?}: the key is empty"))),
        Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
        None if t.is_empty() => Err(usage("--tag: give KEY=VALUE or KEY")),
        None => Ok((t.to_string(), None)),
    }
}

pub fn read_list(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--from-file {}: {e}", path.display())))?;
    }
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deskfleet_proto::workspace::Tag;

    fn desk(id: &str, name: &str, tags: &[(&str, &str)]) -> SimpleDesktopInfo {
        let mut d: SimpleDesktopInfo = serde_json::from_value(serde_json::json!({
            "desktop_id": id, "computer_name": name, "status": "ACTIVE", "task_status": "",
            "ip_address": "10.0.0.1", "created": "", "enterprise_project_id": "0",
            "project_id": "p", "desktop_type": "", "tags": [], "connect_status": "",
        }))
        .unwrap();
        d.tags = tags
            .iter()
            .map(|(k, v)| Tag {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        d
    }

    #[test]
    fn ids_names_tags_and_all_are_merged_in_order_without_duplicates() {
        let fleet = vec![
            desk("id-1", "alpha", &[("site", "paris")]),
            desk("id-2", "beta", &[("site", "lyon")]),
            desk("id-3", "gamma", &[("site", "paris"), ("tier", "gold")]),
            desk("id-4", "twin", &[]),
            desk("id-5", "twin", &[]),
        ];
        let ids =
            |v: Vec<SimpleDesktopInfo>| v.into_iter().map(|d| d.desktop_id).collect::<Vec<_>>();
        let t = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
        assert_eq!(
            ids(select(
                &fleet,
                &["beta".into(), "id-1".into(), "alpha".into()],
                false,
                &[]
            )
            .unwrap()),
            ["id-2", "id-1"]
        );
        assert_eq!(
            ids(select(&fleet, &[], false, &[t("site", Some("paris"))]).unwrap()),
            ["id-1", "id-3"]
        );
        assert_eq!(
            ids(select(
                &fleet,
                &[],
                false,
                &[t("site", Some("paris")), t("tier", None)]
            )
            .unwrap()),
            ["id-3"]
        );
        assert_eq!(ids(select(&fleet, &[], true, &[]).unwrap()).len(), 5);
        let err = select(&fleet, &["twin".into()], false, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("id-4, id-5"), "{err}");
        let err = select(
            &fleet,
            &["nope".into(), "beta".into(), "zz".into()],
            false,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"nope\", \"zz\""), "{err}");
        assert!(select(&fleet, &[], false, &[t("site", Some("rome"))]).is_err());
        assert!(parse_tag("=x").is_err());
        assert_eq!(parse_tag("a=b=c").unwrap(), t("a", Some("b=c")));
    }
}
