//! A real local Ray: `python -m backends.ray.run` starts Ray and Serve with
//! backends/ray/serve.py, the real host forwards to it (RAY_URL), and a
//! pipeline of real tasks runs; a GPU task goes through its family's
//! deployment, which says so itself (`X-DWA-Served-By`). replicas.rs joins
//! a cluster started apart, with two ingress replicas.

#[path = "ray/cluster.rs"]
mod cluster;
mod common;
#[path = "ray/replicas.rs"]
mod replicas;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `script` with the repository's Python (its .venv, from the
/// repository's root) and answers what it printed; fails the test, with its
/// stderr, if it fails.
fn run_python(script: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script])
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls a backend job's URL until it is no longer running (bounded);
/// answers its final response.
async fn until_done(url: &str) -> reqwest::Response {
    let deadline = std::time::Instant::now() + REAL_BACKEND_WAIT;
    loop {
        let r = client().get(url).send().await.expect("poll");
        if r.status().as_u16() != 202 {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} still running after {REAL_BACKEND_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One Ray cluster at a time: two on two cores would starve each other.
static RAY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Test media made by the Python test helpers: a video with two cuts, and a
/// real photo with one face (scikit-image's astronaut, installed as test data).
fn test_media(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let script = format!(
        "import pathlib, shutil, importlib.util, os\n\
         from tests.python.test_tasks_more import cuts_video\n\
         d = pathlib.Path({:?})\n\
         cuts_video(d / 'cuts.mp4')\n\
         sk = importlib.util.find_spec('skimage').submodule_search_locations[0]\n\
         shutil.copy(os.path.join(sk, 'data', 'astronaut.png'), d / 'astronaut.png')\n",
        dir.display().to_string()
    );
    run_python(&script, &[]);
    ["cuts.mp4", "astronaut.png"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_ray_serve() {
    let _one_cluster_at_a_time = RAY.lock().await;
    let media = tempfile::tempdir().unwrap();
    let web = media_site_with(test_media(media.path())).await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let port = free_port().to_string();
    // Ray starts a head node, Serve and its replicas: give it time. GPU
    // families scale from zero, each on a logical CPU of its own.
    let ray = tokio::task::block_in_place(|| {
        PyService::start(
            &["-m", "backends.ray.run", "--port", &port, "--num-cpus", "6"],
            "dwa ray backend listening on ",
            &[
                ("DWA_WORK_DIR", work.display().to_string()),
                ("RAY_USAGE_STATS_ENABLED", "0".into()),
            ],
            Duration::from_secs(240),
        )
    });
    let host = host_for_backend(data.path(), &work, "RAY_URL", &ray.base);
    let catalog = get_json(&host, "/api/catalog").await;
    let backend_of = |name: &str| {
        catalog["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["backend"].clone())
    };
    assert_eq!(backend_of("chunk.audio"), Some(json!("ray")), "{catalog}");

    let id = submit_ok(&host, &json!({
        "type": "audio-prep",
        "payload": {"url": format!("{web}/media/tone.wav")},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "wav", "task": "convert.audio", "dependsOn": ["download"],
             "input": {"path": "{{steps.download.path}}", "sample_rate": 8000}},
            {"id": "chunks", "task": "chunk.audio", "dependsOn": ["wav"],
             "input": {"path": "{{steps.wav.path}}", "seconds": 2.5}},
            {"id": "each", "task": "builtin.echo", "dependsOn": ["chunks"], "forEach": "{{steps.chunks.chunks}}",
             "input": {"file": "{{item.path}}"}}
        ]
    })).await;
    let t = wait_done_on_real_backend(&host, &id, "the audio pipeline on Ray Serve").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["stepResults"]["wav"]["sampleRate"], 8000);
    assert_eq!(
        t["stepResults"]["each"].as_array().unwrap().len(),
        2,
        "{t:#}"
    );

    // Scenes of a video, then faces on each scene's keyframe (forEach), and
    // faces on a real photo.
    let id = submit_ok(&host, &json!({
        "type": "video-faces",
        "steps": [
            {"id": "video", "task": "download.file", "input": {"url": format!("{web}/files/cuts.mp4")}},
            {"id": "scenes", "task": "scenes.detect", "dependsOn": ["video"], "input": {"video_path": "{{steps.video.path}}"}},
            {"id": "frames", "task": "faces.detect", "dependsOn": ["scenes"], "forEach": "{{steps.scenes.scenes}}",
             "forEachConcurrency": 2, "input": {"image_path": "{{item.keyframe}}"}},
            {"id": "photo", "task": "download.file", "input": {"url": format!("{web}/files/astronaut.png")}},
            {"id": "face", "task": "faces.detect", "dependsOn": ["photo"], "input": {"image_path": "{{steps.photo.path}}"}}
        ]
    })).await;
    let t = wait_done_on_real_backend(&host, &id, "scenes → forEach faces on Ray Serve").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["stepResults"]["scenes"]["count"], 3, "{t:#}");
    let frames = t["stepResults"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    assert!(
        frames.iter().all(|f| f["count"] == 0 && f["width"] == 160),
        "{t:#}"
    );
    assert_eq!(t["stepResults"]["face"]["count"], 1, "{t:#}");

    // A GPU task runs in its family's deployment (202 + polling: its timeout
    // is long); its own error comes back as the task's error, not Ray's wrapper.
    let id = submit_ok(
        &host,
        &json!({"type": "yolo.detect", "payload": {"image_path": "none.jpg"}}),
    )
    .await;
    let t = wait_done_on_real_backend(&host, &id, "yolo.detect through gpu-yolo").await;
    assert_eq!(t["status"], "failed");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("`image_path` none.jpg: no such file"),
        "{error}"
    );
    assert!(!error.contains("RayTaskError"), "{error}");
    // Which deployment served the call, from the backend itself: the
    // family's replica stamps its own name, which the ingress answers in
    // X-DWA-Served-By (a short CPU task runs in the ingress: no header).
    assert_eq!(
        served_by(&ray.base, "yolo.detect", json!({"image_path": "none.jpg"})).await,
        Some("gpu-yolo".to_owned())
    );
    assert_eq!(
        served_by(&ray.base, "diag.echo", json!({"value": 1})).await,
        None
    );
    // A long CPU task (timeout over DWA_SYNC_LIMIT_S) runs in LongTasks.
    assert_eq!(
        served_by(&ray.base, "convert.audio", json!({"path": "none.wav"})).await,
        Some("LongTasks".to_owned())
    );
    drop(host);
    drop(ray);
}

/// Calls `task` on the backend directly (following submit-then-poll) and
/// answers its `X-DWA-Served-By` header.
async fn served_by(base: &str, task: &str, input: serde_json::Value) -> Option<String> {
    let c = client();
    let body = json!({"input": input, "taskId": "served-by", "stepId": "s"});
    let mut r = c
        .post(format!("{base}/tasks/{task}"))
        .json(&body)
        .send()
        .await
        .expect("POST the task");
    if r.status().as_u16() == 202 {
        let accepted: serde_json::Value = r.json().await.expect("202 body");
        let url = format!(
            "{base}/tasks/{task}/jobs/{}",
            accepted["jobId"].as_str().expect("jobId")
        );
        r = until_done(&url).await;
    }
    r.headers()
        .get("x-dwa-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
