//! The embedded store: SQLite (rusqlite, bundled) in WAL mode under `DWA_DATA_DIR`.
//!
//! Why SQLite over redb: list filters, cursors and per-task step tables are
//! plain indexed queries, and one SQL transaction covers a whole transition.
//!
//! All writes go through one writer thread that commits them in groups
//! (group commit): it drains every request waiting, applies them in one
//! transaction and commits once. The fsync that makes commits durable runs
//! on a thread of its own, once for every commit made while the previous
//! one ran, and nothing that reveals a commit leaves the process before it
//! ([`durability`]). Reads use a separate connection, which WAL lets run
//! beside the writer.
//!
//! [`writer`] holds the writer thread; `writer/ops.rs` has one function per
//! operation (events are written in `writer/events.rs`), as `redis/` has one
//! script per transition.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::clock::{Clock, SystemClock};
use crate::{
    DueEffects, EventFeed, Job, Leased, Lifecycles, ListFilter, NewEvent, NewTask, ScheduleRecord,
    ScheduleUpdate, Settled, StepEnd, StepRecord, Store, StoreError, TaskRecord, Transition,
};
use dwa_core::model::{EventData, StepStatus, TaskEvent, TaskStatus};

/// Largest group of requests committed in one transaction.
const MAX_BATCH: usize = 2048;

// A job's `state`: due (leased in rank order), held by a worker, or
// delayed until its `run_at` (a retry's wait, `runAt`, a parked wait).
const DUE: i64 = 0;
const LEASED: i64 = 1;
const DELAYED: i64 = 2;

mod durability;
mod schedules;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use durability::{Durability, SyncFn};
use writer::Writer;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

enum Op {
    Create(NewTask),
    CreateAndLease {
        task: NewTask,
        queue: String,
        owner: String,
        max: usize,
        lease_ms: i64,
    },
    Lease {
        queue: String,
        owner: String,
        max: usize,
        lease_ms: i64,
    },
    Renew(Vec<Job>, i64),
    StartItems(Job, u32, u32),
    Complete(Job, Value),
    CompleteAndLease {
        job: Job,
        result: Value,
        queue: String,
        owner: String,
        lease_ms: i64,
    },
    Retry(Job, i64, String),
    Fail(Job, String),
    Release(Vec<Job>),
    Cancel(String),
    Resume(String, Option<String>, Lifecycles),
    Park(Job, i64, Value),
    Signal(String, u32, Value, Option<i64>),
    Reap,
    Append(String, Vec<NewEvent>, u64),
    Purge(i64, usize),
    ClaimEffects(usize, i64),
    SettleEffects(DueEffects, Settled),
    Schedule(schedules::ScheduleOp),
    EndStep(Job, StepEnd),
    Gate(writer::GateOp),
    Defer(Job, i64, Option<String>),
    Spawn(Job, String, NewTask, i64),
}

impl Op {
    /// Whether losing this write to a power cut only gives jobs back to
    /// their queue, as an expired lease does: such a commit needs no fsync
    /// of its own ([`durability`]).
    fn gives_jobs_back_when_lost(&self) -> bool {
        matches!(
            self,
            Op::Lease { .. } | Op::Renew(..) | Op::Release(_) | Op::Reap
        )
    }
}

enum Reply {
    Transition(Transition),
    TransitionAndJobs(Transition, Vec<Job>),
    Leased(Leased),
    Bools(Vec<bool>),
    Count(usize),
    Events(Vec<Arc<TaskEvent>>),
    Due(Vec<DueEffects>),
    Gate(writer::GateReply),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Request>>>,
    read: Arc<Mutex<Connection>>,
    events: broadcast::Sender<Arc<TaskEvent>>,
    durability: Arc<Durability>,
    _lock: File,
    path: PathBuf,
    clock: Arc<dyn Clock>,
}

/// Prepared statements kept per connection: more than the store has.
const STATEMENTS_KEPT: usize = 128;

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    // Each connection is used by one thread at a time (the writer thread, or
    // the reader behind its mutex), so SQLite's own mutexes are not needed.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // The store prepares some 90 distinct statements and rusqlite keeps 16
    // by default: a DAG's transitions cycled through more than 16, so SQLite
    // parsed and planned statements again in every group commit.
    conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;
         PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint=10000;",
    )?;
    Ok(conn)
}

