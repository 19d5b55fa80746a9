// Members of an organisation: everyone sees the list; admins invite (the one-time link is shown
// once), change roles and remove members. The gateway keeps the last admin (409), and its
// message is shown as it is.

import { useCallback, useEffect, useState } from "./vendor/hooks.js";
import { api, describeError, orgPath, seg } from "./api.js";
import { normaliseEmail } from "./auth.js";
import { ConfirmDialog, CopyButton, html, TextField, Time, toast } from "./ui.js";

const ROLES = ["member", "admin"];

export function Members({ org, isAdmin, me, refreshMe }) {
  const [members, setMembers] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [removing, setRemoving] = useState(null);
  const [changingOwnRole, setChangingOwnRole] = useState(null);
  const [busyEmail, setBusyEmail] = useState(null);

  /**
   * The members. The gateway answers from its watch cache, which can trail a change it just made:
   * after one, `expect` (a test of the list) says what to wait for, asking again a few times.
   */
  const load = useCallback(
    async (expect = null) => {
      try {
        for (let attempt = 1; ; attempt++) {
          const list = (await api(`${orgPath(org)}/members`)).members || [];
          if (!expect || expect(list) || attempt >= 15) {
            setMembers(list);
            break;
          }
          await new Promise((resolve) => setTimeout(resolve, 400));
        }
        setLoadError(null);
      } catch (error) {
        setLoadError(describeError(error));
      }
    },
    [org],
  );
  useEffect(() => {
    setMembers(null);
    load();
  }, [load]);

  const memberPath = (email) => `${orgPath(org)}/members/${seg(email)}`;

  const changeRole = async (email, role) => {
    setBusyEmail(email);
    let expect = null;
    try {
      await api(memberPath(email), { method: "PUT", json: { role } });
      toast(`${email} is now ${article(role)} ${role}.`);
      expect = (list) => list.some((m) => m.email === email && m.role === role);
      if (email === me.email) await refreshMe();
    } catch (error) {
      toast(`The role of ${email} was not changed. ${describeError(error)}`, "error");
    } finally {
      // On a refusal too: the select goes back to the role the gateway has.
      await load(expect);
      setBusyEmail(null);
    }
  };

  const remove = async (email) => {
    await api(memberPath(email), { method: "DELETE" });
    toast(`${email} was removed from ${org}.`);
    if (email === me.email) await refreshMe();
    await load((list) => !list.some((m) => m.email === email));
  };

  return html`
    <div class="page-head">
      <div>
        <h1 tabindex="-1">Members</h1>
        <p class="muted">People who can use the projects of <strong>${org}</strong>.${isAdmin ? "" : " Only admins can invite or change members."}</p>
      </div>
    </div>
    ${isAdmin && html`<${InviteForm} org=${org} onInvited=${(email) => load((list) => list.some((m) => m.email === email))} />`}
    <section class="card" aria-labelledby="members-heading">
      <h2 id="members-heading">Everyone in ${org}</h2>
      ${loadError && html`<p class="form-error">${loadError}</p>`}
      ${members === null && !loadError && html`<p class="muted">Loading members…</p>`}
      ${members &&
      html`
        <table class="table members-table">
          <thead>
            <tr>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              ${isAdmin && html`<th scope="col"><span class="visually-hidden">Actions</span></th>`}
            </tr>
          </thead>
          <tbody>
            ${members.map(
              (member) => html`
                <tr key=${member.email} data-member=${member.email}>
                  <th scope="row" data-label="Email" class="break">
                    ${member.email} ${member.email === me.email && html`<span class="muted">(you)</span>`}
                  </th>
                  <td data-label="Role">
                    ${isAdmin
                      ? html`
                          <label class="visually-hidden" for=${`role-${member.email}`}>Role of ${member.email}</label>
                          <select
                            id=${`role-${member.email}`}
                            class="role-select"
                            value=${member.role}
                            disabled=${busyEmail === member.email}
                            onChange=${(event) => {
                              const role = event.currentTarget.value;
                              // Demoting yourself cannot be undone by yourself: ask first.
                              if (member.email === me.email) {
                                event.currentTarget.value = member.role;
                                setChangingOwnRole(role);
                              } else {
                                changeRole(member.email, role);
                              }
                            }}
                          >
                            ${ROLES.map((role) => html`<option value=${role}>${capitalise(role)}</option>`)}
                          </select>
                        `
                      : html`<span class=${`badge ${member.role === "admin" ? "badge-info" : "badge-neutral"}`}>${capitalise(member.role)}</span>`}
                  </td>
                  ${isAdmin &&
                  html`<td class="row-actions">
                    <button type="button" class="button button-small button-danger-quiet" onClick=${() => setRemoving(member.email)}>
                      Remove<span class="visually-hidden"> ${member.email}</span>
                    </button>
                  </td>`}
                </tr>
              `,
            )}
          </tbody>
        </table>
      `}
    </section>
    ${removing &&
    html`
      <${ConfirmDialog}
        title=${`Remove ${removing}?`}
        confirmLabel="Remove member"
        onConfirm=${() => remove(removing)}
        onClose=${() => setRemoving(null)}
      >
        <p>
          <strong>${removing}</strong> will lose access to ${org} and its projects at once.
          ${removing === me.email && " That is you: you will lose access too."}
        </p>
      <//>
    `}
    ${changingOwnRole &&
    html`
      <${ConfirmDialog}
        title="Change your own role?"
        confirmLabel=${`Make me ${article(changingOwnRole)} ${changingOwnRole}`}
        onConfirm=${() => changeRole(me.email, changingOwnRole)}
        onClose=${() => setChangingOwnRole(null)}
        danger=${changingOwnRole !== "admin"}
      >
        <p>You will be ${article(changingOwnRole)} ${changingOwnRole} of ${org}. Only another admin can give admin rights back.</p>
      <//>
    `}
  `;
}

