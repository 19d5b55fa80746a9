// The AI panel of a project page: a chat with Claude through the project's AI relay. The
// conversation lives in this component's state only (not in storage, not on the gateway): a
// reload or leaving the page forgets it. Answers stream in as the relay passes them on; Stop
// aborts the request, and the relay cancels it upstream.

import { useEffect, useRef, useState } from "./vendor/hooks.js";
import { endSession, getSession, projectPath, retryAfterSeconds } from "./api.js";
import { html } from "./ui.js";

const MAX_TOKENS = 1024;

export function AiSection({ org, project }) {
  const base = `${projectPath(org, project.name)}/ai/v1`;
  const [models, setModels] = useState(null);
  const [unavailable, setUnavailable] = useState(null);
  const [model, setModel] = useState("");
  const [turns, setTurns] = useState([]);
  const [draft, setDraft] = useState("");
  const [problem, setProblem] = useState(null);
  const [streaming, setStreaming] = useState(false);
  const abort = useRef(null);
  const stopped = project.state !== "Running";

  useEffect(() => {
    setModels(null);
    setUnavailable(null);
    if (stopped) return;
    let current = true;
    relayFetch(`${base}/models`)
      .then((answer) => {
        if (!current) return;
        const ids = answer.data.map((m) => m.id);
        setModels(ids);
        setModel((chosen) => (ids.includes(chosen) ? chosen : ids[0] || ""));
      })
      .catch((error) => current && setUnavailable(error.message));
    return () => {
      current = false;
    };
  }, [base, stopped]);
  // An answer in flight ends with the page, and when the project stops.
  useEffect(() => () => abort.current?.abort(), []);
  useEffect(() => {
    if (stopped) abort.current?.abort();
  }, [stopped]);

  const send = async (event) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || streaming) return;
    const history = [...turns, { role: "user", content: text }];
    setTurns([...history, { role: "assistant", content: "" }]);
    setDraft("");
    setProblem(null);
    setStreaming(true);
    const controller = new AbortController();
    abort.current = controller;
    const append = (piece) =>
      setTurns((all) => [...all.slice(0, -1), { role: "assistant", content: all[all.length - 1].content + piece }]);
    try {
      const body = { model, max_tokens: MAX_TOKENS, stream: true, messages: history };
      await streamAnswer(`${base}/messages`, body, controller.signal, append);
    } catch (error) {
      if (error.name !== "AbortError") {
        setProblem(error instanceof TypeError ? "The connection to the AI relay broke off." : error.message);
      }
      // A turn without an answer is not sent again as context.
      setTurns((all) => (all[all.length - 1]?.content ? all : all.slice(0, -2)));
      if (error.name !== "AbortError") setDraft((now) => now || text);
    } finally {
      setStreaming(false);
      abort.current = null;
    }
  };

  const heading = html`<h2 id="ai-heading">Ask Claude</h2>`;
  if (stopped) {
    return html`<section class="card" aria-labelledby="ai-heading">${heading}<p class="muted">The project is stopped. Start it to use its AI assistant.</p></section>`;
  }
  if (unavailable) {
    return html`<section class="card" aria-labelledby="ai-heading">${heading}<p class="muted">${unavailable}</p></section>`;
  }
  return html`
    <section class="card ai-panel" aria-labelledby="ai-heading">
      ${heading}
      <p class="hint">This conversation lives only in this page: ooda keeps none of it, and reloading the page forgets it.</p>
      ${turns.length > 0 &&
      html`
        <ol class="chat-log" aria-label="Conversation" aria-busy=${streaming ? "true" : "false"}>
          ${turns.map(
            (turn, index) => html`
              <li key=${index} class=${`chat-turn chat-${turn.role}`}>
                <span class="chat-who">${turn.role === "user" ? "You" : "Claude"}</span>
                <p class="chat-text">${turn.content || (streaming ? "…" : "")}</p>
              </li>
            `,
          )}
        </ol>
      `}
      ${problem && html`<p class="field-error" role="alert">${problem}</p>`}
      <form class="chat-form" onSubmit=${send}>
        <div class="field">
          <label for="ai-prompt">Message</label>
          <textarea
            id="ai-prompt"
            rows="3"
            value=${draft}
            onInput=${(e) => setDraft(e.currentTarget.value)}
            onKeyDown=${(e) => e.key === "Enter" && (e.ctrlKey || e.metaKey) && send(e)}
          ></textarea>
          <p class="hint small">Ctrl+Enter sends.</p>
        </div>
        <div class="actions">
          ${models &&
          models.length > 1 &&
          html`
            <label class="visually-hidden" for="ai-model">Model</label>
            <select id="ai-model" value=${model} onChange=${(e) => setModel(e.currentTarget.value)}>
              ${models.map((id) => html`<option key=${id} value=${id}>${id}</option>`)}
            </select>
          `}
          ${streaming
            ? html`<button type="button" class="button" onClick=${() => abort.current?.abort()}>Stop</button>`
            : html`<button type="submit" class="button button-primary" disabled=${!models || !draft.trim()}>Send</button>`}
          ${turns.length > 0 &&
          !streaming &&
          html`<button type="button" class="button" onClick=${() => setTurns([])}>Clear conversation</button>`}
        </div>
      </form>
    </section>
  `;
}

/** A relay request with the session; rejects with the relay's own message. */
async function relayFetch(path, { json, signal } = {}) {
  const session = getSession();
  const headers = { accept: "application/json" };
  if (session) headers.authorization = `Bearer ${session.token}`;
  if (json) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method: json ? "POST" : "GET",
    headers,
    body: json && JSON.stringify(json),
    signal,
    cache: "no-store",
  });
  if (!response.ok) throw await refusal(response, session);
  return json ? response : response.json();
}

/** The relay answers refusals in the Messages API's shape: `{type: "error", error: {message}}`. */
async function refusal(response, session) {
  let message = `The AI relay answered ${response.status}.`;
  try {
    message = (await response.json()).error?.message || message;
  } catch {
    // Not JSON: the status says enough.
  }
  if (response.status === 401 && session) endSession(message);
  const wait = retryAfterSeconds(response);
  const text = message.charAt(0).toUpperCase() + message.slice(1);
  return new Error(wait != null && response.status === 429 ? `${text}. Try again in ${wait} seconds.` : text);
}

/** POSTs `body` and feeds each text delta of the Server-Sent Events answer to `onText`. */
async function streamAnswer(path, body, signal, onText) {
  const response = await relayFetch(path, { json: body, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event?.type === "content_block_delta" && event.delta?.type === "text_delta") onText(event.delta.text);
      if (event?.type === "error") throw new Error(event.error?.message || "The answer broke off.");
    }
  }
}

function parse(block) {
  const data = block
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).trimStart())
    .join("\n");
  try {
    return data ? JSON.parse(data) : null;
  } catch {
    return null;
  }
}
