// The ooda dashboard: see README.md "The dashboard".
import { h, render } from "./vendor/preact.js";
import htm from "./vendor/htm.js";

const html = htm.bind(h);
render(html`<main><h1>ooda</h1></main>`, document.getElementById("app"));
