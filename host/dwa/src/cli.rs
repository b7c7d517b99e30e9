//! The CLI's commands that drive a host over HTTP (docs/cli.md): submit,
//! watch, get, ls, cancel, viz, catalog, plugins. They go through `dwa_client`, the
//! same client Rust users have.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use dwa_client::{Client, TaskEvent};
use dwa_core::model::{TaskStatus, TaskView};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

/// Which host to talk to.
#[derive(Args)]
pub struct Remote {
    /// The host's URL.
    #[arg(
        long,
        env = "DWA_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    url: String,
    /// The host's API token (sent as a bearer token).
    #[arg(long, env = "DWA_API_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl Remote {
    fn client(&self) -> Client {
        let c = Client::new(&self.url);
        match &self.token {
            Some(t) if !t.is_empty() => c.with_token(t),
            _ => c,
        }
    }
}

/// The commands that talk to a host.
#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Submit a task file (JSON or YAML; `-` reads standard input).
    #[command(
        after_help = "Examples:\n  dwa submit podcast.yaml --watch\n  echo '{\"type\": \"builtin.echo\", \"payload\": {\"hi\": 1}}' | dwa submit -"
    )]
    Submit {
        /// The task file, or `-`.
        file: String,
        /// Follow the task until it ends (exit code 0 when it completed).
        #[arg(long)]
        watch: bool,
        /// Print the host's answers and events as JSON (one per line).
        #[arg(long)]
        json: bool,
    },
    /// Follow a task until it ends: its steps as they start, complete and
    /// fail, then its result. Exit code 0 when it completed, 1 otherwise.
    #[command(
        after_help = "Examples:\n  dwa watch 0193a5c2-...\n  dwa watch 0193a5c2-... --json | jq .type"
    )]
    Watch {
        /// The task's id.
        id: String,
        /// Print each event as a JSON line instead.
        #[arg(long)]
        json: bool,
    },
    /// Print a task as the API shows it (JSON).
    Get {
        /// The task's id.
        id: String,
    },
    /// List tasks, newest first.
    #[command(after_help = "Examples:\n  dwa ls --status failed --limit 20")]
    Ls {
        /// Only tasks of this status (pending, active, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only tasks of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Cancel a task.
    Cancel {
        /// The task's id.
        id: String,
    },
    /// Draw a task file's steps as a mermaid flowchart.
    #[command(after_help = "Examples:\n  dwa viz pipeline.yaml --open")]
    Viz {
        /// The task file, or `-`.
        file: String,
        /// Print the mermaid.live URL that opens the drawing instead.
        #[arg(long)]
        open: bool,
    },
    /// List the host's tasks by category.
    Catalog,
    /// List the host's plugins: what each provides and the permissions it
    /// was granted (`--load` checks the local plugin folder instead).
    #[command(
        after_help = "Examples:\n  dwa plugins\n  DWA_PLUGIN_DIR=plugins/dist dwa plugins --load"
    )]
    Plugins {
        /// Load every plugin of DWA_PLUGIN_DIR here (compiling it into the
        /// artifact cache) instead of asking a host; fails if any cannot load.
        #[arg(long)]
        load: bool,
    },
}

