// Drives `havoc dashboard` in a real headless Chromium, as a user would: typing, clicking,
// waiting for what the page shows. Run by crates/havoc/tests/dashboard_browser.rs:
//
//   node dashboard.mjs SCENARIO URL SHOTS_DIR [ARGS_JSON]
//
// Scenarios: `host` (editor errors, preview, start, live windows, the live timeline and probe
// chart, halt, report, runs list),
// `cluster-create` and `cluster-manage` (a PodChaos created, then opened with its records and
// events, paused, resumed and deleted through the page). Prints one JSON line of results on
// success; on failure prints the reason, saves a screenshot `failure-SCENARIO.png` and exits 1.
import { chromium } from "playwright-core";

const [scenario, url, shots, argsJson] = process.argv.slice(2);
const args = argsJson ? JSON.parse(argsJson) : {};
const WAIT = 60_000;
const executablePath = process.env.HAVOC_CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  // Root in CI: Chromium's own sandbox needs an unprivileged user.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = (sel) => page.locator(sel).innerText();
// Sets a textarea's value the way typing does (an input event follows).
async function type(sel, value) {
  await page.locator(sel).fill(value);
}

const scenarios = {
  async host() {
    const out = {};
    await page.goto(url);
    await page.locator("#problems-h").filter({ hasText: /Valid|problem/ }).waitFor({ timeout: WAIT });

    // A mistake is shown at its line as it is typed.
    await type("#yaml", args.experiment.replace("action: pause", "action: paws"));
    await page.locator("#problems li").first().waitFor({ timeout: WAIT });
    out.problem = await text("#problems li >> nth=0");
    out.badLines = await page.locator("#gutter .bad").allInnerTexts();
    await shot("dashboard-editor-errors");

    await type("#yaml", args.experiment);
    await page.locator("#problems-h").filter({ hasText: "Valid" }).waitFor({ timeout: WAIT });

    await page.click("#preview");
    await page.locator("#plan").filter({ hasText: String(args.pid) }).waitFor({ timeout: WAIT });
    out.plan = await text("#plan");

    await page.click("#start");
    // Both faults' windows open on the live card, as the run reaches them.
    const card = page.locator("#live-list li").filter({ hasText: args.name });
    await card.filter({ hasText: "pause-sleeper" }).filter({ hasText: "in effect since" }).waitFor({ timeout: WAIT });
    await card.filter({ hasText: "slow-net" }).filter({ hasText: "in effect since" }).waitFor({ timeout: WAIT });
    // The live timeline draws both measured windows, and the probe's chart its samples.
    const drawn = card.locator("svg.live-timeline rect.window");
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length >= 2,
      `#live-list li[data-run] svg.live-timeline rect.window`, { timeout: WAIT });
    // A few seconds of samples (every 300 ms), so that the chart shows a line.
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length >= 8,
      `#live-list li[data-run] svg.probe-chart circle`, { timeout: WAIT });
    out.chartPoints = await card.locator("svg.probe-chart circle").count();
    out.windows = await drawn.evaluateAll((rects) => rects.map((r) => ({
      fault: r.querySelector("title").textContent.split(" on ")[0],
      start: Number(r.dataset.start),
    })));
    out.live = await card.innerText();
    await shot("dashboard-live");

    const t0 = Date.now();
    await card.getByRole("button", { name: /Halt run/ }).click();
    // The run ends, its windows close, and its report becomes a link under "Started here".
    const job = page.locator("#jobs-list li").filter({ hasText: args.name });
    await job.getByRole("link", { name: "report" }).waitFor({ timeout: WAIT });
    out.haltToReportMs = Date.now() - t0;
    out.job = await job.innerText();

    await job.getByRole("link", { name: "report" }).click();
    await page.getByText("Timeline").first().waitFor({ timeout: WAIT });
    out.reportUrl = page.url();
    await shot("dashboard-report");

    await page.goto(url);
    const row = page.locator("#runs-body tr").filter({ hasText: args.name });
    await row.waitFor({ timeout: WAIT });
    out.runRow = await row.innerText();
    await shot("dashboard-runs");
    return out;
  },

  async "cluster-create"() {
    await page.goto(url);
    await page.locator("#cluster").waitFor({ state: "visible", timeout: WAIT });
    await page.fill("#cluster-ns", args.namespace);
    await type("#cluster-yaml", args.manifest);
    await page.click("#cluster-dry");
    await page.locator("#cluster-action").filter({ hasText: "accepts it" }).waitFor({ timeout: WAIT });
    await page.click("#cluster-create");
    await page.locator("#cluster-action").filter({ hasText: "Created" }).waitFor({ timeout: WAIT });
    const row = page.locator("#cluster-body tr").filter({ hasText: args.name });
    await row.waitFor({ timeout: WAIT });
    return { action: await text("#cluster-action"), row: await row.innerText() };
  },

  async "cluster-manage"() {
    const out = {};
    await page.goto(url);
    await page.locator("#cluster").waitFor({ state: "visible", timeout: WAIT });
    await page.fill("#cluster-ns", args.namespace);
    await page.click("#cluster-reload");
    const row = page.locator("#cluster-body tr").filter({ hasText: args.name });
    await row.filter({ hasText: "Running" }).waitFor({ timeout: WAIT });

    // Opened: its records and its events as a timeline.
    await row.getByRole("button", { name: args.name, exact: true }).click();
    const detail = page.locator("#cluster-detail");
    await detail.filter({ hasText: args.eventMessage }).waitFor({ timeout: WAIT });
    out.detail = await detail.innerText();
    await page.locator("#cluster").scrollIntoViewIfNeeded();
    await shot("dashboard-cluster");

    await row.getByRole("button", { name: /^Pause / }).click();
    await row.filter({ hasText: "(paused)" }).waitFor({ timeout: WAIT });
    out.paused = true;
    await row.getByRole("button", { name: /^Resume / }).click();
    await row.filter({ hasNotText: "(paused)" }).getByRole("button", { name: /^Pause / }).waitFor({ timeout: WAIT });
    out.resumed = true;
    await row.getByRole("button", { name: /^Delete / }).click();
    await row.waitFor({ state: "detached", timeout: WAIT });
    out.deleted = true;
    return out;
  },
};

let code = 0;
try {
  if (!scenarios[scenario]) throw new Error(`no scenario ${scenario}: ${Object.keys(scenarios).join(", ")}`);
  const out = await scenarios[scenario]();
  out.consoleErrors = consoleErrors;
  console.log(JSON.stringify(out));
} catch (e) {
  code = 1;
  console.error(`${scenario} failed: ${e.message}\npage console errors: ${JSON.stringify(consoleErrors)}`);
  await shot(`failure-${scenario}`).catch(() => {});
} finally {
  await browser.close();
}
process.exit(code);
