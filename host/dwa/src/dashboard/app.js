// The dwa dashboard (docs/dashboard.md): tasks, a task's graph lighting up
// live from its event stream, the catalog and the plugins. Plain DOM, no
// framework; task data is only ever set as text, never parsed as markup.

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "dwa.token";
const LIVE = new Set(["pending", "active"]);
/** Events kept on a task page; older ones are dropped from view. */
const MAX_EVENTS = 2000;

// ------------------------------------------------------------------ helpers

/** An element with attributes (`on*` are listeners) and children (text or nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...kids(children));
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  el.append(...kids(children));
  return el;
}

/** Children as nodes: nested lists flattened, absent ones (null, false) left out. */
function kids(children) {
  return children
    .flat(Infinity)
    .filter((c) => c !== null && c !== undefined && c !== false && c !== "")
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replaces an element's children. */
function put(el, ...children) {
  el.replaceChildren(...kids(children));
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    // Through the CSSOM: the page's policy refuses inline style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-testid": "status" }, status);
}

function json(v) {
  return h("pre", {}, v === undefined ? "" : JSON.stringify(v, null, 2));
}

function ms(n) {
  if (n === null || n === undefined) return "";
  return n < 1000 ? `${n} ms` : n < 60000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n / 60000)} min`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ------------------------------------------------------------------ API

const auth = {
  get token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  },
  set token(t) {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
    document.getElementById("signout").hidden = !t;
  },
};

function headers(extra = {}) {
  const hs = { ...extra };
  if (auth.token) hs.Authorization = `Bearer ${auth.token}`;
  return hs;
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (r.status === 401) {
    askToken(auth.token ? "The host refused this token." : "");
    throw new ApiError(401, "this host needs its API token");
  }
  if (!r.ok) {
    const e = data && data.error;
    const fields = e && Array.isArray(e.details) ? e.details.map((d) => `\n${d.field}: ${d.message}`).join("") : "";
    throw new ApiError(r.status, `${(e && e.message) || r.statusText}${fields}`);
  }
  return data;
}

/**
 * Follows a task's event stream with fetch (EventSource cannot send the
 * token), reopening it from the last event seen until `signal` aborts or
 * the task's `pipeline:complete` arrives.
 */
async function follow(id, onEvent, signal) {
  let last = 0;
  let ended = false;
  while (!signal.aborted && !ended) {
    try {
      const hs = headers({ Accept: "text/event-stream" });
      if (last) hs["Last-Event-ID"] = String(last);
      const r = await fetch(`/api/tasks/${encodeURIComponent(id)}/events`, { headers: hs, signal });
      if (r.status === 401) return askToken("The host refused this token.");
      if (!r.ok) return;
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, ""))
            .join("\n");
          if (!data) continue;
          let ev;
          try {
            ev = JSON.parse(data);
          } catch {
            continue;
          }
          if (typeof ev.seq === "number") last = Math.max(last, ev.seq);
          onEvent(ev);
          if (ev.type === "pipeline:complete") ended = true;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    if (!ended && !signal.aborted) await new Promise((res) => setTimeout(res, 1000));
  }
}

// ------------------------------------------------------------------ token

function askToken(message) {
  const dlg = document.getElementById("login");
  const err = document.getElementById("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  if (!dlg.open) dlg.showModal();
}

function setupLogin() {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", () => {
    auth.token = document.getElementById("token").value.trim();
    document.getElementById("token").value = "";
    route();
  });
  document.getElementById("signout").addEventListener("click", () => {
    auth.token = "";
    route();
  });
  document.getElementById("signout").hidden = !auth.token;
}

// ------------------------------------------------------------------ routing

/** What the current page started (timers, streams); undone when leaving it. */
let leave = () => {};

function route() {
  leave();
  const controller = new AbortController();
  const timers = [];
  leave = () => {
    controller.abort();
    timers.forEach(clearInterval);
  };
  const ctx = { signal: controller.signal, every: (fn, t) => timers.push(setInterval(fn, t)) };
  const hash = location.hash.replace(/^#/, "") || "/";
  const view = document.getElementById("view");
  view.replaceChildren();
  const page = hash.match(/^\/tasks\/([^/]+)$/);
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = page ? a.dataset.nav === "tasks" : `/${a.dataset.nav === "tasks" ? "" : a.dataset.nav}` === hash.split("?")[0];
    a.classList.toggle("active", on);
  }
  const path = hash.split("?")[0];
  const show = page
    ? taskPage(view, decodeURIComponent(page[1]), ctx)
    : path === "/catalog"
      ? catalogPage(view)
      : path === "/plugins"
        ? pluginsPage(view)
        : tasksPage(view, ctx);
  show.catch((e) => {
    if (e.status !== 401) view.replaceChildren(h("p", { class: "error" }, e.message));
  });
}

// ------------------------------------------------------------------ task list

async function tasksPage(view, ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const status = h(
    "select",
    { name: "status", "data-testid": "filter-status" },
    ["", "pending", "active", "completed", "failed", "cancelled"].map((v) =>
      h("option", { value: v, selected: params.get("status") === v }, v || "any status"),
    ),
  );
  const queue = h("input", { name: "queue", placeholder: "queue", value: params.get("queue") || "" });
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "More");
  let cursor = null;
  let shown = [];
  view.append(
    h("h1", {}, "Tasks"),
    h("div", { class: "row filters" }, status, queue, h("span", { class: "muted grow", id: "count" })),
    h(
      "table",
      { "data-testid": "tasks" },
      h("thead", {}, h("tr", {}, ["Type", "Status", "Queue", "Progress", "Created", "Id"].map((t) => h("th", {}, t)))),
      body,
    ),
    h("p", {}, more),
  );
  const query = (after) => {
    const q = new URLSearchParams({ limit: "50" });
    if (status.value) q.set("status", status.value);
    if (queue.value.trim()) q.set("queue", queue.value.trim());
    if (after) q.set("cursor", after);
    return `/api/tasks?${q}`;
  };
  const row = (t) =>
    h(
      "tr",
      { class: "link", "data-task": t.id, onclick: () => (location.hash = `#/tasks/${encodeURIComponent(t.id)}`) },
      h("td", {}, t.type),
      h("td", {}, badge(t.status)),
      h("td", {}, t.queue),
      h("td", {}, h("div", { class: "bar", title: `${t.progress}%` }, h("span", { style: { width: `${t.progress}%` } }))),
      h("td", {}, when(t.createdAt)),
      h("td", { class: "mono" }, t.id),
    );
  const render = () => {
    put(body, shown.map(row));
    document.getElementById("count").textContent = `${shown.length} shown`;
    more.hidden = !cursor;
  };
  // The first page is refreshed live; pages added with "More" are kept.
  const load = async () => {
    const page = await api(query());
    const extra = shown.slice(page.tasks.length);
    shown = page.tasks.concat(extra.filter((t) => !page.tasks.some((p) => p.id === t.id)));
    if (!extra.length) cursor = page.nextCursor || null;
    render();
  };
  const refilter = () => {
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (queue.value.trim()) q.set("queue", queue.value.trim());
    history.replaceState(null, "", `#/${q.toString() ? `?${q}` : ""}`);
    shown = [];
    cursor = null;
    load().catch(() => {});
  };
  status.addEventListener("change", refilter);
  queue.addEventListener("change", refilter);
  more.addEventListener("click", async () => {
    const page = await api(query(cursor));
    shown = shown.concat(page.tasks);
    cursor = page.nextCursor || null;
    render();
  });
  await load();
  ctx.every(() => {
    if (!document.hidden) load().catch(() => {});
  }, 2000);
}

