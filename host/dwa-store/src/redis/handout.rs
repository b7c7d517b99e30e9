//! Jobs a batched script leased on the side of its items (for the idle
//! workers of a creation, or the worker of a completion), handed back to
//! the items that asked, per queue in the order they asked.

use std::collections::{HashMap, VecDeque};

use crate::Job;

/// The jobs a script run leased, by queue, not yet handed to an item.
pub(super) struct Handout(HashMap<String, VecDeque<Job>>);

impl Handout {
    /// The reply's jobs, each with the queue it was leased from, in order.
    pub(super) fn new(jobs: Vec<(String, Job)>) -> Handout {
        let mut by_queue: HashMap<String, VecDeque<Job>> = HashMap::new();
        for (q, j) in jobs {
            by_queue.entry(q).or_default().push_back(j);
        }
        Handout(by_queue)
    }

    /// How many of `queue`'s jobs are left.
    pub(super) fn left(&self, queue: &str) -> usize {
        self.0.get(queue).map_or(0, VecDeque::len)
    }

    /// The next (up to) `max` jobs of `queue`.
    pub(super) fn take(&mut self, queue: &str, max: usize) -> Vec<Job> {
        match self.0.get_mut(queue) {
            Some(l) => l.drain(..max.min(l.len())).collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(task: &str) -> (String, Job) {
        let j = Job {
            task_id: task.into(),
            step: 0,
            item: None,
            attempt: 1,
            token: 1,
        };
        ("q".into(), j)
    }

    #[test]
    fn items_get_their_queues_jobs_in_order_and_no_more_than_are_left() {
        let mut h = Handout::new(vec![job("a"), job("b"), job("c")]);
        let ids = |v: Vec<Job>| v.into_iter().map(|j| j.task_id).collect::<Vec<_>>();
        assert_eq!(ids(h.take("q", 2)), ["a", "b"]);
        assert_eq!(h.left("q"), 1);
        assert_eq!(ids(h.take("q", 5)), ["c"]);
        assert!(h.take("q", 1).is_empty());
        assert!(h.take("other", 1).is_empty());
    }
}
