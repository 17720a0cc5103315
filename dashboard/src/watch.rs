//! Files the dashboard reads while running (the alert rules file, the panels folder):
//! one watcher for both. A change to a file of interest is let settle (an editor's save
//! is several events, and some editors replace the file rather than write it), then
//! the owner reads its files again on a thread of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Serialize;

/// How long files are let settle after a change before they are read again.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches the directory `dir` (not its subdirectories); after changes to files for
/// which `wanted` holds, once they settle, calls `reload` on a thread named `name`.
/// Returns the watcher: dropping it stops the watching and the thread.
pub fn watch_dir(
    dir: &Path,
    name: &str,
    wanted: impl Fn(&Path) -> bool + Send + 'static,
    mut reload: impl FnMut() + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.kind.is_access() && event.paths.iter().any(|p| wanted(p)) {
            let _ = sender.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while receiver.recv().is_ok() {
                std::thread::sleep(SETTLE);
                while receiver.try_recv().is_ok() {}
                reload();
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}

/// The directory holding `file` (`.` for a bare file name).
pub fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file read while running that cannot be used: `<file>:<line>: <reason>` (the
/// rules file, a panel file).
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[error("{file}:{line}: {message}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The line (from 1) of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
