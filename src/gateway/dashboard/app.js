// The ooda dashboard: hash routes (#/…, so tokens in links never reach a server), the session,
// the organisation switcher, and the live project list shared by the views.

import { render } from "./vendor/preact.js";
import { useCallback, useEffect, useRef, useState } from "./vendor/hooks.js";
import {
  api,
  clearSession,
  describeError,
  endSession,
  getSession,
  onSessionEnded,
  rememberedOrg,
  rememberOrg,
  seg,
} from "./api.js";
import { followProjects } from "./events.js";
import { CreateProject } from "./create.js";
import { Members } from "./members.js";
import { announceChange, ProjectDetail, ProjectList, projectsHash } from "./projects.js";
import { AcceptInvite, SignIn } from "./signin.js";
import { announce, ConfirmDialog, html, LiveRegions, toast } from "./ui.js";

// ---- Routes ---------------------------------------------------------------------------------

function parseRoute(hash) {
  const [path] = hash.replace(/^#/, "").split("?");
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    return { view: "not-found" };
  }
  const [first, org, section, name] = parts;
  if (!first) return { view: "home" };
  if (first === "signin") return { view: "signin" };
  if (first === "account") return { view: "account" };
  if (first === "invite") return { view: "invite", token: parts[1] || "" };
  if (first === "orgs" && org) {
    if (!section || (section === "projects" && !name)) return { view: "projects", org };
    if (section === "projects" && name && parts.length === 4) return { view: "project", org, name };
    if (section === "new-project") return { view: "new-project", org };
    if (section === "members") return { view: "members", org };
  }
  return { view: "not-found" };
}

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const onChange = () => setHash(location.hash);
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return [hash, parseRoute(hash)];
}

/** Goes to a route of this page (a hash change: never a reload). */
function navigate(hash, { replace = false } = {}) {
  if (location.hash === hash) return;
  if (replace) location.replace(hash);
  else location.hash = hash;
}

const membersHash = (org) => `#/orgs/${seg(org)}/members`;

// ---- Live projects --------------------------------------------------------------------------

/** The organisation's projects from the event stream, shared by the list and the project page. */
function useLiveProjects(org, onGone) {
  const [live, setLive] = useState({ org: null, projects: null, connection: "connecting" });
  const known = useRef(new Map());
  const loaded = useRef(false);
  const publish = useCallback(() => {
    const projects = [...known.current.values()].sort((a, b) => a.name.localeCompare(b.name));
    setLive((state) => ({ ...state, projects }));
  }, []);

  useEffect(() => {
    if (!org) return undefined;
    known.current = new Map();
    loaded.current = false;
    setLive({ org, projects: null, connection: "connecting" });
    let lastConnection = "connecting";
    return followProjects(org, {
      snapshot(projects) {
        known.current = new Map(projects.map((p) => [p.name, p]));
        loaded.current = true;
        publish();
      },
      project(project) {
        const before = known.current.get(project.name);
        known.current.set(project.name, project);
        announceChange(before, project);
        publish();
      },
      deleted(name) {
        if (known.current.delete(name)) {
          announce(`Project ${name} was deleted.`);
          publish();
        }
      },
      ended(reason) {
        endSession(reason);
      },
      status(connection) {
        if (connection === "gone") onGone();
        if (connection === lastConnection) return;
        if (connection === "reconnecting") announce("Live updates interrupted; reconnecting.");
        if (connection === "live" && lastConnection === "reconnecting") announce("Live updates are back.");
        lastConnection = connection;
        setLive((state) => ({ ...state, connection }));
      },
    });
  }, [org, publish, onGone]);

  // A project just created, shown before the stream brings it. Only ever a project the stream
  // has not shown yet: an API answer can arrive after newer events (summaries carry no version
  // to order them by), and must not put an older state back on screen.
  const upsert = useCallback(
    (project) => {
      if (!project?.name || !loaded.current || known.current.has(project.name)) return;
      known.current.set(project.name, project);
      publish();
    },
    [publish],
  );
  return [live.org === org ? live : { org, projects: null, connection: "connecting" }, upsert];
}

// ---- The page -------------------------------------------------------------------------------

// A sign-out this tab asked for: the stream's `ended` that follows is not news.
let signingOut = false;

