//! Printing answers: JSON for scripts, aligned tables for people, `--query` selection.
//!
//! Colours only when stdout is a terminal and `NO_COLOR` is unset. Every write returns
//! its `io::Error`, so a closed pipe ends the command quietly instead of panicking.

use crate::args::Format;
use crate::query::Query;
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// How a command's answer is shown as a table.
pub enum View {
    /// Rows from the array at `rows` (a `/`-separated path; empty: the answer itself),
    /// one column per (header, dotted path).
    Table {
        rows: &'static str,
        columns: &'static [(&'static str, &'static str)],
    },
    /// `key: value` lines, nested keys dotted.
    Detail,
    /// `key: value` lines of the object at a `/`-separated path (e.g. `desktop`).
    DetailAt(&'static str),
    /// Lines of text already written for people.
    Text(Vec<String>),
}

pub struct Output {
    pub format: Format,
    pub query: Option<Query>,
    pub color: bool,
}

impl Output {
    pub fn new(format: Format, query: Option<Query>) -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output {
            format,
            query,
            color,
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `value` as the format and query ask.
    pub fn emit(&self, value: &Value, view: View) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let (value, view) = match &self.query {
            Some(q) => (q.apply(value), None),
            None => (value.clone(), Some(view)),
        };
        if self.json() {
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
            return out.flush();
        }
        let text = match view {
            Some(View::Table { rows, columns }) => {
                let items = at(&value, rows);
                let cells: Vec<Vec<String>> = items
                    .iter()
                    .map(|item| columns.iter().map(|(_, p)| cell(dotted(item, p))).collect())
                    .collect();
                let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
                table(&headers, &cells, self.color)
            }
            Some(View::Text(lines)) => lines.iter().map(|l| format!("{l}\n")).collect(),
            Some(View::Detail) => detail(&value),
            Some(View::DetailAt(path)) => at(&value, path)
                .into_iter()
                .map(detail)
                .collect::<Vec<_>>()
                .join("\n"),
            None => generic(&value, self.color),
        };
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Prints lines of text (ignores `--query`; JSON callers use [`Output::emit`]).
    pub fn line(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    }
}

fn at<'a>(value: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut v = value;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        v = v.get(part).unwrap_or(&Value::Null);
    }
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    }
}

fn dotted<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut v = value;
    for part in path.split('.') {
        v = match (v, part.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i).unwrap_or(&Value::Null),
            _ => v.get(part).unwrap_or(&Value::Null),
        };
    }
    v
}

/// A value as one table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    // Tags: KEY=VALUE.
                    Value::Object(o) if o.contains_key("key") => format!(
                        "{}={}",
                        o["key"].as_str().unwrap_or_default(),
                        o.get("value").and_then(Value::as_str).unwrap_or_default()
                    ),
                    other => cell(other),
                })
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            }
        }
        other => other.to_string(),
    }
}

/// Colour for a status word: green when good, red when failed, yellow when under way.
pub fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match text.trim() {
        "SUCCESS" | "SUCCEEDED" | "successful" | "online" | "running" | "true" => "32",
        "FAIL" | "FAILED" | "error" | "offline" | "fault" | "TIMEOUT" | "stopped" => "31",
        "WAITING" | "RUNNING" | "PENDING" | "never" | "unknown" => "33",
        _ => return text.to_string(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Columns padded to their widest cell; colour applied after padding, so it never
/// shifts the alignment.
pub fn table(headers: &[&str], rows: &[Vec<String>], color: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = if i == last {
                0
            } else {
                w - c.chars().count() + 2
            };
            out.push_str(&paint(c, color));
            out.push_str(&" ".repeat(pad));
        }
        out.push('\n');
    };
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    if color {
        out.push_str("\x1b[1m");
        line(header, &mut out);
        out.insert_str(out.len() - 1, "\x1b[0m");
    } else {
        line(header, &mut out);
    }
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

/// `key: value` lines for an object, nested keys joined by dots.
pub fn detail(value: &Value) -> String {
    let mut lines = vec![];
    flatten("", value, &mut lines);
    let width = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    lines
        .into_iter()
        .map(|(k, v)| {
            if k.is_empty() {
                format!("{v}\n")
            } else {
                format!("{k}:{} {v}\n", " ".repeat(width - k.chars().count()))
            }
        })
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() && !is_tag(i)) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        other => out.push((prefix.to_string(), cell(other))),
    }
}

fn is_tag(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.contains_key("key") && o.len() <= 2)
}

/// A selection (`--query`) shown for people: rows of objects as a table, a list of
/// scalars one a line, an object as `key: value` lines.
fn generic(value: &Value, color: bool) -> String {
    match value {
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let mut headers: Vec<String> = vec![];
            for item in items {
                for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !headers.contains(k) {
                        headers.push(k.clone());
                    }
                }
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| headers.iter().map(|h| cell(&i[h.as_str()])).collect())
                .collect();
            let upper: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
            let refs: Vec<&str> = upper.iter().map(String::as_str).collect();
            table(&refs, &rows, color)
        }
        Value::Array(items) => items.iter().map(|i| format!("{}\n", cell(i))).collect(),
        Value::Object(_) => detail(value),
        other => format!("{}\n", cell(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_aligned_and_coloured_only_when_asked() {
        let rows = vec![
            vec!["a".to_string(), "SUCCESS".to_string(), "x".to_string()],
            vec!["longer".to_string(), "FAILED".to_string(), "y".to_string()],
        ];
        let plain = table(&["ID", "STATUS", "NOTE"], &rows, false);
        assert_eq!(
            plain,
            "ID      STATUS   NOTE\na       SUCCESS  x\nlonger  FAILED   y\n"
        );
        assert!(!plain.contains('\x1b'));
        let coloured = table(&["ID", "STATUS", "NOTE"], &rows, true);
        assert!(
            coloured.contains("\x1b[32mSUCCESS\x1b[0m  x"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("\x1b[31mFAILED\x1b[0m   y"),
            "{coloured:?}"
        );
    }

    #[test]
    fn details_flatten_nested_fields_and_tags() {
        let v = json!({"desktop": {"desktop_id": "d", "tags": [{"key": "site", "value": "paris"}],
            "connection": {"state": "online"}, "ip_addresses": ["10.0.0.1"]}});
        let text = detail(&v);
        assert!(text.contains("desktop.desktop_id:"), "{text}");
        assert!(
            text.contains("desktop.tags:") && text.contains("site=paris"),
            "{text}"
        );
        assert!(text.contains("desktop.connection.state:"), "{text}");
        assert!(text.contains("10.0.0.1"), "{text}");
    }
}
