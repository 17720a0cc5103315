//! MongoDB as the sink, against a real MongoDB wire-protocol server (SecantusDB,
//! started by PID by testkit): every shipped pipeline equals the batch oracle with
//! the right BSON types, a backfill swaps its shadow collection in at once, and a
//! store outage mid-stream loses and doubles nothing.
//!
//! The source is the embedded file log: these tests are about the sink (the Kafka
//! source has its own in `kafka.rs`).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aggregator::pipeline::PipelineOptions;
use aggregator::pipeline::definition::PipelineDefinition;
use aggregator::source::decode::DEFAULT_MAX_RECORD_BYTES;
use mongodb::bson::{Bson, Document, doc};
use support::*;
use testkit::MongoServer;

fn mongo_options(log: &Path, work: &Path, server: &MongoServer) -> PipelineOptions {
    PipelineOptions { sink_uri: server.uri("results"), available_now: false, ..options(log, work, 500) }
}

fn caught_up(reader: &StoreReader, name: &str, hash: &str, consumed: u64) -> bool {
    reader.status(name).is_some_and(|s| s.sql_hash == hash && s.state != "replaying" && s.events_in == consumed)
}

/// The documents of a collection, read with the driver itself (raw BSON).
fn documents(server: &MongoServer, collection: &str, filter: Document) -> Vec<Document> {
    runtime().block_on(async {
        let client = mongodb::Client::with_uri_str(server.uri("results")).await.unwrap();
        let mut cursor = client.database("results").collection::<Document>(collection).find(filter).await.unwrap();
        let mut out = Vec::new();
        while cursor.advance().await.unwrap() {
            out.push(cursor.deserialize_current().unwrap());
        }
        out
    })
}

/// Appends two malformed lines to the log's first file (after its 3,000 events).
fn add_bad_lines(log: &Path) -> u64 {
    let mut out = std::fs::OpenOptions::new().append(true).open(log.join("batch-00000001.jsonl")).unwrap();
    out.write_all(b"{\"user_id\": 1, \"item_id\": 2,\nnot json at all\n").unwrap();
    2
}

#[test]
fn every_shipped_pipeline_into_mongodb_equals_the_oracle_with_bson_types() {
    let server = MongoServer::start();
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 12_000, 3_000, 23);
    let bad = add_bad_lines(log.path());
    let work = tempfile::tempdir().unwrap();
    // The binary, as users run it; the database comes from the flag.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--sql")
        .arg(repo_root().join("sql"))
        .arg("--source")
        .arg(format!("file:{}", log.path().display()))
        .args(["--sink", &server.uri(""), "--database", "results", "--available-now", "--max-batch-records", "1000"])
        .arg("--checkpoint-dir")
        .arg(work.path().join("checkpoints"))
        .status()
        .unwrap();
    assert!(status.success());

    let reader = StoreReader::open(&server.uri("results")).unwrap();
    let files = aggregator::supervisor::pipeline_files(&repo_root().join("sql")).unwrap();
    assert_eq!(files.len(), 6);
    for file in &files {
        let def = PipelineDefinition::from_file(file).unwrap();
        let expected = oracle(file, log.path(), DEFAULT_MAX_RECORD_BYTES);
        let actual = reader.rows(&def.settings.target, expected.with_id);
        assert_eq!(actual.len(), expected.rows.len(), "{}: row count", def.name);
        assert!(actual == expected.rows, "{}: rows differ from the oracle", def.name);
        assert!(!expected.rows.is_empty(), "{}: an empty result proves nothing", def.name);
        let s = reader.status(&def.name).unwrap();
        assert_eq!(
            (s.events_in, s.events_ok, s.events_bad, s.events_late),
            (12_000 + bad, expected.good, bad, expected.late)
        );
        assert_eq!(reader.rejected(&def.name, false).len() as u64, bad, "{}: bad records", def.name);
        assert!(s.rows_upserted >= actual.len() as u64, "{}: rows upserted are counted", def.name);
        assert_eq!(reader.rejected(&def.name, true).len() as u64, expected.late, "{}: late records", def.name);
    }

    // BSON types, as written by the driver.
    let windows = documents(&server, "user_interactions_5m", doc! {});
    let first = &windows[0];
    let window = first.get_document("window").unwrap_or_else(|_| panic!("window is a sub-document: {first}"));
    assert!(matches!(window.get("start"), Some(Bson::DateTime(_))), "{first}");
    assert!(matches!(window.get("end"), Some(Bson::DateTime(_))), "{first}");
    assert!(matches!(first.get("user_id"), Some(Bson::Int64(_))), "{first}");
    assert!(matches!(first.get("interaction_type"), Some(Bson::String(_))), "{first}");
    assert!(matches!(first.get("interaction_count"), Some(Bson::Int64(_))), "{first}");
    let averages = documents(&server, "avg_interactions_per_item", doc! {});
    assert!(averages.iter().any(|d| d.values().any(|v| matches!(v, Bson::Double(_)))), "{:?}", averages[0]);

    // A date-range query on window.start: windows starting in [00:05, 00:10) of the
    // generated 10 minutes, compared with the documents' own starts.
    let t0 = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z in ms
    let (from, to) = (t0 + 5 * 60_000, t0 + 10 * 60_000);
    let expected = windows
        .iter()
        .filter(|d| {
            let start = d.get_document("window").unwrap().get_datetime("start").unwrap().timestamp_millis();
            (from..to).contains(&start)
        })
        .count();
    let range = doc! {"window.start": {
        "$gte": mongodb::bson::DateTime::from_millis(from), "$lt": mongodb::bson::DateTime::from_millis(to),
    }};
    let found = documents(&server, "user_interactions_5m", range);
    assert_eq!(found.len(), expected);
    assert!(expected > 0 && expected < windows.len(), "the range selects some windows, not all");
    let indexes = runtime().block_on(async {
        let client = mongodb::Client::with_uri_str(server.uri("results")).await.unwrap();
        client.database("results").collection::<Document>("user_interactions_5m").list_index_names().await.unwrap()
    });
    assert!(indexes.iter().any(|i| i.starts_with("window.start")), "window.start is indexed: {indexes:?}");
}

