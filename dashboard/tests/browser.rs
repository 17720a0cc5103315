//! The pages in a real headless browser (Debian's `chromium`, driven over the
//! DevTools protocol): they render with non-empty charts, an alert that starts firing
//! appears on the open overview without a reload, Qlik targets appear and change on
//! the open pages without a reload, and markup from the data never runs; behind
//! credentials, the browser's login prompt comes up, a cancelled one shows a 401 and no
//! data, and once logged in the pages render and refresh live; the overview draws each
//! pipeline's health over the last hour and day. Screenshots go to
//! `target/test-artifacts/dashboard/`.

mod support;

use std::sync::Arc;

use dashboard::alerts::{AlertsView, Engine, evaluate_once, rules};
use dashboard::metrics::Metrics;
use serde_json::json;
use store::{
    ColumnType, PipelineStatus, QlikTargetStatus, RejectedRecord, ResultColumn, ResultDelta, ResultRow, Store, Value,
};
use support::{Browser, serve, server_runtime, sqlite_store, state};

const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;
/// A value that would run script if it were ever inserted as markup.
const HOSTILE: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=1</script>";

fn columns() -> Vec<ResultColumn> {
    vec![
        ResultColumn { name: "window".into(), column_type: ColumnType::Window, role: None },
        ResultColumn { name: "interaction_type".into(), column_type: ColumnType::Text, role: None },
        ResultColumn { name: "interaction_count".into(), column_type: ColumnType::Integer, role: None },
    ]
}

/// 12 five-minute windows × 3 types (one named with markup); the latest window's
/// counts are `latest`.
async fn write(store: &dyn Store, latest: i64) {
    let rows = (0..12)
        .flat_map(|w| {
            ["click", "view", HOSTILE].into_iter().map(move |t| ResultRow {
                id: format!("{w:02}-{t}"),
                values: vec![
                    Value::Struct(vec![
                        ("start".into(), Value::Timestamp(T0 + w * 5 * MINUTE)),
                        ("end".into(), Value::Timestamp(T0 + (w + 1) * 5 * MINUTE)),
                    ]),
                    Value::Text(t.into()),
                    Value::Integer(if w == 11 { latest } else { w + 1 }),
                ],
            })
        })
        .collect();
    let status = PipelineStatus {
        name: "per_window".into(),
        state: "running".into(),
        events_in: 100,
        events_ok: 99,
        events_bad: 1,
        ..Default::default()
    };
    let bad = [RejectedRecord { source_offset: "f:9".into(), raw: HOSTILE.into(), reason: "not JSON".into() }];
    store
        .write_batch("per_window", &columns(), &ResultDelta { upserts: rows, deletes: vec![] }, &status, &bad, &[])
        .await
        .unwrap();
}

