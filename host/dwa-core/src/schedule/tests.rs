use super::*;

/// 2026-12-01T00:00:00Z, a Tuesday in winter (Paris is UTC+1).
const T0: i64 = 1_796_083_200_000;
const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;

fn cadence(cron: &str) -> Cadence {
    match Cadence::parse(cron, "UTC") {
        Ok(c) => c,
        Err(e) => panic!("{cron:?} should parse: {}", e.message),
    }
}

fn spec(cron: &str) -> ScheduleSpec {
    match serde_json::from_value(serde_json::json!({"cron": cron, "task": {"type": "t"}})) {
        Ok(s) => s,
        Err(e) => panic!("schedule should parse: {e}"),
    }
}

#[test]
fn t0_is_the_instant_the_tests_assume() {
    assert_eq!(
        Utc.timestamp_millis_opt(T0)
            .single()
            .map(|t| t.to_rfc3339()),
        Some("2026-12-01T00:00:00+00:00".to_owned())
    );
}

#[test]
fn five_fields_tick_on_minutes_and_six_on_seconds() {
    assert_eq!(cadence("* * * * *").next_after(T0), Some(T0 + MIN));
    assert_eq!(
        cadence("*/5 * * * * *").next_after(T0 + 1),
        Some(T0 + 5 * SEC)
    );
    // A time between ticks (sub-second) goes to the next whole tick.
    assert_eq!(cadence("* * * * * *").next_after(T0 + 500), Some(T0 + SEC));
}

#[test]
fn a_time_zone_moves_the_ticks_with_daylight_saving() {
    let paris = match Cadence::parse("0 9 * * *", "Europe/Paris") {
        Ok(c) => c,
        Err(e) => panic!("should parse: {}", e.message),
    };
    // 09:00 in Paris is 08:00 UTC in December...
    assert_eq!(paris.next_after(T0), Some(T0 + 8 * 60 * MIN));
    // ...and 07:00 UTC on 2027-07-01 (summer time).
    let july = 1_814_400_000_000; // 2027-06-30T00:00:00Z
    assert_eq!(paris.next_after(july), Some(july + 7 * 60 * MIN));
}

#[test]
fn bad_fields_are_refused_naming_the_field() {
    let bad = |s: ScheduleSpec| match check(&s, T0) {
        Ok(_) => panic!("{s:?} should be refused"),
        Err(e) => e.field,
    };
    assert_eq!(bad(spec("every minute")), "cron");
    assert_eq!(bad(spec(&"* ".repeat(200))), "cron");
    assert_eq!(
        bad(spec("0 0 0 30 2 *")),
        "cron",
        "February 30th never comes"
    );
    let mut s = spec("* * * * *");
    s.timezone = "Mars/Olympus".into();
    assert_eq!(bad(s), "timezone");
    let mut s = spec("* * * * *");
    s.catch_up_limit = 0;
    assert_eq!(bad(s.clone()), "catchUpLimit");
    s.catch_up_limit = MAX_CATCH_UP + 1;
    assert_eq!(bad(s), "catchUpLimit");
    let mut s = spec("* * * * *");
    s.id = Some("no spaces".into());
    assert_eq!(bad(s), "id");
    assert!(check(&spec("@hourly"), T0).is_ok());
}

#[test]
fn unknown_fields_and_policies_are_refused() {
    let parse = |v: serde_json::Value| serde_json::from_value::<ScheduleSpec>(v).is_ok();
    assert!(!parse(
        serde_json::json!({"cron": "* * * * *", "task": {}, "every": 5})
    ));
    assert!(!parse(
        serde_json::json!({"cron": "* * * * *", "task": {}, "overlap": "queue"})
    ));
    assert!(parse(
        serde_json::json!({"cron": "* * * * *", "task": {}, "overlap": "cancelPrevious", "catchUp": "all"})
    ));
}

#[test]
fn an_on_time_tick_fires_under_every_policy() {
    let c = cadence("* * * * *");
    for policy in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
        assert_eq!(
            c.due(T0, T0 + 200, policy, 10),
            Due {
                fire: vec![T0],
                next_at: Some(T0 + MIN)
            },
            "{policy:?}"
        );
    }
}

#[test]
fn a_tick_not_yet_come_fires_nothing() {
    let c = cadence("* * * * *");
    assert_eq!(
        c.due(T0 + MIN, T0 + 10, CatchUp::All, 10),
        Due {
            fire: vec![],
            next_at: Some(T0 + MIN)
        }
    );
}

#[test]
fn catch_up_none_drops_missed_ticks_but_runs_a_late_one() {
    let c = cadence("0 * * * *"); // hourly
    // Down for three hours and a half: every tick is long past.
    let now = T0 + 210 * MIN;
    let d = c.due(T0, now, CatchUp::None, 10);
    assert_eq!(d.fire, Vec::<i64>::new());
    assert_eq!(d.next_at, Some(T0 + 240 * MIN));
    // Thirty seconds late is late, not missed: the newest tick runs once.
    let d = c.due(T0, T0 + 180 * MIN + 30 * SEC, CatchUp::None, 10);
    assert_eq!(d.fire, vec![T0 + 180 * MIN]);
}

#[test]
fn catch_up_latest_runs_the_newest_missed_tick_once() {
    let c = cadence("0 * * * *");
    let d = c.due(T0, T0 + 210 * MIN, CatchUp::Latest, 10);
    assert_eq!(d.fire, vec![T0 + 180 * MIN]);
}

#[test]
fn catch_up_all_runs_each_missed_tick_oldest_first_up_to_the_limit() {
    let c = cadence("0 * * * *");
    let d = c.due(T0, T0 + 210 * MIN, CatchUp::All, 10);
    assert_eq!(
        d.fire,
        vec![T0, T0 + 60 * MIN, T0 + 120 * MIN, T0 + 180 * MIN]
    );
    let d = c.due(T0, T0 + 210 * MIN, CatchUp::All, 2);
    assert_eq!(d.fire, vec![T0 + 120 * MIN, T0 + 180 * MIN]);
}

#[test]
fn a_long_outage_costs_a_bounded_walk() {
    // A year of every-second ticks missed: the newest hundred at most.
    let c = cadence("* * * * * *");
    let year = 365 * 24 * 60 * MIN;
    let d = c.due(T0, T0 + year, CatchUp::All, MAX_CATCH_UP + 50);
    assert_eq!(d.fire.len(), MAX_CATCH_UP as usize);
    assert_eq!(d.fire.last(), Some(&(T0 + year)));
}

#[test]
fn the_state_keeps_only_the_newest_runs() {
    let mut s = ScheduleState::default();
    for i in 0..(RECENT_RUNS as i64 + 5) {
        s.ran(i, format!("task-{i}"));
    }
    assert_eq!(s.runs, RECENT_RUNS as u64 + 5);
    assert_eq!(s.recent.len(), RECENT_RUNS);
    assert_eq!(s.recent[0].tick, 5);
    assert_eq!(
        s.last_task(),
        Some(format!("task-{}", RECENT_RUNS + 4).as_str())
    );
}