#[test]
fn a_backfill_swaps_its_shadow_collection_in_at_once() {
    let server = MongoServer::start();
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 30_000, 5_000, 11);
    let sql = tempfile::tempdir().unwrap();
    let file = sql.path().join("per_user.sql");
    std::fs::copy(repo_root().join("sql/user_interactions_5m.sql"), &file).unwrap();
    let v1 = PipelineDefinition::from_file(&file).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut options = mongo_options(log.path(), work.path(), &server);
    options.max_batch_records = 200;
    let (shutdown, handle) = run_live(sql.path(), options);
    let reader = StoreReader::open(&server.uri("results")).unwrap();
    wait_until("version 1 caught up", || caught_up(&reader, "per_user", &v1.sql_hash, 30_000));
    let old_rows = reader.rows("per_user", false);
    assert!(old_rows == oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES).rows, "version 1 equals its oracle");

    // Version 2 counts purchases only: a different result for the same collection.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("FROM SOURCE", "FROM SOURCE WHERE interaction_type = 'purchase'")).unwrap();
    let v2 = PipelineDefinition::from_file(&file).unwrap();
    let new_rows = oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES).rows;
    assert_ne!(old_rows, new_rows);

    // Readers see exactly the old collection or exactly the complete new one.
    let mut seen_replaying = false;
    wait_until("version 2 swapped in", || {
        let status = reader.status("per_user");
        let replaying = status.as_ref().is_some_and(|s| s.state == "replaying");
        let rows = reader.rows("per_user", false);
        // The status is written just after the swap, so a read between the two
        // sees "replaying" with the new rows: the old rows must be seen while
        // replaying, and every read must be the old or the new result, whole.
        if replaying && rows == old_rows {
            seen_replaying = true;
        }
        assert!(rows == old_rows || rows == new_rows, "a mix of old and new results ({} rows)", rows.len());
        caught_up(&reader, "per_user", &v2.sql_hash, 30_000) && rows == new_rows
    });
    assert!(seen_replaying, "the status must show the replay while the old collection is read");
    let collections = runtime().block_on(async {
        let client = mongodb::Client::with_uri_str(server.uri("results")).await.unwrap();
        client.database("results").list_collection_names().await.unwrap()
    });
    assert!(!collections.contains(&store::shadow_table("per_user")), "the shadow is gone: {collections:?}");
    shutdown.trigger();
    let summary = handle.join().unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
}

/// Moves batch files from `staging` into the live log (renames are atomic, as the log requires).
fn release(staging: &Path, log: &Path, names: &[PathBuf]) {
    for name in names {
        std::fs::rename(staging.join(name), log.join(name)).unwrap();
    }
}

