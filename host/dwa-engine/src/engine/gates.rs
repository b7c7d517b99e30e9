//! Concurrency keys and rate limits (docs/tasks.md, "Concurrency keys and
//! rate limits"), passed as a job is about to run: its key is resolved,
//! a slot taken in the store (shared by every host), a rate start taken.
//! A job that cannot pass is deferred in the store, attempt unchanged: to
//! the time its rate allows, or for a short while to look for a slot again.
//! A slot is held while the job runs, renewed with its lease, and given
//! back once its outcome is recorded; a host that dies leaves its slots to
//! run out with its leases.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use dwa_core::plan::{Gate, MAX_GATE_KEY_BYTES, PlannedStep};
use dwa_core::step::StepError;
use dwa_core::template::Scope;
use dwa_store::Job;

use super::run::PrepError;
use super::{Engine, JobKey, TaskState};

/// How long a job that found its concurrency key full waits before it
/// looks again (give or take half, so that waiters do not move in step).
const SLOT_RETRY_MS: i64 = 500;

/// A concurrency slot a running job holds.
#[derive(Debug, Clone)]
pub(super) struct Held {
    key: String,
    holder: String,
    limit: u32,
}

/// Whether a job may run now.
pub(super) enum Gated {
    /// Its step has no concurrency key and no rate limit.
    Open,
    /// It may; holding this slot, if its step has a concurrency key.
    Go(Option<Held>),
    /// Not before `until` (ms), for `reason`.
    Wait {
        /// When to look again.
        until: i64,
        /// Why it waits.
        reason: String,
    },
}

fn job_key(job: &Job) -> JobKey {
    (job.task_id.clone(), job.step, job.item)
}

impl Engine {
    /// Takes the job's concurrency slot and rate start, or says how long it waits.
    pub(super) async fn pass_gates(
        &self,
        job: &Job,
        step: &PlannedStep,
        state: &TaskState,
        results: &HashMap<usize, Arc<Value>>,
        item: Option<&Value>,
    ) -> Result<Gated, PrepError> {
        if step.concurrency.is_none() && step.rate.is_none() {
            return Ok(Gated::Open);
        }
        let scope = Scope {
            payload: Some(&state.plan.spec.payload),
            steps: Some(results),
            item,
            index: job.item.map(|i| i as usize),
            max_bytes: Some(MAX_GATE_KEY_BYTES),
            ..Default::default()
        };
        let store_failed = |e: dwa_store::StoreError| PrepError::Store(e.to_string());
        // Both keys first: a key that does not resolve fails the step
        // before anything is taken.
        let mut slot_key = None;
        if let Some(g) = &step.concurrency {
            slot_key = Some((
                self.gate_key(g, &scope, &job.task_id, "concurrency")
                    .await?,
                g.limit,
            ));
        }
        let mut rate_key = None;
        if let Some(r) = &step.rate {
            let key = self.gate_key(r, &scope, &job.task_id, "rateLimit").await?;
            rate_key = Some((key, r.limit, r.per_ms.unwrap_or(1)));
        }
        let mut held = None;
        if let Some((key, limit)) = slot_key {
            let holder = format!("{}#{}", job.name(), job.token);
            let until = self.store.now_ms() + self.config.lease_ms;
            let got = self
                .store
                .acquire_slot(&key, limit, &holder, until)
                .await
                .map_err(store_failed)?;
            if !got {
                let jitter = rand::random_range(SLOT_RETRY_MS / 2..=SLOT_RETRY_MS * 3 / 2);
                return Ok(Gated::Wait {
                    until: self.store.now_ms() + jitter,
                    reason: format!("concurrency key {key:?} is at its limit of {limit}"),
                });
            }
            held = Some(Held { key, holder, limit });
        }
        if let Some((key, limit, per)) = rate_key {
            let at = self.store.take_rate(&key, limit, per).await;
            if !matches!(at, Ok(None))
                && let Some(h) = held.take()
            {
                // Not running now: the slot goes back (or runs out with the lease).
                let _ = self.store.release_slot(&h.key, &h.holder).await;
            }
            if let Some(until) = at.map_err(store_failed)? {
                return Ok(Gated::Wait {
                    until,
                    reason: format!("rate key {key:?} allows {limit} per {per} ms"),
                });
            }
        }
        Ok(Gated::Go(held))
    }

    /// A gate's key for this job: its template resolved, text as it is,
    /// anything else as JSON; at most `MAX_GATE_KEY_BYTES`.
    async fn gate_key(
        &self,
        g: &Gate,
        scope: &Scope<'_>,
        task_id: &str,
        field: &str,
    ) -> Result<String, StepError> {
        let v = g
            .key
            .resolve_with(scope, &self.functions_for(task_id))
            .await
            .map_err(|e| StepError::permanent(format!("{field}.key: {e}")))?;
        let key = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if key.is_empty() || key.len() > MAX_GATE_KEY_BYTES {
            return Err(StepError::permanent(format!(
                "{field}.key resolved to {} bytes; it must be 1-{MAX_GATE_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(key)
    }

    /// Notes that a running job holds a slot.
    pub(super) fn hold_slot(&self, job: &Job, held: Held) {
        Self::lock(&self.slots).insert(job_key(job), held);
    }

    /// Gives back the slot a job held, once its outcome is recorded.
    pub(super) async fn release_slot_of(&self, job: &Job) {
        let held = {
            let mut slots = Self::lock(&self.slots);
            // Most jobs hold none: no key to build for them.
            if slots.is_empty() {
                return;
            }
            slots.remove(&job_key(job))
        };
        if let Some(h) = held
            && let Err(e) = self.store.release_slot(&h.key, &h.holder).await
        {
            tracing::warn!(job = %job.name(), key = %h.key, error = %e, "could not give a concurrency slot back; it runs out with the lease");
        }
    }

    /// Extends the slots of running jobs with their leases (renew loop).
    pub(super) async fn renew_slots(&self) {
        let held: Vec<Held> = Self::lock(&self.slots).values().cloned().collect();
        let until = self.store.now_ms() + self.config.lease_ms;
        for h in held {
            match self
                .store
                .acquire_slot(&h.key, h.limit, &h.holder, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = %h.key, holder = %h.holder, "a concurrency slot ran out and was taken; the step runs on without it")
                }
                Err(e) => {
                    tracing::warn!(key = %h.key, error = %e, "could not renew a concurrency slot")
                }
            }
        }
    }

    /// Whether the job's wait is news (its first on this host): only then
    /// does its deferral record a `step:waiting` event.
    pub(super) fn first_wait(&self, job: &Job) -> bool {
        let mut noted = Self::lock(&self.waits_noted);
        if noted.len() > 100_000 {
            noted.clear();
        }
        noted.insert(job_key(job))
    }

    /// Forgets that a job waited (it runs now).
    pub(super) fn waited(&self, job: &Job) {
        Self::lock(&self.waits_noted).remove(&job_key(job));
    }
}
