//! Which index a `jobs` scan reads, chosen from the statement's filters.
//!
//! DataFusion hands the provider the WHERE conjuncts it may use; every one is
//! reported `Inexact`, so DataFusion still applies them all to the rows a scan
//! returns and a strategy only has to return a *superset* of the answer. The
//! strategy order follows Silo's guide "Querying Jobs" (one index drives a
//! scan; the rest are post-filters):
//!
//! 1. `id = '…'` / `id IN (…)`: point reads of the job records;
//! 2. metadata exact: `array_contains(element_at(metadata, 'k'), 'v')`,
//!    `array_any_value(element_at(metadata, 'k')) = 'v'`,
//!    `metadata['k'] = 'v'`: the `X` index, one key range;
//! 3. metadata prefix: `starts_with(array_any_value(element_at(metadata, 'k')), 'p')`
//!    or `… LIKE 'p%'`: the `X` index, a value-prefix range;
//! 4. `status_kind = '…'` / `IN (…)`: the `S` index (Waiting and Scheduled
//!    share the stored status Scheduled);
//! 5. `task_group = '…'` / `IN (…)`: the `G` index;
//! 6. otherwise the job table of the tenant(s).
//!
//! `tenant = '…'` / `IN (…)` narrows every strategy to those tenants' key
//! ranges (all keys start with the tenant).
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};

use crate::state_machine::JobStatus;

/// What the filters allow a `jobs` scan to use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobFilters {
    /// Tenants named by `tenant = …` / `IN`; None = not restricted by SQL.
    pub tenants: Option<Vec<String>>,
    pub strategy: Strategy,
}

/// How a `jobs` scan reads (see the module docs for the order).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Strategy {
    Ids(Vec<String>),
    MetadataExact {
        key: String,
        value: String,
    },
    MetadataPrefix {
        key: String,
        prefix: String,
    },
    Status(Vec<JobStatus>),
    TaskGroups(Vec<String>),
    #[default]
    FullScan,
}

impl Strategy {
    fn rank(&self) -> u8 {
        match self {
            Strategy::Ids(_) => 0,
            Strategy::MetadataExact { .. } => 1,
            Strategy::MetadataPrefix { .. } => 2,
            Strategy::Status(_) => 3,
            Strategy::TaskGroups(_) => 4,
            Strategy::FullScan => 5,
        }
    }

    /// A short name for EXPLAIN output and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Ids(_) => "ExactId",
            Strategy::MetadataExact { .. } => "MetadataExact",
            Strategy::MetadataPrefix { .. } => "MetadataPrefix",
            Strategy::Status(_) => "Status",
            Strategy::TaskGroups(_) => "TaskGroup",
            Strategy::FullScan => "FullScan",
        }
    }
}

/// Whether one conjunct can steer a `jobs` scan (anything else is left to
/// DataFusion alone).
pub fn is_indexable(expr: &Expr) -> bool {
    let mut f = JobFilters::default();
    absorb(&mut f, expr)
}

/// The best strategy the conjuncts allow.
pub fn analyze(filters: &[Expr]) -> JobFilters {
    let mut out = JobFilters::default();
    for f in filters {
        absorb(&mut out, f);
    }
    out
}

/// Folds one conjunct into `out`; true when it was usable.
fn absorb(out: &mut JobFilters, expr: &Expr) -> bool {
    let candidate = match expr {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            let (col, value) =
                match (column_name(&b.left), string_lit(&b.right), column_name(&b.right), string_lit(&b.left)) {
                    (Some(c), Some(v), _, _) | (_, _, Some(c), Some(v)) => (c, v),
                    _ => return metadata_equality(out, &b.left, &b.right) || metadata_equality(out, &b.right, &b.left),
                };
            column_filter(out, col, vec![value])
        }
        // DataFusion rewrites a short `IN` list into an OR chain.
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let Some((col, values)) = or_equalities(expr) else { return false };
            column_filter(out, col, values)
        }
        Expr::InList(list) if !list.negated => {
            let Some(col) = column_name(&list.expr) else { return false };
            let Some(values) = list.list.iter().map(string_lit).collect::<Option<Vec<_>>>() else { return false };
            column_filter(out, col, values)
        }
        Expr::ScalarFunction(f) => match (f.func.name(), f.args.as_slice()) {
            ("array_has", [map, value]) => match (metadata_lookup(map), string_lit(value)) {
                (Some(key), Some(value)) => Some(Strategy::MetadataExact { key, value }),
                _ => None,
            },
            ("starts_with", [arg, prefix]) => match (metadata_value(arg), string_lit(prefix)) {
                (Some(key), Some(prefix)) => Some(Strategy::MetadataPrefix { key, prefix }),
                _ => None,
            },
            _ => None,
        },
        // DataFusion also rewrites `starts_with(x, 'p')` into `x LIKE 'p%'`
        // with `\` escaping any wildcard inside p.
        Expr::Like(like)
            if !like.negated && !like.case_insensitive && matches!(like.escape_char, None | Some('\\')) =>
        {
            match (metadata_value(&like.expr), string_lit(&like.pattern)) {
                (Some(key), Some(pattern)) => {
                    like_prefix(&pattern, like.escape_char).map(|prefix| Strategy::MetadataPrefix { key, prefix })
                }
                _ => None,
            }
        }
        _ => None,
    };
    match candidate {
        Some(s) => {
            prefer(out, s);
            true
        }
        None => false,
    }
}

