// The console's shell: sign-in, navigation by URL hash, and one view at a time (each cleans up after itself).

import { api, auth } from "./api.js";
import { h, replace } from "./dom.js";
import * as fleet from "./views/fleet.js";
import * as session from "./views/session.js";
import * as sessions from "./views/sessions.js";
import * as signin from "./views/signin.js";
import * as task from "./views/task.js";
import * as tasks from "./views/tasks.js";
import * as usage from "./views/usage.js";

const SECTIONS = [
  { name: "fleet", title: "Fleet", list: fleet, allowed: () => true },
  { name: "tasks", title: "Tasks", list: tasks, item: task, allowed: (ctx) => ctx.client },
  { name: "sessions", title: "Sessions", list: sessions, item: session, allowed: (ctx) => ctx.client },
  { name: "usage", title: "Usage", list: usage, allowed: (ctx) => ctx.client },
];

const view = document.getElementById("view");
let ctx = null;
let cleanup = null;

function parseHash() {
  const [path, queryString] = (location.hash.replace(/^#/, "") || "/fleet").split("?");
  return {
    parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    query: Object.fromEntries(new URLSearchParams(queryString || "")),
  };
}

// What the key may do, from its scopes: the console shows nothing the key could not do.
function contextOf(me) {
  const scopes = new Set(me.scopes);
  const admin = scopes.has("admin");
  return { me, admin, client: admin || scopes.has("client"), navigate: (hash) => { location.hash = hash; } };
}

function renderChrome() {
  const { parts } = parseHash();
  const nav = document.getElementById("nav");
  replace(nav, ctx ? SECTIONS.filter((s) => s.allowed(ctx)).map((s) =>
    h("a", { href: `#/${s.name}`, class: parts[0] === s.name ? "current" : "" }, s.title)) : []);
  replace(document.getElementById("who"), ctx ? `${ctx.me.name} · ${ctx.me.scopes.join(", ")}` : "");
  document.getElementById("signout").hidden = !ctx;
}

function route() {
  cleanup?.();
  cleanup = null;
  renderChrome();
  const { parts, query } = parseHash();
  if (!ctx) {
    cleanup = signin.render(view, { onSignedIn: signedIn });
    return;
  }
  const section = SECTIONS.find((s) => s.name === parts[0]);
  if (!section || !section.allowed(ctx)) {
    location.hash = "#/fleet";
    return;
  }
  const module = parts.length > 1 && section.item ? section.item : section.list;
  cleanup = module.render(view, { id: parts[1], query, ctx }) || null;
}

function signedIn(me) {
  ctx = contextOf(me);
  if (!parseHash().parts.length || location.hash === "#/signin") location.hash = "#/fleet";
  route();
}

export function signOut(message) {
  auth.clear();
  ctx = null;
  cleanup?.();
  cleanup = null;
  renderChrome();
  cleanup = signin.render(view, { onSignedIn: signedIn, message });
}

auth.onUnauthorized((error) => {
  if (ctx) signOut(`Signed out: the server no longer accepts this API key (${error.message}).`);
});
document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);

async function start() {
  if (!auth.key) {
    route();
    return;
  }
  try {
    signedIn(await api("/me"));
  } catch (error) {
    signOut(signin.messageFor(error));
  }
}

start();
