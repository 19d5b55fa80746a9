// The dashboard's live updates, timed: how long after the API server records a project's new
// phase the dashboard in a real Chromium shows it. Run by benches/dashboard.rs, which starts the
// operator and the gateway and makes the organisation, the account and the project.
//
// An independent watch (`kubectl get --watch`) notes when each phase change reaches a client of
// the API server; a MutationObserver in the page notes when the project's status badge changes.
// Both read the same system clock. Prints one JSON line: every change's latency in ms.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [url, org, project] = [env("OODA_DASHBOARD_URL"), env("OODA_ORG"), env("OODA_PROJECT")];
const changes = Number(process.env.OODA_CHANGES || 20);
const kubectl = (args) => [env("OODA_KUBECTL"), ["--kubeconfig", env("OODA_KUBECONFIG"), ...args]];
const now = () => performance.timeOrigin + performance.now();
const deadline = (ms) => Date.now() + ms;

const browser = await chromium.launch({ executablePath: env("OODA_CHROMIUM"), args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.getByLabel("Email", { exact: true }).fill(env("OODA_ADMIN_EMAIL"));
  await page.getByLabel("Password", { exact: true }).fill(env("OODA_ADMIN_PASSWORD"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(`tr[data-project="${project}"] .phase`).waitFor({ timeout: 60_000 });
  await page.evaluate((name) => {
    window.__phases = [];
    const note = () => {
      const text = document.querySelector(`tr[data-project="${name}"] .phase`)?.textContent.trim();
      if (text && window.__phases.at(-1)?.text !== text) {
        window.__phases.push({ text, at: performance.timeOrigin + performance.now() });
      }
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
    note();
  }, project);

  // The API server's side: every phase the watch delivers, with when it arrived.
  const seen = [];
  const [program, args] = kubectl(["get", "project", project, "-n", `org-${org}`, "--watch",
    "-o", "jsonpath={.status.phase}{\"\\n\"}"]);
  const watch = spawn(program, args, { stdio: ["ignore", "pipe", "inherit"] });
  readline.createInterface({ input: watch.stdout }).on("line", (line) => seen.push({ phase: line.trim(), at: now() }));

  const latencies = [];
  for (let i = 0; i < changes; i++) {
    const target = i % 2 === 0 ? "Stopped" : "Running";
    const from = seen.length;
    const patched = now();
    const [p, a] = kubectl(["patch", "project", project, "-n", `org-${org}`, "--type", "merge",
      "-p", JSON.stringify({ spec: { lifecycle: { state: target } } })]);
    await new Promise((resolve, reject) => spawn(p, a, { stdio: "ignore" }).on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`kubectl patch: ${c}`)))));
    const until = deadline(60_000);
    let api;
    while (!(api = seen.slice(from).find((s) => s.phase === target))) {
      if (Date.now() > until) throw new Error(`the API server never showed ${target}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    let shown;
    while (!(shown = (await page.evaluate(() => window.__phases)).find((s) => s.text === target && s.at >= patched))) {
      if (Date.now() > until) throw new Error(`the dashboard never showed ${target}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    latencies.push(shown.at - api.at);
  }
  watch.kill();
  console.log(JSON.stringify({ latencies }));
} finally {
  await browser.close();
}
