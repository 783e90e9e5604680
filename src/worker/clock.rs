//! The worker's notion of now, read once per loop turn, with the formatted dates every
//! response and log line needs (formatted once per second, not per request).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Cached time for one turn of the event loop.
pub struct Clock {
    /// Monotonic now, for deadlines.
    pub now: Instant,
    second: u64,
    /// `Date` header value (IMF-fixdate).
    pub http_date: Vec<u8>,
    /// Access log time, `[21/Nov/2026:20:00:00 +0000]`.
    pub log_date: Vec<u8>,
    /// JSON access log time (RFC 3339, UTC), `2026-11-21T20:00:00Z`.
    pub rfc3339: Vec<u8>,
}

impl Clock {
    pub fn new() -> Clock {
        let mut clock = Clock {
            now: Instant::now(),
            second: u64::MAX,
            http_date: Vec::new(),
            log_date: Vec::new(),
            rfc3339: Vec::new(),
        };
        clock.tick();
        clock
    }

    /// Reads the clocks; reformats the dates when the second changed.
    pub fn tick(&mut self) {
        self.now = Instant::now();
        let wall = SystemTime::now();
        let second = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.http_date = httpdate::fmt_http_date(wall).into_bytes();
            self.log_date = log_date(second).into_bytes();
            self.rfc3339 = rfc3339(second).into_bytes();
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Formats seconds since the epoch in nginx's `$time_local` shape, in UTC.
fn log_date(epoch_seconds: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (epoch_seconds / 86_400) as i64;
    let secs = epoch_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "[{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Formats seconds since the epoch as RFC 3339 in UTC.
fn rfc3339(epoch_seconds: u64) -> String {
    let (year, month, day) = civil_from_days((epoch_seconds / 86_400) as i64);
    let secs = epoch_seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_dates() {
        assert_eq!(log_date(0), "[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(log_date(1_795_291_200), "[21/Nov/2026:20:00:00 +0000]");
        assert_eq!(log_date(951_782_400), "[29/Feb/2000:00:00:00 +0000]");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_291_200 + 3723), "2026-11-21T21:02:03Z");
    }
}
