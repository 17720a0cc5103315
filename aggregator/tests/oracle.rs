//! The oracle: every shipped pipeline and every SQL case, streamed over a log of
//! generated events (out-of-order and late ones included) in many micro-batches,
//! ends with exactly what the same SQL returns as one batch DataFusion query.
//! Cases with a `-- error: <text>` line must fail to plan with that text.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

fn expected_error(file: &Path) -> Option<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("-- error:").map(|m| m.trim().to_string()))
}

/// One log for all cases: 12,000 events in files of 1,000.
fn shared_log() -> tempfile::TempDir {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 12_000, 1_000, 42);
    log
}

#[test]
fn every_shipped_pipeline_matches_the_batch_query() {
    let log = shared_log();
    let files = sql_files(&repo_root().join("sql"));
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let work = tempfile::tempdir().unwrap();
        // 700 records per micro-batch: batches do not line up with files or windows.
        assert_matches_oracle(&file, log.path(), work.path(), 700);
    }
}

#[test]
fn every_sql_case_matches_the_batch_query_or_fails_as_expected() {
    let log = shared_log();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let files = sql_files(&dir);
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let work = tempfile::tempdir().unwrap();
        match expected_error(&file) {
            Some(message) => {
                let err = run_pipeline(&file, &options(log.path(), work.path(), 700)).unwrap_err();
                let text = err.to_string();
                assert!(
                    text.contains(&message),
                    "{}: expected an error containing {message:?}, got {text:?}",
                    file.display()
                );
                assert!(
                    text.contains(&file.display().to_string()),
                    "{}: the error must name the file: {text}",
                    file.display()
                );
                assert!(!text.contains("__watermark"), "{}: an internal column in the error: {text}", file.display());
            }
            None => assert_matches_oracle(&file, log.path(), work.path(), 700),
        }
    }
}

#[test]
fn results_do_not_depend_on_the_micro_batch_size() {
    let log = shared_log();
    let file = repo_root().join("sql/user_interactions_5m.sql");
    let mut results = Vec::new();
    for batch in [97, 5_000] {
        let work = tempfile::tempdir().unwrap();
        run_pipeline(&file, &options(log.path(), work.path(), batch)).unwrap();
        results.push(sink_rows(&work.path().join("results.sqlite"), "user_interactions_5m", false));
    }
    assert_eq!(results[0], results[1]);
}

/// `--workers`: the aggregation over SOURCE split into shards by key and the JSON
/// decoded in chunks at once give the same table (`_id`s included), the same counts of
/// bad and late records and the same rejected records as one worker; and a checkpoint
/// written by 3 workers resumes with 2 (the saved groups find their shards again).
#[test]
fn results_do_not_depend_on_the_number_of_workers() {
    let log = shared_log();
    // One file of 12,000: micro-batches big enough that the shards' router splits
    // them into slices computed at once (`Shards::route_input`).
    let one_file = tempfile::tempdir().unwrap();
    generate_log(one_file.path(), 12_000, 12_000, 7);
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let mut files = sql_files(&repo_root().join("sql"));
    files.extend(
        [
            "session_window.sql",
            "hopping_window.sql",
            "second_stage_retractions.sql",
            "top_n_per_window.sql",
            "distinct_and_approx.sql",
            "append_mode.sql",
        ]
        .map(|f| cases.join(f)),
    );
    for file in &files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_string();
        let table = aggregator::pipeline::definition::PipelineDefinition::from_file(file).unwrap().settings.target;
        let run_on = |log: &Path, workers: usize, batch: usize, work: &Path| {
            let options = aggregator::pipeline::PipelineOptions { workers, ..options(log, work, batch) };
            run_pipeline(file, &options).unwrap();
            let store = StoreReader::sqlite(&work.join("results.sqlite"));
            let status = store.status(&name).unwrap();
            let rejected = [store.rejected(&name, false), store.rejected(&name, true)]
                .map(|r| r.into_iter().map(|r| format!("{} {}", r.source_offset, r.reason)).collect::<Vec<_>>());
            (
                store.rows(&table, true),
                (status.events_in, status.events_ok, status.events_bad, status.events_late),
                rejected,
            )
        };
        let run = |workers: usize, batch: usize, work: &Path| run_on(log.path(), workers, batch, work);
        let one = tempfile::tempdir().unwrap();
        let expected = run(1, 12_000, one.path());
        assert!(!expected.0.is_empty(), "{name}: an empty result proves nothing");
        for (workers, batch) in [(2, 12_000), (3, 700)] {
            let work = tempfile::tempdir().unwrap();
            assert_eq!(run(workers, batch, work.path()), expected, "{name} with {workers} workers");
        }
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(
            run_on(one_file.path(), 2, 12_000, two.path()),
            run_on(one_file.path(), 1, 12_000, one.path()),
            "{name} with 2 workers, batches of 12,000"
        );
        // Half the log with 3 workers, then the rest with 1, from the checkpoint.
        let half = tempfile::tempdir().unwrap();
        let resumed = tempfile::tempdir().unwrap();
        copy_log_files(log.path(), half.path(), 6);
        let options3 =
            aggregator::pipeline::PipelineOptions { workers: 3, ..options(half.path(), resumed.path(), 700) };
        run_pipeline(file, &options3).unwrap();
        copy_log_files(log.path(), half.path(), usize::MAX);
        let options2 =
            aggregator::pipeline::PipelineOptions { workers: 2, ..options(half.path(), resumed.path(), 700) };
        run_pipeline(file, &options2).unwrap();
        assert_eq!(
            sink_rows(&resumed.path().join("results.sqlite"), &table, true),
            expected.0,
            "{name} resumed with 2 workers"
        );
    }
}

