//! The alert state machine over a real store (SQLite; the store interface is the same
//! for MongoDB), and the webhook received by a local HTTP server.

use std::collections::BTreeMap;

use dashboard::alerts::{AlertsView, Engine, evaluate_once, rules, webhook::Webhook};
use dashboard::metrics::Metrics;
use store::{ColumnType, PipelineStatus, ResultColumn, ResultDelta, ResultRow, Store, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_767_225_600_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn sqlite(dir: &tempfile::TempDir) -> Box<dyn Store> {
    store::open(&format!("sqlite:{}", dir.path().join("s.sqlite").display()), None).await.unwrap()
}

fn columns() -> Vec<ResultColumn> {
    vec![
        ResultColumn { name: "item_id".into(), column_type: ColumnType::Integer, role: None },
        ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None },
    ]
}

/// Makes pipeline `p`'s result exactly `items` (item → n).
async fn set_items(store: &dyn Store, items: &[(i64, i64)]) {
    store.prepare_result_table("p", "p", &columns(), true).await.unwrap();
    let upserts = items
        .iter()
        .map(|&(item, n)| ResultRow { id: item.to_string(), values: vec![Value::Integer(item), Value::Integer(n)] })
        .collect();
    let status = PipelineStatus { name: "p".into(), ..Default::default() };
    store.write_batch("p", &columns(), &ResultDelta { upserts, deletes: vec![] }, &status, &[], &[]).await.unwrap();
}

fn rule(extra: &str) -> Vec<rules::Rule> {
    let text = format!(
        "[[rule]]\nname = \"high\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 10\n{extra}"
    );
    rules::parse(&text, "alerts.toml").unwrap()
}

/// (instance, state) of every instance.
fn states(engine: &Engine) -> Vec<(String, &'static str)> {
    engine.instances().iter().map(|i| (i.instance.clone(), i.state.as_str())).collect()
}

#[test]
fn the_pending_period_is_honoured_then_it_fires_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let mut engine = Engine::new(rule("pending_seconds = 60\nseverity = \"critical\""));
        set_items(store, &[(1, 5)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0).await;
        assert_eq!(states(&engine), [("".to_string(), "normal")]);
        set_items(store, &[(1, 20)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + SECOND).await;
        assert_eq!(states(&engine)[0].1, "pending");
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 60 * SECOND).await;
        assert_eq!(states(&engine)[0].1, "pending", "59 s of the 60 s pending period");
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 61 * SECOND).await;
        assert_eq!(states(&engine)[0].1, "firing");
        set_items(store, &[(1, 3)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 70 * SECOND).await;
        assert_eq!(states(&engine)[0].1, "normal");
        // Every transition is stored, with the value that caused it (newest first).
        let history: Vec<(String, String, Option<f64>)> =
            store.alert_history(10).await.unwrap().into_iter().map(|t| (t.from, t.to, t.value)).collect();
        let expected = [("firing", "normal", 3.0), ("pending", "firing", 20.0), ("normal", "pending", 20.0)];
        let expected: Vec<(String, String, Option<f64>)> =
            expected.iter().map(|(f, t, v)| (f.to_string(), t.to_string(), Some(*v))).collect();
        assert_eq!(history, expected);
        assert_eq!(view.instances()[0].severity, "critical");
    });
}

#[test]
fn no_rows_is_nodata_and_a_rule_that_cannot_be_evaluated_is_error() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let mut engine = Engine::new(rule(""));
        evaluate_once(&mut engine, store, None, &view, &metrics, T0).await;
        assert_eq!(states(&engine), [("".to_string(), "nodata")], "no such pipeline yet");
        set_items(store, &[]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + SECOND).await;
        assert_eq!(states(&engine)[0].1, "nodata", "an empty result");
        set_items(store, &[(1, 50)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 2 * SECOND).await;
        assert_eq!(states(&engine)[0].1, "firing", "no pending period: fires at once");

        let mut broken = Engine::new(
            rules::parse(
                "[[rule]]\nname = \"b\"\npipeline = \"p\"\nvalue = \"nope\"\ncondition = \"below\"\nthreshold = 1\n",
                "a.toml",
            )
            .unwrap(),
        );
        evaluate_once(&mut broken, store, None, &view, &metrics, T0).await;
        let instance = &broken.instances()[0];
        assert_eq!(instance.state.as_str(), "error");
        assert!(instance.message.as_deref().unwrap().contains("no column `nope`"), "{:?}", instance.message);
    });
}

