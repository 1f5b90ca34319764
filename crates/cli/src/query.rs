//! `--query`: field selection on a command's JSON answer.
//!
//! ```text
//! expr   := step ('.' step)*
//! step   := NAME suffix* | suffix+ | '{' path (',' path)* '}'
//! suffix := '[]'      each element: the rest of the expression applies to every one
//!         | '[' N ']' the element at index N (negative counts from the end)
//! path   := NAME ('.' NAME)*   (inside braces; the key of the result is the path)
//! ```
//!
//! Examples: `total_count`, `desktops[].computer_name`, `sub_jobs[0].status`,
//! `desktops[].{desktop_id,connection.state}`. A missing field is `null`.

use crate::exit::usage;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Each,
    Index(i64),
    Pick(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query(Vec<Step>);

impl Query {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bad = |why: &str| usage(format!("--query {text:?}: {why}"));
        let chars: Vec<char> = text.trim().chars().collect();
        let mut steps = vec![];
        let mut i = 0;
        if chars.is_empty() {
            return Err(bad("empty expression"));
        }
        while i < chars.len() {
            match chars[i] {
                '.' if !steps.is_empty() => i += 1,
                '{' => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .ok_or_else(|| bad("`{` without `}`"))?;
                    let inner: String = chars[i + 1..i + end].iter().collect();
                    let fields: Vec<String> =
                        inner.split(',').map(|f| f.trim().to_string()).collect();
                    if fields.iter().any(|f| !is_path(f)) {
                        return Err(bad("`{...}` takes field names separated by commas"));
                    }
                    steps.push(Step::Pick(fields));
                    i += end + 1;
                }
                '[' => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .ok_or_else(|| bad("`[` without `]`"))?;
                    let inner: String = chars[i + 1..i + end].iter().collect();
                    if inner.trim().is_empty() {
                        steps.push(Step::Each);
                    } else {
                        let n = inner
                            .trim()
                            .parse::<i64>()
                            .map_err(|_| bad("`[N]` takes an integer index, `[]` every element"))?;
                        steps.push(Step::Index(n));
                    }
                    i += end + 1;
                }
                c if is_name_char(c) => {
                    let start = i;
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                    steps.push(Step::Field(chars[start..i].iter().collect()));
                }
                c => return Err(bad(&format!("unexpected {c:?} at {i}"))),
            }
        }
        Ok(Query(steps))
    }

    pub fn apply(&self, value: &Value) -> Value {
        eval(&self.0, value)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn is_path(f: &str) -> bool {
    !f.is_empty()
        && f.split('.')
            .all(|p| !p.is_empty() && p.chars().all(is_name_char))
}

fn eval(steps: &[Step], value: &Value) -> Value {
    let Some((first, rest)) = steps.split_first() else {
        return value.clone();
    };
    match first {
        Step::Field(name) => eval(rest, value.get(name).unwrap_or(&Value::Null)),
        Step::Index(n) => {
            let item = value.as_array().and_then(|a| {
                let i = if *n < 0 { a.len() as i64 + n } else { *n };
                usize::try_from(i).ok().and_then(|i| a.get(i))
            });
            eval(rest, item.unwrap_or(&Value::Null))
        }
        Step::Each => match value {
            Value::Array(items) => Value::Array(items.iter().map(|v| eval(rest, v)).collect()),
            Value::Object(map) => Value::Array(map.values().map(|v| eval(rest, v)).collect()),
            _ => Value::Null,
        },
        Step::Pick(fields) => {
            let mut out = Map::new();
            for f in fields {
                let mut v = value;
                for part in f.split('.') {
                    v = v.get(part).unwrap_or(&Value::Null);
                }
                out.insert(f.clone(), v.clone());
            }
            eval(rest, &Value::Object(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(expr: &str, v: &Value) -> Value {
        Query::parse(expr).unwrap().apply(v)
    }

    #[test]
    fn paths_projections_indexes_and_picks() {
        let v = json!({"total_count": 2, "desktops": [
            {"desktop_id": "a", "computer_name": "desk-a", "connection": {"state": "online"}},
            {"desktop_id": "b", "computer_name": "desk-b", "connection": {"state": "never"}}]});
        assert_eq!(q("total_count", &v), json!(2));
        assert_eq!(
            q("desktops[].computer_name", &v),
            json!(["desk-a", "desk-b"])
        );
        assert_eq!(q("desktops[1].desktop_id", &v), json!("b"));
        assert_eq!(q("desktops[-1].desktop_id", &v), json!("b"));
        assert_eq!(q("desktops[5].desktop_id", &v), Value::Null);
        assert_eq!(
            q("desktops[].{desktop_id, connection.state}", &v),
            json!([{"desktop_id": "a", "connection.state": "online"},
                   {"desktop_id": "b", "connection.state": "never"}])
        );
        assert_eq!(q("{total_count}", &v), json!({"total_count": 2}));
        assert_eq!(q("nothing.here", &v), Value::Null);
        assert_eq!(q("[0]", &json!([1, 2])), json!(1));
        assert_eq!(q("[].x", &json!([{"x": 1}, {"x": 2}])), json!([1, 2]));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, why) in [
            ("", "empty"),
            ("a[", "without `]`"),
            ("a[x]", "integer index"),
            ("{a,}", "field names"),
            ("a b", "unexpected"),
        ] {
            let err = Query::parse(expr).unwrap_err().to_string();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }
}
