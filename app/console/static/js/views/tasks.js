// Tasks: a live list of the newest tasks the key may see, filtered by status, type, agent or session.

import { ago, badge, h, link, replace, select, shortId, table } from "../dom.js";
import { filterForm, pagedList } from "../paged.js";

export const STATUSES = ["pending", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out"];

export function render(root, { query }) {
  const list = h("section", { id: "tasks" });
  replace(root,
    h("h1", {}, "Tasks"),
    filterForm("tasks", [
      ["Status", select("status", [["", "any"], ...STATUSES.map((s) => [s, s])], query.status)],
      ["Type", h("input", { name: "type", value: query.type || "", placeholder: "any" })],
      ["Agent", h("input", { name: "agent_id", value: query.agent_id || "", placeholder: "any" })],
      ["Session", h("input", { name: "session_id", value: query.session_id || "", placeholder: "session id",
        size: 36 })],
    ], query),
    list);
  const paged = pagedList(list, {
    name: "tasks",
    path: "/tasks",
    query: { status: query.status, type: query.type, agent_id: query.agent_id, session_id: query.session_id },
    limit: 50,
    render: (body, items) => replace(body, table([
      { title: "Task" }, { title: "Type" }, { title: "Status" }, { title: "Agent" }, { title: "Attempt", num: true },
      { title: "Priority", num: true }, { title: "Session" }, { title: "Created" }, { title: "Finished" },
    ], items.map((t) => h("tr", { dataset: { taskId: t.id, status: t.status } },
      h("td", {}, link(`#/tasks/${t.id}`, h("code", {}, shortId(t.id)))),
      h("td", {}, t.type),
      h("td", {}, badge(t.status)),
      h("td", {}, t.agent_id ? link(`#/tasks?agent_id=${encodeURIComponent(t.agent_id)}`, t.agent_id) : "—"),
      h("td", { class: "num" }, `${t.attempt}/${t.max_attempts}`),
      h("td", { class: "num" }, t.priority),
      h("td", {}, t.session_id ? link(`#/sessions/${t.session_id}`, h("code", {}, shortId(t.session_id))) : ""),
      h("td", {}, ago(t.created_at)),
      h("td", {}, t.finished_at ? ago(t.finished_at) : ""))),
    { empty: "No tasks match." })),
  });
  return () => paged.stop();
}
