//! Traces over OTLP: a host with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports
//! one trace per task to an in-process collector — submission, planning,
//! each step try, the backend and plugin calls, the effects — joined to the
//! caller's trace, and hands the context to the backend as `traceparent`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;

use super::common::*;
use super::start;

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
    /// The exporting process's `host.name` resource attribute.
    host: String,
}

/// An OTLP/HTTP collector (protobuf) that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

impl Collector {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let me = me.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut spans = me.spans.lock().unwrap();
                    for (host, s) in req.resource_spans.iter().flat_map(|r| {
                        let host = r
                            .resource
                            .iter()
                            .flat_map(|res| &res.attributes)
                            .find(|kv| kv.key == "host.name")
                            .map(|kv| format!("{:?}", kv.value))
                            .unwrap_or_default();
                        r.scope_spans
                            .iter()
                            .flat_map(|s| &s.spans)
                            .map(move |s| (host.clone(), s))
                    }) {
                        let attrs = s
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                                (kv.key.clone(), format!("{v:?}"))
                            })
                            .collect();
                        spans.push(Span {
                            name: s.name.clone(),
                            trace: hex::encode(&s.trace_id),
                            id: hex::encode(&s.span_id),
                            parent: hex::encode(&s.parent_span_id),
                            attrs,
                            host,
                        });
                    }
                    me.arrived.notify_waiters();
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Waits (bounded) until `pred` holds of the spans received.
    async fn until(&self, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.arrived.notified();
            {
                let spans = self.spans.lock().unwrap();
                if pred(&spans) {
                    return spans.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let spans = self.spans.lock().unwrap();
                panic!("no {what} within {WAIT:?}; spans: {spans:#?}");
            }
        }
    }
}

/// The spans named `name`, or, for a name ending in a space, starting with it
/// (`step `: the engine names each step's span after its step).
fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.name == name || (name.ends_with(' ') && s.name.starts_with(name)))
        .collect()
}

fn one<'a>(spans: &'a [Span], name: &str, what: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {what} span: {spans:#?}");
    found[0]
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_from_its_submission_to_its_effects() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let fake = Fake::start().await;
    let work = tempfile::tempdir().unwrap();
    let mut env = repo_host_env(work.path());
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "50".into()));
    let (_d, host) = start(&fake, &env);

    let task = json!({
        "type": "traced",
        "payload": {"url": "https://x.example/a.mp4", "word": "hi"},
        "steps": [
            {"id": "encode", "task": "builtin.echo", "input": {"b64": "{{ payload.word | base64 }}"}},
            {"id": "fetch", "task": "download.file", "dependsOn": ["encode"],
             "input": {"url": "{{payload.url}}"}}
        ],
        "onSuccess": [{"$event": "toast", "text": "done"}]
    });
    let r = client()
        .post(host.url("/api/tasks"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_done(&host, &id).await;
    assert_eq!(done["status"], "completed", "{done}");

    let spans = collector
        .until("effect delivered", |s| {
            named(s, "plugin toast@0.1.0 effect toast").len() == 1
                && named(s, "effect ").len() == 1
                && named(s, "step ").len() >= 2
        })
        .await;
    let ours: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace == CLIENT_TRACE)
        .cloned()
        .collect();
    assert_eq!(
        ours.len(),
        spans.len(),
        "every span is in the caller's trace: {spans:#?}"
    );

    let submit = one(&ours, "task.submit", "submission");
    assert_eq!(
        submit.parent, CLIENT_SPAN,
        "the submission joins the caller's span"
    );
    assert!(submit.attrs["task.id"].contains(&id), "{submit:?}");
    assert_eq!(one(&ours, "plan", "planning").parent, submit.id);

    let steps = named(&ours, "step ");
    assert_eq!(steps.len(), 2, "one span per try: {ours:#?}");
    for s in &steps {
        assert_eq!(
            s.parent, submit.id,
            "a step's span is the task's child: {s:?}"
        );
        assert!(s.attrs["outcome"].contains("completed"), "{s:?}");
    }
    let step = |key: &str| {
        *steps
            .iter()
            .find(|s| s.attrs["step"].contains(key))
            .unwrap_or_else(|| panic!("no span of step {key}: {steps:#?}"))
    };
    let backend = one(&ours, "backend.call", "backend call");
    assert_eq!(backend.parent, step("fetch").id);
    let function = one(&ours, "plugin codec@0.1.0 function base64", "base64 call");
    assert_eq!(
        function.parent,
        step("encode").id,
        "template functions run in their step"
    );
    let effect = one(&ours, "effect ", "effect");
    assert_eq!(effect.name, "effect toast");
    assert_eq!(effect.parent, submit.id);
    let toast = one(
        &ours,
        "plugin toast@0.1.0 effect toast",
        "toast plugin call",
    );
    assert_eq!(toast.parent, effect.id);

    // The backend was handed the context of the call's span.
    let calls = fake.calls_of("download.file");
    let tp = calls[0].traceparent.clone().unwrap_or_default();
    assert_eq!(
        tp,
        format!("00-{CLIENT_TRACE}-{}-01", backend.id),
        "traceparent sent to the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_context_is_sent() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    let id = submit_ok(
        &host,
        &json!({"type": "download.file", "payload": {"url": "https://x.example/a.mp4"}}),
    )
    .await;
    wait_done(&host, &id).await;
    assert_eq!(fake.calls_of("download.file")[0].traceparent, None);
}

/// Two hosts on one Redis run the steps of one task: every span, from
/// either host, is in the task's one trace, under its submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_run_by_two_hosts_is_still_one_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let fake = Fake::start().await;
    let redis = dwa_store::testing::RedisServer::start();
    let host_env = |name: &str| {
        vec![
            ("REDIS_URL", redis.url()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_RESOURCE_ATTRIBUTES", format!("host.name={name}")),
            // Two workers each: host a holds two steps for 1.5 s, longer
            // than an idle host waits between looks for work (1 s), so
            // host b takes some of the six.
            ("WORKER_CONCURRENCY", "2".into()),
        ]
    };
    let (_a, a) = start(&fake, &host_env("host-a"));
    let (_b, _host_b) = start(&fake, &host_env("host-b"));
    let steps: Vec<_> = (0..6)
        .map(|i| json!({"id": format!("s{i}"), "task": "builtin.sleep", "dependsOn": [], "input": {"ms": 1500}}))
        .collect();
    let id = submit_ok(&a, &json!({"type": "spread", "steps": steps})).await;
    let done = wait_done(&a, &id).await;
    assert_eq!(done["status"], "completed", "{done}");

    let spans = collector
        .until("six step spans", |s| named(s, "step ").len() >= 6)
        .await;
    let submit = one(&spans, "task.submit", "submission");
    let steps = named(&spans, "step ");
    for s in &steps {
        assert_eq!((&s.trace, &s.parent), (&submit.trace, &submit.id), "{s:?}");
    }
    let hosts: std::collections::BTreeSet<&str> = steps.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts.len(), 2, "both hosts ran steps: {hosts:?}");
}
