//! The time zone the pages show times in: UTC unless the reader picks another, as
//! Grafana does. The header's picker stores the choice in the `tz` cookie (an IANA
//! name such as `Europe/Paris`, or the browser's own zone); `?tz=` overrides it for
//! one request (API clients, links). Every time shown, typed into a range or drawn on
//! an axis is in this zone, and says which.

use chrono::{NaiveDateTime, TimeZone};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(chrono_tz::Tz);

impl Default for Zone {
    fn default() -> Self {
        Zone(chrono_tz::UTC)
    }
}

impl Zone {
    /// The zone of an IANA name (`UTC`, `Europe/Paris`), if it is one.
    pub fn parse(name: &str) -> Option<Zone> {
        name.trim().parse::<chrono_tz::Tz>().ok().map(Zone)
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// `YYYY-MM-DD HH:MM:SS` in this zone, the date and time joined by `separator`.
    pub fn format(&self, micros: i64, separator: char) -> String {
        let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        utc.with_timezone(&self.0).format(&format!("%Y-%m-%d{separator}%H:%M:%S")).to_string()
    }

    /// A wall-clock time in this zone as microseconds since the epoch (the earlier
    /// one when clocks go back; `None` for a time skipped when they go forward).
    pub fn micros_of_local(&self, time: NaiveDateTime) -> Option<i64> {
        self.0.from_local_datetime(&time).earliest().map(|t| t.timestamp_micros())
    }

    /// The zone a request asks for: `?tz=`, else the `tz` cookie, else UTC.
    pub fn of_request(parts: &axum::http::request::Parts) -> Zone {
        let from_query = parts.uri.query().and_then(|raw| {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
            pairs.into_iter().find(|(k, _)| k == "tz").map(|(_, v)| v)
        });
        let from_cookie = || {
            let cookies = parts.headers.get_all(axum::http::header::COOKIE);
            cookies.iter().filter_map(|h| h.to_str().ok()).flat_map(|h| h.split(';')).find_map(|c| {
                let value = c.trim().strip_prefix("tz=")?;
                let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("tz={value}")).ok()?;
                pairs.into_iter().next().map(|(_, v)| v)
            })
        };
        from_query.or_else(from_cookie).and_then(|name| Zone::parse(&name)).unwrap_or_default()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Zone {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Zone::of_request(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_write_in_the_zone_across_a_clock_change() {
        let paris = Zone::parse("Europe/Paris").unwrap();
        // 2026-01-01T00:00:00Z is 01:00 in Paris (winter), 2026-07-01T00:00:00Z 02:00 (summer).
        assert_eq!(paris.format(1_767_225_600_000_000, ' '), "2026-01-01 01:00:00");
        assert_eq!(paris.format(1_782_864_000_000_000, 'T'), "2026-07-01T02:00:00");
        let local = |text| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(paris.micros_of_local(local("2026-01-01 01:00:00")), Some(1_767_225_600_000_000));
        // 2026-03-29 02:30 does not exist in Paris; 2026-10-25 02:30 exists twice.
        assert_eq!(paris.micros_of_local(local("2026-03-29 02:30:00")), None);
        assert_eq!(paris.micros_of_local(local("2026-10-25 02:30:00")), Some(1_792_888_200_000_000));
        assert_eq!(Zone::default().name(), "UTC");
        assert_eq!(Zone::parse("Mars/Olympus"), None);
    }
}
