// Signed-out pages: signing in, and accepting an invitation (choosing a password).

import { useEffect, useState } from "./vendor/hooks.js";
import { api, describeError } from "./api.js";
import {
  acceptInvite,
  acceptInviteSignedIn,
  MAX_PASSWORD_BYTES,
  MIN_PASSWORD_BYTES,
  passwordBytes,
  signIn,
} from "./auth.js";
import { html, TextField } from "./ui.js";

const EMAIL_SHAPE = /^[^\s@]+@[^\s@]+$/;

/** The frame of the signed-out pages: the brand and one card. */
function Card({ title, children }) {
  return html`
    <div class="card card-narrow">
      <h1 tabindex="-1">${title}</h1>
      ${children}
    </div>
  `;
}

export function SignIn({ notice, onSignedIn }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [showPassword, setShowPassword] = useState(false);
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    const found = {};
    if (!EMAIL_SHAPE.test(email.trim())) found.email = "Enter your email address, such as name@example.com.";
    if (!password) found.password = "Enter your password.";
    setErrors(found);
    setFailure(null);
    if (Object.keys(found).length) {
      document.getElementById(found.email ? "f-email" : "f-password")?.focus();
      return;
    }
    setBusy(true);
    try {
      const answer = await signIn(email, password);
      setPassword("");
      onSignedIn(answer);
    } catch (error) {
      setFailure(error.status === 401 ? "Wrong email or password." : describeError(error));
      setBusy(false);
    }
  };

  return html`
    <${Card} title="Sign in to ooda">
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${failure && html`<p class="form-error" role="alert" id="signin-error">${failure}</p>`}
      <form onSubmit=${submit} noValidate aria-describedby=${failure ? "signin-error" : undefined}>
        <${TextField}
          path="email"
          label="Email"
          type="email"
          autocomplete="username"
          spellcheck="false"
          value=${email}
          onInput=${setEmail}
          error=${errors.email}
        />
        <${PasswordField}
          path="password"
          label="Password"
          autocomplete="current-password"
          value=${password}
          onInput=${setPassword}
          error=${errors.password}
          shown=${showPassword}
          onToggle=${() => setShowPassword(!showPassword)}
        />
        <button type="submit" class="button button-primary button-wide" disabled=${busy}>
          ${busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      <p class="hint small">Your password never leaves this browser: only a key derived from it is sent.</p>
    <//>
  `;
}

/** A password input with a Show/Hide button inside its box. */
function PasswordField({ shown, onToggle, ...field }) {
  const toggle = html`
    <button type="button" class="button button-small password-toggle" onClick=${onToggle}>
      ${shown ? "Hide" : "Show"}<span class="visually-hidden"> ${field.label.toLowerCase()}</span>
    </button>
  `;
  return html`<${TextField} ...${field} type=${shown ? "text" : "password"} spellcheck="false" trailing=${toggle} />`;
}

/**
 * #/invite/<token>: join an organisation. Signed out, the invitee chooses a password (the key
 * derived from it for the invited email becomes their credential) and is signed in; signed in,
 * the invitation joins the current account.
 */
export function AcceptInvite({ token, session, onSignedIn, onJoined, onSignOut }) {
  // Whom the invitation is for: the key is derived for that email, so it is asked, not typed.
  const [invited, setInvited] = useState(null);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [showPassword, setShowPassword] = useState(false);
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (!token || session) return;
    api("/api/auth/invite-details", { method: "POST", json: { token }, auth: false }).then(
      (details) => {
        setInvited(details);
        setEmail(details.email);
      },
      (error) => setInvited({ error: describeError(error) }),
    );
  }, [token, session]);

  if (!token) {
    return html`<${Card} title="Invitation not found"><p>This invitation link is incomplete. Ask for a new one.</p><//>`;
  }

  if (session) {
    const join = async () => {
      setBusy(true);
      setFailure(null);
      try {
        const accepted = await acceptInviteSignedIn(token);
        onJoined(accepted.organisation);
      } catch (error) {
        setFailure(describeError(error));
        setBusy(false);
      }
    };
    return html`
      <${Card} title="Accept the invitation">
        <p>You are signed in as <strong>${session.email}</strong>. The invitation will join this account to its organisation.</p>
        ${failure && html`<p class="form-error" role="alert">${failure}</p>`}
        <div class="actions">
          <button type="button" class="button button-primary" onClick=${join} disabled=${busy}>
            ${busy ? "Joining…" : `Join as ${session.email}`}
          </button>
          <button type="button" class="button" onClick=${onSignOut}>Sign out and use another account</button>
        </div>
      <//>
    `;
  }

  const submit = async (event) => {
    event.preventDefault();
    const found = {};
    if (!EMAIL_SHAPE.test(email.trim())) found.email = "Enter the email address the invitation was sent to.";
    const bytes = passwordBytes(password);
    if (bytes < MIN_PASSWORD_BYTES) found.password = `Choose a password of at least ${MIN_PASSWORD_BYTES} characters.`;
    else if (bytes > MAX_PASSWORD_BYTES) found.password = `Choose a password of at most ${MAX_PASSWORD_BYTES} bytes.`;
    if (!found.password && confirm !== password) found.confirm = "The two passwords differ. Type the same password twice.";
    setErrors(found);
    setFailure(null);
    const firstInvalid = ["email", "password", "confirm"].find((key) => found[key]);
    if (firstInvalid) {
      document.getElementById(`f-${firstInvalid}`)?.focus();
      return;
    }
    setBusy(true);
    try {
      const { organisation, login } = await acceptInvite(token, email, password);
      setPassword("");
      setConfirm("");
      onSignedIn(login, organisation);
    } catch (error) {
      setFailure(describeError(error));
      setBusy(false);
    }
  };

  if (!invited) {
    return html`<${Card} title="Accept the invitation"><p class="muted loading">Reading the invitation…</p><//>`;
  }
  if (invited.error) {
    return html`<${Card} title="Invitation not valid"><p class="form-error" role="alert">${invited.error}</p><p>Ask whoever invited you for a new link.</p><//>`;
  }

  return html`
    <${Card} title="Accept the invitation">
      <p>You are invited to <strong>${invited.organisation}</strong>. Choose a password to join. It never leaves this browser: only a key derived from it is sent.</p>
      ${failure && html`<p class="form-error" role="alert" id="invite-error">${failure}</p>`}
      <form onSubmit=${submit} noValidate aria-describedby=${failure ? "invite-error" : undefined}>
        <${TextField}
          path="email"
          label="Email"
          hint="The address the invitation was sent to."
          type="email"
          autocomplete="username"
          spellcheck="false"
          readonly
          value=${email}
          onInput=${setEmail}
          error=${errors.email}
        />
        <${PasswordField}
          path="password"
          label="New password"
          hint=${`At least ${MIN_PASSWORD_BYTES} characters.`}
          autocomplete="new-password"
          value=${password}
          onInput=${setPassword}
          error=${errors.password}
          shown=${showPassword}
          onToggle=${() => setShowPassword(!showPassword)}
        />
        <${TextField}
          path="confirm"
          label="Confirm password"
          type=${showPassword ? "text" : "password"}
          autocomplete="new-password"
          spellcheck="false"
          value=${confirm}
          onInput=${setConfirm}
          error=${errors.confirm}
        />
        <button type="submit" class="button button-primary button-wide" disabled=${busy}>
          ${busy ? "Joining…" : "Accept and sign in"}
        </button>
      </form>
    <//>
  `;
}
