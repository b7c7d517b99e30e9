//! Python backends as child processes, and the media they are given.

#[allow(unused_imports)]
use super::*;

/// A Python backend process from the repo's .venv (`python -m ...`), stopped
/// with SIGTERM (then SIGKILL after 30 s) when dropped.
pub struct PyService {
    child: Option<Child>,
    /// Its base URL, from the line it prints when ready.
    pub base: String,
}

impl PyService {
    /// Starts `python ARGS` in the repo and waits (at most `wait`) for a line starting with `ready`.
    pub fn start(
        args: &[&str],
        ready: &'static str,
        env: &[(&str, String)],
        wait: Duration,
    ) -> PyService {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = repo.join(".venv/bin/python");
        assert!(
            python.exists(),
            ".venv is missing: run `just python-setup` (just test does)"
        );
        let mut cmd = Command::new(python);
        cmd.args(args)
            .current_dir(&repo)
            // The tests' web servers are on loopback, which the backends'
            // address rule refuses unless allowed (docs/backend-protocol.md).
            .env("DWA_HTTP_ALLOW", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the Python backend");
        let base = match ready_line(&mut child, ready, wait) {
            Some(b) => b,
            None => {
                let why = match child.try_wait() {
                    Ok(Some(status)) => {
                        format!("exited ({status}) before printing {ready:?}; its stderr is above")
                    }
                    _ => format!("did not print {ready:?} within {} s", wait.as_secs()),
                };
                let _ = child.kill();
                panic!("`python {}` {why}", args.join(" "));
            }
        };
        PyService {
            child: Some(child),
            base,
        }
    }
}

impl Drop for PyService {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Starts the host with the repo's plugins, forwarding to a Python backend
/// (`backend_var` = `LOCAL_BACKEND_URL` or `RAY_URL`) that shares its working folder.
pub fn host_for_backend(
    data_dir: &Path,
    work: &Path,
    backend_var: &'static str,
    url: &str,
) -> Host {
    let mut env = repo_host_env(work);
    env.push((backend_var, url.to_owned()));
    tokio::task::block_in_place(|| Host::start(data_dir, &env))
}

/// What a host beside Python backends gets, as `just serve` would: the
/// repo's plugins (compiled once into the tests' cache), its generated task
/// catalog, and the working folder it shares with the backends.
pub fn repo_host_env(work: &Path) -> Vec<(&'static str, String)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    vec![
        ("DWA_WORK_DIR", work.display().to_string()),
        (
            "DWA_PLUGIN_DIR",
            repo.join("plugins/dist").display().to_string(),
        ),
        (
            "DWA_PLUGIN_CACHE_DIR",
            repo.join("target/dwa-test-plugin-cache")
                .display()
                .to_string(),
        ),
        (
            "DWA_TASK_CATALOG",
            repo.join("shared/catalog.json").display().to_string(),
        ),
    ]
}

/// A file of the repository, by its path there.
pub fn repo_file(path: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file of `tests/fixtures/` (small media made once; see its README).
pub fn fixture(name: &str) -> Vec<u8> {
    repo_file(&format!("tests/fixtures/{name}"))
}

/// A stand-in for the OpenAI API (unreachable here): chat completions that
/// answer the user's message in capitals, whole or streamed as the real
/// one streams them.
pub async fn fake_openai() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|Json(body): Json<Value>| async move {
            let prompt = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_owned();
            if body["stream"] != json!(true) {
                let message = json!({"role": "assistant", "content": prompt.to_uppercase()});
                return Json(json!({"id": "c", "object": "chat.completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
                .into_response();
            }
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
    let addr = listen(app).await;
    format!("http://{addr}/v1")
}

/// A 16-bit mono WAV of a sine tone.
pub fn tone_wav(seconds: f64, rate: u32) -> Vec<u8> {
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

pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A local web server with the files the pipelines download.
pub async fn media_site() -> String {
    media_site_with(Vec::new()).await
}

/// Like [`media_site`], also serving `extra` files (`/files/<name>`).
pub async fn media_site_with(extra: Vec<(String, Vec<u8>)>) -> String {
    let wav = tone_wav(5.0, 22050);
    let photo = png(400, 300);
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(extra.into_iter().collect());
    let app = Router::new()
        .route(
            "/files/{name}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>| {
                let files = files.clone();
                async move {
                    match files.get(&name) {
                        Some(b) => (StatusCode::OK, b.clone()),
                        None => (StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            }),
        )
        .route(
            "/media/tone.wav",
            axum::routing::get(move || async move { ([("content-type", "audio/wav")], wav) }),
        )
        .route(
            "/media/photo.png",
            axum::routing::get(move || async move { ([("content-type", "image/png")], photo) }),
        );
    let addr = listen(app).await;
    format!("http://{addr}")
}