function App() {
  const [hash, route] = useRoute();
  const [session, setSession] = useState(getSession);
  const [me, setMe] = useState(null);
  const [meError, setMeError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [confirmingEverywhere, setConfirmingEverywhere] = useState(false);

  useEffect(() => {
    onSessionEnded((reason) => {
      setSession(null);
      setMe(null);
      if (!signingOut) setNotice(`You were signed out. ${describeError(new Error(reason || "your session has ended"))}`);
    });
  }, []);

  const refreshMe = useCallback(async () => {
    try {
      setMe(await api("/api/me"));
      setMeError(null);
    } catch (error) {
      // 401 already went to the sign-in page.
      if (error.status !== 401) setMeError(error);
    }
  }, []);
  useEffect(() => {
    if (session) refreshMe();
  }, [session, refreshMe]);

  const organisations = me?.organisations || [];
  const membership = organisations.find((m) => m.org === route.org);
  const defaultOrg =
    (organisations.some((m) => m.org === rememberedOrg()) && rememberedOrg()) || organisations[0]?.org || null;
  const org = route.org && membership ? route.org : null;
  const currentOrg = org || defaultOrg;
  const isAdmin = membership?.role === "admin";
  // A stream refused with 404: the membership changed, so /api/me is asked again.
  const [live, upsert] = useLiveProjects(session && me ? org : null, refreshMe);

  useEffect(() => {
    if (org) rememberOrg(org);
  }, [org]);

  // Signed in with nowhere in particular to go: the remembered (or first) organisation's projects.
  useEffect(() => {
    if (session && me && ["home", "signin"].includes(route.view) && defaultOrg) {
      navigate(projectsHash(defaultOrg), { replace: true });
    }
  }, [session, me, route.view, defaultOrg]);

  // Each new view: its heading takes focus (screen readers hear where they are) and names the tab.
  const firstRender = useRef(true);
  useEffect(() => {
    document.title = titleOf(route, org) + " · ooda";
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    setTimeout(() => document.querySelector("main h1")?.focus(), 0);
  }, [hash, Boolean(session), Boolean(me)]);

  const signedIn = (login, organisation) => {
    setNotice(null);
    signingOut = false;
    setSession(getSession());
    setMe({ email: login.email, organisations: login.organisations || [] });
    if (organisation) navigate(projectsHash(organisation));
  };

  /** Forgets this tab's session (tokens cannot be revoked one by one; see sign-out-everywhere). */
  const signOut = (message = "You have signed out.", { stay = false } = {}) => {
    signingOut = true;
    clearSession();
    setSession(null);
    setMe(null);
    setNotice(message);
    if (!stay) navigate("#/signin");
  };

  const signOutEverywhere = async () => {
    signingOut = true;
    try {
      await api("/api/auth/sign-out-everywhere", { method: "POST" });
    } catch (error) {
      signingOut = false;
      throw error;
    }
    signOut("You have signed out on every device.");
  };

  let content;
  if (!session) {
    content =
      route.view === "invite"
        ? html`<${AcceptInvite} token=${route.token} onSignedIn=${signedIn} />`
        : html`<${SignIn} notice=${notice} onSignedIn=${signedIn} />`;
    return html`<${Shell} signedOut=${true}>${content}<//>`;
  }
  if (!me) {
    content = meError
      ? html`<h1 tabindex="-1">Something went wrong</h1><p class="form-error">${describeError(meError)}</p>`
      : html`<h1 tabindex="-1" class="visually-hidden">Loading</h1><p class="muted loading">Loading…</p>`;
    return html`<${Shell} signedOut=${true}>${content}<//>`;
  }

  if (route.view === "invite") {
    content = html`<${AcceptInvite}
      token=${route.token}
      session=${session}
      onJoined=${async (organisation) => {
        // /api/me answers from the gateway's caches, which may not have the new membership yet.
        for (let attempt = 1; attempt <= 10; attempt++) {
          const answer = await api("/api/me");
          setMe(answer);
          if (answer.organisations?.some((m) => m.org === organisation)) break;
          await new Promise((resolve) => setTimeout(resolve, 400));
        }
        toast(`You joined ${organisation}.`);
        navigate(projectsHash(organisation));
      }}
      onSignOut=${() => signOut("Signed out. Accept the invitation with the other account.", { stay: true })}
    />`;
    return html`<${Shell} signedOut=${true}>${content}<//>`;
  }

  if (route.org && !membership) {
    content = html`
      <h1 tabindex="-1">Organisation not found</h1>
      <p>You are not a member of an organisation named ${route.org}.</p>
      ${defaultOrg && html`<p><a href=${projectsHash(defaultOrg)}>Go to ${defaultOrg}</a></p>`}
    `;
  } else if (route.view === "projects") {
    content = html`<${ProjectList} org=${org} live=${live} />`;
  } else if (route.view === "project") {
    content = html`<${ProjectDetail} org=${org} name=${route.name} live=${live} isAdmin=${isAdmin} navigate=${navigate} />`;
  } else if (route.view === "new-project") {
    content = html`<${CreateProject} org=${org} upsert=${upsert} navigate=${navigate} />`;
  } else if (route.view === "members") {
    content = html`<${Members} org=${org} isAdmin=${isAdmin} me=${me} refreshMe=${refreshMe} />`;
  } else if (route.view === "account") {
    content = html`<${Account} me=${me} onSignOut=${() => signOut()} onSignOutEverywhere=${() => setConfirmingEverywhere(true)} />`;
  } else if (["home", "signin"].includes(route.view) && !defaultOrg) {
    content = html`
      <h1 tabindex="-1">No organisation yet</h1>
      <p>Your account is not a member of any organisation. Ask an organisation's admin for an invitation.</p>
    `;
  } else if (["home", "signin"].includes(route.view)) {
    content = html`<p class="muted loading">Loading…</p>`;
  } else {
    content = html`
      <h1 tabindex="-1">Page not found</h1>
      <p>There is nothing at this address.${currentOrg && html` <a href=${projectsHash(currentOrg)}>Go to the projects</a>.`}</p>
    `;
  }

  return html`
    <${Shell}>
      <${Header} me=${me} org=${currentOrg} route=${route} onSignOut=${() => signOut()} />
      <main id="main" tabindex="-1">${content}</main>
      ${confirmingEverywhere &&
      html`
        <${ConfirmDialog}
          title="Sign out everywhere?"
          confirmLabel="Sign out everywhere"
          onConfirm=${signOutEverywhere}
          onClose=${() => setConfirmingEverywhere(false)}
        >
          <p>Every session of your sign-in ends, on this device and all others. You will sign in again with your password.</p>
        <//>
      `}
    <//>
  `;
}

/** The page's frame. Signed out (and while loading) there is only the brand above one card. */
function Shell({ signedOut = false, children }) {
  return html`
    <a class="skip-link" href="#main" onClick=${skipToMain}>Skip to content</a>
    ${signedOut
      ? html`
          <header class="topbar topbar-plain"><span class="brand">ooda</span></header>
          <main id="main" tabindex="-1" class="main-narrow">${children}</main>
        `
      : children}
    <${LiveRegions} />
  `;
}

// A plain #main link would be taken for a route.
function skipToMain(event) {
  event.preventDefault();
  document.getElementById("main")?.focus();
}

function Header({ me, org, route, onSignOut }) {
  const organisations = me.organisations;
  const current = (view) => (route.view === view ? "page" : undefined);
  return html`
    <header class="topbar">
      <a class="brand" href=${org ? projectsHash(org) : "#/"}>ooda</a>
      ${organisations.length > 1
        ? html`<${OrgSwitcher} key=${org} org=${org} organisations=${organisations} />`
        : org && html`<span class="org-name" title="Organisation">${org}</span>`}
      ${org &&
      html`
        <nav aria-label="Main" class="main-nav">
          <a href=${projectsHash(org)} aria-current=${current("projects") || current("project") || current("new-project")}>Projects</a>
          <a href=${membersHash(org)} aria-current=${current("members")}>Members</a>
        </nav>
      `}
      <div class="account-menu">
        <a href="#/account" class="account-link" aria-current=${current("account")}>
          <span class="visually-hidden">Account: </span>${me.email}
        </a>
        <button type="button" class="button button-small" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
  `;
}

/**
 * The organisation switcher: a disclosure with a link per organisation (remembered per tab by
 * the route it leads to). Links rather than a <select>, so moving through the choices with the
 * keyboard does not switch on every arrow key. Escape, or focus leaving it, closes it.
 */
function OrgSwitcher({ org, organisations }) {
  const ref = useRef();
  const close = () => {
    if (ref.current) ref.current.open = false;
  };
  return html`
    <details
      class="org-menu"
      ref=${ref}
      onKeyDown=${(event) => {
        if (event.key === "Escape" && ref.current?.open) {
          close();
          ref.current.querySelector("summary").focus();
        }
      }}
      onFocusOut=${(event) => {
        // Also fired while the menu is being replaced (a new organisation): then ref is empty.
        if (ref.current && !ref.current.contains(event.relatedTarget)) close();
      }}
    >
      <summary><span class="visually-hidden">Organisation: </span>${org || "Organisations"}</summary>
      <ul class="org-menu-list" aria-label="Organisations">
        ${organisations.map(
          (m) => html`<li>
            <a href=${projectsHash(m.org)} aria-current=${m.org === org ? "true" : undefined} onClick=${close}>
              ${m.org} <span class="muted-on-dark">${m.role}</span>
            </a>
          </li>`,
        )}
      </ul>
    </details>
  `;
}

function Account({ me, onSignOut, onSignOutEverywhere }) {
  return html`
    <h1 tabindex="-1">Account</h1>
    <section class="card" aria-labelledby="account-heading">
      <h2 id="account-heading">${me.email}</h2>
      <h3>Organisations</h3>
      <ul class="plain-list">
        ${me.organisations.map(
          (m) => html`<li><a href=${projectsHash(m.org)}>${m.org}</a> <span class="muted">· ${m.role}</span></li>`,
        )}
      </ul>
    </section>
    <section class="card" aria-labelledby="sessions-heading">
      <h2 id="sessions-heading">Sessions</h2>
      <p>Signing out forgets the session in this tab. Signing out everywhere also ends the sessions on your other devices and tabs.</p>
      <div class="actions">
        <button type="button" class="button" onClick=${onSignOut}>Sign out</button>
        <button type="button" class="button button-danger" onClick=${onSignOutEverywhere}>Sign out everywhere</button>
      </div>
    </section>
  `;
}

function titleOf(route, org) {
  switch (route.view) {
    case "projects":
      return `Projects · ${org || route.org}`;
    case "project":
      return `${route.name} · ${route.org}`;
    case "new-project":
      return `New project · ${route.org}`;
    case "members":
      return `Members · ${route.org}`;
    case "invite":
      return "Accept the invitation";
    case "account":
      return "Account";
    default:
      return getSession() ? "Dashboard" : "Sign in";
  }
}

render(html`<${App} />`, document.getElementById("app"));