/// A Qlik target of `per_window`.
fn qlik_target(app: &str, state: &str, last_error: Option<&str>) -> QlikTargetStatus {
    QlikTargetStatus {
        pipeline: "per_window".into(),
        target: format!("ws://qlik:9076/app/{app}"),
        table: "per_window".into(),
        state: state.into(),
        reloads: 2,
        last_reload_at: Some("2026-01-01T01:00:00.000000Z".into()),
        last_reload_seconds: Some(1.25),
        last_reload_rows: 36,
        last_error: last_error.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn pages_render_charts_alerts_appear_live_and_markup_never_runs() {
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 5).await;
        let text = "[[rule]]\nname = \"busy\"\npipeline = \"per_window\"\nvalue = \"interaction_count\"\ncondition = \"above\"\nthreshold = 50\n";
        let rules = rules::parse(text, "alerts.toml").unwrap();
        let alerts = Arc::new(AlertsView::new(rules.clone()));
        let mut engine = Engine::new(rules);
        evaluate_once(&mut engine, store.as_ref(), None, &alerts, &Metrics::new(), T0).await;
        let (url, _stop) = serve(state(store.clone(), alerts.clone())).await;
        let mut browser = Browser::start().await;

        // Overview: no alert yet. Mark the page: a reload would forget the mark.
        browser.goto(&format!("{url}/")).await;
        assert_eq!(browser.eval("document.getElementById('firing').hidden").await, true);
        browser.eval("window.__marker = 'no reload'").await;
        // The latest window crosses the threshold; the evaluation fires the rule.
        write(store.as_ref(), 80).await;
        evaluate_once(&mut engine, store.as_ref(), None, &alerts, &Metrics::new(), T0 + MINUTE).await;
        browser.wait_for("!document.getElementById('firing').hidden && document.getElementById('firing-list').textContent.includes('busy')").await;
        assert_eq!(browser.eval("window.__marker").await, "no reload", "the alert appeared without a reload");
        browser.screenshot("overview-firing").await;

        // Pipeline page: a chart (a line per type, the rule's threshold), table filled.
        browser.goto(&format!("{url}/pipelines/per_window")).await;
        browser.wait_for("document.querySelectorAll('#charts figure.chart canvas').length === 1").await;
        let legend = "[...document.querySelectorAll('#charts .u-legend .u-series')].map(s => s.querySelector('.u-label').textContent)";
        assert_eq!(browser.eval(legend).await, json!([HOSTILE, "click", "view"]), "a line per type");
        let thresholds = "window.dashboardCharts.get('interaction_count').signature.includes('busy50')";
        assert_eq!(browser.eval(thresholds).await, true, "the rule's threshold is drawn");
        // The rule's transition (evaluated at 00:01) is marked where it happened, and
        // named under the cursor there.
        let chart = "window.dashboardCharts.get('interaction_count')";
        let annotations = format!("{chart}.holder.c.annotations.map(a => [a.at, a.text])");
        assert_eq!(browser.eval(&annotations).await, json!([[1_767_225_660_i64, "busy: normal → firing"]]));
        let at = browser
            .eval(&format!("(() => {{ const p = {chart}.plot; const r = p.over.getBoundingClientRect();
                return [r.left + p.valToPos(1767225660, 'x'), r.top + r.height / 2]; }})()"))
            .await;
        for x in [at[0].as_f64().unwrap() - 3.0, at[0].as_f64().unwrap()] {
            let params = json!({"type": "mouseMoved", "x": x, "y": at[1], "button": "none", "buttons": 0});
            browser.call("Input.dispatchMouseEvent", params).await;
        }
        browser.wait_for("document.querySelector('#charts .tooltip .annotation')?.textContent === 'busy: normal → firing (2026-01-01 00:01:00)'").await;
        browser.screenshot("chart-annotation").await;
        assert_eq!(browser.eval("document.querySelectorAll('#result tbody tr').length").await, 36);
        // The hostile category is text in the table and the legend.
        browser.wait_for(&format!("document.getElementById('result').innerText.includes({HOSTILE:?})")).await;
        assert_eq!(browser.eval("document.querySelectorAll('#result img, #charts img, script:not([src])').length").await, 0);
        browser.screenshot("pipeline").await;
        // `_id` is hidden until asked for; the CSV export holds what the table shows.
        let first_cell = "getComputedStyle(document.querySelector('#result tbody td')).display";
        assert_eq!(browser.eval(first_cell).await, "none", "_id hidden by default");
        let shown = browser
            .eval("[...document.querySelectorAll('#result tbody tr')].map(tr => [...tr.cells].slice(1).map(td => td.textContent))")
            .await;
        let shown: Vec<Vec<String>> = serde_json::from_value(shown).unwrap();
        let text = browser.eval("fetch(document.getElementById('csv').href).then(r => r.text())").await;
        let mut reader = csv::Reader::from_reader(text.as_str().unwrap().as_bytes());
        let exported: Vec<Vec<String>> =
            reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
        assert_eq!(exported, shown, "the CSV holds the table's rows, markup and quotes included");
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["window", "interaction_type", "interaction_count"]);
        browser.eval("document.getElementById('show-id').click()").await;
        assert_ne!(browser.eval(first_cell).await, "none", "_id shown when ticked");
        assert_eq!(browser.eval("document.getElementById('csv').href.endsWith('&id=true')").await, true);
        browser.screenshot("pipeline-with-id").await;
        // The time range reads as 24-hour UTC, whatever the browser's locale.
        let from = "document.querySelector('input[name=from]')";
        assert_eq!(browser.eval(&format!("{from}.type")).await, "text");
        assert_eq!(browser.eval(&format!("/^\\d{{4}}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d$/.test({from}.value)")).await, true);

        // Qlik targets: the section appears with the first one and follows their
        // states, without a reload; an error that is markup is text.
        assert_eq!(browser.eval("document.getElementById('qlik')").await, serde_json::Value::Null);
        browser.eval("window.__marker = 'no reload'").await;
        store.write_qlik_status(&qlik_target("sales", "up_to_date", None)).await.unwrap();
        browser.wait_for("document.querySelectorAll('#qlik tbody tr').length === 1").await;
        assert_eq!(
            browser.eval("document.querySelector('#qlik [data-field=last_reload]').textContent").await,
            "2026-01-01T01:00:00.000000Z · 1.25 s · 36 rows"
        );
        store.write_qlik_status(&qlik_target("ops", "error", Some(HOSTILE))).await.unwrap();
        browser.wait_for("document.querySelectorAll('#qlik tbody tr').length === 2").await;
        let error = "document.querySelector('#qlik tbody tr [data-field=last_error]').textContent";
        assert_eq!(browser.eval(error).await, HOSTILE);
        assert_eq!(browser.eval("document.querySelector('#qlik tbody tr .state').className").await, "state state-error");
        assert_eq!(browser.eval("document.querySelectorAll('#qlik img, script:not([src])').length").await, 0);
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
        assert_eq!(browser.eval("window.__marker").await, "no reload", "the targets appeared without a reload");
        browser.screenshot("pipeline-qlik").await;

        // The page's own state, counters and error follow the status, without a reload.
        let failing = PipelineStatus {
            name: "per_window".into(),
            result_table: "per_window".into(),
            state: "retrying".into(),
            events_in: 9876,
            events_bad: 5,
            last_error: Some(HOSTILE.into()),
            ..Default::default()
        };
        let failing = PipelineStatus { watermark: Some("2026-01-01T00:58:00.000000Z".into()), ..failing };
        store.write_status(&failing).await.unwrap();
        browser.wait_for("document.querySelector('#counters [data-field=events_in]').textContent === '9876'").await;
        assert_eq!(browser.eval("document.querySelector('#counters [data-field=events_bad]').textContent").await, "5");
        assert_eq!(browser.eval("document.getElementById('state').className").await, "state state-retrying");
        assert_eq!(browser.eval("document.getElementById('last-error').textContent").await, HOSTILE);
        assert_eq!(browser.eval("document.getElementById('last-error').hidden").await, false);
        let watermark = "document.querySelector('#counters [data-field=watermark]').textContent";
        assert_eq!(browser.eval(watermark).await, "2026-01-01T00:58:00.000000Z");
        assert_eq!(browser.eval("document.getElementById('watermark-help').hidden").await, false, "explained");
        let help = "document.getElementById('watermark-help').textContent.includes('allowed delay')";
        assert_eq!(browser.eval(help).await, true);
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
        assert_eq!(browser.eval("window.__marker").await, "no reload", "the counters followed without a reload");
        browser.screenshot("pipeline-status-live").await;

        // The overview's indicator follows the worst state.
        browser.goto(&format!("{url}/")).await;
        let indicator = "document.querySelector('[data-field=qlik]')";
        assert_eq!(browser.eval(&format!("{indicator}.textContent")).await, "Qlik: 2 targets, 1 error");
        browser.eval("window.__marker = 'no reload'").await;
        store.write_qlik_status(&qlik_target("ops", "reloading", None)).await.unwrap();
        browser.wait_for(&format!("{indicator}.textContent === 'Qlik: 2 targets, 1 reloading'")).await;
        assert_eq!(browser.eval(&format!("{indicator}.className")).await, "state state-reloading");
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        browser.screenshot("overview-qlik").await;

        // Bad records: the record's markup shows as text.
        browser.goto(&format!("{url}/pipelines/per_window/bad")).await;
        assert_eq!(browser.eval(&format!("document.body.innerText.includes({HOSTILE:?})")).await, true);
        browser.screenshot("bad-records").await;
        // New bad records appear without a reload, latest first, markup as text.
        browser.eval("window.__marker = 'no reload'").await;
        let more = [RejectedRecord { source_offset: "f:10".into(), raw: format!("{{{HOSTILE}"), reason: HOSTILE.into() }];
        let status = PipelineStatus { name: "per_window".into(), state: "running".into(), ..Default::default() };
        let none = ResultDelta { upserts: vec![], deletes: vec![] };
        store.write_batch("per_window", &columns(), &none, &status, &more, &[]).await.unwrap();
        browser.wait_for("document.querySelectorAll('table.bad tbody tr').length === 2").await;
        assert_eq!(browser.eval("document.querySelector('table.bad tbody td').textContent").await, "f:10", "f:10 is after f:9");
        assert_eq!(browser.eval("document.getElementById('bad-total').textContent").await, "2 bad records.");
        assert_eq!(browser.eval("document.querySelectorAll('table.bad img, script:not([src])').length").await, 0);
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        browser.screenshot("bad-records-live").await;
        // Nothing from the data ran on any page.
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
        browser.goto(&format!("{url}/alerts")).await;
        assert_eq!(browser.eval("document.body.innerText.includes('normal → firing')").await, true);
        browser.screenshot("alerts").await;
        // A silence made on the page covers the firing instance; expired, it no longer does.
        let form = "document.getElementById('new-silence')";
        browser.eval(&format!("{form}.matchers.value = 'alertname=busy'; {form}.comment.value = 'deploy'")).await;
        browser.navigate_by(&format!("{form}.requestSubmit()"), "document.querySelectorAll('#silences tbody tr').length === 1").await;
        let row = "document.querySelector('#silences tbody tr')";
        assert_eq!(browser.eval(&format!("{row}.innerText.includes('alertname=busy') && {row}.innerText.includes('active')")).await, true);
        assert_eq!(browser.eval("document.querySelector('#alert-instances .state-silenced')?.textContent").await, "silenced");
        browser.screenshot("alerts-silenced").await;
        browser.navigate_by("document.querySelector('#silences button.expire').click()", "document.querySelector('#silences tbody tr .state-expired') !== null").await;
        assert_eq!(browser.eval("document.querySelector('#alert-instances .state-silenced')").await, serde_json::Value::Null);

        // A pipeline that failed before writing a result: its page has its error and
        // SQL, and follows its status too.
        let broken = PipelineStatus {
            name: "broken".into(),
            result_table: "broken".into(),
            state: "failed".into(),
            last_error: Some("sql/broken.sql: Schema error: No field named nope".into()),
            sql_text: Some("SELECT nope FROM SOURCE".into()),
            ..Default::default()
        };
        store.write_status(&broken).await.unwrap();
        browser.goto(&format!("{url}/pipelines/broken")).await;
        assert_eq!(browser.eval("document.getElementById('no-result') !== null").await, true);
        assert_eq!(browser.eval("document.body.innerText.includes('No field named nope')").await, true);
        assert_eq!(browser.eval("document.body.innerText.includes('SELECT nope FROM SOURCE')").await, true);
        browser.eval("window.__marker = 'no reload'").await;
        store.write_status(&PipelineStatus { events_in: 7, state: "starting".into(), ..broken }).await.unwrap();
        browser.wait_for("document.querySelector('#counters [data-field=events_in]').textContent === '7'").await;
        assert_eq!(browser.eval("document.getElementById('state').textContent").await, "starting");
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        browser.screenshot("pipeline-without-result").await;
    });
}

