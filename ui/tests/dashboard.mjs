// The dashboard in a real browser: Debian's chromium, driven by playwright-core, against a wharf
// server started by the Rust test `ui::dashboard_in_a_real_browser` (which passes its URL and
// admin token). Every page is saved as a screenshot under $SCREENSHOT_DIR.
//
//   WHARF_URL=http://127.0.0.1:8080 WHARF_ADMIN_TOKEN=… node ui/tests/dashboard.mjs

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import http from "node:http";
import { chromium } from "playwright-core";

const BASE = process.env.WHARF_URL;
const TOKEN = process.env.WHARF_ADMIN_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR || "target/ui-screenshots";
const SEED = Number(process.env.WHARF_UI_SEED_RUNS ?? 10000);
assert.ok(BASE && TOKEN, "WHARF_URL and WHARF_ADMIN_TOKEN must be set");
mkdirSync(SHOTS, { recursive: true });

const GITHUB_PUSH = { ref: "refs/heads/main", repository: { full_name: "acme/tools" }, pusher: { name: "alice" }, commits: [{ id: "a1" }, { id: "b2" }] };

async function admin(path, { method = "GET", body } = {}) {
  const res = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function post(url, body, headers = { "content-type": "application/json" }) {
  const res = await fetch(url, { method: "POST", headers, body });
  return { status: res.status, json: await res.json().catch(() => null) };
}

let step = 0;
async function shot(page, name) {
  step += 1;
  const file = `${SHOTS}/${String(step).padStart(2, "0")}-${name}.png`;
  // From the top, so the sticky header sits where a reader expects it in a full-page picture.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

function log(...args) {
  console.log("·", ...args);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // The demo fleet and its webhook.
  const fleets = (await admin("/fleets")).fleets;
  const demo = fleets.find((f) => f.name === "github-push");
  assert.ok(demo && demo.webhook_url, "the demo fleet exists with a webhook");

  // --- Sign in: a wrong token, then the right one.
  await page.goto(`${BASE}/`);
  await page.waitForURL(/\/ui\/$/);
  await page.getByLabel("Admin token").fill("not-the-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong admin token." }).waitFor();
  await shot(page, "sign-in-wrong-token");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor();
  log("signed in");

  // The token is nowhere the page keeps things; the cookie is HttpOnly and SameSite=Strict.
  assert.ok(!page.url().includes(TOKEN), "token not in the URL");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  assert.ok(!stored.includes(TOKEN), "token not in storage or readable cookies");
  const [cookie] = (await context.cookies()).filter((c) => c.name === "wharf_session");
  assert.ok(cookie, "session cookie set");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(!cookie.value.includes(TOKEN));

  // --- Overview lists the demo fleet; a new run appears without a reload.
  await page.getByRole("row").filter({ has: page.getByRole("link", { name: "github-push" }) }).first().waitFor();
  const accepted = await post(demo.webhook_url, JSON.stringify(GITHUB_PUSH));
  assert.equal(accepted.status, 201);
  const runId = accepted.json.data.fleet_run_id;
  const runLink = page.locator(`a[href="/ui/runs/${runId}"]`);
  await runLink.waitFor({ timeout: 10000 });
  await page.locator(`tr[data-run="${runId}"] .status-succeeded`).waitFor({ timeout: 15000 });
  log("new run appeared on the overview without a reload");
  await shot(page, "overview");

  // --- The run: variables and output.
  await runLink.click();
  await page.getByRole("heading", { name: `Run ${runId.slice(-8)}` }).waitFor();
  await page.locator("#run-status .status-succeeded").waitFor();
  const vars = page.getByRole("region", { name: "Variables" });
  await vars.getByText("acme/tools").first().waitFor();
  await vars.getByText("repository").first().waitFor();
  await page.locator("pre[data-stream=stdout]").filter({ hasText: "alice pushed 2 commit(s) to acme/tools on main" }).waitFor();
  await page.locator("#body-text").filter({ hasText: "refs/heads/main" }).waitFor();
  await page.getByRole("region", { name: "Request" }).getByText("content-type").first().waitFor();
  log("run page shows variables, output and the request");
  await shot(page, "run");

  // --- A long-running vessel: its first line appears while the run still runs.
  const project = demo.project_id;
  const slow = await admin(`/projects/${project}/fleets`, {
    method: "POST",
    body: {
      name: "slow-printer",
      vessels: [
        { name: "prepare", kind: "rhai", source: "set_var(\"ready\", \"yes\");", needs: [] },
        {
          name: "printer", kind: "rhai",
          source: "print(\"first line, written at once\"); let t = timestamp(); while t.elapsed < 6.0 { } print(\"second line, six seconds later\");",
          limits: { fuel: 2000000000, timeout_ms: 30000 },
        },
        { name: "lint", kind: "rhai", source: "set_var(\"lint\", \"clean\");", needs: ["prepare"] },
        { name: "on-failure", kind: "rhai", source: "print(\"cleaning up\");", needs: ["printer"], when: "failure" },
        { name: "report", kind: "rhai", source: "print(`lint: ${vars.lint}`);", needs: ["printer", "lint"], when: "always" },
      ],
    },
  });
  const hook = await admin(`/fleets/${slow.id}/webhook`, { method: "POST", body: {} });
  const slowRun = (await post(hook.url, "{}")).json.data.fleet_run_id;
  await page.goto(`${BASE}/ui/runs/${slowRun}`);
  const firstLine = page.locator("pre[data-stream=stdout]").filter({ hasText: "first line, written at once" });
  await firstLine.waitFor({ timeout: 10000 });
  const during = await page.locator("#run-status").innerText();
  assert.match(during, /running/, "the first line is shown while the run is running");
  const apiStatus = (await admin(`/runs/${slowRun}`)).status;
  assert.equal(apiStatus, "running", "the run had not ended when its first line was shown");
  log("live log line shown while the run runs");
  await shot(page, "run-live");
  await page.locator("#run-status .status-succeeded").waitFor({ timeout: 30000 });
  await page.locator("pre[data-stream=stdout]").filter({ hasText: "second line, six seconds later" }).waitFor();
  await page.locator(".vessel-skipped, .vessel").filter({ hasText: "on-failure" }).first().waitFor();
  await shot(page, "run-finished");

  // --- Deliveries: a destination on a local HTTP server receives the emitted rows; the run page
  // shows the delivery.
  const received = [];
  const sink = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => { received.push(body); res.writeHead(200); res.end("ok"); });
  });
  await new Promise((r) => sink.listen(0, "127.0.0.1", r));
  try {
    const withDest = await admin(`/projects/${project}/fleets`, {
      method: "POST",
      body: {
        name: "with-destination",
        vessels: [{ name: "emit", kind: "rhai", source: "emit(#{data: #{id: 7, name: \"seven\"}, primary_key: \"7\"});" }],
        destinations: [{ name: "sink", url: `http://127.0.0.1:${sink.address().port}/hook` }],
      },
    });
    const destHook = await admin(`/fleets/${withDest.id}/webhook`, { method: "POST", body: {} });
    const destRun = (await post(destHook.url, "{}")).json.data.fleet_run_id;
    for (let i = 0; i < 150 && !received.length; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(received.length, 1, "the destination received one batch");
    assert.match(received[0], /"seven"/);
    for (let i = 0; i < 100; i++) {
      const d = (await admin(`/runs/${destRun}`)).destinations;
      if (d.length && d[0].delivered === 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await page.goto(`${BASE}/ui/runs/${destRun}`);
    const deliveries = page.getByRole("region", { name: "Deliveries" });
    await deliveries.getByRole("rowheader", { name: "sink" }).waitFor();
    await deliveries.locator(".status-delivered").waitFor();
    log("delivery shown on the run page");
    await shot(page, "run-deliveries");
  } finally {
    sink.close();
  }

  // --- The fleet page: graph, webhook, Try it (a dry run stores nothing).
  await page.goto(`${BASE}/ui/fleets/${slow.id}`);
  await page.getByRole("heading", { name: "slow-printer", level: 1 }).waitFor();
  await page.locator("svg.dag .node").nth(2).waitFor();
  await shot(page, "fleet-graph");
  await page.goto(`${BASE}/ui/fleets/${demo.id}`);
  await page.getByRole("heading", { name: "github-push", level: 1 }).waitFor();
  await page.locator("#webhook-url").filter({ hasText: demo.webhook_url }).waitFor();
  const runsBefore = (await admin(`/fleets/${demo.id}/runs?limit=500`)).runs.length;
  await page.getByLabel("Payload").fill(JSON.stringify({ ...GITHUB_PUSH, pusher: { name: "dry-runner" } }, null, 2));
  await page.getByLabel("Headers, one per line (name: value)").fill("x-github-event: push");
  await page.getByRole("button", { name: "Dry run" }).click();
  const result = page.locator("#try-result");
  await result.getByText("dry run, nothing stored").waitFor();
  await result.locator(".status-succeeded").first().waitFor();
  await result.getByText("dry-runner").first().waitFor();
  const runsAfter = (await admin(`/fleets/${demo.id}/runs?limit=500`)).runs.length;
  assert.equal(runsAfter, runsBefore, "a dry run creates no run");
  log("dry run shown, no run created");
  await shot(page, "fleet-try-it");

  // --- Rotate from the fleet page: the old URL answers 400.
  const oldUrl = demo.webhook_url;
  await page.getByRole("button", { name: "Rotate URL…" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  await shot(page, "fleet-rotate-dialog");
  await dialog.getByRole("button", { name: "Rotate" }).click();
  await page.locator("#webhook-url").filter({ hasNotText: oldUrl }).waitFor();
  const newUrl = (await page.locator("#webhook-url").innerText()).trim();
  assert.notEqual(newUrl, oldUrl);
  assert.equal((await post(oldUrl, "{}")).status, 400, "the old URL is dead");
  assert.equal((await post(newUrl, JSON.stringify(GITHUB_PUSH))).status, 201, "the new URL works");
  log("rotated; old URL answers 400");

  // --- CSRF: a state-changing call with the session cookie but without the token is refused.
  const csrf = await page.evaluate(async (fleetId) => {
    const res = await fetch(`/api/v1/fleets/${fleetId}/webhook`, { method: "DELETE", credentials: "same-origin" });
    return { status: res.status, body: await res.text() };
  }, demo.id);
  assert.equal(csrf.status, 403, `no CSRF token: ${csrf.body}`);
  assert.match(csrf.body, /CSRF/);
  assert.ok((await admin(`/fleets/${demo.id}`)).webhook, "the webhook is still there");
  log("state-changing call without the CSRF token refused");

  // --- Runs: filters and the chart.
  await page.goto(`${BASE}/ui/runs`);
  await page.getByRole("heading", { name: "Runs", level: 1 }).waitFor();
  await page.locator("svg.chart").waitFor();
  await page.getByLabel("Fleet").selectOption({ label: "slow-printer" });
  await page.getByLabel("Status").selectOption("succeeded");
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForURL(/fleet=.*status=succeeded/);
  await page.locator("main:not([aria-busy])").waitFor();
  await page.locator(`a[href="/ui/runs/${slowRun}"]`).waitFor();
  assert.equal(await page.locator("tbody tr").count(), 1, "only the slow fleet's run");
  await shot(page, "runs-filtered");

  // --- Phone width and dark mode.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, colorScheme: "dark" });
  await phone.addCookies((await context.cookies()).map((c) => ({ ...c })));
  const small = await phone.newPage();
  for (const [path, name, heading] of [["/ui/", "phone-overview-dark", "Overview"], [`/ui/runs/${slowRun}`, "phone-run-dark", `Run ${slowRun.slice(-8)}`]]) {
    await small.goto(`${BASE}${path}`);
    await small.getByRole("heading", { name: heading, level: 1 }).waitFor();
    await small.waitForTimeout(300);
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${path} fits a 390 px screen (overflow ${overflow}px)`);
    await shot(small, name);
  }
  await phone.close();

  // --- Keyboard: the skip link comes first, and focus is visible.
  await page.goto(`${BASE}/ui/`);
  await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await page.keyboard.press("Tab");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "focus is visible");

  // --- First paint with a long history: 10,000 runs, the runs page shows its first page.
  // Navigation start to the first rows drawn, three times; the median.
  const paint = async (path, rows) => {
    const times = [];
    for (let i = 0; i < 3; i++) {
      await page.goto(`${BASE}${path}`);
      await page.locator(rows).first().waitFor();
      times.push(await page.evaluate(() => performance.now()));
    }
    return times.sort((a, b) => a - b)[1];
  };
  if (SEED > 0) {
    // The baseline: the same pages with a history of a handful of runs.
    const baseRuns = await paint("/ui/runs", "tbody tr");
    const baseOverview = await paint("/ui/", "tr[data-run]");
    const t0 = Date.now();
    let sent = 0;
    const worker = async () => {
      while (sent < SEED) {
        sent += 1;
        const r = await post(newUrl, JSON.stringify(GITHUB_PUSH));
        assert.equal(r.status, 201);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    log(`seeded ${SEED} runs in ${Date.now() - t0} ms`);
    // Measured once the runs are done, like the baseline: history size is the only difference.
    for (let i = 0; i < 600; i++) {
      const t = (await admin("/stats/runs?minutes=60")).totals;
      if (t.queued === 0 && t.running === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const runs = await paint("/ui/runs", "tbody tr:nth-child(50)");
    const overviewMs = await paint("/ui/", "tr[data-run]");
    const total = (await admin("/stats/runs?minutes=60")).totals;
    console.log(`first paint, median of 3 (navigation start to rows drawn), with ${SEED} more runs in the history than the baseline (${JSON.stringify(total)}):`);
    console.log(`  runs page: ${runs.toFixed(0)} ms vs ${baseRuns.toFixed(0)} ms baseline (ratio ${(runs / baseRuns).toFixed(2)})`);
    console.log(`  overview:  ${overviewMs.toFixed(0)} ms vs ${baseOverview.toFixed(0)} ms baseline (ratio ${(overviewMs / baseOverview).toFixed(2)})`);
    await shot(page, "overview-after-load");
  }

  // --- Sign out: the session is gone.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Admin token").waitFor();
  const after = await page.evaluate(async () => (await fetch("/api/v1/session")).status);
  assert.equal(after, 401, "signed out");
  log("signed out");

  assert.deepEqual(consoleErrors.filter((e) => !/401|403|Failed to load resource/.test(e)), [], "no script errors");
  await context.close();
} catch (e) {
  failed = true;
  console.error(e);
  try {
    for (const ctx of browser.contexts()) for (const p of ctx.pages()) await p.screenshot({ path: `${SHOTS}/failure-${Date.now()}.png`, fullPage: true });
  } catch (_) { /* best effort */ }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
