//! The transform-task and template-function plugins `just build-plugins`
//! built (Rust, Python and JavaScript), run by the real wasmtime host: on
//! real files of a task's working folder, with bad inputs, and end to end
//! through the HTTP API in pipelines.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::*;
use dwa_plugins::{PluginConfig, Plugins};
use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dist() -> PathBuf {
    let d = repo().join("plugins/dist");
    for name in ["image", "text", "json", "csvtools", "textfns"] {
        assert!(
            d.join(format!("{name}.wasm")).exists(),
            "plugins/dist has no {name}.wasm: run `just build-plugins` first"
        );
    }
    d
}

fn cache() -> PathBuf {
    repo().join("target/dwa-test-plugin-cache")
}

/// A plugin host with the named plugins of plugins/dist, working folders under `work`.
fn plugins(work: &Path, names: &[&str], policy: Option<&Path>) -> Plugins {
    let p = Plugins::new(&PluginConfig {
        dir: dist(),
        cache_dir: Some(cache()),
        http_allow: String::new(),
        policy_file: policy.map(Path::to_path_buf),
        work_dir: work.to_path_buf(),
    })
    .expect("plugin host");
    for n in names {
        p.load(&dist().join(format!("{n}.json")))
            .unwrap_or_else(|e| panic!("load {n}: {e}"));
    }
    p
}

/// A gradient whose every pixel says where it is.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

fn decode(path: &Path) -> DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn run(p: &Plugins, task: &str, input: Value, task_id: &str) -> Result<Value, String> {
    p.run_task(task, &input, task_id)
        .await
        .map_err(|e| e.to_string())
}

