//! The alert state machine over a real store (SQLite; the store interface is the same
//! for MongoDB), and the notifications (webhook and Slack contact points, grouping,
//! repeats, routing, silences) received by local HTTP servers.

mod support;

use std::collections::BTreeMap;

use dashboard::alerts::{AlertsView, Engine, Notifier, Policy, evaluate_once, rules};
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

/// No group wait or interval: each evaluation's news is sent at once (as one
/// notification per group).
fn at_once() -> Policy {
    Policy { group_wait_seconds: 0.0, group_interval_seconds: 0.0, ..Policy::default() }
}

/// `--webhook url` with the policy `at_once`.
fn webhook(url: String) -> Notifier {
    Notifier::new(Some(url), vec![], at_once())
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
        let mut webhook = webhook(url);
        let mut engine = Engine::new(rule("per_group = true\nseverity = \"critical\""));
        set_items(store, &[(7, 42)]).await;
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0).await;
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
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 90 * SECOND).await;
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
        let mut webhook = webhook(url);
        let mut engine = Engine::new(rule("keep_firing_seconds = 30"));
        // The instance's state after the value is `n` at T0 + `seconds`.
        async fn at(
            engine: &mut Engine,
            (store, webhook, view, metrics): (&dyn Store, &mut Notifier, &AlertsView, &Metrics),
            n: i64,
            seconds: i64,
        ) -> &'static str {
            set_items(store, &[(1, n)]).await;
            evaluate_once(engine, store, Some(webhook), view, metrics, T0 + seconds * SECOND).await;
            engine.instances()[0].state.as_str()
        }
        macro_rules! with {
            () => {
                (store, &mut webhook, &view, &metrics)
            };
        }
        assert_eq!(at(&mut engine, with!(), 20, 0).await, "firing");
        assert_eq!(received.recv().await.unwrap()["status"], "firing");
        // Below the threshold: recovering, not resolved; back above within 30 s: firing,
        // the same alert (no second notification).
        assert_eq!(at(&mut engine, with!(), 5, 10).await, "recovering");
        assert_eq!(at(&mut engine, with!(), 20, 20).await, "firing");
        assert_eq!(at(&mut engine, with!(), 5, 30).await, "recovering");
        assert_eq!(at(&mut engine, with!(), 5, 59).await, "recovering", "29 s of the 30");
        assert!(received.try_recv().is_err(), "recovering and back are not notified");
        assert_eq!(at(&mut engine, with!(), 5, 60).await, "normal");
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
    let runtime = support::server_runtime();
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
        let file = rules::load_file(&path).unwrap();
        let view = std::sync::Arc::new(AlertsView::new(file.rules.clone()));
        let (_watcher, reloaded) = dashboard::alerts::reload::watch(&path, file.clone(), view.clone()).unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        let interval = std::time::Duration::from_millis(100);
        let notifier = Notifier::new(None, vec![], Policy::default());
        let engine = Engine::new(file.rules);
        let run = dashboard::alerts::run(engine, store, notifier, view.clone(), metrics, interval, Some(reloaded));
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
        let mut webhook = webhook(url);
        let mut engine = Engine::new(rule(""));
        set_items(store, &[(1, 20)]).await;
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0).await;
        assert!(received.try_recv().is_err(), "the first attempt failed");
        // Nothing changes, but the evaluations send it again: it arrives at the third attempt.
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 10 * SECOND).await;
        assert!(received.try_recv().is_err(), "the second attempt failed");
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 20 * SECOND).await;
        let firing = received.recv().await.unwrap();
        assert_eq!(
            (firing["status"].as_str(), firing["alerts"][0]["startsAt"].as_str()),
            (Some("firing"), Some("2026-01-01T00:00:00.000000Z"))
        );
        // Delivered: not sent again.
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 30 * SECOND).await;
        assert!(received.try_recv().is_err(), "sent once it arrived");
    });
}

