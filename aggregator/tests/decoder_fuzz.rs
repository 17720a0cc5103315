//! Property tests of the JSON decoder against hostile input: arbitrary bytes and
//! arbitrary JSON (deep nesting, huge numbers and strings, NUL bytes, invalid UTF-8,
//! duplicate keys), alone and mixed with good events. Whatever a record holds, it is
//! decoded or becomes a bad record with a reason: the decoder never panics, never
//! fails the batch, and a record's fate does not depend on its neighbours.
//!
//! Each property runs for a bounded time (`DECODER_FUZZ_SECONDS`, default 4 s each,
//! new cases all along). A longer run:
//!
//! ```sh
//! DECODER_FUZZ_SECONDS=600 cargo test --release -p aggregator --test decoder_fuzz
//! ```
//!
//! A failure prints the smallest input proptest could shrink it to.

mod support;

use std::time::{Duration, Instant};

use aggregator::source::decode::{Decoded, JsonDecoder, MAX_NESTING};
use datafusion::arrow::array::RecordBatch;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Small enough that the size limit is exercised too.
const MAX_RECORD_BYTES: usize = 64 * 1024;

fn decoder() -> JsonDecoder {
    JsonDecoder::new(&support::interactions(), MAX_RECORD_BYTES)
}

/// Runs `test` on new cases from `strategy` until the time budget is spent: rounds of
/// 32 cases, each round from its own seed (`DECODER_FUZZ_SEED` picks the first; by
/// default the clock does).
fn for_a_while<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok());
    let budget = Duration::from_secs_f64(env("DECODER_FUZZ_SECONDS").unwrap_or(4.0));
    let first_seed = std::env::var("DECODER_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let started = Instant::now();
    let mut cases = 0;
    let mut seed = first_seed;
    while cases == 0 || started.elapsed() < budget {
        let config = Config { cases: 32, failure_persistence: None, ..Config::default() };
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{e}\n(round seed {seed}: DECODER_FUZZ_SEED={seed} replays it first)");
        }
        cases += 32;
        seed = seed.wrapping_add(1);
    }
    eprintln!("{cases} cases in {:.1} s (seeds from {first_seed})", started.elapsed().as_secs_f64());
}

