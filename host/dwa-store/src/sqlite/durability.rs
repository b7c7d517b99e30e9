//! When a commit is on disk, and holding back what must not leave the
//! process before it is (docs/architecture.md, "Durability").
//!
//! The writer commits with `synchronous=NORMAL`: a commit is in the WAL in
//! the OS's page cache when the writer moves on, so it survives the host
//! being killed, but not the machine losing power until the WAL is
//! fsynced. This module's thread does that fsync, for every commit made
//! meanwhile at once, off the writer's path; until it has, nothing that
//! reveals those commits leaves the process: events wait here, and the
//! host's outside edges (HTTP answers, effects, backend calls) wait in
//! [`Durability::settled`]. A chain's steps then commit back to back while
//! one fsync covers many of them, and no one outside can tell the
//! difference from an fsync per commit.
//!
//! A batch of leases only (lease, renew, release, reap) needs no fsync of
//! its own: lost, it gives its jobs back, as an expired lease does, and
//! they run again. Its events still wait for the commits before it.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use tokio::sync::{broadcast, watch};

use dwa_core::model::TaskEvent;

use crate::StoreError;

/// Makes everything written to the WAL so far durable (fsync, or a test's gate).
pub(super) type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// The fsync of the WAL file: SQLite's own `synchronous=FULL` commit is
/// this same call on the same file, made by the committing thread.
pub(super) fn fsync_wal(wal: File) -> SyncFn {
    Box::new(move || wal.sync_data())
}

/// The commits the writer made and the ones on disk, shared by the writer,
/// the sync thread and every caller that must wait for disk.
pub(super) struct Durability {
    /// The last commit that needs an fsync (not a lease-only one).
    required: AtomicU64,
    /// The last commit known on disk, or why none will be any more.
    synced: watch::Sender<Result<u64, Arc<str>>>,
}

/// One commit, handed to the sync thread.
pub(super) struct Committed {
    pub(super) seq: u64,
    pub(super) needs_sync: bool,
    pub(super) events: Vec<Arc<TaskEvent>>,
}

impl Durability {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Durability {
            required: AtomicU64::new(0),
            synced: watch::Sender::new(Ok(0)),
        })
    }

    /// Called by the writer right after commit `seq`, before it answers.
    pub(super) fn committed(&self, seq: u64, needs_sync: bool) {
        if needs_sync {
            self.required.store(seq, Ordering::Release);
        }
    }

    /// Why the store can take no more writes, once an fsync failed.
    pub(super) fn failed(&self) -> Option<Arc<str>> {
        self.synced.borrow().as_ref().err().cloned()
    }

    /// Waits until every commit made before the call is on disk.
    pub(super) async fn settled(&self) -> Result<(), StoreError> {
        let target = self.required.load(Ordering::Acquire);
        // Every HTTP answer comes here; most find nothing owed.
        if matches!(&*self.synced.borrow(), Ok(seq) if *seq >= target) {
            return Ok(());
        }
        let mut rx = self.synced.subscribe();
        let reached = rx
            .wait_for(|s| s.as_ref().map_or(true, |&seq| seq >= target))
            .await
            .map_err(|_| StoreError::Closed)?;
        match &*reached {
            Ok(_) => Ok(()),
            Err(why) => Err(StoreError::Backend(why.to_string())),
        }
    }

    /// The sync thread: fsyncs what arrived since its last fsync (one call
    /// for them all), then releases their events, in commit order. Ends
    /// when the writer has ended and everything it sent is handled.
    pub(super) fn run(
        &self,
        rx: mpsc::Receiver<Committed>,
        mut sync: SyncFn,
        events: broadcast::Sender<Arc<TaskEvent>>,
    ) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while let Ok(c) = rx.try_recv() {
                group.push(c);
            }
            if self.failed().is_some() {
                continue;
            }
            let last = group.iter().map(|c| c.seq).max().unwrap_or(0);
            if group.iter().any(|c| c.needs_sync)
                && let Err(e) = sync()
            {
                // The kernel may have dropped the pages it could not
                // write: nothing can be promised any more (as PostgreSQL
                // concluded), so this store refuses writes from now on.
                let why = format!(
                    "the embedded store could not fsync its write-ahead log ({e}); restart the host"
                );
                tracing::error!("{why}");
                self.synced.send_modify(|s| *s = Err(why.into()));
                continue;
            }
            self.synced.send_modify(|s| *s = Ok(last));
            for c in group {
                for e in c.events {
                    let _ = events.send(e);
                }
            }
        }
    }
}