#[test]
fn a_notification_is_given_up_after_its_last_attempt_and_a_newer_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let attempts = dashboard::alerts::contact_points::MAX_ATTEMPTS as usize;
        // Fails every attempt of the firing one, then the resolve's first attempt passes.
        let (url, mut received) = receiver_failing(attempts).await;
        let mut webhook = webhook(url);
        let mut engine = Engine::new(rule(""));
        set_items(store, &[(1, 20)]).await;
        for k in 0..attempts as i64 + 2 {
            evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + k * 10 * SECOND).await;
        }
        assert!(received.try_recv().is_err(), "given up after {attempts} attempts, not sent for ever");
        set_items(store, &[(1, 1)]).await;
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 100 * SECOND).await;
        assert_eq!(received.recv().await.unwrap()["status"], "resolved");
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 110 * SECOND).await;
        assert!(received.try_recv().is_err(), "nothing older comes after the resolve");
    });
}

#[test]
fn a_silence_leaves_the_instances_it_matches_out_of_their_groups_notifications() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let mut webhook = webhook(url);
        let mut engine = Engine::new(rule("per_group = true"));
        // Item 7 is silenced for a minute from T0; item 8 is not. Both are in the
        // group of rule `high`.
        let silence = store::Silence {
            id: "s1".into(),
            matchers: [("alertname".to_string(), "high".to_string()), ("item_id".to_string(), "7".to_string())].into(),
            comment: "maintenance".into(),
            created_at: store::iso_micros(T0),
            ends_at: store::iso_micros(T0 + 60 * SECOND),
        };
        store.save_silence(&silence).await.unwrap();
        set_items(store, &[(7, 20), (8, 20)]).await;
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + SECOND).await;
        assert_eq!(states(&engine), [("item_id=7".to_string(), "firing"), ("item_id=8".to_string(), "firing")]);
        let notified = received.recv().await.unwrap();
        assert_eq!(items(&notified), [("firing", "8")], "only the instance not silenced");
        // Still silenced: nothing new to say.
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 30 * SECOND).await;
        assert!(received.try_recv().is_err(), "item 7 is silenced");
        // The silence ends while item 7 still fires: its group tells it now.
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 61 * SECOND).await;
        assert_eq!(items(&received.recv().await.unwrap()), [("firing", "7"), ("firing", "8")]);
        set_items(store, &[(7, 1), (8, 20)]).await;
        evaluate_once(&mut engine, store, Some(&mut webhook), &view, &metrics, T0 + 70 * SECOND).await;
        let resolved = received.recv().await.unwrap();
        assert_eq!(items(&resolved), [("firing", "8"), ("resolved", "7")]);
        assert_eq!(resolved["status"], "firing", "a group with firing alerts is firing");
    });
}

/// (status, item_id) of each alert of a webhook notification.
fn items(notification: &serde_json::Value) -> Vec<(&str, &str)> {
    let alerts = notification["alerts"].as_array().unwrap();
    alerts.iter().map(|a| (a["status"].as_str().unwrap(), a["labels"]["item_id"].as_str().unwrap())).collect()
}

/// Two rules on `p`: `high` (per group) and `low` (whole result), with `extra` after each.
fn two_rules(high: &str, low: &str) -> String {
    format!(
        "[[rule]]\nname = \"high\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 10\nper_group = true\n{high}\n\
         [[rule]]\nname = \"low\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"below\"\nthreshold = 100\n{low}\n"
    )
}

