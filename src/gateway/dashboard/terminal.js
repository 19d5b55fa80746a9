// The terminal page (/terminal#<org>/<project>): a shell in the project's workspace, through the
// gateway's WebSocket (GET /api/orgs/{org}/projects/{project}/terminal). The session token goes
// as a subprotocol, never in the URL. Keystrokes and output stream as binary frames; resizes are
// text frames. This page, unlike the dashboard, allows inline styles: xterm.js sizes its rows
// with <style> elements.
import { Terminal } from "./vendor/xterm.js";
import { FitAddon } from "./vendor/addon-fit.js";
import { getSession } from "./api.js";

const [org, project] = location.hash.slice(1).split("/").map(decodeURIComponent);
const status = document.getElementById("status");
const session = getSession();

function say(text) {
  status.textContent = text;
}

if (!org || !project) {
  say("No project named: open a terminal from the project list.");
} else if (!session) {
  say("Signed out: sign in on the dashboard, then open the terminal again.");
} else {
  document.getElementById("title").textContent = `${project} · ${org}`;
  document.title = `${project} · Terminal · ooda`;
  open();
}

function open() {
  const terminal = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open(document.getElementById("screen"));
  fit.fit();
  terminal.focus();

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const path = `/api/orgs/${encodeURIComponent(org)}/projects/${encodeURIComponent(project)}/terminal`;
  const socket = new WebSocket(`${scheme}//${location.host}${path}`, ["ooda.terminal.v1", `ooda.bearer.${session.token}`]);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const resize = () => {
    fit.fit();
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "resize", cols: terminal.cols, rows: terminal.rows }));
    }
  };

  socket.addEventListener("open", () => {
    say("Connected");
    resize();
  });
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.type === "closed") say(`Closed: ${message.reason}`);
      return;
    }
    terminal.write(new Uint8Array(event.data));
  });
  socket.addEventListener("close", (event) => {
    if (!status.textContent.startsWith("Closed")) {
      say(event.code === 1000 ? "Closed" : "Could not connect: is the project running, and are you still a member?");
    }
    terminal.options.disableStdin = true;
  });
  terminal.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  window.addEventListener("resize", resize);
}
