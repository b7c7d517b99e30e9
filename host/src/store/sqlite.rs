//! The embedded store: SQLite (rusqlite, bundled) in WAL mode under `DWA_DATA_DIR`.
//!
//! Why SQLite over redb: list filters, cursors and per-task step tables are
//! plain indexed queries, and one SQL transaction covers a whole transition.
//!
//! All writes go through one writer thread that commits them in groups
//! (group commit): it drains every request waiting, applies each inside its
//! own savepoint, commits once with `synchronous=FULL`, and only then answers
//! the callers and broadcasts the events. Durability is never relaxed; the
//! fsync is shared. Reads use a separate connection, which WAL lets run
//! beside the writer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

use super::{
    EventFeed, Job, Leased, ListFilter, NewEvent, NewTask, StepRecord, Store, StoreError,
    TaskRecord, Transition,
};
use crate::clock::{Clock, SystemClock};
use crate::model::{StepStatus, TaskEvent, TaskStatus};

/// Largest group of requests committed in one transaction.
const MAX_BATCH: usize = 2048;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    pipeline INTEGER NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    steps_total INTEGER NOT NULL,
    steps_done INTEGER NOT NULL DEFAULT 0
);
-- The spec can be large (a 10,000-step DAG is ~1 MB) and never changes: it
-- lives apart so that the hot counters of `tasks` stay in a small row.
CREATE TABLE IF NOT EXISTS task_specs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, id);
CREATE INDEX IF NOT EXISTS tasks_by_queue ON tasks(queue, id);
CREATE INDEX IF NOT EXISTS tasks_by_end ON tasks(completed_at) WHERE completed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    waiting INTEGER NOT NULL,
    dependants TEXT NOT NULL,
    items_total INTEGER,
    items_done INTEGER NOT NULL DEFAULT 0,
    items_next INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    completed_at INTEGER,
    PRIMARY KEY (task_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    task_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    item INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (task_id, step, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    task_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    item INTEGER NOT NULL,
    queue TEXT NOT NULL,
    state INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    token INTEGER,
    owner TEXT,
    lease_until INTEGER,
    PRIMARY KEY (task_id, step, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(queue, state, run_at, seq);
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs(state, lease_until);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step_id TEXT,
    step_task TEXT,
    data TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
"#;

const WAITING: i64 = 0;
const ACTIVE: i64 = 1;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

enum Op {
    Create(NewTask),
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
    Reap,
    Append(String, Vec<NewEvent>),
    Purge(i64, usize),
}

enum Reply {
    Transition(Transition),
    TransitionAndJob(Transition, Option<Job>),
    Leased(Leased),
    Bools(Vec<bool>),
    Count(usize),
    Events(Vec<Arc<TaskEvent>>),
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
    _lock: File,
    path: PathBuf,
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    // Each connection is used by one thread at a time (the writer thread, or
    // the reader behind its mutex), so SQLite's own mutexes are not needed.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;
         PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint=10000;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, which one host at a time may use.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens the store with a given clock (tests move a manual one).
    pub fn open_with_clock(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
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
        conn.execute_batch(SCHEMA)?;
        // The lock proves no other process uses this store: every job a
        // previous process held is orphaned, so give it back now rather than
        // waiting for its lease to expire.
        conn.execute(
            "UPDATE jobs SET state = ?1, token = NULL, owner = NULL, lease_until = NULL WHERE state = ?2",
            params![WAITING, ACTIVE],
        )?;
        let job_seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM jobs", [], |r| r.get(0))?;
        let read = open_conn(&path)?;
        let (events, _) = broadcast::channel(16_384);
        let (tx, rx) = mpsc::channel::<Request>();
        let mut writer = Writer {
            conn,
            clock,
            job_seq,
            token: (rand::random::<u32>() as i64) << 20,
            event_seqs: HashMap::new(),
            activated: HashSet::new(),
            done_counts: HashMap::new(),
            now: 0,
        };
        let ev = events.clone();
        std::thread::Builder::new()
            .name("dwa-sqlite-writer".into())
            .spawn(move || writer.run(rx, ev))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(Some(tx)),
            read: Arc::new(Mutex::new(read)),
            events,
            _lock: lock,
            path,
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

    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError> {
        transition(self.call(Op::Create(task)).await?)
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
            Reply::TransitionAndJob(t, j) => Ok((t, j)),
            _ => Err(StoreError::Backend("unexpected reply".into())),
        }
    }

    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError> {
        transition(
            self.call(Op::Retry(job.clone(), run_at, error.into()))
                .await?,
        )
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
                "SELECT result FROM steps WHERE task_id = ?1 AND idx = ?2 AND status = 'completed'",
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
                    data: parse_json(r.get::<_, Option<String>>(4)?.as_deref())
                        .unwrap_or(Value::Null),
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
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError> {
        match self.call(Op::Append(id.into(), events)).await? {
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

    async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT DISTINCT queue FROM jobs")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
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
                t.created_at, t.started_at, t.completed_at
         FROM tasks t JOIN task_specs s ON s.id = t.id WHERE t.id = ?1"
    } else {
        "SELECT id, type, queue, status, '', pipeline, progress, result, error,
                created_at, started_at, completed_at
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
            })
        })
        .optional()?)
}

struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    job_seq: i64,
    token: i64,
    /// Last event seq per task: the writer is the store's only writer, so
    /// counting here saves a read-modify-write of the task row per event.
    event_seqs: HashMap<String, i64>,
    /// Tasks known to be active already (pending → active happens once).
    activated: HashSet<String>,
    /// Completed and total steps per running task (same reasoning).
    done_counts: HashMap<String, (i64, i64)>,
    /// The clock reading of the batch being applied.
    now: i64,
}