#[test]
fn the_overview_draws_each_pipelines_health_over_the_last_hour_and_day() {
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 5).await;
        // The last 50 minutes, sampled every 10 s as the dashboard does: the rate
        // climbs and falls, the lag builds up then drains, the watermark trails by
        // 5 s to 2 min; nothing for the 10 minutes before now (the dashboard was down).
        let now = chrono::Utc::now().timestamp_micros();
        let mut sampler = dashboard::health::Sampler::default();
        let (mut events, mut status) = (0u64, PipelineStatus { name: "per_window".into(), state: "running".into(), ..Default::default() });
        for i in 0..300i64 {
            let at = now - 3_600_000_000 + i * 10_000_000;
            let wave = ((i as f64) / 300.0 * std::f64::consts::PI).sin();
            events += (wave * 5_000.0) as u64 + 200;
            status.events_in = events;
            status.lag = (wave * wave * 40_000.0) as u64;
            status.watermark = Some(store::iso_micros(at - 5_000_000 - (wave * 115_000_000.0) as i64));
            store.write_status(&status).await.unwrap();
            sampler.sample(store.as_ref(), at).await.unwrap();
        }
        let (url, _stop) = serve(state(store.clone(), Arc::new(AlertsView::default()))).await;
        let mut browser = Browser::start().await;

        browser.goto(&format!("{url}/")).await;
        browser.wait_for("window.dashboardSparklines && window.dashboardSparklines.size === 3").await;
        let drawn = "[...document.querySelectorAll('tr[data-pipeline=per_window] .spark')].map(h => [h.dataset.spark, h.querySelectorAll('canvas').length, h.querySelector('canvas').width > 0])";
        assert_eq!(
            browser.eval(drawn).await,
            json!([["events_per_second", 1, true], ["lag", 1, true], ["watermark_delay_seconds", 1, true]])
        );
        // What each chart holds: a point per sample (the first has no rate), on an
        // hour's span ending now.
        let plotted = "(() => { const p = window.dashboardSparklines.get('per_window/lag'); return [p.data[0].length, p.data[1].filter(v => v != null).length, Math.round(p.scales.x.max - p.scales.x.min)]; })()";
        assert_eq!(browser.eval(plotted).await, json!([300, 300, 3600]));
        let rates = "window.dashboardSparklines.get('per_window/events_per_second').data[1].filter(v => v != null).length";
        assert_eq!(browser.eval(rates).await, 299);
        let title = "document.querySelector('[data-spark=lag]').title";
        assert!(browser.eval(title).await.as_str().unwrap().starts_with("lag over the last hour: latest "), "a tooltip says the values");
        browser.wait_for("document.querySelector('[data-field=watermark_delay]').textContent.endsWith(' min')").await;
        browser.screenshot("overview-health").await;

        // The last day: one point per minute.
        browser.navigate_by("document.querySelector('#health-range a[href=\"?health=24h\"]').click()", "window.dashboardSparklines && window.dashboardSparklines.size === 3").await;
        let minutes = "(() => { const p = window.dashboardSparklines.get('per_window/lag'); return [p.data[0].length >= 50 && p.data[0].length <= 52, Math.round(p.scales.x.max - p.scales.x.min)]; })()";
        assert_eq!(browser.eval(minutes).await, json!([true, 86400]));
        assert_eq!(browser.eval("document.querySelector('#health-range a.active').textContent").await, "the last day");
        browser.screenshot("overview-health-day").await;
    });
}

