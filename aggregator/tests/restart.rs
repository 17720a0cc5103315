//! Restart without loss: kill the aggregator process mid-stream (SIGKILL, no chance
//! to clean up), restart it, and compare every result table and counter with an
//! uninterrupted run over the same log: identical.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The shipped pipelines, the SQL cases with aggregates of aggregates (a chain of
/// aggregations over changes, rebuilt at restart), one without aggregation (rows under
/// their records' locations), sessions and hopping windows.
fn pipelines() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let shipped = std::fs::read_dir(repo_root().join("sql")).unwrap().map(|e| e.unwrap().path());
    let chained = [
        "nested_aggregate",
        "cte_levels",
        "second_stage_retractions",
        "top_items",
        "top_n_per_window",
        "top_n_over_nested",
        "window_function_between_aggregations",
        "top_n_per_window_over_nested",
        "window_function_over_nested",
        "top_n_between_aggregations",
        "rows_union_all",
        // Rebuilt at restart too: the whole result kept for complete mode, operators
        // recomputed whole, retractions of HAVING and of merged sessions.
        "complete_window_function_over_nested",
        "window_functions_partitioned_differently",
        "join_of_two_levels",
        "having_toggles",
        "session_window",
        // Hopping windows by panes: partial states spread over windows (and, for COUNT
        // DISTINCT, events spread one by one), with partially late events.
        "hopping_window_panes",
        "hopping_window_distinct",
    ]
    .map(|c| cases.join(format!("{c}.sql")));
    for file in shipped.chain(chained) {
        std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
    }
    dir
}

fn aggregator(sql: &Path, log: &Path, work: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aggregator"));
    command
        .arg("--sql")
        .arg(sql)
        .arg("--source")
        .arg(format!("file:{}", log.display()))
        .arg("--sink")
        .arg(format!("sqlite:{}", work.join("results.sqlite").display()))
        .arg("--checkpoint-dir")
        .arg(work.join("checkpoints"))
        .args(["--max-batch-records", "250", "--checkpoint-interval-seconds", "0.05", "--poll-interval-ms", "20"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Copies batch files into the log the way writers must: dot-file, then rename.
fn publish(from: &Path, to: &Path, names: &[String]) {
    for name in names {
        let hidden = to.join(format!(".{name}"));
        std::fs::copy(from.join(name), &hidden).unwrap();
        std::fs::rename(&hidden, to.join(name)).unwrap();
    }
}

fn consumed(sqlite: &Path) -> Vec<u64> {
    StoreReader::sqlite(sqlite).statuses().iter().map(|s| s.events_in).collect()
}

#[test]
fn a_killed_aggregator_resumes_and_ends_identical_to_an_uninterrupted_run() {
    let full = tempfile::tempdir().unwrap();
    generate_log(full.path(), 40_000, 1_000, 7);
    let mut names: Vec<String> = std::fs::read_dir(full.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();

    // The reference: one uninterrupted run.
    let sql = pipelines();
    let reference = tempfile::tempdir().unwrap();
    assert!(aggregator(sql.path(), full.path(), reference.path()).arg("--available-now").status().unwrap().success());

    // The crash: the first half is processed live, then the second half arrives and
    // the process is killed while it works through it.
    let log = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sqlite = work.path().join("results.sqlite");
    let (first, second) = names.split_at(names.len() / 2);
    publish(full.path(), log.path(), first);
    let mut child = aggregator(sql.path(), log.path(), work.path()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let pipelines = std::fs::read_dir(sql.path()).unwrap().count();
    while consumed(&sqlite).iter().filter(|&&c| c >= 20_000).count() < pipelines {
        assert!(Instant::now() < deadline, "the first half was not processed in time");
        std::thread::sleep(Duration::from_millis(10));
    }
    publish(full.path(), log.path(), second);
    while !consumed(&sqlite).iter().any(|&c| c > 20_000) {
        assert!(Instant::now() < deadline, "the second half was not started in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = consumed(&sqlite);
    assert!(at_kill.iter().any(|&c| c < 40_000), "killed after everything was done: {at_kill:?}");

    // Restart, drain, compare.
    assert!(aggregator(sql.path(), log.path(), work.path()).arg("--available-now").status().unwrap().success());
    let a = StoreReader::sqlite(&reference.path().join("results.sqlite"));
    let b = StoreReader::sqlite(&sqlite);
    for file in std::fs::read_dir(sql.path()).unwrap() {
        let table = file.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned();
        let (expected, actual) = (a.table(&table).unwrap(), b.table(&table).unwrap());
        assert!(!expected.rows.is_empty(), "{table}: empty");
        assert_eq!(expected, actual, "{table} differs after the restart");
    }
    let counts = |s: &StoreReader| -> Vec<(String, u64, u64, u64, u64)> {
        s.statuses().into_iter().map(|s| (s.name, s.events_in, s.events_ok, s.events_bad, s.events_late)).collect()
    };
    assert_eq!(counts(&a), counts(&b));
}
