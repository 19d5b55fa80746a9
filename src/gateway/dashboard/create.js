// Creating a project: a form over the Project spec (crds/projects.ooda.run.yaml). The API server
// validates the spec against the CRD schema and names each refused field (`fields` in a 422);
// each is shown beside its input, and what has no input is shown at the top.

import { useRef, useState } from "./vendor/hooks.js";
import { api, describeError, orgPath } from "./api.js";
import { projectsHash } from "./projects.js";
import { fieldId, html, TextField, toast } from "./ui.js";

const NAME_SHAPE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_PORTS = 16;
// Fields in the collapsed "Advanced settings": opened when one of them is refused.
const ADVANCED = ["spec.isolation", "spec.image", "spec.resources", "spec.lifecycle"];

const blankPort = () => ({ name: "", port: "", preview: false });

export function CreateProject({ org, upsert, navigate }) {
  const [form, setForm] = useState({
    name: "",
    gitUrl: "",
    gitRef: "",
    ports: [{ name: "web", port: "8080", preview: true }],
    isolation: "gvisor",
    image: "",
    cpu: "",
    memory: "",
    storage: "",
    idleTimeout: "",
    startStopped: false,
  });
  // Refusals by API field path, and those no input shows.
  const [errors, setErrors] = useState({});
  const [general, setGeneral] = useState([]);
  const [busy, setBusy] = useState(false);
  const [advancedOpen, setAdvancedOpen] = useState(false);
  const summaryRef = useRef();

  const set = (key) => (value) => setForm((f) => ({ ...f, [key]: value }));
  const setPort = (index, key, value) =>
    setForm((f) => ({
      ...f,
      ports: f.ports.map((port, i) => {
        if (i === index) return { ...port, [key]: value };
        // At most one port may be previewed (the CRD refuses more): choosing one clears the others.
        if (key === "preview" && value) return { ...port, preview: false };
        return port;
      }),
    }));

  // The API field paths this form has an input (or a group) for, in the form's order.
  const knownPaths = () => [
    "metadata.name",
    "spec.source.git.url",
    "spec.source.git.ref",
    "spec.ports",
    ...form.ports.flatMap((_, i) => [`spec.ports[${i}].name`, `spec.ports[${i}].port`, `spec.ports[${i}].preview`]),
    "spec.isolation",
    "spec.image",
    "spec.resources.cpu",
    "spec.resources.memory",
    "spec.resources.storage",
    "spec.lifecycle.idleTimeout",
    "spec.lifecycle.state",
  ];

  /** The input that shows a refusal of `path`: itself, its first part, or the nearest group. */
  const resolvePath = (path, known) => {
    if (path === "name" || path.startsWith("metadata.name")) return "metadata.name";
    if (known.includes(path)) return path;
    const child = known.find((k) => k.startsWith(`${path}.`));
    if (child) return child;
    let parent = path;
    while (parent.includes(".") || parent.includes("[")) {
      parent = parent.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
      if (known.includes(parent)) return parent;
    }
    return null;
  };

  const validate = () => {
    const found = {};
    const name = form.name.trim();
    if (!name) found["metadata.name"] = "Enter a name for the project.";
    else if (name.length > 30 || !NAME_SHAPE.test(name) || name.includes("--")) {
      found["metadata.name"] =
        "Use at most 30 lowercase letters, digits and single hyphens, starting and ending with a letter or digit.";
    }
    form.ports.forEach((port, i) => {
      if (!port.name.trim()) found[`spec.ports[${i}].name`] = "Enter a name for this port, such as web.";
      if (!/^\d+$/.test(port.port.trim())) found[`spec.ports[${i}].port`] = "Enter the port as a whole number, such as 8080.";
    });
    if (form.gitRef.trim() && !form.gitUrl.trim()) found["spec.source.git.url"] = "Enter the repository to check this ref out of.";
    return found;
  };

  const spec = () => {
    const trimmed = (value) => value.trim() || undefined;
    const result = { isolation: form.isolation };
    if (trimmed(form.image)) result.image = form.image.trim();
    result.ports = form.ports.map((port) => ({ name: port.name.trim(), port: Number(port.port.trim()), preview: port.preview }));
    const resources = { cpu: trimmed(form.cpu), memory: trimmed(form.memory), storage: trimmed(form.storage) };
    if (Object.values(resources).some(Boolean)) result.resources = JSON.parse(JSON.stringify(resources));
    result.lifecycle = { state: form.startStopped ? "Stopped" : "Running" };
    if (trimmed(form.idleTimeout)) result.lifecycle.idleTimeout = form.idleTimeout.trim();
    if (trimmed(form.gitUrl)) {
      result.source = { git: { url: form.gitUrl.trim() } };
      if (trimmed(form.gitRef)) result.source.git.ref = form.gitRef.trim();
    }
    return result;
  };

  const showErrors = (byPath, others) => {
    setErrors(byPath);
    setGeneral(others);
    if (Object.keys(byPath).some((path) => ADVANCED.some((prefix) => path.startsWith(prefix)))) setAdvancedOpen(true);
    // After the render: the summary lists every problem and links to each field.
    setTimeout(() => summaryRef.current?.focus(), 0);
  };

  const submit = async (event) => {
    event.preventDefault();
    const found = validate();
    if (Object.keys(found).length) return showErrors(found, []);
    setErrors({});
    setGeneral([]);
    setBusy(true);
    const name = form.name.trim();
    try {
      const created = await api(`${orgPath(org)}/projects`, { method: "POST", json: { name, spec: spec() } });
      upsert(created);
      toast(`Project ${name} created. It starts in a moment.`);
      // Back to the list, where it is seen coming up live next to the others.
      navigate(projectsHash(org));
    } catch (error) {
      setBusy(false);
      const known = knownPaths();
      const byPath = {};
      const others = [];
      for (const { field, message } of error.fields || []) {
        const path = resolvePath(field, known);
        const text = tidyMessage(field, message);
        if (path) byPath[path] = byPath[path] ? `${byPath[path]} ${text}` : text;
        // Rules on the whole object come back without a field (Kubernetes spells it "<nil>").
        else others.push(!field || field === "<nil>" ? text : `${field}: ${text}`);
      }
      if (error.code === "exists") byPath["metadata.name"] = describeError(error);
      else if (!Object.keys(byPath).length && !others.length) others.push(describeError(error));
      showErrors(byPath, others);
    }
  };

  // The ports group has no input of its own: its error message takes focus instead.
  const focusField = (path) => (document.getElementById(fieldId(path)) || document.getElementById(`${fieldId(path)}-error`))?.focus();

  // The summary lists the problems in the order the fields come in.
  const order = knownPaths();
  const problems = [
    ...general.map((message) => ({ message })),
    ...Object.entries(errors)
      .sort(([a], [b]) => order.indexOf(a) - order.indexOf(b))
      .map(([path, message]) => ({ path, message })),
  ];

  const field = (path, label, key, props = {}) => html`
    <${TextField} path=${path} label=${label} value=${form[key]} onInput=${set(key)} error=${errors[path]} ...${props} />
  `;

  return html`
    <nav aria-label="Breadcrumb" class="breadcrumb">
      <a href=${projectsHash(org)}>Projects</a> <span aria-hidden="true">/</span> <span aria-current="page">New project</span>
    </nav>
    <h1 tabindex="-1">New project</h1>
    <p class="muted">A sandboxed development environment in <strong>${org}</strong>. Fields left empty take the platform's defaults.</p>

    ${problems.length > 0 &&
    html`
      <div class="error-summary" role="alert" tabindex="-1" ref=${summaryRef} aria-labelledby="error-summary-title">
        <h2 id="error-summary-title">The project was not created</h2>
        <ul>
          ${problems.map(
            (p) => html`<li>
              ${p.path
                ? html`<button type="button" class="link-button" onClick=${() => focusField(p.path)}>
                    ${labelOf(p.path)}: ${p.message}
                  </button>`
                : p.message}
            </li>`,
          )}
        </ul>
      </div>
    `}

    <form class="card form" onSubmit=${submit} noValidate>
      ${field("metadata.name", "Name", "name", {
        hint: "Lowercase letters, digits and hyphens; at most 30 characters. It becomes part of the preview address.",
        autocomplete: "off",
        spellcheck: "false",
        maxlength: 30,
      })}

      <fieldset class="group">
        <legend>Source</legend>
        <p class="hint">A Git repository cloned into the new workspace. Leave empty to start with an empty workspace.</p>
        ${field("spec.source.git.url", "Repository URL", "gitUrl", {
          type: "url",
          placeholder: "https://github.com/example/app.git",
          spellcheck: "false",
        })}
        ${field("spec.source.git.ref", "Branch, tag or commit", "gitRef", {
          hint: "The repository's default branch when empty.",
          spellcheck: "false",
        })}
      </fieldset>

      <fieldset class="group" aria-describedby=${errors["spec.ports"] ? `${fieldId("spec.ports")}-error` : undefined}>
        <legend>Ports</legend>
        <p class="hint">Ports the environment listens on. The one with preview on is reachable at the project's private preview link.</p>
        ${errors["spec.ports"] &&
        html`<p id=${`${fieldId("spec.ports")}-error`} class="field-error" tabindex="-1">${errors["spec.ports"]}</p>`}
        ${form.ports.map(
          (port, i) => html`
            <div class="port-row" key=${i} data-port-row=${i}>
              <${TextField}
                path=${`spec.ports[${i}].name`}
                label=${`Port ${i + 1} name`}
                value=${port.name}
                onInput=${(v) => setPort(i, "name", v)}
                error=${errors[`spec.ports[${i}].name`]}
                spellcheck="false"
                autocomplete="off"
                className="port-name"
              />
              <${TextField}
                path=${`spec.ports[${i}].port`}
                label=${`Port ${i + 1} number`}
                value=${port.port}
                onInput=${(v) => setPort(i, "port", v)}
                error=${errors[`spec.ports[${i}].port`]}
                inputmode="numeric"
                autocomplete="off"
                className="port-number"
              />
              <div class="field checkbox-field port-preview">
                <input
                  type="checkbox"
                  id=${fieldId(`spec.ports[${i}].preview`)}
                  checked=${port.preview}
                  onChange=${(event) => setPort(i, "preview", event.currentTarget.checked)}
                  aria-invalid=${errors[`spec.ports[${i}].preview`] ? "true" : undefined}
                  aria-describedby=${errors[`spec.ports[${i}].preview`] ? `${fieldId(`spec.ports[${i}].preview`)}-error` : undefined}
                />
                <label for=${fieldId(`spec.ports[${i}].preview`)}>Preview</label>
                ${errors[`spec.ports[${i}].preview`] &&
                html`<p id=${`${fieldId(`spec.ports[${i}].preview`)}-error`} class="field-error">${errors[`spec.ports[${i}].preview`]}</p>`}
              </div>
              <button
                type="button"
                class="button button-small port-remove"
                onClick=${() => setForm((f) => ({ ...f, ports: f.ports.filter((_, j) => j !== i) }))}
              >
                Remove<span class="visually-hidden"> port ${i + 1}</span>
              </button>
            </div>
          `,
        )}
        ${form.ports.length < MAX_PORTS &&
        html`<button type="button" class="button button-small" onClick=${() => setForm((f) => ({ ...f, ports: [...f.ports, blankPort()] }))}>
          Add a port
        </button>`}
      </fieldset>

      <details class="group advanced" open=${advancedOpen} onToggle=${(event) => setAdvancedOpen(event.currentTarget.open)}>
        <summary>Advanced settings</summary>
        <fieldset class="radio-group" aria-describedby=${errors["spec.isolation"] ? `${fieldId("spec.isolation")}-error` : undefined}>
          <legend>Isolation</legend>
          ${[
            ["gvisor", "gVisor", "A user-space kernel between the environment and the node. Starts fast."],
            ["kata", "Kata Containers", "A lightweight virtual machine per environment. Stronger isolation, slower to start."],
          ].map(
            ([value, label, description]) => html`
              <div class="radio">
                <input
                  type="radio"
                  name="isolation"
                  id=${value === "gvisor" ? fieldId("spec.isolation") : `isolation-${value}`}
                  value=${value}
                  checked=${form.isolation === value}
                  onChange=${() => set("isolation")(value)}
                  aria-describedby=${`isolation-${value}-description`}
                />
                <label for=${value === "gvisor" ? fieldId("spec.isolation") : `isolation-${value}`}>${label}</label>
                <p class="hint" id=${`isolation-${value}-description`}>${description}</p>
              </div>
            `,
          )}
          ${errors["spec.isolation"] && html`<p id=${`${fieldId("spec.isolation")}-error`} class="field-error">${errors["spec.isolation"]}</p>`}
        </fieldset>
        ${field("spec.image", "Container image", "image", {
          hint: "The image the environment runs. The platform's default image when empty.",
          spellcheck: "false",
        })}
        <div class="field-row">
          ${field("spec.resources.cpu", "CPU", "cpu", { hint: "Cores, such as 2 or 500m.", spellcheck: "false" })}
          ${field("spec.resources.memory", "Memory", "memory", { hint: "Such as 4Gi.", spellcheck: "false" })}
          ${field("spec.resources.storage", "Storage", "storage", { hint: "Disk, such as 10Gi.", spellcheck: "false" })}
        </div>
        ${field("spec.lifecycle.idleTimeout", "Hibernate after", "idleTimeout", {
          hint: "Idle time before the environment hibernates, such as 90s, 15m or 2h (10s to 720h).",
          spellcheck: "false",
        })}
        <div class="field checkbox-field">
          <input
            type="checkbox"
            id=${fieldId("spec.lifecycle.state")}
            checked=${form.startStopped}
            onChange=${(event) => set("startStopped")(event.currentTarget.checked)}
            aria-invalid=${errors["spec.lifecycle.state"] ? "true" : undefined}
            aria-describedby=${errors["spec.lifecycle.state"] ? `${fieldId("spec.lifecycle.state")}-error` : undefined}
          />
          <label for=${fieldId("spec.lifecycle.state")}>Create it stopped</label>
          ${errors["spec.lifecycle.state"] &&
          html`<p id=${`${fieldId("spec.lifecycle.state")}-error`} class="field-error">${errors["spec.lifecycle.state"]}</p>`}
        </div>
      </details>

      <div class="actions">
        <button type="submit" class="button button-primary" disabled=${busy}>${busy ? "Creating…" : "Create project"}</button>
        <a class="button" href=${projectsHash(org)}>Cancel</a>
      </div>
    </form>
  `;
}

/**
 * The API server's cause messages repeat the refused value ("Invalid value: 70000: spec.ports[0].port
 * in body should be …"): beside the field, what it should be is the news.
 */
function tidyMessage(field, message) {
  let text = String(message || "is not valid").replace(`${field} in body `, "");
  const invalid = text.match(/^Invalid value: (?:"(?:[^"\\]|\\.)*"|[^:]*): (.+)$/s);
  if (invalid) text = invalid[1];
  else if (text.startsWith("Duplicate value")) text = "Another entry has the same name.";
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?)]$/.test(text) ? text : `${text}.`;
}

/** The visible label of the input for `path`, for the error summary. */
function labelOf(path) {
  const id = fieldId(path);
  const label = document.querySelector(`label[for="${id}"]`) || document.getElementById(id)?.closest("fieldset")?.querySelector("legend");
  return label?.textContent.trim() || path;
}