#[test]
fn the_overview_shows_each_pipelines_main_chart_or_value() {
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        // A windowed result (a line per type on its page), a single row, a keyed one.
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 5).await;
        let single = [ResultColumn { name: "average".into(), column_type: ColumnType::Real, role: None }];
        let totals = |average: f64| ResultDelta {
            upserts: vec![ResultRow { id: "all".into(), values: vec![Value::Real(average)] }],
            deletes: vec![],
        };
        let status = |name: &str| PipelineStatus { name: name.into(), state: "running".into(), ..Default::default() };
        store.prepare_result_table("totals", "totals", &single, true).await.unwrap();
        store.write_batch("totals", &single, &totals(42.25), &status("totals"), &[], &[]).await.unwrap();
        let keyed = [
            ResultColumn { name: "item".into(), column_type: ColumnType::Text, role: None },
            ResultColumn { name: "interaction_count".into(), column_type: ColumnType::Integer, role: None },
        ];
        let rows = (1..=8)
            .map(|i| ResultRow { id: format!("i{i}"), values: vec![Value::Text(format!("item {i}")), Value::Integer(i * 100)] })
            .collect();
        store.prepare_result_table("per_item", "per_item", &keyed, true).await.unwrap();
        let delta = ResultDelta { upserts: rows, deletes: vec![] };
        store.write_batch("per_item", &keyed, &delta, &status("per_item"), &[], &[]).await.unwrap();
        let (url, _stop) = serve(state(store.clone(), Arc::new(AlertsView::default()))).await;
        let mut browser = Browser::start().await;

        browser.goto(&format!("{url}/")).await;
        browser.wait_for("window.dashboardMainCharts && window.dashboardMainCharts.get('per_window')?.plot && window.dashboardMainCharts.has('per_item')").await;
        // The windowed result: one line, its value summed per window over the pipeline
        // page's default range (the last hour up to the minute after the latest window),
        // as the store sums it.
        let canvases = "document.querySelectorAll('tr[data-pipeline=per_window] td.main canvas').length";
        assert_eq!(browser.eval(canvases).await, 1);
        let plot = "window.dashboardMainCharts.get('per_window').plot";
        assert_eq!(browser.eval(&format!("{plot}.series.length")).await, 2, "the x axis and one line");
        let edge = T0 + 56 * MINUTE;
        let request = store::PageRequest {
            limit: 2_000,
            window_range: Some(store::WindowRange { column: "window".into(), from: edge - 60 * MINUTE, to: edge }),
            ..Default::default()
        };
        let mut sums =
            store.window_sums("per_window", "window", None, &["interaction_count".into()], &request).await.unwrap().unwrap();
        sums.sort_by_key(|s| s.start);
        let expected: Vec<Vec<Option<f64>>> = vec![
            sums.iter().map(|s| Some(s.start as f64 / 1e6)).collect(),
            sums.iter().map(|s| s.sums[0]).collect(),
        ];
        assert_eq!(sums.len(), 12);
        assert_eq!(sums[11].sums[0], Some(15.0), "three types × 5 in the latest window");
        let drawn: Vec<Vec<Option<f64>>> = serde_json::from_value(browser.eval(&format!("{plot}.data")).await).unwrap();
        assert_eq!(drawn, expected, "the store's sums per window");
        let caption = "document.querySelector('tr[data-pipeline=per_window] .main-caption').textContent";
        assert_eq!(browser.eval(caption).await, "interaction_count (sum per window): 15");
        // The single row: its value, at once and as it changes (no reload).
        let tile = "document.querySelector('tr[data-pipeline=totals] td.main [data-tile=\"totals/average\"]').textContent";
        assert_eq!(browser.eval(tile).await, "42.25");
        assert_eq!(browser.eval("document.querySelectorAll('tr[data-pipeline=totals] td.main canvas').length").await, 0);
        // The keyed result: its largest values as bars.
        let bars = "[...document.querySelectorAll('tr[data-pipeline=per_item] .main-bar .bar')].map(b => b.querySelector('.label').textContent + ' ' + b.querySelector('.value').textContent)";
        assert_eq!(browser.eval(bars).await, json!(["item 8 800", "item 7 700", "item 6 600", "item 5 500", "item 4 400"]));
        browser.screenshot("overview-main").await;

        // The refresh follows the data: the latest window grows, the row changes.
        browser.eval("window.__marker = 'no reload'").await;
        write(store.as_ref(), 100).await;
        store.write_batch("totals", &single, &totals(7.5), &status("totals"), &[], &[]).await.unwrap();
        browser.wait_for(&format!("{plot}.data[1][11] === 300")).await;
        browser.wait_for(&format!("{tile} === '7.5'")).await;
        assert_eq!(browser.eval(caption).await, "interaction_count (sum per window): 300");
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
        browser.screenshot("overview-main-live").await;
    });
}

