//! Bad input: a log with garbage mixed in. Every bad record is recorded with its
//! reason and offset, the counts reconcile (consumed = ok + bad + late), and the good
//! results equal the oracle over the good events.

mod support;

use std::io::Write;

use aggregator::source::decode::DEFAULT_MAX_RECORD_BYTES;
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

/// The aggregator binary over `log`, with the shipped `pipelines` copied into a folder
/// of their own, `--available-now`. Returns the exit status and the store.
fn run_binary(log: &std::path::Path, work: &std::path::Path, pipelines: &[&str], env: &[(&str, &str)]) -> bool {
    let sql = work.join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    for name in pipelines {
        std::fs::copy(repo_root().join(format!("sql/{name}.sql")), sql.join(format!("{name}.sql"))).unwrap();
    }
    run_binary_on(&sql, log, work, env)
}

/// The aggregator binary over `log` with the pipelines of the folder `sql`, `--available-now`.
fn run_binary_on(sql: &std::path::Path, log: &std::path::Path, work: &std::path::Path, env: &[(&str, &str)]) -> bool {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(["--sql", sql.to_str().unwrap(), "--source", &format!("file:{}", log.display())])
        .args(["--sink", &format!("sqlite:{}", work.join("results.sqlite").display())])
        .args(["--checkpoint-dir", work.join("checkpoints").to_str().unwrap()])
        .args(["--max-batch-records", "500", "--available-now"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A crash of the process (a signal such as SIGSEGV/SIGABRT) has no exit code.
    assert!(output.status.code().is_some(), "the process crashed: {:?}\n{stderr}", output.status);
    output.status.success()
}

fn append_lines(file: &std::path::Path, lines: &[Vec<u8>]) {
    let mut out = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    for line in lines {
        out.write_all(line).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

#[test]
fn a_record_nested_100000_levels_deep_is_a_bad_record_not_a_crash() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 3_000, 1_000, 5);
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_field = format!(
        r#"{{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": 1767225600000, "x": {}1{}}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    )
    .into_bytes();
    append_lines(&log.path().join("batch-00000001.jsonl"), &[deep, deep_field]);
    let work = tempfile::tempdir().unwrap();
    let pipelines = ["user_interactions_5m", "avg_interactions_per_item"];
    assert!(run_binary(log.path(), work.path(), &pipelines, &[]));
    // Run again over the same log (and a new file): the record does not stop it either.
    std::fs::copy(log.path().join("batch-00000001.jsonl"), log.path().join("batch-00000009.jsonl")).unwrap();
    assert!(run_binary(log.path(), work.path(), &pipelines, &[]));
    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    for pipeline in pipelines {
        let nested: Vec<String> = store
            .rejected(pipeline, false)
            .into_iter()
            .filter(|r| r.reason.contains("nested deeper than 128 levels"))
            .map(|r| r.source_offset)
            .collect();
        assert_eq!(
            nested,
            [
                "batch-00000001.jsonl:1001",
                "batch-00000001.jsonl:1002",
                "batch-00000009.jsonl:1001",
                "batch-00000009.jsonl:1002"
            ]
        );
        let file = repo_root().join(format!("sql/{pipeline}.sql"));
        let expected = oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES);
        let status = store.status(pipeline).unwrap();
        assert_eq!(
            (status.events_ok, status.events_bad, status.events_late),
            (expected.good, expected.bad, expected.late)
        );
        assert_eq!(store.rows(pipeline, expected.with_id), expected.rows);
    }
}

#[test]
fn event_times_at_the_ends_of_the_range_run_through_every_window_shape() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 3_000, 1_000, 13);
    let record = |time: &str| {
        format!(r#"{{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": {time}}}"#).into_bytes()
    };
    // The first event of the log at the start of year 0000; beyond the range, epoch
    // milliseconds near the ends of 64 bits (window and watermark arithmetic on those
    // overflowed: every pipeline failed on the first); the last event at the end of 9999.
    let first = log.path().join("batch-00000000.jsonl");
    let text = std::fs::read(&first).unwrap();
    std::fs::write(&first, [record("\"0000-01-01T00:00:00\""), b"\n".to_vec(), text].concat()).unwrap();
    let beyond = [record("-9223372036854775"), record("9223372036854775"), record("-62167219200001")];
    append_lines(&log.path().join("batch-00000001.jsonl"), &beyond);
    append_lines(&log.path().join("batch-00000002.jsonl"), &[record("\"9999-12-31T23:59:59.999999\"")]);

    let work = tempfile::tempdir().unwrap();
    let sql = work.path().join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let files = [
        repo_root().join("sql/user_interactions_5m.sql"),
        cases.join("hopping_window_panes.sql"),
        cases.join("hopping_window_distinct.sql"),
        cases.join("session_window.sql"),
    ];
    for file in &files {
        // The year-9999 event is far in the future: let it in.
        let text = std::fs::read_to_string(file).unwrap();
        std::fs::write(sql.join(file.file_name().unwrap()), format!("-- max_future: none\n{text}")).unwrap();
    }
    assert!(run_binary_on(&sql, log.path(), work.path(), &[]));
    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    for file in &files {
        let pipeline = file.file_stem().unwrap().to_str().unwrap();
        let status = store.status(pipeline).unwrap();
        assert_eq!(status.last_error, None, "{pipeline}");
        let bad = store.rejected(pipeline, false);
        assert_eq!(bad.len(), beyond.len(), "{pipeline}: {bad:?}");
        assert!(bad.iter().all(|r| r.reason.contains("out of range (the years 0000 to 9999)")), "{bad:?}");
        let expected = oracle(&sql.join(file.file_name().unwrap()), log.path(), DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(
            (status.events_ok, status.events_bad, status.events_late),
            (expected.good, expected.bad, expected.late),
            "{pipeline}"
        );
        assert_eq!(status.events_in, 3_000 + 2 + beyond.len() as u64);
        assert_eq!(store.rows(pipeline, expected.with_id), expected.rows, "{pipeline}");
    }
}

#[test]
fn an_event_stamped_2099_is_a_bad_record_and_the_later_events_still_count() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 4_000, 1_000, 9);
    let future = br#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "2099-01-01T00:00:00"}"#;
    append_lines(&log.path().join("batch-00000001.jsonl"), &[future.to_vec()]);
    let work = tempfile::tempdir().unwrap();
    let pipeline = "user_interactions_5m";
    assert!(run_binary(log.path(), work.path(), &[pipeline], &[]));
    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let bad = store.rejected(pipeline, false);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].source_offset, "batch-00000001.jsonl:1001");
    assert!(
        bad[0].reason.contains("2099-01-01T00:00:00") && bad[0].reason.contains("more than 1 day ahead of the clock"),
        "{}",
        bad[0].reason
    );
    let status = store.status(pipeline).unwrap();
    // The watermark follows the events of the first hour of 2026, so the later events still count.
    assert!(status.watermark.as_deref().is_some_and(|w| w < "2026-01-01T01"), "{:?}", status.watermark);
    let file = repo_root().join(format!("sql/{pipeline}.sql"));
    let expected = oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES);
    assert_eq!((status.events_ok, status.events_bad, status.events_late), (expected.good, expected.bad, expected.late));
    assert!(status.events_late < 100, "{} late", status.events_late);
    assert_eq!(store.rows(pipeline, expected.with_id), expected.rows);
}

