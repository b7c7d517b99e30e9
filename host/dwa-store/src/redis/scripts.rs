//! dwa's Lua scripts, each lib.lua followed by its own body (one per
//! transition: lib.lua's header lists the keys), and how a task is laid
//! out as script arguments.

use redis::Script;

use crate::NewTask;

/// spawn.lua runs create.lua's body as a function, then parks the parent.
const SPAWN: &str = concat!(
    include_str!("lib.lua"),
    "\nlocal function create_tasks()\n",
    include_str!("create.lua"),
    "\nend\n",
    include_str!("spawn.lua")
);

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("lib.lua"), "\n", include_str!($file)))
    };
}

/// Every script of the store, hashed once (Redis caches them by SHA).
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) lease: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) start_items: Script,
    pub(super) retry: Script,
    pub(super) fail: Script,
    pub(super) release: Script,
    pub(super) cancel: Script,
    pub(super) resume: Script,
    pub(super) park: Script,
    pub(super) signal: Script,
    pub(super) reap: Script,
    pub(super) append: Script,
    pub(super) sweep: Script,
    pub(super) fx_claim: Script,
    pub(super) fx_settle: Script,
    pub(super) upgrade: Script,
    pub(super) end_step: Script,
    pub(super) defer: Script,
    pub(super) spawn: Script,
    pub(super) kids: Script,
    pub(super) slot_acquire: Script,
    pub(super) slot_release: Script,
    pub(super) rate_take: Script,
    pub(super) sch_create: Script,
    pub(super) sch_update: Script,
    pub(super) sch_delete: Script,
    pub(super) sch_due: Script,
    pub(super) sch_list: Script,
    pub(super) depth: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            create: script!("create.lua"),
            lease: script!("lease.lua"),
            renew: script!("renew.lua"),
            complete: script!("complete.lua"),
            start_items: script!("start_items.lua"),
            retry: script!("retry.lua"),
            fail: script!("fail.lua"),
            release: script!("release.lua"),
            cancel: script!("cancel.lua"),
            resume: script!("resume.lua"),
            park: script!("park.lua"),
            signal: script!("signal.lua"),
            reap: script!("reap.lua"),
            append: script!("append.lua"),
            sweep: script!("sweep.lua"),
            fx_claim: script!("fx_claim.lua"),
            fx_settle: script!("fx_settle.lua"),
            upgrade: script!("upgrade.lua"),
            end_step: script!("end_step.lua"),
            defer: script!("defer.lua"),
            spawn: Script::new(SPAWN),
            kids: script!("kids.lua"),
            slot_acquire: script!("slot_acquire.lua"),
            slot_release: script!("slot_release.lua"),
            rate_take: script!("rate_take.lua"),
            sch_create: script!("sch_create.lua"),
            sch_update: script!("sch_update.lua"),
            sch_delete: script!("sch_delete.lua"),
            sch_due: script!("sch_due.lua"),
            sch_list: script!("sch_list.lua"),
            depth: script!("depth.lua"),
        }
    }
}

/// A task to create, and the jobs its caller's idle workers would take
/// from a queue in the same script ([`crate::Store::create_and_lease`]).
pub(super) struct Creation {
    pub(super) task: NewTask,
    pub(super) lease: Option<LeaseAsk>,
}

/// Up to `max` due jobs of `queue`, leased for `lease_ms`.
pub(super) struct LeaseAsk {
    pub(super) queue: String,
    pub(super) max: usize,
    pub(super) lease_ms: i64,
}

/// The arguments of create.lua for `tasks` (spawn.lua takes one task the same way).
pub(super) fn create_args(tasks: Vec<Creation>) -> Vec<String> {
    let mut args = Vec::with_capacity(1 + tasks.len() * 15);
    args.push(tasks.len().to_string());
    for Creation { task, lease } in tasks {
        args.push(task.id);
        args.push(task.task_type);
        args.push(task.queue);
        args.push(if task.is_pipeline { "1" } else { "0" }.into());
        args.push(task.created_at.to_string());
        args.push(task.spec);
        match task.idempotency {
            Some(i) => {
                args.push(i.key);
                args.push(i.body_hash);
                args.push(i.expires_at.to_string());
            }
            None => args.extend([String::new(), String::new(), "0".into()]),
        }
        let fx = task.effects;
        let mut mask = String::new();
        for (has, c) in [
            (fx.on_pending, 'p'),
            (fx.on_success, 's'),
            (fx.on_error, 'e'),
        ] {
            if has {
                mask.push(c);
            }
        }
        args.push(mask);
        args.push(task.run_at.unwrap_or(0).to_string());
        match lease {
            Some(l) => args.extend([l.queue, l.max.to_string(), l.lease_ms.to_string()]),
            None => args.extend([String::new(), "0".into(), "0".into()]),
        }
        args.push(task.steps.len().to_string());
        for s in task.steps {
            args.push(s.key);
            args.push(s.task);
            args.push(s.queue);
            args.push(s.priority.to_string());
            args.push(s.waiting_for.to_string());
            let deps: Vec<String> = s.dependants.iter().map(u32::to_string).collect();
            args.push(deps.join(","));
        }
    }
    args
}
