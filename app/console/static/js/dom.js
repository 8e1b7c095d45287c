// Small DOM helpers: elements built from data (never from HTML strings, so API text can't inject markup).

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, dataset: { status } }, status.replace("_", " "));
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { hour12: false });
}

export function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 0) return `in ${duration(-seconds)}`;
  return `${duration(seconds)} ago`;
}

export function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)}h`;
  return `${(seconds / 86400).toFixed(1)}d`;
}

export function cost(value) {
  if (value === null || value === undefined) return "—";
  return `$${Number(value).toFixed(value >= 1 ? 2 : 6)}`;
}

export function num(value) {
  return Number(value || 0).toLocaleString();
}

export function percent(value) {
  return `${(Number(value || 0) * 100).toFixed(1)}%`;
}

export function compact(value) {
  const text = JSON.stringify(value);
  return text === undefined ? "—" : text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

// A collapsible JSON value: the summary names it and gives its size, the body is pretty-printed.
export function jsonView(label, value, { open = false } = {}) {
  const text = JSON.stringify(value, null, 2) ?? "null";
  const size = text.length > 1024 ? `${(text.length / 1024).toFixed(1)} KiB` : `${text.length} B`;
  return h("details", { class: "json", open, dataset: { json: label } },
    h("summary", {}, `${label} (${size})`), h("pre", {}, text));
}

export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(([, value]) => value !== undefined).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// A bar of value against max: a load or a budget turns red when full; a progress bar (`progress`) does not.
export function meter(value, max, { wide = false, label, progress = false } = {}) {
  const share = max > 0 ? Math.min(value / max, 1) : 0;
  const bar = h("span");
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  const full = !progress && max > 0 && value >= max;
  const el = h("span", { class: `meter${wide ? " wide" : ""}${full ? " over" : ""}${progress ? " progress" : ""}`,
    role: "meter", "aria-valuenow": value, "aria-valuemax": max, title: label }, bar);
  return el;
}

// A problem+json error as the user should read it: the detail, then each field at fault.
export function errorBox(error) {
  const problem = error?.problem || {};
  const fields = Array.isArray(problem.errors) ? problem.errors : [];
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, problem.title || "Error"), ": ", problem.detail || error?.message || String(error),
    fields.length ? h("ul", {}, fields.map((f) => h("li", {}, h("code", {}, f.field), " ", f.message))) : null);
}

// A destructive action asks twice: the first click arms the button, the second (within 4 s) acts.
export function confirmButton(label, action, { danger = true, name } = {}) {
  let timer = null;
  const button = h("button", { type: "button", class: danger ? "danger" : "", dataset: { action: name || label } },
    label);
  button.addEventListener("click", async () => {
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.textContent = `Confirm ${label.toLowerCase()}`;
      timer = setTimeout(() => { button.classList.remove("armed"); button.textContent = label; }, 4000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      button.classList.remove("armed");
      button.textContent = label;
    }
  });
  return button;
}

export function table(columns, rows, { empty = "Nothing here." } = {}) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))));
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([optionValue, text]) =>
    h("option", { value: optionValue, selected: optionValue === (value || "") }, text)));
}
