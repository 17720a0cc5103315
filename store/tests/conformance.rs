//! Every behaviour of the store interface, against both stores: the embedded SQLite
//! file and a real MongoDB wire-protocol server (SecantusDB, started by PID).
//!
//! Each behaviour is one async function over `&dyn Store`; `on_sqlite` and
//! `on_mongodb` run all of them, each on a fresh store (file or database).

use std::time::Duration;

use store::{
    AlertTransition, ColumnFilter, ColumnRole, ColumnType, Comparison, FilterCondition, HealthSample, PageRequest,
    PipelineStatus, QlikTargetStatus, RejectedRecord, ResultColumn, ResultDelta, ResultRow, Silence, Store, Value,
    WindowRange, shadow_table,
};

type Behaviour = for<'a> fn(&'a dyn Store, StoreKind) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Mongo,
}

macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        const BEHAVIOURS: &[(&str, Behaviour)] = &[$((stringify!($name), |s, k| Box::pin($name(s, k)))),*];
    };
}

behaviours!(
    every_column_type_reads_back_as_written,
    upserts_replace_rows_by_id_and_deletes_remove_them,
    writing_the_same_batch_twice_leaves_the_same_table,
    an_id_changed_twice_in_a_batch_keeps_its_last_value_across_bulk_commands,
    rejected_records_are_keyed_by_offset_so_replays_do_not_duplicate,
    a_shadow_table_replaces_the_table_in_one_step,
    preparing_fresh_or_with_other_columns_drops_old_rows_and_keeps_them_otherwise,
    an_empty_result_is_an_existing_empty_table_with_its_columns,
    status_rows_round_trip_and_are_listed_by_name,
    alert_transitions_are_listed_newest_first,
    pages_are_sorted_filtered_by_window_start_and_counted,
    qlik_target_states_are_replaced_per_pipeline_and_target,
    silences_round_trip_newest_first_and_are_replaced_by_id,
    health_samples_are_replaced_by_time_and_kept_to_the_newest_per_pipeline_and_resolution,
);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        for (name, behaviour) in BEHAVIOURS {
            let uri = format!("sqlite:{}", dir.path().join(format!("{name}.sqlite")).display());
            let store = store::open(&uri, None).await.unwrap();
            eprintln!("sqlite: {name}");
            behaviour(store.as_ref(), StoreKind::Sqlite).await;
        }
    });
}

#[test]
fn on_mongodb() {
    let server = testkit::MongoServer::start();
    runtime().block_on(async {
        for (i, (name, behaviour)) in BEHAVIOURS.iter().enumerate() {
            // A database per behaviour; the name also comes from the flag, not the URI.
            let store = store::open(&server.uri(""), Some(&format!("conformance{i}"))).await.unwrap();
            eprintln!("mongodb: {name}");
            behaviour(store.as_ref(), StoreKind::Mongo).await;
        }
    });
}

fn column(name: &str, column_type: ColumnType) -> ResultColumn {
    ResultColumn { name: name.into(), column_type, role: None }
}

fn columns() -> Vec<ResultColumn> {
    vec![column("item_id", ColumnType::Integer), column("avg", ColumnType::Real)]
}

fn row(id: &str, item: i64, avg: f64) -> ResultRow {
    ResultRow { id: id.into(), values: vec![Value::Integer(item), Value::Real(avg)] }
}

fn status(name: &str) -> PipelineStatus {
    PipelineStatus { name: name.into(), state: "running".into(), ..Default::default() }
}

fn upserts(rows: Vec<ResultRow>) -> ResultDelta {
    ResultDelta { upserts: rows, deletes: vec![] }
}

async fn rows_of(store: &dyn Store, table: &str) -> Vec<ResultRow> {
    store.read_table(table).await.unwrap().unwrap_or_else(|| panic!("{table} does not exist")).rows
}

/// 2026-01-01T00:05:00Z plus `ms` milliseconds, in microseconds (MongoDB keeps milliseconds).
fn at(ms: i64) -> i64 {
    1_767_225_900_000_000 + ms * 1000
}

