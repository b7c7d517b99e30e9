//! The dashboard in a real browser: tests/browser/dashboard.mjs drives
//! Debian's chromium with playwright-core against this host (both
//! installed by `just test-setup`): the token form, a DAG's steps turning
//! from pending to running to completed without a reload, cancel and "run
//! again" from the page, the list's filter, the catalog and the plugins.

use std::path::Path;
use std::process::Command;

use super::common::*;
use super::start;

const TOKEN: &str = "dashboard-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_dag_live_and_cancels_from_the_page() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = repo.join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs playwright-core and chromium: run `just test-setup`"
    );
    let fake = Fake::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut env = repo_host_env(work.path());
    env.push(("DWA_API_TOKEN", TOKEN.into()));
    let (_d, host) = start(&fake, &env);
    let base = host.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("dashboard.mjs")
            .current_dir(&browser)
            .env("DWA_URL", base)
            .env("DWA_API_TOKEN", TOKEN)
            .env("DWA_EXPECT_PLUGINS", "1")
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "tests/browser/dashboard.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_without_the_token() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[("DWA_API_TOKEN", TOKEN.into())]);
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let r = client().get(host.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
    let r = client()
        .get(host.url("/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The data still needs the token.
    let r = client().get(host.url("/api/tasks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
