//! The Qlik push against a QIX engine test double (`testkit::QixEngine`): a WebSocket
//! server that checks every request against the engine's API schema, parses the
//! inline load statements like the engine (first line field names, delimiter,
//! quoting, the first `]` ends the data), takes a set time per reload, answers a
//! concurrent reload of the same app with error 11000 and records the most reloads
//! ever running at once per app.
//!
//! Each test compares the app's table with the store's (the sink's) table, cell by
//! cell: numbers must arrive as numbers, texts as exactly the same characters.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aggregator::pipeline::PipelineOptions;
use aggregator::pipeline::definition::PipelineDefinition;
use aggregator::sink::qlik::QlikOptions;
use store::{ColumnType, QlikTargetStatus, Value};
use support::*;
use testkit::{Cell, QixEngine, QixOptions};

/// The app table as comparable lines: `T:` text, `D:` a number (its text), `NULL`.
fn app_rows(engine: &QixEngine, app: &str, table: &str) -> Option<Vec<String>> {
    let table = engine.table(app, table)?;
    let mut rows: Vec<String> = table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Cell::Null => "NULL".to_string(),
                    Cell::Text(t) => format!("T:{t:?}"),
                    Cell::Dual(t, _) => format!("D:{t:?}"),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    Some(rows)
}

/// What the app must hold for the store's table, in the same form: numbers and
/// timestamps (`YYYY-MM-DD hh:mm:ss.ffffff` UTC) as numbers, a window as its two
/// bounds, texts verbatim.
fn expected_rows(reader: &StoreReader, table: &str) -> (Vec<String>, Vec<String>) {
    let result = reader.table(table).unwrap_or_default();
    let timestamp = |micros: i64| {
        let iso = store::iso_micros(micros);
        format!("D:{:?}", iso.trim_end_matches('Z').replacen('T', " ", 1))
    };
    let mut fields = Vec::new();
    for c in &result.columns {
        match c.column_type {
            ColumnType::Window => fields.extend([format!("{}.start", c.name), format!("{}.end", c.name)]),
            _ => fields.push(c.name.clone()),
        }
    }
    let mut rows: Vec<String> = result
        .rows
        .iter()
        .map(|row| {
            let mut cells = Vec::new();
            for value in &row.values {
                match value {
                    Value::Null => cells.push("NULL".to_string()),
                    Value::Integer(i) => cells.push(format!("D:{:?}", i.to_string())),
                    Value::Real(x) => cells.push(format!("D:{:?}", x.to_string())),
                    Value::Text(t) => cells.push(format!("T:{t:?}")),
                    Value::Timestamp(t) => cells.push(timestamp(*t)),
                    Value::Struct(bounds) => cells.extend(bounds.iter().map(|(_, v)| match v {
                        Value::Timestamp(t) => timestamp(*t),
                        other => panic!("window bound {other:?}"),
                    })),
                    other => panic!("no such value in these tests: {other:?}"),
                }
            }
            cells.join("|")
        })
        .collect();
    rows.sort();
    (fields, rows)
}

/// Asserts the app's table equals the store's, naming the first differences.
fn assert_app_equals_store(engine: &QixEngine, app: &str, table: &str, reader: &StoreReader) {
    let (fields, expected) = expected_rows(reader, table);
    let actual = app_rows(engine, app, table).unwrap_or_else(|| panic!("app {app} has no table {table}"));
    assert_eq!(engine.table(app, table).unwrap().fields, fields, "{table}: fields");
    if actual != expected {
        let only_app: Vec<_> = actual.iter().filter(|r| !expected.contains(r)).take(3).collect();
        let only_store: Vec<_> = expected.iter().filter(|r| !actual.contains(r)).take(3).collect();
        panic!(
            "{table}: app has {} rows, store {}\nonly in app: {only_app:#?}\nonly in store: {only_store:#?}",
            actual.len(),
            expected.len()
        );
    }
}

fn app_equals_store(engine: &QixEngine, app: &str, table: &str, reader: &StoreReader) -> bool {
    let (_, expected) = expected_rows(reader, table);
    app_rows(engine, app, table).is_some_and(|actual| actual == expected) && !expected.is_empty()
}

fn qlik_options(targets: Vec<String>) -> QlikOptions {
    QlikOptions {
        targets,
        idle: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        min_interval: Duration::from_millis(100),
        flush_timeout: Duration::from_secs(60),
        ..QlikOptions::default()
    }
}

