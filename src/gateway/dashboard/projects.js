// Projects: the live list, one project's page (actions, preview, publishing, versions, the AI
// panel, details), and deleting one (admins).

import { useCallback, useEffect, useRef, useState } from "./vendor/hooks.js";
import { AiSection } from "./ai.js";
import { api, describeError, projectPath, rememberSiteUrl, seg, siteUrlOf } from "./api.js";
import { folderEntries, tarArchive } from "./tar.js";
import {
  announce,
  ConfirmDialog,
  CopyButton,
  formatBytes,
  html,
  plural,
  Time,
  toast,
  useNow,
} from "./ui.js";

// ---- What a project is doing ----------------------------------------------------------------

const TONES = {
  Running: "ok",
  Hibernated: "info",
  Stopped: "neutral",
  Pending: "pending",
  Provisioning: "pending",
  Waking: "pending",
  Failed: "bad",
  Deleting: "bad",
};

/** The status to show: the phase, or the transition the desired state has asked for. */
export function statusOf(project) {
  const { phase, state } = project;
  if (phase === "Deleting") return { label: "Deleting", tone: "bad" };
  if (state === "Stopped" && phase !== "Stopped") return { label: "Stopping", tone: "pending" };
  if (state === "Running" && phase === "Stopped") return { label: "Starting", tone: "pending" };
  return { label: phase || "Pending", tone: TONES[phase] || "neutral" };
}

function StatusBadge({ project }) {
  const { label, tone } = statusOf(project);
  return html`<span class=${`badge badge-${tone} phase`}>${label}</span>`;
}

function Readiness({ project }) {
  return project.ready
    ? html`<span class="readiness readiness-yes">Ready</span>`
    : html`<span class="readiness readiness-no">Not ready</span>`;
}

const hasPreviewPort = (project) => (project.spec?.ports || []).some((port) => port.preview);
const canStart = (project) => project.state === "Stopped" && project.phase !== "Deleting";
const canStop = (project) => project.state === "Running" && project.phase !== "Deleting";
const canWake = (project) => project.state === "Running" && project.phase === "Hibernated";

export const projectsHash = (org) => `#/orgs/${seg(org)}/projects`;
export const projectHash = (org, name) => `#/orgs/${seg(org)}/projects/${seg(name)}`;
export const newProjectHash = (org) => `#/orgs/${seg(org)}/new-project`;

/**
 * Start, stop and wake, with the button that asked kept busy meanwhile. What follows comes from
 * the event stream, which carries the change within moments.
 */
function useProjectActions(org) {
  const [busy, setBusy] = useState({});
  const run = useCallback(
    async (action, name) => {
      setBusy((b) => ({ ...b, [name]: action }));
      try {
        await api(`${projectPath(org, name)}/${action}`, { method: "POST" });
        const done = { start: "Starting", stop: "Stopping", wake: "Waking" }[action];
        toast(`${done} ${name}.`);
      } catch (error) {
        toast(`Could not ${action} ${name}. ${describeError(error)}`, "error");
      } finally {
        setBusy((b) => ({ ...b, [name]: null }));
      }
    },
    [org],
  );
  return [busy, run];
}

function ActionButtons({ project, busy, run, primary = false, small = false }) {
  const name = project.name;
  const working = busy[name];
  const button = (action, label, show) =>
    show &&
    html`<button
      type="button"
      class=${`button ${small ? "button-small" : ""} ${primary && action !== "stop" ? "button-primary" : ""}`}
      disabled=${Boolean(working)}
      onClick=${() => run(action, name)}
    >
      ${working === action ? `${label}…` : label}<span class="visually-hidden"> ${name}</span>
    </button>`;
  return html`
    ${button("start", "Start", canStart(project))} ${button("wake", "Wake", canWake(project))}
    ${button("stop", "Stop", canStop(project))}
  `;
}

/**
 * The terminal page (/terminal#<org>/<project>, same origin) in a new tab. rel="opener" on
 * purpose: only a tab opened with its opener gets a copy of this tab's sessionStorage, where the
 * session is (browsers treat target=_blank as noopener otherwise).
 */