// ------------------------------------------------------------------ task page

/** A step's status as the graph shows it (single tasks have no stepStatus). */
function stepStates(task, plan) {
  const out = new Map();
  for (const st of task.stepStatus || []) out.set(st.id, st);
  if (!task.stepStatus && plan.steps.length === 1) {
    const map = { pending: "pending", active: "running", completed: "completed", failed: "failed", cancelled: "skipped" };
    out.set(plan.steps[0].id, {
      id: plan.steps[0].id,
      status: map[task.status] || task.status,
      startedAt: task.startedAt,
      completedAt: task.completedAt,
      error: task.error,
      attempts: 0,
    });
  }
  return out;
}

/** Columns by longest path from a root (Kahn's order, no recursion). */
function layers(steps) {
  const depth = new Map();
  const index = new Map(steps.map((st, i) => [st.id, i]));
  const indeg = steps.map((st) => st.dependsOn.filter((d) => index.has(d)).length);
  const next = steps.map(() => []);
  steps.forEach((st, i) => st.dependsOn.forEach((d) => index.has(d) && next[index.get(d)].push(i)));
  const queue = steps.map((_, i) => i).filter((i) => indeg[i] === 0);
  queue.forEach((i) => depth.set(i, 0));
  for (let q = 0; q < queue.length; q++) {
    const i = queue[q];
    for (const j of next[i]) {
      depth.set(j, Math.max(depth.get(j) || 0, depth.get(i) + 1));
      if (--indeg[j] === 0) queue.push(j);
    }
  }
  const cols = [];
  steps.forEach((_, i) => {
    const d = depth.get(i) || 0;
    (cols[d] = cols[d] || []).push(i);
  });
  return cols;
}

