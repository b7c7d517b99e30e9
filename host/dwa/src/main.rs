//! The `dwa` binary: `dwa serve` starts the host (see the README); the
//! other commands drive a host over HTTP (docs/cli.md).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;
mod local;

#[derive(Parser)]
#[command(
    name = "dwa",
    version,
    about = "Declarative task orchestrator",
    after_help = "Examples:\n  dwa serve\n  dwa submit podcast.yaml --watch\n  dwa ls --status failed\n  DWA_URL=http://gpu-box:3000 dwa watch 0193a5c2-..."
)]
struct Cli {
    #[command(flatten)]
    remote: cli::Remote,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the host (settings from the environment: PORT, DWA_DATA_DIR, ...).
    Serve,
    /// Print the OpenAPI document.
    Openapi,
    /// Check a task file as the host would, without a host: exit code 0
    /// when it is valid, 1 with each problem and its line when not.
    #[command(
        after_help = "Checks against the builtins, DWA_TASK_CATALOG (shared/catalog.json) and the\nplugin manifests of DWA_PLUGIN_DIR, within the limits the environment sets.\n\nExamples:\n  dwa validate podcast.yaml\n  cat task.json | dwa validate -"
    )]
    Validate {
        /// The task file (JSON or YAML), or `-`.
        file: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  dwa completions bash > /etc/bash_completion.d/dwa")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// (Internal) Compile one plugin component into an artifact file: what
    /// the host runs in a child process for a plugin missing from its cache.
    #[command(name = "__compile-plugin", hide = true)]
    CompilePlugin {
        /// The component (`.wasm`).
        wasm: std::path::PathBuf,
        /// The artifact file to write.
        out: std::path::PathBuf,
    },
    #[command(flatten)]
    Remote(cli::RemoteCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The host logs at info; a command driving a host stays quiet unless asked.
    let level = match cli.command {
        Some(
            Command::Remote(_)
            | Command::Completions { .. }
            | Command::Validate { .. }
            | Command::CompilePlugin { .. },
        ) => "warn",
        _ => "info",
    };
    let telemetry = dwa::telemetry::init(level)?;
    let done = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let served = serve().await;
            telemetry.shutdown();
            served
        }
        // Exit codes: 0 done (a watched task completed), 1 a watched task
        // failed or was cancelled, 2 the command itself failed.
        Command::Remote(c) => {
            return Ok(cli::run(&cli.remote, c).await.unwrap_or_else(|e| {
                eprintln!("error: {}", cli::describe(&e));
                ExitCode::from(2)
            }));
        }
        Command::Validate { file } => {
            return Ok(local::validate(&file).unwrap_or_else(|e| {
                eprintln!("error: {}", cli::describe(&e));
                ExitCode::from(2)
            }));
        }
        Command::CompilePlugin { wasm, out } => {
            dwa_plugins::precompile(&wasm, &out).map_err(anyhow::Error::msg)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "dwa", &mut std::io::stdout());
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&dwa::api::openapi_for(
                    &dwa_core::limits::Limits::default()
                ))?
            );
            Ok(())
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

async fn serve() -> anyhow::Result<()> {
    let config = dwa::config::Config::from_env()?;
    let host = dwa::server::build(&config).await?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port when PORT=0.
    println!("dwa listening on http://{local}");
    tracing::info!(%local, data_dir = %config.data_dir.display(), "dwa serving");
    axum::serve(listener, host.router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopping: no new jobs are taken; running steps may finish");
    host.engine
        .shutdown(Duration::from_millis(config.shutdown_grace_ms))
        .await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
