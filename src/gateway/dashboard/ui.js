// Building blocks shared by the views: the html template tag, announcements and toasts (both in
// polite live regions), dialogs that hold focus, form fields wired for assistive technology, and
// small formatters.

import { h } from "./vendor/preact.js";
import { useEffect, useId, useRef, useState } from "./vendor/hooks.js";
import htm from "./vendor/htm.js";
import { describeError } from "./api.js";

export const html = htm.bind(h);

// ---- Announcements and toasts -------------------------------------------------------------

const toastListeners = new Set();
let toasts = [];
let nextToastId = 1;

/** A visible message in the toast area (a polite live region), gone after a while unless an error. */
export function toast(message, kind = "info") {
  const id = nextToastId++;
  // The three latest are enough on screen; the live region has said the others already.
  toasts = [...toasts, { id, message, kind }].slice(-3);
  toastListeners.forEach((listener) => listener(toasts));
  // Errors stay until dismissed: they may take longer to read than any timeout.
  if (kind !== "error") setTimeout(() => dismissToast(id), 6000);
}

export function dismissToast(id) {
  toasts = toasts.filter((t) => t.id !== id);
  toastListeners.forEach((listener) => listener(toasts));
}

let announcer = () => {};
/** Says `message` to screen readers only (status changes seen on screen anyway). */
export function announce(message) {
  announcer(message);
}

export function LiveRegions() {
  const [list, setList] = useState(toasts);
  const [spoken, setSpoken] = useState("");
  useEffect(() => {
    toastListeners.add(setList);
    announcer = (message) => {
      // Clear first, so the same words twice are announced twice.
      setSpoken("");
      setTimeout(() => setSpoken(message), 50);
    };
    return () => toastListeners.delete(setList);
  }, []);
  return html`
    <div class="visually-hidden" aria-live="polite" aria-atomic="true">${spoken}</div>
    <div class="toasts" aria-live="polite">
      ${list.map(
        (t) => html`
          <div key=${t.id} class=${`toast toast-${t.kind}`}>
            <p>${t.message}</p>
            <button type="button" class="icon-button" onClick=${() => dismissToast(t.id)}>
              <span aria-hidden="true">×</span><span class="visually-hidden">Dismiss message</span>
            </button>
          </div>
        `,
      )}
    </div>
  `;
}

// ---- Dialogs --------------------------------------------------------------------------------

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/**
 * A modal dialog (native <dialog>: the page behind is inert). Tab cycles inside it, Escape
 * closes it, and focus goes back to what opened it (or to the page's heading if that is gone).
 */
export function Dialog({ title, onClose, children, className = "" }) {
  const ref = useRef();
  const titleId = useId();
  const closeRef = useRef(onClose);
  closeRef.current = onClose;
  useEffect(() => {
    const dialog = ref.current;
    const opener = document.activeElement;
    dialog.showModal();
    const first = dialog.querySelector("[data-autofocus]") || dialog.querySelector(FOCUSABLE);
    first?.focus();
    const onCancel = (event) => {
      event.preventDefault();
      closeRef.current();
    };
    dialog.addEventListener("cancel", onCancel);
    return () => {
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      // After the render that removed the dialog: the opener may be gone by then (a deleted row).
      setTimeout(() => {
        if (opener && opener.isConnected && !opener.disabled) opener.focus();
        else document.querySelector("main h1")?.focus();
      }, 0);
    };
  }, []);
  const trapTab = (event) => {
    if (event.key !== "Tab") return;
    const focusable = [...ref.current.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null);
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  };
  return html`
    <dialog ref=${ref} class=${`dialog ${className}`} aria-labelledby=${titleId} onKeyDown=${trapTab}>
      <h2 id=${titleId} class="dialog-title">${title}</h2>
      ${children}
    </dialog>
  `;
}

