// The client against a real host: `DWA_URL` names it (tests/backends.rs
// starts one with the local Python backend and runs these). With
// `DWA_EPISODE_URL` (an MP3 of speech), the seed's podcast example runs too.

import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";

import {
  DwaError,
  cancelTask,
  createTask,
  getTask,
  listTasks,
  processTask,
  visualize,
} from "../dist/index.js";

const base = process.env.DWA_URL;
assert.ok(base, "DWA_URL must name a running dwa host");
const options = { baseUrl: base };

test("processTask runs the seed's podcast example", { skip: !process.env.DWA_EPISODE_URL }, async () => {
  const progress = [];
  const events = [];
  const result = await processTask(
    {
      type: "podcast-transcription",
      payload: { url: process.env.DWA_EPISODE_URL },
      steps: [
        { task: "download.file", input: { url: "{{payload.url}}" } },
        { task: "whisper.transcribe", input: { audio_path: "{{steps.0.path}}" } },
        { task: "openai.summarize", input: { text: "{{steps.1.text}}" } },
      ],
    },
    (p) => progress.push(p),
    (e) => events.push(e),
    options,
  );
  const heard = result.steps[1].text;
  assert.match(heard.toLowerCase(), /task orchestration/);
  assert.equal(result.finalResult.summary, heard.toUpperCase());
  assert.deepEqual(Object.keys(result.stepResults), ["0", "1", "2"]);
  assert.deepEqual(
    result.stepStatus.map((s) => [s.task, s.status]),
    [["download.file", "completed"], ["whisper.transcribe", "completed"], ["openai.summarize", "completed"]],
  );
  assert.ok(result.totalDuration > 0);
  // The seed's event objects: type, stepId, stepTask, data.duration / data.totalDuration.
  const starts = events.filter((e) => e.type === "step:start").map((e) => [e.stepId, e.stepTask]);
  assert.deepEqual(starts, [["0", "download.file"], ["1", "whisper.transcribe"], ["2", "openai.summarize"]]);
  for (const e of events.filter((e) => e.type === "step:complete")) assert.equal(typeof e.data.duration, "number");
  const done = events.at(-1);
  assert.equal(done.type, "pipeline:complete");
  assert.equal(typeof done.data.totalDuration, "number");
  assert.equal(progress.at(-1), 100);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b), "progress only moves forward");
});

/**
 * A proxy in front of the host that ends the first event stream right after
 * its first event (a block with `event:`), as a server going away would.
 */
async function cuttingProxy() {
  const seen = [];
  let cut = false;
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = { ...req.headers };
    delete headers.host;
    seen.push({ url: req.url, lastEventId: req.headers["last-event-id"] });
    const upstream = await fetch(base + req.url, {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    res.writeHead(upstream.status, Object.fromEntries(upstream.headers));
    const cutting = req.url.endsWith("/events") && !cut;
    let text = "";
    for await (const chunk of upstream.body) {
      if (!cutting) {
        res.write(chunk);
        continue;
      }
      text += Buffer.from(chunk).toString();
      const first = /event:[^\n]*\n(?:[^\n]+\n)*\n/.exec(text);
      if (first) {
        cut = true;
        res.end(text.slice(0, first.index + first[0].length));
        return;
      }
    }
    res.end(text);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, seen, url: `http://127.0.0.1:${server.address().port}` };
}

test("a dropped event stream is resumed with Last-Event-ID, nothing missed or repeated", async () => {
  const proxy = await cuttingProxy();
  try {
    const events = [];
    const result = await processTask(
      {
        type: "resume",
        steps: [
          { id: "a", task: "builtin.sleep", input: { ms: 50 } },
          { id: "b", task: "builtin.echo", dependsOn: ["a"], input: { x: 1 } },
        ],
      },
      undefined,
      (e) => events.push(e),
      { baseUrl: proxy.url },
    );
    assert.deepEqual(result.stepResults.b, { x: 1 });
    const streams = proxy.seen.filter((s) => s.url.endsWith("/events"));
    assert.ok(streams.length >= 2, "the stream was reopened");
    assert.equal(streams[0].lastEventId, undefined);
    assert.equal(streams[1].lastEventId, String(events[0].seq));
    const seqs = events.map((e) => e.seq);
    assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b), "in order, none twice");
    assert.deepEqual(
      events.map((e) => `${e.type}:${e.stepId ?? ""}`),
      ["step:start:a", "step:complete:a", "step:start:b", "step:complete:b", "pipeline:complete:"],
    );
  } finally {
    proxy.server.close();
  }
});

test("the endpoints one by one", async () => {
  const created = await createTask({ type: "builtin.echo", payload: { hello: "world" } }, options);
  assert.equal(created.status, "pending");
  let view;
  for (let i = 0; i < 300; i++) {
    view = await getTask(created.id, options);
    if (view.status === "completed") break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(view.status, "completed", JSON.stringify(view));
  assert.deepEqual(view.result, { hello: "world" });
  assert.equal(view.progress, 100);

  const page = await listTasks({ status: "completed", limit: 1 }, options);
  assert.equal(page.tasks.length, 1);

  const slow = await createTask({ type: "builtin.sleep", payload: { ms: 60000 } }, options);
  const cancelled = await cancelTask(slow.id, options);
  assert.equal(cancelled.status, "cancelled");

  const drawn = await visualize({ steps: [{ id: "a", task: "download.file" }, { id: "b", task: "my.model", dependsOn: ["a"] }] }, options);
  assert.match(drawn.mermaid, /^graph TD\n {2}a\[process\\ndownload\]\n/);
  assert.deepEqual(drawn.unknownTasks, [{ step: "b", task: "my.model" }]);

  await assert.rejects(createTask({ type: "no.such.task" }, options), (e) => {
    assert.ok(e instanceof DwaError);
    assert.equal(e.status, 422);
    assert.match(e.message, /no\.such\.task/);
    return true;
  });
});