const NODE_W = 190;
const NODE_H = 58;
const GAP_X = 70;
const GAP_Y = 18;

function drawGraph(plan, onSelect) {
  const cols = layers(plan.steps);
  const rows = Math.max(1, ...cols.map((c) => c.length));
  const width = cols.length * (NODE_W + GAP_X) - GAP_X + 20;
  const height = rows * (NODE_H + GAP_Y) - GAP_Y + 20;
  const pos = new Map();
  cols.forEach((col, c) =>
    col.forEach((i, r) => {
      const offset = ((rows - col.length) * (NODE_H + GAP_Y)) / 2;
      pos.set(i, { x: 10 + c * (NODE_W + GAP_X), y: 10 + offset + r * (NODE_H + GAP_Y) });
    }),
  );
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "step graph" });
  // Columns whose steps may run at once.
  cols.forEach((col, c) => {
    if (col.length > 1) {
      svg.append(s("rect", { class: "lane", x: pos.get(col[0]).x - 6, y: 4, width: NODE_W + 12, height: height - 8, rx: 10 }));
    }
  });
  const index = new Map(plan.steps.map((st, i) => [st.id, i]));
  plan.steps.forEach((st, j) => {
    for (const d of st.dependsOn) {
      if (!index.has(d)) continue;
      const a = pos.get(index.get(d));
      const b = pos.get(j);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    }
  });
  const nodes = new Map();
  plan.steps.forEach((st, i) => {
    const p = pos.get(i);
    const count = s("text", { class: "count", x: NODE_W - 10, y: 20, "text-anchor": "end" });
    const kind = st.forEach ? "forEach" : st.subtask ? "sub-task" : st.conditional ? "if" : "";
    const g = s(
      "g",
      { class: "node", transform: `translate(${p.x},${p.y})`, "data-step": st.id, "data-status": "pending", tabindex: 0 },
      s("title", {}, `${st.id}: ${st.task} on ${st.backend} (queue ${st.queue})`),
      s("rect", { width: NODE_W, height: NODE_H }),
      s("text", { x: 10, y: 20, "font-weight": 600 }, st.id.length > 20 ? `${st.id.slice(0, 19)}…` : st.id),
      s("text", { class: "task", x: 10, y: 38 }, st.task.length > 26 ? `${st.task.slice(0, 25)}…` : st.task),
      s("text", { class: "task", x: 10, y: 52 }, kind),
      count,
    );
    g.addEventListener("click", () => onSelect(st.id));
    g.addEventListener("keydown", (e) => e.key === "Enter" && onSelect(st.id));
    svg.append(g);
    nodes.set(st.id, { g, count });
  });
  return { svg, nodes };
}

function gantt(task, plan, states) {
  const start = task.startedAt ? Date.parse(task.startedAt) : null;
  const spans = plan.steps
    .map((st) => ({ st, state: states.get(st.id) }))
    .filter((x) => x.state && x.state.startedAt);
  if (!start || !spans.length) return h("p", { class: "muted" }, "No step has started yet.");
  const end = Math.max(
    task.completedAt ? Date.parse(task.completedAt) : Date.now(),
    ...spans.map((x) => (x.state.completedAt ? Date.parse(x.state.completedAt) : Date.now())),
  );
  const total = Math.max(1, end - start);
  return h(
    "div",
    { class: "gantt", "data-testid": "gantt" },
    spans.map(({ st, state }) => {
      const a = Date.parse(state.startedAt) - start;
      const b = (state.completedAt ? Date.parse(state.completedAt) : Date.now()) - start;
      const status = state.status === "running" ? "running" : state.status;
      return [
        h("span", { class: "mono" }, st.id),
        h(
          "div",
          { class: "track", title: `${ms(b - a)} from +${ms(a)}` },
          h("span", { class: `span s-${status}`, style: { left: `${(a / total) * 100}%`, width: `${((b - a) / total) * 100}%` } }),
        ),
      ];
    }),
    h("span", { class: "muted" }, "total"),
    h("span", { class: "muted" }, ms(total)),
  );
}

