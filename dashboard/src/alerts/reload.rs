//! The rules file, watched: an edit that parses replaces the running rules (and
//! contact points and policy); one that
//! does not is reported on `/alerts` (and in the log) while the rules before it keep
//! running, as Grafana's file provisioning and Prometheus' rule reloads behave.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::{AlertsView, RulesFile, rules};

/// Watches `path` (through its directory: editors replace files rather than write them
/// in place). Returns the watcher, which must be kept, and the file as read after each
/// edit that parses.
pub fn watch(
    path: &Path,
    rules: RulesFile,
    view: Arc<AlertsView>,
) -> notify::Result<(notify::RecommendedWatcher, watch::Receiver<RulesFile>)> {
    let (sender, receiver) = watch::channel(rules);
    let file = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_os_string());
    let is_rules_file = move |p: &Path| p.file_name().map(|n| n.to_os_string()) == name;
    let reload = move || match rules::load_file(&file) {
        Ok(rules) => {
            if let Ok(mut error) = view.rules_error.write() {
                *error = None;
            }
            sender.send_if_modified(|current| {
                let changed = *current != rules;
                *current = rules;
                changed
            });
        }
        // A half-written file is read again at its next event.
        Err(e) => {
            tracing::warn!(error = %e, "the alert rules file's edit was not taken; the rules before it still run");
            if let Ok(mut error) = view.rules_error.write() {
                *error = Some(e.to_string());
            }
        }
    };
    let watcher = crate::watch::watch_dir(&crate::watch::directory_of(path), "rules-reload", is_rules_file, reload)?;
    Ok((watcher, receiver))
}
