//! The Python backend (`backends/local`, the same app Ray and Modal serve)
//! started for real, with the real host forwarding to it: pipelines of real
//! tasks whose files flow through the task's working folder, shared with the
//! host's WebAssembly transforms.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::Router;
use common::*;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `python -m backends.local --port 0` from the repo's .venv, killed on drop.
struct Backend {
    child: Child,
    base: String,
}

impl Backend {
    fn start(work_dir: &Path, env: &[(&str, String)]) -> Backend {
        let python = repo().join(".venv/bin/python");
        assert!(
            python.exists(),
            ".venv is missing: run `just python-setup` (just test does)"
        );
        let mut cmd = Command::new(python);
        cmd.args(["-m", "backends.local", "--port", "0"])
            .current_dir(repo())
            .env("DWA_WORK_DIR", work_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the local backend");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("dwa backend listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(WAIT)
            .expect("the local backend did not print its address within 30 s");
        Backend { child, base }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 16-bit mono WAV of a sine tone.
fn tone_wav(seconds: f64, rate: u32) -> Vec<u8> {
    let n = (seconds * rate as f64) as u32;
    let mut out = Vec::with_capacity(44 + 2 * n as usize);
    let data_len = 2 * n;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        let v = (0.4
            * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin()
            * 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A local web server with the files the pipelines download.
async fn site() -> String {
    let wav = tone_wav(5.0, 22050);
    let photo = png(400, 300);
    let app = Router::new()
        .route(
            "/media/tone.wav",
            axum::routing::get(move || async move { ([("content-type", "audio/wav")], wav) }),
        )
        .route(
            "/media/photo.png",
            axum::routing::get(move || async move { ([("content-type", "image/png")], photo) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tasks_through_the_host() {
    let web = site().await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let backend = tokio::task::block_in_place(|| Backend::start(&work, &[]));
    let env = vec![
        ("LOCAL_BACKEND_URL", backend.base.clone()),
        ("DWA_WORK_DIR", work.display().to_string()),
        (
            "DWA_PLUGIN_DIR",
            repo().join("plugins/dist").display().to_string(),
        ),
        (
            "DWA_PLUGIN_CACHE_DIR",
            repo()
                .join("target/dwa-test-plugin-cache")
                .display()
                .to_string(),
        ),
    ];
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));

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
    let t = wait_done(&host, &id).await;
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
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["stepResults"]["small"]["height"], 75);
    assert!(work.join(&id).join("small.webp").exists());

    // A task's own failure (a permanent one) reaches the task's error.
    let id = submit_ok(
        &host,
        &json!({"type": "convert.audio", "payload": {"path": "missing.wav"},
                                      "retry": {"attempts": 3, "delay": 10}}),
    )
    .await;
    let t = wait_done(&host, &id).await;
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
