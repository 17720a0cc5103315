//! The Nexmark data sets: proportions, ids, determinism, and every line's fields.

use std::time::Duration;

use generator::batch_files::write_batches;
use generator::events::parse_start_time;
use generator::nexmark::{FIRST_AUCTION_ID, FIRST_PERSON_ID, Layout, NexmarkGenerator};
use serde_json::Value;

fn records(layout: Layout, seed: u64, count: usize) -> Vec<Value> {
    let start = parse_start_time("2026-01-01T00:00:00").unwrap();
    let mut generator = NexmarkGenerator::new(layout, seed, start, 10_000.0);
    let mut out = Vec::new();
    for _ in 0..count {
        generator.write_next(&mut out).unwrap();
    }
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().unwrap().keys().map(String::as_str).collect()
}

const BID: [&str; 7] = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"];
const PERSON: [&str; 8] = ["id", "name", "email_address", "credit_card", "city", "state", "date_time", "extra"];
const AUCTION: [&str; 10] =
    ["id", "item_name", "description", "initial_bid", "reserve", "date_time", "expires", "seller", "category", "extra"];

#[test]
fn the_single_topic_layout_has_1_person_3_auctions_46_bids_per_50_events_with_their_fields() {
    let events = records(Layout::Nexmark, 7, 5000);
    let mut per_type = [0; 3];
    for e in &events {
        assert_eq!(keys(e), ["event_type", "person", "auction", "bid"]);
        let kind = e["event_type"].as_u64().unwrap() as usize;
        per_type[kind] += 1;
        let (field, declared): (&str, &[&str]) =
            [("person", &PERSON[..]), ("auction", &AUCTION[..]), ("bid", &BID[..])][kind];
        assert_eq!(keys(&e[field]), declared, "{e}");
        for other in ["person", "auction", "bid"].iter().filter(|f| **f != field) {
            assert!(e[*other].is_null(), "{e}");
        }
    }
    assert_eq!(per_type, [100, 300, 4600]);
    // Persons and auctions are numbered from 1000 in order; bids name existing ones or the next few.
    let ids = |field: &str| {
        events.iter().filter(|e| !e[field].is_null()).map(|e| e[field]["id"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids("person"), (FIRST_PERSON_ID..FIRST_PERSON_ID + 100).collect::<Vec<_>>());
    assert_eq!(ids("auction"), (FIRST_AUCTION_ID..FIRST_AUCTION_ID + 300).collect::<Vec<_>>());
    for e in events.iter().filter(|e| !e["bid"].is_null()) {
        let bid = &e["bid"];
        let (auction, bidder) = (bid["auction"].as_u64().unwrap(), bid["bidder"].as_u64().unwrap());
        assert!((FIRST_AUCTION_ID..FIRST_AUCTION_ID + 300 + 10).contains(&auction), "{bid}");
        assert!((FIRST_PERSON_ID..FIRST_PERSON_ID + 100 + 10).contains(&bidder), "{bid}");
        let price = bid["price"].as_u64().unwrap();
        assert!((100..=100_000_000).contains(&price), "{bid}");
    }
    let auction = &events[1]["auction"];
    assert!(auction["expires"].as_str().unwrap() > auction["date_time"].as_str().unwrap(), "{auction}");
    assert_eq!(events[1]["auction"]["date_time"], "2026-01-01T00:00:00.000");
    assert_eq!(events[4999]["bid"]["date_time"], "2026-01-01T00:00:00.499");
}

#[test]
fn bids_are_the_bids_of_the_single_topic_stream_with_hot_auctions_bidders_and_channels() {
    let bids = records(Layout::Bids, 7, 4600);
    let from_stream: Vec<Value> = records(Layout::Nexmark, 7, 5000)
        .into_iter()
        .filter(|e| !e["bid"].is_null())
        .map(|e| e["bid"].clone())
        .collect();
    assert_eq!(bids, from_stream);
    for bid in &bids {
        assert_eq!(keys(bid), BID);
    }
    let share = |pred: &dyn Fn(&Value) -> bool| bids.iter().filter(|b| pred(b)).count() as f64 / bids.len() as f64;
    // Half the bids go to a hot auction (the first of its hundred), three in four to a hot
    // bidder (the second of its hundred).
    let hot_auction = |b: &Value| (b["auction"].as_u64().unwrap() - FIRST_AUCTION_ID).is_multiple_of(100);
    let hot_bidder = |b: &Value| (b["bidder"].as_u64().unwrap() - FIRST_PERSON_ID) % 100 == 1;
    assert!((0.48..0.56).contains(&share(&hot_auction)), "{}", share(&hot_auction));
    assert!((0.72..0.80).contains(&share(&hot_bidder)), "{}", share(&hot_bidder));
    let hot = ["Google", "Facebook", "Baidu", "Apple"];
    assert!((0.45..0.55).contains(&share(&|b| hot.contains(&b["channel"].as_str().unwrap()))));
    assert!(bids.iter().all(
        |b| hot.contains(&b["channel"].as_str().unwrap()) || b["channel"].as_str().unwrap().starts_with("channel-")
    ));
    // price = round(10^(6·u) · 100): a tenth or so under 200, a tenth or so over 5·10^7.
    assert!((0.03..0.1).contains(&share(&|b| b["price"].as_u64().unwrap() < 200)));
}

#[test]
fn the_same_seed_gives_the_same_records_and_another_seed_does_not() {
    for layout in [Layout::Bids, Layout::Nexmark] {
        assert_eq!(records(layout, 3, 500), records(layout, 3, 500));
        assert_ne!(records(layout, 3, 500), records(layout, 4, 500));
    }
}

#[test]
fn bids_go_into_batch_files_like_the_interactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = NexmarkGenerator::new(Layout::Bids, 1, 0, 100.0);
    let files = write_batches(dir.path(), &mut generator, 2500, 1000, Duration::ZERO).unwrap();
    let lines: Vec<usize> = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).collect();
    assert_eq!(lines, [1000, 1000, 500]);
}
