//! The tables of the embedded store, and the upgrades of a data directory
//! written by an earlier dwa (`PRAGMA user_version` numbers them).

use rusqlite::Connection;

use crate::StoreError;

/// The schema this build writes; a data directory at a higher number was
/// written by a newer dwa and is refused rather than misread.
const VERSION: i64 = 4;

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
    steps_done INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    parent_task TEXT
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
    priority INTEGER NOT NULL DEFAULT 0,
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
    prio INTEGER NOT NULL DEFAULT 0,
    rank INTEGER NOT NULL DEFAULT 0,
    token INTEGER,
    owner TEXT,
    lease_until INTEGER,
    child TEXT,
    PRIMARY KEY (task_id, step, item)
) WITHOUT ROWID;
-- state 0 (due) by rank, the order of leasing; state 2 (delayed) by due time.
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs(queue, state, rank, seq);
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
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency(expires_at);
CREATE TABLE IF NOT EXISTS outbox (
    task_id TEXT NOT NULL,
    lifecycle TEXT NOT NULL,
    due_at INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, lifecycle)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(due_at);
-- Version 2: schedules (a table of its own; nothing to upgrade).
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules(paused, next_at);
-- Version 3: concurrency slots (held until a time, renewed with the
-- lease) and rate cells (the theoretical arrival time of the next start).
CREATE TABLE IF NOT EXISTS slots (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slots_by_until ON slots(until);
CREATE TABLE IF NOT EXISTS rates (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rates_by_tat ON rates(tat);
-- Version 4: sub-tasks know their parent's waiting job (parent, JSON) and
-- the job its child (jobs.child); a parent finds its live children by index.
CREATE INDEX IF NOT EXISTS tasks_by_parent ON tasks(parent_task) WHERE parent_task IS NOT NULL;
"#;

/// Brings the schema to [`VERSION`]: upgrades the tables of an older data
/// directory in place (in one transaction), then creates what is missing.
pub(super) fn prepare(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::Backend(format!(
            "the data directory was written by a newer dwa (schema {version}; this build knows {VERSION}): use that version or another DWA_DATA_DIR"
        )));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let upgraded = upgrade(conn).and_then(|()| {
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {VERSION}"))?;
        Ok(())
    });
    match upgraded {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

/// Upgrades in place. Version 3 to 4 (sub-tasks): tasks get their parent,
/// jobs their child. Version 0 to 1 (priorities): steps get their priority
/// and jobs their rank; queued jobs become delayed (state 2) at their due
/// time, so the first lease promotes those that are due with their rank.
/// (2 and 3 only added tables.)
fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let has = |table: &str, column: &str| -> Result<bool, StoreError> {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    if has("tasks", "type")? && !has("tasks", "parent")? {
        conn.execute_batch(
            "ALTER TABLE tasks ADD COLUMN parent TEXT;
             ALTER TABLE tasks ADD COLUMN parent_task TEXT;",
        )?;
    }
    if has("jobs", "run_at")? && !has("jobs", "child")? {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN child TEXT;")?;
    }
    if has("jobs", "run_at")? && !has("jobs", "rank")? {
        conn.execute_batch(
            "ALTER TABLE steps ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE jobs ADD COLUMN prio INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE jobs ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
             UPDATE jobs SET rank = run_at, state = 2 WHERE state = 0;
             DROP INDEX IF EXISTS jobs_ready;",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory of the first schema (before priorities), with a
    /// queued job: what an upgrade meets.
    const V0: &str = "
        CREATE TABLE steps (task_id TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL,
            task TEXT NOT NULL, queue TEXT NOT NULL, status TEXT NOT NULL, waiting INTEGER NOT NULL,
            dependants TEXT NOT NULL, items_total INTEGER, items_done INTEGER NOT NULL DEFAULT 0,
            items_next INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0, started_at INTEGER, completed_at INTEGER,
            PRIMARY KEY (task_id, idx)) WITHOUT ROWID;
        CREATE TABLE jobs (task_id TEXT NOT NULL, step INTEGER NOT NULL, item INTEGER NOT NULL,
            queue TEXT NOT NULL, state INTEGER NOT NULL, run_at INTEGER NOT NULL,
            attempt INTEGER NOT NULL, seq INTEGER NOT NULL, token INTEGER, owner TEXT,
            lease_until INTEGER, PRIMARY KEY (task_id, step, item)) WITHOUT ROWID;
        CREATE INDEX jobs_ready ON jobs(queue, state, run_at, seq);
        INSERT INTO jobs (task_id, step, item, queue, state, run_at, attempt, seq)
            VALUES ('t', 0, -1, 'default', 0, 1234, 1, 1);
    ";

    #[test]
    fn a_first_schema_data_dir_is_upgraded_with_its_queued_jobs() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V0).unwrap();
        prepare(&conn).unwrap();
        let (state, rank, prio): (i64, i64, i64) = conn
            .query_row("SELECT state, rank, prio FROM jobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((state, rank, prio), (2, 1234, 0));
        let old_index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_ready'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        // Preparing again is a no-op.
        prepare(&conn).unwrap();
    }

    #[test]
    fn a_schema_3_data_dir_gains_the_sub_task_links() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, type TEXT NOT NULL, queue TEXT NOT NULL,
                status TEXT NOT NULL, pipeline INTEGER NOT NULL, progress REAL NOT NULL DEFAULT 0,
                result TEXT, error TEXT, created_at INTEGER NOT NULL, started_at INTEGER,
                completed_at INTEGER, steps_total INTEGER NOT NULL,
                steps_done INTEGER NOT NULL DEFAULT 0);
             INSERT INTO tasks (id, type, queue, status, pipeline, created_at, steps_total)
                VALUES ('t', 'x', 'default', 'pending', 0, 1, 1);
             CREATE TABLE jobs (task_id TEXT NOT NULL, step INTEGER NOT NULL, item INTEGER NOT NULL,
                queue TEXT NOT NULL, state INTEGER NOT NULL, run_at INTEGER NOT NULL,
                attempt INTEGER NOT NULL, seq INTEGER NOT NULL, prio INTEGER NOT NULL DEFAULT 0,
                rank INTEGER NOT NULL DEFAULT 0, token INTEGER, owner TEXT, lease_until INTEGER,
                PRIMARY KEY (task_id, step, item)) WITHOUT ROWID;
             INSERT INTO jobs (task_id, step, item, queue, state, run_at, attempt, seq)
                VALUES ('t', 0, -1, 'default', 0, 1, 1, 1);
             PRAGMA user_version = 3;",
        )
        .unwrap();
        prepare(&conn).unwrap();
        let links: (Option<String>, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT t.parent, t.parent_task, j.child FROM tasks t JOIN jobs j ON j.task_id = t.id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            links,
            (None, None, None),
            "the rows are kept, with no links"
        );
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused_by_name() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        let e = prepare(&conn).unwrap_err().to_string();
        assert!(e.contains("newer dwa (schema 99"), "{e}");
    }
}