struct Applied {
    reply: Reply,
    events: Vec<Arc<TaskEvent>>,
}

/// Per-step data the transitions need.
struct StepRow {
    key: String,
    task: String,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>, events: broadcast::Sender<Arc<TaskEvent>>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let now = self.clock.now_ms();
            // Fast path: no savepoints. Every op checks what can refuse it
            // before it writes, so a refusal leaves nothing behind; only an
            // error after a write ("dirty") forces the careful path.
            let mut results = self.run_batch(&batch, now, false);
            if matches!(results, Ok(ref r) if r.iter().any(|x| matches!(x, Err(e) if is_dirty(e))))
            {
                results = self.run_batch(&batch, now, true);
            }
            match results {
                Ok(results) => {
                    for (req, r) in batch.into_iter().zip(results) {
                        let reply = r.map(|a| {
                            for e in &a.events {
                                let _ = events.send(e.clone());
                            }
                            a.reply
                        });
                        let _ = req.reply.send(reply);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sqlite transaction failed; the batch is rolled back");
                    for req in batch {
                        let _ = req.reply.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction and commits it; on failure rolls
    /// back and restores the in-memory counters.
    fn run_batch(
        &mut self,
        batch: &[Request],
        now: i64,
        savepoints: bool,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let saved = (self.job_seq, self.token);
        self.now = now;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(batch.len());
        let mut dirty = false;
        for req in batch {
            if savepoints {
                self.conn.execute_batch("SAVEPOINT op")?;
            }
            let r = self.apply(&req.op, now);
            if savepoints {
                if r.is_ok() {
                    self.conn.execute_batch("RELEASE op")?;
                } else {
                    self.conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
                }
            } else if matches!(&r, Err(e) if is_dirty(e)) {
                dirty = true;
                results.push(r);
                break;
            }
            results.push(r);
        }
        let end = if dirty {
            self.conn.execute_batch("ROLLBACK")
        } else {
            self.conn.execute_batch("COMMIT")
        };
        if dirty || end.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
            (self.job_seq, self.token) = saved;
            self.event_seqs.clear();
            self.activated.clear();
            self.done_counts.clear();
        }
        end?;
        Ok(results)
    }

    fn apply(&mut self, op: &Op, now: i64) -> Result<Applied, StoreError> {
        let mut ev = Vec::new();
        let reply = match op {
            Op::Create(t) => Reply::Transition(self.create(t, now)?),
            Op::Lease {
                queue,
                owner,
                max,
                lease_ms,
            } => Reply::Leased(self.lease(queue, owner, *max, *lease_ms, true, &mut ev)?),
            Op::Renew(jobs, lease_ms) => {
                let mut stmt = self.conn.prepare_cached(
                    "UPDATE jobs SET lease_until = ?1
                     WHERE task_id = ?2 AND step = ?3 AND item = ?4 AND state = 1 AND token = ?5",
                )?;
                let mut held = Vec::with_capacity(jobs.len());
                for j in jobs {
                    let n = stmt.execute(params![
                        now + lease_ms,
                        j.task_id,
                        j.step,
                        item_col(j.item),
                        j.token as i64
                    ])?;
                    held.push(n == 1);
                }
                Reply::Bools(held)
            }
            Op::StartItems(job, items, concurrency) => {
                Reply::Transition(self.start_items(job, *items, *concurrency, now, &mut ev)?)
            }
            Op::Complete(job, result) => {
                Reply::Transition(self.complete(job, result, now, &mut ev)?)
            }
            Op::CompleteAndLease {
                job,
                result,
                queue,
                owner,
                lease_ms,
            } => {
                let t = self.complete(job, result, now, &mut ev)?;
                let mut leased = self.lease(queue, owner, 1, *lease_ms, false, &mut ev)?;
                Reply::TransitionAndJob(t, leased.jobs.pop())
            }
            Op::Retry(job, run_at, error) => {
                self.check_lease(job)?;
                self.conn
                    .prepare_cached(
                        "UPDATE jobs SET state = 0, run_at = ?1, attempt = attempt + 1,
                            token = NULL, owner = NULL, lease_until = NULL
                         WHERE task_id = ?2 AND step = ?3 AND item = ?4",
                    )?
                    .execute(params![run_at, job.task_id, job.step, item_col(job.item)])?;
                let step = self.step_row(&job.task_id, job.step)?;
                let queue: String = self
                    .conn
                    .prepare_cached("SELECT queue FROM steps WHERE task_id = ?1 AND idx = ?2")?
                    .query_row(params![job.task_id, job.step], |r| r.get(0))?;
                self.emit(
                    &job.task_id,
                    "step:retry",
                    Some(&step),
                    json!({"error": error, "attempt": job.attempt, "nextAttempt": job.attempt + 1,
                           "retryInMs": (run_at - now).max(0), "item": job.item}),
                    now,
                    &mut ev,
                )?;
                Reply::Transition(Transition {
                    woke: vec![queue],
                    finished: None,
                    events: ev.clone(),
                })
            }
            Op::Fail(job, error) => Reply::Transition(self.fail(job, error, now, &mut ev)?),
            Op::Release(jobs) => {
                let mut stmt = self.conn.prepare_cached(
                    "UPDATE jobs SET state = 0, token = NULL, owner = NULL, lease_until = NULL
                     WHERE task_id = ?1 AND step = ?2 AND item = ?3 AND state = 1 AND token = ?4",
                )?;
                let mut n = 0;
                for j in jobs {
                    n +=
                        stmt.execute(params![j.task_id, j.step, item_col(j.item), j.token as i64])?;
                }
                Reply::Count(n)
            }
            Op::Cancel(id) => Reply::Transition(self.cancel(id, now, &mut ev)?),
            Op::Reap => {
                let n = self
                    .conn
                    .prepare_cached(
                        "UPDATE jobs SET state = 0, token = NULL, owner = NULL, lease_until = NULL
                     WHERE state = 1 AND lease_until < ?1",
                    )?
                    .execute(params![now])?;
                Reply::Count(n)
            }
            Op::Purge(before, limit) => {
                let ids: Vec<String> = self
                    .conn
                    .prepare_cached(
                        "SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ?1
                         AND status IN ('completed', 'failed', 'cancelled') LIMIT ?2",
                    )?
                    .query_map(params![before, *limit as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    for sql in [
                        "DELETE FROM steps WHERE task_id = ?1",
                        "DELETE FROM items WHERE task_id = ?1",
                        "DELETE FROM events WHERE task_id = ?1",
                        "DELETE FROM jobs WHERE task_id = ?1",
                        "DELETE FROM task_specs WHERE id = ?1",
                        "DELETE FROM tasks WHERE id = ?1",
                    ] {
                        self.conn.prepare_cached(sql)?.execute(params![id])?;
                    }
                    self.event_seqs.remove(id);
                }
                Reply::Count(ids.len())
            }
            Op::Append(id, events) => {
                let exists: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(id.clone()));
                }
                for e in events {
                    let step = match e.step {
                        Some(s) => Some(self.step_row(id, s)?),
                        None => None,
                    };
                    self.emit(id, &e.kind, step.as_ref(), e.data.clone(), now, &mut ev)?;
                }
                Reply::Events(ev.clone())
            }
        };
        Ok(Applied { reply, events: ev })
    }

    fn create(&mut self, t: &NewTask, now: i64) -> Result<Transition, StoreError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO tasks (id, type, queue, status, pipeline, created_at, steps_total)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)",
            )?
            .execute(params![
                t.id,
                t.task_type,
                t.queue,
                t.is_pipeline as i64,
                t.created_at,
                t.steps.len() as i64
            ]);
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
            && e.code == rusqlite::ErrorCode::ConstraintViolation
        {
            return Err(StoreError::Duplicate(t.id.clone()));
        }
        inserted?;
        self.conn
            .prepare_cached("INSERT INTO task_specs (id, spec) VALUES (?1, ?2)")?
            .execute(params![t.id, t.spec])?;
        let mut woke = Vec::new();
        for (i, s) in t.steps.iter().enumerate() {
            let deps = serde_json::to_string(&s.dependants)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            self.conn
                .prepare_cached(
                    "INSERT INTO steps (task_id, idx, key, task, queue, status, waiting, dependants)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                )?
                .execute(params![t.id, i as i64, s.key, s.task, s.queue, s.waiting_for, deps])?;
            if s.waiting_for == 0 {
                self.push_job(&t.id, i as u32, None, &s.queue, now, 1)?;
                if !woke.contains(&s.queue) {
                    woke.push(s.queue.clone());
                }
            }
        }
        Ok(Transition {
            woke,
            finished: None,
            events: Vec::new(),
        })
    }

