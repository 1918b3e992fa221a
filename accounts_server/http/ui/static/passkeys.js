// The passkey ceremonies of the hosted pages: the one thing a page cannot do without a script.
// The browser's own WebAuthn JSON helpers turn the server's options into a ceremony and the
// credential back into JSON; tokens never pass through here (the server sets cookies). Each
// request carries the page's CSRF token in X-CSRF-Token. Loaded from 'self' only (the CSP).
"use strict";
(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
  const root = meta("ui-root");
  const supported =
    typeof PublicKeyCredential === "function" &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";

  async function post(path, body) {
    const response = await fetch(root + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": meta("csrf") },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({ message: "The server's answer was unreadable." }));
    if (!response.ok) throw new Error(answer.message || `Refused (${response.status})`);
    return answer;
  }

  function failed(error) {
    const shown = document.getElementById("passkey-error");
    // A cancelled or timed-out prompt is the person's choice, said plainly.
    shown.textContent = error?.name === "NotAllowedError" ? "The passkey prompt was closed or timed out." : String(error?.message ?? error);
    shown.hidden = false;
  }

  function offer(id, button, ceremony) {
    const section = document.getElementById(id);
    if (!section || !supported) return;
    section.hidden = false;
    const pressed = document.getElementById(button);
    pressed.addEventListener("click", async () => {
      pressed.disabled = true;
      document.getElementById("passkey-error").hidden = true;
      try {
        location.assign((await ceremony()).location);
      } catch (error) {
        failed(error);
        pressed.disabled = false;
      }
    });
  }

  offer("passkey-signin", "passkey-button", async () => {
    const options = await post("/passkeys/login/options", {});
    const assertion = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
    const returnTo = new URLSearchParams(location.search).get("return_to");
    return post("/passkeys/login", { webauthn: assertion.toJSON(), returnTo });
  });

  offer("passkey-add", "passkey-add-button", async () => {
    const options = await post("/account/passkeys/options", {});
    const credential = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
    const name = document.getElementById("passkey-name").value.trim() || "Passkey";
    return post("/account/passkeys", { webauthn: credential.toJSON(), name });
  });
})();