/// Moves the mouse to window `w` (0 = the first shown) halfway up the chart of
/// `interaction_count`, with `buttons` held.
async fn point_at(browser: &mut Browser, w: usize, event: &str, buttons: u32) {
    let at = browser
        .eval(&format!(
            "(() => {{ const p = window.dashboardCharts.get('interaction_count').plot; const r = p.over.getBoundingClientRect();
               const x = Math.min(Math.max(p.valToPos(p.data[0][{w}], 'x'), 1), r.width - 2);
               return [r.left + x, r.top + r.height / 2]; }})()"
        ))
        .await;
    // A person's mouse arrives moving: a step before the point, then the point.
    if event == "mouseMoved" {
        let x = at[0].as_f64().unwrap() - 3.0;
        let params = json!({"type": event, "x": x, "y": at[1], "button": "none", "buttons": buttons});
        browser.call("Input.dispatchMouseEvent", params).await;
    }
    let params = json!({"type": event, "x": at[0], "y": at[1], "button": "left", "buttons": buttons, "clickCount": 1});
    browser.call("Input.dispatchMouseEvent", params).await;
}

/// A click, as a person makes it, in the middle of the element `selector` finds.
async fn click(browser: &mut Browser, selector: &str) {
    let at = browser
        .eval(&format!("(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()"))
        .await;
    for (event, buttons) in [("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)] {
        let params =
            json!({"type": event, "x": at[0], "y": at[1], "button": "left", "buttons": buttons, "clickCount": 1});
        browser.call("Input.dispatchMouseEvent", params).await;
    }
}

#[test]
fn charts_show_exact_values_on_hover_hide_lines_from_the_legend_zoom_on_drag_and_follow_relative_ranges() {
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 1234).await;
        let (url, _stop) = serve(state(store.clone(), Arc::new(AlertsView::default()))).await;
        let mut browser = Browser::start().await;
        browser.goto(&format!("{url}/pipelines/per_window")).await;
        browser.wait_for("window.dashboardCharts && window.dashboardCharts.has('interaction_count')").await;
        let plot = "window.dashboardCharts.get('interaction_count').plot";
        assert_eq!(browser.eval(&format!("{plot}.data[0].length")).await, 12, "the last hour: 12 windows");

        // Hovering the latest window shows its exact values and time.
        point_at(&mut browser, 11, "mouseMoved", 0).await;
        let tooltip = "document.querySelector('#charts .tooltip')";
        browser.wait_for(&format!("!{tooltip}.hidden")).await;
        let text = browser.eval(&format!("{tooltip}.innerText")).await;
        let text = text.as_str().unwrap();
        assert!(text.contains("2026-01-01 00:55:00 UTC"), "{text}");
        assert!(text.contains("click: 1,234") && text.contains("view: 1,234"), "{text}");
        browser.screenshot("chart-hover").await;

        // A click on a legend entry hides its line (and its value under the cursor).
        click(&mut browser, "#charts .u-legend .u-series:nth-child(3) th").await;
        assert_eq!(browser.eval(&format!("{plot}.series[3].label + ' ' + {plot}.series[3].show")).await, "view false");
        point_at(&mut browser, 10, "mouseMoved", 0).await;
        browser.wait_for(&format!("{tooltip}.innerText.includes('00:50:00')")).await;
        let text = browser.eval(&format!("{tooltip}.innerText")).await;
        assert!(!text.as_str().unwrap().contains("view:"), "{text}");
        click(&mut browser, "#charts .u-legend .u-series:nth-child(3) th").await;
        assert_eq!(browser.eval(&format!("{plot}.series[3].show")).await, true, "a second click shows it again");

        // Dragging from the third to the seventh window zooms into them; the zoom
        // stays while the data refreshes.
        point_at(&mut browser, 2, "mouseMoved", 0).await;
        point_at(&mut browser, 2, "mousePressed", 1).await;
        point_at(&mut browser, 4, "mouseMoved", 1).await;
        point_at(&mut browser, 6, "mouseMoved", 1).await;
        point_at(&mut browser, 6, "mouseReleased", 0).await;
        let range = format!("[{plot}.scales.x.min, {plot}.scales.x.max, {plot}.data[0][2], {plot}.data[0][6]]");
        let zoomed: Vec<f64> = serde_json::from_value(browser.eval(&range).await).unwrap();
        assert!((zoomed[0] - zoomed[2]).abs() < 1.0 && (zoomed[1] - zoomed[3]).abs() < 1.0, "{zoomed:?}");
        browser.screenshot("chart-zoomed").await;
        browser.eval("window.__marker = 'no reload'").await;
        write(store.as_ref(), 2000).await;
        browser.wait_for(&format!("{plot}.data[1][11] === 2000 || {plot}.data[2][11] === 2000")).await;
        let after: Vec<f64> = serde_json::from_value(browser.eval(&range).await).unwrap();
        assert_eq!(after[..2], zoomed[..2], "the zoom stays across refreshes");
        assert_eq!(browser.eval("window.__marker").await, "no reload");

        // The last 15 minutes: three windows, following the live edge as a new one comes.
        browser.eval("window.__previous_page = true").await;
        click(&mut browser, "#ranges a[data-range='15m']").await;
        let charted = "window.dashboardCharts && window.dashboardCharts.has('interaction_count')";
        browser.wait_for(&format!("!window.__previous_page && location.search.includes('range=15m') && {charted}")).await;
        assert_eq!(
            browser.eval(&format!("{plot}.data[0].map(x => timeText(x, 'UTC'))")).await,
            json!(["2026-01-01 00:45:00", "2026-01-01 00:50:00", "2026-01-01 00:55:00"])
        );
        assert_eq!(browser.eval("document.querySelectorAll('#result tbody tr').length").await, 9);
        assert_eq!(browser.eval("document.querySelector('#ranges a.active').dataset.range").await, "15m");
        let next = ResultRow {
            id: "12-click".into(),
            values: vec![
                Value::Struct(vec![
                    ("start".into(), Value::Timestamp(T0 + 60 * MINUTE)),
                    ("end".into(), Value::Timestamp(T0 + 65 * MINUTE)),
                ]),
                Value::Text("click".into()),
                Value::Integer(7),
            ],
        };
        let status = PipelineStatus { name: "per_window".into(), state: "running".into(), ..Default::default() };
        let delta = ResultDelta { upserts: vec![next], deletes: vec![] };
        store.write_batch("per_window", &columns(), &delta, &status, &[], &[]).await.unwrap();
        browser
            .wait_for(&format!("{plot}.data[0].length === 3 && timeText({plot}.data[0][2]) === '2026-01-01 01:00:00'"))
            .await;
        assert_eq!(browser.eval(&format!("timeText({plot}.data[0][0])")).await, "2026-01-01 00:50:00");
        let range =
            "document.querySelector('input[name=from]').value + ' ' + document.querySelector('input[name=to]').value";
        assert_eq!(browser.eval(range).await, "2026-01-01T00:46:00 2026-01-01T01:01:00", "the fields follow too");
        browser.screenshot("chart-last-15m").await;
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");

        // A column filter typed into its box (Enter applies it) narrows the table, the
        // chart and the CSV alike, and keeps the range.
        click(&mut browser, "input[name='where.interaction_type']").await;
        browser.eval("window.__previous_page = true").await;
        browser.call("Input.insertText", json!({"text": "VIE"})).await;
        for kind in ["keyDown", "keyUp"] {
            let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
            browser.call("Input.dispatchKeyEvent", key).await;
        }
        browser.wait_for(&format!("!window.__previous_page && location.search.includes('where.interaction_type=VIE') && {charted}")).await;
        assert_eq!(browser.eval("location.search.includes('range=15m')").await, true, "the range stays");
        let types = "[...document.querySelectorAll('#result tbody tr')].map(tr => tr.cells[2].textContent)";
        assert_eq!(browser.eval(types).await, json!(["view", "view"]), "00:50 and 00:55 (01:00 has only a click)");
        assert_eq!(browser.eval(&format!("{plot}.series.slice(1).map(s => s.label)")).await, json!(["view"]));
        let text = browser.eval("fetch(document.getElementById('csv').href).then(r => r.text())").await;
        assert_eq!(text.as_str().unwrap().lines().count(), 1 + 2, "the CSV holds what the table shows");
        browser.screenshot("table-filtered").await;

        // Times in another zone, picked in the header: the table, the range, the
        // axis, the tooltip and the header say Paris time (UTC+1 in January).
        let pick = "(() => { const s = document.getElementById('zone'); s.value = 'Europe/Paris'; s.dispatchEvent(new Event('change')); })()";
        browser.navigate_by(pick, &format!("document.body.dataset.zone === 'Europe/Paris' && {charted}")).await;
        assert_eq!(browser.eval("document.cookie").await, "tz=Europe%2FParis");
        let first = "document.querySelector('#result tbody td:nth-child(2)').textContent";
        assert_eq!(browser.eval(first).await, "2026-01-01 01:55:00 – 02:00:00", "00:55 UTC in Paris");
        assert_eq!(browser.eval("document.querySelector('input[name=to]').value").await, "2026-01-01T02:01:00");
        assert_eq!(browser.eval("document.getElementById('range-zone').textContent").await, "Europe/Paris");
        assert_eq!(browser.eval(&format!("{plot}.axes[0].label")).await, "window.start (Europe/Paris)");
        point_at(&mut browser, 1, "mouseMoved", 0).await;
        browser.wait_for(&format!("{tooltip}.innerText.includes('2026-01-01 01:55:00 Europe/Paris')")).await;
        assert_eq!(browser.eval("document.getElementById('last-updated').textContent.endsWith('Europe/Paris')").await, true);
        browser.screenshot("zone-paris").await;
        browser.eval("document.cookie = 'tz=; path=/; max-age=0'").await;

        // A keyed result: bars of its largest values, each named by its key on hover.
        let columns = [
            ResultColumn { name: "item".into(), column_type: ColumnType::Text, role: None },
            ResultColumn { name: "interaction_count".into(), column_type: ColumnType::Integer, role: None },
        ];
        store.prepare_result_table("per_item", "per_item", &columns, true).await.unwrap();
        let rows = (1..=5)
            .map(|i| ResultRow {
                id: format!("i{i}"),
                values: vec![Value::Text(format!("item {i}")), Value::Integer(i * 100)],
            })
            .collect();
        let status = PipelineStatus { name: "per_item".into(), state: "running".into(), ..Default::default() };
        let delta = ResultDelta { upserts: rows, deletes: vec![] };
        store.write_batch("per_item", &columns, &delta, &status, &[], &[]).await.unwrap();
        browser.goto(&format!("{url}/pipelines/per_item")).await;
        browser.wait_for("window.dashboardCharts && window.dashboardCharts.has('interaction_count')").await;
        point_at(&mut browser, 0, "mouseMoved", 0).await;
        browser.wait_for(&format!("{tooltip}.innerText.includes('item 5')")).await;
        let text = browser.eval(&format!("{tooltip}.innerText")).await;
        assert!(text.as_str().unwrap().contains("interaction_count: 500"), "the largest first: {text}");
        browser.screenshot("chart-keyed-bars").await;
    });
}

