//! Sub-tasks over HTTP on both stores: a step runs a whole task and takes
//! its result (one child per forEach item too), a failed child fails its
//! step, and cancelling the parent cancels the child.

use serde_json::json;

use super::common::*;
use super::redis_host;
use dwa_store::testing::RedisServer;

async fn a_subtask_runs_as_a_task_and_its_step_takes_its_result(host: &Host) {
    let child = json!({"type": "child", "payload": {"own": "yes"}, "steps": [
        {"id": "x", "task": "builtin.echo", "input": {"got": "{{payload.n}}", "own": "{{payload.own}}"}}
    ]});
    let parent = json!({"type": "parent", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"n": 2}},
        {"id": "child", "dependsOn": ["a"], "input": {"n": "{{steps.a.n}}"}, "subtask": child},
        {"id": "each", "dependsOn": ["a"], "forEach": [10, 20, 30], "input": {"n": "{{item}}"}, "subtask": child},
        {"id": "after", "task": "builtin.echo", "dependsOn": ["child", "each"],
         "input": {"one": "{{steps.child.got}}", "many": "{{steps.each}}"}}
    ]});
    let id = submit_ok(host, &parent).await;
    let done = wait_done(host, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        done["stepResults"]["child"],
        json!({"got": 2, "own": "yes"}),
        "{done:#}"
    );
    assert_eq!(
        done["result"]["many"],
        json!([{"got": 10, "own": "yes"}, {"got": 20, "own": "yes"}, {"got": 30, "own": "yes"}])
    );
    let events = read_events(&host.base, &id).await;
    let spawned: Vec<String> = events
        .iter()
        .filter(|(k, _)| k == "step:subtask")
        .filter_map(|(_, e)| e["data"]["taskId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        spawned.len(),
        4,
        "one child for the step, one per item: {events:?}"
    );
    let child_view = get_task(host, &spawned[0]).await;
    assert_eq!(child_view["status"], "completed");
    assert_eq!(child_view["parent"]["taskId"], id.as_str(), "{child_view}");
    assert!(
        ["child", "each"].contains(&child_view["parent"]["step"].as_str().unwrap_or_default()),
        "{child_view}"
    );
}

async fn a_failed_child_fails_its_step(host: &Host) {
    let parent = json!({"type": "parent", "steps": [
        {"id": "child", "subtask": {"type": "child", "steps": [
            {"task": "builtin.fail", "input": {"message": "child broke", "retryable": false}}
        ]}}
    ]});
    let id = submit_ok(host, &parent).await;
    let done = wait_done(host, &id).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sub-task") && error.contains("child broke"),
        "{error}"
    );
}

async fn cancelling_the_parent_cancels_its_child(host: &Host) {
    let parent = json!({"type": "parent", "steps": [
        {"id": "child", "subtask": {"type": "child", "steps": [
            {"id": "approval", "task": "builtin.wait", "input": {"timeout": 3_600_000}}
        ]}}
    ]});
    let id = submit_ok(host, &parent).await;
    let evs = events_until(host, &id, |evs| has(evs, "step:subtask")).await;
    let child = evs
        .iter()
        .find(|(k, _)| k == "step:subtask")
        .and_then(|(_, e)| e["data"]["taskId"].as_str())
        .unwrap_or_default()
        .to_owned();
    let r = client()
        .delete(host.url(&format!("/api/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v = wait_until(host, &child, "cancelled with its parent", |v| {
        v["status"] == "cancelled"
    })
    .await;
    assert_eq!(v["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtasks_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    a_subtask_runs_as_a_task_and_its_step_takes_its_result(&host).await;
    a_failed_child_fails_its_step(&host).await;
    cancelling_the_parent_cancels_its_child(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtasks_on_redis() {
    let redis = RedisServer::start();
    let (_dir, host) = redis_host(&redis, "host-a");
    a_subtask_runs_as_a_task_and_its_step_takes_its_result(&host).await;
    a_failed_child_fails_its_step(&host).await;
    cancelling_the_parent_cancels_its_child(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_subtask_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    for (step, field) in [
        (
            json!({"id": "c", "subtask": {"type": "c", "steps": [{"task": "no.such"}]}}),
            "steps[0].subtask.steps[0].task",
        ),
        (
            json!({"id": "c", "subtask": {"type": "builtin.echo", "idempotencyKey": "k"}}),
            "steps[0].subtask.idempotencyKey",
        ),
        (
            json!({"id": "c", "task": "builtin.subtask"}),
            "steps[0].subtask",
        ),
    ] {
        let task = json!({"type": "p", "steps": [step]});
        let (status, answer) = super::post_json(&host, "/api/tasks", &task).await;
        assert_eq!(status, 422, "{task} -> {answer}");
        assert_eq!(
            answer["error"]["details"][0]["field"], field,
            "{task} -> {answer}"
        );
    }
}
