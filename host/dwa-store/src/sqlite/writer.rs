//! The store's only writer: a thread that drains every request waiting,
//! applies them in one transaction (each op checks what can refuse it
//! before it writes; savepoints only when an op failed after writing),
//! commits once, answers the callers and hands the commit's events to the
//! sync thread, which releases them once the commit is on disk
//! ([`super::durability`]). [`ops`] has one function per operation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc;

use dwa_core::model::TaskEvent;
use rusqlite::Connection;

use super::durability::{Committed, Durability};
use super::{MAX_BATCH, Op, Reply, Request, is_dirty};
use crate::StoreError;
use crate::clock::Clock;

mod branch;
mod events;
mod gates;
mod ops;
mod outbox;
mod resume;
mod subtask;
mod wait;

pub(super) use gates::{GateOp, GateReply};

/// Tasks a per-task memo of the writer holds before it is dropped whole:
/// each reloads from the store on demand, and a long-lived host stays bounded.
pub(super) const MEMO_TASKS: usize = 100_000;

/// Remembers `value` for `task` in a per-task memo of the writer.
pub(super) fn remember<V>(memo: &mut HashMap<String, V>, task: &str, value: V) {
    if memo.len() > MEMO_TASKS {
        memo.clear();
    }
    memo.insert(task.to_owned(), value);
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) job_seq: i64,
    pub(super) token: i64,
    /// Last event seq per task: the writer is the store's only writer, so
    /// counting here saves a read-modify-write of the task row per event.
    pub(super) event_seqs: HashMap<String, i64>,
    /// Tasks whose appended events reached their cap (an `events:capped`
    /// was recorded). Kept here only: after a restart a task that keeps
    /// appending may record a second `events:capped`, no more.
    pub(super) capped: HashSet<String>,
    /// Tasks known to be active already (pending → active happens once).
    pub(super) activated: HashSet<String>,
    /// Completed and total steps per running task (same reasoning).
    pub(super) done_counts: HashMap<String, (i64, i64)>,
    /// The clock reading of the batch being applied.
    pub(super) now: i64,
    /// Per queue, no later than its earliest delayed job's due time (absent:
    /// unknown), so that a lease looks for delayed jobs to promote only when
    /// one may be due: one statement less per step on the hot path.
    pub(super) delayed_due: HashMap<String, i64>,
    /// Commits made so far: each one's number for the sync thread.
    pub(super) commits: u64,
    /// Told of each commit, so that waiters know what the sync thread owes.
    pub(super) durability: Arc<Durability>,
}

pub(super) struct Applied {
    pub(super) reply: Reply,
    pub(super) events: Vec<Arc<TaskEvent>>,
}

/// Per-step data the transitions need.
pub(super) struct StepRow {
    pub(super) key: String,
    pub(super) task: String,
}

impl Writer {
    pub(super) fn run(&mut self, rx: mpsc::Receiver<Request>, synced: mpsc::Sender<Committed>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if let Some(why) = self.durability.failed() {
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Backend(why.to_string())));
                }
                continue;
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
                    self.commits += 1;
                    let needs_sync = !batch.iter().all(|r| r.op.gives_jobs_back_when_lost());
                    self.durability.committed(self.commits, needs_sync);
                    let mut events: Vec<Arc<TaskEvent>> = Vec::new();
                    for (req, r) in batch.into_iter().zip(results) {
                        let reply = r.map(|a| {
                            events.extend(a.events);
                            a.reply
                        });
                        let _ = req.reply.send(reply);
                    }
                    let _ = synced.send(Committed {
                        seq: self.commits,
                        needs_sync,
                        events,
                    });
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
                    self.delayed_due.clear();
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
            self.capped.clear();
            self.activated.clear();
            self.done_counts.clear();
            self.delayed_due.clear();
        }
        end?;
        Ok(results)
    }

    fn apply(&mut self, op: &Op, now: i64) -> Result<Applied, StoreError> {
        let mut ev = Vec::new();
        let mut reply = match op {
            Op::Create(t) => Reply::Transition(self.create(t, now)?),
            Op::CreateAndLease {
                task,
                queue,
                owner,
                max,
                lease_ms,
            } => {
                // Not noted: the lease's step:start events are the handed
                // jobs' to report, and a creation records none of its own.
                let mut t = self.create(task, now)?;
                let leased = self.lease(queue, owner, *max, *lease_ms, false, &mut ev)?;
                t.leased_dry(queue, *max, leased.jobs.len(), task.run_at.is_some());
                Reply::TransitionAndJobs(t, leased.jobs)
            }
            Op::Lease {
                queue,
                owner,
                max,
                lease_ms,
            } => Reply::Leased(self.lease(queue, owner, *max, *lease_ms, true, &mut ev)?),
            Op::Renew(jobs, lease_ms) => Reply::Bools(self.renew(jobs, now + lease_ms)?),
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
                let mut t = self.complete(job, result, now, &mut ev)?;
                // Noted before the lease adds its own job's events.
                t.note(&ev);
                let leased = self.lease(queue, owner, 1, *lease_ms, false, &mut ev)?;
                Reply::TransitionAndJobs(t, leased.jobs)
            }
            Op::Retry(job, run_at, error) => {
                Reply::Transition(self.retry(job, *run_at, error, now, &mut ev)?)
            }
            Op::Fail(job, error) => Reply::Transition(self.fail(job, error, now, &mut ev)?),
            Op::Release(jobs) => Reply::Count(self.release(jobs)?),
            Op::Cancel(id) => Reply::Transition(self.cancel(id, now, &mut ev)?),
            Op::Resume(id, spec, effects) => {
                Reply::Transition(self.resume(id, spec.as_deref(), *effects, now, &mut ev)?)
            }
            Op::Park(job, until, data) => {
                Reply::Transition(self.park(job, *until, data.clone(), now, &mut ev)?)
            }
            Op::Signal(id, step, result, until) => {
                Reply::Transition(self.signal(id, *step, result.clone(), *until, now, &mut ev)?)
            }
            Op::Reap => Reply::Count(self.reap(now)?),
            Op::Purge(before, limit) => Reply::Count(self.purge(*before, *limit)?),
            Op::ClaimEffects(max, lease) => Reply::Due(self.claim_effects(*max, now, *lease)?),
            Op::SettleEffects(due, how) => {
                self.settle_effects(due, how)?;
                Reply::Count(1)
            }
            Op::Append(id, events, cap) => {
                self.append(id, events, *cap, now, &mut ev)?;
                Reply::Events(ev.clone())
            }
            Op::Schedule(op) => Reply::Count(self.schedule_op(op)?),
            Op::EndStep(job, end) => Reply::Transition(self.end_step(job, end, now, &mut ev)?),
            Op::Gate(op) => Reply::Gate(self.gate(op, now)?),
            Op::Spawn(job, key, child, until) => {
                Reply::Transition(self.spawn(job, key, child, *until, now, &mut ev)?)
            }
            Op::Defer(job, until, reason) => {
                Reply::Transition(self.defer(job, *until, reason.as_deref(), now, &mut ev)?)
            }
        };
        if let Reply::Transition(t) = &mut reply {
            t.note(&ev);
        }
        Ok(Applied { reply, events: ev })
    }
}