#[test]
fn per_group_rules_have_one_instance_per_key() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let mut engine = Engine::new(rule("per_group = true"));
        set_items(store, &[(1, 5), (2, 20), (3, 30)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0).await;
        let expected: Vec<(String, &str)> =
            vec![("item_id=1".into(), "normal"), ("item_id=2".into(), "firing"), ("item_id=3".into(), "firing")];
        assert_eq!(states(&engine), expected);
        assert_eq!(engine.instances()[2].labels, BTreeMap::from([("item_id".to_string(), "3".to_string())]));
        // Item 3 leaves the result: its instance has no data; item 2 resolves.
        set_items(store, &[(1, 5), (2, 1)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + SECOND).await;
        let expected: Vec<(String, &str)> =
            vec![("item_id=1".into(), "normal"), ("item_id=2".into(), "normal"), ("item_id=3".into(), "nodata")];
        assert_eq!(states(&engine), expected);
        // With a filter, only the matching group counts.
        let mut filtered = Engine::new(rule("filter = { item_id = 2 }"));
        evaluate_once(&mut filtered, store, None, &view, &metrics, T0).await;
        assert_eq!(filtered.instances()[0].value, Some(1.0));
    });
}

#[test]
fn windowed_results_are_judged_on_their_latest_window() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let columns = vec![
            ResultColumn { name: "window".into(), column_type: ColumnType::Window, role: None },
            ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None },
        ];
        let window = |i: i64| {
            Value::Struct(vec![
                ("start".into(), Value::Timestamp(T0 + i * 300 * SECOND)),
                ("end".into(), Value::Timestamp(T0 + (i + 1) * 300 * SECOND)),
            ])
        };
        store.prepare_result_table("p", "p", &columns, true).await.unwrap();
        // An old window above the threshold, the latest below it.
        let rows = vec![
            ResultRow { id: "0".into(), values: vec![window(0), Value::Integer(99)] },
            ResultRow { id: "1".into(), values: vec![window(1), Value::Integer(4)] },
        ];
        let status = PipelineStatus { name: "p".into(), ..Default::default() };
        store
            .write_batch("p", &columns, &ResultDelta { upserts: rows, deletes: vec![] }, &status, &[], &[])
            .await
            .unwrap();
        let mut engine = Engine::new(rule(""));
        evaluate_once(&mut engine, store.as_ref(), None, &AlertsView::default(), &Metrics::new(), T0).await;
        assert_eq!((engine.instances()[0].state.as_str(), engine.instances()[0].value), ("normal", Some(4.0)));
    });
}

/// A local HTTP server that answers 200 and hands each request body to the test.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    receiver_failing(0).await
}

/// [`receiver`], but the first `fail_first` requests are answered 500 (and not handed on).
async fn receiver_failing(fail_first: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    let mut failures_left = fail_first;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=secret", listener.local_addr().unwrap());
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            let body = loop {
                let n = socket.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_string();
                    }
                }
            };
            if failures_left > 0 {
                failures_left -= 1;
                let failure = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                socket.write_all(failure).await.unwrap();
                continue;
            }
            socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await.unwrap();
            send.send(serde_json::from_str(&body).unwrap()).unwrap();
        }
    });
    (url, receive)
}

#[test]
fn the_webhook_receives_firing_and_resolved_with_labels_values_and_times() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let webhook = Webhook::new(url);
        let mut engine = Engine::new(rule("per_group = true\nseverity = \"critical\""));
        set_items(store, &[(7, 42)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0).await;
        let firing = received.recv().await.unwrap();
        assert_eq!(firing["status"], "firing");
        let alert = &firing["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "high");
        assert_eq!(alert["labels"]["pipeline"], "p");
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["labels"]["item_id"], "7");
        assert_eq!(alert["values"]["value"], 42.0);
        assert_eq!(alert["startsAt"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

        set_items(store, &[(7, 1)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 90 * SECOND).await;
        let resolved = received.recv().await.unwrap();
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["startsAt"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(resolved["alerts"][0]["endsAt"], "2026-01-01T00:01:30.000000Z");
        assert_eq!(resolved["alerts"][0]["values"]["value"], 1.0);
        assert!(received.try_recv().is_err(), "only firing and resolved are sent");
    });
}

#[test]
fn keep_firing_for_holds_a_recovering_alert_without_notifying_until_it_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let webhook = Webhook::new(url);
        let mut engine = Engine::new(rule("keep_firing_seconds = 30"));
        // The instance's state after the value is `n` at T0 + `seconds`.
        async fn at(
            engine: &mut Engine,
            (store, webhook, view, metrics): (&dyn Store, &Webhook, &AlertsView, &Metrics),
            n: i64,
            seconds: i64,
        ) -> &'static str {
            set_items(store, &[(1, n)]).await;
            evaluate_once(engine, store, Some(webhook), view, metrics, T0 + seconds * SECOND).await;
            engine.instances()[0].state.as_str()
        }
        let with = (store, &webhook, &view, &metrics);
        assert_eq!(at(&mut engine, with, 20, 0).await, "firing");
        assert_eq!(received.recv().await.unwrap()["status"], "firing");
        // Below the threshold: recovering, not resolved; back above within 30 s: firing,
        // the same alert (no second notification).
        assert_eq!(at(&mut engine, with, 5, 10).await, "recovering");
        assert_eq!(at(&mut engine, with, 20, 20).await, "firing");
        assert_eq!(at(&mut engine, with, 5, 30).await, "recovering");
        assert_eq!(at(&mut engine, with, 5, 59).await, "recovering", "29 s of the 30");
        assert!(received.try_recv().is_err(), "recovering and back are not notified");
        assert_eq!(at(&mut engine, with, 5, 60).await, "normal");
        let resolved = received.recv().await.unwrap();
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["startsAt"], "2026-01-01T00:00:00.000000Z", "firing since the first time");
        let history: Vec<String> =
            store.alert_history(10).await.unwrap().into_iter().rev().map(|t| format!("{}→{}", t.from, t.to)).collect();
        assert_eq!(
            history,
            ["normal→firing", "firing→recovering", "recovering→firing", "firing→recovering", "recovering→normal"]
        );
    });
}

