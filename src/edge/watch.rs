//! Watching routes.toml: which file-system events concern the config file, and a debounce that
//! a busy folder cannot postpone. Other files' events are dropped where they arrive, unread.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{EventKind, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the file must be quiet before a burst of writes to it becomes one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest a burst of events about the file delays its reload, however long it lasts:
/// a file written without pause is still read at least this often.
pub const MAX_DELAY: Duration = Duration::from_millis(800);

/// How often a watch whose folder was replaced tries the new folder.
const REARM_EVERY: Duration = Duration::from_millis(100);

/// The Kubernetes ConfigMap layout: `routes.toml -> ..data/routes.toml`, and the kubelet
/// swaps the `..data` symlink to publish a new version.
const KUBERNETES_DATA: &str = "..data";

/// What an event means for the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Concern {
    /// Another file, or a read: nothing to do.
    None,
    /// The file itself (written, created, renamed onto, removed) or the `..data` link.
    File,
    /// The watched folder itself was moved or removed: the watch must be set up anew.
    Folder,
}

/// Classifies one event seen in `dir` for the config file named `name`.
pub fn concern(event: &notify::Event, dir: &Path, name: &OsStr) -> Concern {
    if matches!(event.kind, EventKind::Access(_)) {
        // Opening and closing it is what a reload does: reacting would reload in a loop.
        return Concern::None;
    }
    if event.need_rescan() {
        // The kernel dropped events: one of them may have been about the file.
        return Concern::File;
    }
    let mut concern = Concern::None;
    for path in &event.paths {
        if path == dir && matches!(event.kind, EventKind::Remove(_) | EventKind::Modify(_)) {
            return Concern::Folder;
        }
        if path
            .file_name()
            .is_some_and(|n| n == name || n == KUBERNETES_DATA)
        {
            concern = Concern::File;
        }
    }
    concern
}

/// The folder and name of the file `path` links to when it is a symlink into another folder
/// (configuration management often links `/etc/…` into a checkout). `None` for the Kubernetes
/// layout: its target lives under `dir` itself and changes by the `..data` swap seen there.
fn link_target(path: &Path, dir: &Path) -> Option<(PathBuf, OsString)> {
    if !std::fs::symlink_metadata(path)
        .ok()?
        .file_type()
        .is_symlink()
    {
        return None;
    }
    let real = std::fs::canonicalize(path).ok()?;
    let real_dir = real.parent()?;
    if real_dir.starts_with(std::fs::canonicalize(dir).ok()?) {
        return None;
    }
    Some((real_dir.to_path_buf(), real.file_name()?.to_owned()))
}

