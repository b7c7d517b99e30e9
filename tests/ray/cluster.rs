//! What the Ray tests run beside the backend: a Ray head started as a
//! cluster operator would (`ray start --head`), a web server whose answers
//! the test holds back, and the processes of Serve's replicas.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path as UrlPath;
use tokio::sync::{mpsc, watch};

/// `ray start --head --block` in a process group of its own: SIGTERM stops
/// the node; whatever is left after a minute is killed with the group.
pub struct RayHead {
    child: Child,
    /// `127.0.0.1:PORT` of its GCS, what `--address` takes.
    pub address: String,
    /// Whether the node asks for a token: Ray 2.60's `ray start` turns
    /// token authentication on only when `~/.ray/auth_token` already exists
    /// (a local `ray.init()`, such as the other Ray test's, writes it), so
    /// on a machine that never ran Ray it is off.
    pub token_auth: bool,
}

impl RayHead {
    pub fn start(num_cpus: u32) -> RayHead {
        let repo = super::repo();
        let port = super::free_port();
        let token_auth = std::env::var_os("HOME")
            .is_some_and(|home| std::path::Path::new(&home).join(".ray/auth_token").exists());
        let mut child = Command::new(repo.join(".venv/bin/python"))
            .args(["-m", "ray.scripts.scripts", "start", "--head", "--block"])
            .args([
                "--port",
                &port.to_string(),
                "--num-cpus",
                &num_cpus.to_string(),
            ])
            .args(["--include-dashboard", "false", "--disable-usage-stats"])
            // A throwaway node: stop at SIGTERM, without waiting 30 s for
            // Serve's actors to drain.
            .env("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
            .current_dir(&repo)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `ray start --head`");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ray runtime started") {
                    let _ = tx.send(());
                }
            }
        });
        let head = RayHead {
            child,
            address: format!("127.0.0.1:{port}"),
            token_auth,
        };
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            panic!("`ray start --head` did not say \"Ray runtime started\" within 120 s");
        }
        head
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Member by member: procps-ng 4.0's `kill -KILL -PGID` can signal
        // every process the user may (as `kill -1` does).
        for member in group_members(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &member.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
    }
}

/// A web server whose `/gate/{name}` answers wait until the test opens the
/// gate; every request is announced as it arrives.
pub struct Gate {
    pub base: String,
    arrivals: mpsc::UnboundedReceiver<String>,
    open: watch::Sender<bool>,
}

impl Gate {
    pub async fn start() -> Gate {
        let (arrived, arrivals) = mpsc::unbounded_channel::<String>();
        let (open, opened) = watch::channel(false);
        let state = Arc::new((arrived, opened));
        let app = Router::new().route(
            "/gate/{name}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>| {
                let state = state.clone();
                async move {
                    let _ = state.0.send(name.clone());
                    let mut opened = state.1.clone();
                    let _ = opened.wait_for(|open| *open).await;
                    Gate::body(&name)
                }
            }),
        );
        let addr = super::listen(app).await;
        Gate {
            base: format!("http://{addr}"),
            arrivals,
            open,
        }
    }

    /// What `/gate/{name}` answers.
    pub fn body(name: &str) -> String {
        format!("contents of {name}\n")
    }

    /// The name of the next request to arrive (bounded wait).
    pub async fn arrival(&mut self, what: &str) -> String {
        match tokio::time::timeout(Duration::from_secs(120), self.arrivals.recv()).await {
            Ok(Some(name)) => name,
            _ => panic!("no request reached the gate within 120 s: {what}"),
        }
    }

    /// Lets every waiting request, and every later one, through.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }

    pub fn close(&self) {
        let _ = self.open.send(false);
    }
}

/// The processes of process group `pgid` (`/proc/PID/stat`'s fifth field).
fn group_members(pgid: u32) -> Vec<u32> {
    pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // After the command name's closing parenthesis: state, ppid, pgrp.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                    == Some(pgid)
            })
        })
        .collect()
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// The processes of Serve's replicas of `deployment` in application `app`
/// (Ray titles them `ray::ServeReplica:APP:DEPLOYMENT`, followed by the
/// method running, if any).
pub fn replica_pids(app: &str, deployment: &str) -> Vec<u32> {
    let title = format!("ServeReplica:{app}:{deployment}");
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let cmd = String::from_utf8_lossy(&c);
                cmd.match_indices(&title).any(|(at, _)| {
                    let next = cmd[at + title.len()..].chars().next();
                    !next.is_some_and(|ch| ch.is_alphanumeric() || ch == '-' || ch == '_')
                })
            })
        })
        .collect()
}
