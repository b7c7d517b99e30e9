//! The `dwa` binary: `dwa serve` starts the host (see the README).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "dwa", version, about = "Declarative task orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the host (settings from the environment: PORT, DWA_DATA_DIR, ...).
    Serve,
    /// Print the OpenAPI document.
    Openapi,
    /// Load every plugin of DWA_PLUGIN_DIR (compiling it into the artifact
    /// cache) and list what each provides; fails if any cannot be loaded.
    Plugins,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Plugins => check_plugins().await,
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&dwa::api::openapi_for(
                    &dwa_core::limits::Limits::default()
                ))?
            );
            Ok(())
        }
    }
}

async fn check_plugins() -> anyhow::Result<()> {
    let config = dwa::config::Config::from_env()?;
    let plugins = dwa_plugins::Plugins::new(&dwa_plugins::PluginConfig {
        dir: config.plugin_dir.clone(),
        cache_dir: Some(config.plugin_cache_dir.clone()),
        http_allow: config.http_allow.clone(),
        policy_file: config.plugin_policy.clone(),
        work_dir: config.work_dir.clone(),
    })?;
    let dir = config.plugin_dir.clone();
    let report = tokio::task::spawn_blocking(move || {
        let r = plugins.load_dir(&dir);
        (r, plugins.list())
    })
    .await?;
    let (report, list) = report;
    for p in &list {
        let provides: Vec<&str> = p
            .effects
            .iter()
            .chain(&p.functions)
            .chain(&p.tasks)
            .map(String::as_str)
            .collect();
        println!(
            "{:<12} {:<8} {:<40} {:>8.1} ms{}  {}",
            p.name,
            p.version,
            p.world,
            p.load_ms,
            if p.from_cache { " (cached)" } else { "" },
            provides.join(", ")
        );
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} plugin(s) in {} could not be loaded",
        report.errors.len(),
        config.plugin_dir.display()
    );
    Ok(())
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