function TerminalLink({ org, project, className = "button" }) {
  if (project.state !== "Running" || project.phase === "Deleting") return null;
  return html`<a class=${className} href=${`/terminal#${seg(org)}/${seg(project.name)}`} target="_blank" rel="opener">
    Terminal<span class="visually-hidden"> of ${project.name} (new tab)</span>
  </a>`;
}

/** Asks for the preview URL (it carries the current token) and opens it in a new tab. */
async function openPreview(org, name) {
  try {
    const preview = await api(`${projectPath(org, name)}/preview`);
    // noopener and noreferrer: the preview is another site, and must not reach back into this tab.
    window.open(preview.url, "_blank", "noopener,noreferrer");
  } catch (error) {
    toast(`No preview for ${name}. ${describeError(error)}`, "error");
  }
}

// ---- The list -------------------------------------------------------------------------------

export function ProjectList({ org, live }) {
  const now = useNow();
  const [busy, run] = useProjectActions(org);
  const { projects, connection } = live;
  return html`
    <div class="page-head">
      <div>
        <h1 tabindex="-1">Projects</h1>
        <p class="muted">Development environments in <strong>${org}</strong>.</p>
      </div>
      <a class="button button-primary" href=${newProjectHash(org)}>New project</a>
    </div>
    <${ConnectionNote} connection=${connection} />
    ${projects === null
      ? html`<p class="muted loading">Loading projects…</p>`
      : projects.length === 0
        ? html`
            <div class="empty">
              <h2>No projects yet</h2>
              <p>A project is a sandboxed development environment with its own storage and preview link.</p>
              <a class="button button-primary" href=${newProjectHash(org)}>Create the first project</a>
            </div>
          `
        : html`
            <table class="table projects-table">
              <caption class="visually-hidden">Projects of ${org}, updated live</caption>
              <thead>
                <tr>
                  <th scope="col">Project</th>
                  <th scope="col">Status</th>
                  <th scope="col">Last activity</th>
                  <th scope="col">Preview</th>
                  <th scope="col">Site</th>
                  <th scope="col"><span class="visually-hidden">Actions</span></th>
                </tr>
              </thead>
              <tbody>
                ${projects.map((project) => {
                  const siteUrl = siteUrlOf(org, project);
                  return html`
                    <tr key=${project.name} data-project=${project.name}>
                      <th scope="row" data-label="Project">
                        <a href=${projectHash(org, project.name)} class="project-name">${project.name}</a>
                      </th>
                      <td data-label="Status"><${StatusBadge} project=${project} /> <${Readiness} project=${project} /></td>
                      <td data-label="Last activity"><${Time} iso=${project.lastActivity} now=${now} /></td>
                      <td data-label="Preview">
                        ${hasPreviewPort(project) && project.state === "Running" && project.phase !== "Deleting"
                          ? html`<button
                              type="button"
                              class="button button-small"
                              onClick=${() => openPreview(org, project.name)}
                            >
                              Open preview<span class="visually-hidden"> of ${project.name} (new tab)</span>
                            </button>`
                          : html`<span class="muted">—</span>`}
                      </td>
                      <td data-label="Site">
                        ${siteUrl
                          ? html`<a href=${siteUrl} target="_blank" rel="noopener noreferrer">
                              Open site<span class="visually-hidden"> of ${project.name} (new tab)</span>
                            </a>`
                          : html`<span class="muted">—</span>`}
                      </td>
                      <td class="row-actions">
                        <${TerminalLink} org=${org} project=${project} className="button button-small" />
                        <${ActionButtons} project=${project} busy=${busy} run=${run} small=${true} />
                      </td>
                    </tr>
                  `;
                })}
              </tbody>
            </table>
          `}
  `;
}

function ConnectionNote({ connection }) {
  if (connection === "live") return html`<p class="live-note"><span class="dot" aria-hidden="true"></span> Live</p>`;
  if (connection === "gone") {
    return html`<p class="live-note live-note-warn">This organisation's projects are not available to you.</p>`;
  }
  if (connection === "reconnecting") {
    return html`<p class="live-note live-note-warn">Live updates interrupted; reconnecting…</p>`;
  }
  return html`<p class="live-note muted">Connecting…</p>`;
}

// ---- One project ----------------------------------------------------------------------------

