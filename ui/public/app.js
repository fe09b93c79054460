// @ts-check
// The wharf dashboard: one page that routes on the client and reads everything through the
// admin API (`/api/v1`), signed in by a session cookie. No libraries, no build step: every
// element is made with `h()`, and text from the server is only ever set as text, never as HTML.
// TypeScript checks this file (ui/tsconfig.json) against types generated from the server's
// OpenAPI document (ui/types/): the answers it reads are typed in JSDoc by their schemas.

const API = "/api/v1";
const main = document.getElementById("main");
let csrf = null;
// What the current page started (timers, event streams), stopped when it is left.
let cleanups = [];

// ---------------------------------------------------------------------------------------------
// Elements

function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "line", "path", "text", "title", "polyline", "marker", "defs", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    // Through the CSSOM: the page's CSP allows no inline style attributes.
    else if (k === "style") {
      for (const decl of String(v).split(";")) {
        const i = decl.indexOf(":");
        if (i > 0) el.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
      }
    }
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** The toast's pending hide. @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;

function toast(message, kind = "info") {
  const t = document.getElementById("toast");
  clear(t, h("div", { class: `toast ${kind}` }, message));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => clear(t), 4000);
}

const STATUS_MARK = {
  succeeded: "✓", failed: "✕", running: "◐", queued: "○", cancelled: "⊘",
  skipped: "↷", pending: "·", delivered: "✓",
};

// A status as a word and a mark, coloured: the colour never carries the meaning alone.
function badge(status) {
  if (!status) return h("span", { class: "status status-none" }, "no runs");
  return h("span", { class: `status status-${status}` },
    h("span", { "aria-hidden": "true" }, STATUS_MARK[status] || "•"), " ", status);
}

function shortId(id) {
  return id ? String(id).slice(-8) : "";
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const secs = Math.round((Date.now() - d.getTime()) / 1000);
  let rel;
  if (secs < 5) rel = "just now";
  else if (secs < 60) rel = `${secs} s ago`;
  else if (secs < 3600) rel = `${Math.floor(secs / 60)} min ago`;
  else if (secs < 86400) rel = `${Math.floor(secs / 3600)} h ago`;
  else rel = d.toLocaleDateString();
  return h("time", { datetime: iso, title: d.toLocaleString() }, rel);
}

function duration(run) {
  if (!run.started_at) return "—";
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  return ms(end.getTime() - new Date(run.started_at).getTime());
}

function ms(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1) return `${n.toFixed(2)} ms`;
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  return `${Math.floor(n / 60000)} min ${Math.round((n % 60000) / 1000)} s`;
}

function num(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

/**
 * @param {any[]} headers
 * @param {any[]} rows
 * @param {{caption?: string, empty?: string}} [options]
 */
function table(headers, rows, { caption, empty } = {}) {
  if (!rows.length && empty) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col", class: c.cls }, c.label ?? c)))),
      h("tbody", {}, rows)));
}

function kv(obj, emptyText = "none") {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted" }, emptyText);
  return h("dl", { class: "kv" }, entries.map(([k, v]) => [
    h("dt", {}, k), h("dd", {}, typeof v === "string" ? v : JSON.stringify(v)),
  ]));
}

function section(title, ...children) {
  const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
}