#[test]
fn a_store_outage_mid_stream_loses_and_doubles_nothing() {
    let mut server = MongoServer::start();
    let staging = tempfile::tempdir().unwrap();
    generate_log(staging.path(), 12_000, 3_000, 13);
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(staging.path()).unwrap().map(|e| PathBuf::from(e.unwrap().file_name())).collect();
    names.sort();
    assert_eq!(names.len(), 4);
    let log = tempfile::tempdir().unwrap();
    release(staging.path(), log.path(), &names[..2]);

    let sql = tempfile::tempdir().unwrap();
    let file = sql.path().join("per_user.sql");
    std::fs::copy(repo_root().join("sql/user_interactions_5m.sql"), &file).unwrap();
    let hash = PipelineDefinition::from_file(&file).unwrap().sql_hash;
    let work = tempfile::tempdir().unwrap();
    let (shutdown, handle) = run_live(sql.path(), mongo_options(log.path(), work.path(), &server));
    let reader = StoreReader::open(&server.uri("results")).unwrap();
    wait_until("the first half consumed", || caught_up(&reader, "per_user", &hash, 6_000));
    drop(reader);

    // The store goes away while a batch is waiting to be written.
    server.stop();
    release(staging.path(), log.path(), &names[2..3]);
    // Longer than the driver waits for a server (5 s) before it reports an error.
    std::thread::sleep(Duration::from_secs(8));
    server.start_again();
    release(staging.path(), log.path(), &names[3..]);
    let reader = StoreReader::open(&server.uri("results")).unwrap();
    wait_until("everything consumed after the outage", || caught_up(&reader, "per_user", &hash, 12_000));
    // The outage shows in the status after the store is back (nothing could be
    // written to it while it was down), naming the store.
    let error = reader.status("per_user").unwrap().last_error.unwrap_or_default();
    assert!(error.contains(&server.uri("results")), "the status names the store: {error:?}");
    shutdown.trigger();
    let summary = handle.join().unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);

    let expected = oracle(&file, log.path(), DEFAULT_MAX_RECORD_BYTES);
    let rows = reader.rows("per_user", false);
    assert_eq!(rows.len(), expected.rows.len());
    assert!(rows == expected.rows, "results after the outage equal the oracle");
    let status = reader.status("per_user").unwrap();
    assert_eq!((status.events_in, status.events_ok, status.events_late), (12_000, expected.good, expected.late));
}

/// With a server that requires authentication: the aggregator binary writes with the
/// URI's credentials, and with a wrong password fails naming the store — and the
/// password appears in none of its output or the status.
#[test]
fn the_password_in_the_sink_uri_appears_in_no_log_status_or_error() {
    let mut server = MongoServer::start();
    runtime().block_on(async {
        let client = mongodb::Client::with_uri_str(server.uri("admin")).await.unwrap();
        let create = doc! {"createUser": "app", "pwd": "s3cret-Pa55", "roles": [{"role": "root", "db": "admin"}]};
        client.database("admin").run_command(create).await.unwrap();
    });
    server.restart_with_auth();
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 2_000, 1_000, 3);
    let work = tempfile::tempdir().unwrap();
    let host = server.uri("").trim_start_matches("mongodb://").trim_end_matches('/').to_string();
    let run = |password: &str| {
        let uri = format!("mongodb://app:{password}@{host}/results?authSource=admin");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .arg("--sql")
            .arg(repo_root().join("sql/avg_interactions_per_item.sql"))
            .arg("--source")
            .arg(format!("file:{}", log.path().display()))
            .arg("--checkpoint-dir")
            .arg(work.path().join(password))
            .arg("--available-now")
            .env("AGGREGATOR_SINK", &uri)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text, uri)
    };

    let (ok, output, uri) = run("s3cret-Pa55");
    assert!(ok, "with the right password the pipeline runs");
    assert!(!output.contains("s3cret-Pa55"), "the password is in the output");
    let reader = StoreReader::open(&uri).unwrap();
    assert!(!reader.rows("avg_interactions_per_item", false).is_empty());
    let status = reader.status("avg_interactions_per_item").unwrap();
    assert!(!format!("{status:?}").contains("s3cret-Pa55"));

    let (ok, output, _) = run("wrong-Pa55word");
    assert!(!ok, "a wrong password fails");
    assert!(output.contains(&format!("mongodb://app:***@{host}/results")), "the error names the store: {output}");
    assert!(!output.contains("wrong-Pa55word"), "the wrong password is in the output: {output}");
}