/// The test's hand on a store's fsyncs ([`SqliteStore::open_with_held_fsync`]).
#[cfg(any(test, feature = "test-support"))]
pub struct HeldFsync(mpsc::Sender<std::io::Result<()>>);

#[cfg(any(test, feature = "test-support"))]
impl HeldFsync {
    /// Lets the next fsync finish with `outcome`.
    pub fn release(&self, outcome: std::io::Result<()>) {
        let _ = self.0.send(outcome);
    }
}

/// The WAL file, opened for its fsync. It exists once the schema is
/// written, and SQLite keeps its inode (a checkpoint rewinds it in place).
fn open_wal(db: &Path) -> Result<File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    File::open(&name).map_err(|e| {
        StoreError::Backend(format!(
            "cannot open the write-ahead log {}: {e}",
            Path::new(&name).display()
        ))
    })
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, which one host at a time may use.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens the store with a given clock (tests move a manual one).
    pub fn open_with_clock(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with(dir, clock, None)
    }

    /// Opens the store with fsyncs that wait for the test: each
    /// [`HeldFsync::release`] lets one through with that outcome.
    #[cfg(any(test, feature = "test-support"))]
    pub fn open_with_held_fsync(dir: &Path) -> Result<(Self, HeldFsync), StoreError> {
        let (tx, rx) = mpsc::channel::<std::io::Result<()>>();
        let sync: SyncFn = Box::new(move || rx.recv().unwrap_or(Ok(())));
        let store = Self::open_with(dir, Arc::new(SystemClock), Some(sync))?;
        Ok((store, HeldFsync(tx)))
    }

    /// Opens the store; `sync` stands in for the WAL's fsync (tests hold it).
    fn open_with(
        dir: &Path,
        clock: Arc<dyn Clock>,
        sync: Option<SyncFn>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let lock_path = dir.join("dwa.lock");
        let lock = File::create(&lock_path).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", lock_path.display()))
        })?;
        lock.try_lock().map_err(|_| {
            StoreError::Backend(format!(
                "data dir {} is in use by another dwa process (lock {} is held); the embedded store serves one host — use REDIS_URL to share work",
                dir.display(),
                lock_path.display()
            ))
        })?;
        let path = dir.join("dwa.sqlite");
        let conn = open_conn(&path)?;
        schema::prepare(&conn)?;
        // The lock proves no other process uses this store: every job a
        // previous process held is orphaned, so give it back now rather than
        // waiting for its lease to expire.
        conn.execute(
            "UPDATE jobs SET state = ?1, token = NULL, owner = NULL, lease_until = NULL WHERE state = ?2",
            params![DUE, LEASED],
        )?;
        let job_seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM jobs", [], |r| r.get(0))?;
        // What is above was committed with FULL; from here the sync thread
        // makes commits durable.
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        let sync = match sync {
            Some(s) => s,
            None => durability::fsync_wal(open_wal(&path)?),
        };
        let read = open_conn(&path)?;
        let (events, _) = broadcast::channel(16_384);
        let (tx, rx) = mpsc::channel::<Request>();
        let (synced_tx, synced_rx) = mpsc::channel();
        let durability = Durability::new();
        let mut writer = Writer {
            conn,
            clock: clock.clone(),
            job_seq,
            token: (rand::random::<u32>() as i64) << 20,
            event_seqs: HashMap::new(),
            capped: HashSet::new(),
            activated: HashSet::new(),
            done_counts: HashMap::new(),
            now: 0,
            delayed_due: HashMap::new(),
            commits: 0,
            durability: durability.clone(),
        };
        let (ev, d) = (events.clone(), durability.clone());
        std::thread::Builder::new()
            .name("dwa-sqlite-sync".into())
            .spawn(move || d.run(synced_rx, sync, ev))
            .map_err(|e| StoreError::Backend(format!("cannot start sync thread: {e}")))?;
        std::thread::Builder::new()
            .name("dwa-sqlite-writer".into())
            .spawn(move || writer.run(rx, synced_tx))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(Some(tx)),
            read: Arc::new(Mutex::new(read)),
            events,
            durability,
            _lock: lock,
            path,
            clock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self
                .writer
                .lock()
                .map_err(|_| StoreError::Backend("writer lock poisoned".into()))?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender
                .send(Request { op, reply })
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn schedule_write(&self, op: schedules::ScheduleOp) -> Result<usize, StoreError> {
        match self.call(Op::Schedule(op)).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.read.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("read lock poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
    }
}