function button(label, onclick, cls = "") {
  return h("button", { type: "button", class: cls, onclick }, label);
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * One call of the admin API: the parsed JSON answer (or the `Response` itself when `raw`).
 * Callers name what they read by its schema in a JSDoc type (types/dashboard.d.ts).
 * @param {string} path
 * @param {{method?: string, body?: any, headers?: Record<string, string>, raw?: boolean}} [options]
 * @returns {Promise<any>}
 */
async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  /** @type {RequestInit & {headers: Record<string, string>}} */
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET" && csrf) init.headers["x-csrf-token"] = csrf;
  if (body !== undefined) {
    if (typeof body === "string" || body instanceof Blob) init.body = body;
    else {
      init.body = JSON.stringify(body);
      init.headers["content-type"] = "application/json";
    }
  }
  const res = await fetch(API + path, init);
  if (res.status === 401 && path !== "/session") {
    csrf = null;
    signIn(location.pathname + location.search);
    throw new ApiError(401, "signed out");
  }
  if (raw) {
    if (!res.ok) throw new ApiError(res.status, `HTTP ${res.status}`);
    return res;
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`);
  return data;
}

// ---------------------------------------------------------------------------------------------
// Routing: real URLs under /ui/, so links open in new tabs and the back button works.

function navigate(href, replace = false) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  route();
}

function leave() {
  for (const f of cleanups) {
    try { f(); } catch (_) { /* already gone */ }
  }
  cleanups = [];
}

function every(msInterval, f) {
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") f();
  }, msInterval);
  cleanups.push(() => clearInterval(timer));
}

function stream(path, handlers) {
  const es = new EventSource(API + path);
  for (const [kind, f] of Object.entries(handlers)) {
    es.addEventListener(kind, (e) => f(JSON.parse(e.data)));
  }
  cleanups.push(() => es.close());
  return es;
}

async function route() {
  leave();
  const path = location.pathname.replace(/^\/ui\/?/, "");
  const parts = path.split("/").filter(Boolean);
  if (!csrf) {
    try {
      csrf = (await api("/session")).csrf_token;
    } catch (e) {
      if (e.status !== 401) showError(e);
      return signIn(location.pathname + location.search);
    }
  }
  document.getElementById("top").hidden = false;
  for (const a of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll("[data-nav]"))) {
    if ((parts[0] || "overview") === a.dataset.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  // Until the new page is drawn the old one stays on screen, marked busy for assistive
  // technology (and for tests, which must not read the old page as the new one).
  main.setAttribute("aria-busy", "true");
  try {
    if (!parts.length) await overview();
    else if (parts[0] === "fleets" && parts[1]) await fleetPage(parts[1]);
    else if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "runs") await runsPage(new URLSearchParams(location.search));
    else page("Not found", h("p", {}, "No page here. ", h("a", { href: "/ui/" }, "Back to the overview.")));
  } catch (e) {
    if (e.status !== 401) showError(e);
  } finally {
    main.removeAttribute("aria-busy");
  }
}

// After a navigation inside the page, focus moves to the new content (as a page load would put
// a screen reader at its top); on the first load the browser's own start is kept.
let navigated = false;

function page(title, ...children) {
  document.title = `${title} · wharf`;
  clear(main, h("h1", {}, title), children);
  if (navigated) main.focus({ preventScroll: true });
  navigated = true;
}

function showError(e) {
  page("Something went wrong", h("p", { class: "error", role: "alert" }, e.message || String(e)),
    h("p", {}, h("a", { href: "/ui/" }, "Back to the overview.")));
}

document.addEventListener("click", (e) => {
  const a = e.target instanceof Element
    ? /** @type {HTMLAnchorElement | null} */ (e.target.closest("a[href^='/ui/']"))
    : null;
  if (!a || a.target || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await api("/session", { method: "DELETE" });
  } finally {
    csrf = null;
    leave();
    signIn("/ui/");
  }
});

// ---------------------------------------------------------------------------------------------
// Sign-in

function signIn(next) {
  leave();
  document.getElementById("top").hidden = true;
  document.title = "Sign in · wharf";
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "current-password",
    required: true, "aria-describedby": "token-help signin-error", spellcheck: "false",
  });
  const form = h("form", { class: "signin card", method: "post", action: "#" },
    h("h1", {}, h("img", { src: "/ui/favicon.svg", alt: "", width: 28, height: 28 }), " wharf"),
    h("label", { for: "token" }, "Admin token"),
    input,
    h("p", { class: "muted", id: "token-help" },
      "Printed by ", h("code", {}, "wharf serve"), " at its first start, or the value of ",
      h("code", {}, "WHARF_ADMIN_TOKEN"), ". It is exchanged for a session cookie and not kept by this page."),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(error);
    try {
      const s = await api("/session", { method: "POST", body: { token: input.value } });
      csrf = s.csrf_token;
      input.value = "";
      const target = next && next.startsWith("/ui/") ? next : "/ui/";
      navigate(target, true);
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong admin token." : err.message;
      input.select();
    }
  });
  clear(main, form);
  input.focus();
}

// ---------------------------------------------------------------------------------------------
// Charts (SVG, drawn here: a few bars do not need a library)

const SERIES = ["succeeded", "failed", "cancelled", "running", "queued"].map((k) => [k, `fill-${k}`]);

function timeLabel(iso, bucketSeconds) {
  const d = new Date(iso);
  return bucketSeconds >= 86400 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// Stacked bars of runs per bucket by status, with a legend in words and a text summary.
function runsChart(stats, label) {
  // Bars only in the stretched SVG; the labels are text beside it, so they never distort.
  const W = 720, H = 160;
  const buckets = stats.buckets;
  const max = Math.max(1, ...buckets.map((b) => SERIES.reduce((s, [k]) => s + b[k], 0)));
  const bw = W / Math.max(1, buckets.length);
  const bars = buckets.map((b, i) => {
    let y = H - 18;
    const parts = [];
    for (const [k, colour] of SERIES) {
      if (!b[k]) continue;
      const hgt = (b[k] / max) * (H - 30);
      y -= hgt;
      parts.push(h("rect", { x: i * bw + 0.5, y, width: Math.max(1, bw - 1), height: hgt, class: colour }));
    }
    const total = SERIES.reduce((s, [k]) => s + b[k], 0);
    const tip = `${timeLabel(b.start, stats.bucket_seconds)}: ${total} run(s)` +
      SERIES.filter(([k]) => b[k]).map(([k]) => `, ${b[k]} ${k}`).join("");
    return h("g", {}, h("title", {}, tip),
      h("rect", { x: i * bw, y: 0, width: bw, height: H - 18, class: "hit" }), parts);
  });
  const t = stats.totals;
  const total = SERIES.reduce((s, [k]) => s + t[k], 0);
  const summary = `${label}: ${total} run(s); ${t.succeeded} succeeded, ${t.failed} failed, ${t.cancelled} cancelled, ${t.running} running, ${t.queued} queued.`;
  const first = buckets[0], last = buckets[buckets.length - 1];
  const svg = h("svg", { viewBox: `0 0 ${W} ${H - 18}`, class: "chart", role: "img", "aria-label": summary, preserveAspectRatio: "none" },
    h("line", { x1: 0, y1: H - 18, x2: W, y2: H - 18, class: "axis" }),
    bars);
  const perBucket = stats.bucket_seconds >= 3600 ? `${stats.bucket_seconds / 3600} h` : stats.bucket_seconds >= 60 ? `${stats.bucket_seconds / 60} min` : `${stats.bucket_seconds} s`;
  const axis = h("div", { class: "chart-axis", "aria-hidden": "true" },
    h("span", {}, first ? timeLabel(first.start, stats.bucket_seconds) : ""),
    h("span", {}, `highest bar: ${num(max)} per ${perBucket}`),
    h("span", {}, last ? timeLabel(last.start, stats.bucket_seconds) : ""));
  const legend = h("ul", { class: "legend" }, SERIES.map(([k, colour]) =>
    h("li", {}, h("span", { class: `swatch ${colour}` }), `${k} ${num(t[k])}`)));
  return h("figure", { class: "chart-box" }, svg, axis, h("figcaption", {}, legend));
}

// A fleet's runs per minute: bars, failed part in the failure colour.
function sparkline(fleetStats, buckets) {
  const n = buckets.length;
  const per = fleetStats ? fleetStats.per_bucket : new Array(n).fill(0);
  const failed = fleetStats ? fleetStats.failed_per_bucket : new Array(n).fill(0);
  const max = Math.max(1, ...per);
  const W = 120, H = 24, bw = W / Math.max(1, n);
  const runs = fleetStats ? fleetStats.runs : 0;
  return h("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", role: "img", "aria-label": `${runs} run(s) in the last hour, ${fleetStats ? fleetStats.failed : 0} failed`, preserveAspectRatio: "none" },
    per.map((v, i) => {
      if (!v) return null;
      const hgt = Math.max(1.5, (v / max) * H);
      const fh = (failed[i] / max) * H;
      return [
        h("rect", { x: i * bw, y: H - hgt, width: Math.max(0.8, bw - 0.4), height: hgt - fh, class: "fill-succeeded" }),
        fh ? h("rect", { x: i * bw, y: H - fh, width: Math.max(0.8, bw - 0.4), height: fh, class: "fill-failed" }) : null,
      ];
    }));
}

function rate(failed, runs) {
  return runs ? `${((100 * failed) / runs).toFixed(runs < 100 ? 0 : 1)} %` : "—";
}

// ---------------------------------------------------------------------------------------------
// Overview

async function overview() {
  const tiles = h("div", { class: "tiles" });
  const chart = h("div");
  const fleets = h("div");
  const recent = h("div");
  page("Overview",
    tiles,
    section("Runs per minute, last hour", chart),
    section("Fleets", fleets),
    section("Latest runs", recent));
  let last = "";
  const refresh = async () => {
    const [stats, fleetPage, runs] = await Promise.all([
      /** @type {Promise<RunStats>} */ (api("/stats/runs?minutes=60&bucket_seconds=60")),
      /** @type {Promise<FleetPage>} */ (api("/fleets?limit=200")),
      /** @type {Promise<RunPage>} */ (api("/runs?limit=10")),
    ]);
    const key = JSON.stringify([stats.totals, stats.fleets, stats.queue, fleetPage, runs.runs.map((r) => [r.id, r.status])]);
    if (key === last) return;
    last = key;
    const names = Object.fromEntries(fleetPage.fleets.map((f) => [f.id, f.name]));
    const t = stats.totals;
    const total = t.succeeded + t.failed + t.cancelled + t.running + t.queued;
    const oldest = stats.queue.oldest_queued_at;
    clear(tiles,
      tile("Runs, last hour", num(total)),
      tile("Failure rate", rate(t.failed, t.succeeded + t.failed + t.cancelled)),
      tile("Running now", num(t.running)),
      tile("Queue depth", num(stats.queue.queued), oldest ? ["oldest queued ", when(oldest)] : "nothing waiting"));
    clear(chart, runsChart(stats, "Runs in the last hour"));
    const byFleet = Object.fromEntries(stats.fleets.map((f) => [f.fleet_id, f]));
    clear(fleets, table(
      ["Fleet", { label: "Vessels", cls: "opt" }, "Last run", { label: "Runs per minute", cls: "opt" }, "Failure rate", { label: "Runs", cls: "opt" }],
      fleetPage.fleets.map((f) => {
        const fs = byFleet[f.id];
        return h("tr", {},
          h("th", { scope: "row" }, h("a", { href: `/ui/fleets/${f.id}` }, f.name)),
          h("td", { class: "opt" }, f.vessels.join(" → ")),
          h("td", {}, badge(f.last_run_status)),
          h("td", { class: "opt" }, sparkline(fs, stats.buckets)),
          h("td", {}, fs ? rate(fs.failed, fs.runs) : "—"),
          h("td", { class: "opt num" }, num(fs ? fs.runs : 0)));
      }),
      { caption: "Fleets", empty: "No fleets yet. Create one with wharf apply -f fleet.json." }));
    clear(recent, runTable(runs.runs, names, "No runs yet: POST to a fleet's webhook."));
  };
  await refresh();
  every(2000, () => refresh().catch(() => {}));
}

function tile(label, value, note) {
  return h("div", { class: "tile" }, h("div", { class: "tile-label" }, label), h("div", { class: "tile-value" }, value),
    note ? h("div", { class: "tile-note muted" }, note) : null);
}

function runTable(runs, names, empty) {
  return table(["Run", "Fleet", "Status", { label: "Created", cls: "opt" }, "Duration"],
    runs.map((r) => h("tr", { "data-run": r.id },
      h("th", { scope: "row" }, h("a", { href: `/ui/runs/${r.id}`, class: "mono" }, shortId(r.id))),
      h("td", {}, names[r.fleet_id] ? h("a", { href: `/ui/fleets/${r.fleet_id}` }, names[r.fleet_id]) : shortId(r.fleet_id)),
      h("td", {}, badge(r.status)),
      h("td", { class: "opt" }, when(r.created_at)),
      h("td", { class: "num" }, duration(r)))),
    { caption: "Runs", empty });
}

// ---------------------------------------------------------------------------------------------
// Fleet

async function fleetPage(id) {
  /** @type {Fleet} */
  const fleet = await api(`/fleets/${id}`);
  const webhook = h("div");
  const runs = h("div");
  const chart = h("div");
  page(fleet.name,
    h("p", { class: "meta muted" },
      `${fleet.vessels.length} vessel(s) · concurrency ${typeof fleet.concurrency === "string" ? fleet.concurrency : JSON.stringify(fleet.concurrency)} · updated `,
      when(fleet.updated_at), " · ", h("span", { class: "mono" }, fleet.id)),
    section("Webhook", webhook),
    section("Vessels", dag(fleet.vessels), vesselTable(fleet.vessels), fleetDocument(fleet)),
    section("Try it", tryIt(fleet)),
    section("Runs, last hour", chart),
    section("Recent runs", runs, h("p", {}, h("a", { href: `/ui/runs?fleet=${fleet.id}` }, "All runs of this fleet →"))));
  renderWebhook(webhook, fleet);
  const names = { [fleet.id]: fleet.name };
  const refresh = async () => {
    const [page1, stats] = await Promise.all([
      /** @type {Promise<RunPage>} */ (api(`/fleets/${id}/runs?limit=15`)),
      /** @type {Promise<RunStats>} */ (api(`/stats/runs?minutes=60&bucket_seconds=60&fleet=${id}`)),
    ]);
    clear(runs, runTable(page1.runs, names, "No runs yet."));
    clear(chart, runsChart(stats, "This fleet's runs in the last hour"));
  };
  await refresh();
  // New runs and status changes arrive as events; a burst causes one refresh.
  let pending = null;
  stream(`/fleets/${id}/events`, {
    status: () => {
      if (pending) return;
      pending = setTimeout(() => { pending = null; refresh().catch(() => {}); }, 250);
    },
  });
  cleanups.push(() => clearTimeout(pending));
}

function renderWebhook(box, fleet) {
  const w = fleet.webhook;
  if (!w) {
    clear(box, h("p", { class: "muted" }, "This fleet has no webhook: nothing can trigger it from outside."),
      button("Create webhook", async () => {
        try {
          fleet.webhook = await api(`/fleets/${fleet.id}/webhook`, { method: "POST", body: {} });
          renderWebhook(box, fleet);
          toast("Webhook created.");
        } catch (e) { toast(e.message, "bad"); }
      }, "primary"));
    return;
  }
  const url = h("code", { class: "url", id: "webhook-url" }, w.url);
  const auth = w.auth && w.auth.mode ? w.auth.mode + (w.auth.scheme ? ` (${w.auth.scheme})` : "") : "none";
  clear(box,
    h("div", { class: "url-row" }, url,
      button("Copy", async () => {
        try {
          await navigator.clipboard.writeText(w.url);
          toast("Webhook URL copied.");
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(url);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          toast("Selected: press Ctrl+C to copy.");
        }
      })),
    h("dl", { class: "kv inline" },
      h("dt", {}, "Auth"), h("dd", {}, auth),
      h("dt", {}, "Rate limit"), h("dd", {}, w.rate_limit ? `${w.rate_limit.requests} per ${w.rate_limit.per_seconds} s` : "none"),
      h("dt", {}, "Created"), h("dd", {}, when(w.created_at)),
      w.previous_url ? [h("dt", {}, "Previous URL"), h("dd", {}, h("code", {}, w.previous_url), " works until ", when(w.previous_url_until))] : null),
    h("div", { class: "actions" },
      button("Rotate URL…", () => confirmDialog({
        title: "Rotate the webhook URL?",
        text: "A new URL replaces this one. Callers must be given the new URL.",
        grace: true,
        confirm: "Rotate",
        action: async (grace) => {
          fleet.webhook = await api(`/fleets/${fleet.id}/webhook/rotate`, { method: "POST", body: grace ? { grace_seconds: grace } : {} });
          renderWebhook(box, fleet);
          toast("Webhook rotated: the new URL is shown.");
        },
      })),
      button("Remove…", () => confirmDialog({
        title: "Remove the webhook?",
        text: "Its URL will answer 400 from now on. The fleet and its history stay.",
        confirm: "Remove",
        danger: true,
        action: async () => {
          await api(`/fleets/${fleet.id}/webhook`, { method: "DELETE" });
          fleet.webhook = null;
          renderWebhook(box, fleet);
          toast("Webhook removed.");
        },
      }), "danger")));
}

// A modal confirmation (the native <dialog>: focus is trapped and Escape cancels).
/**
 * @param {{title: string, text: string, confirm: string, danger?: boolean, grace?: boolean,
 *   action: (grace?: number) => Promise<void>}} options
 */
function confirmDialog({ title, text, confirm, danger, grace, action }) {
  const error = h("p", { class: "error", role: "alert" });
  const graceInput = grace ? h("input", { id: "grace", type: "number", min: 0, max: 604800, value: "0", inputmode: "numeric" }) : null;
  const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", value: "ok" }, confirm);
  const form = h("form", { method: "dialog" },
    h("h2", {}, title), h("p", {}, text),
    grace ? [h("label", { for: "grace" }, "Keep the old URL working for (seconds, at most 7 days)"), graceInput] : null,
    error,
    h("div", { class: "actions" }, h("button", { type: "button", value: "cancel", onclick: () => dlg.close() }, "Cancel"), ok));
  const dlg = h("dialog", { "aria-label": title }, form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    ok.disabled = true;
    try {
      await action(graceInput ? Number(graceInput.value || 0) : undefined);
      dlg.close();
    } catch (err) {
      error.textContent = err.message;
      ok.disabled = false;
    }
  });
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  (graceInput || ok).focus();
}

// The document as `PUT /fleets/{fleet}` takes it (Rhai sources inline, Wasm by hash), folded.
function fleetDocument(fleet) {
  const doc = { ...fleet };
  for (const k of ["id", "project_id", "org_id", "webhook", "created_at", "updated_at"]) delete doc[k];
  return h("details", { class: "doc" }, h("summary", {}, "Fleet document (JSON)"),
    h("pre", { class: "out" }, JSON.stringify(doc, null, 2)));
}

function vesselTable(vessels) {
  return table(["Vessel", "Kind", { label: "Runs after", cls: "opt" }, "When", { label: "Limits", cls: "opt" }],
    vessels.map((v) => h("tr", {},
      h("th", { scope: "row" }, v.name),
      h("td", {}, v.kind),
      h("td", { class: "opt" }, (v.needs || []).join(", ") || "— (first)"),
      h("td", {}, v.when || "success"),
      h("td", { class: "opt small" }, v.limits ? Object.entries(v.limits).map(([k, x]) => `${k} ${num(x)}`).join(", ") : "fleet defaults"))),
    { caption: "Vessels" });
}

// The fleet's graph: vessels in columns by depth, an edge for each `needs`, drawn by the
// condition of the vessel it leads to (success, failure, always), with a legend in words.
function dag(vessels) {
  const depth = {};
  const byName = Object.fromEntries(vessels.map((v) => [v.name, v]));
  const d = (name, seen = new Set()) => {
    if (depth[name] !== undefined) return depth[name];
    if (seen.has(name)) return 0;
    seen.add(name);
    const needs = (byName[name] && byName[name].needs) || [];
    depth[name] = needs.length ? 1 + Math.max(...needs.map((n) => d(n, seen))) : 0;
    return depth[name];
  };
  vessels.forEach((v) => d(v.name));
  const cols = [];
  for (const v of vessels) (cols[depth[v.name]] ||= []).push(v);
  const NW = 150, NH = 44, GX = 60, GY = 18;
  const pos = {};
  cols.forEach((col, x) => col.forEach((v, y) => { pos[v.name] = { x: 10 + x * (NW + GX), y: 10 + y * (NH + GY) }; }));
  const W = 20 + cols.length * (NW + GX) - GX;
  const H = 20 + Math.max(...cols.map((c) => c.length)) * (NH + GY) - GY;
  const edges = [];
  for (const v of vessels) {
    for (const n of v.needs || []) {
      if (!pos[n]) continue;
      const a = pos[n], b = pos[v.name];
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x - 6, y2 = b.y + NH / 2;
      const mx = (x1 + x2) / 2;
      edges.push(h("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: `edge edge-${v.when || "success"}`, "marker-end": "url(#arrow)" },
        h("title", {}, `${v.name} runs after ${n} (${v.when || "success"})`)));
    }
  }
  const nodes = vessels.map((v) => {
    const p = pos[v.name];
    return h("g", { class: `node node-${v.when || "success"}` },
      h("title", {}, `${v.name}: ${v.kind}, runs on ${v.when || "success"}`),
      h("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: 8 }),
      h("text", { x: p.x + 10, y: p.y + 19, class: "node-name" }, v.name.length > 18 ? v.name.slice(0, 17) + "…" : v.name),
      h("text", { x: p.x + 10, y: p.y + 35, class: "node-kind" }, `${v.kind} · ${v.when || "success"}`));
  });
  const label = "Vessel graph: " + vessels.map((v) => (v.needs && v.needs.length ? `${v.name} after ${v.needs.join(" and ")} on ${v.when || "success"}` : `${v.name} first`)).join("; ");
  return h("figure", { class: "dag-box" },
    h("div", { class: "dag-scroll" },
      h("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "dag", role: "img", "aria-label": label },
        h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          h("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))),
        edges, nodes)),
    h("figcaption", {}, h("ul", { class: "legend" },
      h("li", {}, h("span", { class: "line line-success" }), "on success"),
      h("li", {}, h("span", { class: "line line-failure" }), "on failure"),
      h("li", {}, h("span", { class: "line line-always" }), "always"))));
}

function tryIt(fleet) {
  const example = JSON.stringify(fleet.variables && Object.keys(fleet.variables).length ? fleet.variables : { hello: "world" }, null, 2);
  const payload = h("textarea", { id: "try-payload", rows: 8, spellcheck: "false", class: "mono" });
  payload.value = example;
  const ctype = h("input", { id: "try-ctype", value: "application/json", list: "ctypes" });
  const headers = h("textarea", { id: "try-headers", rows: 3, spellcheck: "false", class: "mono", placeholder: "x-github-event: push" });
  const result = h("div", { id: "try-result", "aria-live": "polite" });
  const run = h("button", { type: "submit", class: "primary" }, "Dry run");
  const form = h("form", { class: "try" },
    h("p", { class: "muted" }, "Runs every vessel on this payload as a webhook call would, and shows what the run would record. Nothing is queued, stored or delivered."),
    h("div", { class: "grid2" },
      h("div", {}, h("label", { for: "try-ctype" }, "Content type"), ctype,
        h("datalist", { id: "ctypes" }, ["application/json", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream"].map((c) => h("option", { value: c })))),
      h("div", {}, h("label", { for: "try-headers" }, "Headers, one per line (name: value)"), headers)),
    h("label", { for: "try-payload" }, "Payload"), payload,
    h("div", { class: "actions" }, run),
    result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    /** @type {Record<string, string>} */
    const extra = {};
    for (const line of headers.value.split("\n")) {
      const i = line.indexOf(":");
      if (i > 0) extra[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    if (ctype.value.trim()) extra["content-type"] = ctype.value.trim();
    run.disabled = true;
    clear(result, h("p", { class: "muted" }, "Running…"));
    try {
      const dry = await api(`/fleets/${fleet.id}/dry-run`, { method: "POST", body: payload.value, headers: extra });
      clear(result,
        h("h3", {}, "Result: ", badge(dry.status), h("span", { class: "muted small" }, " — dry run, nothing stored")),
        h("h4", {}, "Variables"), kv(dry.variables),
        vesselCards(dry.vessels));
    } catch (err) {
      clear(result, h("p", { class: "error", role: "alert" }, err.message));
    } finally {
      run.disabled = false;
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// Runs

async function runsPage(params) {
  const fleetId = params.get("fleet") || "";
  const status = params.get("status") || "";
  const before = params.get("before") || "";
  const span = params.get("window") || "60";
  const bucket = { 60: 60, 1440: 1800, 10080: 21600 }[span] || 60;
  // Every request starts at once; the list is drawn as soon as its rows are in, the chart
  // when its figures are: a long history never holds the first rows back.
  const fetchPage = () => {
    const q = new URLSearchParams({ limit: "50" });
    if (status) q.set("status", status);
    if (before) q.set("before", before);
    const sq = new URLSearchParams({ minutes: span, bucket_seconds: String(bucket) });
    if (fleetId) sq.set("fleet", fleetId);
    return [api(fleetId ? `/fleets/${fleetId}/runs?${q}` : `/runs?${q}`), api(`/stats/runs?${sq}`)];
  };
  const first = fetchPage();
  const fleets = (/** @type {FleetPage} */ (await api("/fleets?limit=500"))).fleets;
  const names = Object.fromEntries(fleets.map((f) => [f.id, f.name]));
  const fleetSel = h("select", { id: "f-fleet", name: "fleet" }, h("option", { value: "" }, "All fleets"),
    fleets.map((f) => h("option", { value: f.id, selected: f.id === fleetId }, f.name)));
  const statusSel = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "Any status"),
    ["queued", "running", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s, selected: s === status }, s)));
  const windowSel = h("select", { id: "f-window", name: "window" },
    [["60", "last hour"], ["1440", "last 24 hours"], ["10080", "last 7 days"]].map(([v, l]) => h("option", { value: v, selected: v === span }, l)));
  const filters = h("form", { class: "filters", role: "search" },
    h("div", {}, h("label", { for: "f-fleet" }, "Fleet"), fleetSel),
    h("div", {}, h("label", { for: "f-status" }, "Status"), statusSel),
    h("div", {}, h("label", { for: "f-window" }, "Chart"), windowSel),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")));
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (fleetSel.value) q.set("fleet", fleetSel.value);
    if (statusSel.value) q.set("status", statusSel.value);
    if (windowSel.value !== "60") q.set("window", windowSel.value);
    navigate(`/ui/runs${q.toString() ? "?" + q : ""}`);
  });
  const chart = h("div");
  const list = h("div");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  page("Runs", filters, section("Runs over time", chart), section(before ? "Older runs" : "Latest runs", list, pager));
  const refresh = async (pending) => {
    const [runsP, statsP] = pending || fetchPage();
    const drawChart = statsP.then((stats) =>
      clear(chart, runsChart(stats, fleetId ? `${names[fleetId] || "Fleet"} runs` : "All runs")));
    const runs = await runsP;
    clear(list, runTable(runs.runs, names, before ? "No older runs." : "No runs match."));
    const base = new URLSearchParams(params);
    const older = new URLSearchParams(base);
    if (runs.next_before) older.set("before", runs.next_before);
    const newest = new URLSearchParams(base);
    newest.delete("before");
    clear(pager,
      before ? h("a", { href: `/ui/runs${newest.toString() ? "?" + newest : ""}` }, "← Newest") : null,
      runs.next_before ? h("a", { href: `/ui/runs?${older}`, rel: "next" }, "Older →") : null);
    await drawChart;
  };
  await refresh(first);
  if (!before) every(3000, () => refresh().catch(() => {}));
}

// ---------------------------------------------------------------------------------------------
// Run

async function runPage(id) {
  /** @type {Run} */
  const run = await api(`/runs/${id}`);
  let fleetName = shortId(run.fleet_id);
  let fleet = null;
  try {
    fleet = await api(`/fleets/${run.fleet_id}`);
    fleetName = fleet.name;
  } catch (_) { /* the fleet was deleted; its runs stay */ }
  const head = h("div", { class: "run-head" });
  const actions = h("div", { class: "actions" });
  const timeline = h("div");
  const vessels = h("div");
  const variables = h("div");
  const request = h("div");
  const deliveries = h("div");
  page(`Run ${shortId(run.id)}`, head, actions,
    section("Timeline", timeline),
    section("Vessels", vessels),
    section("Variables", variables),
    section("Request", request),
    deliveries);
  const render = (/** @type {Run} */ r) => {
    clear(head,
      h("div", { class: "run-status", id: "run-status" }, badge(r.status), r.cancel_requested && r.status === "running" ? h("span", { class: "muted" }, " cancelling…") : null),
      h("dl", { class: "kv inline" },
        h("dt", {}, "Fleet"), h("dd", {}, fleet ? h("a", { href: `/ui/fleets/${r.fleet_id}` }, fleetName) : fleetName),
        h("dt", {}, "Created"), h("dd", {}, when(r.created_at)),
        h("dt", {}, "Duration"), h("dd", {}, duration(r)),
        h("dt", {}, "Attempt"), h("dd", {}, String(r.attempt)),
        r.replay_of ? [h("dt", {}, "Replay of"), h("dd", {}, h("a", { href: `/ui/runs/${r.replay_of}`, class: "mono" }, shortId(r.replay_of)))] : null,
        r.resumed_from ? [h("dt", {}, "Resumed from"), h("dd", {}, r.resumed_from)] : null,
        r.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, r.error)] : null,
        h("dt", {}, "Id"), h("dd", { class: "mono" }, r.id)));
    clear(actions, runActions(r, fleet));
    clear(timeline, timelineChart(r));
    clear(vessels, vesselCards(r.vessels));
    clear(variables, kv(r.variables, "No variables."));
    if (r.destinations && r.destinations.length) {
      clear(deliveries, section("Deliveries", table(["Destination", "Delivered", "Pending", "Failed", { label: "Attempts", cls: "opt" }],
        r.destinations.map((d) => h("tr", {},
          h("th", { scope: "row" }, d.name),
          h("td", { class: "num" }, d.delivered ? [badge("delivered"), " ", num(d.delivered)] : "0"),
          h("td", { class: "num" }, num(d.pending)),
          h("td", { class: "num" }, d.failed ? [badge("failed"), " ", num(d.failed)] : "0"),
          h("td", { class: "num opt" }, num(d.attempts)))),
        { caption: "Deliveries" }),
        h("p", { class: "muted small" }, "Batches of rows sent to the fleet's destinations; every attempt is in ", h("code", {}, `GET /api/v1/runs/${r.id}/deliveries`), ".")));
    }
  };
  render(run);
  requestView(request, run);
  if (run.status === "queued" || run.status === "running") live(run, render);
}

function runActions(r, fleet) {
  const out = [];
  if (r.status === "queued" || r.status === "running") {
    out.push(button("Cancel run", async () => {
      try {
        await api(`/runs/${r.id}/cancel`, { method: "POST" });
        toast("Cancel requested.");
      } catch (e) { toast(e.message, "bad"); }
    }, "danger"));
  } else if (fleet) {
    out.push(button("Replay", () => replay(r, null)));
    if (r.vessels && r.vessels.length) {
      const sel = h("select", { id: "resume-from", "aria-label": "Vessel to resume from" },
        r.vessels.map((v) => h("option", { value: v.name, selected: v.status === "failed" }, v.name)));
      out.push(h("span", { class: "resume" }, sel, button("Resume from vessel", () => replay(r, sel.value))));
    }
  }
  return out;
}

async function replay(r, from) {
  try {
    /** @type {Accepted} */
    const res = await api(`/runs/${r.id}/replay`, { method: "POST", body: from ? { from } : {} });
    toast(from ? `Resumed from ${from}.` : "Replayed.");
    navigate(`/ui/runs/${res.data.fleet_run_id}`);
  } catch (e) { toast(e.message, "bad"); }
}

// A running run follows its event stream: vessels start and end, their output appears as it is
// written; at the end the stored run (with variables and rows) replaces the live view.
function live(run, render) {
  const r = structuredClone(run);
  let byName = {};
  r.vessels = [];
  const vessel = (name) => {
    if (!byName[name]) {
      byName[name] = { name, status: "running", stdout: "", stderr: "", variables: {}, rows: [] };
      r.vessels.push(byName[name]);
    }
    return byName[name];
  };
  // Redraws are batched to one per frame; once the run has ended, the stored run is drawn and
  // a frame still pending must not draw the live copy over it.
  let queued = false;
  let ended = false;
  const rerender = () => {
    if (queued || ended) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      if (!ended) render(r);
    });
  };
  const es = stream(`/runs/${run.id}/events`, {
    status: (e) => {
      r.status = e.status;
      if (e.status === "running" && !r.started_at) r.started_at = new Date().toISOString();
      rerender();
    },
    vessel: (e) => {
      const v = vessel(e.vessel);
      Object.assign(v, { status: e.status, reason: e.reason, exit_code: e.exit_code, error: e.error, duration_ms: e.duration_ms, attempt: e.attempt, carried_over: e.carried_over });
      if (e.status === "running") v.started_at = new Date().toISOString();
      else v.finished_at = new Date().toISOString();
      rerender();
    },
    log: (e) => {
      const v = vessel(e.vessel);
      v[e.stream === "stderr" ? "stderr" : "stdout"] += e.text;
      rerender();
    },
    end: async () => {
      ended = true;
      es.close();
      // `end` is sent once the result is committed; the stored run (with variables, rows and
      // fuel) replaces the live copy. A failed read is tried again for up to 10 s.
      for (let i = 0; i < 40; i++) {
        try {
          /** @type {Run} */
          const stored = await api(`/runs/${run.id}`);
          if (stored.status !== "queued" && stored.status !== "running") return render(stored);
        } catch (_) { /* try again */ }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
  });
  // After a dropped connection the browser reconnects and the server replays the run from its
  // start: begin again rather than show every line twice.
  let opened = false;
  es.addEventListener("open", () => {
    if (opened) {
      byName = {};
      r.vessels = [];
    }
    opened = true;
  });
}

function timelineChart(r) {
  const vs = r.vessels || [];
  if (!vs.length) return h("p", { class: "muted" }, r.status === "queued" ? "Queued: waiting for a worker." : "No vessel has started yet.");
  const t0 = new Date(r.started_at || r.created_at).getTime();
  const ends = vs.map((v) => (v.finished_at ? new Date(v.finished_at).getTime() : Date.now()));
  const tEnd = Math.max(t0 + 1, r.finished_at ? new Date(r.finished_at).getTime() : Date.now(), ...ends);
  const span = tEnd - t0;
  return h("ol", { class: "timeline" }, vs.map((v) => {
    const s = v.started_at ? new Date(v.started_at).getTime() : t0;
    const e = v.finished_at ? new Date(v.finished_at).getTime() : (v.status === "running" ? Date.now() : s);
    // At least a sliver of a bar, inside the track, however short the vessel.
    const left = Math.min(99.2, Math.max(0, (100 * (s - t0)) / span));
    const width = Math.max(0.8, (100 * (e - s)) / span);
    return h("li", {},
      h("a", { href: `#vessel-${cssId(v.name)}`, class: "tl-name" }, v.name),
      h("div", { class: "tl-track" },
        h("div", { class: `tl-bar bar-${v.status}`, style: `left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%` })),
      h("span", { class: "tl-meta" }, badge(v.status), " ", v.duration_ms !== undefined && v.duration_ms !== null ? ms(v.duration_ms) : ""));
  }));
}