async fn every_column_type_reads_back_as_written(store: &dyn Store, kind: StoreKind) {
    let columns = vec![
        column("flag", ColumnType::Boolean),
        column("count", ColumnType::Integer),
        column("avg", ColumnType::Real),
        column("price", ColumnType::Decimal),
        column("name", ColumnType::Text),
        column("last_seen", ColumnType::Timestamp),
        column("window", ColumnType::Window),
        column("tags", ColumnType::Json),
    ];
    let window =
        Value::Struct(vec![("start".into(), Value::Timestamp(at(0))), ("end".into(), Value::Timestamp(at(300_000)))]);
    let values = vec![
        Value::Bool(true),
        Value::Integer(i64::MAX),
        Value::Real(0.1),
        Value::Decimal("12.50".into()),
        Value::Text("<script>\"ünïcode\"</script>".into()),
        Value::Timestamp(at(123)),
        window,
        Value::List(vec![Value::Text("a".into()), Value::Integer(2), Value::Struct(vec![("x".into(), Value::Null)])]),
    ];
    let nulls = vec![Value::Null; columns.len()];
    store.prepare_result_table("types", "types", &columns, true).await.unwrap();
    let delta = upserts(vec![
        ResultRow { id: "a".into(), values: values.clone() },
        ResultRow { id: "b".into(), values: nulls.clone() },
    ]);
    store.write_batch("types", &columns, &delta, &status("types"), &[], &[]).await.unwrap();
    let table = store.read_table("types").await.unwrap().unwrap();
    assert_eq!(table.columns, columns);
    let mut expected = values;
    if kind == StoreKind::Sqlite {
        // SQLite has no decimal type: decimals are REAL there.
        expected[3] = Value::Real(12.5);
    }
    assert_eq!(
        table.rows,
        vec![ResultRow { id: "a".into(), values: expected }, ResultRow { id: "b".into(), values: nulls }]
    );
}

async fn upserts_replace_rows_by_id_and_deletes_remove_them(store: &dyn Store, _: StoreKind) {
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    let delta = upserts(vec![row("a", 1, 1.0), row("b", 2, 2.0), row("c", 3, 3.0)]);
    store.write_batch("p", &columns(), &delta, &status("p"), &[], &[]).await.unwrap();
    let delta = ResultDelta { upserts: vec![row("a", 1, 3.5)], deletes: vec!["b".into(), "never-written".into()] };
    store.write_batch("p", &columns(), &delta, &status("p"), &[], &[]).await.unwrap();
    assert_eq!(rows_of(store, "p").await, vec![row("a", 1, 3.5), row("c", 3, 3.0)]);
}

async fn writing_the_same_batch_twice_leaves_the_same_table(store: &dyn Store, _: StoreKind) {
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    // More rows than one bulk command holds, so that a repeated batch spans commands.
    let many: Vec<ResultRow> = (0..2500).map(|i| row(&format!("{i:05}"), i, i as f64 / 2.0)).collect();
    let delta = ResultDelta { upserts: many.clone(), deletes: vec!["gone".into()] };
    let bad = [RejectedRecord { source_offset: "f:1".into(), raw: "{".into(), reason: "eof".into() }];
    for _ in 0..2 {
        store.write_batch("p", &columns(), &delta, &status("p"), &bad, &[]).await.unwrap();
    }
    let rows = rows_of(store, "p").await;
    assert!(rows == many, "{} rows, expected {}", rows.len(), many.len());
    assert_eq!(store.rejected_records("p", false).await.unwrap().len(), 1);
}

/// A batch spanning several bulk commands (MongoDB sends them at once, in any order of
/// landing) in which one `_id` comes first and last: the last value wins.
async fn an_id_changed_twice_in_a_batch_keeps_its_last_value_across_bulk_commands(store: &dyn Store, _: StoreKind) {
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    let mut rows: Vec<ResultRow> = (0..4500).map(|i| row(&format!("{i:05}"), i, 1.0)).collect();
    rows.push(row("00007", 7, -7.0));
    store.write_batch("p", &columns(), &upserts(rows), &status("p"), &[], &[]).await.unwrap();
    let written = rows_of(store, "p").await;
    assert_eq!(written.len(), 4500);
    assert_eq!(written[7], row("00007", 7, -7.0));
}