/// A watch on the config file's folder that passes on only the events about the file.
pub struct FileWatch {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    /// Where the file really is when it is a symlink into another folder: watched too.
    target: Option<(PathBuf, OsString)>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
    folder_replaced: Arc<AtomicBool>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    /// Watches the folder of `path`; fails when the folder cannot be watched.
    pub fn start(path: &Path) -> notify::Result<FileWatch> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path.file_name().map(OsStr::to_owned).unwrap_or_default();
        // One slot: a pending signal already stands for every event that comes after it.
        let (tx, rx) = mpsc::channel(1);
        let mut w = FileWatch {
            path: path.to_path_buf(),
            dir,
            name,
            target: None,
            tx,
            rx,
            folder_replaced: Arc::new(AtomicBool::new(false)),
            watcher: None,
        };
        w.arm()?;
        Ok(w)
    }

    fn arm(&mut self) -> notify::Result<()> {
        // The old watch (if any) goes first: it follows the replaced folder, not the path.
        self.watcher = None;
        self.target = link_target(&self.path, &self.dir);
        let mut places = vec![(self.dir.clone(), self.name.clone())];
        places.extend(self.target.clone());
        let tx = self.tx.clone();
        let replaced = self.folder_replaced.clone();
        let watched = places.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                let seen = watched.iter().map(|(dir, name)| concern(&event, dir, name));
                match seen.max_by_key(|c| *c as u8) {
                    None | Some(Concern::None) => return,
                    Some(Concern::Folder) => replaced.store(true, Ordering::SeqCst),
                    Some(Concern::File) => {}
                }
                // A full channel already holds a pending change: this event adds nothing.
                let _ = tx.try_send(());
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        if let Some((target_dir, _)) = &self.target
            && let Err(e) = watcher.watch(target_dir, notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %target_dir.display(), error = %e, "cannot watch the folder the config file links to; edits there need SIGHUP or POST /admin/reload");
        }
        self.watcher = Some(watcher);
        Ok(())
    }

    /// Resolves once the file changed: after the first event about it, when no other came for
    /// [`DEBOUNCE`], or [`MAX_DELAY`] after the first, whichever is sooner. When the folder
    /// itself was replaced, the watch is first set up again on the folder now at its path.
    pub async fn changed(&mut self) {
        if self.rx.recv().await.is_none() {
            // Never: `self` holds a sender.
            return std::future::pending().await;
        }
        let latest = Instant::now() + MAX_DELAY;
        loop {
            let deadline = (Instant::now() + DEBOUNCE).min(latest);
            if tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .is_err()
            {
                break;
            }
        }
        // A link onto the file may now point elsewhere: then the new target is watched.
        if self.folder_replaced.swap(false, Ordering::SeqCst)
            || link_target(&self.path, &self.dir) != self.target
        {
            self.rearm().await;
        }
    }

    /// Sets the watch up on whatever folder is at the path now, waiting for one to appear.
    async fn rearm(&mut self) {
        let mut said = false;
        loop {
            match self.arm() {
                Ok(()) => {
                    tracing::info!(dir = %self.dir.display(), "watching the config folder anew (it was replaced, or the file links elsewhere now)");
                    return;
                }
                Err(e) if !said => {
                    said = true;
                    tracing::warn!(dir = %self.dir.display(), error = %e, "the config folder is gone; waiting for it to come back (SIGHUP and POST /admin/reload still reload)");
                }
                Err(_) => {}
            }
            tokio::time::sleep(REARM_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths
            .iter()
            .fold(notify::Event::new(kind), |e, p| e.add_path(p.into()))
    }

    fn of(kind: EventKind, paths: &[&str]) -> Concern {
        concern(
            &event(kind, paths),
            Path::new("/etc/gw"),
            OsStr::new("routes.toml"),
        )
    }

    #[tokio::test]
    async fn a_file_written_without_pause_still_counts_as_changed_while_the_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, "").unwrap();
        let mut watch = FileWatch::start(&path).unwrap();
        let (writing, stop) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let writer = {
            let (path, writing, stop) = (path.clone(), writing.clone(), stop.clone());
            // Every 50 ms for 5 s: never quiet for DEBOUNCE.
            std::thread::spawn(move || {
                for n in 0..100 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::fs::write(&path, format!("# {n}\n")).unwrap();
                    std::thread::sleep(Duration::from_millis(50)); // the writer's pace
                }
                writing.store(false, Ordering::SeqCst);
            })
        };
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a change is seen");
        assert!(
            writing.load(Ordering::SeqCst),
            "the burst of writes did not postpone the change until it ended"
        );
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
    }

    #[test]
    fn only_the_file_the_data_link_and_the_folder_itself_concern_the_config() {
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(of(write, &["/etc/gw/routes.toml"]), Concern::File);
        assert_eq!(of(write, &["/etc/gw/gateway.log"]), Concern::None);
        assert_eq!(of(write, &["/etc/gw/journal.db-wal"]), Concern::None);
        assert_eq!(of(write, &["/etc/gw/routes.toml.tmp"]), Concern::None);
        assert_eq!(
            of(renamed, &["/etc/gw/routes.toml.tmp", "/etc/gw/routes.toml"]),
            Concern::File,
            "a rename onto the file"
        );
        assert_eq!(
            of(renamed, &["/etc/gw/..data_tmp", "/etc/gw/..data"]),
            Concern::File,
            "the kubelet's ..data swap"
        );
        assert_eq!(
            of(
                EventKind::Create(CreateKind::File),
                &["/etc/gw/routes.toml"]
            ),
            Concern::File
        );
        assert_eq!(
            of(EventKind::Remove(RemoveKind::Folder), &["/etc/gw"]),
            Concern::Folder
        );
        assert_eq!(
            of(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/etc/gw"]
            ),
            Concern::Folder
        );
        let read = EventKind::Access(notify::event::AccessKind::Open(
            notify::event::AccessMode::Any,
        ));
        assert_eq!(of(read, &["/etc/gw/routes.toml"]), Concern::None);
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(
            concern(&overflow, Path::new("/etc/gw"), OsStr::new("routes.toml")),
            Concern::File
        );
    }
}
