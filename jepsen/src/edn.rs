//! EDN export of a history, so Jepsen's own tools (Knossos, Elle, the Jepsen
//! web viewer) can read it.
//!
//! One EDN map per line, in history order, with Jepsen's op keys:
//!
//! ```text
//! {:index 0, :type :invoke, :f :enqueue, :process 3, :time 1234000000, :node "n1", :value {...}}
//! ```
//!
//! - `:type` is `:invoke`, `:ok`, `:fail` or `:info`; `:f` is the kebab-case
//!   name of [`F`] (`:final-read`, `:start-fault`, …).
//! - `:process` is the client's number, or `:nemesis` for [`NEMESIS`].
//! - `:time` is in nanoseconds since the test started (Jepsen's unit), an
//!   integer: the history's `time_ms` × 10⁶, rounded.
//! - `:node` is present when the op names a node; `:error` when it has one.
//! - `:value` is the op's [`crate::history::Value`] as an EDN map with kebab-case keyword keys
//!   (`:job-id`), `:kind` first and the other keys in alphabetical order,
//!   `:kind` and the enum fields `:status` and `:outcome`
//!   as keywords (`:not-found`, `:success`), nil for None, vectors for lists
//!   and tuples (`:limit ["key" 2]`), strings escaped as EDN requires.
//!
//! The EDN grammar followed is the one of edn-format.org and the Clojure
//! reader: strings escape `"` `\` and control characters (`\n`, `\t`, `\r`,
//! others as `\uXXXX`).
use std::fmt::Write;

use serde_json::Value as Json;

use crate::history::{Op, F, NEMESIS};

/// Renders `history` as EDN, one op map a line (each line ends with `\n`).
pub fn write_edn(history: &[Op]) -> String {
    let mut out = String::new();
    for op in history {
        out.push_str(&op_edn(op));
        out.push('\n');
    }
    out
}

/// Renders one op as an EDN map (no trailing newline).
pub fn op_edn(op: &Op) -> String {
    let mut s = String::from("{");
    let _ = write!(s, ":index {}, :type :{}, :f :{}", op.index, op.kind.name(), f_name(op.f));
    if op.process == NEMESIS {
        s.push_str(", :process :nemesis");
    } else {
        let _ = write!(s, ", :process {}", op.process);
    }
    let _ = write!(s, ", :time {}", (op.time_ms * 1e6).round() as i64);
    if let Some(node) = &op.node {
        s.push_str(", :node ");
        s.push_str(&string(node));
    }
    s.push_str(", :value ");
    match serde_json::to_value(&op.value) {
        Ok(v) => json_to_edn(&mut s, &v, None),
        Err(_) => s.push_str("nil"),
    }
    if let Some(err) = &op.error {
        s.push_str(", :error ");
        s.push_str(&string(err));
    }
    s.push('}');
    s
}

/// The kebab-case name of `f`, as serde names it in the JSON history.
pub fn f_name(f: F) -> String {
    match serde_json::to_value(f) {
        Ok(Json::String(s)) => keyword_name(&s),
        _ => keyword_name(&format!("{f:?}")),
    }
}

/// Fields whose string values are enum names, written as keywords.
const KEYWORD_FIELDS: [&str; 3] = ["kind", "status", "outcome"];

/// Appends `v` as EDN; `field` is the map key it is the value of, if any.
fn json_to_edn(out: &mut String, v: &Json, field: Option<&str>) {
    match v {
        Json::Null => out.push_str("nil"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() {
                    // `{:?}` always prints a decimal point or exponent.
                    let _ = write!(out, "{f:?}");
                } else if f.is_nan() {
                    out.push_str("##NaN");
                } else if f > 0.0 {
                    out.push_str("##Inf");
                } else {
                    out.push_str("##-Inf");
                }
            }
        }
        Json::String(s) => {
            if field.is_some_and(|f| KEYWORD_FIELDS.contains(&f)) {
                out.push(':');
                out.push_str(&keyword_name(s));
            } else {
                out.push_str(&string(s));
            }
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                json_to_edn(out, item, None);
            }
            out.push(']');
        }
        Json::Object(map) => {
            // `kind` (the variant tag) first, then the rest sorted, whatever
            // order serde_json's map keeps.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| (k.as_str() != "kind", k.as_str()));
            out.push('{');
            for (i, (k, item)) in keys.iter().map(|k| (*k, &map[*k])).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push(':');
                out.push_str(&keyword_name(k));
                out.push(' ');
                json_to_edn(out, item, Some(k));
            }
            out.push('}');
        }
    }
}