async fn rejected_records_are_keyed_by_offset_so_replays_do_not_duplicate(store: &dyn Store, _: StoreKind) {
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    let bad = RejectedRecord { source_offset: "f:1".into(), raw: "{".into(), reason: "eof".into() };
    let late = RejectedRecord { source_offset: "events/0@7".into(), raw: "{}".into(), reason: "late".into() };
    for _ in 0..2 {
        let (b, l) = (std::slice::from_ref(&bad), std::slice::from_ref(&late));
        store.write_batch("p", &columns(), &ResultDelta::default(), &status("p"), b, l).await.unwrap();
    }
    // Another pipeline's record at the same offset is its own.
    let other = RejectedRecord { reason: "other".into(), ..bad.clone() };
    store.write_batch("q", &columns(), &ResultDelta::default(), &status("q"), &[other], &[]).await.unwrap();
    assert_eq!(store.rejected_records("p", false).await.unwrap(), vec![bad]);
    assert_eq!(store.rejected_records("p", true).await.unwrap(), vec![late]);
    assert_eq!(store.rejected_records("q", false).await.unwrap().len(), 1);
    // In offset order: by file, then by line as a number (`f:9` before `f:10`).
    let at = |offset: &str| RejectedRecord { source_offset: offset.into(), raw: "x".into(), reason: "bad".into() };
    let more = [at("g:2"), at("f:10"), at("f:9"), at("g:10")];
    store.write_batch("p", &columns(), &ResultDelta::default(), &status("p"), &more, &[]).await.unwrap();
    let offsets: Vec<String> =
        store.rejected_records("p", false).await.unwrap().into_iter().map(|r| r.source_offset).collect();
    assert_eq!(offsets, ["f:1", "f:9", "f:10", "g:2", "g:10"]);
}

async fn a_shadow_table_replaces_the_table_in_one_step(store: &dyn Store, _: StoreKind) {
    store.prepare_result_table("p", "t", &columns(), false).await.unwrap();
    let old = upserts(vec![row("a", 1, 0.5), row("b", 2, 0.5)]);
    store.write_batch("t", &columns(), &old, &status("p"), &[], &[]).await.unwrap();
    let shadow = shadow_table("t");
    let new_columns = vec![column("item_id", ColumnType::Integer), column("total", ColumnType::Integer)];
    store.prepare_result_table("p", &shadow, &new_columns, true).await.unwrap();
    let new = ResultDelta {
        upserts: vec![ResultRow { id: "c".into(), values: vec![Value::Integer(3), Value::Integer(9)] }],
        deletes: vec![],
    };
    store.write_batch(&shadow, &new_columns, &new, &status("p"), &[], &[]).await.unwrap();
    assert_eq!(rows_of(store, "t").await.len(), 2, "the old table until the swap");
    store.swap_in(&shadow, "t").await.unwrap();
    let table = store.read_table("t").await.unwrap().unwrap();
    assert_eq!(table.columns, new_columns, "the new table's columns after the swap");
    assert_eq!(table.rows, new.upserts);
    assert!(!store.has_table(&shadow).await.unwrap(), "the shadow is gone");
    assert!(store.has_table("t").await.unwrap());
}

async fn preparing_fresh_or_with_other_columns_drops_old_rows_and_keeps_them_otherwise(
    store: &dyn Store,
    _: StoreKind,
) {
    let bad = [RejectedRecord { source_offset: "f:1".into(), raw: "x".into(), reason: "bad".into() }];
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    store.write_batch("p", &columns(), &upserts(vec![row("a", 1, 1.0)]), &status("p"), &bad, &[]).await.unwrap();
    store.prepare_result_table("p", "p", &columns(), false).await.unwrap();
    assert_eq!(rows_of(store, "p").await.len(), 1, "same columns, not fresh: rows kept (a restart)");
    assert_eq!(store.rejected_records("p", false).await.unwrap().len(), 1);
    let other = vec![column("item_id", ColumnType::Integer)];
    store.prepare_result_table("p", "p", &other, false).await.unwrap();
    assert_eq!(rows_of(store, "p").await.len(), 0, "other columns: rows dropped");
    store
        .write_batch(
            "p",
            &other,
            &upserts(vec![ResultRow { id: "z".into(), values: vec![Value::Integer(1)] }]),
            &status("p"),
            &bad,
            &[],
        )
        .await
        .unwrap();
    store.prepare_result_table("p", "p", &other, true).await.unwrap();
    assert_eq!(rows_of(store, "p").await.len(), 0, "fresh: rows dropped");
    assert!(store.rejected_records("p", false).await.unwrap().is_empty(), "fresh: bad records forgotten");
}