function InviteForm({ org, onInvited }) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState("member");
  const [error, setError] = useState(null);
  const [failure, setFailure] = useState(null);
  const [busy, setBusy] = useState(false);
  const [invite, setInvite] = useState(null);

  const submit = async (event) => {
    event.preventDefault();
    const address = normaliseEmail(email);
    if (!/^[^\s@]+@[^\s@]+$/.test(address)) {
      setError("Enter the email address of the person to invite.");
      document.getElementById("f-invite-email")?.focus();
      return;
    }
    setError(null);
    setFailure(null);
    setBusy(true);
    try {
      const answer = await api(`${orgPath(org)}/invites`, { method: "POST", json: { email: address, role } });
      // The fragment never reaches a server.
      const link = `${location.origin}/#/invite/${encodeURIComponent(answer.inviteToken)}`;
      setInvite({ ...answer, link });
      setEmail("");
      onInvited(answer.email);
      setTimeout(() => document.getElementById("invite-link")?.select(), 0);
    } catch (e) {
      setFailure(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  return html`
    <section class="card" aria-labelledby="invite-heading">
      <h2 id="invite-heading">Invite someone</h2>
      ${invite
        ? html`
            <div class="invite-result" role="status">
              <p>
                <strong>${invite.email}</strong> was added as ${article(invite.role)} ${invite.role}. Send them this link: it works once,
                expires <${Time} iso=${invite.expiresAt} />, and is shown only now.
              </p>
            </div>
            <div class="field">
              <label for="invite-link">Invitation link</label>
              <div class="input-with-button">
                <input id="invite-link" class="mono" type="text" readonly value=${invite.link} onFocus=${(e) => e.currentTarget.select()} />
                <${CopyButton} text=${invite.link} label="Copy link" what="The invitation link" className="button button-primary" />
              </div>
            </div>
            <button type="button" class="button" onClick=${() => setInvite(null)}>Done</button>
          `
        : html`
            ${failure && html`<p class="form-error" role="alert">${failure}</p>`}
            <form class="invite-form" onSubmit=${submit} noValidate>
              <${TextField}
                path="invite-email"
                label="Email"
                type="email"
                autocomplete="off"
                spellcheck="false"
                value=${email}
                onInput=${setEmail}
                error=${error}
              />
              <div class="field">
                <label for="invite-role">Role</label>
                <select id="invite-role" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
                  ${ROLES.map((r) => html`<option value=${r}>${capitalise(r)}</option>`)}
                </select>
              </div>
              <button type="submit" class="button button-primary" disabled=${busy}>${busy ? "Inviting…" : "Create invitation"}</button>
            </form>
          `}
    </section>
  `;
}

const capitalise = (text) => text.charAt(0).toUpperCase() + text.slice(1);
const article = (role) => (role === "admin" ? "an" : "a");
