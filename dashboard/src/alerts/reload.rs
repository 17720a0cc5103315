//! The rules file, watched: an edit that parses replaces the running rules (and
//! contact points and policy); one that
//! does not is reported on `/alerts` (and in the log) while the rules before it keep
//! running, as Grafana's file provisioning and Prometheus' rule reloads behave.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
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
    let file: PathBuf = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() || !event.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name) {
            return;
        }
        match rules::load_file(&file) {
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
        }
    })?;
    let directory = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    Ok((watcher, receiver))
}