async fn an_empty_result_is_an_existing_empty_table_with_its_columns(store: &dyn Store, _: StoreKind) {
    assert!(!store.has_table("empty").await.unwrap());
    assert_eq!(store.read_table("empty").await.unwrap(), None);
    store.prepare_result_table("empty", "empty", &columns(), true).await.unwrap();
    assert!(store.has_table("empty").await.unwrap());
    assert_eq!(store.columns("empty").await.unwrap(), Some(columns()));
    assert_eq!(store.columns("nope").await.unwrap(), None);
    let table = store.read_table("empty").await.unwrap().unwrap();
    assert_eq!((table.columns, table.rows.len()), (columns(), 0));
    // The columns' roles, when the writer knows them, read back too.
    let with_roles = vec![
        ResultColumn { role: Some(ColumnRole::Key), ..column("window", ColumnType::Window) },
        ResultColumn { role: Some(ColumnRole::Key), ..column("label", ColumnType::Text) },
        ResultColumn { role: Some(ColumnRole::Value), ..column("n", ColumnType::Integer) },
        ResultColumn { role: Some(ColumnRole::Value), ..column("avg", ColumnType::Real) },
        column("note", ColumnType::Text),
    ];
    store.prepare_result_table("roles", "roles", &with_roles, true).await.unwrap();
    assert_eq!(store.columns("roles").await.unwrap(), Some(with_roles.clone()));
    let values = vec![
        Value::Struct(vec![("start".into(), Value::Timestamp(at(0))), ("end".into(), Value::Timestamp(at(5)))]),
        Value::Text("a".into()),
        Value::Integer(7),
        Value::Real(2.5),
        Value::Text("n".into()),
    ];
    let delta = upserts(vec![ResultRow { id: "a".into(), values: values.clone() }]);
    store.write_batch("roles", &with_roles, &delta, &status("roles"), &[], &[]).await.unwrap();
    assert_eq!(rows_of(store, "roles").await[0].values, values, "each type reads back with its role declared");
}

async fn status_rows_round_trip_and_are_listed_by_name(store: &dyn Store, _: StoreKind) {
    let full = PipelineStatus {
        name: "b_pipeline".into(),
        sql_file: "sql/b_pipeline.sql".into(),
        sql_hash: "ab12".into(),
        sql_text: Some("SELECT count(*) FROM SOURCE -- ✓".into()),
        result_table: "b_table".into(),
        state: "replaying".into(),
        host: "host-1".into(),
        started_at: "2026-11-22T10:00:00.000000Z".into(),
        events_in: 10,
        events_ok: 7,
        events_bad: 2,
        events_late: 1,
        rows_upserted: 40,
        rows_deleted: 3,
        lag: 5,
        watermark: Some("2026-11-22T09:59:00.000000Z".into()),
        last_batch_at: Some("2026-11-22T10:00:01.000000Z".into()),
        last_error: Some("store down".into()),
        progress: Some(0.25),
    };
    store.write_status(&full).await.unwrap();
    store.write_status(&status("a_pipeline")).await.unwrap();
    let mut changed = full.clone();
    changed.state = "running".into();
    changed.progress = None;
    store.write_status(&changed).await.unwrap();
    let names: Vec<String> = store.statuses().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a_pipeline", "b_pipeline"]);
    assert_eq!(store.status("b_pipeline").await.unwrap(), Some(changed));
    assert_eq!(store.status("nope").await.unwrap(), None);
}

async fn alert_transitions_are_listed_newest_first(store: &dyn Store, _: StoreKind) {
    let transition = |to: &str, second: u32| AlertTransition {
        rule: "too_many".into(),
        instance: "item_id=7".into(),
        pipeline: "p".into(),
        severity: "critical".into(),
        from: "normal".into(),
        to: to.into(),
        value: Some(42.5),
        at: format!("2026-11-22T10:00:{second:02}.000000Z"),
        message: None,
    };
    for (to, second) in [("pending", 1), ("firing", 2), ("normal", 3)] {
        store.record_alert(&transition(to, second)).await.unwrap();
    }
    let history = store.alert_history(2).await.unwrap();
    assert_eq!(history, vec![transition("normal", 3), transition("firing", 2)]);
}

