//! Nexmark data sets: the person / auction / bid stream of the Nexmark benchmark, after
//! its generator (`GeneratorConfig`, `PersonGenerator`, `AuctionGenerator`,
//! `BidGenerator` in github.com/nexmark/nexmark and Apache Beam's nexmark), with its
//! default configuration: per 50 events 1 person, 3 auctions, 46 bids; ids from 1000;
//! hot auctions (ratio 2), hot bidders (4) and hot sellers (4), else a recent one;
//! records padded by `extra` to 200 / 500 / 100 bytes on average.
//!
//! Two layouts, one JSON object per line, with the field names of Flink's nexmark and
//! RisingWave's nexmark source:
//! * [`Layout::Bids`]: the bids alone, flat:
//!   `{"auction":1000,"bidder":1001,"price":1234,"channel":"Google","url":"https://…","date_time":"2026-01-01T00:00:00.123","extra":"…"}`;
//! * [`Layout::Nexmark`]: the single-topic layout,
//!   `{"event_type":0|1|2,"person":{…}|null,"auction":{…}|null,"bid":{…}|null}`.
//!
//! Event `n` of the stream (persons and auctions included, also when only bids are
//! written) is stamped `start + n / events_per_second` (milliseconds) and drawn from its
//! own random sequence, seeded by the seed and `n`: the bids of `Bids` are exactly the
//! bids of `Nexmark` for the same seed, and no event depends on those before it.

use std::io::Write;

use crate::events::SplitMix64;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDERS_RATIO: u64 = 4;
const HOT_SELLERS_RATIO: u64 = 4;
/// Hot auctions / bidders / sellers are the first of each batch of this many.
const HOT_BATCH: u64 = 100;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// Ids of people and auctions not created yet that may be chosen.
const ID_LEAD: u64 = 10;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
const NUM_CATEGORIES: u64 = 5;
const CHANNELS: u64 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
/// `extra` is a slice of this many random letters (Nexmark reuses one 1 MiB string).
const EXTRA_POOL: usize = 1 << 16;

/// Which records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The bids only, flat.
    Bids,
    /// Every event, in Nexmark's single-topic layout.
    Nexmark,
}

