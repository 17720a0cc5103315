//! A directory of pipelines where one file is broken: that file fails with its name
//! and the planner's message (also in its status row); the others run to the end.

mod support;

use aggregator::pipeline::Shutdown;
use support::*;

#[test]
fn a_broken_sql_file_fails_alone_with_its_name_and_the_planners_message() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 2_000, 500, 3);
    let sql = tempfile::tempdir().unwrap();
    std::fs::write(sql.path().join("good.sql"), "SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id").unwrap();
    std::fs::write(sql.path().join("broken.sql"), "SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY nonexistent")
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let options = options(log.path(), work.path(), 300);
    let summary = aggregator::supervisor::run(sql.path(), &interactions(), &options, Shutdown::default()).unwrap();

    assert_eq!(summary.finished.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["good"]);
    assert_eq!(summary.finished[0].events_ok, 2_000);
    let [(file, error)] = summary.failed.as_slice() else { panic!("{:?}", summary.failed) };
    assert!(file.ends_with("broken.sql"));
    let message = error.to_string();
    assert!(message.contains("broken.sql") && message.contains("nonexistent"), "{message}");
    assert!(!error.is_retryable(), "a broken file is the user's to fix");

    let store = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let broken = store.status("broken").unwrap();
    assert_eq!(broken.state, "failed");
    assert!(broken.last_error.unwrap().contains("nonexistent"));
    assert_eq!(store.table("good").unwrap().rows.len(), 50);
}

/// A deleted file's pipeline is `inactive`, whatever it was doing: also when it had
/// failed, and also when the file was deleted while no aggregator ran.
#[test]
fn deleting_a_failed_or_stopped_pipelines_file_leaves_it_inactive() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 1_000, 500, 4);
    let sql = tempfile::tempdir().unwrap();
    let good = sql.path().join("good.sql");
    let broken = sql.path().join("broken.sql");
    std::fs::write(&good, "SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id").unwrap();
    std::fs::write(&broken, "SELECT nonexistent FROM SOURCE GROUP BY nonexistent").unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut options = options(log.path(), work.path(), 300);
    options.available_now = false;
    let store = || StoreReader::sqlite(&work.path().join("results.sqlite"));
    let state = |name: &str| store().status(name).map(|s| s.state);

    let (shutdown, handle) = run_live(sql.path(), options.clone());
    wait_until("the broken file failed", || state("broken").as_deref() == Some("failed"));
    wait_until("the good one caught up", || state("good").as_deref() == Some("caught_up"));
    std::fs::remove_file(&broken).unwrap();
    wait_until("the failed pipeline's file deleted: inactive", || state("broken").as_deref() == Some("inactive"));
    shutdown.trigger();
    handle.join().unwrap();
    assert_eq!(state("good").as_deref(), Some("stopped"));

    // Deleted while no aggregator runs: the next start marks it inactive.
    std::fs::remove_file(&good).unwrap();
    std::fs::write(sql.path().join("other.sql"), "SELECT COUNT(*) AS n FROM SOURCE").unwrap();
    let (shutdown, handle) = run_live(sql.path(), options);
    wait_until("the pipeline of the file deleted meanwhile: inactive", || state("good").as_deref() == Some("inactive"));
    shutdown.trigger();
    handle.join().unwrap();
    let good = store().status("good").unwrap();
    assert_eq!(good.events_in, 1_000, "the last counters stay");
}