async function taskPage(view, id, ctx) {
  const [plan, first] = await Promise.all([
    api(`/api/tasks/${encodeURIComponent(id)}/plan`),
    api(`/api/tasks/${encodeURIComponent(id)}`),
  ]);
  let task = first;
  let selected = plan.steps[0] ? plan.steps[0].id : null;
  const counts = new Map();
  const title = h("h1", {}, task.type, " ", h("span", { class: "muted mono" }, task.id));
  const head = h("div", { class: "row" });
  const cancel = h("button", { class: "danger", type: "button", "data-testid": "cancel" }, "Cancel");
  const again = h("button", { type: "button", "data-testid": "run-again" }, "Run again");
  const retry = h("button", { type: "button", "data-testid": "retry" }, "Retry failed steps");
  const message = h("p", { class: "error", hidden: true });
  const { svg, nodes } = drawGraph(plan, (sid) => {
    selected = sid;
    paint();
  });
  const detail = h("div", { class: "panel", "data-testid": "step-detail" });
  const timeline = h("div", { class: "panel" });
  const groups = h("p", { class: "muted" });
  const eventsBody = h("tbody");
  view.append(
    title,
    h("div", { class: "panel" }, head, message),
    h("h2", {}, "Steps"),
    h("div", { class: "panel graph", "data-testid": "graph" }, svg, groups),
    detail,
    h("h2", {}, "Timeline"),
    timeline,
    h("h2", {}, "Events"),
    h("div", { class: "panel events" }, h("table", { "data-testid": "events" }, eventsBody)),
    h("h2", {}, "Task"),
    h("div", { class: "panel" }, json(plan.task)),
  );

  const act = (button, work) =>
    button.addEventListener("click", async () => {
      button.disabled = true;
      message.hidden = true;
      try {
        await work();
      } catch (e) {
        message.textContent = e.message;
        message.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
  act(cancel, async () => {
    if (!confirm(`Cancel task ${task.id}?`)) return;
    task = await api(`/api/tasks/${encodeURIComponent(id)}`, { method: "DELETE" });
    paint();
  });
  act(again, async () => {
    // The same task, as a new one: an idempotency key would answer this one.
    const body = { ...plan.task };
    delete body.idempotencyKey;
    const created = await api("/api/tasks", { method: "POST", body });
    location.hash = `#/tasks/${encodeURIComponent(created.id)}`;
  });
  act(retry, async () => {
    task = await api(`/api/tasks/${encodeURIComponent(id)}/retry`, { method: "POST", body: {} });
    paint();
    listen();
  });

  function paint() {
    const states = stepStates(task, plan);
    put(head, 
      badge(task.status),
      h("div", { class: "bar grow", title: `${task.progress}%` }, h("span", { style: { width: `${task.progress}%` } })),
      h("span", { class: "muted" }, `${task.progress}%`),
      h("span", { class: "muted" }, `queue ${task.queue}`),
      task.parent ? h("a", { href: `#/tasks/${encodeURIComponent(task.parent.taskId)}` }, "parent task") : null,
      LIVE.has(task.status) ? cancel : null,
      ["failed", "cancelled"].includes(task.status) ? retry : null,
      again,
    );
    for (const st of plan.steps) {
      const n = nodes.get(st.id);
      const state = states.get(st.id);
      n.g.setAttribute("data-status", state ? state.status : "pending");
      n.g.classList.toggle("selected", st.id === selected);
      const c = counts.get(st.id);
      n.count.textContent = c ? `${c.done}/${c.total}` : state && state.attempts > 1 ? `try ${state.attempts}` : "";
    }
    const parallel = (task.parallelGroups || []).filter((g) => g.length > 1);
    groups.textContent = parallel.length ? `Ran in parallel: ${parallel.map((g) => g.join(", ")).join(" · ")}` : "";
    const st = plan.steps.find((x) => x.id === selected);
    const specStep = st && (plan.task.steps || []).find((x, i) => (x.id || String(i)) === st.id);
    const state = st && states.get(st.id);
    const result = task.stepResults ? task.stepResults[selected] : task.result;
    put(detail, 
      ...(st
        ? [
            h("div", { class: "row" }, h("strong", {}, st.id), badge(state ? state.status : "pending"), h("span", { class: "muted" }, `${st.task} on ${st.backend}`)),
            state && state.startedAt
              ? h("p", { class: "muted" }, `started ${when(state.startedAt)}`, state.duration !== undefined && state.duration !== null ? `, took ${ms(state.duration)}` : "", state.attempts ? `, ${state.attempts} tries` : "")
              : null,
            h("h3", {}, "Input"),
            json(specStep ? (specStep.input !== undefined ? specStep.input : "(the result of its dependency)") : plan.task.payload),
            state && state.error ? [h("h3", {}, "Error"), h("p", { class: "error" }, state.error)] : null,
            result !== undefined && result !== null ? [h("h3", {}, "Result"), json(result)] : null,
          ]
        : [h("p", { class: "muted" }, "No steps.")]),
    );
    put(timeline, gantt(task, plan, states));
  }

  let refreshing = null;
  const refresh = () => {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try {
        task = await api(`/api/tasks/${encodeURIComponent(id)}`);
        paint();
      } catch {
        /* the next event or tick tries again */
      }
    }, 120);
  };
  const seen = new Set();
  const onEvent = (ev) => {
    if (seen.has(ev.seq)) return;
    seen.add(ev.seq);
    if (ev.type === "step:progress" && ev.data && typeof ev.data.total === "number") {
      counts.set(ev.stepId, { done: ev.data.done, total: ev.data.total });
    }
    // The last item completes its step without a progress event of its own.
    const c = counts.get(ev.stepId);
    if (ev.type === "step:complete" && c) counts.set(ev.stepId, { done: c.total, total: c.total });
    const data = ev.data && Object.keys(ev.data).length ? JSON.stringify(ev.data) : "";
    eventsBody.append(
      h(
        "tr",
        { "data-event": ev.type },
        h("td", { class: "muted" }, new Date(ev.timestamp).toLocaleTimeString()),
        h("td", {}, ev.type),
        h("td", { class: "mono" }, ev.stepId || ""),
        h("td", { class: "mono" }, data.length > 300 ? `${data.slice(0, 299)}…` : data),
      ),
    );
    while (eventsBody.children.length > MAX_EVENTS) eventsBody.firstChild.remove();
    refresh();
  };
  let stream = null;
  function listen() {
    if (stream) stream.abort();
    stream = new AbortController();
    ctx.signal.addEventListener("abort", () => stream.abort());
    follow(id, onEvent, stream.signal);
  }
  paint();
  listen();
  // Timings of running steps grow between events.
  ctx.every(() => LIVE.has(task.status) && !document.hidden && put(timeline, gantt(task, plan, stepStates(task, plan))), 1000);
}

// ------------------------------------------------------------------ catalog & plugins

async function catalogPage(view) {
  const catalog = await api("/api/catalog");
  const byCategory = new Map();
  for (const t of catalog.tasks) {
    const c = t.category || "other";
    if (!byCategory.has(c)) byCategory.set(c, []);
    byCategory.get(c).push(t);
  }
  view.append(h("h1", {}, "Catalog"));
  for (const [category, tasks] of [...byCategory].sort((a, b) => a[0].localeCompare(b[0]))) {
    view.append(
      h("h2", {}, category),
      h(
        "table",
        { "data-testid": `catalog-${category}` },
        h("thead", {}, h("tr", {}, ["Task", "Backend", "Flags", "Description"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          tasks.map((t) =>
            h(
              "tr",
              {},
              h("td", { class: "mono" }, t.name),
              h("td", {}, t.backend),
              h("td", {}, [t.gpu ? `gpu ${t.gpu}` : "", t.streaming ? "streaming" : "", t.chunk ? "chunk" : ""].filter(Boolean).join(", ")),
              h("td", { class: "muted" }, t.description || ""),
            ),
          ),
        ),
      ),
    );
  }
}

async function pluginsPage(view) {
  const list = await api("/api/plugins");
  const perms = (p) => {
    const out = [];
    for (const host of p.askedHttp || []) {
      out.push(`http ${host}${(p.grantedHttp || []).includes(host) ? "" : " (refused)"}`);
    }
    if (p.askedWorkdir) out.push(`workdir${p.grantedWorkdir ? "" : " (refused)"}`);
    return out.length ? out.join(", ") : "none";
  };
  view.append(
    h("h1", {}, "Plugins"),
    h(
      "table",
      { "data-testid": "plugins" },
      h("thead", {}, h("tr", {}, ["Plugin", "World", "Provides", "Permissions", "Limits"].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        list.plugins.map((p) =>
          h(
            "tr",
            { "data-plugin": p.name },
            h("td", {}, h("strong", {}, p.name), " ", h("span", { class: "muted" }, p.version), p.description ? h("div", { class: "muted" }, p.description) : null),
            h("td", { class: "mono" }, p.world),
            h("td", { class: "mono" }, [...p.effects, ...p.functions, ...p.tasks].join(", ")),
            h("td", {}, perms(p)),
            h("td", { class: "muted" }, `${p.memoryMb} MB, ${ms(p.timeoutMs)}${p.fuel ? `, fuel ${p.fuel}` : ""}`),
          ),
        ),
      ),
    ),
    list.errors.length ? [h("h2", {}, "Not loaded"), list.errors.map((e) => h("p", { class: "error" }, e))] : null,
  );
}

// ------------------------------------------------------------------ start

setupLogin();
window.addEventListener("hashchange", route);
route();