fn live_options(log: &Path, work: &Path, qlik: QlikOptions) -> PipelineOptions {
    PipelineOptions { available_now: false, qlik, ..options(log, work, 1_000) }
}

fn qlik_status(reader: &StoreReader, pipeline: &str, target: &str) -> Option<QlikTargetStatus> {
    reader.qlik_statuses().into_iter().find(|s| s.pipeline == pipeline && s.target == target)
}

fn consumed(reader: &StoreReader, name: &str, events: u64) -> bool {
    reader.status(name).is_some_and(|s| s.state != "replaying" && s.events_in == events)
}

/// Moves batch files from `staging` into the log, atomically each.
fn release(staging: &Path, log: &Path, names: &[PathBuf]) {
    for name in names {
        std::fs::rename(staging.join(name), log.join(name)).unwrap();
    }
}

fn staged_log(events: u64, per_file: u64, seed: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let staging = tempfile::tempdir().unwrap();
    generate_log(staging.path(), events, per_file, seed);
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(staging.path()).unwrap().map(|e| PathBuf::from(e.unwrap().file_name())).collect();
    names.sort();
    (staging, names)
}

fn pipeline_dir(files: &[&str]) -> tempfile::TempDir {
    let sql = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(repo_root().join("sql").join(file), sql.path().join(file)).unwrap();
    }
    sql
}

#[test]
fn a_burst_over_several_pipelines_reloads_the_app_one_at_a_time_and_it_equals_the_sink() {
    let engine = QixEngine::start(QixOptions { reload_time: Duration::from_millis(300), ..QixOptions::default() });
    let app = "burst.qvf";
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 120_000, 10_000, 5);
    let work = tempfile::tempdir().unwrap();
    let files = ["user_interactions_5m.sql", "item_interactions_5m.sql", "avg_interactions_per_user.sql"];
    let sql = pipeline_dir(&files);
    // Reloads only by volume (and the last one at exit): at most one per `min_rows`
    // changed rows, however fast the micro-batches come.
    let min_rows = 20_000;
    let qlik = QlikOptions {
        targets: vec![engine.url(app)],
        min_rows,
        idle: Duration::from_secs(600),
        max_delay: Duration::from_secs(600),
        ..QlikOptions::default()
    };
    let options = PipelineOptions { available_now: true, qlik, ..options(log.path(), work.path(), 1_000) };
    let summary = aggregator::supervisor::run(sql.path(), &interactions(), &options, Default::default()).unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);

    let reader = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let mut changes = 0;
    for file in files {
        let def = PipelineDefinition::from_file(&sql.path().join(file)).unwrap();
        let status = reader.status(&def.name).unwrap();
        changes += status.rows_upserted + status.rows_deleted;
        assert_app_equals_store(&engine, app, &def.name, &reader);
        // The marker says which result the app holds.
        let marker = engine.table(app, &format!("__sqlagg.{}", def.name)).unwrap();
        let version = match &marker.rows[0][1] {
            Cell::Text(t) | Cell::Dual(t, _) => t.clone(),
            Cell::Null => panic!("no version in the marker"),
        };
        assert_eq!(version, format!("{}:{}", def.sql_hash, status.events_in), "{}: marker", def.name);
        // And the target's status, as the dashboard shows it.
        let target = qlik_status(&reader, &def.name, &engine.url(app)).unwrap();
        assert_eq!(
            (target.state.as_str(), target.app_version.as_deref(), target.pending_rows, target.last_error.as_deref()),
            ("up_to_date", Some(version.as_str()), 0, None),
            "{}: {target:?}",
            def.name
        );
        assert!(target.reloads >= 1 && target.last_reload_rows > 0, "{target:?}");
    }
    // 120 micro-batches per pipeline, each changing rows: a naive pusher reloads 360 times.
    let batches = 3 * 120;
    assert!(changes >= 100_000, "the burst is 100,000 changes or more: {changes}");
    assert_eq!(engine.max_concurrent_reloads(app), 1, "never two reloads of the app at once");
    assert_eq!(engine.refused_reloads(app), 0, "no reload was started while one ran");
    let reloads = engine.reloads(app);
    assert!(reloads >= 1 && reloads <= changes / min_rows + 1, "few reloads: {reloads} for {changes} changes");
    assert!(engine.saves(app) >= reloads, "every reload is saved");
    assert_eq!(engine.violations(), Vec::<String>::new(), "every request matches the engine's API schema");
    eprintln!("burst: {changes} changes in {batches} micro-batches → {reloads} reloads");
}

