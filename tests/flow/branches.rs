//! Branches and failure policies over HTTP, on both stores: a step's `if`
//! skips it, `onFailure` lets a task go on past a failed step (`continue`,
//! with `{{steps.x.$error}}` for later steps) or without its dependants
//! (`skipDependants`).

use serde_json::{Value, json};

use super::common::*;
use super::{post_json, redis_host};
use dwa_store::testing::RedisServer;

/// The status of each step of a finished task, by id.
fn statuses(task: &Value) -> Vec<(String, String)> {
    task["stepStatus"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let field = |f: &str| s[f].as_str().unwrap_or_default().to_owned();
                    (field("id"), field("status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn a_branch_runs_only_where_its_condition_holds(host: &Host) {
    let task = |kind: &str| {
        json!({"type": "route", "payload": {"kind": kind}, "steps": [
            {"id": "classify", "task": "builtin.echo", "input": {"label": "{{payload.kind}}", "score": 0.9}},
            {"id": "speech", "task": "builtin.echo", "dependsOn": ["classify"],
             "if": "{{ steps.classify.label == 'speech' and steps.classify.score > 0.5 }}",
             "input": {"went": "speech"}},
            {"id": "music", "task": "builtin.echo", "dependsOn": ["classify"],
             "if": "{{ steps.classify.label in ['music', 'song'] }}", "input": {"went": "music"}},
            {"id": "join", "task": "builtin.echo", "dependsOn": ["speech", "music"],
             "input": {"speech": "{{steps.speech}}", "music": "{{steps.music}}"}}
        ]})
    };
    let id = submit_ok(host, &task("speech")).await;
    let done = wait_done(host, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        statuses(&done),
        pairs(&[
            ("classify", "completed"),
            ("speech", "completed"),
            ("music", "skipped"),
            ("join", "completed")
        ])
    );
    assert_eq!(
        done["result"],
        json!({"speech": {"went": "speech"}, "music": null}),
        "{done:#}"
    );
    let events = read_events(&host.base, &id).await;
    let skip = events
        .iter()
        .find(|(k, _)| k == "step:skip")
        .map(|(_, d)| d.clone());
    assert!(
        skip.as_ref()
            .and_then(|d| d["data"]["reason"].as_str())
            .is_some_and(|r| r.contains("is false")),
        "{skip:?}"
    );
    let id = submit_ok(host, &task("song")).await;
    let done = wait_done(host, &id).await;
    assert_eq!(
        statuses(&done),
        pairs(&[
            ("classify", "completed"),
            ("speech", "skipped"),
            ("music", "completed"),
            ("join", "completed")
        ])
    );
}

async fn failure_policies_let_a_task_go_on(host: &Host) {
    let fail = json!({"message": "no transcript", "retryable": false});
    let task = json!({"type": "tolerant", "steps": [
        {"id": "a", "task": "builtin.fail", "input": fail, "onFailure": "continue"},
        {"id": "b", "task": "builtin.echo", "dependsOn": ["a"],
         "input": {"why": "{{steps.a.$error}}", "failed": "{{ steps.a }}"}},
        {"id": "c", "task": "builtin.fail", "input": fail, "onFailure": "skipDependants"},
        {"id": "d", "task": "builtin.echo", "dependsOn": ["c"], "input": {}},
        {"id": "e", "task": "builtin.echo", "dependsOn": ["d", "b"], "input": {}},
        {"id": "f", "task": "builtin.echo", "dependsOn": ["b"], "input": {"last": true}}
    ]});
    let id = submit_ok(host, &task).await;
    let done = wait_done(host, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        statuses(&done),
        pairs(&[
            ("a", "failed"),
            ("b", "completed"),
            ("c", "failed"),
            ("d", "skipped"),
            ("e", "skipped"),
            ("f", "completed")
        ])
    );
    assert_eq!(
        done["stepResults"]["b"]["why"], "no transcript (attempt 1)",
        "{done:#}"
    );
    assert_eq!(
        done["stepResults"]["b"]["failed"],
        json!({"$error": "no transcript (attempt 1)"})
    );
    assert_eq!(done["result"], json!({"last": true}));
    let a = &done["stepStatus"][0];
    assert_eq!(a["error"], "no transcript (attempt 1)", "{a}");
    let events = read_events(&host.base, &id).await;
    let tolerated = events
        .iter()
        .filter(|(k, d)| k == "step:error" && d["data"]["tolerated"] == true)
        .count();
    assert_eq!(tolerated, 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_and_failure_policies_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    a_branch_runs_only_where_its_condition_holds(&host).await;
    failure_policies_let_a_task_go_on(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_and_failure_policies_on_redis() {
    let redis = RedisServer::start();
    let (_dir, host) = redis_host(&redis, "host-a");
    a_branch_runs_only_where_its_condition_holds(&host).await;
    failure_policies_let_a_task_go_on(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_condition_or_policy_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let with = |second: Value| {
        json!({"type": "t", "steps": [
            {"id": "a", "task": "builtin.echo", "input": {}},
            second
        ]})
    };
    for (step, status, field, says) in [
        (
            json!({"id": "b", "task": "builtin.echo", "dependsOn": ["a"], "if": "{{ steps.a.x = 1 }}"}),
            422,
            "steps[1].if",
            "unexpected",
        ),
        (
            json!({"id": "b", "task": "builtin.echo", "if": "{{ steps.nope.x == 1 }}"}),
            422,
            "steps[1].if",
            "unknown step",
        ),
        (
            json!({"id": "b", "task": "builtin.echo", "dependsOn": ["a"], "if": "steps.a.x == 1"}),
            422,
            "steps[1].if",
            "one {{ ... }}",
        ),
        (
            json!({"id": "b", "task": "builtin.echo", "onFailure": "ignore"}),
            400,
            "steps[1].onFailure",
            "unknown variant",
        ),
    ] {
        let (got, answer) = post_json(&host, "/api/tasks", &with(step.clone())).await;
        assert_eq!(got, status, "{step} -> {answer}");
        let detail = &answer["error"]["details"][0];
        assert_eq!(detail["field"], field, "{step} -> {answer}");
        assert!(
            detail["message"].as_str().is_some_and(|m| m.contains(says)),
            "{step} -> {answer}"
        );
    }
}