#[test]
fn far_future_is_judged_against_the_clock_the_batch_first_ran_with() {
    use aggregator::pipeline::Shutdown;
    use aggregator::pipeline::offset_log::LoggedBatch;
    use aggregator::pipeline::runner::Pipeline;
    use aggregator::source::{Source, SourceOffset};
    let log = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "2026-01-01T10:00:00"}"#,
        r#"{"user_id": 2, "item_id": 2, "interaction_type": "view", "timestamp": "2026-01-03T00:00:00"}"#,
    ];
    std::fs::write(log.path().join("a.jsonl"), lines.join("\n")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let def = aggregator::pipeline::definition::PipelineDefinition::from_file(
        &repo_root().join("sql/user_interactions_5m.sql"),
    )
    .unwrap();
    let schema = interactions();
    let groups = runtime().block_on(async {
        let options = options(log.path(), work.path(), 10);
        let mut pipeline =
            Pipeline::start(def, &schema, &options, &Shutdown::default(), Default::default()).await.unwrap();
        let mut source =
            aggregator::source::file_log::FileLog::open(log.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
        let raw = source.next_batch(10).unwrap().unwrap();
        // As if the batch had first run on 2026-01-01 at noon and ran again now.
        let logged = LoggedBatch {
            clock_micros: 1_767_268_800_000_000, // 2026-01-01T12:00:00Z
            ..pipeline.log_batch(&raw, source.partitions()).unwrap()
        };
        pipeline.process(&raw, &logged, &Shutdown::default()).await.unwrap();
        pipeline.flush(&Shutdown::default()).await.unwrap();
        pipeline.checkpoint().unwrap();
        pipeline.state_groups()
    });
    assert_eq!(groups, 1, "only the first event is in the state");
    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let bad = store.rejected("user_interactions_5m", false);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].reason.contains("2026-01-03T00:00:00") && bad[0].reason.contains("2026-01-01T12:00:00"),
        "{}",
        bad[0].reason
    );
}

#[test]
fn a_panic_in_one_pipeline_fails_it_alone_with_the_message_in_its_status() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 2_000, 500, 13);
    let work = tempfile::tempdir().unwrap();
    let pipelines = ["user_interactions_5m", "item_interactions_5m"];
    // A fail point (compiled into test builds only) panics in one pipeline's third batch.
    let failpoints = [("FAILPOINTS", "pipeline_batch.item_interactions_5m=2*off->panic(boom at batch 3)")];
    assert!(
        !run_binary(log.path(), work.path(), &pipelines, &failpoints),
        "a failed pipeline makes the exit code non-zero"
    );
    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let failed = store.status("item_interactions_5m").unwrap();
    assert_eq!(failed.state, "failed");
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("boom at batch 3") && error.contains("item_interactions_5m.sql"),
        "{error}"
    );
    // The other pipeline ran to the end, equal to the oracle.
    let file = repo_root().join("sql/user_interactions_5m.sql");
    let expected = oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES);
    let good = store.status("user_interactions_5m").unwrap();
    assert_eq!(good.state, "caught_up");
    assert_eq!(good.events_ok, expected.good);
    assert_eq!(store.rows("user_interactions_5m", expected.with_id), expected.rows);
}