#[test]
fn hostile_values_and_names_arrive_in_the_app_verbatim() {
    let engine = QixEngine::start(QixOptions::default());
    let app = "hostile.qvf";
    let hostile = [
        "plain",
        "comma, inside",
        "close ] bracket",
        "]",
        "open [ bracket",
        "\"double quoted\"",
        "'single quoted'",
        "quote\"in'side",
        "two\nlines",
        "crlf\r\nline",
        "tab\tinside",
        "  edge spaces  ",
        "",
        "100% %25 %2C %N",
        "%N",
        "ünïcödé ☃ 𝄞 日本",
        "];\nDROP TABLE [x];\n// LOAD * INLINE [a\n1\n];",
        "\"]\" (txt, delimiter is ';');",
    ];
    let log = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for (i, text) in hostile.iter().enumerate() {
        let event = serde_json::json!({
            "id": i, "label": text, "amount": i as f64 / 4.0, "timestamp": format!("2026-01-01T00:00:{:02}Z", i % 60),
        });
        lines.push_str(&format!("{event}\n"));
    }
    // A null label, twice.
    lines.push_str("{\"id\": 99, \"label\": null, \"amount\": 1, \"timestamp\": \"2026-01-01T00:01:00Z\"}\n");
    lines.push_str("{\"id\": 98, \"timestamp\": \"2026-01-01T00:01:01.5Z\"}\n");
    std::fs::write(log.path().join("batch-00000001.jsonl"), lines).unwrap();
    let sql = tempfile::tempdir().unwrap();
    let schema = sql.path().join("labels.schema");
    std::fs::write(
        &schema,
        "CREATE TABLE labels (id BIGINT NOT NULL, label VARCHAR, amount DOUBLE, timestamp TIMESTAMP NOT NULL);\n",
    )
    .unwrap();
    let file = sql.path().join("types.sql");
    // Names with brackets, quotes and a comma, in the app table's name and its fields.
    std::fs::write(
        &file,
        "-- qlik_table: types ] \"x\"\nSELECT label AS \"type, [kind]\", COUNT(*) AS \"n]\", \
         MIN(timestamp) AS first_seen, AVG(amount) AS avg_amount\nFROM SOURCE GROUP BY label\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    // The binary, as users run it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--sql")
        .arg(&file)
        .arg("--source")
        .arg(format!("file:{}", log.path().display()))
        .arg("--source-schema")
        .arg(&schema)
        .arg("--sink")
        .arg(format!("sqlite:{}", work.path().join("results.sqlite").display()))
        .arg("--checkpoint-dir")
        .arg(work.path().join("checkpoints"))
        .args(["--available-now", "--qlik", &engine.url(app)])
        .status()
        .unwrap();
    assert!(status.success());

    let reader = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let table = "types ] \"x\"";
    // The app's table is named after the file's `qlik_table`; the store's after the file.
    let (fields, expected) = expected_rows(&reader, "types");
    assert_eq!(engine.table(app, table).expect("the app has the table").fields, fields);
    assert_eq!(fields[..2], ["type, [kind]".to_string(), "n]".to_string()]);
    assert_eq!(app_rows(&engine, app, table).unwrap(), expected);
    assert_eq!(expected.len(), hostile.len() + 1, "one group per hostile value and one for null");
    // Each hostile text is one cell of the app, exactly.
    let texts: Vec<Cell> = engine.table(app, table).unwrap().rows.iter().map(|r| r[0].clone()).collect();
    for text in hostile {
        assert!(texts.iter().any(|c| matches!(c, Cell::Text(t) if t == text)), "{text:?} is not in the app verbatim");
    }
    assert!(texts.iter().any(|c| matches!(c, Cell::Null)), "null arrives as null");
    let mut tables = engine.table_names(app);
    tables.sort();
    assert_eq!(tables, vec![format!("__sqlagg.{table}"), table.to_string()], "no value made or dropped a table");
    assert_eq!(engine.violations(), Vec::<String>::new());
}