/// The finalizer of SplitMix64: a good 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The last person id (base 0) at event `n`: the current one if `n` is a person.
fn last_base0_person_id(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = n % TOTAL_PROPORTION;
    // During the epoch's auctions and bids: its last person.
    let offset = if offset >= PERSON_PROPORTION { PERSON_PROPORTION - 1 } else { offset };
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id (base 0) at event `n`: the current one if `n` is an auction.
fn last_base0_auction_id(n: u64) -> u64 {
    let mut epoch = n / TOTAL_PROPORTION;
    let mut offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the last auction of the previous epoch.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

pub struct NexmarkGenerator {
    layout: Layout,
    seed: u64,
    start_ms: i64,
    events_per_second: f64,
    /// The next record to write: an event number, or with `Bids` a bid number.
    next: u64,
    hot_urls: Vec<String>,
    channel_urls: Vec<String>,
    extra_pool: Vec<u8>,
}

impl NexmarkGenerator {
    pub fn new(layout: Layout, seed: u64, start_time_micros: i64, events_per_second: f64) -> Self {
        // The channels' urls and the extra pool are fixed per seed, like Nexmark's static caches.
        let mut rng = SplitMix64(mix(seed ^ 0x6E65_786D_6172_6B21));
        let hot_urls = (0..HOT_CHANNELS.len()).map(|_| base_url(&mut rng)).collect();
        let channel_urls = (0..CHANNELS)
            .map(|i| {
                let url = base_url(&mut rng);
                match rng.below(10) > 0 {
                    true => format!("{url}&channel_id={}", (i as i32).reverse_bits().unsigned_abs()),
                    false => url,
                }
            })
            .collect();
        let extra_pool = (0..EXTRA_POOL).map(|_| b'a' + rng.below(26) as u8).collect();
        NexmarkGenerator {
            layout,
            seed,
            start_ms: start_time_micros.div_euclid(1000),
            events_per_second,
            next: 0,
            hot_urls,
            channel_urls,
            extra_pool,
        }
    }

    /// Event time of event `n`, in milliseconds.
    fn time_ms(&self, n: u64) -> i64 {
        self.start_ms + (n as f64 * 1000.0 / self.events_per_second) as i64
    }

    /// Writes the next record as one JSON line (with its newline) into `out`.
    pub fn write_next(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        let n = match self.layout {
            Layout::Nexmark => self.next,
            // The k-th bid is event 50·(k / 46) + 4 + k % 46.
            Layout::Bids => {
                (self.next / BID_PROPORTION) * TOTAL_PROPORTION
                    + PERSON_PROPORTION
                    + AUCTION_PROPORTION
                    + self.next % BID_PROPORTION
            }
        };
        self.next += 1;
        let mut rng = SplitMix64(mix(self.seed.wrapping_add(mix(n))));
        let kind = n % TOTAL_PROPORTION;
        let kind = if kind < PERSON_PROPORTION {
            0
        } else if kind < PERSON_PROPORTION + AUCTION_PROPORTION {
            1
        } else {
            2
        };
        match self.layout {
            Layout::Bids => self.write_bid(out, n, &mut rng)?,
            Layout::Nexmark => {
                write!(out, r#"{{"event_type":{kind},"person":"#)?;
                match kind {
                    0 => self.write_person(out, n, &mut rng)?,
                    _ => out.write_all(b"null")?,
                }
                out.write_all(br#","auction":"#)?;
                match kind {
                    1 => self.write_auction(out, n, &mut rng)?,
                    _ => out.write_all(b"null")?,
                }
                out.write_all(br#","bid":"#)?;
                match kind {
                    2 => self.write_bid(out, n, &mut rng)?,
                    _ => out.write_all(b"null")?,
                }
                out.write_all(b"}")?;
            }
        }
        out.write_all(b"\n")
    }

    fn write_person(&self, out: &mut impl Write, n: u64, rng: &mut SplitMix64) -> std::io::Result<()> {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let name = format!("{} {}", pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
        let email = format!("{}@{}.com", next_string(rng, 7), next_string(rng, 5));
        let card = (0..4).map(|_| format!("{:04}", rng.below(10_000))).collect::<Vec<_>>().join(" ");
        let city = pick(rng, &US_CITIES);
        let state = pick(rng, &US_STATES);
        let size = 8 + name.len() + email.len() + card.len() + city.len() + state.len();
        write!(
            out,
            r#"{{"id":{id},"name":"{name}","email_address":"{email}","credit_card":"{card}","city":"{city}","state":"{state}","date_time":"#
        )?;
        write_time(out, self.time_ms(n))?;
        self.write_extra(out, rng, size, AVG_PERSON_BYTES)?;
        out.write_all(b"}")
    }

    fn write_auction(&self, out: &mut impl Write, n: u64, rng: &mut SplitMix64) -> std::io::Result<()> {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = match rng.below(HOT_SELLERS_RATIO) > 0 {
            true => (last_base0_person_id(n) / HOT_BATCH) * HOT_BATCH,
            false => next_base0_person_id(n, rng),
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = next_price(rng);
        let time = self.time_ms(n);
        // Auctions last on average until `NUM_IN_FLIGHT_AUCTIONS` more have been created.
        let horizon = self.time_ms(n + NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION) - time;
        let expires = time + 1 + rng.below((horizon * 2).max(1) as u64) as i64;
        let item_name = next_string(rng, 20);
        let description = next_string(rng, 100);
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        write!(
            out,
            r#"{{"id":{id},"item_name":"{item_name}","description":"{description}","initial_bid":{initial_bid},"reserve":{reserve},"date_time":"#
        )?;
        write_time(out, time)?;
        out.write_all(br#","expires":"#)?;
        write_time(out, expires)?;
        write!(out, r#","seller":{seller},"category":{category}"#)?;
        self.write_extra(out, rng, size, AVG_AUCTION_BYTES)?;
        out.write_all(b"}")
    }

    fn write_bid(&self, out: &mut impl Write, n: u64, rng: &mut SplitMix64) -> std::io::Result<()> {
        let auction = match rng.below(HOT_AUCTION_RATIO) > 0 {
            true => (last_base0_auction_id(n) / HOT_BATCH) * HOT_BATCH,
            false => {
                let last = last_base0_auction_id(n);
                let min = last.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
                min + rng.below(last - min + 1 + ID_LEAD)
            }
        } + FIRST_AUCTION_ID;
        let bidder = match rng.below(HOT_BIDDERS_RATIO) > 0 {
            // The second person of the batch, so hot bidders and hot sellers differ.
            true => (last_base0_person_id(n) / HOT_BATCH) * HOT_BATCH + 1,
            false => next_base0_person_id(n, rng),
        } + FIRST_PERSON_ID;
        let price = next_price(rng);
        let (channel, url): (std::borrow::Cow<str>, &str) = match rng.below(2) > 0 {
            true => {
                let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
                (HOT_CHANNELS[i].into(), &self.hot_urls[i])
            }
            false => {
                let i = rng.below(CHANNELS) as usize;
                (format!("channel-{i}").into(), &self.channel_urls[i])
            }
        };
        write!(
            out,
            r#"{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"{url}","date_time":"#
        )?;
        write_time(out, self.time_ms(n))?;
        self.write_extra(out, rng, 8 + 8 + 8 + 8, AVG_BID_BYTES)?;
        out.write_all(b"}")
    }

    /// `,"extra":"…"` with a length that brings `size` to `average` on average (±20 %).
    fn write_extra(
        &self,
        out: &mut impl Write,
        rng: &mut SplitMix64,
        size: usize,
        average: usize,
    ) -> std::io::Result<()> {
        let wanted = average.saturating_sub(size);
        let delta = (wanted as f64 * 0.2).round() as usize;
        let length = wanted - delta + if delta == 0 { 0 } else { rng.below(2 * delta as u64) as usize };
        let offset = rng.below((EXTRA_POOL - length) as u64) as usize;
        out.write_all(br#","extra":""#)?;
        out.write_all(&self.extra_pool[offset..offset + length])?;
        out.write_all(b"\"")
    }
}

/// A random person id (base 0) among the active people, plus a few not created yet.
fn next_base0_person_id(n: u64, rng: &mut SplitMix64) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + ID_LEAD)
}

fn next_price(rng: &mut SplitMix64) -> u64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as u64
}

fn pick<'a>(rng: &mut SplitMix64, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

/// 3 to `max - 1` characters: letters, and one in 13 a `special`; trimmed as Nexmark does.
fn next_string_with(rng: &mut SplitMix64, max: u64, special: char) -> String {
    let length = 3 + rng.below(max - 3);
    let text: String = (0..length)
        .map(|_| match rng.below(13) {
            0 => special,
            _ => (b'a' + rng.below(26) as u8) as char,
        })
        .collect();
    text.trim().to_string()
}

fn next_string(rng: &mut SplitMix64, max: u64) -> String {
    next_string_with(rng, max, ' ')
}

fn base_url(rng: &mut SplitMix64) -> String {
    let mut part = || next_string_with(rng, 5, '_');
    format!("https://www.nexmark.com/{}/{}/{}/item.htm?query=1", part(), part(), part())
}

/// `"2026-01-01T00:00:00.123"` (UTC, milliseconds, no offset).
fn write_time(out: &mut impl Write, ms: i64) -> std::io::Result<()> {
    let utc = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    write!(out, "\"{}\"", utc.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(layout: Layout, seed: u64, count: usize) -> Vec<String> {
        let start = crate::events::parse_start_time("2026-01-01T00:00:00").unwrap();
        let mut g = NexmarkGenerator::new(layout, seed, start, 1000.0);
        let mut out = Vec::new();
        for _ in 0..count {
            g.write_next(&mut out).unwrap();
        }
        String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn ids_follow_the_proportions_of_each_epoch() {
        assert_eq!((last_base0_person_id(0), last_base0_auction_id(1), last_base0_auction_id(3)), (0, 0, 2));
        // A bid sees the epoch's last auction; the next epoch's person sees it too.
        assert_eq!((last_base0_auction_id(49), last_base0_auction_id(50), last_base0_person_id(50)), (2, 2, 1));
        assert_eq!(last_base0_auction_id(51), 3);
    }

    #[test]
    fn extra_pads_a_bid_to_about_a_hundred_bytes() {
        let lines = lines(Layout::Bids, 1, 1000);
        let extra: usize = lines.iter().map(|l| l.split(r#""extra":""#).nth(1).unwrap().len() - 2).sum();
        let mean = extra as f64 / 1000.0;
        assert!((64.0..72.0).contains(&mean), "{mean}");
        assert!(lines[0].starts_with(r#"{"auction":"#), "{}", lines[0]);
        assert!(lines[0].contains(r#""date_time":"2026-01-01T00:00:00.004""#), "{}", lines[0]);
    }
}
