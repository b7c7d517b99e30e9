//! The commands that work without a host: loading the plugin folder
//! (`dwa plugins --load`) and validating a task file (`dwa validate`).

use std::process::ExitCode;

use anyhow::Context;

/// `dwa plugins --load`: loads every plugin of DWA_PLUGIN_DIR (compiling it
/// into the artifact cache) and lists what each provides; fails if any
/// cannot be loaded.
pub async fn load_plugins() -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

/// `dwa validate FILE`: the host's checks offline (dwa::validate); each
/// problem on its own line as `FILE:LINE: field: message`.
pub fn validate(file: &str) -> anyhow::Result<ExitCode> {
    let config = dwa::config::Config::from_env()?;
    let (catalog, unread) = dwa::validate::offline_catalog(&config)
        .context("DWA_TASK_CATALOG names the tasks the Python backends serve")?;
    for e in unread {
        eprintln!("warning: {e}");
    }
    let text = dwa::taskfile::read_text(file)?;
    let shown = dwa::taskfile::shown_name(file);
    let task = dwa::taskfile::parse(shown, &text)?;
    match dwa::validate::check(&task, &catalog, &config.limits, config.max_body_bytes) {
        Ok(steps) => {
            println!("{shown}: valid ({steps} steps)");
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            // In the file's order; problems without a line first.
            let mut located: Vec<_> = errors
                .iter()
                .map(|e| (dwa::taskfile::line_of(&text, &e.field), e))
                .collect();
            located.sort_by_key(|(line, _)| *line);
            for (line, e) in located {
                let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                println!("{shown}{at}: {}: {}", e.field, e.message);
            }
            println!("{shown}: {} problem(s)", errors.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
