// Signing in without the password leaving the browser (README "Passwords"): the gateway says how
// to derive a key from the password, the browser derives it with WebCrypto, and only the key is
// sent. The dashboard refuses weaker derivations than ooda's own, so a rogue gateway cannot talk it
// into one.

import { api, saveSession } from "./api.js";

const MIN_ITERATIONS = 600000;
// A gateway asking for far more would only freeze the tab.
const MAX_ITERATIONS = 10000000;
export const MIN_PASSWORD_BYTES = 12;
export const MAX_PASSWORD_BYTES = 1024;

const utf8 = new TextEncoder();

export function normaliseEmail(email) {
  return email.trim().toLowerCase();
}

export function passwordBytes(password) {
  return utf8.encode(password).length;
}

/** authKey = PBKDF2-HMAC-SHA256(password, salt, iterations, 256 bits), in standard base64. */
export async function deriveAuthKey(email, password) {
  const params = await api("/api/auth/prelogin", { method: "POST", json: { email }, auth: false });
  if (params?.kdf !== "pbkdf2-sha256") {
    throw new Error(`The gateway asked for an unknown key derivation (${params?.kdf}); not signing in.`);
  }
  const iterations = params.iterations;
  if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) {
    throw new Error(`The gateway asked for ${iterations} PBKDF2 rounds (at least ${MIN_ITERATIONS} are needed); not signing in.`);
  }
  const salt = base64ToBytes(params.salt);
  const key = await crypto.subtle.importKey("raw", utf8.encode(password), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, 256);
  return bytesToBase64(new Uint8Array(bits));
}

/** Signs in with an auth key; keeps the session in this tab and returns the login answer. */
export async function logIn(email, authKey) {
  const answer = await api("/api/auth/login", { method: "POST", json: { email, authKey }, auth: false });
  saveSession({ token: answer.token, expiresAt: answer.expiresAt, email: answer.email || email });
  return answer;
}

export async function signIn(rawEmail, password) {
  const email = normaliseEmail(rawEmail);
  return logIn(email, await deriveAuthKey(email, password));
}

/**
 * Redeems an invite without a session: the password the invitee chose becomes (or opens) their
 * credential, then they are signed in with it. Returns {organisation, login}.
 */
export async function acceptInvite(token, rawEmail, password) {
  const email = normaliseEmail(rawEmail);
  const authKey = await deriveAuthKey(email, password);
  const accepted = await api("/api/auth/accept-invite", { method: "POST", json: { token, authKey }, auth: false });
  if (accepted.email && accepted.email !== email) {
    // The key was derived for the email typed, so it cannot open the invited account.
    throw new Error(
      `This invitation was for ${accepted.email}, not ${email}, so the password cannot be used with it. Ask for a new invitation.`,
    );
  }
  const login = await logIn(email, authKey);
  return { organisation: accepted.organisation, login };
}

/** Redeems an invite for the account signed in in this tab. */
export function acceptInviteSignedIn(token) {
  return api("/api/auth/accept-invite", { method: "POST", json: { token } });
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function bytesToBase64(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}
