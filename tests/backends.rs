//! The Python backend (`backends/local`, the same app Ray and Modal serve)
//! started for real, with the real host forwarding to it: pipelines of real
//! tasks whose files flow through the task's working folder, shared with the
//! host's WebAssembly transforms.

mod common;

use common::*;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// The local Python backend, working in `work`, its OpenAI tasks on a fake
/// of the API.
async fn local_backend(work: &std::path::Path) -> PyService {
    let openai = fake_openai().await;
    tokio::task::block_in_place(|| {
        PyService::start(
            &["-m", "backends.local", "--port", "0"],
            "dwa backend listening on ",
            &[
                ("DWA_WORK_DIR", work.display().to_string()),
                ("OPENAI_BASE_URL", openai),
                ("OPENAI_API_KEY", "test".into()),
            ],
            REAL_BACKEND_WAIT,
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tasks_through_the_host() {
    let web = media_site().await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let backend = local_backend(&work).await;
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
        &json!({"type": "openai.chat_stream", "payload": {"prompt": "stream these four words"}}),
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

/// A backend standing in for the GPU steps whose weights cannot be had here
/// (yolo.detect, siglip.embed, florence.caption), as a Modal deployment
/// would serve them. It announces no schemas (the host fills them, and their
/// pipes, from the generated catalog), checks that every keyframe it is
/// given is a file in the task's working folder, and records the inputs.
async fn gpu_standin(work: std::path::PathBuf) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    type Seen = Arc<Mutex<Vec<(String, Value)>>>;
    let seen: Seen = Arc::default();
    async fn run(
        State((work, seen)): State<(std::path::PathBuf, Seen)>,
        UrlPath(name): UrlPath<String>,
        axum::Json(body): axum::Json<Value>,
    ) -> (StatusCode, axum::Json<Value>) {
        let input = body["input"].clone();
        seen.lock().unwrap().push((name.clone(), input.clone()));
        let folder = work.join(body["taskId"].as_str().unwrap_or(""));
        let missing = |f: &str| !folder.join(f).is_file();
        let refuse = |f: &str| {
            let message = format!("{name}: {f}: no such file");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": {"message": message, "retryable": false}})),
            )
        };
        let frames = |per: &dyn Fn(&Value) -> Value| -> Result<Value, String> {
            let mut out = Vec::new();
            for s in input["scenes"].as_array().into_iter().flatten() {
                let kf = s["keyframe"].as_str().unwrap_or("");
                if missing(kf) {
                    return Err(kf.to_owned());
                }
                let mut f = json!({"index": s["index"], "start": s["start"], "end": s["end"], "keyframe": kf});
                f.as_object_mut()
                    .unwrap()
                    .extend(per(s).as_object().unwrap().clone());
                out.push(f);
            }
            Ok(json!({"frames": out}))
        };
        let result = match name.as_str() {
            "yolo.detect" => frames(&|_| {
                json!({"width": 320, "height": 320, "detections": [
                {"label": "person", "confidence": 0.9, "box": {"x": 1.0, "y": 1.0, "width": 9.0, "height": 9.0}}]})
            }),
            "siglip.embed" => frames(
                &|s| json!({"model": "standin", "vector": [s["index"].as_f64().unwrap_or(0.0), 1.0]}),
            ),
            "florence.caption" => {
                let image = input["image_path"].as_str().unwrap_or("");
                if missing(image) {
                    Err(image.to_owned())
                } else {
                    Ok(
                        json!({"caption": format!("scene {}", input["scene_index"]), "scene_index": input["scene_index"]}),
                    )
                }
            }
            _ => Err(format!("no task {name}")),
        };
        match result {
            Ok(r) => (StatusCode::OK, axum::Json(json!({"result": r}))),
            Err(f) => refuse(&f),
        }
    }
    let served = ["yolo.detect", "siglip.embed", "florence.caption"]
        .map(|n| json!({"name": n, "category": "see", "gpu": "T4", "timeout": 60}));
    let catalog = json!({ "tasks": served });
    let app = axum::Router::new()
        .route(
            "/tasks",
            axum::routing::get(move || async move { axum::Json(catalog) }),
        )
        .route("/tasks/{name}", axum::routing::post(run))
        .with_state((work, seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// The seed README's examples, sent as the seed writes them, against the
/// real Python backend (the GPU-only steps on the stand-in above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_examples_run_unchanged() {
    let web = media_site_with(vec![
        ("episode.mp3".into(), fixture("episode.mp3")),
        ("clip.mp4".into(), fixture("clip.mp4")),
    ])
    .await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let backend = local_backend(&work).await;
    let (gpu, seen) = gpu_standin(work.clone()).await;
    let mut env = repo_host_env(&work);
    env.extend([
        ("LOCAL_BACKEND_URL", backend.base.clone()),
        ("MODAL_URL", gpu),
    ]);
    let host = tokio::task::block_in_place(|| Host::start(&data.path().join("a"), &env));

    // Every task of the seed's tables, under its name, with an input schema.
    let catalog = get_json(&host, "/api/catalog").await;
    let tasks = catalog["tasks"].as_array().unwrap();
    let info = |name: &str| {
        tasks
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let seed = "yolo.detect yolo.segment yolo.pose yolo.track sam2.segment sam2.track florence.caption \
        florence.detect florence.ocr siglip.embed siglip.classify depth.estimate faces.detect faces.embed \
        faces.cluster whisper.transcribe whisper.transcribe_stream whisper.detect_language diarize.speakers \
        openai.chat openai.chat_stream openai.embed openai.summarize openai.extract openai.classify \
        openai.translate openai_tts.synthesize elevenlabs.synthesize chatterbox.synthesize sesame.synthesize \
        download.file download.youtube rss.fetch convert.audio convert.video chunk.audio chunk.text \
        image.resize image.crop semantic.search semantic.embed multimodal.search vector.upsert vector.query \
        analyze.video scenes.detect scenes.describe tracking.objects tracking.faces";
    let names: Vec<&str> = seed.split_whitespace().collect();
    assert_eq!(names.len(), 49);
    for name in &names {
        let t = info(name);
        assert!(
            t["inputSchema"].is_object(),
            "{name} is missing or has no input schema: {t}"
        );
    }
    assert_eq!(
        info("yolo.detect")["backend"],
        "modal",
        "the GPU stand-in serves it"
    );
    assert_eq!(
        info("yolo.detect")["pipe"]["scenes"],
        "scenes",
        "from the generated catalog"
    );
    assert_eq!(info("chunk.text")["backend"], "wasm");
    assert_eq!(info("llm.summarize")["replacedBy"], "openai.summarize");
    // The generated catalog (and clients/ts/tasks.ts, made with it) lists
    // exactly what such a host serves.
    let generated: Value = serde_json::from_slice(&repo_file("shared/catalog.json")).unwrap();
    let names = |list: &Value| -> std::collections::BTreeSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (listed, served) = (names(&generated["tasks"]), names(&catalog["tasks"]));
    assert_eq!(listed, served, "`just gen-types` and the host disagree");

    // The podcast pipeline: sequential steps referring to each other by index.
    let id = submit_ok(
        &host,
        &json!({
            "type": "podcast-transcription",
            "payload": {"url": format!("{web}/files/episode.mp3")},
            "steps": [
                {"task": "download.file", "input": {"url": "{{payload.url}}"}},
                {"task": "whisper.transcribe", "input": {"audio_path": "{{steps.0.path}}"}},
                {"task": "openai.summarize", "input": {"text": "{{steps.1.text}}"}}
            ]
        }),
    )
    .await;
    let t = wait_done_on_real_backend(&host, &id, "the seed's podcast pipeline").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    let heard = t["steps"][1]["text"].as_str().unwrap();
    assert!(
        heard.to_lowercase().contains("task orchestration"),
        "whisper tiny.en heard {heard:?}"
    );
    // The fake API answers in capitals: the summary is of what was heard.
    assert_eq!(t["finalResult"]["summary"], heard.to_uppercase());
    assert_eq!(t["result"], t["finalResult"]);
    for field in [
        "id",
        "progress",
        "startedAt",
        "completedAt",
        "stepResults",
        "stepStatus",
        "totalDuration",
        "parallelGroups",
    ] {
        assert!(!t[field].is_null(), "{field} missing from {t:#}");
    }
    assert_eq!(t["progress"], 100);

    // The video-analysis DAG, merged by analyze.video.
    let id = submit_ok(&host, &json!({
        "type": "video-analysis",
        "payload": {"url": format!("{web}/files/clip.mp4")},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "frames", "task": "scenes.detect", "dependsOn": ["download"]},
            {"id": "audio", "task": "convert.audio", "dependsOn": ["download"]},
            {"id": "yolo", "task": "yolo.detect", "dependsOn": ["frames"]},
            {"id": "faces", "task": "faces.detect", "dependsOn": ["frames"]},
            {"id": "siglip", "task": "siglip.embed", "dependsOn": ["frames"]},
            {"id": "whisper", "task": "whisper.transcribe", "dependsOn": ["audio"]},
            {"id": "merge", "task": "analyze.video", "dependsOn": ["yolo", "faces", "siglip", "whisper"]}
        ]
    }))
    .await;
    let t = wait_done_on_real_backend(&host, &id, "the seed's video-analysis DAG").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    let merged = &t["finalResult"];
    assert_eq!(
        merged["sources"],
        json!({"yolo": "detections", "faces": "faces", "siglip": "embeddings", "whisper": "transcript"})
    );
    let scenes = merged["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3, "three stills, three scenes: {merged:#}");
    let faces: Vec<&Value> = scenes.iter().map(|s| &s["faces"]).collect();
    assert_eq!(
        faces,
        [&json!(1), &json!(0), &json!(0)],
        "the astronaut's face, in the first scene only"
    );
    assert_eq!(
        merged["objects"],
        json!([{"label": "person", "count": 3, "scenes": 3}])
    );
    assert!(
        merged["transcript"]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("orchestration"),
        "{merged:#}"
    );
    // The stand-in's vectors of scenes 0 and 1, [0, 1] and [1, 1], are 45° apart.
    let cos = scenes[1]["similarityToPrevious"].as_f64().unwrap();
    assert!(
        (cos - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-4,
        "{merged:#}"
    );
    // The steps without input took their dependency's result through the pipe.
    let yolo_input = &seen
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == "yolo.detect")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        yolo_input.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["scenes"]
    );
    assert_eq!(t["stepResults"]["audio"]["path"], "clip.16k.wav");

    // The forEach example: florence.caption over the scenes, four at a time.
    let id = submit_ok(
        &host,
        &json!({
            "type": "describe",
            "payload": {"url": format!("{web}/files/clip.mp4")},
            "steps": [
                {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
                {"id": "detect_scenes", "task": "scenes.detect", "dependsOn": ["download"]},
                {
                    "id": "describe_scenes",
                    "task": "florence.caption",
                    "dependsOn": ["detect_scenes"],
                    "forEach": "{{steps.detect_scenes.scenes}}",
                    "forEachConcurrency": 4,
                    "input": {"image_path": "{{item.keyframe}}", "scene_index": "{{index}}"}
                }
            ]
        }),
    )
    .await;
    let t = wait_done_on_real_backend(&host, &id, "the seed's forEach example").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["finalResult"],
        json!([{"caption": "scene 0", "scene_index": 0}, {"caption": "scene 1", "scene_index": 1},
               {"caption": "scene 2", "scene_index": 2}])
    );

    // The seed's visualize body as it is: no `type`; a task no backend serves is drawn.
    let body = json!({"steps": [
        {"id": "a", "task": "download.file"},
        {"id": "b", "task": "yolo.detect", "dependsOn": ["a"]},
        {"id": "c", "task": "faces.detect", "dependsOn": ["a"]},
        {"id": "d", "task": "my.model", "dependsOn": ["b", "c"]}
    ]});
    let drawn = json_of(client().post(host.url("/api/visualize")).json(&body)).await;
    assert_eq!(
        drawn["mermaid"],
        "graph TD\n  a[process\\ndownload]\n  b[vision\\nyolo]\n  c[vision\\nfaces]\n  d[task\\nmy]\n  \
         a --> b\n  a --> c\n  b --> d\n  c --> d\n  classDef unknown stroke-dasharray: 5 5\n  class d unknown\n",
        "{drawn}"
    );
    assert_eq!(
        drawn["unknownTasks"],
        json!([{"step": "d", "task": "my.model"}])
    );

    // The TypeScript client (clients/ts, built by `just test-setup`) runs the
    // podcast example with processTask, and its other calls, with node.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        repo.join("clients/ts/dist/index.js").exists(),
        "clients/ts is not built: run `just build-client` (just test does)"
    );
    let node = tokio::task::block_in_place(|| {
        std::process::Command::new("node")
            .args(["--test", "--test-reporter=spec", "clients/ts/test/"])
            .current_dir(&repo)
            .env("DWA_URL", &host.base)
            .env("DWA_EPISODE_URL", format!("{web}/files/episode.mp3"))
            .output()
            .expect("node runs (just test-setup installs it)")
    });
    assert!(
        node.status.success(),
        "the TypeScript client's tests failed:\n{}\n{}",
        String::from_utf8_lossy(&node.stdout),
        String::from_utf8_lossy(&node.stderr)
    );
    drop(host);

    // The simple task, `backend: "modal"` included: the Python app as Modal serves it.
    let mut env = repo_host_env(&work);
    env.push(("MODAL_URL", backend.base.clone()));
    let host = tokio::task::block_in_place(|| Host::start(&data.path().join("b"), &env));
    let id = submit_ok(
        &host,
        &json!({
            "type": "openai.chat",
            "backend": "modal",
            "payload": {"prompt": "Explain quantum computing"},
            "onSuccess": [{"$event": "toast", "text": "Done!"}]
        }),
    )
    .await;
    let t = wait_done_on_real_backend(&host, &id, "the seed's simple task").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["result"],
        json!({"response": "EXPLAIN QUANTUM COMPUTING", "model": "fake"})
    );
    for field in [
        "id",
        "status",
        "progress",
        "result",
        "startedAt",
        "completedAt",
    ] {
        assert!(
            !t[field].is_null(),
            "the seed's {field} is missing from {t:#}"
        );
    }
    drop(backend);
}
