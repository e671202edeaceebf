//! The one clock every record uses: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Python's `time.monotonic_ns()` reads the same system-wide clock on Linux,
//! so the harness, every agent and the servers can compare readings directly.
//! `std::time::Instant` reads it too but hides the absolute value.

/// Nanoseconds of `CLOCK_MONOTONIC` now.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail (checked anyway).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_monotonic_and_in_nanoseconds() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = monotonic_ns();
        assert!(b > a);
        // 5 ms of sleep is at least 5e6 ns, and surely under 5 s.
        assert!(b - a >= 5_000_000, "{}", b - a);
        assert!(b - a < 5_000_000_000, "{}", b - a);
    }
}