/// Runs a remote command; the exit code says how it went.
pub async fn run(remote: &Remote, command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let client = remote.client();
    match command {
        RemoteCommand::Submit { file, watch, json } => {
            let task = dwa::taskfile::read(&file)?;
            let created = client.create_task(&task).await?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "{} {} (queue {})",
                    created.id,
                    created.status.as_str(),
                    created.queue
                );
            }
            if watch {
                return follow(&client, &created.id, json).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Watch { id, json } => follow(&client, &id, json).await,
        RemoteCommand::Get { id } => {
            let task = client.get_task(&id).await?;
            println!("{}", serde_json::to_string_pretty(&task)?);
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Ls {
            status,
            queue,
            limit,
        } => {
            let status = match status {
                Some(s) => Some(TaskStatus::parse(&s).with_context(|| {
                    format!("unknown status {s:?}: pending, active, completed, failed or cancelled")
                })?),
                None => None,
            };
            let list = client
                .list_tasks(queue.as_deref(), status, Some(limit))
                .await?;
            println!(
                "{:<36}  {:<9}  {:<10}  {:>4}  {:<24}  TYPE",
                "ID", "STATUS", "QUEUE", "%", "CREATED"
            );
            for t in list.tasks {
                println!(
                    "{:<36}  {:<9}  {:<10}  {:>4.0}  {:<24}  {}",
                    t.id,
                    t.status.as_str(),
                    t.queue,
                    t.progress,
                    t.created_at,
                    t.task_type
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Cancel { id } => {
            let task = client.cancel_task(&id).await?;
            println!("{} {}", task.id, task.status.as_str());
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Viz { file, open } => {
            let task = dwa::taskfile::read(&file)?;
            let drawn = client.visualize(&task).await?;
            let key = if open { "url" } else { "mermaid" };
            println!("{}", drawn[key].as_str().unwrap_or_default());
            if let Some(unknown) = drawn["unknownTasks"].as_array().filter(|u| !u.is_empty()) {
                eprintln!("tasks this host does not run (dashed): {}", join(unknown));
            }
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Catalog => {
            let catalog = client.catalog().await?;
            print_catalog(&catalog);
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Plugins { load: true } => crate::local::load_plugins().await,
        RemoteCommand::Plugins { load: false } => {
            let list = client.plugins().await?;
            print_plugins(&list);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An error and its causes on one line, each said once (reqwest repeats
/// its message in its source).
pub fn describe(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

fn join(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_catalog(catalog: &Value) {
    let mut by_category: Vec<(String, Vec<&Value>)> = Vec::new();
    for t in catalog["tasks"].as_array().into_iter().flatten() {
        let c = t["category"].as_str().unwrap_or("other").to_owned();
        match by_category.iter_mut().find(|(name, _)| *name == c) {
            Some((_, list)) => list.push(t),
            None => by_category.push((c, vec![t])),
        }
    }
    by_category.sort_by(|a, b| a.0.cmp(&b.0));
    for (category, tasks) in by_category {
        println!("{category}");
        for t in tasks {
            let mut flags = Vec::new();
            if let Some(g) = t["gpu"].as_str() {
                flags.push(format!("gpu {g}"));
            }
            if t["streaming"].as_bool() == Some(true) {
                flags.push("streaming".into());
            }
            if t["chunk"].is_object() {
                flags.push("chunk".into());
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            let line = format!(
                "  {:<32} {:<8}{flags}",
                t["name"].as_str().unwrap_or_default(),
                t["backend"].as_str().unwrap_or_default()
            );
            println!("{}", line.trim_end());
        }
    }
}

fn print_plugins(list: &Value) {
    for p in list["plugins"].as_array().into_iter().flatten() {
        let provides: Vec<&str> = ["effects", "functions", "tasks"]
            .iter()
            .flat_map(|k| p[*k].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        let mut grants: Vec<String> = p["grantedHttp"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|h| format!("http {h}"))
            .collect();
        if p["grantedWorkdir"].as_bool() == Some(true) {
            grants.push("workdir".into());
        }
        let grants = if grants.is_empty() {
            "no permissions".to_owned()
        } else {
            grants.join(", ")
        };
        println!(
            "{:<12} {:<8} {:<40} {}  [{grants}]",
            p["name"].as_str().unwrap_or_default(),
            p["version"].as_str().unwrap_or_default(),
            p["world"].as_str().unwrap_or_default(),
            provides.join(", ")
        );
    }
    for e in list["errors"].as_array().into_iter().flatten() {
        eprintln!("not loaded: {}", e.as_str().unwrap_or_default());
    }
}

/// Follows a task to its end, printing its events; then its outcome.
async fn follow(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let first = client.get_task(id).await?;
    let mut view = Watch::new(&first, json);
    client.follow(id, |e| view.event(e)).await?;
    view.done();
    let last = client.get_task(id).await?;
    if !json {
        print_outcome(&last)?;
    }
    Ok(if last.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_outcome(task: &TaskView) -> anyhow::Result<()> {
    match task.status {
        TaskStatus::Completed => {
            let result = task.final_result.as_ref().or(task.result.as_ref());
            println!("completed: {}", serde_json::to_string_pretty(&result)?);
        }
        s => println!(
            "{}: {}",
            s.as_str(),
            task.error.as_deref().unwrap_or("no error given")
        ),
    }
    Ok(())
}

/// What `watch` shows: lines for step transitions on standard output and,
/// on a terminal, progress bars on standard error (an overall bar and one
/// per running step; indicatif draws nothing when stderr is not a terminal).
struct Watch {
    json: bool,
    bars: MultiProgress,
    overall: ProgressBar,
    steps: HashMap<String, ProgressBar>,
}

impl Watch {
    fn new(task: &TaskView, json: bool) -> Watch {
        let bars = MultiProgress::new();
        let total = task.step_status.as_ref().map_or(1, Vec::len).max(1) as u64;
        let overall = bars.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} steps {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_prefix(task.task_type.clone());
        if json {
            overall.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Watch {
            json,
            bars,
            overall,
            steps: HashMap::new(),
        }
    }

    fn line(&self, text: String) {
        self.bars.suspend(|| println!("{text}"));
    }

    fn event(&mut self, e: &TaskEvent) {
        if self.json {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
            return;
        }
        let step = e.step_id.clone().unwrap_or_default();
        let task = e.step_task.clone().unwrap_or_default();
        match e.kind.as_str() {
            "step:start" => {
                let bar = self.bars.add(ProgressBar::new(100));
                bar.set_style(
                    ProgressStyle::with_template("  {prefix} [{bar:20}] {pos}%")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(format!("{step} ({task})"));
                bar.enable_steady_tick(Duration::from_millis(200));
                self.steps.insert(step.clone(), bar);
                self.line(format!("▶ {step} ({task}) started"));
            }
            "step:progress" => {
                if let (Some(bar), Some(p)) = (self.steps.get(&step), e.data["progress"].as_f64()) {
                    bar.set_position(p.clamp(0.0, 100.0) as u64);
                }
            }
            "step:complete" => {
                self.end_step(&step);
                self.overall.inc(1);
                let took = e.data["duration"]
                    .as_i64()
                    .map(|ms| format!(" in {ms} ms"))
                    .unwrap_or_default();
                self.line(format!("✔ {step} ({task}) completed{took}"));
            }
            "step:retry" => {
                self.end_step(&step);
                let err = e.data["error"].as_str().unwrap_or_default();
                let ms = e.data["retryInMs"].as_i64().unwrap_or(0);
                self.line(format!(
                    "↻ {step} ({task}) failed, retrying in {ms} ms: {err}"
                ));
            }
            "step:error" => {
                self.end_step(&step);
                let err = e.data["error"].as_str().unwrap_or_default();
                self.line(format!("✖ {step} ({task}) failed: {err}"));
            }
            "step:wait" => {
                self.end_step(&step);
                let name = e.data["name"].as_str().unwrap_or_default();
                let link = e.data["signalUrl"].as_str().unwrap_or_default();
                self.line(format!("⏸ {step} waits for signal {name:?} {link}"));
            }
            "task:retry" => {
                self.overall.set_position(0);
                self.line(format!("↻ run {} of the task", e.data["run"]));
            }
            _ => {}
        }
    }

    fn end_step(&mut self, step: &str) {
        if let Some(bar) = self.steps.remove(step) {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
    }

    fn done(&mut self) {
        for (_, bar) in self.steps.drain() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}