/**
 * "Are you sure?" for destructive actions. `onConfirm` may be async; its failure is shown in the
 * dialog (the API's own message, e.g. why the last admin cannot be removed).
 */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onClose, danger = true }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const confirm = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const errorId = useId();
  return html`
    <${Dialog} title=${title} onClose=${onClose}>
      <form onSubmit=${confirm} aria-describedby=${error ? errorId : undefined}>
        <div class="dialog-body">${children}</div>
        ${error && html`<p id=${errorId} class="form-error" role="alert">${describeError(error)}</p>`}
        <div class="dialog-actions">
          <button type="button" class="button" onClick=${onClose} data-autofocus>Cancel</button>
          <button type="submit" class=${danger ? "button button-danger" : "button button-primary"} disabled=${busy}>
            ${busy ? "Working…" : confirmLabel}
          </button>
        </div>
      </form>
    <//>
  `;
}

// ---- Form fields ----------------------------------------------------------------------------

/** An id usable in HTML and CSS selectors for an API field path such as spec.ports[0].port. */
export function fieldId(path) {
  return `f-${path.replace(/[^A-Za-z0-9]+/g, "-").replace(/-$/, "")}`;
}

/**
 * A labelled input whose hint and error are tied to it with aria-describedby, and marked
 * aria-invalid while it has an error.
 */
export function TextField({ path, label, hint, error, value, onInput, className = "", labelHidden = false, trailing = null, ...input }) {
  const id = fieldId(path);
  const hintId = hint ? `${id}-hint` : null;
  const errorId = error ? `${id}-error` : null;
  const describedBy = [errorId, hintId].filter(Boolean).join(" ") || undefined;
  return html`
    <div class=${`field ${error ? "field-invalid" : ""} ${className}`}>
      <label for=${id} class=${labelHidden ? "visually-hidden" : ""}>${label}</label>
      ${hint && html`<p id=${hintId} class="hint">${hint}</p>`}
      <div class=${trailing ? "input-wrap" : "input-plain"}>
        <input
          id=${id}
          name=${path}
          value=${value}
          onInput=${(event) => onInput(event.currentTarget.value)}
          aria-invalid=${error ? "true" : undefined}
          aria-describedby=${describedBy}
          ...${input}
        />
        ${trailing}
      </div>
      ${error && html`<p id=${errorId} class="field-error">${error}</p>`}
    </div>
  `;
}

// ---- Copying --------------------------------------------------------------------------------

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without clipboard permission (or focus): the old way, through a selected text area.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("The browser did not allow copying; select the text and copy it.");
  }
}

export function CopyButton({ text, label = "Copy", what = "Text", className = "button" }) {
  const [copied, setCopied] = useState(false);
  useEffect(() => {
    if (!copied) return;
    const timer = setTimeout(() => setCopied(false), 2000);
    return () => clearTimeout(timer);
  }, [copied]);
  const copy = async () => {
    try {
      await copyText(typeof text === "function" ? await text() : text);
      setCopied(true);
      announce(`${what} copied to the clipboard`);
    } catch (error) {
      toast(describeError(error), "error");
    }
  };
  return html`<button type="button" class=${className} onClick=${copy}>${copied ? "Copied" : label}</button>`;
}

// ---- Time and sizes -------------------------------------------------------------------------

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const absolute = new Intl.DateTimeFormat("en", { dateStyle: "medium", timeStyle: "short" });

export function relativeTime(iso, now = Date.now()) {
  const time = Date.parse(iso);
  if (Number.isNaN(time)) return "—";
  const seconds = Math.round((time - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 45 * 60) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 22 * 3600) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 26 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return absolute.format(time);
}

/** A <time> that says "5 minutes ago" and carries the exact time. */
export function Time({ iso, now }) {
  if (!iso) return html`<span class="muted">never</span>`;
  return html`<time datetime=${iso} title=${absolute.format(Date.parse(iso))}>${relativeTime(iso, now)}</time>`;
}

/** The current time, refreshed every `intervalMs`, for relative times that age on screen. */
export function useNow(intervalMs = 30000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "—";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}
