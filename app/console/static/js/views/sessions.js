// Sessions: a live list of collaboration sessions, newest first.

import { ago, badge, cost, h, link, meter, replace, select, shortId, table } from "../dom.js";
import { filterForm, pagedList } from "../paged.js";

export function render(root, { query }) {
  const list = h("section", { id: "sessions" });
  replace(root,
    h("h1", {}, "Sessions"),
    filterForm("sessions", [
      ["Status", select("status", [["", "any"], ...["running", "succeeded", "failed", "cancelled"].map((s) => [s, s])],
        query.status)],
      ["Strategy", select("strategy", [["", "any"], ...["map_reduce", "consensus", "chain"].map((s) => [s, s])],
        query.strategy)],
    ], query),
    list);
  const paged = pagedList(list, {
    name: "sessions",
    path: "/sessions",
    query: { status: query.status, strategy: query.strategy },
    limit: 50,
    render: (body, items) => replace(body, table([
      { title: "Session" }, { title: "Strategy" }, { title: "Status" }, { title: "Task type" },
      { title: "Round", num: true }, { title: "Participants", num: true }, { title: "Cost / budget" },
      { title: "Created" },
    ], items.map((s) => h("tr", { dataset: { sessionId: s.id, status: s.status } },
      h("td", {}, link(`#/sessions/${s.id}`, h("code", {}, shortId(s.id)))),
      h("td", {}, s.strategy),
      h("td", {}, badge(s.status)),
      h("td", {}, s.task.type),
      h("td", { class: "num" }, s.round),
      h("td", { class: "num" }, s.participants.length),
      h("td", {}, s.budget ? meter(s.cost, s.budget) : null, `${cost(s.cost)}${s.budget ? ` / ${cost(s.budget)}` : ""}`),
      h("td", {}, ago(s.created_at)))),
    { empty: "No sessions match." })),
  });
  return () => paged.stop();
}
