//! Wall-clock time for expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The current time where a record with this expiry needs it to decide whether it expired;
/// 0 (and no clock read) for records that never expire.
pub(crate) fn now_ms_for(expires_at: u64) -> u64 {
    if expires_at == 0 { 0 } else { now_ms() }
}

/// The expiry timestamp for a time-to-live starting now. Never 0, which means "no expiry".
pub(crate) fn expiry_after(ttl: Duration) -> u64 {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    now_ms().saturating_add(ttl_ms).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_in_the_future_and_never_zero() {
        let before = now_ms();
        let at = expiry_after(Duration::from_secs(10));
        assert!(at >= before + 10_000);
        assert_eq!(expiry_after(Duration::MAX), u64::MAX);
        assert!(expiry_after(Duration::ZERO) >= 1);
    }
}