#[test]
fn instances_of_a_group_that_fire_within_its_wait_and_interval_arrive_in_one_notification() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        // Grafana's default policy: group by alert name, wait 30 s, interval 5 min.
        let mut notifier = Notifier::new(Some(url), vec![], Policy::default());
        let mut engine = Engine::new(rule("per_group = true"));
        let mut at = async |items: &[(i64, i64)], seconds: i64| {
            set_items(store, items).await;
            evaluate_once(&mut engine, store, Some(&mut notifier), &view, &metrics, T0 + seconds * SECOND).await;
        };
        at(&[(7, 20), (8, 1)], 0).await;
        at(&[(7, 20), (8, 20)], 10).await;
        assert!(received.try_recv().is_err(), "the group waits 30 s for more alerts");
        at(&[(7, 20), (8, 20)], 30).await;
        let first = received.recv().await.unwrap();
        assert_eq!(items(&first), [("firing", "7"), ("firing", "8")], "one notification, both alerts");
        assert_eq!(first["groupKey"], r#"default:{alertname="high"}"#);
        assert_eq!(first["groupLabels"], serde_json::json!({"alertname": "high"}));
        assert_eq!(
            first["commonLabels"],
            serde_json::json!({"alertname": "high", "pipeline": "p", "severity": "warning"})
        );
        assert_eq!(first["title"], "[FIRING:2] high (p warning)");
        assert_eq!(first["receiver"], "default");
        assert_eq!(first["alerts"][0]["startsAt"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(first["alerts"][1]["startsAt"], "2026-01-01T00:00:10.000000Z");
        assert!(first["message"].as_str().unwrap().contains("high item_id=8 on p: 20 (warning)"), "{first}");

        // A third fires and the first resolves within the group interval (5 min from
        // the notification): both are told together when it has passed.
        at(&[(7, 20), (8, 20), (9, 50)], 60).await;
        at(&[(7, 1), (8, 20), (9, 50)], 200).await;
        at(&[(7, 1), (8, 20), (9, 50)], 329).await;
        assert!(received.try_recv().is_err(), "changes wait for the group interval");
        at(&[(7, 1), (8, 20), (9, 50)], 330).await;
        let second = received.recv().await.unwrap();
        assert_eq!(items(&second), [("firing", "8"), ("firing", "9"), ("resolved", "7")]);
        assert_eq!(second["title"], "[FIRING:2] high (p warning)");
        assert_eq!(second["alerts"][2]["endsAt"], "2026-01-01T00:03:20.000000Z", "resolved when it was seen");
        assert!(received.try_recv().is_err());
    });
}

#[test]
fn a_group_still_firing_is_sent_again_after_the_repeat_interval_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let policy = Policy { repeat_interval_seconds: 2.0, ..at_once() };
        let mut notifier = Notifier::new(Some(url), vec![], policy);
        let mut engine = Engine::new(rule(""));
        set_items(store, &[(1, 20)]).await;
        // What arrives after an evaluation at T0 + `millis` ms: statuses.
        let mut at = async |millis: i64| {
            let now = T0 + millis * SECOND / 1000;
            evaluate_once(&mut engine, store, Some(&mut notifier), &view, &metrics, now).await;
            let mut statuses = Vec::new();
            while let Ok(n) = received.try_recv() {
                assert_eq!(n["alerts"][0]["startsAt"], "2026-01-01T00:00:00.000000Z", "the same alert");
                statuses.push(n["status"].as_str().unwrap().to_string());
            }
            statuses
        };
        assert_eq!(at(0).await, ["firing"]);
        assert!(at(1_000).await.is_empty());
        assert!(at(1_999).await.is_empty(), "not before the repeat interval");
        assert_eq!(at(2_000).await, ["firing"], "repeated");
        assert!(at(3_000).await.is_empty());
        assert_eq!(at(4_100).await, ["firing"], "repeated again, 2 s after the last");
        set_items(store, &[(1, 1)]).await;
        assert_eq!(at(5_000).await, ["resolved"]);
        assert!(at(9_000).await.is_empty(), "a resolved group is not repeated");
    });
}

