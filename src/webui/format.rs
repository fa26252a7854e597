//! How values read on a page: relative times with the exact UTC time beside
//! them, counts with thousands separators, payloads as indented JSON.

/// A wall-clock time in milliseconds as `2026-12-01 03:04:05 UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A duration in milliseconds as the largest sensible unit: `850 ms`,
/// `12.5 s`, `3 min`, `2 h 5 min`, `4 d 3 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min", ms / 60_000),
        3_600_000..=86_399_999 => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// `at_ms` relative to `now_ms`: `5.0 s ago`, `in 3 min`.
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= now_ms {
        format!("{} ago", duration(now_ms - at_ms))
    } else {
        format!("in {}", duration(at_ms - now_ms))
    }
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count as `512 B`, `3.2 KiB`, `1.5 MiB`.
pub fn bytes(n: usize) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// MessagePack bytes (payloads, results, error data) as indented JSON, or a
/// note saying why they cannot be shown that way.
pub fn msgpack_json(b: &[u8]) -> String {
    if b.is_empty() {
        return "(empty)".into();
    }
    match rmp_serde::from_slice::<serde_json::Value>(b) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
        Err(_) => format!("({} of bytes that are not MessagePack)", bytes(b.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_at_a_glance() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_500), "12.5 s");
        assert_eq!(duration(3 * 60_000 + 5), "3 min");
        assert_eq!(duration(2 * 3_600_000 + 5 * 60_000), "2 h 5 min");
        assert_eq!(relative(1_000, 6_000), "5.0 s ago");
        assert_eq!(relative(6_000, 1_000), "in 5.0 s");
        assert_eq!(bytes(3_300), "3.2 KiB");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        let packed = rmp_serde::to_vec_named(&serde_json::json!({"user": 7})).unwrap();
        assert_eq!(msgpack_json(&packed), "{\n  \"user\": 7\n}");
        assert_eq!(msgpack_json(&[0xc1]), "(1 B of bytes that are not MessagePack)");
    }
}