    fn push_job(
        &mut self,
        task: &str,
        step: u32,
        item: Option<u32>,
        queue: &str,
        run_at: i64,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.job_seq += 1;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs (task_id, step, item, queue, state, run_at, attempt, seq)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
            )?
            .execute(params![task, step, item_col(item), queue, run_at, attempt, self.job_seq])?;
        Ok(())
    }

    fn lease(
        &mut self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
        want_next_due: bool,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Leased, StoreError> {
        let now = self.now;
        let rows: Vec<(String, u32, i64, u32)> = self
            .conn
            .prepare_cached(
                "SELECT task_id, step, item, attempt FROM jobs
                 WHERE queue = ?1 AND state = 0 AND run_at <= ?2
                 ORDER BY run_at, seq LIMIT ?3",
            )?
            .query_map(params![queue, now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (task_id, step, item, attempt) in rows {
            self.token += 1;
            let token = self.token;
            self.conn
                .prepare_cached(
                    "UPDATE jobs SET state = 1, token = ?1, owner = ?2, lease_until = ?3
                     WHERE task_id = ?4 AND step = ?5 AND item = ?6",
                )?
                .execute(params![token, owner, now + lease_ms, task_id, step, item])?;
            if item < 0 {
                let row = self
                    .conn
                    .prepare_cached(
                        "UPDATE steps SET status = 'running', started_at = COALESCE(started_at, ?1),
                            attempts = MAX(attempts, ?2)
                         WHERE task_id = ?3 AND idx = ?4 RETURNING key, task",
                    )?
                    .query_row(params![now, attempt, task_id, step], |r| {
                        Ok(StepRow {
                            key: r.get(0)?,
                            task: r.get(1)?,
                        })
                    })?;
                if !self.activated.contains(&task_id) {
                    self.conn
                        .prepare_cached(
                            "UPDATE tasks SET status = 'active', started_at = COALESCE(started_at, ?1)
                             WHERE id = ?2 AND status = 'pending'",
                        )?
                        .execute(params![now, task_id])?;
                    if self.activated.len() > 100_000 {
                        self.activated.clear();
                    }
                    self.activated.insert(task_id.clone());
                }
                self.emit(
                    &task_id,
                    "step:start",
                    Some(&row),
                    json!({"attempt": attempt}),
                    now,
                    ev,
                )?;
            }
            jobs.push(Job {
                task_id,
                step,
                item: (item >= 0).then_some(item as u32),
                attempt,
                token: token as u64,
            });
        }
        let next_due: Option<i64> = if want_next_due {
            self.conn
                .prepare_cached("SELECT MIN(run_at) FROM jobs WHERE queue = ?1 AND state = 0")?
                .query_row(params![queue], |r| r.get(0))?
        } else {
            None
        };
        Ok(Leased { jobs, next_due })
    }

    fn check_lease(&self, job: &Job) -> Result<(), StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = ?3
                 AND state = 1 AND token = ?4",
            )?
            .query_row(
                params![job.task_id, job.step, item_col(job.item), job.token as i64],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::LeaseLost(job.name())),
        }
    }

    /// Deletes the job if the caller still holds its lease: the check and the
    /// removal in one statement, before anything else is written.
    fn take_leased(&self, job: &Job) -> Result<(), StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = ?3
                 AND state = 1 AND token = ?4",
            )?
            .execute(params![
                job.task_id,
                job.step,
                item_col(job.item),
                job.token as i64
            ])?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(job.name()))
        }
    }

    fn step_row(&self, task: &str, step: u32) -> Result<StepRow, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT key, task FROM steps WHERE task_id = ?1 AND idx = ?2")?
            .query_row(params![task, step], |r| {
                Ok(StepRow {
                    key: r.get(0)?,
                    task: r.get(1)?,
                })
            })?)
    }

    fn emit(
        &mut self,
        task: &str,
        kind: &str,
        step: Option<&StepRow>,
        data: Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<(), StoreError> {
        let seq = match self.event_seqs.get_mut(task) {
            Some(s) => {
                *s += 1;
                *s
            }
            None => {
                let last: i64 = self
                    .conn
                    .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ?1")?
                    .query_row(params![task], |r| r.get(0))?;
                if self.event_seqs.len() > 100_000 {
                    self.event_seqs.clear();
                }
                self.event_seqs.insert(task.to_owned(), last + 1);
                last + 1
            }
        };
        let text = data.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO events (task_id, seq, kind, step_id, step_task, data, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                task,
                seq,
                kind,
                step.map(|s| s.key.as_str()),
                step.map(|s| s.task.as_str()),
                text,
                now
            ])?;
        ev.push(Arc::new(TaskEvent {
            seq: seq as u64,
            kind: kind.to_owned(),
            task_id: task.to_owned(),
            step_id: step.map(|s| s.key.clone()),
            step_task: step.map(|s| s.task.clone()),
            data,
            timestamp: now,
        }));
        Ok(())
    }

    fn start_items(
        &mut self,
        job: &Job,
        items: u32,
        concurrency: u32,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.take_leased(job)?;
        if items == 0 {
            let mut t = Transition::default();
            self.finish_step(
                &job.task_id,
                job.step,
                Value::Array(Vec::new()),
                now,
                ev,
                &mut t,
            )?;
            t.events = ev.clone();
            return Ok(t);
        }
        let first = items.min(concurrency.max(1));
        let queue: String = self
            .conn
            .prepare_cached(
                "UPDATE steps SET items_total = ?1, items_done = 0, items_next = ?2
                 WHERE task_id = ?3 AND idx = ?4 RETURNING queue",
            )?
            .query_row(params![items, first, job.task_id, job.step], |r| r.get(0))?;
        for i in 0..first {
            self.push_job(&job.task_id, job.step, Some(i), &queue, now, 1)?;
        }
        Ok(Transition {
            woke: vec![queue],
            finished: None,
            events: ev.clone(),
        })
    }

    fn complete(
        &mut self,
        job: &Job,
        result: &Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.take_leased(job)?;
        let mut t = Transition::default();
        match job.item {
            None => self.finish_step(&job.task_id, job.step, result.clone(), now, ev, &mut t)?,
            Some(item) => {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO items (task_id, step, item, result) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![job.task_id, job.step, item, result.to_string()])?;
                // One statement counts the item done and claims the next item
                // to queue, if any (RETURNING gives the new values).
                let (done, total, next, queue): (u32, u32, u32, String) = self
                    .conn
                    .prepare_cached(
                        "UPDATE steps SET items_done = items_done + 1, items_next = items_next + 1
                         WHERE task_id = ?1 AND idx = ?2
                         RETURNING items_done, items_total, items_next, queue",
                    )?
                    .query_row(params![job.task_id, job.step], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?;
                // `items_next` counts past the end once every item is queued;
                // below it, `next - 1` is the item this completion claimed.
                if next <= total {
                    let item = next - 1;
                    self.push_job(&job.task_id, job.step, Some(item), &queue, now, 1)?;
                    t.woke.push(queue);
                }
                if done >= total {
                    let results: Vec<Value> = self
                        .conn
                        .prepare_cached(
                            "SELECT result FROM items WHERE task_id = ?1 AND step = ?2 ORDER BY item",
                        )?
                        .query_map(params![job.task_id, job.step], |r| r.get::<_, String>(0))?
                        .map(|r| r.map(|s| parse_json(Some(&s)).unwrap_or(Value::Null)))
                        .collect::<Result<_, _>>()?;
                    self.conn
                        .prepare_cached("DELETE FROM items WHERE task_id = ?1 AND step = ?2")?
                        .execute(params![job.task_id, job.step])?;
                    self.finish_step(
                        &job.task_id,
                        job.step,
                        Value::Array(results),
                        now,
                        ev,
                        &mut t,
                    )?;
                } else if (done * 100 / total) != ((done - 1) * 100 / total) {
                    let (mut steps_done, steps_total): (f64, f64) = self
                        .conn
                        .prepare_cached("SELECT steps_done, steps_total FROM tasks WHERE id = ?1")?
                        .query_row(params![job.task_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    if let Some((d, _)) = self.done_counts.get(&job.task_id) {
                        steps_done = *d as f64;
                    }
                    let progress =
                        ((steps_done + f64::from(done) / f64::from(total)) / steps_total * 100.0)
                            .min(100.0);
                    self.conn
                        .prepare_cached("UPDATE tasks SET progress = ?1 WHERE id = ?2")?
                        .execute(params![progress, job.task_id])?;
                    let row = self.step_row(&job.task_id, job.step)?;
                    self.emit(
                        &job.task_id,
                        "step:progress",
                        Some(&row),
                        json!({"done": done, "total": total, "progress": progress}),
                        now,
                        ev,
                    )?;
                }
            }
        }
        t.events = ev.clone();
        Ok(t)
    }

    fn finish_step(
        &mut self,
        task: &str,
        step: u32,
        result: Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
        t: &mut Transition,
    ) -> Result<(), StoreError> {
        let text = result.to_string();
        let (key, name, dependants): (String, String, String) = self
            .conn
            .prepare_cached(
                "UPDATE steps SET status = 'completed', result = ?1, completed_at = ?2
                 WHERE task_id = ?3 AND idx = ?4 RETURNING key, task, dependants",
            )?
            .query_row(params![text, now, task, step], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let row = StepRow { key, task: name };
        let (done, total) = self.count_done(task)?;
        // Progress is persisted when its whole percent moves, not per step:
        // a 10,000-step DAG writes the task row 100 times, not 10,000.
        if done >= total || (done * 100 / total) != ((done - 1) * 100 / total) {
            self.conn
                .prepare_cached(
                    "UPDATE tasks SET steps_done = ?1, progress = MIN(100.0, ?1 * 100.0 / steps_total)
                     WHERE id = ?2",
                )?
                .execute(params![done, task])?;
        }
        self.emit(
            task,
            "step:complete",
            Some(&row),
            json!({"result": result, "progress": (done as f64 * 100.0 / total as f64).min(100.0)}),
            now,
            ev,
        )?;
        let dependants: Vec<u32> = serde_json::from_str(&dependants).unwrap_or_default();
        for d in dependants {
            let (waiting, queue, status): (i64, String, String) = self
                .conn
                .prepare_cached(
                    "UPDATE steps SET waiting = waiting - 1 WHERE task_id = ?1 AND idx = ?2
                     RETURNING waiting, queue, status",
                )?
                .query_row(params![task, d], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            if waiting == 0 && status == "pending" {
                self.push_job(task, d, None, &queue, now, 1)?;
                if !t.woke.contains(&queue) {
                    t.woke.push(queue);
                }
            }
        }
        if done >= total {
            let final_result = if step as i64 == total - 1 {
                Some(text)
            } else {
                self.conn
                    .prepare_cached("SELECT result FROM steps WHERE task_id = ?1 AND idx = ?2")?
                    .query_row(params![task, total - 1], |r| r.get::<_, Option<String>>(0))?
            };
            self.conn
                .prepare_cached(
                    "UPDATE tasks SET status = 'completed', result = ?1, completed_at = ?2, progress = 100
                     WHERE id = ?3",
                )?
                .execute(params![final_result, now, task])?;
            self.emit(
                task,
                "pipeline:complete",
                None,
                json!({"status": "completed", "result": parse_json(final_result.as_deref())}),
                now,
                ev,
            )?;
            t.finished = Some(TaskStatus::Completed);
            self.forget(task);
        }
        Ok(())
    }

    /// Counts one more completed step of `task`; answers (done, total).
    fn count_done(&mut self, task: &str) -> Result<(i64, i64), StoreError> {
        if let Some(c) = self.done_counts.get_mut(task) {
            c.0 += 1;
            return Ok(*c);
        }
        // The step just marked completed is included in the count.
        let done: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM steps WHERE task_id = ?1 AND status = 'completed'",
            )?
            .query_row(params![task], |r| r.get(0))?;
        let total: i64 = self
            .conn
            .prepare_cached("SELECT steps_total FROM tasks WHERE id = ?1")?
            .query_row(params![task], |r| r.get(0))?;
        if self.done_counts.len() > 100_000 {
            self.done_counts.clear();
        }
        self.done_counts.insert(task.to_owned(), (done, total));
        Ok((done, total))
    }

    /// Drops the per-task counters of a finished task (they reload on demand).
    fn forget(&mut self, task: &str) {
        self.done_counts.remove(task);
        self.activated.remove(task);
    }

    fn end_task(
        &mut self,
        task: &str,
        status: TaskStatus,
        error: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<(), StoreError> {
        self.forget(task);
        self.conn
            .prepare_cached(
                "UPDATE tasks SET status = ?1, error = ?2, completed_at = ?3 WHERE id = ?4",
            )?
            .execute(params![status.as_str(), error, now, task])?;
        let reason = match status {
            TaskStatus::Cancelled => "cancelled",
            _ => "pipeline failed",
        };
        self.conn
            .prepare_cached(
                "UPDATE steps SET status = 'skipped', completed_at = ?1,
                    error = CASE WHEN status = 'running' THEN ?2 ELSE error END
                 WHERE task_id = ?3 AND status IN ('pending', 'running')",
            )?
            .execute(params![now, format!("aborted: {reason}"), task])?;
        self.conn
            .prepare_cached("DELETE FROM jobs WHERE task_id = ?1")?
            .execute(params![task])?;
        self.conn
            .prepare_cached("DELETE FROM items WHERE task_id = ?1")?
            .execute(params![task])?;
        self.emit(
            task,
            "pipeline:complete",
            None,
            json!({"status": status.as_str(), "error": error}),
            now,
            ev,
        )
    }

    fn fail(
        &mut self,
        job: &Job,
        error: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.check_lease(job)?;
        let row = self.step_row(&job.task_id, job.step)?;
        self.conn
            .prepare_cached(
                "UPDATE steps SET status = 'failed', error = ?1, completed_at = ?2
                 WHERE task_id = ?3 AND idx = ?4",
            )?
            .execute(params![error, now, job.task_id, job.step])?;
        self.emit(
            &job.task_id,
            "step:error",
            Some(&row),
            json!({"error": error, "attempt": job.attempt, "item": job.item}),
            now,
            ev,
        )?;
        let pipeline: i64 = self
            .conn
            .prepare_cached("SELECT pipeline FROM tasks WHERE id = ?1")?
            .query_row(params![job.task_id], |r| r.get(0))?;
        let task_error = if pipeline != 0 {
            format!("step {} ({}) failed: {error}", row.key, row.task)
        } else {
            error.to_owned()
        };
        self.end_task(&job.task_id, TaskStatus::Failed, &task_error, now, ev)?;
        Ok(Transition {
            woke: Vec::new(),
            finished: Some(TaskStatus::Failed),
            events: ev.clone(),
        })
    }

    fn cancel(
        &mut self,
        id: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        let status: Option<String> = self
            .conn
            .prepare_cached("SELECT status FROM tasks WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let Some(status) = status else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let status = TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending);
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "task {id} is already {}",
                status.as_str()
            )));
        }
        self.end_task(id, TaskStatus::Cancelled, "cancelled", now, ev)?;
        Ok(Transition {
            woke: Vec::new(),
            finished: Some(TaskStatus::Cancelled),
            events: ev.clone(),
        })
    }
}

