//! `just new-plugin KIND LANG NAME` for every kind and language: in a copy of
//! the plugin tree, each scaffold is made, built by `scripts/build-plugins.sh`
//! unchanged, loaded by the real binary and called in one pipeline.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == "node_modules" || name == "__pycache__" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const KINDS: [&str; 3] = ["effect", "functions", "transform"];
const LANGS: [&str; 3] = ["rust", "python", "js"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scaffold_builds_and_loads_unchanged() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // The tree the scripts need, without the first-party plugins.
    copy_dir(&repo.join("wit"), &r.join("wit"));
    copy_dir(&repo.join("scripts"), &r.join("scripts"));
    for d in ["sdk", "sdk-functions", "sdk-transform"] {
        copy_dir(&repo.join("plugins").join(d), &r.join("plugins").join(d));
    }
    std::fs::copy(
        repo.join("plugins/Cargo.lock"),
        r.join("plugins/Cargo.lock"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(repo.join("plugins/Cargo.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("members") {
                r#"members = ["sdk", "sdk-functions", "sdk-transform", "effects/*", "functions/*", "transforms/*"]"#
            } else if l.starts_with("default-members") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(r.join("plugins/Cargo.toml"), manifest).unwrap();
    let js = r.join("plugins/js");
    std::fs::create_dir_all(&js).unwrap();
    for f in ["package.json", "package-lock.json", "build.mjs"] {
        std::fs::copy(repo.join("plugins/js").join(f), js.join(f)).unwrap();
    }
    let modules = repo.join("plugins/js/node_modules");
    assert!(
        modules.exists(),
        "plugins/js/node_modules is missing: run `just build-plugins` first"
    );
    std::os::unix::fs::symlink(&modules, js.join("node_modules")).unwrap();

    for kind in KINDS {
        for lang in LANGS {
            run(
                Command::new("bash")
                    .arg(r.join("scripts/new-plugin.sh"))
                    .args([kind, lang, &format!("my-{kind}-{lang}")])
                    .env("DWA_REPO", r),
                &format!("new-plugin {kind} {lang}"),
            );
        }
    }
    // A second scaffold of the same name is refused, and bad arguments explain themselves.
    let again = Command::new("bash")
        .arg(r.join("scripts/new-plugin.sh"))
        .args(["effect", "rust", "my-effect-rust"])
        .env("DWA_REPO", r)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = Command::new("bash")
        .arg(r.join("scripts/new-plugin.sh"))
        .args(["widget", "rust", "x"])
        .env("DWA_REPO", r)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown KIND widget"));

    run(
        Command::new("bash")
            .arg(r.join("scripts/build-plugins.sh"))
            .env("DWA_REPO", r)
            // Reuse the compiled SDK dependencies of the real plugin build.
            .env("CARGO_TARGET_DIR", repo.join("plugins/target")),
        "build-plugins",
    );

    let data = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "DWA_PLUGIN_DIR",
            r.join("plugins/dist").display().to_string(),
        ),
        (
            "DWA_PLUGIN_CACHE_DIR",
            repo.join("target/dwa-test-plugin-cache")
                .display()
                .to_string(),
        ),
    ];
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));
    let list = get_json(&host, "/api/plugins").await;
    assert_eq!(list["errors"], json!([]), "{list:#}");
    assert_eq!(list["plugins"].as_array().unwrap().len(), 9, "{list:#}");

    // One pipeline uses all nine: three transforms, three filters, three effects.
    let mut steps = Vec::new();
    let mut filters = serde_json::Map::new();
    for lang in LANGS {
        steps.push(
            json!({"id": format!("t_{lang}"), "task": format!("my-transform-{lang}.run"),
                          "input": {"text": "héllo"}}),
        );
        filters.insert(
            lang.into(),
            json!(format!("{{{{ payload.word | my_functions_{lang}(3) }}}}")),
        );
    }
    steps.push(json!({"id": "f", "task": "builtin.echo", "input": filters}));
    let effects: Vec<Value> = LANGS
        .iter()
        .map(|l| json!({"$event": format!("my-effect-{l}"), "note": "{{result.rust}}"}))
        .collect();
    let id = submit_ok(
        &host,
        &json!({"type": "scaffolds", "payload": {"word": "ab"},
                                      "steps": steps, "onSuccess": effects}),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    for lang in LANGS {
        assert_eq!(t["stepResults"][format!("t_{lang}")]["chars"], 5, "{t:#}");
        assert_eq!(t["stepResults"]["f"][lang], "ababab", "{t:#}");
    }
    let evs = events_until(&host, &id, |e| {
        LANGS.iter().all(|l| has(e, &format!("my-effect-{l}")))
    })
    .await;
    assert!(!has(&evs, "effect:error"), "{evs:?}");
}