export function ProjectDetail({ org, name, live, isAdmin, navigate }) {
  const [busy, run] = useProjectActions(org);
  const [confirmingDelete, setConfirmingDelete] = useState(false);
  const now = useNow();
  const project = live.projects?.find((p) => p.name === name);

  const breadcrumb = html`
    <nav aria-label="Breadcrumb" class="breadcrumb">
      <a href=${projectsHash(org)}>Projects</a> <span aria-hidden="true">/</span> <span aria-current="page">${name}</span>
    </nav>
  `;
  if (live.projects === null) return html`${breadcrumb}<h1 tabindex="-1">${name}</h1><p class="muted">Loading…</p>`;
  if (!project) {
    return html`
      ${breadcrumb}
      <h1 tabindex="-1">${name}</h1>
      <p>There is no project named ${name} in ${org}; it may have been deleted.</p>
      <p><a href=${projectsHash(org)}>Back to the projects</a></p>
    `;
  }

  const deleteProject = async () => {
    await api(projectPath(org, name), { method: "DELETE" });
    toast(`Deleting ${name}.`);
    navigate(projectsHash(org));
  };

  return html`
    ${breadcrumb}
    <div class="page-head">
      <div>
        <h1 tabindex="-1" class="project-title">${name} <${StatusBadge} project=${project} /></h1>
        <p class="muted"><${Readiness} project=${project} /> · Last activity <${Time} iso=${project.lastActivity} now=${now} /></p>
      </div>
      <div class="actions">
        <${TerminalLink} org=${org} project=${project} />
        <${ActionButtons} project=${project} busy=${busy} run=${run} primary=${true} />
      </div>
    </div>

    <${PreviewSection} org=${org} project=${project} />
    <${SiteSection} org=${org} project=${project} />
    <${AiSection} org=${org} project=${project} />
    <${DetailsSection} project=${project} />

    ${isAdmin &&
    html`
      <section class="card danger-zone" aria-labelledby="danger-heading">
        <h2 id="danger-heading">Delete this project</h2>
        <p>Deleting removes the environment, its workspace volume and its published sites. It cannot be undone.</p>
        <button type="button" class="button button-danger" onClick=${() => setConfirmingDelete(true)} disabled=${project.phase === "Deleting"}>
          Delete project
        </button>
      </section>
    `}
    ${confirmingDelete &&
    html`
      <${ConfirmDialog}
        title=${`Delete ${name}?`}
        confirmLabel=${`Delete ${name}`}
        onConfirm=${deleteProject}
        onClose=${() => setConfirmingDelete(false)}
      >
        <p>The project <strong>${name}</strong>, its workspace and its published sites will be deleted for good.</p>
      <//>
    `}
  `;
}

function PreviewSection({ org, project }) {
  const [preview, setPreview] = useState(null);
  const [problem, setProblem] = useState(null);
  const running = project.state === "Running" && project.phase !== "Deleting";
  const withPreview = hasPreviewPort(project);
  // Stopping rotates the token, so the link is asked for again whenever the project changes course.
  useEffect(() => {
    setPreview(null);
    setProblem(null);
    if (!running || !withPreview) return;
    let current = true;
    api(`${projectPath(org, project.name)}/preview`)
      .then((answer) => current && setPreview(answer))
      .catch((error) => current && setProblem(describeError(error)));
    return () => {
      current = false;
    };
  }, [org, project.name, project.state, project.phase, project.ready, running, withPreview]);

  const port = (project.spec?.ports || []).find((p) => p.preview);
  return html`
    <section class="card" aria-labelledby="preview-heading">
      <h2 id="preview-heading">Preview</h2>
      ${!withPreview
        ? html`<p class="muted">No port of this project has preview on.</p>`
        : !running
          ? html`<p class="muted">The project is stopped. Start it to preview it.</p>`
          : html`
              <p>
                Port <strong>${port.name}</strong> (${port.port}) at <span class="mono">${project.previewHost || "…"}</span>.
                ${project.phase === "Hibernated" && " Opening the preview wakes the project."}
              </p>
              ${problem && html`<p class="muted">${problem}</p>`}
              ${preview &&
              html`
                <div class="actions">
                  <a class="button button-primary" id="preview-link" href=${preview.url} target="_blank" rel="noopener noreferrer">
                    Open preview<span class="visually-hidden"> (new tab)</span>
                  </a>
                  <${CopyButton} text=${preview.url} label="Copy preview link" what="The preview link" />
                </div>
                <p class="hint small">The link carries an access token: share it only with people who may see this preview. Stopping the project revokes it.</p>
              `}
              ${!preview && !problem && html`<p class="muted">Getting the preview link…</p>`}
            `}
    </section>
  `;
}

