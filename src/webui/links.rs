//! Every address the console links to, built in one place. Ids, tenants,
//! task groups and limit keys are arbitrary strings (`a/b`, `..`, `?`), so
//! they travel as percent-encoded query parameters, never as path segments a
//! browser would resolve (`/jobs/x/../victim` is `/jobs/victim` to it).

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A job's page. `tenant` is given only with tenancy on (with it off, the
/// API refuses any tenant).
pub fn job(id: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("/job?id={}&tenant={}", encode(id), encode(t)),
        None => format!("/job?id={}", encode(id)),
    }
}

/// A task group's page.
pub fn queue(task_group: &str) -> String {
    format!("/queue?task_group={}", encode(task_group))
}

/// One concurrency key's holders and waiters.
pub fn limit_key(tenant: &str, key: &str) -> String {
    format!("/limits?tenant={}&key={}", encode(tenant), encode(key))
}

/// The job search, narrowed to one tenant.
pub fn tenant_jobs(tenant: &str) -> String {
    format!("/jobs?tenant={}", encode(tenant))
}

/// `base` with one more query parameter.
pub fn with_param(base: &str, name: &str, value: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{name}={}", encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_strings_stay_inside_their_parameter() {
        assert_eq!(job("x/../victim", None), "/job?id=x%2F..%2Fvictim");
        assert_eq!(job("a b", Some("t&1")), "/job?id=a%20b&tenant=t%261");
        assert_eq!(queue("tg/x?y"), "/queue?task_group=tg%2Fx%3Fy");
        assert_eq!(
            with_param("/job?id=a", "notice", "Cancelled (node 1)"),
            "/job?id=a&notice=Cancelled%20%28node%201%29"
        );
        assert_eq!(with_param("/jobs", "notice", "x"), "/jobs?notice=x");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