async fn qlik_target_states_are_replaced_per_pipeline_and_target(store: &dyn Store, _: StoreKind) {
    let state = |pipeline: &str, target: &str, reloads: u64| QlikTargetStatus {
        pipeline: pipeline.into(),
        target: target.into(),
        table: pipeline.into(),
        state: "up_to_date".into(),
        app_version: Some("abc:10".into()),
        reloads,
        last_reload_at: Some("2026-11-22T10:00:00.000000Z".into()),
        last_reload_seconds: Some(2.5),
        last_reload_rows: 7,
        last_error: Some("engine said \"no\"".into()),
        updated_at: "2026-11-22T10:00:01.000000Z".into(),
        ..Default::default()
    };
    let (a, b) = ("ws://a:9076/app/x", "ws://b:9076/app/x");
    for (pipeline, target, reloads) in [("p", a, 1), ("p", b, 1), ("o", a, 1), ("p", a, 2)] {
        store.write_qlik_status(&state(pipeline, target, reloads)).await.unwrap();
    }
    let states = store.qlik_statuses().await.unwrap();
    assert_eq!(states, vec![state("o", a, 1), state("p", a, 2), state("p", b, 1)]);
}

async fn pages_are_sorted_filtered_by_window_start_and_counted(store: &dyn Store, _: StoreKind) {
    let columns = vec![column("window", ColumnType::Window), column("n", ColumnType::Integer)];
    store.prepare_result_table("w", "w", &columns, true).await.unwrap();
    let window = |i: i64| {
        Value::Struct(vec![
            ("start".into(), Value::Timestamp(at(i * 300_000))),
            ("end".into(), Value::Timestamp(at((i + 1) * 300_000))),
        ])
    };
    // Windows 0..10, n = (7 * i) % 10: every n different, not in window order.
    let rows: Vec<ResultRow> = (0..10)
        .map(|i| ResultRow { id: format!("w{i}"), values: vec![window(i), Value::Integer((7 * i) % 10)] })
        .collect();
    store.write_batch("w", &columns, &upserts(rows), &status("w"), &[], &[]).await.unwrap();
    let ids = |page: store::Page| page.rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(store.window_bounds("w", "window").await.unwrap(), Some((at(0), at(9 * 300_000))));
    assert_eq!(store.window_bounds("nope", "window").await.unwrap(), None);
    // n descending, second page of 3: n = 6, 5, 4 → windows 8, 5, 2.
    let request =
        PageRequest { sort: Some("n".into()), descending: true, offset: 3, limit: 3, ..PageRequest::default() };
    let page = store.read_page("w", &request).await.unwrap().unwrap();
    assert_eq!((page.total, page.columns.clone()), (10, columns.clone()));
    assert_eq!(ids(page), ["w8", "w5", "w2"]);
    // Windows starting in [15 min, 35 min): 3..=6, sorted by window, descending.
    let range = WindowRange { column: "window".into(), from: at(3 * 300_000), to: at(7 * 300_000) };
    let request = PageRequest {
        sort: Some("window".into()),
        descending: true,
        limit: 10,
        window_range: Some(range),
        ..PageRequest::default()
    };
    let page = store.read_page("w", &request).await.unwrap().unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(ids(page), ["w6", "w5", "w4", "w3"]);
    // Column filters, with the range: n in windows 6..=3 is 2, 5, 8, 1; n >= 5 leaves 5 and 4.
    let at_least = |n: f64| ColumnFilter { column: "n".into(), condition: FilterCondition::Compare(Comparison::Ge, n) };
    let filtered = PageRequest { filters: vec![at_least(5.0)], ..request.clone() };
    let page = store.read_page("w", &filtered).await.unwrap().unwrap();
    assert_eq!((page.total, ids(page)), (2, vec!["w5".to_string(), "w4".to_string()]));
    let every = |op, n: f64| PageRequest {
        filters: vec![ColumnFilter { column: "n".into(), condition: FilterCondition::Compare(op, n) }],
        limit: 10,
        ..PageRequest::default()
    };
    let totals = [
        (Comparison::Eq, 7.0, 1),
        (Comparison::Ne, 7.0, 9),
        (Comparison::Lt, 3.0, 3),
        (Comparison::Le, 3.0, 4),
        (Comparison::Gt, 7.5, 2),
        (Comparison::Ge, 0.0, 10),
    ];
    for (op, n, total) in totals {
        assert_eq!(store.read_page("w", &every(op, n)).await.unwrap().unwrap().total, total, "n {op:?} {n}");
    }
    // Text filters: contains, ignoring case, with no pattern syntax; ANDed with others.
    let columns = vec![column("label", ColumnType::Text), column("n", ColumnType::Integer)];
    store.prepare_result_table("t", "t", &columns, true).await.unwrap();
    let labels = ["Click", "double click", "view", "a.b*c", "CLICKS"];
    let rows: Vec<ResultRow> = (0..5)
        .map(|i| ResultRow {
            id: format!("t{i}"),
            values: vec![Value::Text(labels[i].into()), Value::Integer(i as i64)],
        })
        .collect();
    store.write_batch("t", &columns, &upserts(rows), &status("t"), &[], &[]).await.unwrap();
    let contains =
        |text: &str| ColumnFilter { column: "label".into(), condition: FilterCondition::Contains(text.into()) };
    let matching = |filters: Vec<ColumnFilter>| PageRequest { filters, limit: 10, ..PageRequest::default() };
    let page = store.read_page("t", &matching(vec![contains("click")])).await.unwrap().unwrap();
    assert_eq!(ids(page), ["t0", "t1", "t4"]);
    let page = store.read_page("t", &matching(vec![contains(".b*")])).await.unwrap().unwrap();
    assert_eq!(ids(page), ["t3"], "no pattern syntax");
    let page = store.read_page("t", &matching(vec![contains("click"), at_least(2.0)])).await.unwrap().unwrap();
    assert_eq!(ids(page), ["t4"]);
    // A filter on a column the table lacks, or of the wrong kind (text on a number), is ignored.
    let wrong = vec![
        ColumnFilter { column: "nope".into(), condition: FilterCondition::Contains("x".into()) },
        ColumnFilter { column: "n".into(), condition: FilterCondition::Contains("x".into()) },
    ];
    assert_eq!(store.read_page("t", &matching(wrong)).await.unwrap().unwrap().total, 5);
    // Sums per window start and category, as a time chart draws them (grouped in the
    // store where it can): windows 0..3, labels a and b, x missing on one row.
    let columns = vec![
        column("window", ColumnType::Window),
        column("label", ColumnType::Text),
        column("n", ColumnType::Integer),
        column("x", ColumnType::Real),
    ];
    store.prepare_result_table("s", "s", &columns, true).await.unwrap();
    let rows: Vec<ResultRow> = (0..12)
        .map(|i| {
            let x = if i == 5 { Value::Null } else { Value::Real(0.5) };
            let label = Value::Text(["a", "b"][(i % 2) as usize].into());
            ResultRow { id: format!("s{i:02}"), values: vec![window(i % 3), label, Value::Integer(i), x] }
        })
        .collect();
    store.write_batch("s", &columns, &upserts(rows), &status("s"), &[], &[]).await.unwrap();
    let values = ["n".to_string(), "x".to_string(), "nope".to_string()];
    let sums = |request: PageRequest, category: Option<&'static str>| {
        let values = values.clone();
        async move {
            let sums = store.window_sums("s", "window", category, &values, &request).await.unwrap().unwrap();
            sums.into_iter().map(|s| (s.start, s.category, s.sums, s.rows)).collect::<Vec<_>>()
        }
    };
    let all = PageRequest { limit: 100, ..PageRequest::default() };
    let a = |s: &str| Some(s.to_string());
    // Window 0 holds i = 0, 3, 6, 9 (a, b, a, b); window 1 1, 4, 7, 10 (b, a, b, a);
    // window 2 2, 5, 8, 11 (a, b, a, b), x missing at 5.
    assert_eq!(
        sums(all.clone(), Some("label")).await,
        [
            (at(0), a("a"), vec![Some(6.0), Some(1.0), None], 2),
            (at(0), a("b"), vec![Some(12.0), Some(1.0), None], 2),
            (at(300_000), a("a"), vec![Some(14.0), Some(1.0), None], 2),
            (at(300_000), a("b"), vec![Some(8.0), Some(1.0), None], 2),
            (at(600_000), a("a"), vec![Some(10.0), Some(1.0), None], 2),
            (at(600_000), a("b"), vec![Some(16.0), Some(0.5), None], 2),
        ]
    );
    // Without a category, the latest two window starts, and with a filter.
    let latest = PageRequest { limit: 2, ..all.clone() };
    assert_eq!(
        sums(latest.clone(), None).await,
        [
            (at(300_000), None, vec![Some(22.0), Some(2.0), None], 4),
            (at(600_000), None, vec![Some(26.0), Some(1.5), None], 4)
        ]
    );
    let filtered = PageRequest { filters: vec![contains("b")], ..latest };
    assert_eq!(
        sums(filtered, None).await,
        [
            (at(300_000), None, vec![Some(8.0), Some(1.0), None], 2),
            (at(600_000), None, vec![Some(16.0), Some(0.5), None], 2)
        ]
    );
    assert_eq!(store.window_sums("nope", "window", None, &values, &all).await.unwrap(), None);
    // Without counting, the total is the rows read.
    let uncounted = PageRequest { limit: 2, skip_total: true, ..PageRequest::default() };
    assert_eq!(store.read_page("w", &uncounted).await.unwrap().unwrap().total, 2);
    // An unknown sort column sorts by `_id`.
    let request = PageRequest { sort: Some("nope".into()), limit: 2, ..PageRequest::default() };
    assert_eq!(ids(store.read_page("w", &request).await.unwrap().unwrap()), ["w0", "w1"]);
    assert_eq!(store.read_page("nope", &request).await.unwrap(), None);
}

