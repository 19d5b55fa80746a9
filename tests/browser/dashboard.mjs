#!/usr/bin/env node
// The dashboard in a real Chromium, through its UI only: sign-in, creating a project (with a
// refused field first), its preview, stopping it, publishing a site twice and rolling back,
// inviting a member who then sees no admin controls, starting and deleting the project, with
// axe-core on every view and a screenshot of each. Run by tests/cluster/dashboard.rs with:
//
//   OODA_DASHBOARD_URL, OODA_CHROMIUM, OODA_SCREENSHOTS, OODA_ORG, OODA_ADMIN_EMAIL,
//   OODA_ADMIN_PASSWORD, OODA_MEMBER_EMAIL, OODA_PROJECT, OODA_PROJECT_PORT, OODA_PREVIEW_TEXT
//
// For runs by hand against `make demo`: OODA_SKIP_PREVIEW_TEXT=1 skips the preview's text (when
// no stand-in dev server answers); OODA_PROJECT_GIT_URL fills the form's repository field and
// OODA_PROJECT_CPU / OODA_PROJECT_MEMORY its advanced resources (the bed's real node is small).
// Exits 0 when every step passed; otherwise prints the failed step and why, and exits 1.

import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);

// ---- Settings ---------------------------------------------------------------------------------

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`dashboard test: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const settings = {
  url: required("OODA_DASHBOARD_URL"),
  chromium: required("OODA_CHROMIUM"),
  screenshots: required("OODA_SCREENSHOTS"),
  org: required("OODA_ORG"),
  adminEmail: required("OODA_ADMIN_EMAIL"),
  adminPassword: required("OODA_ADMIN_PASSWORD"),
  memberEmail: required("OODA_MEMBER_EMAIL"),
  project: required("OODA_PROJECT"),
  projectPort: required("OODA_PROJECT_PORT"),
  previewText: required("OODA_PREVIEW_TEXT"),
  skipPreviewText: process.env.OODA_SKIP_PREVIEW_TEXT === "1",
  gitUrl: process.env.OODA_PROJECT_GIT_URL || "",
  cpu: process.env.OODA_PROJECT_CPU || "",
  memory: process.env.OODA_PROJECT_MEMORY || "",
  // How the AI relay's upstream (a stand-in) begins each reply; unset: no AI step.
  aiReply: process.env.OODA_AI_REPLY || "",
};
// The member's password is made up here; like the admin's, it must never be sent anywhere.
const memberPassword = `member-${crypto.randomBytes(12).toString("base64url")}`;

// Deadlines: the UI answers in well under UI_MS; cluster-side changes (pods, watches) get CLUSTER_MS.
const UI_MS = 15000;
const CLUSTER_MS = 60000;

// ---- Reporting --------------------------------------------------------------------------------

const startedAt = Date.now();
const clock = () => `${((Date.now() - startedAt) / 1000).toFixed(1).padStart(6)}s`;
let currentStep = "setting up";

async function step(name, body) {
  currentStep = name;
  const began = Date.now();
  console.log(`[${clock()}] ▶ ${name}`);
  await body();
  console.log(`[${clock()}] ✓ ${name} (${((Date.now() - began) / 1000).toFixed(1)}s)`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Polls `probe` until it returns something truthy; fails with `what` and the last outcome. */
async function eventually(what, probe, timeoutMs = CLUSTER_MS, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last = "nothing yet";
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = `got ${JSON.stringify(value)}`;
    } catch (error) {
      last = error.message.split("\n")[0];
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000}s (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Waits until the element's text (trimmed) is `expected`. */
async function textIs(locator, expected, what, timeoutMs = CLUSTER_MS) {
  await eventually(
    `${what} shows "${expected}"`,
    async () => {
      const text = (await locator.textContent({ timeout: 1000 }))?.trim();
      if (text !== expected) throw new Error(`it shows "${text}"`);
      return true;
    },
    timeoutMs,
  );
}

fs.mkdirSync(settings.screenshots, { recursive: true });
let shots = 0;
async function shot(page, name) {
  shots++;
  const file = path.join(settings.screenshots, `${String(shots).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// ---- Accessibility ----------------------------------------------------------------------------

const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const audited = [];

/** axe-core on the page as it is; any serious or critical violation fails the step. */
async function audit(page, view) {
  // Evaluated by the debugger protocol, so the page's CSP (script-src 'self') does not apply.
  if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const grave = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  audited.push(view);
  if (grave.length) {
    const lines = grave.map(
      (v) => `  [${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map((n) => `      ${n.target.join(" ")}: ${n.failureSummary?.split("\n").join(" ")}`).join("\n")}`,
    );
    throw new Error(`axe-core: ${grave.length} serious or critical violation(s) on "${view}":\n${lines.join("\n")}`);
  }
}

// ---- What the browser sends -------------------------------------------------------------------

const requests = [];
function record(context, who) {
  context.on("request", (request) => {
    requests.push({ who, method: request.method(), url: request.url(), body: request.postDataBuffer() });
  });
}

/** No URL or body of any request so far holds either password, in any spelling a bug might use. */
function checkNoPasswordSent() {
  const secrets = [
    ["the admin's password", settings.adminPassword],
    ["the member's password", memberPassword],
  ];
  for (const [name, secret] of secrets) {
    const spellings = [
      secret,
      encodeURIComponent(secret),
      new URLSearchParams({ p: secret }).toString().slice(2),
      JSON.stringify(secret).slice(1, -1),
      Buffer.from(secret).toString("base64"),
    ];
    for (const request of requests) {
      for (const spelling of spellings) {
        const inUrl = request.url.includes(spelling);
        const inBody = request.body && request.body.includes(Buffer.from(spelling));
        check(!inUrl && !inBody, `${name} was sent in the ${inUrl ? "URL" : "body"} of ${request.method} ${request.url.split("?")[0]} (${request.who})`);
      }
    }
  }
  return requests.length;
}

// Problems the dashboard's own pages report: CSP refusals and uncaught errors.
const pageProblems = [];
// Console errors, failed requests and 5xx answers, which some steps cause on purpose.
const pageTrouble = [];
function watch(page, who) {
  page.setDefaultTimeout(UI_MS);
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (/Content.Security.Policy|Refused to/i.test(message.text())) pageProblems.push(`${who}: ${message.text()}`);
    pageTrouble.push(`${clock()} ${who}: console: ${message.text()}`);
  });
  page.on("pageerror", (error) => pageProblems.push(`${who}: uncaught ${error.message}`));
  // Reported only if a step fails: what went wrong on the wire meanwhile.
  page.on("requestfailed", (request) => {
    pageTrouble.push(`${clock()} ${who}: ${request.method()} ${pathOf(request.url())} failed: ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 500) pageTrouble.push(`${clock()} ${who}: ${pathOf(response.url())} answered ${response.status()}`);
  });
  return page;
}

/** Origin and path only: preview URLs carry a token in their query. */
function pathOf(url) {
  try {
    const parsed = new URL(url);
    return parsed.origin + parsed.pathname;
  } catch {
    return "?";
  }
}

// ---- Sites to publish -------------------------------------------------------------------------

/** A ustar archive (regular files only), independent of the dashboard's own writer. */
function tar(files) {
  const blocks = [];
  for (const [name, text] of Object.entries(files)) {
    const data = Buffer.from(text);
    const header = Buffer.alloc(512);
    header.write(name, 0, 100);
    header.write("0000644\0", 100);
    header.write("0000000\0", 108);
    header.write("0000000\0", 116);
    header.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124);
    header.write(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, "0")}\0`, 136);
    header.write("        ", 148);
    header.write("0", 156);
    header.write("ustar\0" + "00", 257, "binary");
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const marker = crypto.randomBytes(6).toString("hex");
const siteText = (version) => `ooda site version ${version} ${marker}`;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "ooda-dashboard-"));
const archivePath = path.join(work, "site-v1.tar.gz");
fs.writeFileSync(
  archivePath,
  zlib.gzipSync(
    tar({
      "index.html": `<!doctype html><title>v1</title><h1>${siteText(1)}</h1>`,
      "about/index.html": "<!doctype html><title>about</title><p>about</p>",
    }),
  ),
);
const folderPath = path.join(work, "site-v2");
fs.mkdirSync(path.join(folderPath, "docs"), { recursive: true });
fs.writeFileSync(path.join(folderPath, "index.html"), `<!doctype html><title>v2</title><h1>${siteText(2)}</h1>`);
fs.writeFileSync(path.join(folderPath, "docs", "index.html"), "<!doctype html><title>docs</title><p>docs</p>");

