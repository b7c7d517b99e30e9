//! The host -> Python backend hop, on the local backend and on Ray Serve.

use super::*;

/// A Python backend as a child process, stopped with SIGTERM when dropped.
struct PyChild(std::process::Child);

impl Drop for PyChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn start_py(args: &[&str], ready: &str, wait: Duration) -> Option<(PyChild, String)> {
    use std::io::BufRead;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join(".venv/bin/python");
    if !python.exists() {
        return None;
    }
    let mut child = Command::new(python)
        .args(args)
        .current_dir(&repo)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix(&ready) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let child = PyChild(child);
    let base = rx.recv_timeout(wait).ok()?;
    Some((child, base))
}

/// The host → backend hop: a no-op Python task (`diag.echo`) called through
/// the host's backend client, on the local backend and on Ray Serve.
pub(crate) async fn backends_bench() {
    use dwa_core::step::StepCall;
    use dwa_engine::backend::HttpBackend;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port().to_string())
            .unwrap_or_else(|_| "18999".into())
    };
    let ray_port = free_port();
    for (what, args, ready, wait) in [
        (
            "local backend (uvicorn)",
            vec!["-m", "backends.local", "--port", "0"],
            "dwa backend listening on ",
            30,
        ),
        (
            "Ray Serve backend",
            vec![
                "-m",
                "backends.ray.run",
                "--port",
                ray_port.as_str(),
                "--num-cpus",
                "2",
            ],
            "dwa ray backend listening on ",
            240,
        ),
    ] {
        let Some((_child, base)) = start_py(&args, ready, Duration::from_secs(wait)) else {
            println!(
                "{what:<34} skipped: .venv missing or the backend did not start (just python-setup)"
            );
            continue;
        };
        let backend = HttpBackend::new("local", &base, None).expect("client");
        let call = |i: usize| StepCall {
            task_id: "bench".into(),
            step_id: format!("s{i}"),
            task: "diag.echo".into(),
            input: json!({"value": i}),
            attempt: 1,
            timeout: Duration::from_secs(10),
            progress: None,
        };
        for i in 0..100 {
            backend.run(&call(i)).await.expect("warm-up");
        }
        let n = 1000;
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let v = backend.run(&call(i)).await.expect("call");
            assert_eq!(v, json!(i));
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let one = n as f64 / start.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        let backend = Arc::new(backend);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let b = backend.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 8 {
                    b.run(&StepCall {
                        task_id: "bench".into(),
                        step_id: format!("w{w}-{i}"),
                        task: "diag.echo".into(),
                        input: json!({"value": i}),
                        attempt: 1,
                        timeout: Duration::from_secs(10),
                        progress: None,
                    })
                    .await
                    .expect("call");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let eight = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "{what:<34} no-op hop p50 {:.2} ms, p99 {:.2} ms; {one:.0} calls/s one at a time, {eight:.0} calls/s 8 at a time",
            pct(0.5),
            pct(0.99)
        );
    }
}