async fn silences_round_trip_newest_first_and_are_replaced_by_id(store: &dyn Store, _: StoreKind) {
    assert!(store.silences().await.unwrap().is_empty());
    let silence = |id: &str, created: &str, ends: &str| Silence {
        id: id.into(),
        matchers: [("alertname".to_string(), "high".to_string()), ("item_id".to_string(), "7".to_string())].into(),
        comment: format!("maintenance <{id}>"),
        created_at: created.into(),
        ends_at: ends.into(),
    };
    let first = silence("a", "2026-01-01T00:00:00.000000Z", "2026-01-01T01:00:00.000000Z");
    let second = silence("b", "2026-01-01T00:30:00.000000Z", "2026-01-01T02:00:00.000000Z");
    store.save_silence(&first).await.unwrap();
    store.save_silence(&second).await.unwrap();
    assert_eq!(store.silences().await.unwrap(), [second.clone(), first.clone()], "newest first");
    // Expiring one saves it again with an earlier end.
    let expired = Silence { ends_at: "2026-01-01T00:40:00.000000Z".into(), ..second };
    store.save_silence(&expired).await.unwrap();
    assert_eq!(store.silences().await.unwrap(), [expired, first]);
}

async fn health_samples_are_replaced_by_time_and_kept_to_the_newest_per_pipeline_and_resolution(
    store: &dyn Store,
    _: StoreKind,
) {
    assert!(store.health(10).await.unwrap().is_empty());
    let sample = |pipeline: &str, resolution_seconds: u32, i: i64, rate: Option<f64>| HealthSample {
        pipeline: pipeline.into(),
        resolution_seconds,
        at: store::iso_micros(at(i * 10_000)),
        events_per_second: rate,
        lag: Some(i as u64 * 1_000),
        watermark_delay_seconds: Some(i as f64 / 4.0),
    };
    // Ten samples of `a`, one write each as the dashboard does, keeping four; `b` keeps its two.
    for i in 0..10 {
        let samples = [sample("a", 10, i, Some(i as f64 * 1.5)), sample("b", 10, i.min(1), None)];
        store.write_health(&samples, 4).await.unwrap();
    }
    store.write_health(&[sample("a", 60, 0, Some(2.0))], 4).await.unwrap();
    let tens = store.health(10).await.unwrap();
    let kept: Vec<(&str, i64)> = tens
        .iter()
        .map(|s| (s.pipeline.as_str(), (store::parse_iso_micros(&s.at).unwrap() - at(0)) / 10_000_000))
        .collect();
    assert_eq!(
        kept,
        [("a", 6), ("a", 7), ("a", 8), ("a", 9), ("b", 0), ("b", 1)],
        "the newest four of a, oldest first"
    );
    assert_eq!(tens[3], sample("a", 10, 9, Some(13.5)), "read back as written");
    assert_eq!(tens[4], sample("b", 10, 0, None));
    assert_eq!(store.health(60).await.unwrap(), [sample("a", 60, 0, Some(2.0))], "each resolution its own");
    // The same time again replaces it; keeping none empties the series.
    store.write_health(&[sample("a", 10, 9, Some(99.0))], 4).await.unwrap();
    let a: Vec<Option<f64>> =
        store.health(10).await.unwrap().iter().filter(|s| s.pipeline == "a").map(|s| s.events_per_second).collect();
    assert_eq!(a, [Some(9.0), Some(10.5), Some(12.0), Some(99.0)]);
    store.write_health(&[sample("b", 10, 2, None)], 0).await.unwrap();
    assert!(store.health(10).await.unwrap().iter().all(|s| s.pipeline == "a"));
}

