// A live, cursor-paginated list: fetches only the page shown (with `limit`) and refreshes it in place.
// Forward pages follow `next_cursor`; going back replays the cursors seen, so no page is ever counted.

import { ApiError, api } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { poll } from "./live.js";

export function pagedList(root, { name, path, query, limit = 50, interval = 2000, enrich, render }) {
  const cursors = [null];
  let page = 0;
  let last = null;
  const body = h("div", { class: "list-body" }, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  root.append(body, pager);

  const poller = poll(name, interval, async () => {
    const shown = page;
    let data;
    let extra;
    try {
      data = await api(path, { query: { ...query, limit, cursor: cursors[shown] } });
      extra = enrich ? await enrich(data.items) : undefined;
    } catch (error) {
      // A refused filter will be refused again: say why once and stop asking.
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) {
        replace(body, errorBox(error));
        poller.stop();
        return;
      }
      throw error;
    }
    if (shown !== page) return; // the user turned the page meanwhile: this answer is for the old one
    const json = JSON.stringify([data, extra]);
    if (json === last) return; // unchanged: keep the DOM (and whatever the user is pointing at) as it is
    last = json;
    cursors[page + 1] = data.next_cursor;
    render(body, data.items, extra);
    renderPager(data);
  });

  function go(delta) {
    page += delta;
    last = null;
    poller.now();
  }

  function renderPager(data) {
    replace(pager,
      h("button", { type: "button", disabled: page === 0, onclick: () => go(-1) }, "← Newer"),
      h("span", { class: "muted" }, `page ${page + 1} · ${data.items.length} shown`),
      h("button", { type: "button", disabled: !data.next_cursor, onclick: () => go(1) }, "Older →"));
  }

  return { stop: () => poller.stop(), refresh: () => { last = null; poller.now(); } };
}

// The filters form of a list view: its values live in the URL hash, so a filtered view is a link.
export function filterForm(section, fields, query) {
  const form = h("form", { class: "filters", dataset: { filters: section } },
    fields.map(([label, control]) => h("label", {}, label, control)),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", onclick: () => { location.hash = `#/${section}`; } }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (String(value).trim()) params.set(key, String(value).trim());
    location.hash = `#/${section}${params.size ? `?${params}` : ""}`;
  });
  return form;
}