// ---- The run ----------------------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: settings.chromium, args: ["--no-sandbox"] });
const contexts = [];
async function newContext(who) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  record(context, who);
  contexts.push(context);
  return context;
}

/** Fetches `url` in a new, empty context (no cookies, no cache): what a stranger would get. */
async function freshVisit(url, who, screenshotName = null) {
  const context = await newContext(who);
  try {
    const page = await context.newPage();
    const response = await page.goto(url, { waitUntil: "domcontentloaded" });
    const text = await page.locator("body").innerText().catch(() => "");
    if (screenshotName) await shot(page, screenshotName);
    return { status: response?.status() ?? 0, text };
  } finally {
    await context.close();
    contexts.splice(contexts.indexOf(context), 1);
  }
}

const { org, project } = settings;
const projectRow = (page) => page.locator(`tr[data-project="${project}"]`);
const mainNav = (page) => page.getByRole("navigation", { name: "Main" });

try {
  const admin = await newContext("admin");
  const page = watch(await admin.newPage(), "admin");
  let previewUrl = null;

  await step("1. sign in as the admin", async () => {
    await page.goto(settings.url);
    // The first page a cold Chromium renders, while the rest of the suite loads both cores.
    await page.getByRole("heading", { level: 1, name: "Sign in to ooda" }).waitFor({ timeout: CLUSTER_MS });
    await shot(page, "sign-in");
    await audit(page, "sign-in");
    await page.getByLabel("Email", { exact: true }).fill(settings.adminEmail);
    await page.getByLabel("Password", { exact: true }).fill(settings.adminPassword);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { level: 1, name: "Projects" }).waitFor({ timeout: 30000 });
    // An admin of several organisations lands on the first: the switcher picks the one under test.
    const switcher = page.locator("details.org-menu");
    if ((await switcher.count()) > 0 && !page.url().includes(`#/orgs/${org}/`)) {
      await switcher.locator("summary").click();
      await switcher.getByRole("link", { name: new RegExp(`^${org} `) }).click();
    }
    await eventually(`the page shows ${org}'s projects`, () => page.url().includes(`#/orgs/${org}/projects`), UI_MS);
    const stored = await page.evaluate(() => ({
      session: JSON.parse(sessionStorage.getItem("ooda.session") || "null"),
      local: Object.keys(localStorage).map((key) => localStorage.getItem(key)).join(" "),
    }));
    check(stored.session?.token, "no session token in sessionStorage after signing in");
    check(!stored.local.includes(stored.session.token), "the session token is in localStorage");
    checkNoPasswordSent();
  });

  await step("2. create the project (a refused port first), see it reach Running live", async () => {
    // A full reload would lose this: its survival shows every change below arrived live.
    await page.evaluate(() => {
      window.__noReload = 1;
    });
    await page.getByRole("link", { name: "New project" }).first().click();
    await page.getByRole("heading", { level: 1, name: "New project" }).waitFor();
    await shot(page, "create-form");
    await audit(page, "create form");

    await page.getByLabel("Name", { exact: true }).fill(project);
    if (settings.gitUrl) await page.getByLabel("Repository URL").fill(settings.gitUrl);
    if (settings.cpu || settings.memory) {
      await page.getByText("Advanced settings").click();
      if (settings.cpu) await page.getByLabel("CPU", { exact: true }).fill(settings.cpu);
      if (settings.memory) await page.getByLabel("Memory", { exact: true }).fill(settings.memory);
    }
    const portName = page.getByLabel("Port 1 name");
    const portNumber = page.getByLabel("Port 1 number");
    await portName.fill("web");
    await portNumber.fill("70000");
    await page.getByLabel("Preview", { exact: true }).check();
    // The refusal must be the API server's (the form itself leaves port ranges to it).
    const created = (status) =>
      page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith(`/api/orgs/${org}/projects`)).then((r) => {
        check(r.status() === status, `creating the project answered ${r.status()}, not ${status}`);
      });
    await Promise.all([created(422), page.getByRole("button", { name: "Create project" }).click()]);

    await eventually("the port field is marked aria-invalid", async () => (await portNumber.getAttribute("aria-invalid")) === "true", UI_MS);
    const describedBy = (await portNumber.getAttribute("aria-describedby")) || "";
    const errorId = describedBy.split(" ").find((id) => id.endsWith("-error"));
    check(errorId, `the port field's aria-describedby (${describedBy}) names no error`);
    const besidePort = page.locator(`[data-port-row="0"] #${errorId}`);
    check((await besidePort.count()) === 1, "the port's error is not beside the port field (in its row)");
    const refusal = (await besidePort.textContent()).trim();
    check(/65535|less than or equal/i.test(refusal), `the port's error does not say why: "${refusal}"`);
    await page.getByRole("alert").filter({ hasText: "The project was not created" }).waitFor();
    await shot(page, "create-form-refused");
    await audit(page, "create form with a refused field");

    await portNumber.fill(settings.projectPort);
    await Promise.all([created(201), page.getByRole("button", { name: "Create project" }).click()]);
    await page.getByRole("heading", { level: 1, name: "Projects" }).waitFor();
    const row = projectRow(page);
    await row.waitFor();
    console.log(`            first seen as: ${(await row.locator(".phase").textContent()).trim()}`);
    await textIs(row.locator(".phase"), "Running", "the project's status in the list");
    await textIs(row.locator(".readiness"), "Ready", "the project's readiness in the list");
    check((await page.evaluate(() => window.__noReload)) === 1, "the page was reloaded");
    await shot(page, "projects-running");
    await audit(page, "project list");
  });

  await step("3. open the preview from the project page", async () => {
    await projectRow(page).getByRole("link", { name: project, exact: true }).click();
    await page.getByRole("heading", { level: 1, name: project }).waitFor();
    const link = page.getByRole("link", { name: /^Open preview/ });
    await link.waitFor({ timeout: CLUSTER_MS });
    await shot(page, "project-detail");
    await audit(page, "project page");
    const rel = (await link.getAttribute("rel")) || "";
    check(rel.includes("noopener") && rel.includes("noreferrer"), `the preview link's rel is "${rel}"`);
    check((await link.getAttribute("target")) === "_blank", "the preview link does not open a new tab");
    previewUrl = await link.getAttribute("href");
    check(/^https?:\/\//.test(previewUrl), `the preview link is "${previewUrl}"`);
    const [preview] = await Promise.all([admin.waitForEvent("page"), link.click()]);
    await preview.waitForLoadState("domcontentloaded");
    if (!settings.skipPreviewText) {
      await eventually(`the preview shows "${settings.previewText}"`, async () => {
        const text = await preview.locator("body").innerText({ timeout: 2000 });
        if (text.includes(settings.previewText)) return true;
        // The gateway's waking page reloads itself; a dev server still starting may need a retry.
        await preview.reload({ waitUntil: "domcontentloaded" }).catch(() => {});
        return false;
      }, CLUSTER_MS, 2000);
    }
    await shot(preview, "preview");
    await preview.close();
  });

  await step("3b. open a terminal from the project page, type a command, read its output", async () => {
    const link = page.getByRole("link", { name: /^Terminal/ }).first();
    const [terminal] = await Promise.all([admin.waitForEvent("page"), link.click()]);
    watch(terminal, "admin");
    await terminal.waitForLoadState("domcontentloaded");
    await textIs(terminal.locator("#status"), "Connected", "the terminal's connection");
    await terminal.locator(".xterm-helper-textarea").focus();
    // Typed key by key, as a person would; the shell's answer streams back.
    await terminal.keyboard.type("echo ooda-$((6*7)); stty size\n");
    const rows = terminal.locator(".xterm-rows");
    await eventually("the terminal shows the command's output", async () => {
      const text = await rows.innerText();
      return text.includes("ooda-42") && /\b\d+ \d+\b/.test(text.split("ooda-42")[1] || "");
    });
    await shot(terminal, "terminal");
    await audit(terminal, "terminal");
    await terminal.close();
  });

  if (settings.aiReply) {
    await step("3c. ask Claude on the project page: the answer streams in; a reload forgets it", async () => {
      await page.getByRole("heading", { level: 2, name: "Ask Claude" }).waitFor();
      const prompt = `what does ${crypto.randomBytes(6).toString("hex")} mean?`;
      const field = page.getByLabel("Message");
      await field.fill(prompt);
      await page.getByRole("button", { name: "Send" }).click();
      const answer = page.locator(".chat-assistant .chat-text");
      await textIs(answer, `${settings.aiReply}${prompt}`, "Claude's answer in the panel", UI_MS);
      await shot(page, "ai-panel");
      await audit(page, "project page with a conversation");
      const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
      check(!stored.includes(prompt), "the conversation was written to the browser's storage");
      await page.reload({ waitUntil: "domcontentloaded" });
      await page.getByRole("heading", { level: 2, name: "Ask Claude" }).waitFor({ timeout: CLUSTER_MS });
      check((await page.locator(".chat-turn").count()) === 0, "the conversation survived a reload");
      // The later steps check that nothing else reloads the page: mark this load as the page's.
      await page.evaluate(() => {
        window.__noReload = 1;
      });
    });
  }

  await step("4. stop the project from the list: Stopped live, the old preview link refused", async () => {
    await mainNav(page).getByRole("link", { name: "Projects" }).click();
    const row = projectRow(page);
    await row.getByRole("button", { name: `Stop ${project}` }).click();
    await textIs(row.locator(".phase"), "Stopped", "the project's status in the list");
    check((await page.evaluate(() => window.__noReload)) === 1, "the page was reloaded");
    await shot(page, "projects-stopped");
    await eventually("the old preview link is refused", async () => {
      const visit = await freshVisit(previewUrl, "stranger");
      if ([401, 403].includes(visit.status)) return true;
      if (!settings.skipPreviewText && visit.status < 500 && !visit.text.includes(settings.previewText)) return true;
      throw new Error(`status ${visit.status}`);
    }, CLUSTER_MS, 1000);
    // The same list on a phone-sized screen.
    await page.setViewportSize({ width: 400, height: 850 });
    await shot(page, "projects-narrow");
    await audit(page, "project list, 400 px wide");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await step("5. publish a site twice (archive, then folder), roll back to version 1", async () => {
    await projectRow(page).getByRole("link", { name: project, exact: true }).click();
    await page.getByRole("heading", { level: 1, name: project }).waitFor();
    const versions = page.locator("table.versions-table tbody tr");
    const live = (version) => page.locator(`tr[data-version="${version}"] .live-badge`);

    await page.getByLabel("Archive (.tar.gz or .tar)").setInputFiles(archivePath);
    await page.getByRole("button", { name: "Publish archive" }).click();
    await live(1).waitFor({ timeout: CLUSTER_MS });

    await page.getByLabel("Folder").setInputFiles(folderPath);
    await page.getByRole("button", { name: "Publish folder" }).click();
    await live(2).waitFor({ timeout: CLUSTER_MS });
    check((await versions.count()) === 2, `${await versions.count()} versions listed, not 2`);
    const siteUrl = await page.locator("#site-link").getAttribute("href");
    check(/^https?:\/\//.test(siteUrl || ""), `the site link is "${siteUrl}"`);
    await eventually("the site serves version 2", async () => {
      const visit = await freshVisit(siteUrl, "visitor");
      return visit.text.includes(siteText(2));
    }, CLUSTER_MS, 1000);
    await shot(page, "site-two-versions");

    await page.getByRole("button", { name: "Make live version 1" }).click();
    await live(1).waitFor({ timeout: CLUSTER_MS });
    check((await live(2).count()) === 0, "version 2 is still marked live after rolling back");
    await shot(page, "site-rolled-back");
    await eventually("the site serves version 1 again", async () => {
      const visit = await freshVisit(siteUrl, "visitor");
      return visit.text.includes(siteText(1)) && !visit.text.includes(siteText(2));
    }, CLUSTER_MS, 1000);
    await freshVisit(siteUrl, "visitor", "site-version-1");
  });

  let inviteLink = null;
  await step("6. invite a member, who joins and sees no admin controls", async () => {
    await mainNav(page).getByRole("link", { name: "Members" }).click();
    await page.getByRole("heading", { level: 1, name: "Members" }).waitFor();
    await shot(page, "members");
    await audit(page, "members (admin)");
    await page.getByLabel("Email", { exact: true }).fill(settings.memberEmail);
    await page.getByLabel("Role", { exact: true }).selectOption("member");
    await page.getByRole("button", { name: "Create invitation" }).click();
    const linkField = page.getByLabel("Invitation link");
    await linkField.waitFor();
    inviteLink = await linkField.inputValue();
    check(inviteLink.includes("#/invite/"), `the invitation link is "${inviteLink}"`);
    await shot(page, "members-invited");
    await audit(page, "members with an invitation link");

    // The remove dialog: named, audited, closed by Escape with focus back on its button.
    const remove = page.getByRole("button", { name: `Remove ${settings.memberEmail}` });
    await remove.click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    check((await dialog.textContent()).includes(settings.memberEmail), "the remove dialog does not name the member");
    await shot(page, "dialog-remove-member");
    await audit(page, "remove-member dialog");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    await eventually("focus returns to the Remove button", () => remove.evaluate((el) => el === document.activeElement), UI_MS);

    const memberContext = await newContext("member");
    const member = watch(await memberContext.newPage(), "member");
    await member.goto(inviteLink);
    await member.getByRole("heading", { level: 1, name: "Accept the invitation" }).waitFor();
    const emailField = member.getByLabel("Email", { exact: true });
    check((await emailField.inputValue()) === settings.memberEmail, "the invitation page does not fill in the invited email");
    await shot(member, "invite-accept");
    await audit(member, "invitation page");
    await member.getByLabel("New password", { exact: true }).fill(memberPassword);
    await member.getByLabel("Confirm password", { exact: true }).fill(memberPassword);
    await member.getByRole("button", { name: "Accept and sign in" }).click();
    await member.getByRole("heading", { level: 1, name: "Projects" }).waitFor({ timeout: 30000 });

    // Signing in again with the chosen password shows it works on its own.
    await member.getByRole("button", { name: "Sign out" }).first().click();
    await member.getByRole("heading", { level: 1, name: "Sign in to ooda" }).waitFor();
    await member.getByLabel("Email", { exact: true }).fill(settings.memberEmail);
    await member.getByLabel("Password", { exact: true }).fill(memberPassword);
    await member.getByRole("button", { name: "Sign in" }).click();
    await member.getByRole("heading", { level: 1, name: "Projects" }).waitFor({ timeout: 30000 });

    await projectRow(member).waitFor();
    await shot(member, "member-projects");
    await audit(member, "project list (member)");
    const noAdminControls = async (where) => {
      for (const name of [/delete/i, /remove/i, /invit/i]) {
        const count = await member.getByRole("button", { name }).count();
        check(count === 0, `the member sees ${count} "${name.source}" button(s) on ${where}`);
      }
      const roleSelects = await member.locator("select.role-select").count();
      check(roleSelects === 0, `the member sees ${roleSelects} role selector(s) on ${where}`);
    };
    await noAdminControls("the project list");
    await projectRow(member).getByRole("link", { name: project, exact: true }).click();
    await member.getByRole("heading", { level: 1, name: project }).waitFor();
    await member.getByRole("heading", { level: 2, name: "Published site" }).waitFor();
    await noAdminControls("the project page");
    await shot(member, "member-project");
    await audit(member, "project page (member)");
    await mainNav(member).getByRole("link", { name: "Members" }).click();
    await member.locator(`tr[data-member="${settings.memberEmail}"]`).waitFor();
    await noAdminControls("the members page");
    check((await member.getByRole("heading", { name: "Invite someone" }).count()) === 0, "the member sees the invite form");
    await shot(member, "member-members");
    await audit(member, "members (member)");

    const status = await member.evaluate(
      async ({ org, project }) => {
        const { token } = JSON.parse(sessionStorage.getItem("ooda.session"));
        const response = await fetch(`/api/orgs/${encodeURIComponent(org)}/projects/${encodeURIComponent(project)}`, {
          method: "DELETE",
          headers: { authorization: `Bearer ${token}` },
        });
        return response.status;
      },
      { org, project },
    );
    check(status === 403, `the member's DELETE of the project answered ${status}, not 403`);
    checkNoPasswordSent();
  });

  await step("7. start the project again, then delete it: it leaves the list live", async () => {
    await mainNav(page).getByRole("link", { name: "Projects" }).click();
    const row = projectRow(page);
    await row.getByRole("button", { name: `Start ${project}` }).click();
    await textIs(row.locator(".phase"), "Running", "the project's status in the list");
    await textIs(row.locator(".readiness"), "Ready", "the project's readiness in the list");
    await shot(page, "projects-started");

    await row.getByRole("link", { name: project, exact: true }).click();
    await page.getByRole("heading", { level: 1, name: project }).waitFor();
    const deleteButton = page.getByRole("button", { name: "Delete project" });
    await deleteButton.click();
    const dialog = page.getByRole("dialog", { name: `Delete ${project}?` });
    await dialog.waitFor();
    await shot(page, "dialog-delete-project");
    await audit(page, "delete-project dialog");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    await eventually("focus returns to Delete project", () => deleteButton.evaluate((el) => el === document.activeElement), UI_MS);

    await deleteButton.click();
    await dialog.waitFor();
    await dialog.getByRole("button", { name: `Delete ${project}` }).click();
    await page.getByRole("heading", { level: 1, name: "Projects" }).waitFor();
    await eventually("the project leaves the list", async () => (await projectRow(page).count()) === 0);
    check((await page.evaluate(() => window.__noReload)) === 1, "the page was reloaded");
    await shot(page, "projects-deleted");
  });

  await step("8. the account page and its sign-out-everywhere dialog", async () => {
    await page.getByRole("link", { name: `Account: ${settings.adminEmail}` }).click();
    await page.getByRole("heading", { level: 1, name: "Account" }).waitFor();
    await shot(page, "account");
    await audit(page, "account");
    await page.getByRole("button", { name: "Sign out everywhere" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    await shot(page, "dialog-sign-out-everywhere");
    await audit(page, "sign-out-everywhere dialog");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "detached" });
  });

  await step("9. nothing sent a password; no CSP refusal or script error", async () => {
    const count = checkNoPasswordSent();
    check(pageProblems.length === 0, `the dashboard reported problems:\n  ${pageProblems.join("\n  ")}`);
    console.log(`            ${count} requests checked; axe-core ran on ${audited.length} views: ${audited.join(", ")}`);
    console.log(`            ${shots} screenshots in ${settings.screenshots}`);
  });
} catch (error) {
  console.error(`\nFAILED at step "${currentStep}":\n${error.stack || error}`);
  if (pageProblems.length) console.error(`dashboard problems seen:\n  ${pageProblems.join("\n  ")}`);
  if (pageTrouble.length) console.error(`the browser also saw:\n  ${pageTrouble.slice(-30).join("\n  ")}`);
  for (const [i, context] of contexts.entries()) {
    for (const [j, page] of context.pages().entries()) {
      // What the dashboard said on screen, which often names the cause.
      const said = await page
        .locator(".form-error, .field-error, .notice, .toast, .live-note-warn")
        .allInnerTexts()
        .catch(() => []);
      // Origin and path only: preview URLs carry a token in their query.
      const where = (() => {
        try {
          const url = new URL(page.url());
          return url.origin + url.pathname + url.hash.replace(/^#\/invite\/.*/, "#/invite/…");
        } catch {
          return "?";
        }
      })();
      console.error(`page ${i}-${j} at ${where}${said.length ? `, showing: ${said.join(" | ")}` : ""}`);
      await page
        .screenshot({ path: path.join(settings.screenshots, `failure-${i}-${j}.png`), fullPage: true })
        .catch(() => {});
    }
  }
  await browser.close().catch(() => {});
  fs.rmSync(work, { recursive: true, force: true });
  process.exit(1);
}

await browser.close();
fs.rmSync(work, { recursive: true, force: true });
console.log(`[${clock()}] all steps passed`);
