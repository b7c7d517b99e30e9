//! Plugin calls and loads, transforms as plugins against native code, template resolution.

use super::*;

struct NoHost;

#[async_trait::async_trait]
impl dwa_plugins::runtime::PluginHost for NoHost {
    async fn emit(
        &self,
        _: &str,
        _: &str,
        _: Value,
    ) -> Result<(), dwa_plugins::runtime::ServiceError> {
        Ok(())
    }
    async fn enqueue(
        &self,
        _: &str,
        _: Value,
    ) -> Result<String, dwa_plugins::runtime::ServiceError> {
        Err(dwa_plugins::runtime::ServiceError::NotAvailable)
    }
}

/// Plugin load time cold (compile) and warm (from the artifact cache), and
/// no-op effect calls with a fresh instance per call.
pub(crate) async fn plugins_bench() {
    use dwa_plugins::{PluginConfig, Plugins};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let testing = repo.join("plugins/dist-testing");
    let dist = repo.join("plugins/dist");
    let cache = tempfile::tempdir().expect("tempdir");
    let config = PluginConfig {
        dir: testing.clone(),
        cache_dir: Some(cache.path().to_path_buf()),
        http_allow: String::new(),
        policy_file: None,
        work_dir: cache.path().join("work"),
    };
    let skip_python = std::env::var("DWA_BENCH_SKIP_PYTHON").is_ok();
    for (what, dir, name) in [
        ("noop (Rust)", &testing, "noop"),
        ("audit (Python)", &dist, "audit"),
    ] {
        if skip_python && name == "audit" {
            continue;
        }
        let mut line = format!("{:<34}", format!("plugin load {what}"));
        for round in ["cold", "warm"] {
            let p = Plugins::new(&config).expect("plugins");
            let t = Instant::now();
            p.load(&dir.join(format!("{name}.json"))).expect("load");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let info = p
                .list()
                .into_iter()
                .find(|i| i.name == name)
                .expect("loaded");
            assert_eq!(info.from_cache, round == "warm");
            line.push_str(&format!(" {round} {ms:>8.2} ms"));
        }
        println!("{line}");
    }
    let p = Plugins::new(&config).expect("plugins");
    p.load(&testing.join("noop.json")).expect("load");
    let host: Arc<dyn dwa_plugins::runtime::PluginHost> = Arc::new(NoHost);
    let call = || dwa_plugins::runtime::EffectCall {
        effect: "noop".into(),
        lifecycle: "onSuccess".into(),
        task_id: "bench".into(),
        task: "{}".into(),
        config: "{}".into(),
    };
    for _ in 0..500 {
        p.call_effect("noop", call(), "bench", host.clone(), None)
            .await
            .expect("warm-up");
    }
    let n = 20_000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        p.call_effect("noop", call(), "bench", host.clone(), None)
            .await
            .expect("call");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = start.elapsed();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{:<34} {n} calls, fresh instance each: {:>8.0} calls/s, p50 {:.1} µs, p99 {:.1} µs (one caller)",
        "effect call (no-op plugin)",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    let p = Arc::new(p);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 4 {
                p.call_effect("noop", call(), "bench", host.clone(), None)
                    .await
                    .expect("call");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    println!(
        "{:<34} {n} calls from 4 callers: {:>8.0} calls/s; peak RSS {:.1} MB",
        "effect call (no-op plugin)",
        n as f64 / start.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
}

/// The transform plugins against the same Rust code compiled natively
/// (`plugins/bench-native`, built by `just bench`): chunk.text MB/s and
/// image.resize of a 4000×3000 JPEG.
pub(crate) async fn transforms_bench() {
    use dwa_plugins::{PluginConfig, Plugins};
    use serde_json::json;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = repo.join("plugins/dist");
    let work = tempfile::tempdir().expect("tempdir");
    let p = Plugins::new(&PluginConfig {
        dir: dist.clone(),
        cache_dir: Some(work.path().join("cache")),
        http_allow: String::new(),
        policy_file: None,
        work_dir: work.path().to_path_buf(),
    })
    .expect("plugins");
    for n in ["text", "image"] {
        p.load(&dist.join(format!("{n}.json")))
            .expect("load (run `just build-plugins`)");
    }
    // ~4 MB of text; a 4000×3000 JPEG of a gradient with noise-like detail.
    let words = [
        "orchestrate",
        "déjà",
        "pipeline",
        "naïve",
        "graph",
        "fan-out",
        "日本語",
        "retry",
        "the",
        "of",
    ];
    let text: String = (0..600_000usize)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let mb = text.len() as f64 / 1e6;
    let dir = work.path().join("bench");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("doc.txt"), &text).expect("write");
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
        let v = x
            .wrapping_mul(2654435761)
            .wrapping_add(y.wrapping_mul(40503))
            >> 24;
        image::Rgb([(x / 16) as u8, (y / 12) as u8, v as u8])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .expect("jpeg");
    std::fs::write(dir.join("big.jpg"), jpeg.into_inner()).expect("write");

    let rounds = 3;
    let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let mut chars = Vec::new();
    let mut tokens = Vec::new();
    let mut resize = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        p.run_task(
            "chunk.text",
            &json!({"path": "doc.txt", "size": 1000, "overlap": 100}),
            "bench",
        )
        .await
        .expect("chunk chars");
        chars.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        p.run_task(
            "chunk.text",
            &json!({"path": "doc.txt", "by": "tokens", "size": 512, "overlap": 64}),
            "bench",
        )
        .await
        .expect("chunk tokens");
        tokens.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        p.run_task(
            "image.resize",
            &json!({"path": "big.jpg", "width": 800, "height": 600, "output": "small.jpg"}),
            "bench",
        )
        .await
        .expect("resize");
        resize.push(t.elapsed().as_secs_f64());
    }
    let native_bin = repo.join("plugins/target/release/dwa-bench-native");
    let native: Option<Value> = if native_bin.exists() {
        let out = Command::new(&native_bin)
            .arg(dir.join("doc.txt"))
            .arg(dir.join("big.jpg"))
            .arg(&dir)
            .arg(rounds.to_string())
            .output()
            .expect("run dwa-bench-native");
        assert!(
            out.status.success(),
            "dwa-bench-native: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).ok()
    } else {
        None
    };
    let line = |what: &str, plugin_s: f64, key: &str, unit: &dyn Fn(f64) -> String| {
        let mut l = format!("{what:<34} plugin {}", unit(plugin_s));
        match native.as_ref().and_then(|n| n[key].as_f64()) {
            Some(n) => l.push_str(&format!(
                ", native {}; plugin/native speed {:.2}",
                unit(n),
                n / plugin_s
            )),
            None => l.push_str(" (native: build plugins/bench-native, as `just bench` does)"),
        }
        println!("{l}");
        println!("BENCH transforms.{key}.plugin={plugin_s:.5}");
        if let Some(n) = native.as_ref().and_then(|n| n[key].as_f64()) {
            println!("BENCH transforms.{key}.native={n:.5}");
        }
    };
    let mbps = |s: f64| format!("{:.1} MB/s", mb / s);
    line(
        &format!("chunk.text chars, {mb:.1} MB"),
        best(&chars),
        "chunk_chars_s",
        &mbps,
    );
    line(
        &format!("chunk.text cl100k tokens, {mb:.1} MB"),
        best(&tokens),
        "chunk_tokens_s",
        &mbps,
    );
    let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
    line(
        "image.resize 4000×3000 JPEG → 800×600",
        best(&resize),
        "resize_s",
        &ms,
    );
}

/// Template rendering: resolutions per second of a step input with builtin
/// filters only, and with a plugin filter (Rust `urlencode`, JavaScript
/// `slugify`); the JavaScript one both within one task (its pure plugin's
/// instance reused) and for a new task each time (a fresh instance).
pub(crate) async fn templates_bench() {
    use dwa_core::template::{Filters, Scope, Template};
    use dwa_plugins::{PluginConfig, Plugins, TaskFunctions};
    use serde_json::json;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = repo.join("plugins/dist");
    let work = tempfile::tempdir().expect("tempdir");
    let p = Plugins::new(&PluginConfig {
        dir: dist.clone(),
        cache_dir: Some(repo.join("target/dwa-bench-plugin-cache")),
        http_allow: String::new(),
        policy_file: None,
        work_dir: work.path().to_path_buf(),
    })
    .expect("plugins");
    for n in ["codec", "textfns"] {
        p.load(&dist.join(format!("{n}.json")))
            .expect("load (run `just build-plugins`)");
    }
    let fns = p.functions();
    let payload =
        json!({"title": "Summer Trip — Día 1", "user": {"name": "Ada"}, "tags": ["a", "b", "c"]});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let slugify = json!({"t": "{{ payload.title | slugify }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"});
    for (what, key, input, new_task_each) in [
        (
            "template, builtin filters",
            "builtin",
            json!({"t": "{{ payload.title | upper | truncate(10) }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"}),
            false,
        ),
        (
            "template + Rust filter (urlencode)",
            "rust_filter",
            json!({"t": "{{ payload.title | urlencode }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"}),
            false,
        ),
        (
            "template + JS filter, one task",
            "js_filter_one_task",
            slugify.clone(),
            false,
        ),
        (
            "template + JS filter, new task each",
            "js_filter_new_task",
            slugify,
            true,
        ),
    ] {
        let t = Template::parse_with(&input, Filters::With(&fns)).expect("parse");
        let n = if t.uses_functions() {
            if what.contains("JS") { 300 } else { 5_000 }
        } else {
            500_000
        };
        let ids: Vec<String> = (0..n + n / 10)
            .map(|i| {
                if new_task_each {
                    format!("bench-{i}")
                } else {
                    "bench".into()
                }
            })
            .collect();
        let functions = |i: usize| TaskFunctions {
            plugins: Some(&p),
            task_id: &ids[i],
        };
        for i in 0..n / 10 {
            t.resolve_with(&scope, &functions(n + i))
                .await
                .expect("warm-up");
        }
        let start = Instant::now();
        for i in 0..n {
            t.resolve_with(&scope, &functions(i))
                .await
                .expect("resolve");
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{what:<34} {:>10.0} resolutions/s ({:.1} µs each)",
            n as f64 / s,
            s / n as f64 * 1e6
        );
        println!("BENCH templates.{key}.us={:.2}", s / n as f64 * 1e6);
    }
}
