//! End-to-end tests: the real `dwa serve` binary, over HTTP, against a test
//! server that speaks the backend protocol.
//!
//! One cohesive suite past 800 lines on purpose: every file under `tests/`
//! is a test binary of its own, and each costs a link of the host.

mod common;

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

fn start(fake: &Fake, extra: &[(&str, String)]) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let host = start_in(dir.path(), fake, extra);
    (dir, host)
}

fn start_in(dir: &std::path::Path, fake: &Fake, extra: &[(&str, String)]) -> Host {
    let mut env = vec![("LOCAL_BACKEND_URL", fake.base.clone())];
    env.extend(extra.iter().cloned());
    tokio::task::block_in_place(|| Host::start(dir, &env))
}

fn video_analysis() -> Value {
    json!({
        "type": "video-analysis",
        "payload": {"url": "https://videos.example/talk.mp4"},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "frames", "task": "scenes.detect", "dependsOn": ["download"]},
            {"id": "audio", "task": "audio.extract", "dependsOn": ["download"]},
            {"id": "caps", "task": "florence.caption", "dependsOn": ["frames"],
             "forEach": "{{steps.frames.scenes}}", "forEachConcurrency": 4,
             "input": {"image_path": "{{item.keyframe}}", "scene_index": "{{index}}"}},
            {"id": "transcript", "task": "whisper.transcribe", "dependsOn": ["audio"]},
            {"id": "summary", "task": "llm.summarize", "dependsOn": ["caps", "transcript"],
             "input": {"text": "{{steps.transcript.text}} | {{steps.caps[0].caption}}"}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_task_runs_on_the_backend_that_serves_it() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "download.file", "payload": {"url": "https://x.example/a.mp4"}}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"], json!({"path": "/media/a.mp4", "bytes": 1024}));
    assert_eq!(
        t["progress"],
        json!(100),
        "a whole number, as the seed writes it"
    );
    assert!(t["startedAt"].is_string() && t["completedAt"].is_string());
    assert!(
        t.get("stepStatus").is_none(),
        "single tasks carry no pipeline fields"
    );
    let calls = fake.calls_of("download.file");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].input, json!({"url": "https://x.example/a.mp4"}));
    assert_eq!(calls[0].task_id, id);
    assert_eq!(calls[0].step_id, "download.file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podcast_pipeline_runs_in_order_with_resolved_inputs() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({
            "type": "podcast",
            "payload": {"url": "https://pods.example/ep1.mp3", "voice": "nova"},
            "steps": [
                {"task": "download.file", "input": {"url": "{{payload.url}}"}},
                {"task": "whisper.transcribe", "input": {"audio": "{{steps.0.path}}"}},
                {"task": "llm.summarize"},
                {"task": "tts.speak", "input": {"text": "{{steps.2.summary}}", "voice": "{{payload.voice}}"}}
            ]
        }),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["finalResult"],
        json!({"audioUrl": "https://cdn.example/out.mp3", "voice": "nova"})
    );
    assert_eq!(t["result"], t["finalResult"]);
    assert_eq!(t["steps"].as_array().unwrap().len(), 4);
    assert_eq!(
        t["stepResults"]["1"],
        json!({"text": "transcript of /media/ep1.mp3"})
    );
    for s in t["stepStatus"].as_array().unwrap() {
        assert_eq!(s["status"], "completed");
        assert_eq!(s["attempts"], 1);
    }
    assert!(t["totalDuration"].as_i64().unwrap() >= 0);
    assert_eq!(
        t["parallelGroups"].as_array().unwrap().len(),
        4,
        "a sequence never overlaps"
    );
    // Inputs as resolved, and strict ordering.
    let calls = fake.calls();
    let order: Vec<&str> = calls.iter().map(|c| c.task.as_str()).collect();
    assert_eq!(
        order,
        [
            "download.file",
            "whisper.transcribe",
            "llm.summarize",
            "tts.speak"
        ]
    );
    assert_eq!(calls[1].input, json!({"audio": "/media/ep1.mp3"}));
    assert_eq!(
        calls[2].input,
        json!({"text": "transcript of /media/ep1.mp3"}),
        "no input: previous result"
    );
    assert_eq!(
        calls[3].input,
        json!({"text": "summary: transcript of /media/ep1.mp3", "voice": "nova"})
    );
    for w in calls.windows(2) {
        assert!(
            w[1].started >= w[0].ended.unwrap(),
            "{} started before {} ended",
            w[1].task,
            w[0].task
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_dag_overlaps_siblings_and_caps_for_each_concurrency() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[("GPU_WORKER_CONCURRENCY", "8".into())]);
    let id = submit_ok(&host, &video_analysis()).await;
    // Captions are held at the gate: exactly 4 must pile up, never more.
    fake.wait_for("4 captions in flight", |f| {
        f.inflight("florence.caption") == 4
    })
    .await;
    assert_eq!(fake.max_inflight("florence.caption"), 4);
    fake.open_gate();
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        fake.max_inflight("florence.caption"),
        4,
        "forEachConcurrency exceeded"
    );
    assert_eq!(fake.max_inflight("scenes.detect"), 1);

    // Siblings overlapped in time (the backend makes them wait for each other).
    let frames = &fake.calls_of("scenes.detect")[0];
    let audio = &fake.calls_of("audio.extract")[0];
    assert!(frames.started < audio.ended.unwrap() && audio.started < frames.ended.unwrap());
    let groups = t["parallelGroups"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| {
            let g: Vec<&str> = g
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            g.contains(&"frames") && g.contains(&"audio")
        }),
        "frames and audio should be reported together: {groups:?}"
    );

    // forEach: one call per scene, inputs resolved, results in item order.
    let caps = fake.calls_of("florence.caption");
    assert_eq!(caps.len(), 6);
    let mut indexes: Vec<i64> = caps
        .iter()
        .map(|c| c.input["scene_index"].as_i64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, (0..6).collect::<Vec<_>>());
    for c in &caps {
        let i = c.input["scene_index"].as_i64().unwrap();
        assert_eq!(c.input["image_path"], format!("/media/talk.mp4.k{i}.jpg"));
        assert!(c.step_id.starts_with("caps["));
    }
    let results = t["stepResults"]["caps"].as_array().unwrap();
    assert_eq!(results.len(), 6, "one caption per scene: {results:?}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["caption"], format!("caption of scene {i}"));
    }
    assert_eq!(
        fake.calls_of("llm.summarize")[0].input["text"],
        "transcript of /media/talk.mp4.wav | caption of scene 0"
    );
    assert_eq!(
        t["finalResult"]["summary"],
        "summary: transcript of /media/talk.mp4.wav | caption of scene 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_over_payload_keeps_item_order() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let urls: Vec<String> = (0..7)
        .map(|i| format!("https://x.example/f{i}.bin"))
        .collect();
    let id = submit_ok(
        &host,
        &json!({"type": "batch-download", "payload": {"urls": urls},
                "steps": [{"id": "dl", "task": "download.file", "forEach": "{{payload.urls}}",
                           "input": {"url": "{{item}}"}}]}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    let paths: Vec<&str> = t["finalResult"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..7).map(|i| format!("/media/f{i}.bin")).collect();
    assert_eq!(paths, want);
    // An empty list completes the step with an empty result.
    let id = submit_ok(
        &host,
        &json!({"type": "none", "payload": {"urls": []},
                "steps": [{"task": "download.file", "forEach": "{{payload.urls}}", "input": {"url": "{{item}}"}}]}),
    )
    .await;
    assert_eq!(wait_done(&host, &id).await["finalResult"], json!([]));
    // forEach over something that is not a list fails the step with a clear error.
    let id = submit_ok(
        &host,
        &json!({"type": "bad", "payload": {"urls": "nope"},
                "steps": [{"task": "download.file", "forEach": "{{payload.urls}}", "input": {"url": "{{item}}"}}]}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("forEach must resolve to an array"),
        "{t:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_their_delay_and_stop_on_non_retryable_errors() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "flaky", "payload": {"failures": 2},
                "retry": {"attempts": 3, "backoff": "fixed", "delay": 300}}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"], json!({"calls": 3}));
    let calls = fake.calls_of("flaky");
    assert_eq!(calls.len(), 3);
    for w in calls.windows(2) {
        let gap = w[1].started - w[0].ended.unwrap();
        assert!(
            gap >= Duration::from_millis(295),
            "retry came after {gap:?}, before the 300 ms delay"
        );
    }
    let events = read_events(&host.base, &id).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "step:start",
            "step:retry",
            "step:start",
            "step:retry",
            "step:start",
            "step:complete",
            "pipeline:complete"
        ]
    );
    assert_eq!(
        events[1].1["data"]["error"],
        "backend overloaded (backend local)"
    );

    // Exponential: 100, 200, 400 ms, each at least half that with jitter.
    let id = submit_ok(
        &host,
        &json!({"type": "flaky", "payload": {"failures": 3},
                "retry": {"attempts": 4, "backoff": "exponential", "delay": 100, "maxDelay": 1000}}),
    )
    .await;
    assert_eq!(wait_done(&host, &id).await["status"], "completed");
    let calls: Vec<Call> = fake
        .calls_of("flaky")
        .into_iter()
        .filter(|c| c.task_id == id)
        .collect();
    assert_eq!(calls.len(), 4);
    for (i, w) in calls.windows(2).enumerate() {
        let gap = w[1].started - w[0].ended.unwrap();
        let floor = Duration::from_millis((100u64 << i) / 2 - 5);
        assert!(gap >= floor, "retry {i} after {gap:?} < {floor:?}");
    }

    // Not retryable: one try only, the backend's message in the error, dependants skipped.
    let id = submit_ok(
        &host,
        &json!({"type": "p", "retry": {"attempts": 5, "delay": 10},
                "steps": [{"id": "get", "task": "reject"}, {"id": "after", "task": "download.file"}]}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(
        t["error"],
        "step get (reject) failed: bad input: no url given (backend local)"
    );
    assert_eq!(fake.calls_of("reject").len(), 1);
    assert_eq!(t["stepStatus"][0]["status"], "failed");
    assert_eq!(t["stepStatus"][1]["status"], "skipped");
    assert!(fake.calls_of("download.file").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_aborts_running_steps_and_skips_pending_ones() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "p", "steps": [{"id": "wait", "task": "hang"}, {"id": "next", "task": "gated"}]}),
    )
    .await;
    fake.wait_for("the hanging call", |f| f.inflight("hang") == 1)
        .await;
    let r = client()
        .delete(host.url(&format!("/api/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    fake.wait_for("the request dropped", |f| f.calls_of("hang")[0].dropped)
        .await;
    let t = get_task(&host, &id).await;
    assert_eq!(t["status"], "cancelled");
    assert_eq!(t["stepStatus"][0]["status"], "skipped");
    assert_eq!(t["stepStatus"][0]["error"], "aborted: cancelled");
    assert_eq!(t["stepStatus"][1]["status"], "skipped");
    let again = client()
        .delete(host.url(&format!("/api/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let missing = client()
        .delete(host.url("/api/tasks/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    fake.open_gate();
    // Quiescence: a task submitted now goes through the same FIFO queue, so
    // once it has completed, any job of the cancelled task that was wrongly
    // queued would have been leased (and its step:start recorded) first.
    let barrier = submit_ok(&host, &json!({"type": "builtin.echo", "payload": {"x": 1}})).await;
    assert_eq!(wait_done(&host, &barrier).await["status"], "completed");
    let evs = read_events(&host.base, &id).await;
    assert!(
        !evs.iter()
            .any(|(k, d)| k == "step:start" && d["stepId"] == "next"),
        "a pending step never starts: {evs:?}"
    );
    assert!(
        fake.calls_of("gated").is_empty(),
        "a pending step never starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_outlives_its_timeout_fails_and_its_request_is_dropped() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "hang", "resources": {"timeout": 0.3}}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["error"], "timed out after 300ms");
    fake.wait_for("the request dropped", |f| f.calls_of("hang")[0].dropped)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_replays_then_follows_in_order() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "p", "steps": [{"id": "a", "task": "gated", "input": {"v": 1}}, {"id": "b", "task": "builtin.echo"}]}),
    )
    .await;
    fake.wait_for("step a", |f| f.inflight("gated") == 1).await;
    // Connect mid-run: the start of a is replayed, the rest arrives live
    // (the gate opens only once the reader has its first event, so the
    // task cannot have ended before the reader subscribed).
    let (first, subscribed) = tokio::sync::oneshot::channel();
    let reader = {
        let base = host.base.clone();
        let id = id.clone();
        tokio::spawn(async move { read_events_signalling(&base, &id, Some(first)).await })
    };
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("the reader got no event within 30 s")
        .expect("the reader stopped before its first event");
    assert_eq!(
        get_task(&host, &id).await["status"],
        "active",
        "the task must still be running while the reader follows it"
    );
    fake.open_gate();
    let live = reader.await.unwrap();
    let replay = read_events(&host.base, &id).await;
    for events in [&live, &replay] {
        let seen: Vec<(String, String)> = events
            .iter()
            .map(|(k, d)| (k.clone(), d["stepId"].as_str().unwrap_or("").to_owned()))
            .collect();
        let want: Vec<(String, String)> = [
            ("step:start", "a"),
            ("step:complete", "a"),
            ("step:start", "b"),
            ("step:complete", "b"),
            ("pipeline:complete", ""),
        ]
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect();
        assert_eq!(seen, want);
        let seqs: Vec<u64> = events
            .iter()
            .map(|(_, d)| d["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(events[1].1["data"]["result"], json!({"v": 1}));
        assert_eq!(events[0].1["taskId"], id);
        assert_eq!(events[0].1["stepTask"], "gated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visualize_draws_the_dag_and_its_link_decodes() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let r = client()
        .post(host.url("/api/visualize"))
        .json(&video_analysis())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    let m = v["mermaid"].as_str().unwrap();
    assert!(m.starts_with("graph TD"));
    assert!(
        m.contains("  caps[[task\\nflorence\\nforEach ×4]]\n"),
        "{m}"
    );
    for edge in [
        "download --> frames",
        "download --> audio",
        "frames --> caps",
        "audio --> transcript",
        "caps --> summary",
        "transcript --> summary",
    ] {
        assert!(m.contains(edge), "{edge} missing:\n{m}");
    }
    let url = v["url"].as_str().unwrap();
    let enc = url
        .strip_prefix("https://mermaid.live/edit#pako:")
        .expect("mermaid.live pako link");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(enc)
        .unwrap();
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let state: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["code"], m);
    assert!(state["mermaid"].is_string());
    assert_eq!(v["unknownTasks"], json!([]));
    // Invalid tasks are refused here too.
    let r = client()
        .post(host.url("/api/visualize"))
        .json(&json!({"type": "x", "steps": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tasks_are_refused_naming_step_and_field_and_nothing_is_stored() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[("DWA_MAX_BODY_BYTES", "4096".into())]);
    let cases: Vec<(Value, u16, Option<&str>, &str, &str)> = vec![
        (
            json!({"type": "no.such.task"}),
            422,
            None,
            "type",
            "unknown task",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo", "dependsOn": ["zz"]}]}),
            422,
            Some("a"),
            "steps[0].dependsOn[0]",
            "unknown step \"zz\"",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo"}, {"id": "a", "task": "builtin.echo"}]}),
            422,
            Some("a"),
            "steps[1].id",
            "duplicate id",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo", "dependsOn": ["b"]}, {"id": "b", "task": "builtin.echo", "dependsOn": ["a"]}]}),
            422,
            Some("a"),
            "steps[0].dependsOn",
            "dependency cycle: a → b → a",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo", "input": "{{steps.nope.x}}"}]}),
            422,
            Some("a"),
            "steps[0].input",
            "can never resolve",
        ),
        (
            json!({"type": "p", "steps": [{"task": "builtin.echo", "input": "{{steps.1.x}}"}, {"task": "builtin.echo"}]}),
            422,
            Some("0"),
            "steps[0].input",
            "not a dependency",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo", "forEach": {"a": 1}}]}),
            422,
            Some("a"),
            "steps[0].forEach",
            "must be an array or a whole template",
        ),
        (
            json!({"type": "p", "steps": [{"id": "a", "task": "builtin.echo", "input": "{{payload.x"}]}),
            422,
            Some("a"),
            "steps[0].input",
            "unmatched '{{'",
        ),
        (
            json!({"type": "p", "steps": [{"task": "builtin.echo", "dependsOn": "a"}]}),
            400,
            Some("0"),
            "steps[0].dependsOn",
            "invalid type",
        ),
        (
            json!({"type": "p", "steps": [{"task": "builtin.echo", "forEachConcurrency": -1}]}),
            400,
            Some("0"),
            "steps[0].forEachConcurrency",
            "invalid value",
        ),
        (
            json!({"type": "builtin.echo", "retry": {"attempts": 0}}),
            422,
            None,
            "retry.attempts",
            "between 1 and",
        ),
        (
            json!({"type": "builtin.echo", "onSuccess": [{"$event": "confetti"}]}),
            422,
            None,
            "onSuccess[0].$event",
            "unknown effect",
        ),
        (
            json!({"type": "download.file", "backend": "modal"}),
            422,
            None,
            "type",
            "not configured",
        ),
        (
            json!({"type": "builtin.echo", "dependsOn": []}),
            400,
            None,
            "dependsOn",
            "unknown field `dependsOn`",
        ),
        (
            json!({"type": "download.file", "payload": {"href": "x"}}),
            422,
            None,
            "payload.url",
            "is required (input schema of download.file)",
        ),
        (
            json!({"type": "p", "steps": [{"id": "d", "task": "download.file", "input": {"url": 5}}]}),
            422,
            Some("d"),
            "steps[0].input.url",
            "expected string, got integer",
        ),
    ];
    for (body, status, step, field, msg) in cases {
        let (got, resp) = submit(&host, &body).await;
        assert_eq!(got, status, "{body} → {resp}");
        let details = resp["error"]["details"].as_array().expect("details");
        let hit = details
            .iter()
            .find(|d| d["field"] == field)
            .unwrap_or_else(|| panic!("no error on {field} for {body}: {resp}"));
        assert_eq!(hit["step"].as_str(), step, "{resp}");
        assert!(
            hit["message"].as_str().unwrap().contains(msg),
            "{msg:?} not in {resp}"
        );
        assert!(resp["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Not JSON at all, and too large.
    let r = client()
        .post(host.url("/api/tasks"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = json!({"type": "builtin.echo", "payload": {"blob": "x".repeat(10_000)}});
    let (status, resp) = submit(&host, &big).await;
    assert_eq!(status, 413, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
    // Nothing was stored or queued.
    let list: Value = get_json(&host, "/api/tasks").await;
    assert_eq!(list["tasks"], json!([]));
    assert!(fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_guards_the_api_and_health_says_only_liveness_without_it() {
    let fake = Fake::start().await;
    // The backend URL carries credentials: /health must not show them.
    let with_password = fake.base.replacen("http://", "http://ops:hunter2@", 1);
    let (_d, host) = start(
        &fake,
        &[
            ("DWA_API_TOKEN", "s3cret".into()),
            ("LOCAL_BACKEND_URL", with_password),
        ],
    );
    let r = client().get(host.url("/api/tasks")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(host.url("/api/tasks"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(host.url("/api/tasks"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().get(host.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let anonymous: Value = r.json().await.unwrap();
    assert_eq!(anonymous, json!({"status": "ok"}));
    let full = json_of(client().get(host.url("/health")).bearer_auth("s3cret")).await;
    assert_eq!(full["store"]["kind"], "sqlite");
    let url = full["backends"][0]["url"].as_str().unwrap_or("");
    assert!(url.starts_with("http://***@127.0.0.1:"), "{url}");
    assert!(!full.to_string().contains("hunter2"), "{full:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pipeline_then_restart_completes_without_rerunning_done_steps() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_in(dir.path(), &fake, &[]);
    let id = submit_ok(
        &first,
        &json!({"type": "crash", "payload": {"url": "https://x.example/v.mp4"},
        "steps": [
            {"id": "dl", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "hold", "task": "gated", "input": {"path": "{{steps.dl.path}}"}},
            {"id": "say", "task": "tts.speak", "input": {"voice": "{{steps.hold.path}}"}}
        ]}),
    )
    .await;
    fake.wait_for("the gated step", |f| f.inflight("gated") == 1)
        .await;
    first.kill9();
    fake.wait_for("the dead host's request dropped", |f| {
        f.calls_of("gated")[0].dropped
    })
    .await;
    fake.open_gate();
    let second = start_in(dir.path(), &fake, &[]);
    let t = wait_done(&second, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["finalResult"]["voice"], "/media/v.mp4");
    assert_eq!(
        fake.calls_of("download.file").len(),
        1,
        "a completed step ran again"
    );
    assert_eq!(
        fake.calls_of("gated").len(),
        2,
        "the interrupted step runs again"
    );
    assert_eq!(fake.calls_of("tts.speak").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_step_finish() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_in(dir.path(), &fake, &[]);
    let id = submit_ok(&first, &json!({"type": "slow.ok", "payload": {"ms": 400}})).await;
    fake.wait_for("the slow call", |f| f.inflight("slow.ok") == 1)
        .await;
    let status = first.terminate();
    assert!(status.success(), "dwa exited with {status}");
    let second = start_in(dir.path(), &fake, &[]);
    let t = wait_done(&second, &id).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(
        fake.calls_of("slow.ok").len(),
        1,
        "the step was finished, not re-run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_health_catalog_openapi_and_polling_backends() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit_ok(&host, &json!({"type": "builtin.echo", "payload": {"i": i}})).await);
    }
    for id in &ids {
        wait_done(&host, id).await;
    }
    let get = |q: &str| {
        let url = host.url(&format!("/api/tasks{q}"));
        async move { client().get(url).send().await.unwrap() }
    };
    let page1: Value = get("?limit=2").await.json().await.unwrap();
    assert_eq!(page1["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(page1["tasks"][0]["id"], ids[2], "newest first");
    let cursor = page1["nextCursor"].as_str().unwrap();
    let page2: Value = get(&format!("?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(page2["tasks"][0]["id"], ids[0]);
    assert!(page2["nextCursor"].is_null());
    let done: Value = get("?status=completed&queue=default")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["tasks"].as_array().unwrap().len(), 3);
    let none: Value = get("?queue=gpu").await.json().await.unwrap();
    assert_eq!(none["tasks"], json!([]));
    assert_eq!(get("?status=weird").await.status().as_u16(), 400);
    assert_eq!(get("?limit=0").await.status().as_u16(), 400);

    let health: Value = get_json(&host, "/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["kind"], "sqlite");
    assert_eq!(health["backends"][0]["name"], "local");
    assert_eq!(health["backends"][0]["ok"], true);
    assert_eq!(health["backends"][0]["tasks"], 16);

    let catalog: Value = get_json(&host, "/api/catalog").await;
    let caption = catalog["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "florence.caption")
        .unwrap();
    assert_eq!(caption["backend"], "local");
    assert_eq!(caption["gpu"], "T4");
    let refreshed = json_of(client().post(host.url("/api/backends/refresh"))).await;
    assert_eq!(refreshed[0]["ok"], true);

    let doc: Value = get_json(&host, "/openapi.json").await;
    for p in [
        "/api/tasks",
        "/api/tasks/{id}",
        "/api/tasks/{id}/events",
        "/api/visualize",
        "/health",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }
    assert!(doc["components"]["schemas"].get("TaskView").is_some());

    // Submit-then-poll backends.
    let id = submit_ok(&host, &json!({"type": "poll.job"})).await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"]["polls"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_filters_resolve_in_a_pipeline() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "p", "payload": {"n": 4, "title": "a long title here"},
        "steps": [
            {"id": "list", "task": "builtin.range", "input": {"n": "{{ payload.n }}"}},
            {"id": "out", "task": "builtin.echo", "dependsOn": ["list"], "input": {
                "count": "{{ steps.list | length }}",
                "who": "{{ payload.user | default(\"anon\") | upper }}",
                "short": "{{ payload.title | truncate(6) }}",
                "csv": "{{ steps.list | join(\";\") }}",
                "last": "{{ steps.list | last }}",
                "raw": "{{ steps.list | json }}"
            }}
        ]}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["finalResult"],
        json!({"count": 4, "who": "ANON", "short": "a long", "csv": "0;1;2;3", "last": 3, "raw": "[0,1,2,3]"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_become_progress_events_then_the_result() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    for sse in [false, true] {
        let id = submit_ok(
            &host,
            &json!({"type": "stream.words", "payload": {"text": "one two three", "sse": sse}}),
        )
        .await;
        let t = wait_done(&host, &id).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["result"], json!({"words": 3}));
        let events = read_events(&host.base, &id).await;
        let words = streamed_words(&events);
        assert_eq!(
            words,
            vec![json!("one"), json!("two"), json!("three")],
            "sse={sse}"
        );
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        let last_progress = kinds.iter().rposition(|k| *k == "step:progress").unwrap();
        let complete = kinds.iter().position(|k| *k == "step:complete").unwrap();
        assert!(
            last_progress < complete,
            "chunks come before the completion: {kinds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_built_from_templates_are_checked_before_the_call() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "p", "payload": {"u": "short"},
                "steps": [{"id": "d", "task": "download.file", "input": {"url": "{{payload.u}}"}}]}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(
        t["error"],
        "step d (download.file) failed: input does not match the input schema of download.file: $.url must have at least 8 characters"
    );
    assert!(
        fake.calls_of("download.file").is_empty(),
        "the backend was not called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_caps_are_the_peak_calls_at_the_backend() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[("WORKER_CONCURRENCY", "3".into())]);
    peak_is_the_worker_cap(&host, &fake, "default", 3).await;
    let fake = Fake::start().await;
    let (_g, host) = start(&fake, &[("GPU_WORKER_CONCURRENCY", "2".into())]);
    peak_is_the_worker_cap(&host, &fake, "gpu", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_survive_characters_split_across_pieces_and_multiline_sse_data() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    for (sse, multiline) in [(false, false), (true, false), (true, true)] {
        let id = submit_ok(
            &host,
            &json!({"type": "stream.words", "payload": {
                "text": "déjà vu 日本語 naïve", "sse": sse, "multiline": multiline, "trickle": true}}),
        )
        .await;
        let t = wait_done(&host, &id).await;
        assert_eq!(
            t["status"], "completed",
            "sse={sse} multiline={multiline}: {t:#}"
        );
        assert_eq!(t["result"], json!({"words": 4}));
        let events = read_events(&host.base, &id).await;
        let words = streamed_words(&events);
        assert_eq!(
            words,
            vec![json!("déjà"), json!("vu"), json!("日本語"), json!("naïve")],
            "sse={sse} multiline={multiline}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_processes_a_task_as_the_seeds_process_task_does() {
    use dwa_client::{Client, ClientError};
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let client = Client::new(&host.base);

    let mut progress = Vec::new();
    let mut events = Vec::new();
    let result = client
        .process_task(
            &json!({"type": "p", "steps": [
                {"id": "a", "task": "builtin.sleep", "input": {"ms": 20}},
                {"id": "b", "task": "builtin.echo", "dependsOn": ["a"], "input": {"x": 1}}
            ]}),
            |p| progress.push(p),
            |e| events.push((e.kind.clone(), e.step_id.clone(), e.data.clone())),
        )
        .await
        .unwrap();
    assert_eq!(result.step_results["b"], json!({"x": 1}));
    assert_eq!(result.final_result, json!({"x": 1}));
    assert_eq!(result.step_status.len(), 2);
    assert!(result.total_duration >= 20, "{result:?}");
    assert_eq!(progress, [50.0, 100.0]);
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "step:start",
            "step:complete",
            "step:start",
            "step:complete",
            "pipeline:complete"
        ]
    );
    // The seed's event data: a step's duration, the pipeline's total.
    assert!(
        events[1].2["duration"].as_i64().unwrap() >= 20,
        "{:?}",
        events[1]
    );
    assert!(events[4].2["totalDuration"].as_i64().unwrap() >= 20);

    // A single task is a pipeline of one step.
    let one = client
        .process_task(
            &json!({"type": "builtin.echo", "payload": {"y": 2}}),
            |_| {},
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(one.final_result, json!({"y": 2}));
    assert_eq!(one.step_results["builtin.echo"], json!({"y": 2}));

    // A failed task, a refused one.
    let failed = client
        .process_task(
            &json!({"type": "builtin.fail", "payload": {"message": "no"}, "retry": {"attempts": 1}}),
            |_| {},
            |_| {},
        )
        .await;
    match failed {
        Err(ClientError::Failed(view)) => {
            assert_eq!(view.status.as_str(), "failed");
            assert!(view.error.unwrap_or_default().contains("no"));
        }
        other => panic!("expected a failed task, got {other:?}"),
    }
    match client.create_task(&json!({"type": "no.such.task"})).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_deref()), (422, Some("invalid_task")));
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    let drawn = client
        .visualize(&json!({"steps": [{"id": "a", "task": "builtin.echo"}]}))
        .await
        .unwrap();
    assert_eq!(drawn["mermaid"], "graph TD\n  a[builtin\\nbuiltin]\n");
    let slow = client
        .create_task(&json!({"type": "builtin.sleep", "payload": {"ms": 60000}}))
        .await
        .unwrap();
    assert_eq!(
        client.cancel_task(&slow.id).await.unwrap().status.as_str(),
        "cancelled"
    );
    let page = client.list_tasks(None, None, Some(2)).await.unwrap();
    assert_eq!(page.tasks.len(), 2);
}

#[path = "e2e/backpressure.rs"]
mod backpressure;
#[path = "e2e/dashboard.rs"]
mod dashboard;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/traces.rs"]
mod traces;
