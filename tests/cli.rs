//! The `dwa` CLI against a real host: task files in YAML and JSON, submit
//! and watch with their exit codes, get, ls, cancel, viz, completions, the
//! API token, and errors that name the file, line or field.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "cli-test-token-0123456789";

/// Runs `dwa ARGS` against `host` (with the API token unless `token` is
/// None), feeding `stdin`; bounded by the commands' own waits.
async fn dwa(host: &Host, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwa"));
    cmd.args(args)
        .env("DWA_URL", &host.base)
        .env_remove("DWA_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("DWA_API_TOKEN", t);
    }
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn host() -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DWA_API_TOKEN", TOKEN.to_owned())];
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    (dir, host)
}

const PIPELINE: &str = "\
type: greet
payload: {name: Ada}
steps:
  - id: hello
    task: builtin.echo
    input: {text: 'hello {{payload.name}}'}
  - id: shout
    task: builtin.echo
    input:
      said: '{{steps.hello.text}}'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_pipeline_is_submitted_watched_to_its_result_and_listed() {
    let (_d, host) = host();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greet.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let o = dwa(
        &host,
        Some(TOKEN),
        &["submit", file.to_str().unwrap(), "--watch"],
        "",
    )
    .await;
    let text = out(&o);
    assert!(o.status.success(), "{text}\n{}", err(&o));
    let id = text.split_whitespace().next().unwrap().to_owned();
    for line in [
        "▶ hello (builtin.echo) started",
        "✔ hello (builtin.echo) completed in",
        "✔ shout (builtin.echo) completed in",
        "completed: ",
        "\"said\": \"hello Ada\"",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    let o = dwa(&host, Some(TOKEN), &["get", &id], "").await;
    let task: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"], json!({"said": "hello Ada"}));

    let o = dwa(
        &host,
        Some(TOKEN),
        &["ls", "--status", "completed", "--limit", "5"],
        "",
    )
    .await;
    let table = out(&o);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("completed") && l.ends_with("greet")),
        "{table}"
    );

    // Without the token the host refuses, and the CLI says so.
    let o = dwa(&host, None, &["get", &id], "").await;
    assert!(!o.status.success());
    assert!(err(&o).contains("HTTP 401"), "{}", err(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_1_when_the_task_fails_and_json_lines_are_events() {
    let (_d, host) = host();
    let task = r#"{"type": "builtin.fail", "payload": {"message": "no luck", "retryable": false}}"#;
    let o = dwa(
        &host,
        Some(TOKEN),
        &["submit", "-", "--watch", "--json"],
        task,
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let lines: Vec<Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines[0]["status"], "pending", "the created task first");
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"step:error"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"pipeline:complete"), "{kinds:?}");

    // Plain output says why.
    let id = lines[0]["id"].as_str().unwrap();
    let o = dwa(&host, Some(TOKEN), &["watch", id], "").await;
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("failed: no luck"), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_bad_tasks_are_refused_naming_the_line_or_field() {
    let (_d, host) = host();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "type: x\nsteps:\n  - task: a\n   bad: [\n").unwrap();
    let o = dwa(
        &host,
        Some(TOKEN),
        &["submit", broken.to_str().unwrap()],
        "",
    )
    .await;
    assert!(!o.status.success());
    let e = err(&o);
    assert!(
        e.contains("broken.yaml is not valid YAML") && e.contains("line 4"),
        "{e}"
    );
    assert_eq!(o.status.code(), Some(2), "a command that failed exits 2");

    let invalid = "type: p\nsteps:\n  - {id: a, task: builtin.echo, priority: 5000}\n";
    let o = dwa(&host, Some(TOKEN), &["submit", "-"], invalid).await;
    assert!(!o.status.success());
    assert!(err(&o).contains("steps[0].priority"), "{}", err(&o));
    assert!(err(&o).contains("HTTP 422"), "{}", err(&o));
    assert!(err(&o).starts_with("error: "), "{}", err(&o));

    let o = dwa(&host, Some(TOKEN), &["submit", "/nonexistent/t.json"], "").await;
    assert!(
        err(&o).contains("cannot read /nonexistent/t.json"),
        "{}",
        err(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_viz_catalog_and_completions() {
    let (_d, host) = host();
    let waiting = r#"{"type": "approval", "steps": [{"id": "ok", "task": "builtin.wait", "input": {"name": "go"}}]}"#;
    let o = dwa(&host, Some(TOKEN), &["submit", "-"], waiting).await;
    assert!(o.status.success(), "{}", err(&o));
    let id = out(&o).split_whitespace().next().unwrap().to_owned();
    wait_until(&host, &id, "its wait step to park", |t| {
        t["stepStatus"][0]["status"] == "waiting"
    })
    .await;
    let o = dwa(&host, Some(TOKEN), &["cancel", &id], "").await;
    assert_eq!(out(&o).trim(), format!("{id} cancelled"), "{}", err(&o));

    let o = dwa(&host, Some(TOKEN), &["viz", "-"], PIPELINE).await;
    let drawing = out(&o);
    assert!(drawing.starts_with("graph TD"), "{drawing}\n{}", err(&o));
    assert!(
        drawing.contains("hello") && drawing.contains("shout"),
        "{drawing}"
    );
    let o = dwa(&host, Some(TOKEN), &["viz", "-", "--open"], PIPELINE).await;
    assert!(
        out(&o).starts_with("https://mermaid.live/edit#pako:"),
        "{}",
        out(&o)
    );

    let o = dwa(&host, Some(TOKEN), &["catalog"], "").await;
    let listing = out(&o);
    assert!(listing.lines().any(|l| l == "builtin"), "{listing}");
    assert!(listing.contains("  builtin.echo"), "{listing}");

    let o = dwa(&host, None, &["completions", "bash"], "").await;
    assert!(
        o.status.success() && out(&o).contains("_dwa()"),
        "{}",
        err(&o)
    );
}

/// `dwa validate` needs no host: the same refusals as `POST /api/tasks`,
/// each at its line; `dwa plugins` lists a host's plugins and grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_each_problems_line_offline_and_plugins_lists_the_hosts() {
    let work = tempfile::tempdir().unwrap();
    let repo_env = repo_host_env(work.path());
    let offline = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwa"));
        cmd.args(args)
            // Nothing listens there: validation must not need a host.
            .env("DWA_URL", "http://127.0.0.1:9")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &repo_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = offline(&["validate", "-"], PIPELINE);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o).trim(), "standard input: valid (2 steps)");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("podcast.yaml");
    std::fs::write(
        &file,
        "type: podcast\n\
         steps:\n\
         \x20 - id: dl\n\
         \x20   task: download.file\n\
         \x20   input: {url: 'https://x/a.mp3'}\n\
         \x20 - id: tx\n\
         \x20   task: whisper.transcrib\n\
         \x20 - id: late\n\
         \x20   task: builtin.echo\n\
         \x20   priority: 5000\n\
         onSuccess:\n\
         \x20 - {$event: toast, message: done}\n",
    )
    .unwrap();
    let name = file.to_str().unwrap();
    let o = offline(&["validate", name], "");
    let said = out(&o);
    assert_eq!(o.status.code(), Some(1), "{said}{}", err(&o));
    assert!(
        said.contains(&format!("{name}:7: steps[1].task: ")),
        "the unknown task at its line:\n{said}"
    );
    assert!(
        said.contains(&format!("{name}:10: steps[2].priority: ")),
        "the priority at its line:\n{said}"
    );
    assert!(said.trim_end().ends_with("2 problem(s)"), "{said}");
    // The toast effect is declared by a plugin manifest: not a problem.
    assert!(!said.contains("onSuccess"), "{said}");

    let o = offline(&["validate", "/nonexistent/t.yaml"], "");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));

    let data = tempfile::tempdir().unwrap();
    let mut env = repo_env.clone();
    env.push(("DWA_API_TOKEN", TOKEN.to_owned()));
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));
    let o = dwa(&host, Some(TOKEN), &["plugins"], "").await;
    let listing = out(&o);
    assert!(o.status.success(), "{}", err(&o));
    let webhook = listing
        .lines()
        .find(|l| l.starts_with("webhook "))
        .unwrap_or_else(|| panic!("no webhook plugin listed:\n{listing}"));
    assert!(
        webhook.contains("dwa:plugin/effect-handler@") && webhook.contains("[http "),
        "its world and its granted hosts: {webhook}"
    );
}
