//! Schedules on every store: created once, listed in id order, due on the
//! store's clock, and moved on by one compare-and-set per tick.

use std::sync::Arc;

use crate::clock::{Clock, ManualClock};
use crate::{NEVER, ScheduleRecord, ScheduleUpdate, Store, StoreError};

fn schedule(id: &str, next_at: i64, paused: bool) -> ScheduleRecord {
    ScheduleRecord {
        id: id.into(),
        spec: format!(r#"{{"cron":"* * * * *","name":"{id}"}}"#),
        paused,
        next_at,
        state: "{}".into(),
        created_at: 1,
    }
}

fn ids(v: &[ScheduleRecord]) -> Vec<&str> {
    v.iter().map(|s| s.id.as_str()).collect()
}

fn moved(expect: i64, next_at: i64, state: &str) -> ScheduleUpdate {
    ScheduleUpdate {
        expect,
        next_at,
        paused: false,
        state: state.into(),
    }
}

pub(super) async fn schedules_are_created_once_listed_in_id_order_and_deleted(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let later = c.now_ms() + 60_000;
    for id in ["b", "a", "c"] {
        s.create_schedule(schedule(id, later, false), 3)
            .await
            .unwrap();
    }
    assert!(matches!(
        s.create_schedule(schedule("a", later, false), 10).await,
        Err(StoreError::Duplicate(id)) if id == "a"
    ));
    assert!(
        matches!(
            s.create_schedule(schedule("d", later, false), 3).await,
            Err(StoreError::Conflict(m)) if m.contains("DWA_MAX_SCHEDULES")
        ),
        "a store at its limit refuses another schedule"
    );
    assert_eq!(ids(&s.schedules(None, 2).await.unwrap()), vec!["a", "b"]);
    assert_eq!(ids(&s.schedules(Some("b"), 2).await.unwrap()), vec!["c"]);
    assert_eq!(
        s.schedule("b").await.unwrap(),
        Some(schedule("b", later, false)),
        "a schedule reads back as it was stored"
    );
    assert!(s.delete_schedule("b").await.unwrap());
    assert!(!s.delete_schedule("b").await.unwrap());
    assert_eq!(s.schedule("b").await.unwrap(), None);
    assert_eq!(ids(&s.schedules(None, 10).await.unwrap()), vec!["a", "c"]);
    assert!(
        !s.update_schedule("b", moved(later, later + 1, "{}"))
            .await
            .unwrap(),
        "an update does not bring a deleted schedule back"
    );
    assert_eq!(s.schedule("b").await.unwrap(), None);
}

pub(super) async fn a_schedule_is_due_at_its_tick_and_one_update_per_tick_wins(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let t1 = c.now_ms() + 1_000;
    s.create_schedule(schedule("s", t1, false), 10)
        .await
        .unwrap();
    let (due, next) = s.due_schedules(10).await.unwrap();
    assert!(due.is_empty(), "not due before its tick");
    assert_eq!(next, Some(t1));
    c.advance(1_000);
    let (due, next) = s.due_schedules(10).await.unwrap();
    assert_eq!(ids(&due), vec!["s"]);
    assert_eq!(next, None);
    // Two hosts fired the tick: one records it, the other is told it lost.
    assert!(
        s.update_schedule("s", moved(t1, t1 + 1_000, r#"{"runs":1}"#))
            .await
            .unwrap()
    );
    assert!(
        !s.update_schedule("s", moved(t1, t1 + 1_000, r#"{"runs":9}"#))
            .await
            .unwrap()
    );
    let rec = s.schedule("s").await.unwrap().unwrap();
    assert_eq!(
        (rec.next_at, rec.state.as_str()),
        (t1 + 1_000, r#"{"runs":1}"#)
    );
    let (due, next) = s.due_schedules(10).await.unwrap();
    assert!(due.is_empty());
    assert_eq!(next, Some(t1 + 1_000));
}

pub(super) async fn paused_and_finished_schedules_are_never_due(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let now = c.now_ms();
    s.create_schedule(schedule("p", now, true), 10)
        .await
        .unwrap();
    s.create_schedule(schedule("q", now, false), 10)
        .await
        .unwrap();
    let (due, _) = s.due_schedules(10).await.unwrap();
    assert_eq!(ids(&due), vec!["q"], "a paused schedule is not due");
    // q has no tick left; p is resumed.
    assert!(
        s.update_schedule("q", moved(now, NEVER, "{}"))
            .await
            .unwrap()
    );
    assert!(s.update_schedule("p", moved(now, now, "{}")).await.unwrap());
    let (due, next) = s.due_schedules(10).await.unwrap();
    assert_eq!(ids(&due), vec!["p"]);
    assert_eq!(next, None, "a schedule with no tick left is never next");
    let paused = ScheduleUpdate {
        paused: true,
        ..moved(now, now + 5, "{}")
    };
    assert!(s.update_schedule("p", paused).await.unwrap());
    assert_eq!(s.due_schedules(10).await.unwrap(), (vec![], None));
    assert!(s.schedule("p").await.unwrap().unwrap().paused);
}