/// A JSON value as text, built by hand so that objects may repeat keys and numbers
/// may be any digits at all.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    /// Raw number text: huge integers, long fractions, big exponents.
    Number(String),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::Text(t) => out.push_str(&serde_json::Value::String(t.clone()).to_string()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
        // Beyond i64 and f64: 19 to 400 digits, exponents up to 9999.
        "-?[1-9][0-9]{18,400}",
        "-?[0-9]\\.[0-9]{1,300}[eE][-+]?[0-9]{1,4}",
        Just("9223372036854775808".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("1e309".to_string()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        // NUL and other control characters, escapes, surrogates' neighbours.
        proptest::collection::vec(prop_oneof![Just('\0'), Just('\u{1}'), Just('"'), Just('\\'), any::<char>()], 0..40)
            .prop_map(|chars| chars.into_iter().collect()),
        // Long strings.
        (any::<char>(), 1000usize..20_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("user_id".to_string()),
        Just("item_id".to_string()),
        Just("interaction_type".to_string()),
        Just("timestamp".to_string()),
        "[a-z]{1,8}",
        text(),
    ]
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Number),
        text().prop_map(Json::Text),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            // Keys drawn from a small set, so duplicates are common.
            proptest::collection::vec((key(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

/// A good event with some of its fields replaced, removed, repeated or added.
fn event() -> impl Strategy<Value = Vec<u8>> {
    let good = || {
        vec![
            ("user_id".to_string(), Json::Number("17".into())),
            ("item_id".to_string(), Json::Number("3".into())),
            ("interaction_type".to_string(), Json::Text("view".into())),
            ("timestamp".to_string(), Json::Text("2026-11-22T14:03:07.123456".into())),
        ]
    };
    (proptest::collection::vec((0usize..6, key(), json()), 0..4)).prop_map(move |edits| {
        let mut fields = good();
        for (what, key, value) in edits {
            match what {
                0 if !fields.is_empty() => {
                    fields.remove(key.len() % fields.len());
                }
                1 if !fields.is_empty() => {
                    let i = key.len() % fields.len();
                    fields[i].1 = value;
                }
                // A repeated key.
                2 if !fields.is_empty() => {
                    let name = fields[key.len() % fields.len()].0.clone();
                    fields.push((name, value));
                }
                _ => fields.push((key, value)),
            }
        }
        Json::Object(fields).text().into_bytes()
    })
}

/// Deeply nested values, as a field of an event or as the whole record.
fn deep() -> impl Strategy<Value = Vec<u8>> {
    (1usize..3000, prop_oneof![Just("["), Just("{\"a\":")], any::<bool>()).prop_map(|(depth, open, wrapped)| {
        let close = if open == "[" { "]" } else { "}" };
        let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let text = if wrapped {
            format!(
                r#"{{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": 1795356187123, "x": {value}}}"#
            )
        } else {
            value
        };
        text.into_bytes()
    })
}

/// Bytes that may be anything: invalid UTF-8, NULs, truncated JSON.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // A good event cut or with a byte flipped.
        (event(), any::<usize>(), any::<u8>()).prop_map(|(mut e, at, b)| {
            if !e.is_empty() {
                let i = at % e.len();
                if b % 2 == 0 { e.truncate(i) } else { e[i] = b }
            }
            e
        }),
        // Over the size limit.
        (MAX_RECORD_BYTES - 10..MAX_RECORD_BYTES + 10).prop_map(|n| vec![b' '; n]),
    ]
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => event(),
        2 => json().prop_map(|j| j.text().into_bytes()),
        2 => bytes(),
        1 => deep(),
    ]
}

/// What became of each record: `Ok(row as JSON)` or `Err(reason)`.
fn fates(records: &[Vec<u8>], decoded: &Decoded) -> Result<Vec<Result<String, String>>, TestCaseError> {
    let n = records.len();
    prop_assert_eq!(decoded.batch.num_rows(), decoded.rows.len());
    prop_assert_eq!(decoded.rows.len() + decoded.bad.len(), n, "every record is good or bad");
    let mut fate: Vec<Option<Result<String, String>>> = vec![None; n];
    for (row, &i) in decoded.rows.iter().enumerate() {
        prop_assert!(i < n && fate[i].is_none(), "record {} decoded twice or out of range", i);
        fate[i] = Some(Ok(row_json(&decoded.batch, row)));
    }
    for (i, reason) in &decoded.bad {
        prop_assert!(*i < n && fate[*i].is_none(), "record {} is good and bad, or out of range", i);
        prop_assert!(!reason.trim().is_empty(), "record {} is bad without a reason", i);
        fate[*i] = Some(Err(reason.clone()));
    }
    prop_assert!(decoded.rows.windows(2).all(|w| w[0] < w[1]), "good rows keep the input order");
    Ok(fate.into_iter().map(|f| f.expect("every index seen")).collect())
}

fn row_json(batch: &RecordBatch, row: usize) -> String {
    let cells: Vec<String> = (0..batch.num_columns())
        .map(|c| aggregator::sink::values::cell(batch.column(c), row).to_json().to_string())
        .collect();
    cells.join("|")
}

/// Decodes the records as one batch and each alone: the same fate for every record.
fn check(records: Vec<Vec<u8>>) -> Result<(), TestCaseError> {
    let decoder = decoder();
    let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let together = decoder.decode(&slices).map_err(|e| TestCaseError::fail(format!("the batch failed: {e}")))?;
    let together = fates(&records, &together)?;
    for (i, record) in records.iter().enumerate() {
        let alone = decoder.decode(&[record.as_slice()]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let alone = fates(std::slice::from_ref(record), &alone)?;
        prop_assert_eq!(
            together[i].is_ok(),
            alone[0].is_ok(),
            "record {} ({:?}) is {:?} in the batch but {:?} alone",
            i,
            String::from_utf8_lossy(&record[..record.len().min(200)]),
            together[i],
            alone[0]
        );
        if let (Ok(a), Ok(b)) = (&together[i], &alone[0]) {
            prop_assert_eq!(a, b, "record {} decodes differently in the batch", i);
        }
    }
    Ok(())
}

#[test]
fn arbitrary_records_are_decoded_or_rejected_with_a_reason_never_a_crash() {
    for_a_while(proptest::collection::vec(record(), 1..12), check);
}

#[test]
fn arbitrary_json_values_alone_never_crash_the_decoder() {
    for_a_while(json(), |value| check(vec![value.text().into_bytes()]));
}

#[test]
fn a_record_nested_100000_levels_deep_is_a_bad_record_and_the_rest_decode() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(r#"{{"user_id": 1, "x": {}1{}}}"#, "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let good = br#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "2026-11-22T14:00:00"}"#;
    // Just within the limit: decoded (the extra field is ignored).
    let within = format!(
        r#"{{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": 1795356187123, "x": {}1{}}}"#,
        "[".repeat(MAX_NESTING - 1),
        "]".repeat(MAX_NESTING - 1)
    );
    let decoder = JsonDecoder::new(&support::interactions(), 1 << 20);
    let records: Vec<&[u8]> = vec![deep.as_bytes(), good, deep_object.as_bytes(), within.as_bytes()];
    let decoded = decoder.decode(&records).unwrap();
    assert_eq!(decoded.rows, [1, 3]);
    let reasons: Vec<&str> = decoded.bad.iter().map(|(_, r)| r.as_str()).collect();
    let expected = format!("nested deeper than {MAX_NESTING} levels");
    assert_eq!(reasons, [expected.as_str(), expected.as_str()]);
}
