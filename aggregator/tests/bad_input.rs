//! Bad input: a log with garbage mixed in. Every bad record is recorded with its
//! reason and offset, the counts reconcile (consumed = ok + bad + late), and the good
//! results equal the oracle over the good events.

mod support;

use std::io::Write;

use support::*;

/// Garbage lines and the words their reasons must contain.
fn garbage() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (br#"{"user_id": 1, "item_id": 2,"#.to_vec(), "truncated"),
        (
            br#"{"item_id": 2, "interaction_type": "view", "timestamp": "2026-01-01T00:00:00"}"#.to_vec(),
            "missing required field `user_id`",
        ),
        (
            br#"{"user_id": "abc", "item_id": 2, "interaction_type": "view", "timestamp": 1767225600000}"#.to_vec(),
            "abc",
        ),
        (br#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "noon"}"#.to_vec(), "noon"),
        (b"{\"user_id\": 1, \"item_id\": 2, \"interaction_type\": \"\xc3\x28\", \"timestamp\": 1}".to_vec(), "UTF-8"),
        (
            format!(r#"{{"user_id": 1, "item_id": 2, "interaction_type": "{}", "timestamp": 1}}"#, "x".repeat(5000))
                .into_bytes(),
            "exceeds the limit",
        ),
        (b"[1, 2, 3]".to_vec(), "expected"),
        (b"not json at all".to_vec(), ""),
    ]
}

#[test]
fn garbage_is_recorded_with_reasons_and_the_good_results_match_the_oracle() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 6_000, 1_000, 11);
    // Garbage (and blank lines, which are not records) appended to two files.
    let mut expected_offsets = Vec::new();
    for file in ["batch-00000001.jsonl", "batch-00000004.jsonl"] {
        let mut out = std::fs::OpenOptions::new().append(true).open(log.path().join(file)).unwrap();
        out.write_all(b"\n").unwrap();
        for (i, (line, _)) in garbage().iter().enumerate() {
            out.write_all(line).unwrap();
            out.write_all(b"\n").unwrap();
            expected_offsets.push(format!("{file}:{}", 1_000 + 2 + i));
        }
    }
    expected_offsets.sort();
    for pipeline in ["user_interactions_5m", "avg_interactions_per_item"] {
        let file = repo_root().join(format!("sql/{pipeline}.sql"));
        let work = tempfile::tempdir().unwrap();
        let mut options = options(log.path(), work.path(), 400);
        options.max_record_bytes = 4096;
        let status = run_pipeline(&file, &options).unwrap();
        let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
        let found: Vec<String> =
            store.rejected(pipeline, false).iter().map(|r| format!("{} {}", r.source_offset, r.reason)).collect();
        assert_eq!(status.events_bad, 2 * garbage().len() as u64, "{found:#?}");
        assert_eq!(status.events_in, 6_000 + status.events_bad);
        assert_eq!(status.events_in, status.events_ok + status.events_bad + status.events_late);

        let bad = store.rejected(pipeline, false);
        let mut offsets: Vec<String> = bad.iter().map(|r| r.source_offset.clone()).collect();
        offsets.sort();
        assert_eq!(offsets, expected_offsets);
        for record in &bad {
            let line: usize = record.source_offset.rsplit(':').next().unwrap().parse().unwrap();
            let (_, reason) = &garbage()[line - 1_002];
            assert!(
                record.reason.contains(reason),
                "{}: {:?} should mention {reason:?}",
                record.source_offset,
                record.reason
            );
        }
        let late = store.rejected(pipeline, true);
        assert_eq!(late.len() as u64, status.events_late);

        let expected = oracle(&file, log.path(), options.max_record_bytes);
        assert_eq!(expected.bad, status.events_bad);
        assert_eq!(sink_rows(&work.path().join("results.sqlite"), pipeline, expected.with_id), expected.rows);
    }
}
