//! The Ray backend on a cluster it joined (`--address`): two ingress
//! replicas, long jobs held by the job table actor, a worker replica killed
//! mid-job, the deployments file applied, and the cluster left up on exit.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::{Gate, RayHead, replica_pids};
use super::*;

const CONFIG: &str = "\
[ingress]\nmin_replicas = 2\nmax_replicas = 2\n\
[long]\nmin_replicas = 1\nmax_replicas = 1\n\
[gpu]\nmax_replicas = 1\n\
[family.faces]\nmin_replicas = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_outlive_ingress_replicas_and_a_killed_worker() {
    let _one_cluster_at_a_time = RAY.lock().await;
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    let config = data.path().join("deployments.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let head = tokio::task::block_in_place(|| RayHead::start(8));
    let port = free_port().to_string();
    let ray = tokio::task::block_in_place(|| {
        PyService::start(
            &[
                "-m",
                "backends.ray.run",
                "--address",
                &head.address,
                "--port",
                &port,
            ],
            "dwa ray backend listening on ",
            &[
                ("DWA_WORK_DIR", work.display().to_string()),
                ("DWA_RAY_CONFIG", config.display().to_string()),
            ],
            Duration::from_secs(240),
        )
    });

    // The file's scale, applied: replicas counted by Serve's own status.
    let deployments = deployments_when(&ray.base, |d| {
        replicas(d, "Ingress") == 2
            && replicas(d, "LongTasks") == 1
            && replicas(d, "gpu-faces") == 1
    })
    .await;
    let yolo = &deployments["deployments"]["gpu-yolo"];
    assert_eq!(
        replicas(&deployments, "gpu-yolo"),
        0,
        "scaled to zero: {yolo}"
    );
    assert_eq!(yolo["scale"]["min_replicas"], 0, "{yolo}");
    assert_eq!(yolo["scale"]["max_replicas"], 1, "{yolo}");
    assert_eq!(yolo["scale"]["num_gpus"], 0.0, "a CPU-only cluster: {yolo}");
    assert_eq!(
        deployments["deployments"]["gpu-whisper"]["scale"]["memory"],
        4u64 << 30,
        "whisper.transcribe's ram= is reserved: {deployments}"
    );

    // A long job taken by one ingress replica is polled on both.
    let mut gate = Gate::start().await;
    let c = client();
    let r = c
        .post(format!("{}/tasks/download.file", ray.base))
        .json(&json!({"input": {"url": format!("{}/gate/one.txt", gate.base)}, "taskId": "direct", "stepId": "s"}))
        .send()
        .await
        .expect("POST download.file");
    assert_eq!(r.status().as_u16(), 202, "a long task answers 202");
    let took = replica_of(&r);
    let job: Value = r.json().await.unwrap();
    let poll = format!(
        "{}/tasks/download.file/jobs/{}",
        ray.base,
        job["jobId"].as_str().unwrap()
    );
    gate.arrival("the job of one.txt").await;
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let p = c.get(&poll).send().await.expect("poll");
        let who = replica_of(&p);
        assert_eq!(
            p.status().as_u16(),
            202,
            "replica {who} answered {}",
            p.text().await.unwrap_or_default()
        );
        answered_by.insert(who);
        if answered_by.len() == 2 {
            break;
        }
    }
    assert_eq!(
        answered_by.len(),
        2,
        "400 polls all landed on one replica: {answered_by:?}"
    );
    assert!(answered_by.contains(&took));
    gate.open();
    let done = until_done(&poll).await;
    assert_eq!(done.status().as_u16(), 200, "the job ended well");
    let done: Value = done.json().await.unwrap();
    assert_eq!(
        done["result"]["bytes"],
        Gate::body("one.txt").len(),
        "{done}"
    );

    // Through the host: the worker running the job is killed; the host
    // runs the step again, and the task completes.
    gate.close();
    let data_dir = data.path().join("host");
    let host = host_for_backend(&data_dir, &work, "RAY_URL", &ray.base);
    let id = submit_ok(
        &host,
        &json!({
            "type": "fetch",
            "retry": {"attempts": 8, "backoff": "fixed", "delay": 1000},
            "steps": [{"id": "download", "task": "download.file",
                       "input": {"url": format!("{}/gate/two.txt", gate.base)}}]
        }),
    )
    .await;
    assert_eq!(gate.arrival("the host's job").await, "two.txt");
    let victims = replica_pids("dwa", "LongTasks");
    assert_eq!(victims.len(), 1, "one LongTasks replica: {victims:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victims[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(gate.arrival("the step run again").await, "two.txt");
    gate.open();
    let t = wait_done_on_real_backend(&host, &id, "download.file after its worker died").await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["stepResults"]["download"]["bytes"],
        Gate::body("two.txt").len(),
        "{t:#}"
    );
    let tries = t["stepStatus"][0]["attempts"].as_u64().unwrap_or(0);
    assert!(tries >= 2, "the step ran again: {t:#}");
    let events = read_events(&host.base, &id).await;
    let retried = events.iter().any(|(k, v)| {
        k == "step:retry"
            && v["data"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("replica running the job died"))
    });
    assert!(retried, "the retry says why: {events:#?}");
    drop(host);

    // Stopping the backend deletes its application and job table, not the cluster.
    drop(ray);
    let left = tokio::task::block_in_place(|| cluster_state(&head));
    assert_eq!(
        left.trim(),
        "apps=[] table=gone",
        "the cluster after the backend stopped"
    );
    drop(head);
}

fn replica_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-dwa-replica")
        .and_then(|v| v.to_str().ok())
        .expect("every answer names its replica (X-DWA-Replica)")
        .to_owned()
}

fn replicas(d: &Value, deployment: &str) -> u64 {
    d["deployments"][deployment]["replicas"]["RUNNING"]
        .as_u64()
        .unwrap_or(0)
}

/// `GET /deployments` once `ok` holds (bounded).
async fn deployments_when(base: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + REAL_BACKEND_WAIT;
    loop {
        let d: Value = client()
            .get(format!("{base}/deployments"))
            .send()
            .await
            .expect("GET /deployments")
            .json()
            .await
            .expect("JSON");
        if ok(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the deployments never came up as configured: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serve's applications and whether the job table lives, asked of the cluster.
fn cluster_state(head: &RayHead) -> String {
    let address = &head.address;
    let script = format!(
        "import ray\nfrom ray import serve\n\
         ray.init(address={address:?}, log_to_driver=False)\n\
         apps = sorted(serve.status().applications)\n\
         try:\n    ray.get_actor('dwa-jobs-dwa', namespace='dwa'); table = 'alive'\n\
         except ValueError:\n    table = 'gone'\n\
         print(f'apps={{apps}} table={{table}}')\n"
    );
    // A driver joining a cluster sends its token only when told to (as
    // backends/ray/run.py does).
    let mode = if head.token_auth { "token" } else { "disabled" };
    run_python(&script, &[("RAY_AUTH_MODE", mode)])
}
