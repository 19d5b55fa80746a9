// The organisation's projects, live: GET /api/orgs/{org}/events is a server-sent-event stream
// that needs the Authorization header, which EventSource cannot send, so it is read with fetch and
// parsed here. A dropped stream is reopened with backoff; `ended` (the session or membership is
// over) is final.

import { getSession, orgPath, retryAfterSeconds } from "./api.js";

// Heartbeats come every 15 s: a stream silent for longer than this is dead (a proxy or a laptop
// lid), even if the connection has not noticed.
const SILENCE_LIMIT_MS = 45000;
const MAX_BACKOFF_MS = 30000;

/**
 * Follows `org`'s projects. `handlers`: snapshot(projects), project(project), deleted(name),
 * ended(reason), status("connecting" | "live" | "reconnecting" | "gone", detail?). Returns stop().
 */
export function followProjects(org, handlers) {
  const controller = new AbortController();
  let failures = 0;

  const run = async () => {
    while (!controller.signal.aborted) {
      handlers.status(failures ? "reconnecting" : "connecting");
      let waitMs = backoff(failures);
      try {
        const outcome = await readStream(org, handlers, controller.signal, () => {
          failures = 0;
        });
        if (outcome.ended) return;
        if (outcome.retryAfter != null) waitMs = Math.max(waitMs, outcome.retryAfter * 1000);
      } catch (error) {
        if (controller.signal.aborted) return;
        handlers.status("reconnecting", error?.message);
      }
      failures++;
      handlers.status("reconnecting");
      await sleep(waitMs, controller.signal);
    }
  };
  run();
  return () => controller.abort();
}

/** Reads one stream until it closes. Resolves {ended} when the gateway ended the session. */
async function readStream(org, handlers, stopSignal, onOpen) {
  const session = getSession();
  if (!session) {
    handlers.ended("You are signed out.");
    return { ended: true };
  }
  // One controller per attempt, aborted by the caller's stop or by the silence watchdog.
  const attempt = new AbortController();
  const stop = () => attempt.abort();
  stopSignal.addEventListener("abort", stop);
  let watchdog = null;
  const feedWatchdog = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => attempt.abort(), SILENCE_LIMIT_MS);
  };
  try {
    feedWatchdog();
    const response = await fetch(`${orgPath(org)}/events`, {
      headers: { authorization: `Bearer ${session.token}`, accept: "text/event-stream" },
      cache: "no-store",
      signal: attempt.signal,
    });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      handlers.ended(body.message || "Your session has ended.");
      return { ended: true };
    }
    if (response.status === 404) {
      // Not (or no longer) a member of this organisation: the session itself may go on.
      const body = await response.json().catch(() => ({}));
      handlers.status("gone", body.message || "You are not a member of this organisation.");
      return { ended: true };
    }
    if (!response.ok || !response.body) {
      return { retryAfter: retryAfterSeconds(response) };
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let ended = false;
    const parser = new EventParser((event, data) => {
      if (event === "ended") {
        ended = true;
        handlers.ended(parseJson(data)?.reason || "Your session has ended.");
        return;
      }
      const payload = parseJson(data);
      if (!payload) return;
      if (event === "projects" && Array.isArray(payload.projects)) {
        onOpen();
        handlers.status("live");
        handlers.snapshot(payload.projects);
      } else if (event === "project" && payload.name) {
        handlers.project(payload);
      } else if (event === "deleted" && payload.name) {
        handlers.deleted(payload.name);
      }
    });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      feedWatchdog();
      parser.push(value);
      if (ended) {
        reader.cancel().catch(() => {});
        return { ended: true };
      }
    }
    return {};
  } finally {
    clearTimeout(watchdog);
    stopSignal.removeEventListener("abort", stop);
  }
}

/** The text/event-stream format: fields per line, an event per blank line, `:` comments. */
export class EventParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = "";
    this.event = "";
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    // A \r at the end may be the first half of a \r\n split between chunks: keep it for later.
    const held = this.buffer.endsWith("\r") ? "\r" : "";
    const lines = this.buffer.slice(0, this.buffer.length - held.length).split(/\r\n|\r|\n/);
    // The last piece is a line still arriving.
    this.buffer = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.dispatch(this.event || "message", this.data.join("\n"));
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function backoff(failures) {
  if (failures === 0) return 500;
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1));
  // Jitter, so that many tabs do not come back at the same instant after a gateway restart.
  return base / 2 + Math.random() * (base / 2);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