function SiteSection({ org, project }) {
  const [versions, setVersions] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [siteUrl, setSiteUrl] = useState(() => siteUrlOf(org, project));
  const [archive, setArchive] = useState(null);
  const [folder, setFolder] = useState(null);
  const [publishing, setPublishing] = useState(null);
  const [publishError, setPublishError] = useState(null);
  // A new key empties the file inputs after a publish.
  const [inputsKey, setInputsKey] = useState(0);
  const now = useNow();
  const base = projectPath(org, project.name);

  const mounted = useRef(true);
  useEffect(() => () => (mounted.current = false), []);
  /**
   * The versions, and which is live. The gateway answers from its watch cache, which can trail
   * its own write by a moment: after a publish or a rollback (`expectLive`), ask again until the
   * answer shows it.
   */
  const loadVersions = useCallback(
    async (expectLive = null) => {
      try {
        for (let attempt = 1; mounted.current; attempt++) {
          const answer = await api(`${base}/versions`);
          if (expectLive === null || answer.current === expectLive || attempt >= 20) {
            if (mounted.current) setVersions(answer);
            break;
          }
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
        setLoadError(null);
      } catch (error) {
        setLoadError(describeError(error));
      }
    },
    [base],
  );
  useEffect(() => {
    loadVersions();
  }, [loadVersions]);

  const publish = async (kind, makeBody) => {
    setPublishing(kind);
    setPublishError(null);
    try {
      const { body, contentType } = await makeBody();
      const answer = await api(`${base}/publish`, { method: "POST", body, contentType });
      rememberSiteUrl(org, project.name, answer.url);
      if (answer.url) setSiteUrl(answer.url);
      toast(`Version ${answer.version} of ${project.name}'s site is live (${plural(answer.files, "file")}).`);
      setArchive(null);
      setFolder(null);
      setInputsKey((k) => k + 1);
      await loadVersions(answer.version);
    } catch (error) {
      setPublishError(describeError(error));
    } finally {
      setPublishing(null);
    }
  };

  const publishArchive = (event) => {
    event.preventDefault();
    if (!archive) return setPublishError("Choose a .tar.gz or .tar file first.");
    publish("archive", async () => {
      // gzip starts with 1f 8b; anything else is sent as plain tar (the gateway checks either way).
      const magic = new Uint8Array(await archive.slice(0, 2).arrayBuffer());
      const gzip = magic[0] === 0x1f && magic[1] === 0x8b;
      return { body: archive, contentType: gzip ? "application/gzip" : "application/x-tar" };
    });
  };

  const publishFolder = (event) => {
    event.preventDefault();
    if (!folder?.length) return setPublishError("Choose a folder with at least one file first.");
    publish("folder", async () => ({ body: tarArchive(folder), contentType: "application/x-tar" }));
  };

  const activate = async (version) => {
    try {
      await api(`${base}/versions/${version}/activate`, { method: "POST" });
      toast(`Version ${version} of ${project.name}'s site is live.`);
      await loadVersions(version);
    } catch (error) {
      toast(`Could not make version ${version} live. ${describeError(error)}`, "error");
    }
  };

  const list = versions ? [...versions.versions].reverse() : [];
  return html`
    <section class="card" aria-labelledby="site-heading">
      <h2 id="site-heading">Published site</h2>
      ${siteUrl
        ? html`<p>
            Live at <a id="site-link" href=${siteUrl} target="_blank" rel="noopener noreferrer">${siteUrl}<span class="visually-hidden"> (new tab)</span></a>
          </p>`
        : versions?.current
          ? html`<p class="muted">Version ${versions.current} is live. Its address is shown after a publish from this browser.</p>`
          : html`<p class="muted">Nothing published yet. Publish a folder or an archive of static files (with an index.html).</p>`}

      <div class="publish-forms" key=${inputsKey}>
        <form class="publish-form" onSubmit=${publishArchive}>
          <div class="field">
            <label for="publish-archive">Archive (.tar.gz or .tar)</label>
            <input
              id="publish-archive"
              type="file"
              accept=".tar.gz,.tgz,.tar,application/gzip,application/x-tar"
              onChange=${(event) => setArchive(event.currentTarget.files[0] || null)}
            />
          </div>
          <button type="submit" class="button" disabled=${publishing !== null}>
            ${publishing === "archive" ? "Publishing…" : "Publish archive"}
          </button>
        </form>
        <form class="publish-form" onSubmit=${publishFolder}>
          <div class="field">
            <label for="publish-folder">Folder</label>
            <input
              id="publish-folder"
              type="file"
              webkitdirectory
              multiple
              onChange=${(event) => setFolder(folderEntries(event.currentTarget.files))}
            />
            ${folder && html`<p class="hint">${plural(folder.length, "file")}, ${formatBytes(folder.reduce((n, e) => n + e.file.size, 0))}</p>`}
          </div>
          <button type="submit" class="button" disabled=${publishing !== null}>
            ${publishing === "folder" ? "Publishing…" : "Publish folder"}
          </button>
        </form>
      </div>
      ${publishError && html`<p class="form-error" role="alert">${publishError}</p>`}

      <div class="section-head">
        <h3>Versions</h3>
        <button type="button" class="button button-small" onClick=${() => loadVersions()}>Refresh<span class="visually-hidden"> the versions</span></button>
      </div>
      ${loadError && html`<p class="form-error">${loadError}</p>`}
      ${versions === null && !loadError && html`<p class="muted">Loading versions…</p>`}
      ${versions && list.length === 0 && html`<p class="muted">No versions yet.</p>`}
      ${list.length > 0 &&
      html`
        <table class="table versions-table">
          <caption class="visually-hidden">Published versions, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Published</th>
              <th scope="col">Files</th>
              <th scope="col">Size</th>
              <th scope="col">By</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody>
            ${list.map(
              (v) => html`
                <tr key=${v.version} data-version=${v.version} class=${v.version === versions.current ? "current" : ""}>
                  <th scope="row" data-label="Version">${v.version}</th>
                  <td data-label="Published"><${Time} iso=${v.publishedAt} now=${now} /></td>
                  <td data-label="Files">${v.files}</td>
                  <td data-label="Size">${formatBytes(v.bytes)}</td>
                  <td data-label="By" class="break">${v.publisher}</td>
                  <td data-label="Status">
                    ${v.version === versions.current
                      ? html`<span class="badge badge-ok live-badge">Live</span>`
                      : html`<button type="button" class="button button-small" onClick=${() => activate(v.version)}>
                          Make live<span class="visually-hidden"> version ${v.version}</span>
                        </button>`}
                  </td>
                </tr>
              `,
            )}
          </tbody>
        </table>
      `}
    </section>
  `;
}

function DetailsSection({ project }) {
  const spec = project.spec || {};
  const resources = spec.resources || {};
  const git = spec.source?.git;
  const row = (term, value) => html`<div><dt>${term}</dt><dd>${value ?? html`<span class="muted">default</span>`}</dd></div>`;
  return html`
    <section class="card" aria-labelledby="details-heading">
      <h2 id="details-heading">Details</h2>
      <dl class="details">
        ${row("Isolation", spec.isolation)} ${row("Image", spec.image && html`<span class="mono break">${spec.image}</span>`)}
        ${row("CPU", resources.cpu)} ${row("Memory", resources.memory)} ${row("Storage", resources.storage)}
        ${row("Hibernates after", spec.lifecycle?.idleTimeout && `${spec.lifecycle.idleTimeout} idle`)}
        ${row(
          "Ports",
          (spec.ports || []).length
            ? spec.ports.map((p) => `${p.name} ${p.port}${p.preview ? " (preview)" : ""}`).join(", ")
            : html`<span class="muted">none</span>`,
        )}
        ${row(
          "Source",
          git ? html`<span class="mono break">${git.url}${git.ref ? ` @ ${git.ref}` : ""}</span>` : html`<span class="muted">empty workspace</span>`,
        )}
      </dl>
    </section>
  `;
}

/** Says a status change the event stream brought (the list shows it; this tells screen readers). */
export function announceChange(before, after) {
  if (!before) {
    announce(`Project ${after.name} added: ${statusOf(after).label}.`);
    return;
  }
  const was = statusOf(before).label;
  const now = statusOf(after).label;
  if (was !== now) announce(`${after.name}: ${now}.`);
}