/// `metadata['k'] = 'v'` or `array_any_value(element_at(metadata, 'k')) = 'v'`.
fn metadata_equality(out: &mut JobFilters, side: &Expr, other: &Expr) -> bool {
    match (metadata_value(side), string_lit(other)) {
        (Some(key), Some(value)) => {
            prefer(out, Strategy::MetadataExact { key, value });
            true
        }
        _ => false,
    }
}

/// Applies `col = value(s)`; returns the candidate strategy for indexed
/// columns (`tenant` narrows ranges and yields none).
fn column_filter(out: &mut JobFilters, col: &str, values: Vec<String>) -> Option<Strategy> {
    match col {
        "id" => Some(Strategy::Ids(sorted(values))),
        "task_group" => Some(Strategy::TaskGroups(sorted(values))),
        "status_kind" => {
            let mut statuses: Vec<JobStatus> = values.iter().filter_map(|v| status_of_kind(v)).collect();
            statuses.sort_by_key(|s| crate::storage::keys::status_code(*s));
            statuses.dedup();
            Some(Strategy::Status(statuses))
        }
        "tenant" => {
            let values = sorted(values);
            out.tenants = Some(match out.tenants.take() {
                None => values,
                Some(had) => had.into_iter().filter(|t| values.contains(t)).collect(),
            });
            // A usable conjunct, but not a strategy: report it through a no-op.
            Some(Strategy::FullScan)
        }
        _ => None,
    }
}

/// `c = 'a' OR c = 'b' OR …` on one column: (c, [a, b, …]).
fn or_equalities(e: &Expr) -> Option<(&str, Vec<String>)> {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let (lc, mut lv) = or_equalities(&b.left)?;
            let (rc, rv) = or_equalities(&b.right)?;
            if lc != rc {
                return None;
            }
            lv.extend(rv);
            Some((lc, lv))
        }
        Expr::BinaryExpr(b) if b.op == Operator::Eq => match (column_name(&b.left), string_lit(&b.right)) {
            (Some(c), Some(v)) => Some((c, vec![v])),
            _ => match (column_name(&b.right), string_lit(&b.left)) {
                (Some(c), Some(v)) => Some((c, vec![v])),
                _ => None,
            },
        },
        _ => None,
    }
}

fn prefer(out: &mut JobFilters, s: Strategy) {
    if s.rank() < out.strategy.rank() {
        out.strategy = s;
    }
}

/// The stored status a `status_kind` value names (Waiting is Scheduled and due).
pub fn status_of_kind(kind: &str) -> Option<JobStatus> {
    Some(match kind {
        "Waiting" | "Scheduled" => JobStatus::Scheduled,
        "Running" => JobStatus::Running,
        "Succeeded" => JobStatus::Succeeded,
        "Failed" => JobStatus::Failed,
        "Cancelled" => JobStatus::Cancelled,
        _ => return None,
    })
}

/// Sorted, without repeats: a value listed twice must not be read twice.
fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values.dedup();
    values
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn string_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        Expr::Cast(c) => string_lit(&c.expr),
        _ => None,
    }
}

/// `element_at(metadata, 'k')` (DataFusion's `map_extract`): the key.
fn metadata_lookup(e: &Expr) -> Option<String> {
    match e {
        Expr::ScalarFunction(f) if matches!(f.func.name(), "map_extract" | "element_at") => match f.args.as_slice() {
            [m, k] if column_name(m) == Some("metadata") => string_lit(k),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar metadata value: `array_any_value(element_at(metadata, 'k'))` or
/// `metadata['k']` (`get_field`).
fn metadata_value(e: &Expr) -> Option<String> {
    match e {
        Expr::ScalarFunction(f) => match (f.func.name(), f.args.as_slice()) {
            ("array_any_value", [inner]) => metadata_lookup(inner),
            ("get_field", [m, k]) if column_name(m) == Some("metadata") => string_lit(k),
            _ => None,
        },
        _ => None,
    }
}

/// The literal prefix of a LIKE pattern of the form `prefix%`: no other
/// unescaped wildcard; with an escape character, `<esc>c` is a literal c.
fn like_prefix(pattern: &str, escape: Option<char>) -> Option<String> {
    let mut prefix = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => prefix.push(chars.next()?),
            '%' if chars.peek().is_none() => return Some(prefix),
            '%' | '_' => return None,
            // Without an ESCAPE clause DataFusion still treats `\` as one.
            '\\' => return None,
            c => prefix.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_patterns_give_a_prefix_only_when_they_are_one() {
        assert_eq!(like_prefix("us-%", None), Some("us-".into()));
        assert_eq!(like_prefix("%", None), Some(String::new()));
        assert_eq!(like_prefix("us_%", None), None);
        assert_eq!(like_prefix("us%x", None), None);
        assert_eq!(like_prefix("us", None), None);
        assert_eq!(like_prefix(r"a\%", None), None);
        assert_eq!(like_prefix(r"50\%\_off%", Some('\\')), Some("50%_off".into()));
        assert_eq!(like_prefix(r"a\", Some('\\')), None);
    }
}
