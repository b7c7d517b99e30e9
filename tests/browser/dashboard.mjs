// The dashboard in a real headless browser (Debian's chromium, driven by
// playwright-core). tests/dashboard.rs starts the host and runs this with
// DWA_URL and DWA_API_TOKEN; a failed assertion exits non-zero with its
// message. Every wait is bounded (Playwright's timeouts).

import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.DWA_URL;
const token = process.env.DWA_API_TOKEN;
const WAIT = 30_000;

async function api(path, body) {
  const r = await fetch(base + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${path}: HTTP ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const step = (id, status) => `g.node[data-step="${id}"]${status ? `[data-status="${status}"]` : ""}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Without the background-networking flags, chromium keeps calling out to
  // hosts this closed network refuses.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // The first load asks without a token: that 401 is the point.
    if (m.type() === "error" && !m.text().includes("401")) problems.push(`console: ${m.text()}`);
  });

  // The token is asked for, not put in the URL.
  await page.goto(`${base}/`);
  await page.getByPlaceholder("token").fill(token);
  await page.getByRole("button", { name: "Use token" }).click();
  await page.waitForSelector('[data-testid="tasks"]');
  assert.ok(!page.url().includes(token), "the token is not in the URL");

  // A DAG whose first step waits for a signal, then fans out to two.
  const dag = await api("/api/tasks", {
    type: "browser-dag",
    payload: { who: "browser" },
    steps: [
      { id: "gate", task: "builtin.wait", input: { name: "go" } },
      { id: "work", task: "builtin.sleep", dependsOn: ["gate"], input: { ms: 1500 } },
      { id: "side", task: "builtin.echo", dependsOn: ["gate"], input: { hello: "{{payload.who}}" } },
      { id: "join", task: "builtin.echo", dependsOn: ["work", "side"] },
    ],
  });
  await page.goto(`${base}/#/tasks/${dag.id}`);
  await page.waitForSelector(step("gate", "waiting"));
  await page.waitForSelector(step("work", "pending"));
  // Watch every status the `work` node shows, and mark the document: a
  // reload would lose the mark.
  await page.evaluate((sel) => {
    const g = document.querySelector(sel);
    const seen = [g.getAttribute("data-status")];
    window.__seen = seen;
    window.__sameDocument = true;
    new MutationObserver(() => {
      const now = g.getAttribute("data-status");
      if (seen[seen.length - 1] !== now) seen.push(now);
    }).observe(g, { attributes: true, attributeFilter: ["data-status"] });
  }, step("work"));
  await api(`/api/tasks/${dag.id}/signal`, { name: "go", payload: { ok: true } });
  await page.waitForSelector(step("join", "completed"));
  assert.deepEqual(await page.evaluate(() => window.__seen), ["pending", "running", "completed"]);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload");
  await page.waitForSelector('[data-testid="events"] tr[data-event="pipeline:complete"]');
  await page.getByTestId("status").first().filter({ hasText: "completed" }).waitFor();
  // The Gantt bars, and a step's result on click.
  assert.equal(await page.locator('[data-testid="gantt"] .span').count(), 4);
  await page.locator(step("side")).click();
  await page.getByTestId("step-detail").filter({ hasText: '"hello": "browser"' }).waitFor();

  // Cancel a running task from its page.
  const held = await api("/api/tasks", {
    type: "to-cancel",
    steps: [{ id: "hold", task: "builtin.wait", input: { name: "never" } }],
  });
  await page.goto(`${base}/#/tasks/${held.id}`);
  await page.waitForSelector(step("hold", "waiting"));
  page.once("dialog", (d) => d.accept());
  await page.getByTestId("cancel").click();
  await page.getByTestId("status").first().filter({ hasText: "cancelled" }).waitFor();
  assert.equal((await api(`/api/tasks/${held.id}`)).status, "cancelled");

  // "Run again" submits the same task as a new one and opens it.
  await page.getByTestId("run-again").click();
  await page.waitForURL((u) => u.hash.startsWith("#/tasks/") && !u.hash.includes(held.id));
  const again = decodeURIComponent(new URL(page.url()).hash.slice("#/tasks/".length));
  assert.equal((await api(`/api/tasks/${again}`)).type, "to-cancel");
  await page.waitForSelector(step("hold", "waiting"));

  // The list shows the tasks live; the catalog and plugins pages render.
  await page.goto(`${base}/#/`);
  await page.waitForSelector(`tr[data-task="${dag.id}"]`);
  await page.locator('[data-testid="filter-status"]').selectOption("cancelled");
  await page.waitForSelector(`tr[data-task="${held.id}"]`);
  assert.equal(await page.locator(`tr[data-task="${dag.id}"]`).count(), 0, "filtered out");
  await page.goto(`${base}/#/catalog`);
  await page.getByTestId("catalog-builtin").filter({ hasText: "builtin.echo" }).waitFor();
  await page.goto(`${base}/#/plugins`);
  await page.waitForSelector('[data-testid="plugins"]');
  if (process.env.DWA_EXPECT_PLUGINS === "1") {
    await page.locator('tr[data-plugin="webhook"]').filter({ hasText: "http " }).waitFor();
  }

  assert.deepEqual(problems, [], "no errors in the page");
  console.log("dashboard: ok");
} catch (e) {
  // What the page showed, for the failure's message.
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    const nodes = await p
      .$$eval("g.node", (gs) => gs.map((g) => `${g.dataset.step}=${g.dataset.status}`).join(" "))
      .catch(() => "");
    console.error(`page ${p.url()}\n  nodes: ${nodes}\n  problems: ${problems.join("; ")}`);
    await p.screenshot({ path: "dashboard-failure.png", fullPage: true }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
