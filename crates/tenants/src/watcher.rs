//! Hot reload: SIGHUP and a file poll.
//!
//! Polling rather than inotify because the file is often a Kubernetes ConfigMap mount, where the
//! file is a symlink swapped atomically behind our back and inotify watches go stale. Each poll
//! compares the file's modification time, length and a hash of its content with what the
//! previous poll saw: the hash catches an edit that keeps the length within one mtime tick.
//! A change triggers [`TenantRegistry::reload`], which itself decides whether the *tenants*
//! changed; a failed reload is logged and the last good snapshot stays in force. A file that
//! stays broken is reported once, not on every poll, because its fingerprint does not change.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::registry::TenantRegistry;

/// What made the watcher reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Hangup,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hangup => "sighup",
            Self::FileChanged => "file_changed",
        }
    }
}

/// What one poll saw of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    Present {
        modified: Option<SystemTime>,
        len: u64,
        content_hash: u64,
    },
    Unreadable(std::io::ErrorKind),
}

impl FileState {
    fn read(path: &Path) -> Self {
        let result = std::fs::metadata(path).and_then(|meta| {
            let content = std::fs::read(path)?;
            let mut hasher = DefaultHasher::new();
            content.hash(&mut hasher);
            Ok(Self::Present {
                modified: meta.modified().ok(),
                len: meta.len(),
                content_hash: hasher.finish(),
            })
        });
        result.unwrap_or_else(|e| Self::Unreadable(e.kind()))
    }
}

impl TenantRegistry {
    /// Spawns the reload task: reloads on SIGHUP (unix) and when a poll every `poll` sees the
    /// file's mtime, length or content change (`Duration::ZERO` disables polling). Success is
    /// logged with the version and tenant count; a failure is logged and the current tenants
    /// stay in force. The task ends when `shutdown` resolves. For a registry without a file it
    /// only waits for `shutdown`.
    ///
    /// The SIGHUP handler is installed before this returns, so a SIGHUP sent afterwards cannot
    /// hit the default action (terminate). Must be called within a tokio runtime.
    pub fn spawn_watcher<F>(&self, poll: Duration, shutdown: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let registry = self.clone();
        let hangup = Hangup::install();
        tokio::spawn(async move { registry.watch(poll, hangup, shutdown).await })
    }