/// Errors that can happen after an op has written: its writes must be undone.
fn is_dirty(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(_) | StoreError::Closed)
}

fn item_col(item: Option<u32>) -> i64 {
    item.map_or(-1, i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn conformance() {
        crate::store::conformance::run_all(|clock: Arc<ManualClock>| async move {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open_with_clock(dir.path(), clock).unwrap();
            // Keep the directory alive as long as the store.
            std::mem::forget(dir);
            Arc::new(store) as Arc<dyn Store>
        })
        .await;
    }

    #[tokio::test]
    async fn second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = SqliteStore::open(dir.path()).unwrap();
        let err = SqliteStore::open(dir.path())
            .err()
            .expect("must be refused");
        assert!(
            err.to_string().contains("in use by another dwa process"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn reopen_requeues_orphaned_leases_and_keeps_results() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            let t = crate::store::conformance::chain_task(2);
            id = t.id.clone();
            s.create_task(t).await.unwrap();
            let l = s.lease("default", "a", 10, 60_000).await.unwrap();
            s.complete(&l.jobs[0], json!({"n": 1})).await.unwrap();
            let l = s.lease("default", "a", 10, 60_000).await.unwrap();
            assert_eq!(l.jobs.len(), 1);
            // "crash" with step 1 leased.
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        let l = s.lease("default", "b", 10, 60_000).await.unwrap();
        assert_eq!(l.jobs.len(), 1, "the orphaned job is leased again at once");
        assert_eq!(l.jobs[0].step, 1);
        let r = s.step_results(&id, &[0]).await.unwrap();
        assert_eq!(r[0], Some(json!({"n": 1})));
    }
}