#[test]
fn a_restart_restores_every_instance_from_the_stored_transitions() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let rules = rule("pending_seconds = 60\nper_group = true");
        let mut engine = Engine::new(rules.clone());
        // Item 1 is over the threshold from T0 + 1 s and fires at T0 + 61 s; item 2 from T0 + 30 s.
        set_items(store, &[(1, 20), (2, 5)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + SECOND).await;
        set_items(store, &[(1, 20), (2, 20)]).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 30 * SECOND).await;
        evaluate_once(&mut engine, store, None, &view, &metrics, T0 + 61 * SECOND).await;
        let before = states(&engine);
        assert_eq!(before, [("item_id=1".to_string(), "firing"), ("item_id=2".to_string(), "pending")]);

        // The dashboard restarts: its engine comes back from the store's transitions.
        let history = store.alert_history(dashboard::alerts::engine::RESTORE_HISTORY).await.unwrap();
        let mut engine = Engine::restored(rules, &history);
        assert_eq!(states(&engine), before, "not all normal again");
        let firing = engine.instances().into_iter().find(|i| i.instance == "item_id=1").unwrap();
        assert_eq!((firing.since, firing.firing_since), (T0 + 61 * SECOND, Some(T0 + 61 * SECOND)));
        assert_eq!(firing.labels, BTreeMap::from([("item_id".to_string(), "1".to_string())]));
        // Still over: no transition (so no second notification); item 2's pending
        // period still counts from T0 + 30 s, and ends at T0 + 90 s.
        assert!(engine.evaluate(store, T0 + 80 * SECOND).await.is_empty(), "nothing moves");
        let moved = engine.evaluate(store, T0 + 91 * SECOND).await;
        let moved: Vec<(String, String, String)> = moved.into_iter().map(|(t, _)| (t.instance, t.from, t.to)).collect();
        assert_eq!(moved, [("item_id=2".to_string(), "pending".to_string(), "firing".to_string())]);
    });
}

#[test]
fn an_edited_rules_file_is_picked_up_while_running_and_a_broken_edit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(sqlite(&dir).await);
        set_items(store.as_ref(), &[(1, 20)]).await;
        let path = dir.path().join("rules.toml");
        let high =
            "[[rule]]\nname = \"high\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 10\n";
        let low = "[[rule]]\nname = \"low\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"below\"\nthreshold = 100\n";
        // As editors save: a new file renamed over the old one.
        let save = |text: String| {
            let temporary = dir.path().join("rules.toml.new");
            std::fs::write(&temporary, text).unwrap();
            std::fs::rename(&temporary, &path).unwrap();
        };
        save(high.to_string());
        let rules = rules::load(&path).unwrap();
        let view = std::sync::Arc::new(AlertsView::new(rules.clone()));
        let (_watcher, reloaded) = dashboard::alerts::reload::watch(&path, rules.clone(), view.clone()).unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        let interval = std::time::Duration::from_millis(100);
        let run =
            dashboard::alerts::run(Engine::new(rules), store, None, view.clone(), metrics, interval, Some(reloaded));
        tokio::spawn(run);
        let firing = |view: &AlertsView| {
            let mut names: Vec<String> =
                view.instances().into_iter().filter(|i| i.state.as_str() == "firing").map(|i| i.rule).collect();
            names.sort();
            names
        };
        let wait = |what: &'static str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "waited in vain for {what}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        wait("high to fire", &|| firing(&view) == ["high"]);

        // A second rule is added: it is evaluated without a restart.
        save(format!("{high}\n{low}"));
        wait("the new rule to fire", &|| firing(&view) == ["high", "low"]);
        assert_eq!(view.rules().len(), 2);
        // A broken edit is reported; the rules before it keep running.
        save(format!("{high}\n[[rule]]\nname = "));
        wait("the broken edit to be reported", &|| view.rules_error().is_some());
        assert!(view.rules_error().unwrap().contains("rules.toml"), "{:?}", view.rules_error());
        assert_eq!(view.rules().len(), 2);
        // A rule removed: its instance leaves; the report of the broken edit goes.
        save(low.to_string());
        wait("high to leave", &|| firing(&view) == ["low"] && view.rules().len() == 1);
        assert_eq!(view.rules_error(), None);
    });
}