/// A keyword name from a Rust or JSON name: `job_id` → `job-id`,
/// `NotFound` → `not-found`; any character EDN keywords do not allow becomes
/// `-`, and an empty name becomes `_`.
pub fn keyword_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_lower = true;
        } else if matches!(c, '-' | '*' | '+' | '!' | '?' | '.' | '<' | '>' | '=') {
            out.push(c);
            prev_lower = false;
        } else {
            out.push('-');
            prev_lower = false;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `s` as an EDN string literal, quotes included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpType, Status, Value};

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(string("a\"b"), "\"a\\\"b\"");
        assert_eq!(string("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(string("two\nlines\ttab\r"), "\"two\\nlines\\ttab\\r\"");
        assert_eq!(string("bell\u{7}"), "\"bell\\u0007\"");
        assert_eq!(string("ünï"), "\"ünï\"");
    }

    #[test]
    fn keyword_names_are_kebab_case() {
        assert_eq!(keyword_name("job_id"), "job-id");
        assert_eq!(keyword_name("NotFound"), "not-found");
        assert_eq!(keyword_name("final-read"), "final-read");
        assert_eq!(keyword_name("a b"), "a-b");
        assert_eq!(keyword_name(""), "_");
    }

    #[test]
    fn full_enqueue_op() {
        let op = Op {
            index: 0,
            process: 3,
            kind: OpType::Invoke,
            f: F::Enqueue,
            time_ms: 1234.0,
            node: Some("n1".into()),
            value: Value::Enqueue {
                job_id: None,
                caller_id: false,
                token: "3:0".into(),
                limit: Some(("k\"1".into(), 2)),
                start_delay_ms: Some(500),
                retries: 1,
            },
            error: Some("UNAVAILABLE: line1\nline2".into()),
        };
        assert_eq!(
            op_edn(&op),
            "{:index 0, :type :invoke, :f :enqueue, :process 3, :time 1234000000, :node \"n1\", \
             :value {:kind :enqueue, :caller-id false, :job-id nil, :limit [\"k\\\"1\" 2], :retries 1, \
             :start-delay-ms 500, :token \"3:0\"}, :error \"UNAVAILABLE: line1\\nline2\"}"
        );
    }

    #[test]
    fn nemesis_and_read_ops() {
        let nem = Op {
            index: 7,
            process: NEMESIS,
            kind: OpType::Info,
            f: F::StartFault,
            time_ms: 0.5,
            node: None,
            value: Value::Fault { nemesis: "kill".into(), detail: "n2".into(), leader: None },
            error: None,
        };
        let line = op_edn(&nem);
        assert!(line.starts_with("{:index 7, :type :info, :f :start-fault, :process :nemesis, :time 500000, :value {"));
        assert!(line.contains(":leader nil"));
        assert!(!line.contains(":node"));
        let read = Op {
            index: 8,
            process: 1,
            kind: OpType::Ok,
            f: F::FinalRead,
            time_ms: 2.0,
            node: Some("n3".into()),
            value: Value::Read {
                job_id: "j".into(),
                status: Status::NotFound,
                attempts: 0,
                changed_at_ms: 0,
                stale: false,
            },
            error: None,
        };
        let line = op_edn(&read);
        assert!(line.contains(":f :final-read"), "{line}");
        assert!(line.contains(":status :not-found"), "{line}");
        let text = write_edn(&[nem, read]);
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("}\n"));
    }
}
