// The gateway's API as the dashboard uses it: the session kept in this tab, JSON requests with
// the bearer token, and errors as values the views can show (see /api/openapi.json).

const SESSION_KEY = "ooda.session";
const ORG_KEY = "ooda.org";

// The session lives in sessionStorage on the API origin only: it ends with the tab, and preview
// and site hosts are other origins, so nothing a project serves can read it.
export function getSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (!session || typeof session.token !== "string") return null;
    if (session.expiresAt && Date.parse(session.expiresAt) <= Date.now()) {
      sessionStorage.removeItem(SESSION_KEY);
      return null;
    }
    return session;
  } catch {
    return null;
  }
}

export function saveSession({ token, expiresAt, email }) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expiresAt, email }));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** The organisation this tab last showed. */
export function rememberedOrg() {
  return sessionStorage.getItem(ORG_KEY);
}

export function rememberOrg(org) {
  sessionStorage.setItem(ORG_KEY, org);
}

// Called when the gateway refuses the session (401 on an authenticated request): the app goes to
// the sign-in page with the gateway's reason.
let sessionEnded = () => {};
export function onSessionEnded(handler) {
  sessionEnded = handler;
}
export function endSession(reason) {
  clearSession();
  sessionEnded(reason);
}

/** A refusal from the gateway: `{error, message}`, plus `fields` on 422 and Retry-After on 429/503. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.message || `The gateway answered ${status}.`);
    this.status = status;
    this.code = body?.error || "unknown";
    this.fields = Array.isArray(body?.fields) ? body.fields : [];
    this.retryAfter = retryAfter;
  }
}

/**
 * A request to the gateway. `json` is sent as a JSON body; `body` with `contentType` as is.
 * Resolves to the parsed JSON answer (null for 204); rejects with ApiError or a network TypeError.
 */
export async function api(path, { method = "GET", json, body, contentType, auth = true, signal } = {}) {
  const headers = { accept: "application/json" };
  const session = auth ? getSession() : null;
  if (session) headers.authorization = `Bearer ${session.token}`;
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(json);
  } else if (contentType) {
    headers["content-type"] = contentType;
  }
  const response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  const text = await response.text();
  let answer = null;
  if (text) {
    try {
      answer = JSON.parse(text);
    } catch {
      answer = { message: text.slice(0, 300) };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, answer, retryAfterSeconds(response));
    if (response.status === 401 && session) endSession(error.message);
    throw error;
  }
  return answer;
}

export function retryAfterSeconds(response) {
  const value = response.headers.get("retry-after");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** What to tell the user about a failed request. */
export function describeError(error) {
  if (error instanceof ApiError) {
    let message = sentence(error.message);
    if (error.retryAfter != null) message += ` Try again in ${formatWait(error.retryAfter)}.`;
    return message;
  }
  if (error instanceof TypeError) return "The gateway could not be reached. Check the connection and try again.";
  return sentence(error?.message || String(error));
}

// The gateway's messages are lowercase fragments ("the project is stopped: start it instead").
function sentence(text) {
  const trimmed = String(text).trim();
  const capitalised = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?)]$/.test(capitalised) ? capitalised : `${capitalised}.`;
}

function formatWait(seconds) {
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}

/** A path segment, escaped. */
export const seg = encodeURIComponent;

export const orgPath = (org) => `/api/orgs/${seg(org)}`;
export const projectPath = (org, name) => `${orgPath(org)}/projects/${seg(name)}`;

// A published site's address is only in publish answers (project summaries do not carry it), so
// the dashboard remembers the last one it saw per project. It is a public URL, not a secret.
const SITES_KEY = "ooda.siteUrls";
export function siteUrlOf(org, project) {
  if (project.siteUrl) return project.siteUrl;
  try {
    return JSON.parse(localStorage.getItem(SITES_KEY) || "{}")[`${org}/${project.name}`] || null;
  } catch {
    return null;
  }
}
export function rememberSiteUrl(org, name, url) {
  if (!url) return;
  try {
    const known = JSON.parse(localStorage.getItem(SITES_KEY) || "{}");
    known[`${org}/${name}`] = url;
    localStorage.setItem(SITES_KEY, JSON.stringify(known));
  } catch {
    // Storage full or refused: the link shows until the page is left, which is enough.
  }
}