#[test]
fn an_engine_outage_loses_no_change_and_a_restart_resumes_from_the_apps_marker() {
    let engine = QixEngine::start(QixOptions { reload_time: Duration::from_millis(100), ..QixOptions::default() });
    let app = "outage.qvf";
    let (staging, names) = staged_log(20_000, 4_000, 17);
    assert_eq!(names.len(), 5);
    let log = tempfile::tempdir().unwrap();
    let sql = pipeline_dir(&["user_interactions_5m.sql"]);
    let name = "user_interactions_5m";
    let work = tempfile::tempdir().unwrap();
    let target = engine.url(app);
    let mut qlik = qlik_options(vec![target.clone()]);
    // A short flush at exit: the last step stops the aggregator with the engine down.
    qlik.flush_timeout = Duration::from_secs(2);
    let options = live_options(log.path(), work.path(), qlik);
    let reader = StoreReader::sqlite(&work.path().join("results.sqlite"));

    release(staging.path(), log.path(), &names[..1]);
    let (shutdown, handle) = run_live(sql.path(), options.clone());
    wait_until("the app equals the sink", || {
        consumed(&reader, name, 4_000) && app_equals_store(&engine, app, name, &reader)
    });

    // The engine dies (unsaved changes lost) while more events arrive.
    engine.stop();
    release(staging.path(), log.path(), &names[1..2]);
    wait_until("the sink goes on without the engine", || consumed(&reader, name, 8_000));
    wait_until("the target shows the outage", || {
        qlik_status(&reader, name, &target).is_some_and(|s| s.last_error.is_some() && s.pending_rows > 0)
    });
    engine.start_again();
    wait_until("the app catches up after the outage", || app_equals_store(&engine, app, name, &reader));
    // The target's status is written just after the reload that caught up.
    wait_until("the target is up to date, its error gone", || {
        qlik_status(&reader, name, &target).is_some_and(|s| s.state == "up_to_date" && s.last_error.is_none())
    });
    shutdown.trigger();
    assert!(handle.join().unwrap().failed.is_empty());

    // A restart with nothing new: the marker says the app is up to date; no reload.
    let reloads = engine.reloads(app);
    let started = store::iso_micros(chrono::Utc::now().timestamp_micros());
    let (shutdown, handle) = run_live(sql.path(), options.clone());
    wait_until("the marker is read back", || {
        qlik_status(&reader, name, &target).is_some_and(|s| s.updated_at > started && s.state == "up_to_date")
    });
    std::thread::sleep(Duration::from_secs(2)); // ten times the idle trigger
    assert_eq!(engine.reloads(app), reloads, "a restart with the app up to date reloads nothing");
    release(staging.path(), log.path(), &names[2..3]);
    wait_until("new events reach the app", || {
        consumed(&reader, name, 12_000) && app_equals_store(&engine, app, name, &reader)
    });
    assert!(engine.reloads(app) > reloads);

    // Changes the app missed when the aggregator stopped are pushed at the next start,
    // without any new event.
    engine.stop();
    release(staging.path(), log.path(), &names[3..4]);
    wait_until("consumed while the engine is down", || consumed(&reader, name, 16_000));
    shutdown.trigger();
    assert!(handle.join().unwrap().failed.is_empty());
    engine.start_again();
    assert!(!app_equals_store(&engine, app, name, &reader), "the app missed the last changes");
    let (shutdown, handle) = run_live(sql.path(), options);
    wait_until("the restart pushes what the app missed", || app_equals_store(&engine, app, name, &reader));
    shutdown.trigger();
    assert!(handle.join().unwrap().failed.is_empty());
    assert_eq!(engine.max_concurrent_reloads(app), 1);
    assert_eq!(engine.violations(), Vec::<String>::new());
    drop(staging);
}

#[test]
fn with_two_engines_one_slow_the_fast_one_stays_fresh() {
    let fast = QixEngine::start(QixOptions { reload_time: Duration::from_millis(50), ..QixOptions::default() });
    let slow = QixEngine::start(QixOptions { reload_time: Duration::from_secs(30), ..QixOptions::default() });
    let app = "two.qvf";
    let (staging, names) = staged_log(12_000, 3_000, 29);
    let log = tempfile::tempdir().unwrap();
    let sql = pipeline_dir(&["item_interactions_5m.sql"]);
    let name = "item_interactions_5m";
    let work = tempfile::tempdir().unwrap();
    let qlik = QlikOptions { pace: 0.5, ..qlik_options(vec![fast.url(app), slow.url(app)]) };
    let options = live_options(log.path(), work.path(), qlik);
    let reader = StoreReader::sqlite(&work.path().join("results.sqlite"));
    let (shutdown, handle) = run_live(sql.path(), options);
    let started = Instant::now();
    for (step, file) in names.iter().enumerate() {
        release(staging.path(), log.path(), std::slice::from_ref(file));
        let events = 3_000 * (step as u64 + 1);
        wait_until("the sink and the fast engine are up to date", || {
            consumed(&reader, name, events) && app_equals_store(&fast, app, name, &reader)
        });
    }
    let fresh_after = started.elapsed();
    // The slow engine's first reload (30 s) is still running or just done: it held
    // back neither the sink nor the fast engine.
    assert!(slow.reloads(app) <= 1, "the slow engine reloaded {} times", slow.reloads(app));
    assert!(fast.reloads(app) >= names.len() as u64, "the fast engine reloaded each step");
    eprintln!("4 steps fresh in the fast app after {fresh_after:?}; slow app reloads so far: {}", slow.reloads(app));
    wait_until("the slow engine catches up too", || app_equals_store(&slow, app, name, &reader));
    shutdown.trigger();
    assert!(handle.join().unwrap().failed.is_empty());
    for engine in [&fast, &slow] {
        assert_eq!(engine.max_concurrent_reloads(app), 1);
        assert_eq!(engine.violations(), Vec::<String>::new());
    }
}