#[test]
fn behind_credentials_the_browser_prompts_shows_nothing_without_them_and_refreshes_with_them() {
    const USER: &str = "admin";
    const PASSWORD: &str = "p@ss: word";
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 5).await;
        let password = dashboard::auth::Secret::new(PASSWORD, "test").unwrap();
        let credentials = dashboard::auth::Credentials::new(USER, Some(password), None).unwrap().unwrap();
        let state = dashboard::AppState {
            access: Arc::new(dashboard::auth::Access::Protected(credentials)),
            ..state(store.clone(), Arc::new(AlertsView::default()))
        };
        let (url, _stop) = serve(state).await;
        let mut browser = Browser::start().await;

        // The browser's own prompt comes up (a basic-auth challenge of realm
        // "dashboard"); cancelled, the page is the 401 and shows no data.
        browser.answer_auth(None).await;
        browser.goto(&format!("{url}/pipelines/per_window")).await;
        let challenge = browser.auth_challenges.first().cloned().expect("the browser asked for a login");
        assert_eq!((challenge["scheme"].as_str(), challenge["realm"].as_str()), (Some("basic"), Some("dashboard")));
        assert_eq!(browser.eval("performance.getEntriesByType('navigation')[0].responseStatus").await, 401);
        let text = browser.eval("document.body.innerText").await;
        assert!(text.as_str().unwrap().contains("401 Unauthorized"), "{text}");
        for data in ["per_window", "interaction_count", "click", "running"] {
            assert!(!text.as_str().unwrap().contains(data), "{data} shown without credentials: {text}");
        }
        assert_eq!(browser.eval("document.querySelectorAll('table, svg, script').length").await, 0);
        // Its API neither (a script of another page trying it gets the 401).
        assert_eq!(browser.eval("fetch('/api/pipelines').then(r => r.status)").await, 401);
        browser.screenshot("login-cancelled").await;

        // Logged in: the pages render, their scripts and the API behind them answer.
        browser.answer_auth(Some((USER, PASSWORD))).await;
        browser.goto(&format!("{url}/")).await;
        assert!(!browser.auth_challenges.is_empty(), "the login was asked for and answered");
        assert_eq!(browser.eval("performance.getEntriesByType('navigation')[0].responseStatus").await, 200);
        let row = "document.querySelector('tr[data-pipeline=per_window] [data-field=events_in]')";
        assert_eq!(browser.eval(&format!("{row}.textContent")).await, "100");
        // Live refresh from the JSON API, no reload: the counter follows the store.
        browser.eval("window.__marker = 'no reload'").await;
        let status = PipelineStatus {
            name: "per_window".into(),
            state: "running".into(),
            events_in: 4321,
            ..Default::default()
        };
        store.write_status(&status).await.unwrap();
        browser.wait_for(&format!("{row}.textContent === '4321'")).await;
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        browser.screenshot("logged-in-overview").await;
        browser.goto(&format!("{url}/pipelines/per_window")).await;
        browser.wait_for("document.querySelectorAll('#charts figure.chart canvas').length > 0").await;
        assert_eq!(browser.eval("document.querySelectorAll('#result tbody tr').length").await, 36);
        assert_eq!(browser.eval("fetch('/api/pipelines').then(r => r.status)").await, 200);
        browser.screenshot("logged-in-pipeline").await;
        // One login for the whole visit: the browser sends it again by itself, with
        // every fetch of the live refresh and on the next page.
        assert_eq!(browser.auth_challenges.len(), 1, "{:?}", browser.auth_challenges);
    });
}

