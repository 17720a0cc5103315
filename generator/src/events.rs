//! The default data set: user interactions, one JSON object per line.
//!
//! `{"user_id": 17, "item_id": 3, "interaction_type": "view", "timestamp": "2026-11-22T14:03:07.123456"}`

use std::io::Write;

/// How the `timestamp` field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampFormat {
    /// `2026-11-22T14:03:07.123456` (UTC, no offset)
    Iso,
    /// `2026-11-22T15:03:07.123456+01:00`
    IsoOffset,
    /// `1795356187123` (milliseconds since the epoch)
    EpochMs,
    /// A deterministic mix of the three.
    Mixed,
}

pub struct EventOptions {
    pub seed: u64,
    pub users: u64,
    pub items: u64,
    pub start_time_micros: i64,
    pub events_per_second: f64,
    pub out_of_order_share: f64,
    pub out_of_order_seconds: f64,
    pub late_share: f64,
    pub timestamp_format: TimestampFormat,
}

/// SplitMix64: tiny, fast, and the same sequence on every platform and version,
/// which is what `--seed` promises.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct EventGenerator {
    options: EventOptions,
    rng: SplitMix64,
    index: u64,
}

const TYPES: [&str; 3] = ["view", "click", "purchase"];

impl EventGenerator {
    pub fn new(options: EventOptions) -> Self {
        let rng = SplitMix64(options.seed);
        EventGenerator { options, rng, index: 0 }
    }

    /// Writes the next event as one JSON line (with its newline) into `out`.
    pub fn write_next(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        let o = &self.options;
        let user_id = 1 + self.rng.below(o.users);
        let item_id = 1 + self.rng.below(o.items);
        // Most interactions are views, fewer clicks, few purchases.
        let roll = self.rng.below(100);
        let interaction_type = TYPES[if roll < 70 {
            0
        } else if roll < 95 {
            1
        } else {
            2
        }];
        let clock = o.start_time_micros + (self.index as f64 * 1e6 / o.events_per_second) as i64;
        let shift = self.rng.unit();
        let micros = if shift < o.late_share {
            clock - 3_600_000_000 - self.rng.below(3_600_000_000) as i64
        } else if shift < o.late_share + o.out_of_order_share {
            clock - self.rng.below((o.out_of_order_seconds * 1e6) as u64 + 1) as i64
        } else {
            clock
        };
        let format = match o.timestamp_format {
            TimestampFormat::Mixed => {
                [TimestampFormat::Iso, TimestampFormat::IsoOffset, TimestampFormat::EpochMs][self.rng.below(3) as usize]
            }
            other => other,
        };
        self.index += 1;
        write!(
            out,
            r#"{{"user_id": {user_id}, "item_id": {item_id}, "interaction_type": "{interaction_type}", "timestamp": "#
        )?;
        write_timestamp(out, micros, format)?;
        out.write_all(b"}\n")
    }
}

fn write_timestamp(out: &mut impl Write, micros: i64, format: TimestampFormat) -> std::io::Result<()> {
    let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    match format {
        TimestampFormat::EpochMs => write!(out, "{}", micros.div_euclid(1000)),
        TimestampFormat::IsoOffset => {
            let plus_one = utc.with_timezone(&chrono::FixedOffset::east_opt(3600).expect("valid offset"));
            write!(out, "\"{}\"", plus_one.format("%Y-%m-%dT%H:%M:%S%.6f%:z"))
        }
        TimestampFormat::Iso | TimestampFormat::Mixed => {
            write!(out, "\"{}\"", utc.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f"))
        }
    }
}

/// Parses `--start-time` (ISO-8601 with or without offset; no offset means UTC) to epoch µs.
pub fn parse_start_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")?;
    Ok(naive.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> EventOptions {
        EventOptions {
            seed,
            users: 10,
            items: 5,
            start_time_micros: parse_start_time("2026-01-01T00:00:00").unwrap(),
            events_per_second: 10.0,
            out_of_order_share: 0.0,
            out_of_order_seconds: 0.0,
            late_share: 0.0,
            timestamp_format: TimestampFormat::Iso,
        }
    }

    fn lines(options: EventOptions, n: usize) -> Vec<String> {
        let mut g = EventGenerator::new(options);
        let mut out = Vec::new();
        for _ in 0..n {
            g.write_next(&mut out).unwrap();
        }
        String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_does_not() {
        assert_eq!(lines(options(7), 50), lines(options(7), 50));
        assert_ne!(lines(options(7), 50), lines(options(8), 50));
    }

    #[test]
    fn events_have_the_documented_shape_and_a_steady_clock() {
        let lines = lines(options(1), 11);
        assert!(lines[0].starts_with(r#"{"user_id": "#), "{}", lines[0]);
        assert!(lines[0].ends_with(r#""timestamp": "2026-01-01T00:00:00.000000"}"#), "{}", lines[0]);
        assert!(lines[10].ends_with(r#""timestamp": "2026-01-01T00:00:01.000000"}"#), "{}", lines[10]);
    }

    #[test]
    fn every_timestamp_format_is_written_as_documented() {
        let micros = parse_start_time("2026-11-22T14:03:07.123456").unwrap();
        let fmt = |f| {
            let mut out = Vec::new();
            write_timestamp(&mut out, micros, f).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(fmt(TimestampFormat::Iso), "\"2026-11-22T14:03:07.123456\"");
        assert_eq!(fmt(TimestampFormat::IsoOffset), "\"2026-11-22T15:03:07.123456+01:00\"");
        assert_eq!(fmt(TimestampFormat::EpochMs), (micros / 1000).to_string());
    }

    #[test]
    fn late_events_are_at_least_an_hour_behind_the_clock() {
        let mut o = options(3);
        o.late_share = 1.0;
        o.timestamp_format = TimestampFormat::EpochMs;
        let start_ms = o.start_time_micros / 1000;
        for line in lines(o, 100) {
            let ts: i64 = line.rsplit(": ").next().unwrap().trim_end_matches('}').parse().unwrap();
            assert!(ts <= start_ms - 3_600_000 + 10_000, "{line}");
        }
    }
}
