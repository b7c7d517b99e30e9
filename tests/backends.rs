//! The Python backend (`backends/local`, the same app Ray and Modal serve)
//! started for real, with the real host forwarding to it: pipelines of real
//! tasks whose files flow through the task's working folder, shared with the
//! host's WebAssembly transforms.

mod common;

use common::*;
use serde_json::{Value, json};

/// A stand-in for the OpenAI API (unreachable here): chat completions,
/// streamed as the real one streams them.
async fn fake_openai() -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            let prompt = body["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("").to_owned();
            let mut out = String::new();
            for word in prompt.split(' ') {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                                   "choices": [{"index": 0, "delta": {"content": format!("{} ", word.to_uppercase())}, "finish_reason": null}]});
                out.push_str(&format!("data: {chunk}\n\n"));
            }
            out.push_str("data: [DONE]\n\n");
            ([("content-type", "text/event-stream")], out).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tasks_through_the_host() {
    let web = media_site().await;
    let openai = fake_openai().await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let backend = tokio::task::block_in_place(|| {
        PyService::start(
            &["-m", "backends.local", "--port", "0"],
            "dwa backend listening on ",
            &[
                ("DWA_WORK_DIR", work.display().to_string()),
                ("OPENAI_BASE_URL", openai.clone()),
                ("OPENAI_API_KEY", "test".into()),
            ],
            REAL_BACKEND_WAIT,
        )
    });
    let host = host_for_backend(data.path(), &work, "LOCAL_BACKEND_URL", &backend.base);

    // The host knows the backend's tasks, with their schemas.
    let catalog = get_json(&host, "/api/catalog").await;
    let find = |name: &str| -> Value {
        catalog["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in the catalog"))
    };
    assert_eq!(find("convert.audio")["backend"], "local");
    assert_eq!(find("whisper.transcribe")["gpu"], "T4");
    assert_eq!(find("image.resize")["backend"], "wasm");
    // A payload that breaks the task's schema is refused at submission.
    let (status, body) = submit(
        &host,
        &json!({"type": "chunk.audio", "payload": {"path": 3}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // download → convert → chunk → forEach over the chunks, files shared in the task's folder.
    let id = submit_ok(&host, &json!({
        "type": "podcast-prep",
        "payload": {"url": format!("{web}/media/tone.wav")},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "mp3", "task": "convert.audio", "dependsOn": ["download"],
             "input": {"path": "{{steps.download.path}}", "format": "mp3", "sample_rate": 16000}},
            {"id": "chunks", "task": "chunk.audio", "dependsOn": ["mp3"],
             "input": {"path": "{{steps.mp3.path}}", "seconds": 2}},
            {"id": "each", "task": "builtin.echo", "dependsOn": ["chunks"], "forEach": "{{steps.chunks.chunks}}",
             "input": {"file": "{{item.path}}", "from": "{{item.start}}"}}
        ]
    })).await;
    let t = wait_done_on_real_backend(
        &host,
        &id,
        "the download → convert → chunk → forEach pipeline on the local backend",
    )
    .await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["stepResults"]["download"]["bytes"],
        json!(44 + 2 * 110_250)
    );
    assert_eq!(t["stepResults"]["mp3"]["path"], "tone.16k.mp3");
    let each = t["stepResults"]["each"].as_array().unwrap();
    assert_eq!(each.len(), 3, "{t:#}");
    assert_eq!(each[2]["from"], json!(4.0));
    for e in each {
        let f = work.join(&id).join(e["file"].as_str().unwrap());
        assert!(f.exists(), "{} was not written", f.display());
    }

    // A Python step writes a file; the host's WebAssembly transform reads it.
    let id = submit_ok(&host, &json!({
        "type": "thumb",
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": format!("{web}/media/photo.png")}},
            {"id": "small", "task": "image.resize", "dependsOn": ["download"],
             "input": {"path": "{{steps.download.path}}", "width": 100, "output": "small.webp"}}
        ]
    })).await;
    let t = wait_done_on_real_backend(
        &host,
        &id,
        "a Python step's file resized by a wasm transform",
    )
    .await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["stepResults"]["small"]["height"], 75);
    assert!(work.join(&id).join("small.webp").exists());

    // A chunked step: the host splits the audio with chunk.audio, runs the
    // parts in parallel and merges their segments with their time offsets.
    let id = submit_ok(&host, &json!({
        "type": "loudness",
        "payload": {"url": format!("{web}/media/tone.wav")},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "levels", "task": "audio.levels", "dependsOn": ["download"], "chunk": {"size": 2, "concurrency": 3},
             "input": {"path": "{{steps.download.path}}", "window": 1.0}},
            {"id": "report", "task": "builtin.echo", "dependsOn": ["levels"],
             "input": {"n": "{{steps.levels.segments | length}}", "chunks": "{{steps.levels.chunks}}"}}
        ]
    })).await;
    let t =
        wait_done_on_real_backend(&host, &id, "a chunked whisper step merged with offsets").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    let levels = &t["stepResults"]["levels"];
    let starts: Vec<f64> = levels["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_f64().unwrap())
        .collect();
    assert_eq!(starts, [0.0, 1.0, 2.0, 3.0, 4.0], "{levels:#}");
    for seg in levels["segments"].as_array().unwrap() {
        // A sine of amplitude 0.4: RMS 0.283, -11 dBFS.
        let db = seg["db"].as_f64().unwrap();
        assert!((db + 11.0).abs() < 0.5, "{seg}");
    }
    assert_eq!(t["stepResults"]["report"], json!({"n": 5, "chunks": 3}));
    let ids: Vec<&str> = t["stepStatus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "download",
            "levels-split",
            "levels-parts",
            "levels",
            "report"
        ]
    );

    // A streaming task: its pieces arrive as step:progress events, in order,
    // before the step completes with their merge.
    let id = submit_ok(
        &host,
        &json!({"type": "openai.chat", "payload": {"prompt": "stream these four words"}}),
    )
    .await;
    let events = read_events(&host.base, &id).await;
    let pieces: Vec<String> = events
        .iter()
        .filter(|(k, _)| k == "step:progress")
        .map(|(_, v)| v["data"]["chunk"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        pieces,
        ["STREAM ", "THESE ", "FOUR ", "WORDS "],
        "{events:?}"
    );
    let done = events
        .iter()
        .position(|(k, _)| k == "step:complete")
        .expect("step:complete");
    let last_piece = events
        .iter()
        .rposition(|(k, _)| k == "step:progress")
        .unwrap();
    assert!(last_piece < done);
    let t = get_task(&host, &id).await;
    assert_eq!(t["result"], "STREAM THESE FOUR WORDS ", "{t:#}");

    // A task's own failure (a permanent one) reaches the task's error.
    let id = submit_ok(
        &host,
        &json!({"type": "convert.audio", "payload": {"path": "missing.wav"},
                                      "retry": {"attempts": 3, "delay": 10}}),
    )
    .await;
    let t = wait_done_on_real_backend(&host, &id, "convert.audio failing on a missing file").await;
    assert_eq!(t["status"], "failed");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("`path` missing.wav: no such file"),
        "{t:#}"
    );
    drop(backend);
}
