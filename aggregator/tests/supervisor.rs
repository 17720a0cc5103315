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