    async fn watch<F>(self, poll: Duration, mut hangup: Hangup, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(path) = self.path() else {
            tracing::debug!("tenant registry has no file; nothing to watch");
            shutdown.await;
            return;
        };
        // The first poll is one period away and compares against "never seen", so a change
        // made between `load` and this task starting is still picked up.
        let mut interval = (!poll.is_zero()).then(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + poll, poll);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let mut last_seen: Option<FileState> = None;
        tokio::pin!(shutdown);
        loop {
            let trigger = tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = hangup.recv() => Trigger::Hangup,
                () = tick(&mut interval) => Trigger::FileChanged,
            };
            if trigger == Trigger::FileChanged {
                let probe = path.clone();
                let Ok(state) = tokio::task::spawn_blocking(move || FileState::read(&probe)).await
                else {
                    continue;
                };
                if last_seen.as_ref() == Some(&state) {
                    continue;
                }
                last_seen = Some(state);
            }
            self.reload_and_log(&path, trigger).await;
        }
        tracing::debug!(path = %path.display(), "tenants watcher stopped");
    }

    async fn reload_and_log(&self, path: &Path, trigger: Trigger) {
        let registry = self.clone();
        let result = tokio::task::spawn_blocking(move || registry.reload()).await;
        let path = path.display();
        match result {
            Ok(Ok(true)) => tracing::info!(
                path = %path,
                trigger = trigger.as_str(),
                version = self.version(),
                tenants = self.tenant_ids().len(),
                "tenants reloaded"
            ),
            Ok(Ok(false)) if trigger == Trigger::Hangup => tracing::info!(
                path = %path,
                trigger = trigger.as_str(),
                version = self.version(),
                "tenants unchanged"
            ),
            Ok(Ok(false)) => tracing::debug!(
                path = %path,
                trigger = trigger.as_str(),
                version = self.version(),
                "tenants unchanged"
            ),
            Ok(Err(e)) => tracing::warn!(
                path = %path,
                trigger = trigger.as_str(),
                version = self.version(),
                error = %ErrorChain(&e),
                "tenants reload failed; keeping the current tenants"
            ),
            Err(e) => tracing::error!(
                path = %path,
                trigger = trigger.as_str(),
                error = %e,
                "tenants reload task failed; keeping the current tenants"
            ),
        }
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Renders an error and its sources on one line: `outer: inner: innermost`.
struct ErrorChain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// The SIGHUP stream, or nothing where there is no SIGHUP (or it cannot be installed).
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot install the SIGHUP handler; polling only");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the next SIGHUP; never, without a handler.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ledgerflow_core::TenantId;
    use tokio::sync::oneshot;

    use super::*;
    use crate::fixtures::{minimal, write_atomically};

    const POLL: Duration = Duration::from_millis(50);
    /// Generous: the builders share two cores with the test run.
    const DEADLINE: Duration = Duration::from_secs(5);

    fn tenant_id(raw: &str) -> TenantId {
        TenantId::parse(raw).unwrap()
    }

    /// A shutdown future and the sender that resolves it.
    fn shutdown() -> (
        oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = oneshot::channel::<()>();
        (tx, async move {
            // Sent or dropped: either ends the wait.
            rx.await.ok();
        })
    }

    async fn wait_for_version(registry: &TenantRegistry, version: u64) -> Duration {
        let started = Instant::now();
        while registry.version() < version {
            assert!(
                started.elapsed() < DEADLINE,
                "version {} did not reach {version} within {DEADLINE:?}",
                registry.version()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    fn loaded(text: &str) -> (tempfile::TempDir, PathBuf, TenantRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, text).unwrap();
        let registry = TenantRegistry::load(&path).unwrap();
        (dir, path, registry)
    }

    #[tokio::test]
    async fn the_watcher_picks_up_file_changes_and_survives_broken_ones() {
        let (_dir, path, registry) = loaded(&minimal("acme"));
        let (stop, until) = shutdown();
        let watcher = registry.spawn_watcher(POLL, until);

        write_atomically(&path, &format!("{}{}", minimal("acme"), minimal("globex")));
        let took = wait_for_version(&registry, 2).await;
        assert!(registry.get(&tenant_id("globex")).is_some());
        eprintln!("reload seen after {took:?}");

        // A broken file is reported and ignored: the tenants stay as they were.
        write_atomically(&path, "[[tenants]]\ntenant_id = \"acme\"\n");
        tokio::time::sleep(POLL * 6).await;
        assert_eq!(registry.version(), 2);
        assert_eq!(
            registry.tenant_ids(),
            [tenant_id("acme"), tenant_id("globex")]
        );

        // Fixing it is picked up again.
        write_atomically(&path, &minimal("initech"));
        wait_for_version(&registry, 3).await;
        assert_eq!(registry.tenant_ids(), [tenant_id("initech")]);

        stop.send(()).unwrap();
        tokio::time::timeout(DEADLINE, watcher)
            .await
            .expect("the watcher stops on shutdown")
            .unwrap();
    }

    /// An edit that keeps the length and the mtime is still seen, through the content hash.
    #[tokio::test]
    async fn the_watcher_sees_an_edit_with_the_same_length_and_mtime() {
        let (_dir, path, registry) = loaded(&minimal("acme"));
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (stop, until) = shutdown();
        let watcher = registry.spawn_watcher(POLL, until);
        // Let the first poll record the original fingerprint.
        tokio::time::sleep(POLL * 4).await;
        assert_eq!(registry.version(), 1);

        let edited = minimal("acme").replace("\"1200\"", "\"1201\"");
        assert_eq!(edited.len(), minimal("acme").len());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut &file, edited.as_bytes()).unwrap();
        file.set_modified(mtime).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

        wait_for_version(&registry, 2).await;
        assert_eq!(
            registry
                .get(&tenant_id("acme"))
                .unwrap()
                .accounts
                .receivable,
            "1201"
        );
        stop.send(()).unwrap();
        watcher.await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_triggers_a_reload() {
        let (_dir, path, registry) = loaded(&minimal("acme"));
        let (stop, until) = shutdown();
        // Polling disabled: only the signal can trigger the reload.
        let watcher = registry.spawn_watcher(Duration::ZERO, until);

        write_atomically(&path, &format!("{}{}", minimal("acme"), minimal("globex")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(registry.version(), 1, "no reload without a trigger");

        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for_version(&registry, 2).await;
        assert!(registry.get(&tenant_id("globex")).is_some());

        stop.send(()).unwrap();
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn a_watcher_without_a_file_waits_for_shutdown() {
        let registry = TenantRegistry::empty();
        let (stop, until) = shutdown();
        let watcher = registry.spawn_watcher(POLL, until);
        tokio::time::sleep(POLL * 2).await;
        assert!(!watcher.is_finished());
        stop.send(()).unwrap();
        watcher.await.unwrap();
    }

    #[test]
    fn error_chain_renders_every_source() {
        let err = crate::TenantsError::Read {
            path: "t.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(
            ErrorChain(&err).to_string(),
            "cannot read tenants file t.toml: gone"
        );
    }
}