/// Copies the first `n` files of a batch-file log into `to` (those not there yet).
fn copy_log_files(from: &Path, to: &Path, n: usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().take(n) {
        let target = to.join(file.file_name().unwrap());
        if !target.exists() {
            std::fs::copy(&file, &target).unwrap();
        }
    }
}

/// Second stages and aggregates of aggregates run over stage 1's changes (retractions
/// included): whatever the micro-batches, they end with the batch query's result.
#[test]
fn aggregates_of_aggregates_match_the_batch_query_at_any_micro_batch_size() {
    let log = shared_log();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let files = [
        cases.join("second_stage_retractions.sql"),
        cases.join("second_stage_windowed.sql"),
        cases.join("nested_aggregate.sql"),
        cases.join("cte_levels.sql"),
        cases.join("top_items.sql"),
        repo_root().join("sql/avg_interactions_per_item.sql"),
        repo_root().join("sql/item_type_extremes.sql"),
        cases.join("top_n_per_window.sql"),
        cases.join("top_n_per_window_subquery.sql"),
        cases.join("top_n_over_nested.sql"),
        cases.join("window_function_between_aggregations.sql"),
        cases.join("window_function_over_nested.sql"),
        cases.join("top_n_per_window_over_nested.sql"),
        cases.join("top_n_between_aggregations.sql"),
        // Recomputed whole, complete mode, content ids, HAVING, merged sessions.
        cases.join("window_functions_partitioned_differently.sql"),
        cases.join("join_of_two_levels.sql"),
        cases.join("complete_window_function_over_nested.sql"),
        cases.join("having_toggles.sql"),
        cases.join("session_window.sql"),
    ];
    for file in &files {
        for batch in [13, 97, 2_500] {
            let work = tempfile::tempdir().unwrap();
            assert_matches_oracle(file, log.path(), work.path(), batch);
        }
    }
}

/// Golden outputs: every case over the small hand-written log in `sql_cases/input/`
/// (out-of-order, late and bad records included) in micro-batches of 3 records,
/// against `<case>.expected` — one sorted row per line — and against the oracle.
/// `UPDATE_EXPECTED=1 cargo test --test oracle` rewrites the files; review the diff.
#[test]
fn every_sql_case_gives_its_expected_output_on_the_hand_written_log() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let input = dir.join("input");
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut checked = 0;
    for file in sql_files(&dir).into_iter().chain(sql_files(&repo_root().join("sql"))) {
        if expected_error(&file).is_some() {
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        let def = aggregator::pipeline::definition::PipelineDefinition::from_file(&file).unwrap();
        let status = run_pipeline(&file, &options(&input, work.path(), 3)).unwrap();
        assert_eq!((status.events_in, status.events_bad), (27, 1), "{}", file.display());
        let oracle = oracle(&file, &input, aggregator::source::decode::DEFAULT_MAX_RECORD_BYTES);
        let rows = sink_rows(&work.path().join("results.sqlite"), &def.settings.target, oracle.with_id);
        assert_eq!(rows, oracle.rows, "{}: sink and oracle differ", file.display());
        let expected_file = dir.join("expected").join(format!("{}.expected", def.name));
        let text = rows.iter().map(|r| format!("{r}\n")).collect::<String>();
        if update {
            std::fs::create_dir_all(expected_file.parent().unwrap()).unwrap();
            std::fs::write(&expected_file, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_EXPECTED=1", expected_file.display()));
        assert_eq!(text, expected, "{} differs from {}", file.display(), expected_file.display());
        checked += 1;
    }
    assert!(checked >= 20, "{checked}");
}

/// A query without aggregation upserts each row under the location of its record
/// (`file:line`, `#2` for a record's second row): read back, every `_id` names a line
/// of the log whose JSON — parsed here with serde_json, not the pipeline's decoder —
/// holds that row's values, and every record gives the rows the query asks for.
#[test]
fn rows_without_aggregation_are_upserted_under_their_records_location() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases/input");
    let work = tempfile::tempdir().unwrap();
    run_pipeline(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases/rows_union_all.sql"),
        &options(&input, work.path(), 3),
    )
    .unwrap();
    let table = StoreReader::sqlite(&work.path().join("results.sqlite")).table("rows_union_all").unwrap();
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["user_id", "kind", "value"]);
    let mut expected = Vec::new();
    for file in ["batch-0001.jsonl", "batch-0002.jsonl"] {
        let text = std::fs::read_to_string(input.join(file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let (Some(user), Some(kind)) = (record["user_id"].as_i64(), record["interaction_type"].as_str()) else {
                continue;
            };
            let at = format!("{file}:{}", n + 1);
            let mut rows = Vec::new();
            if kind != "view" {
                rows.push(format!("{user}|item|{}", record["item_id"]));
            }
            rows.push(format!("{user}|user|{user}"));
            for (k, row) in rows.into_iter().enumerate() {
                let id = if k == 0 { at.clone() } else { format!("{at}#{}", k + 1) };
                expected.push(format!("{id}={row}"));
            }
        }
    }
    let cell = |v: &store::Value| match v {
        store::Value::Integer(i) => i.to_string(),
        store::Value::Text(t) => t.clone(),
        other => format!("{other:?}"),
    };
    let mut actual: Vec<String> = table
        .rows
        .iter()
        .map(|r| format!("{}={}", r.id, r.values.iter().map(cell).collect::<Vec<_>>().join("|")))
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
}