#[test]
fn the_running_alerts_send_a_groups_wait_and_repeats_on_time_between_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::server_runtime();
    runtime.block_on(async {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(sqlite(&dir).await);
        set_items(store.as_ref(), &[(1, 20)]).await;
        let (url, mut received) = receiver().await;
        let file = rules::parse_file(
            "[policy]\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\nrepeat_interval = \"1s\"\n\
             [[rule]]\nname = \"high\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 10\n",
            "alerts.toml",
        )
        .unwrap();
        let notifier = Notifier::new(Some(url), file.contact_points, file.policy);
        let view = std::sync::Arc::new(AlertsView::new(file.rules.clone()));
        // One evaluation (at the start), the next in an hour: what arrives is sent by
        // the policy's own timing.
        let hour = std::time::Duration::from_secs(3600);
        let metrics = std::sync::Arc::new(Metrics::new());
        tokio::spawn(dashboard::alerts::run(Engine::new(file.rules), store, notifier, view, metrics, hour, None));
        let started = std::time::Instant::now();
        let next = async |received: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>| {
            let wait = std::time::Duration::from_secs(20);
            tokio::time::timeout(wait, received.recv()).await.expect("a notification within 20 s").unwrap()
        };
        let first = next(&mut received).await;
        let waited = started.elapsed();
        assert_eq!(items_of(&first), [("firing", "high")]);
        assert!(waited >= std::time::Duration::from_millis(900), "the group waited 1 s: {waited:?}");
        let second = next(&mut received).await;
        assert_eq!(items_of(&second), [("firing", "high")], "repeated while it fires");
        assert_eq!(second["alerts"][0]["startsAt"], first["alerts"][0]["startsAt"]);
    });
}

/// (status, alertname) of each alert of a webhook notification.
fn items_of(notification: &serde_json::Value) -> Vec<(&str, &str)> {
    let alerts = notification["alerts"].as_array().unwrap();
    alerts.iter().map(|a| (a["status"].as_str().unwrap(), a["labels"]["alertname"].as_str().unwrap())).collect()
}

#[test]
fn a_slack_contact_point_receives_one_message_per_group_in_slacks_shape() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (url, mut received) = receiver().await;
        let file = rules::parse_file(
            &format!(
                "[[contact_point]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"{url}\"\n\
                 [policy]\ncontact_point = \"ops\"\ngroup_wait = 0\ngroup_interval = 0\n{}",
                two_rules("severity = \"critical\"", "")
            ),
            "alerts.toml",
        )
        .unwrap();
        let mut notifier = Notifier::new(None, file.contact_points, file.policy);
        let mut engine = Engine::new(file.rules);
        set_items(store, &[(7, 42), (8, 50)]).await;
        evaluate_once(&mut engine, store, Some(&mut notifier), &view, &metrics, T0).await;
        // One message per group: `high` (two alerts) and `low` (one).
        let mut messages = [received.recv().await.unwrap(), received.recv().await.unwrap()];
        assert!(received.try_recv().is_err());
        // `high`'s first.
        messages.sort_by_key(|m| !m["text"].as_str().unwrap().contains("high"));
        let high = &messages[0];
        assert_eq!(high["text"], "[FIRING:2] high (p critical)");
        let blocks = high["blocks"].as_array().unwrap();
        assert_eq!(blocks[0], serde_json::json!({"type": "header", "text": {"type": "plain_text", "text": "[FIRING:2] high (p critical)"}}));
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        let section = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(section.starts_with("*Firing*\n• high item_id=7 on p: 42 (critical), since 2026-01-01T00:00:00"), "{section}");
        assert!(section.contains("\n• high item_id=8 on p: 50 (critical)"), "{section}");
        assert_eq!(blocks.last().unwrap()["type"], "context");
        assert_eq!(blocks.last().unwrap()["elements"][0]["text"], "group alertname=high");
        assert_eq!(messages[1]["text"], "[FIRING:1] low (p warning)");
        assert!(high.get("alerts").is_none(), "Slack's shape, not the webhook's");

        set_items(store, &[(7, 42), (8, 1)]).await;
        evaluate_once(&mut engine, store, Some(&mut notifier), &view, &metrics, T0 + 10 * SECOND).await;
        let resolved = received.recv().await.unwrap();
        assert_eq!(resolved["text"], "[FIRING:1] high (p critical)");
        let sections: Vec<&str> = resolved["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "section")
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(sections.len(), 2, "{resolved}");
        assert!(sections[0].starts_with("*Firing*\n• high item_id=7"), "{sections:?}");
        assert!(sections[1].starts_with("*Resolved*\n• high item_id=8 on p: 1 (critical), resolved 2026-01-01T00:00:10"), "{sections:?}");
    });
}