fn transition(r: Reply) -> Result<Transition, StoreError> {
    match r {
        Reply::Transition(t) => Ok(t),
        _ => Err(StoreError::Backend("unexpected reply".into())),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError> {
        transition(self.call(Op::Create(task)).await?)
    }

    async fn create_and_lease(
        &self,
        task: NewTask,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<(Transition, Vec<Job>), StoreError> {
        match self
            .call(Op::CreateAndLease {
                task,
                queue: queue.into(),
                owner: owner.into(),
                max,
                lease_ms,
            })
            .await?
        {
            Reply::TransitionAndJobs(t, jobs) => Ok((t, jobs)),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Leased, StoreError> {
        match self
            .call(Op::Lease {
                queue: queue.into(),
                owner: owner.into(),
                max,
                lease_ms,
            })
            .await?
        {
            Reply::Leased(l) => Ok(l),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn renew(&self, jobs: &[Job], lease_ms: i64) -> Result<Vec<bool>, StoreError> {
        match self.call(Op::Renew(jobs.to_vec(), lease_ms)).await? {
            Reply::Bools(b) => Ok(b),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn start_items(
        &self,
        job: &Job,
        items: u32,
        concurrency: u32,
    ) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::StartItems(job.clone(), items, concurrency))
                .await?,
        )
    }

    async fn complete(&self, job: &Job, result: Value) -> Result<Transition, StoreError> {
        transition(self.call(Op::Complete(job.clone(), result)).await?)
    }

    async fn complete_and_lease(
        &self,
        job: &Job,
        result: Value,
        queue: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        match self
            .call(Op::CompleteAndLease {
                job: job.clone(),
                result,
                queue: queue.into(),
                owner: owner.into(),
                lease_ms,
            })
            .await?
        {
            Reply::TransitionAndJobs(t, mut j) => Ok((t, j.pop())),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::Retry(job.clone(), run_at, error.into()))
                .await?,
        )
    }

    async fn acquire_slot(
        &self,
        key: &str,
        limit: u32,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let op = writer::GateOp::Acquire {
            key: key.into(),
            limit,
            holder: holder.into(),
            until,
        };
        match self.call(Op::Gate(op)).await? {
            Reply::Gate(writer::GateReply::Slot(b)) => Ok(b),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn release_slot(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let op = writer::GateOp::Release {
            key: key.into(),
            holder: holder.into(),
        };
        self.call(Op::Gate(op)).await.map(|_| ())
    }

    async fn take_rate(
        &self,
        key: &str,
        limit: u32,
        per_ms: u64,
    ) -> Result<Option<i64>, StoreError> {
        let op = writer::GateOp::TakeRate {
            key: key.into(),
            limit,
            per_ms,
        };
        match self.call(Op::Gate(op)).await? {
            Reply::Gate(writer::GateReply::Rate(at)) => Ok(at),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn defer(
        &self,
        job: &Job,
        until: i64,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::Defer(job.clone(), until, reason.map(str::to_owned)))
                .await?,
        )
    }

    async fn spawn(
        &self,
        job: &Job,
        key: &str,
        child: NewTask,
        until: i64,
    ) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::Spawn(job.clone(), key.to_owned(), child, until))
                .await?,
        )
    }

    async fn child_of(&self, job: &Job) -> Result<Option<String>, StoreError> {
        let (id, step, item) = (job.task_id.clone(), job.step, item_col(job.item));
        self.read(move |c| {
            let child: Option<Option<String>> = c
                .prepare_cached(
                    "SELECT child FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = ?3",
                )?
                .query_row(params![id, step, item], |r| r.get(0))
                .optional()?;
            Ok(child.flatten())
        })
        .await
    }

    async fn live_children(&self, task_id: &str) -> Result<Vec<String>, StoreError> {
        let id = task_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM tasks WHERE parent_task = ?1 AND status IN ('pending', 'active')",
            )?;
            let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn end_step(&self, job: &Job, end: StepEnd) -> Result<Transition, StoreError> {
        transition(self.call(Op::EndStep(job.clone(), end)).await?)
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<Transition, StoreError> {
        transition(self.call(Op::Fail(job.clone(), error.into())).await?)
    }

    async fn release(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.call(Op::Release(jobs.to_vec())).await.map(|_| ())
    }

    async fn cancel(&self, task_id: &str) -> Result<Transition, StoreError> {
        transition(self.call(Op::Cancel(task_id.into())).await?)
    }

    async fn resume(
        &self,
        task_id: &str,
        spec: Option<String>,
        effects: Lifecycles,
    ) -> Result<Transition, StoreError> {
        transition(self.call(Op::Resume(task_id.into(), spec, effects)).await?)
    }

    async fn park(&self, job: &Job, until: i64, data: Value) -> Result<Transition, StoreError> {
        transition(self.call(Op::Park(job.clone(), until, data)).await?)
    }

    async fn signal(
        &self,
        task_id: &str,
        step: u32,
        result: Value,
        until: Option<i64>,
    ) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::Signal(task_id.into(), step, result, until))
                .await?,
        )
    }

    async fn reap_expired(&self) -> Result<usize, StoreError> {
        match self.call(Op::Reap).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let Some(mut t) = load_task(c, &id, true)? else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT idx, key, task, status, result, error, attempts, started_at, completed_at
                 FROM steps WHERE task_id = ?1 ORDER BY idx",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, u32>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })?;
            for row in rows {
                let (idx, key, task, status, result, error, attempts, started_at, completed_at) =
                    row?;
                t.steps.push(StepRecord {
                    idx,
                    key,
                    task,
                    status: StepStatus::parse(&status).unwrap_or(StepStatus::Pending),
                    result: parse_json(result.as_deref()),
                    error,
                    attempts,
                    started_at,
                    completed_at,
                });
            }
            Ok(Some(t))
        })
        .await
    }

    async fn task_summary(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| load_task(c, &id, false)).await
    }

    async fn spec(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT spec FROM task_specs WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn step_results(
        &self,
        id: &str,
        steps: &[u32],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        let id = id.to_owned();
        let steps = steps.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                // A step ended without a result of its own (skipped, or failed
                // under a tolerant policy) left one for its dependants.
                "SELECT result FROM steps WHERE task_id = ?1 AND idx = ?2
                 AND status IN ('completed', 'failed', 'skipped')",
            )?;
            let mut out = Vec::with_capacity(steps.len());
            for s in steps {
                let r: Option<Option<String>> =
                    stmt.query_row(params![id, s], |r| r.get(0)).optional()?;
                out.push(parse_json(r.flatten().as_deref()));
            }
            Ok(out)
        })
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let f = filter.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM tasks
                 WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let ids = stmt
                .query_map(
                    params![
                        f.queue,
                        f.status.map(|s| s.as_str()),
                        f.before,
                        f.limit as i64
                    ],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(t) = load_task(c, &id, false)? {
                    out.push(t);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, step_id, step_task, data, ts FROM events
                 WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after as i64, limit as i64], |r| {
                Ok(TaskEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    task_id: id.clone(),
                    step_id: r.get(2)?,
                    step_task: r.get(3)?,
                    // Kept as its text until something reads into it.
                    data: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|t| serde_json::from_str::<EventData>(&t).ok())
                        .unwrap_or_else(|| Value::Null.into()),
                    timestamp: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn append_events(
        &self,
        id: &str,
        events: Vec<NewEvent>,
        cap: u64,
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError> {
        match self.call(Op::Append(id.into(), events, cap)).await? {
            Reply::Events(e) => Ok(e),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    fn subscribe(&self) -> EventFeed {
        EventFeed::new(self.events.subscribe(), None)
    }

    async fn purge_finished(&self, ended_before: i64, limit: usize) -> Result<usize, StoreError> {
        match self.call(Op::Purge(ended_before, limit)).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn claim_effects(
        &self,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<DueEffects>, StoreError> {
        match self.call(Op::ClaimEffects(max, lease_ms)).await? {
            Reply::Due(d) => Ok(d),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn settle_effects(&self, due: &DueEffects, how: Settled) -> Result<(), StoreError> {
        match self.call(Op::SettleEffects(due.clone(), how)).await? {
            Reply::Count(_) => Ok(()),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn create_schedule(&self, s: ScheduleRecord, max: usize) -> Result<(), StoreError> {
        self.schedule_write(schedules::ScheduleOp::Create(s, max))
            .await
            .map(|_| ())
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| schedules::get(c, &id)).await
    }

    async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let after = after.map(str::to_owned);
        self.read(move |c| schedules::list(c, after.as_deref(), limit))
            .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .schedule_write(schedules::ScheduleOp::Delete(id.to_owned()))
            .await?;
        Ok(n > 0)
    }

    async fn due_schedules(
        &self,
        max: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError> {
        let now = self.clock.now_ms();
        self.read(move |c| schedules::due(c, now, max)).await
    }

    async fn update_schedule(&self, id: &str, update: ScheduleUpdate) -> Result<bool, StoreError> {
        let n = self
            .schedule_write(schedules::ScheduleOp::Update(id.to_owned(), update))
            .await?;
        Ok(n > 0)
    }

    async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT DISTINCT queue FROM jobs")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn queue_depths(&self, max: usize) -> Result<Vec<crate::QueueDepth>, StoreError> {
        let now = self.now_ms();
        let depths = self
            .read(move |c| {
                // A delayed job's rank is its due time; one due already
                // waits (the next lease ranks it).
                let mut stmt = c.prepare_cached(
                    "SELECT queue, SUM(state = ?1 OR rank <= ?3), SUM(state = ?2 AND rank > ?3),
                            MIN(CASE WHEN state = ?1 OR rank <= ?3 THEN rank END)
                     FROM jobs WHERE state IN (?1, ?2) GROUP BY queue",
                )?;
                let rows = stmt.query_map(params![DUE, DELAYED, now], |r| {
                    Ok(crate::QueueDepth {
                        queue: r.get(0)?,
                        waiting: r.get::<_, i64>(1)?.max(0) as u64,
                        delayed: r.get::<_, i64>(2)?.max(0) as u64,
                        head_since: r.get(3)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        Ok(crate::deepest(depths, max))
    }

    async fn settled(&self) -> Result<(), StoreError> {
        self.durability.settled().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

fn parse_json(s: Option<&str>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(s).ok())
}

/// Loads a task's record; the spec only when asked (lists skip it: it can be large).
fn load_task(c: &Connection, id: &str, with_spec: bool) -> Result<Option<TaskRecord>, StoreError> {
    let mut stmt = c.prepare_cached(if with_spec {
        "SELECT t.id, t.type, t.queue, t.status, s.spec, t.pipeline, t.progress, t.result, t.error,
                t.created_at, t.started_at, t.completed_at, t.parent
         FROM tasks t JOIN task_specs s ON s.id = t.id WHERE t.id = ?1"
    } else {
        "SELECT id, type, queue, status, '', pipeline, progress, result, error,
                created_at, started_at, completed_at, parent
         FROM tasks WHERE id = ?1"
    })?;
    Ok(stmt
        .query_row(params![id], |r| {
            Ok(TaskRecord {
                id: r.get(0)?,
                task_type: r.get(1)?,
                queue: r.get(2)?,
                status: TaskStatus::parse(&r.get::<_, String>(3)?).unwrap_or(TaskStatus::Pending),
                spec: r.get(4)?,
                is_pipeline: r.get::<_, i64>(5)? != 0,
                progress: r.get(6)?,
                result: parse_json(r.get::<_, Option<String>>(7)?.as_deref()),
                error: r.get(8)?,
                created_at: r.get(9)?,
                started_at: r.get(10)?,
                completed_at: r.get(11)?,
                steps: Vec::new(),
                parent: r
                    .get::<_, Option<String>>(12)?
                    .and_then(|p| serde_json::from_str(&p).ok()),
            })
        })
        .optional()?)
}

/// Errors that can happen after an op has written: its writes must be undone.
fn is_dirty(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(_) | StoreError::Closed)
}

fn item_col(item: Option<u32>) -> i64 {
    item.map_or(-1, i64::from)
}