#[test]
fn a_notification_that_does_not_arrive_is_sent_again_at_the_next_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        // The receiver fails twice, then accepts.
        let (url, mut received) = receiver_failing(2).await;
        let webhook = Webhook::new(url);
        let mut engine = Engine::new(rule(""));
        set_items(store, &[(1, 20)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0).await;
        assert!(received.try_recv().is_err(), "the first attempt failed");
        // Nothing changes, but the evaluations send it again: it arrives at the third attempt.
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 10 * SECOND).await;
        assert!(received.try_recv().is_err(), "the second attempt failed");
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 20 * SECOND).await;
        let firing = received.recv().await.unwrap();
        assert_eq!(
            (firing["status"].as_str(), firing["alerts"][0]["startsAt"].as_str()),
            (Some("firing"), Some("2026-01-01T00:00:00.000000Z"))
        );
        // Delivered: not sent again.
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 30 * SECOND).await;
        assert!(received.try_recv().is_err(), "sent once it arrived");
    });
}

#[test]
fn a_notification_is_given_up_after_its_last_attempt_and_a_newer_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let attempts = dashboard::alerts::webhook::MAX_ATTEMPTS as usize;
        // Fails every attempt of the firing one, then the resolve's first attempt passes.
        let (url, mut received) = receiver_failing(attempts).await;
        let webhook = Webhook::new(url);
        let mut engine = Engine::new(rule(""));
        set_items(store, &[(1, 20)]).await;
        for k in 0..attempts as i64 + 2 {
            evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + k * 10 * SECOND).await;
        }
        assert!(received.try_recv().is_err(), "given up after {attempts} attempts, not sent for ever");
        set_items(store, &[(1, 1)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 100 * SECOND).await;
        assert_eq!(received.recv().await.unwrap()["status"], "resolved");
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 110 * SECOND).await;
        assert!(received.try_recv().is_err(), "nothing older comes after the resolve");
    });
}

#[test]
fn a_silence_stops_the_notifications_it_matches_while_it_is_in_force() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let webhook = Webhook::new(url);
        let mut engine = Engine::new(rule("per_group = true"));
        // Item 7 is silenced for a minute from T0; item 8 is not.
        let silence = store::Silence {
            id: "s1".into(),
            matchers: [("alertname".to_string(), "high".to_string()), ("item_id".to_string(), "7".to_string())].into(),
            comment: "maintenance".into(),
            created_at: store::iso_micros(T0),
            ends_at: store::iso_micros(T0 + 60 * SECOND),
        };
        store.save_silence(&silence).await.unwrap();
        set_items(store, &[(7, 20), (8, 20)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + SECOND).await;
        assert_eq!(states(&engine), [("item_id=7".to_string(), "firing"), ("item_id=8".to_string(), "firing")]);
        let notified = received.recv().await.unwrap();
        assert_eq!(notified["alerts"][0]["labels"]["item_id"], "8", "only the instance not silenced");
        assert!(received.try_recv().is_err(), "item 7 is silenced");
        // After the silence ends, item 7's next transition is notified again.
        set_items(store, &[(7, 1), (8, 20)]).await;
        evaluate_once(&mut engine, store, Some(&webhook), &view, &metrics, T0 + 61 * SECOND).await;
        let resolved = received.recv().await.unwrap();
        assert_eq!(
            (resolved["status"].as_str(), resolved["alerts"][0]["labels"]["item_id"].as_str()),
            (Some("resolved"), Some("7"))
        );
    });
}