#[test]
fn each_rule_goes_to_its_contact_point_and_the_others_to_the_policys() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = sqlite(&dir).await;
        let (store, view, metrics) = (store.as_ref(), AlertsView::default(), Metrics::new());
        let (ops_url, mut ops) = receiver().await;
        let (default_url, mut default) = receiver().await;
        let file = rules::parse_file(
            &format!(
                "[[contact_point]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{ops_url}\"\n\
                 [policy]\ngroup_wait = 0\ngroup_interval = 0\n{}",
                two_rules("contact_point = \"ops\"", "")
            ),
            "alerts.toml",
        )
        .unwrap();
        let mut notifier = Notifier::new(Some(default_url), file.contact_points, file.policy);
        let names: Vec<&str> = notifier.contact_points().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["default", "ops"]);
        let mut engine = Engine::new(file.rules);
        set_items(store, &[(7, 42)]).await;
        evaluate_once(&mut engine, store, Some(&mut notifier), &view, &metrics, T0).await;
        let to_ops = ops.recv().await.unwrap();
        assert_eq!((to_ops["receiver"].as_str(), items_of(&to_ops)), (Some("ops"), vec![("firing", "high")]));
        assert_eq!(to_ops["groupKey"], r#"ops:{alertname="high"}"#);
        let to_default = default.recv().await.unwrap();
        assert_eq!(
            (to_default["receiver"].as_str(), items_of(&to_default)),
            (Some("default"), vec![("firing", "low")])
        );
        assert!(ops.try_recv().is_err() && default.try_recv().is_err(), "each to its own");
    });
}

#[test]
fn contact_points_and_the_policy_are_on_the_alerts_page_and_api_without_their_urls() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(sqlite(&dir).await);
        let file = rules::parse_file(
            &format!(
                "[[contact_point]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/secret-one\"\n\
                 [policy]\ngroup_by = [\"alertname\", \"pipeline\"]\nrepeat_interval = \"1h30m\"\n{}",
                two_rules("contact_point = \"ops\"", "")
            ),
            "alerts.toml",
        )
        .unwrap();
        let notifier = Notifier::new(Some("http://127.0.0.1:1/hook?token=secret-two".into()), file.contact_points, file.policy);
        let view = std::sync::Arc::new(AlertsView::new(file.rules));
        view.set_notifications(notifier.contact_points().to_vec(), notifier.policy().clone());
        let (url, _stop) = support::serve(support::state(store, view)).await;
        let api: serde_json::Value = reqwest::get(format!("{url}/api/alerts")).await.unwrap().json().await.unwrap();
        assert_eq!(
            api["contact_points"],
            serde_json::json!([
                {"name": "default", "kind": "webhook", "url_from": "--webhook"},
                {"name": "ops", "kind": "slack", "url_from": "url"},
            ])
        );
        assert_eq!(api["policy"]["group_by"], serde_json::json!(["alertname", "pipeline"]));
        assert_eq!(api["policy"]["repeat_interval_seconds"], 5400.0);
        assert_eq!(api["rules"][0]["contact_point"], "ops");
        let page = reqwest::get(format!("{url}/alerts")).await.unwrap().text().await.unwrap();
        assert!(page.contains("<tr data-contact-point=\"ops\"><td>ops</td><td>slack</td><td>url</td><td>high</td></tr>"), "{page}");
        assert!(page.contains("<tr data-contact-point=\"default\"><td>default</td><td>webhook</td><td>--webhook</td><td>low</td></tr>"), "{page}");
        assert!(page.contains("every 1h30m (repeat interval)"), "{page}");
        for text in [api.to_string(), page] {
            assert!(!text.contains("secret") && !text.contains("hooks.slack.com"), "a URL shows: {text}");
        }
    });
}
