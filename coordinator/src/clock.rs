//! Time, the coordinator's one place for it: the wall clock in Unix milliseconds (how every time
//! is held in memory and in the store), conversions to and from protobuf timestamps, and the two
//! ways times are written for people (RFC 3339 in UTC, and short durations such as `4m 3s`).

use vantage_proto::v1::HistoryEntry;

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A protobuf timestamp in Unix ms (saturating: agents send any value).
pub fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// Unix ms as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// When a stored entry's probe ran, Unix ms (0 without a time).
pub fn entry_ms(entry: &HistoryEntry) -> i64 {
    entry.result.as_ref().and_then(|r| r.checked_at.as_ref()).map_or(0, ms)
}

/// Unix ms as RFC 3339 in UTC, to the second (`2026-11-25T10:09:23Z`).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(vantage_shared::report::rfc3339)
        .unwrap_or_default()
}

/// A protobuf timestamp as RFC 3339 in UTC, to the second.
pub fn timestamp_rfc3339(t: &prost_types::Timestamp) -> String {
    rfc3339(ms(t))
}

/// A protobuf timestamp as JSON: RFC 3339 in UTC to the second, or null (none, or out of range).
pub fn timestamp_json(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    match t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok()) {
        Some(t) => vantage_shared::report::rfc3339(t).into(),
        None => serde_json::Value::Null,
    }
}

/// A span of ms for people: `12s`, `4m 3s`, `6h 12m`, `2d 3h`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m {sec}s"),
        (0, h, m, _) => format!("{h}h {m}m"),
        (d, h, _, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_ms_and_read_as_utc() {
        for at in [0, 1_764_065_363_123, -1_500] {
            assert_eq!(ms(&timestamp(at)), at);
        }
        assert_eq!(rfc3339(1_764_065_363_999), "2025-11-25T10:09:23Z");
        assert_eq!(human_duration(243_000), "4m 3s");
        assert_eq!(human_duration(-5), "0s");
        assert_eq!(human_duration(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
    }
}
