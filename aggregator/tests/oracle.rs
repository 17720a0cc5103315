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