#[test]
fn a_panel_file_appears_without_restart_changes_with_its_edit_and_goes_with_its_deletion() {
    let runtime = server_runtime();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("panels");
    std::fs::create_dir(&folder).unwrap();
    runtime.block_on(async {
        let store = sqlite_store(dir.path()).await;
        store.prepare_result_table("per_window", "per_window", &columns(), true).await.unwrap();
        write(store.as_ref(), 5).await;
        let state = state(store.clone(), Arc::new(AlertsView::default()));
        let _watcher = dashboard::panels::watch(&folder, state.panels.clone()).unwrap();
        let (url, _stop) = serve(state).await;
        let mut browser = Browser::start().await;

        // No panel file: the overview is as without panels.
        browser.goto(&format!("{url}/")).await;
        browser.wait_for("window.dashboardMainCharts && window.dashboardMainCharts.get('per_window')?.plot").await;
        assert_eq!(browser.eval("document.getElementById('panels').hidden").await, true);
        browser.eval("window.__marker = 'no reload'").await;

        // A file is written: its panel appears, its filter applied (clicks only: one
        // line, 1…11 then the latest window's 5), its threshold drawn.
        let panel = "title = \"Clicks\"\npipeline = \"per_window\"\nkind = \"line\"\ncolumns = [\"interaction_count\"]\n\
                     filters = { interaction_type = \"click\" }\nthresholds = [{ value = 8, color = \"#8a5cc4\" }]\n";
        std::fs::write(folder.join("10-clicks.toml"), panel).unwrap();
        browser.wait_for("window.dashboardPanels.get('10-clicks.toml')?.plot").await;
        assert_eq!(browser.eval("document.getElementById('panels').hidden").await, false);
        let title = "document.querySelector('#panels figure[data-file=\"10-clicks.toml\"] .panel-title').textContent";
        assert_eq!(browser.eval(title).await, "Clicks");
        let plot = "window.dashboardPanels.get('10-clicks.toml').plot";
        assert_eq!(browser.eval(&format!("{plot}.series.map(s => s.label).slice(1)")).await, json!(["click"]));
        let expected: Vec<i64> = (1..=11).chain([5]).collect();
        assert_eq!(browser.eval(&format!("{plot}.data[1]")).await, json!(expected));
        let thresholds = "window.dashboardPanels.get('10-clicks.toml').holder.c.thresholds";
        assert_eq!(browser.eval(&format!("{thresholds}.map(t => [t.value, t.color])")).await, json!([[8, "#8a5cc4"]]));
        assert_eq!(browser.eval("document.querySelectorAll('#panels canvas').length > 0").await, true);
        browser.screenshot("panel-added").await;

        // On the pipeline's page too, above its automatic charts.
        browser.goto(&format!("{url}/pipelines/per_window")).await;
        browser.wait_for("window.dashboardPanels.get('10-clicks.toml')?.plot && window.dashboardCharts.size > 0").await;
        let above = "!!(document.getElementById('panels').compareDocumentPosition(document.getElementById('charts')) & Node.DOCUMENT_POSITION_FOLLOWING)";
        assert_eq!(browser.eval(above).await, true);
        browser.screenshot("panel-on-pipeline-page").await;

        // Edited into a single value of the views (the latest window's 5), and a broken
        // file beside it: its error shows, the good panel stays.
        browser.goto(&format!("{url}/")).await;
        browser.wait_for("window.dashboardPanels.get('10-clicks.toml')?.plot").await;
        browser.eval("window.__marker = 'no reload'").await;
        let edited = "title = \"Views, latest\"\npipeline = \"per_window\"\nkind = \"value\"\n\
                      filters = { interaction_type = \"view\" }\n";
        std::fs::write(folder.join("10-clicks.toml"), edited).unwrap();
        std::fs::write(folder.join("20-broken.toml"), "pipeline = \"per_window\"\nkind = \"pie\"\n").unwrap();
        let table = "title = \"Busy windows\"\npipeline = \"per_window\"\nkind = \"table\"\nrange = \"all\"\n\
                     filters = { interaction_count = \">10\" }\n";
        std::fs::write(folder.join("30-busy.toml"), table).unwrap();
        let value = "document.querySelector('#panels figure[data-file=\"10-clicks.toml\"] .panel-number')?.textContent";
        browser.wait_for(&format!("{value} === '5'")).await;
        assert_eq!(browser.eval(title).await, "Views, latest");
        // The table: the rows the filter keeps (the three types of the 11th window).
        let rows = "document.querySelector('#panels figure[data-file=\"30-busy.toml\"] .panel-body')?.dataset.rows";
        browser.wait_for(&format!("{rows} === '3'")).await;
        let cells = "[...document.querySelectorAll('#panels figure[data-file=\"30-busy.toml\"] tbody td:last-child')].map(c => c.textContent)";
        assert_eq!(browser.eval(cells).await, json!(["11", "11", "11"]));
        browser.wait_for("document.querySelectorAll('#panel-errors li').length === 1").await;
        let error = browser.eval("document.querySelector('#panel-errors li').textContent").await;
        assert!(error.as_str().unwrap().starts_with("20-broken.toml:2: unknown variant `pie`"), "{error}");
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        browser.screenshot("panel-edited-and-broken").await;

        // Deleted (and the broken one too): the section goes, the page stays as it was.
        std::fs::remove_file(folder.join("10-clicks.toml")).unwrap();
        std::fs::remove_file(folder.join("20-broken.toml")).unwrap();
        std::fs::remove_file(folder.join("30-busy.toml")).unwrap();
        browser.wait_for("document.getElementById('panels').hidden && window.dashboardPanels.size === 0").await;
        assert_eq!(browser.eval("document.querySelectorAll('#panels figure').length").await, 0);
        assert_eq!(browser.eval("window.__marker").await, "no reload");
        assert_eq!(browser.eval("typeof window.__xss").await, "undefined");
        browser.screenshot("panel-deleted").await;
    });
}