/// The QIX client alone: handshake headers (Bearer token, session), `OnConnected`
/// error states, app creation, a failing script's errors with their line, and
/// error 11000 for a reload while another runs on the same app.
#[test]
fn the_qix_client_authenticates_opens_apps_and_reports_engine_errors() {
    use aggregator::sink::qlik::qix::{QixConnection, QixError, QixOptions as ClientOptions};
    let engine = QixEngine::start(QixOptions {
        bearer_token: Some("t0k3n".into()),
        reload_time: Duration::from_millis(1_500),
        ..QixOptions::default()
    });
    let url = engine.url("client.qvf");
    let authorized = ClientOptions {
        headers: vec![("Authorization".into(), "Bearer t0k3n".into()), ("X-Qlik-Session".into(), "s1".into())],
        ..ClientOptions::default()
    };
    runtime().block_on(async {
        let refused = QixConnection::connect(&url, &ClientOptions::default()).await.err().expect("no token: refused");
        assert!(matches!(refused, QixError::Connect { .. }), "{refused}");

        let c = QixConnection::connect(&url, &authorized).await.unwrap();
        assert_eq!(c.engine_version().await.unwrap(), "12.612.0");
        let doc = c.open_app("client.qvf").await.unwrap();
        doc.set_script(
            "[t]:\nReplace LOAD [a] AS [a]\nINLINE [\na\n1\n2\n] (txt, utf8, embedded labels, delimiter is ',');\n",
        )
        .await
        .unwrap();
        let outcome = doc.reload_partial().await.unwrap();
        assert!(outcome.success, "{outcome:?}");
        doc.save().await.unwrap();
        assert_eq!(doc.table_rows("t", 10).await.unwrap(), vec![vec!["1".to_string()], vec!["2".to_string()]]);

        // A script the engine cannot run: the reload fails with the line of the error.
        doc.set_script("// first line\n[t]:\nReplace LOAD NoSuchFunction([a]) AS [a]\nINLINE [\na\n1\n];\n")
            .await
            .unwrap();
        let outcome = doc.reload_partial().await.unwrap();
        assert!(!outcome.success);
        assert!(outcome.errors.iter().any(|e| e.starts_with("line 2")), "{:?}", outcome.errors);

        // Another session reloads the same app meanwhile: 11000, as the engine answers.
        let other = ClientOptions {
            headers: vec![("Authorization".into(), "Bearer t0k3n".into()), ("X-Qlik-Session".into(), "s2".into())],
            ..ClientOptions::default()
        };
        let c2 = QixConnection::connect(&url, &other).await.unwrap();
        let doc2 = c2.open_app("client.qvf").await.unwrap();
        let (first, second) = tokio::join!(doc.reload_partial(), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            doc2.reload_partial().await
        });
        assert!(first.is_ok());
        assert_eq!(second.err().and_then(|e| e.code()), Some(11_000));
    });
    assert!(engine.headers_seen().iter().any(|h| h.contains(&("x-qlik-session".into(), "s1".into()))));
    assert_eq!(engine.max_concurrent_reloads("client.qvf"), 1);
    assert_eq!(engine.violations(), Vec::<String>::new());

    // An engine that refuses the session (no license) says so in `OnConnected`.
    let unlicensed =
        QixEngine::start(QixOptions { session_state: "SESSION_ERROR_NO_LICENSE".into(), ..QixOptions::default() });
    let error = runtime()
        .block_on(QixConnection::connect(&unlicensed.url("x"), &ClientOptions::default()))
        .err()
        .expect("refused session");
    assert!(matches!(&error, QixError::Session { state, .. } if state == "SESSION_ERROR_NO_LICENSE"), "{error}");
}