function cssId(name) {
  return String(name).replace(/[^A-Za-z0-9_-]/g, "_");
}

function vesselCards(vessels) {
  if (!vessels || !vessels.length) return h("p", { class: "muted" }, "No vessel runs.");
  return h("div", { class: "vessels" }, vessels.map((v) => {
    const facts = [
      ["Status", badge(v.status)],
      v.reason ? ["Reason", v.reason] : null,
      v.exit_code !== undefined && v.exit_code !== null ? ["Exit code", String(v.exit_code)] : null,
      v.fuel_used !== undefined ? ["Fuel", num(v.fuel_used)] : null,
      v.duration_ms !== undefined && v.duration_ms !== null ? ["Duration", ms(v.duration_ms)] : null,
      v.attempt ? ["Attempt", String(v.attempt)] : null,
      v.carried_over ? ["Carried over", "yes (from the run it resumes)"] : null,
    ].filter(Boolean);
    return h("article", { class: `vessel vessel-${v.status}`, id: `vessel-${cssId(v.name)}`, "aria-label": `Vessel ${v.name}` },
      h("h3", {}, v.name),
      h("dl", { class: "kv inline" }, facts.map(([k, x]) => [h("dt", {}, k), h("dd", {}, x)])),
      v.error ? h("p", { class: "error" }, v.error) : null,
      v.attempts && v.attempts.length ? h("details", {}, h("summary", {}, `${v.attempts.length} earlier attempt(s)`),
        h("ul", {}, v.attempts.map((a) => h("li", {}, `#${a.attempt}: ${a.status}${a.reason ? " (" + a.reason + ")" : ""}${a.error ? " — " + a.error : ""}`)))) : null,
      Object.keys(v.variables || {}).length ? [h("h4", {}, "Variables set"), kv(v.variables)] : null,
      (v.rows || []).length ? [h("h4", {}, `Rows (${v.rows.length})`), h("pre", { class: "out" }, v.rows.slice(0, 50).map((row) => JSON.stringify(row)).join("\n") + (v.rows.length > 50 ? `\n… ${v.rows.length - 50} more` : ""))] : null,
      h("h4", {}, "stdout"),
      v.stdout ? h("pre", { class: "out", "data-stream": "stdout" }, v.stdout)
        : h("p", { class: "muted small" }, v.status === "running" ? "Nothing written yet." : "No output."),
      v.stderr ? [h("h4", {}, "stderr"), h("pre", { class: "out err", "data-stream": "stderr" }, v.stderr)] : null);
  }));
}