fn no_partial_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.ends_with("dwa-partial"),
            "half-written file left: {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_resize_and_crop_on_real_files() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["image"], None);
    let dir = work.path().join("t1");
    std::fs::create_dir_all(&dir).unwrap();
    let src = gradient(640, 480);
    std::fs::write(dir.join("photo.png"), encode(&src, ImageFormat::Png)).unwrap();
    std::fs::write(dir.join("photo.jpg"), encode(&src, ImageFormat::Jpeg)).unwrap();

    // contain: the aspect ratio is kept inside the box.
    let out = run(
        &p,
        "image.resize",
        json!({"path": "photo.png", "width": 320, "height": 320, "output": "a.png"}),
        "t1",
    )
    .await
    .unwrap();
    assert_eq!(
        (out["width"].as_u64(), out["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(decode(&dir.join("a.png")).dimensions(), (320, 240));
    assert_eq!(
        out["source"],
        json!({"path": "photo.png", "width": 640, "height": 480})
    );

    // cover and fill give the exact box; one side alone follows the ratio.
    for (fit, w, h) in [("cover", 100, 100), ("fill", 50, 200)] {
        let out = run(&p, "image.resize", json!({"path": "photo.jpg", "width": w, "height": h, "fit": fit, "output": format!("{fit}.jpg")}), "t1")
            .await
            .unwrap();
        assert_eq!(
            decode(&dir.join(format!("{fit}.jpg"))).dimensions(),
            (w, h),
            "{out}"
        );
    }
    run(
        &p,
        "image.resize",
        json!({"path": "photo.jpg", "height": 120, "output": "h.webp"}),
        "t1",
    )
    .await
    .unwrap();
    let webp = std::fs::read(dir.join("h.webp")).unwrap();
    assert_eq!(image::guess_format(&webp).unwrap(), ImageFormat::WebP);
    assert_eq!(decode(&dir.join("h.webp")).dimensions(), (160, 120));
    // Default output name beside the input.
    let out = run(
        &p,
        "image.resize",
        json!({"path": "photo.png", "width": 64}),
        "t1",
    )
    .await
    .unwrap();
    assert_eq!(out["path"], "photo.resized.png");
    assert!(dir.join("photo.resized.png").exists());

    // A JPEG shrunk to a half or less is decoded at a reduced IDCT scale
    // (here 1/8): the size is the one a full decode gives, the source's size
    // is reported, and the pixels match a full decode resized.
    let smooth = RgbImage::from_fn(1280, 960, |x, y| {
        Rgb([(x * 255 / 1279) as u8, (y * 255 / 959) as u8, 128])
    });
    std::fs::write(dir.join("big.jpg"), encode(&smooth, ImageFormat::Jpeg)).unwrap();
    let out = run(
        &p,
        "image.resize",
        json!({"path": "big.jpg", "width": 100, "output": "small.png"}),
        "t1",
    )
    .await
    .unwrap();
    assert_eq!(
        out["source"],
        json!({"path": "big.jpg", "width": 1280, "height": 960})
    );
    let got = decode(&dir.join("small.png")).to_rgb8();
    assert_eq!(got.dimensions(), (100, 75));
    let want = decode(&dir.join("big.jpg"))
        .resize_exact(100, 75, image::imageops::FilterType::CatmullRom)
        .to_rgb8();
    let diff: f64 = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / got.as_raw().len() as f64;
    assert!(
        diff < 3.0,
        "mean difference {diff:.2} per channel from a full decode"
    );

    // crop: exact pixels from a lossless source.
    let out = run(&p, "image.crop", json!({"path": "photo.png", "x": 10, "y": 20, "width": 100, "height": 50, "output": "sub/c.png"}), "t1")
        .await
        .unwrap();
    assert_eq!(out["path"], "sub/c.png");
    let c = decode(&dir.join("sub/c.png")).to_rgb8();
    assert_eq!(c.dimensions(), (100, 50));
    assert_eq!(c.get_pixel(0, 0), src.get_pixel(10, 20));
    assert_eq!(c.get_pixel(99, 49), src.get_pixel(109, 69));
    no_partial_files(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_bad_inputs_are_clear_errors_and_never_escape() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["image"], None);
    let dir = work.path().join("t2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ok.png"),
        encode(&gradient(40, 30), ImageFormat::Png),
    )
    .unwrap();
    std::fs::write(
        dir.join("corrupt.jpg"),
        b"\xff\xd8\xff\xe0 this is not really a jpeg",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    // A real image outside the working folder, and links to it from inside.
    let outside = work.path().join("secret.png");
    std::fs::write(&outside, encode(&gradient(8, 8), ImageFormat::Png)).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link.png")).unwrap();
    std::os::unix::fs::symlink(work.path(), dir.join("up")).unwrap();

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"path": "corrupt.jpg", "width": 10}),
            "`path` corrupt.jpg: cannot decode it",
        ),
        (
            json!({"path": "notes.txt", "width": 10}),
            "`path` notes.txt: cannot decode it: not a PNG, JPEG or WebP image",
        ),
        (
            json!({"path": "missing.png", "width": 10}),
            "`path` missing.png: no such file in the task's working folder",
        ),
        (
            json!({"path": "../secret.png", "width": 10}),
            "leaves the task's working folder",
        ),
        (
            json!({"path": "/etc/passwd", "width": 10}),
            "is an absolute path",
        ),
        (
            json!({"path": "link.png", "width": 10}),
            "`path` link.png: cannot read it",
        ),
        (
            json!({"path": "up/secret.png", "width": 10}),
            "`path` up/secret.png: cannot read it",
        ),
        (
            json!({"path": "ok.png", "width": 10, "output": "../out.png"}),
            "`output` \"../out.png\" leaves the task's working folder",
        ),
        (
            json!({"path": "ok.png", "width": 10, "output": "up/out.png"}),
            "`output` up/out.png: cannot write it",
        ),
        (
            json!({"path": "ok.png", "width": 10, "output": "x.gif"}),
            "the extension must be .png, .jpg, .jpeg or .webp",
        ),
        (json!({"path": "ok.png"}), "give `width`, `height` or both"),
        (
            json!({"path": "ok.png", "width": 0}),
            "`width` must be a whole number from 1 to 65535",
        ),
        (
            json!({"path": "ok.png", "width": 10, "fit": "stretch", "height": 5}),
            "`fit` \"stretch\" is not one of contain, cover, fill",
        ),
        (json!({"width": 10}), "`path` is required"),
    ];
    for (input, want) in cases {
        let e = run(&p, "image.resize", input.clone(), "t2")
            .await
            .unwrap_err();
        assert!(e.contains(want), "{input}: wanted {want:?} in {e:?}");
        assert!(e.starts_with("plugin image@0.1.0: "), "{e}");
    }
    let e = run(
        &p,
        "image.crop",
        json!({"path": "ok.png", "x": 30, "y": 0, "width": 20, "height": 10}),
        "t2",
    )
    .await
    .unwrap_err();
    assert!(e.contains("does not fit in the 40×30 image"), "{e}");
    // Nothing was written outside, nothing half-written inside.
    assert!(!work.path().join("out.png").exists());
    let outside_files: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_files.len(), 2, "{outside_files:?}");
    no_partial_files(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_text_by_characters_and_tokens() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["text"], None);
    // ~60 KB of varied text, with multi-byte characters.
    let words = [
        "orchestrate",
        "déjà",
        "vu",
        "pipeline",
        "naïve",
        "graph",
        "ß",
        "fan-out",
        "日本語",
        "retry",
    ];
    let text: String = (0..8000)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let chars: Vec<char> = text.chars().collect();

    let out = run(
        &p,
        "chunk.text",
        json!({"text": text, "size": 1000, "overlap": 100}),
        "t3",
    )
    .await
    .unwrap();
    let chunks = out["chunks"].as_array().unwrap();
    let expected = (chars.len() - 100).div_ceil(900);
    assert_eq!(chunks.len(), expected);
    assert_eq!(out["count"], json!(expected));
    // Every chunk is the exact window; consecutive chunks share `overlap` characters.
    let mut rebuilt: String = chunks[0]["text"].as_str().unwrap().to_owned();
    for (i, c) in chunks.iter().enumerate() {
        let (s, e) = (
            c["start"].as_u64().unwrap() as usize,
            c["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(s, i * 900);
        assert_eq!(
            c["text"].as_str().unwrap(),
            chars[s..e].iter().collect::<String>()
        );
        if i > 0 {
            rebuilt.extend(c["text"].as_str().unwrap().chars().skip(100));
        }
    }
    assert_eq!(rebuilt, text);

    // By tokens (cl100k_base): windows of at most 256 tokens overlapping by 32.
    let out = run(
        &p,
        "chunk.text",
        json!({"text": text, "by": "tokens", "size": 256, "overlap": 32}),
        "t3",
    )
    .await
    .unwrap();
    let chunks = out["chunks"].as_array().unwrap();
    assert!(chunks.len() > 10, "{}", chunks.len());
    let total = chunks.last().unwrap()["end"].as_u64().unwrap() as usize;
    assert_eq!(chunks.len(), (total - 32).div_ceil(224));
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["start"].as_u64().unwrap() as usize, i * 224);
        assert!(c["tokens"].as_u64().unwrap() <= 256);
    }
    // Counted independently, with the tokenizer itself (not the plugin).
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let tokens = bpe.encode_ordinary(&text);
    assert_eq!(
        total,
        tokens.len(),
        "the chunks end at the text's last token"
    );
    assert_eq!(chunks.len(), (tokens.len() - 32).div_ceil(224));
    // Each chunk is exactly its window of tokens, and the windows without
    // their overlaps rebuild the whole text, byte for byte.
    let mut rebuilt = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let (s, e) = (
            c["start"].as_u64().unwrap() as usize,
            c["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(e, (s + 256).min(tokens.len()), "chunk {i}");
        let window = bpe.decode_bytes(&tokens[s..e]).unwrap();
        assert_eq!(
            c["text"].as_str().unwrap(),
            String::from_utf8_lossy(&window),
            "chunk {i} is its window"
        );
        let own_end = if i + 1 < chunks.len() { s + 224 } else { e };
        rebuilt.extend(bpe.decode_bytes(&tokens[s..own_end]).unwrap());
    }
    assert_eq!(String::from_utf8(rebuilt).unwrap(), text);

    // From a file of the working folder.
    let dir = work.path().join("t4");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("doc.txt"), "abcdefghij").unwrap();
    let out = run(
        &p,
        "chunk.text",
        json!({"path": "doc.txt", "size": 4, "overlap": 1}),
        "t4",
    )
    .await
    .unwrap();
    let texts: Vec<&str> = out["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["abcd", "defg", "ghij"]);

    for (input, want) in [
        (
            json!({"text": "x", "size": 4, "overlap": 4}),
            "`overlap` (4) must be smaller than `size` (4)",
        ),
        (
            json!({"text": "x", "by": "words"}),
            "`by` must be \"chars\" or \"tokens\"",
        ),
        (
            json!({"text": "x", "by": "tokens", "encoding": "gpt2"}),
            "`encoding` \"gpt2\" is not one of cl100k_base, o200k_base",
        ),
        (json!({"text": 3}), "`text` must be a string"),
        (
            json!({}),
            "`text` (or `path`, a file of the working folder) is required",
        ),
        (
            json!({"path": "../../etc/passwd"}),
            "leaves the task's working folder",
        ),
    ] {
        let e = run(&p, "chunk.text", input.clone(), "t4")
            .await
            .unwrap_err();
        assert!(e.contains(want), "{input}: wanted {want:?} in {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_pick_reshapes_outputs() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["json"], None);
    let scenes = json!([
        {"start": 0.0, "keyframe": {"path": "k0.jpg", "size": [640, 360]}},
        {"start": 4.5, "keyframe": {"path": "k1.jpg", "size": [640, 360]}}
    ]);
    let out = run(&p, "json.pick", json!({"from": scenes, "fields": {"t": "start", "image": "keyframe.path", "w": "keyframe.size[0]"}}), "t5")
        .await
        .unwrap();
    assert_eq!(
        out,
        json!([{"t": 0.0, "image": "k0.jpg", "w": 640}, {"t": 4.5, "image": "k1.jpg", "w": 640}])
    );
    let out = run(
        &p,
        "json.pick",
        json!({"from": {"a": {"b": [1, 2]}, "c": 3}, "fields": ["a.b.1", "c", "nope"]}),
        "t5",
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"1": 2, "c": 3, "nope": null}));
    for (input, want) in [
        (
            json!({"from": scenes, "fields": ["keyframe.missing"], "strict": true}),
            "path \"keyframe.missing\" not found in element 0 (strict)",
        ),
        (
            json!({"from": 1, "fields": ["a[x]"]}),
            "\"x\" is not an index",
        ),
        (
            json!({"from": 1, "fields": []}),
            "`fields` must name at least one field",
        ),
        (json!({"fields": ["a"]}), "`from` is required"),
    ] {
        let e = run(&p, "json.pick", input.clone(), "t5").await.unwrap_err();
        assert!(e.contains(want), "{input}: wanted {want:?} in {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_transform_sees_only_a_granted_working_folder() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["csvtools"], None);
    let rows = json!([{"name": "Ada", "year": 1815}, {"name": "Grace", "year": 1906}]);
    let out = run(
        &p,
        "csv.format",
        json!({"rows": rows, "output": "people.csv"}),
        "t6",
    )
    .await
    .unwrap();
    assert_eq!(out["text"], "name,year\nAda,1815\nGrace,1906\n");
    let written = std::fs::read_to_string(work.path().join("t6/people.csv")).unwrap();
    assert_eq!(written, "name,year\nAda,1815\nGrace,1906\n");
    let out = run(&p, "csv.parse", json!({"path": "people.csv"}), "t6")
        .await
        .unwrap();
    assert_eq!(
        out["rows"],
        json!([{"name": "Ada", "year": "1815"}, {"name": "Grace", "year": "1906"}])
    );
    let e = run(&p, "csv.parse", json!({"path": "../t6/people.csv"}), "t6")
        .await
        .unwrap_err();
    assert!(e.contains("leaves the task's working folder"), "{e}");
    let e = run(&p, "csv.parse", json!({"path": "nope.csv"}), "t6")
        .await
        .unwrap_err();
    assert!(e.contains("`path` nope.csv: no such file"), "{e}");

    // The operator withholds the working folder: the plugin sees no files at all.
    let policy = work.path().join("policy.json");
    std::fs::write(&policy, r#"{"default": {"http": [], "workdir": false}}"#).unwrap();
    let denied = plugins(work.path(), &["csvtools"], Some(&policy));
    let info = denied
        .list()
        .into_iter()
        .find(|i| i.name == "csvtools")
        .unwrap();
    assert!(info.asked_workdir && !info.granted_workdir);
    let e = run(&denied, "csv.parse", json!({"path": "people.csv"}), "t6")
        .await
        .unwrap_err();
    assert!(e.contains("people.csv"), "{e}");
    let e = run(
        &denied,
        "csv.format",
        json!({"rows": rows, "output": "again.csv"}),
        "t6",
    )
    .await
    .unwrap_err();
    assert!(e.contains("cannot write it"), "{e}");
    assert!(!work.path().join("t6/again.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_functions_run_in_the_sandbox() {
    let work = tempfile::tempdir().unwrap();
    let p = plugins(work.path(), &["textfns"], None);
    let call = |name: &'static str, v: Value, args: Vec<Value>| {
        let p = &p;
        async move {
            p.call_function(name, &v, &args, "t7")
                .await
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(
        call("slugify", json!("Héllo, Wörld — Again!"), vec![])
            .await
            .unwrap(),
        json!("hello-world-again")
    );
    assert_eq!(
        call("title", json!("the DAG of tasks"), vec![])
            .await
            .unwrap(),
        json!("The Dag Of Tasks")
    );
    assert_eq!(
        call("replace", json!("a-b-c"), vec![json!("-"), json!("+")])
            .await
            .unwrap(),
        json!("a+b+c")
    );
    assert_eq!(
        call("wordcount", json!("  one two\tthree\n"), vec![])
            .await
            .unwrap(),
        json!(3)
    );
    let e = call("slugify", json!(42), vec![]).await.unwrap_err();
    assert_eq!(
        e,
        "plugin textfns@0.1.0: slugify: expected a string, got number"
    );
    let e = call("nosuch", json!(1), vec![]).await.unwrap_err();
    assert!(
        e.contains("no loaded plugin provides function \"nosuch\""),
        "{e}"
    );
}

/// Through the API: a fake backend step holds the pipeline until the test has
/// put a photo in the task's working folder; then Rust transforms resize and
/// crop it, and a JavaScript filter shapes the last step's input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pipeline_through_the_api() {
    let fake = Fake::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("LOCAL_BACKEND_URL", fake.base.clone()),
        ("DWA_PLUGIN_DIR", dist().display().to_string()),
        ("DWA_PLUGIN_CACHE_DIR", cache().display().to_string()),
    ];
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));
    let catalog = get_json(&host, "/api/catalog").await;
    let resize = catalog["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "image.resize")
        .unwrap_or_else(|| panic!("image.resize not in the catalog: {catalog}"));
    assert_eq!(resize["backend"], "wasm");
    assert_eq!(resize["category"], "transform");

    let id = submit_ok(&host, &json!({
        "type": "thumbnail",
        "payload": {"title": "Summer Trip — Día 1"},
        "steps": [
            {"id": "wait", "task": "gated", "input": {}},
            {"id": "small", "task": "image.resize", "dependsOn": ["wait"],
             "input": {"path": "photo.png", "width": 160, "output": "small.jpg"}},
            {"id": "crop", "task": "image.crop", "dependsOn": ["small"],
             "input": {"path": "{{steps.small.path}}", "x": 10, "y": 10, "width": 50, "height": 40, "output": "crop.webp"}},
            {"id": "card", "task": "builtin.echo", "dependsOn": ["crop"],
             "input": {"slug": "{{payload.title | slugify}}", "size": "{{steps.crop.width}}x{{steps.crop.height}}"}}
        ]
    })).await;
    let dir = data.path().join("work").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("photo.png"),
        encode(&gradient(640, 480), ImageFormat::Png),
    )
    .unwrap();
    fake.open_gate();
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["stepResults"]["small"]["width"], 160);
    assert_eq!(t["stepResults"]["small"]["height"], 120);
    assert_eq!(
        t["stepResults"]["card"],
        json!({"slug": "summer-trip-dia-1", "size": "50x40"})
    );
    assert_eq!(decode(&dir.join("crop.webp")).dimensions(), (50, 40));
}

/// Through the API: Python, JavaScript and Rust plugins side by side, with a
/// forEach over a transform's output and plugin filters (JavaScript and Rust) in inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_language_pipeline_through_the_api() {
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("DWA_PLUGIN_DIR", dist().display().to_string()),
        ("DWA_PLUGIN_CACHE_DIR", cache().display().to_string()),
    ];
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));
    let id = submit_ok(&host, &json!({
        "type": "roster",
        "payload": {"csv": "name,role\nAda Lovelace,analyst\nGrace Hopper,admiral\n", "text": "one two three four five six", "q": "a b&c", "k": "abc"},
        "steps": [
            {"id": "csv", "task": "csv.parse", "input": {"text": "{{payload.csv}}"}},
            {"id": "names", "task": "json.pick", "dependsOn": ["csv"],
             "input": {"from": "{{steps.csv.rows}}", "fields": {"n": "name", "r": "role"}}},
            {"id": "chunks", "task": "chunk.text", "input": {"text": "{{payload.text}}", "size": 10, "overlap": 2}},
            {"id": "each", "task": "builtin.echo", "dependsOn": ["names"], "forEach": "{{steps.names}}",
             "input": {"slug": "{{item.n | slugify}}", "role": "{{item.r | title}}", "i": "{{index}}"}},
            {"id": "out", "task": "csv.format", "dependsOn": ["each", "chunks"],
             "input": {"rows": "{{steps.each}}", "columns": ["i", "slug", "role"], "output": "roster.csv"}},
            {"id": "sum", "task": "builtin.echo", "dependsOn": ["out", "chunks"],
             "input": {"rows": "{{steps.out.count}}", "chunks": "{{steps.chunks.chunks | length}}", "words": "{{payload.text | wordcount}}",
                       "q": "{{payload.q | urlencode}}", "h": "{{payload.k | sha256}}", "b": "{{payload.q | base64 | unbase64 | upper}}"}}
        ]
    })).await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(
        t["stepResults"]["sum"],
        json!({"rows": 2, "chunks": 4, "words": 6, "q": "a%20b%26c", "b": "A B&C",
        "h": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
    );
    let csv =
        std::fs::read_to_string(data.path().join("work").join(&id).join("roster.csv")).unwrap();
    assert_eq!(
        csv,
        "i,slug,role\n0,ada-lovelace,Analyst\n1,grace-hopper,Admiral\n"
    );

    // A filter no plugin provides, or with the wrong arity, is refused at submission.
    let (status, body) = submit(
        &host,
        &json!({"type": "x", "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"v": "{{ payload.x | replace(\"a\") }}"}}
        ]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("filter replace takes 2 argument(s), got 1 at position 15"),
        "{msg}"
    );
    assert_eq!(
        body["error"]["details"][0]["field"], "steps[0].input.v",
        "{body}"
    );
    let (status, body) = submit(
        &host,
        &json!({"type": "x", "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"v": "{{ payload.x | shout }}"}}
        ]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown filter \"shout\"") && msg.contains("slugify, title, unbase64"),
        "{msg}"
    );
    // A transform's input is checked against its schema at submission.
    let (status, body) = submit(
        &host,
        &json!({"type": "image.resize", "payload": {"path": "a.png", "width": "wide"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("payload.width"), "{body}");
}

/// A transform plugin replaced while a pipeline runs: the step before the
/// swap ran on the old version, the step after it on the new one; a broken
/// rebuild then leaves the last good version serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_replaced_while_a_pipeline_runs() {
    let fake = Fake::start().await;
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `chunker` serves chunk.text; version 0.2.0 is (deliberately) another
    // component, so its answers tell the versions apart.
    let put = |version: &str, wasm: &str, world: &str| {
        std::fs::copy(dist().join(wasm), dir.path().join("chunker.wasm")).unwrap();
        let m = json!({"name": "chunker", "version": version, "world": world,
                       "provides": {"tasks": [{"name": "chunk.text"}]}});
        std::fs::write(dir.path().join("chunker.json"), m.to_string()).unwrap();
    };
    put("0.1.0", "text.wasm", "dwa:plugin/transform-task@0.1.0");
    let env = vec![
        ("LOCAL_BACKEND_URL", fake.base.clone()),
        ("DWA_PLUGIN_DIR", dir.path().display().to_string()),
        ("DWA_PLUGIN_CACHE_DIR", cache().display().to_string()),
        ("DWA_PLUGIN_WATCH_MS", "50".into()),
    ];
    let host = tokio::task::block_in_place(|| Host::start(data.path(), &env));
    let id = submit_ok(&host, &json!({"type": "swap", "steps": [
        {"id": "before", "task": "chunk.text", "input": {"text": "abcdef", "size": 3}},
        {"id": "wait", "task": "gated", "dependsOn": ["before"], "input": {}},
        {"id": "after", "task": "chunk.text", "dependsOn": ["wait"], "input": {"text": "abcdef", "size": 3}}
    ]})).await;
    fake.wait_for("the gated step", |f| f.inflight("gated") == 1)
        .await;

    put("0.2.0", "json.wasm", "dwa:plugin/transform-task@0.1.0");
    let version = || async {
        let v = get_json(&host, "/api/plugins").await;
        v["plugins"][0]["version"].as_str().unwrap_or("").to_owned()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while version().await != "0.2.0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt plugin never replaced the old one"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    fake.open_gate();
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed", "{t:#}");
    assert_eq!(
        t["stepResults"]["before"]["count"], 2,
        "the old version ran the first step: {t:#}"
    );
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("plugin chunker@0.2.0: this plugin runs json.pick, not chunk.text"),
        "the new version ran the last step: {error}"
    );

    // A broken rebuild: the last good version keeps serving and the reason shows.
    put("0.3.0", "json.wasm", "dwa:plugin/transform-task@0.7.0");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = get_json(&host, "/api/plugins").await;
        if v["errors"].to_string().contains("targets dwa:plugin@0.7.0") {
            assert_eq!(v["plugins"][0]["version"], "0.2.0", "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken rebuild was never reported: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