/// MongoDB only: the documents carry BSON types, a window is a sub-document of dates
/// with an index on its start, and a date-range query returns the right documents.
#[test]
fn mongodb_documents_are_typed_and_window_start_ranges_are_indexed() {
    use mongodb::bson::{Bson, Document, doc};
    let server = testkit::MongoServer::start();
    runtime().block_on(async {
        let store = store::MongoStore::open(&server.uri("typed"), None).await.unwrap();
        let columns = vec![
            column("window", ColumnType::Window),
            column("n", ColumnType::Integer),
            column("avg", ColumnType::Real),
            column("price", ColumnType::Decimal),
        ];
        store.prepare_result_table("w", "w", &columns, true).await.unwrap();
        let window = |minute: i64| {
            Value::Struct(vec![
                ("start".into(), Value::Timestamp(at(minute * 60_000))),
                ("end".into(), Value::Timestamp(at((minute + 5) * 60_000))),
            ])
        };
        let rows = (0..12)
            .map(|i| ResultRow {
                id: format!("w{i:02}"),
                values: vec![window(i * 5), Value::Integer(i), Value::Real(0.5), Value::Decimal("1.10".into())],
            })
            .collect();
        store.write_batch("w", &columns, &upserts(rows), &status("w"), &[], &[]).await.unwrap();

        let collection = store.database().collection::<Document>("w");
        let first = collection.find_one(doc! {"_id": "w00"}).await.unwrap().unwrap();
        let window = first.get_document("window").unwrap();
        assert!(matches!(window.get("start"), Some(Bson::DateTime(_))), "{first}");
        assert!(matches!(window.get("end"), Some(Bson::DateTime(_))), "{first}");
        assert!(matches!(first.get("n"), Some(Bson::Int64(0))), "{first}");
        assert!(matches!(first.get("avg"), Some(Bson::Double(_))), "{first}");
        assert!(matches!(first.get("price"), Some(Bson::Decimal128(d)) if d.to_string() == "1.10"), "{first}");

        // Windows starting in [00:15, 00:30): w03, w04, w05.
        let from = mongodb::bson::DateTime::from_millis(at(15 * 60_000) / 1000);
        let to = mongodb::bson::DateTime::from_millis(at(30 * 60_000) / 1000);
        let mut cursor =
            collection.find(doc! {"window.start": {"$gte": from, "$lt": to}}).sort(doc! {"_id": 1}).await.unwrap();
        let mut ids = Vec::new();
        while cursor.advance().await.unwrap() {
            ids.push(cursor.deserialize_current().unwrap().get_str("_id").unwrap().to_string());
        }
        assert_eq!(ids, ["w03", "w04", "w05"]);
        let indexes = collection.list_index_names().await.unwrap();
        assert!(indexes.iter().any(|name| name.starts_with("window.start")), "{indexes:?}");
    });
}

/// A password in the URI shows nowhere: not in the error of a server that does not
/// answer, nor in the store's name.
#[test]
fn the_uris_password_never_appears_in_errors() {
    runtime().block_on(async {
        let uri = "mongodb://app:pa55word-xyz@127.0.0.1:1/results?serverSelectionTimeoutMS=500";
        let started = std::time::Instant::now();
        let error = match store::open(uri, None).await {
            Ok(_) => panic!("port 1 answered"),
            Err(e) => e.to_string(),
        };
        assert!(!error.contains("pa55word-xyz"), "{error}");
        assert!(error.contains("mongodb://app:***@127.0.0.1:1/results"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(30), "the failure comes after the selection timeout");
        let error = match store::open("mongodb://app:pa55word-xyz@127.0.0.1:1", None).await {
            Ok(_) => panic!("a URI without a database opened"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("names no database") && !error.contains("pa55word-xyz"), "{error}");
    });
}