// The request: headers, query, and the start of the body as text or as a hex dump.
async function requestView(box, run) {
  const q = run.request || {};
  const body = h("div", { class: "muted" }, "Loading the body…");
  clear(box,
    h("dl", { class: "kv inline" },
      h("dt", {}, "Method"), h("dd", {}, q.method || "—"),
      h("dt", {}, "Content type"), h("dd", {}, q.content_type || "—"),
      h("dt", {}, "Received"), h("dd", {}, when(q.received_at)),
      h("dt", {}, "Body size"), h("dd", {}, q.body_size !== undefined ? `${num(q.body_size)} bytes` : "—"),
      h("dt", {}, "Request id"), h("dd", { class: "mono" }, q.id || "—")),
    h("h3", {}, "Headers"), kv(q.headers, "No headers."),
    h("h3", {}, "Query"), kv(q.query, "No query string."),
    h("h3", {}, "Body"), body);
  try {
    const res = await api(`/runs/${run.id}/body?max_bytes=4096`, { raw: true });
    const size = Number(res.headers.get("x-body-size") || 0);
    const bytes = new Uint8Array(await res.arrayBuffer());
    clear(body, bodyPreview(bytes, size));
  } catch (e) {
    clear(body, h("p", { class: "error" }, e.message));
  }
}

function bodyPreview(bytes, size) {
  if (!size) return h("p", { class: "muted" }, "Empty body.");
  const shown = size > bytes.length ? h("p", { class: "muted small" }, `First ${num(bytes.length)} of ${num(size)} bytes.`) : null;
  let text = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (_) {
    // A cut in the middle of a character is still text; retry without the last 3 bytes.
    try { if (size > bytes.length) text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.slice(0, Math.max(0, bytes.length - 3))); } catch (_) { text = null; }
  }
  if (text !== null && !/[\u0000-\u0008\u000e-\u001f]/.test(text)) {
    let pretty = text;
    if (size <= bytes.length) {
      try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    }
    return h("div", {}, shown, h("pre", { class: "out", id: "body-text" }, pretty));
  }
  const lines = [];
  const n = Math.min(bytes.length, 512);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.slice(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return h("div", {}, h("p", { class: "muted small" }, `Binary: hex dump of the first ${num(n)} of ${num(size)} bytes.`),
    h("pre", { class: "out hex", id: "body-hex" }, lines.join("\n")));
}

route();
