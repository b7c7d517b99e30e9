//! Who follows which task's event stream: each SSE client holds a slot,
//! at most `DWA_MAX_FOLLOWERS_PER_TASK` per task and `DWA_MAX_FOLLOWERS`
//! per host (docs/configuration.md, "Limits"), since every follower is a
//! task on the host and a reader of the store. A slot is given back when
//! its stream ends or its client goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dwa_core::limits::Exceeded;

/// The slots in use, per task and in all.
#[derive(Debug)]
pub struct Followers {
    per_task: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_task: HashMap<String, usize>,
}

/// One follower's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    followers: Arc<Followers>,
    task: String,
}

impl Followers {
    /// At most `per_task` followers of one task and `total` in all.
    pub fn new(per_task: usize, total: usize) -> Arc<Self> {
        Arc::new(Followers {
            per_task,
            total,
            held: Mutex::default(),
        })
    }

    /// A slot to follow `task`, or the limit that is full.
    pub fn join(self: &Arc<Self>, task: &str) -> Result<Slot, Exceeded> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.total >= self.total {
            return Err(Exceeded {
                what: "the number of event streams open on this host",
                value: Some(held.total + 1),
                max: self.total,
                var: "DWA_MAX_FOLLOWERS",
            });
        }
        let mine = held.by_task.get(task).copied().unwrap_or(0);
        if mine >= self.per_task {
            return Err(Exceeded {
                what: "the number of event streams open on this task",
                value: Some(mine + 1),
                max: self.per_task,
                var: "DWA_MAX_FOLLOWERS_PER_TASK",
            });
        }
        held.total += 1;
        *held.by_task.entry(task.to_owned()).or_default() += 1;
        Ok(Slot {
            followers: self.clone(),
            task: task.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .followers
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_task.get_mut(&self.task) {
            *n -= 1;
            if *n == 0 {
                held.by_task.remove(&self.task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_takes_at_most_its_share_and_the_host_at_most_its_total() {
        let f = Followers::new(2, 3);
        let a1 = f.join("a");
        let a2 = f.join("a");
        assert!(a1.is_ok() && a2.is_ok());
        let e = f.join("a").err();
        assert_eq!(e.map(|e| e.var), Some("DWA_MAX_FOLLOWERS_PER_TASK"));
        let b1 = f.join("b");
        assert!(b1.is_ok());
        assert_eq!(f.join("c").err().map(|e| e.var), Some("DWA_MAX_FOLLOWERS"));
        drop(a1);
        assert!(f.join("c").is_ok(), "a slot given back is free again");
    }
}
