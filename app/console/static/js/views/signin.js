// Sign-in: the API key is checked against the server before it is kept (in sessionStorage: this tab only).

import { api, auth } from "../api.js";
import { h, replace } from "../dom.js";

export function messageFor(error) {
  if (error?.status === 401) {
    return "That API key was not accepted: it is not a valid key, or it has been revoked. Check the key and try again.";
  }
  if (error?.status === 0) return "The server could not be reached. Check your connection and try again.";
  return `Sign-in failed: ${error?.message || error}`;
}

export function render(root, { onSignedIn, message }) {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", placeholder: "ap_…",
    required: true, "aria-label": "API key" });
  const status = h("div", { id: "signin-message" }, message ? h("div", { class: "error-box", role: "alert" }, message) : null);
  const form = h("form", { class: "panel signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an Agentplane API key. It is kept in this tab's session storage only, and " +
      "the console shows what this key may do."),
    h("label", {}, "API key", input),
    h("button", { type: "submit" }, "Sign in"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    auth.set(key);
    replace(status, h("span", { class: "muted" }, "Checking the key…"));
    try {
      const me = await api("/me");
      onSignedIn(me);
    } catch (error) {
      auth.clear();
      replace(status, h("div", { class: "error-box", role: "alert" }, messageFor(error)));
      input.select();
    }
  });
  replace(root, form);
  input.focus();
  return null;
}
