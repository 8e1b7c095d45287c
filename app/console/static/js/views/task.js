// A task: its facts, why it waits, its timeline (the SSE event stream), every assignment, payload and result.

import { ApiError, api } from "../api.js";
import {
  ago, badge, confirmButton, cost, errorBox, facts, h, jsonView, link, num, replace, table, when,
} from "../dom.js";
import { poll } from "../live.js";
import { openStream } from "../sse.js";
import { explainWait } from "./waiting.js";

const OPEN = new Set(["pending", "assigned", "running"]);

export function render(root, { id }) {
  const flash = h("div", { class: "flash" });
  const header = h("div", { class: "panel", id: "task" }, h("span", { class: "muted" }, "Loading…"));
  const waiting = h("div", { id: "waiting" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const assignments = h("div", { id: "assignments" });
  const values = h("div", { id: "values" });
  replace(root, h("p", {}, link("#/tasks", "← Tasks")), flash, header, waiting,
    h("div", { class: "grid2" },
      h("section", { class: "panel" }, h("h2", {}, "Timeline"), timeline),
      h("section", { class: "panel" }, h("h2", {}, "Payload and result"), values)),
    h("h2", {}, "Assignments"), assignments);

  let shown = null;
  let stream = null;
  let gone = false;

  async function refresh() {
    let task;
    try {
      task = await api(`/tasks/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 422)) {
        gone = true;
        replace(header, errorBox(error));
        poller.stop();
        return;
      }
      throw error;
    }
    const assigned = await api(`/tasks/${encodeURIComponent(id)}/assignments`);
    renderTask(task);
    renderAssignments(assigned.items);
    const json = JSON.stringify([task.payload, task.result, task.error]);
    if (json !== shown) {
      shown = json;
      replace(values,
        jsonView("payload", task.payload),
        task.result !== null ? jsonView("result", task.result, { open: true }) : null,
        task.error ? jsonView("error", task.error, { open: true }) : null);
    }
    if (task.status === "pending") replace(waiting, await explainWait(task));
    else replace(waiting);
    if (!stream && !gone) startStream();
  }

  function renderTask(task) {
    const actions = OPEN.has(task.status) ? confirmButton("Cancel", async () => {
      try {
        await api(`/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST" });
        replace(flash);
      } catch (error) {
        replace(flash, errorBox(error));
      }
      poller.now();
    }, { name: "cancel" }) : null;
    replace(header,
      h("div", { class: "row" }, h("h1", {}, `Task ${task.type}`), badge(task.status), h("code", {}, task.id),
        h("span", { class: "spacer" }), actions),
      facts([
        ["Capabilities", task.capabilities.join(", ")],
        ["Agent", task.agent_id ? link(`#/tasks?agent_id=${encodeURIComponent(task.agent_id)}`, task.agent_id) : "—"],
        ["Attempt", `${task.attempt} of ${task.max_attempts}`],
        ["Priority", String(task.priority)],
        ["Session", task.session_id ? link(`#/sessions/${task.session_id}`, task.session_id) : undefined],
        ["Created", `${when(task.created_at)} (${ago(task.created_at)})`],
        ["Assigned", task.assigned_at ? when(task.assigned_at) : undefined],
        ["Lease expires", task.lease_expires_at && OPEN.has(task.status) ? when(task.lease_expires_at) : undefined],
        ["Finished", task.finished_at ? `${when(task.finished_at)} (${ago(task.finished_at)})` : undefined],
        ["Usage", `${num(task.usage.input_tokens)} in · ${num(task.usage.output_tokens)} out · ${cost(task.usage.cost)}`],
        ["Limits", `timeout ${task.timeout}s · queue ${task.queue_timeout}s` +
          (task.max_cost !== null ? ` · max cost ${cost(task.max_cost)}` : "") + (task.model ? ` · model ${task.model}` : "")],
      ]));
  }

  function renderAssignments(items) {
    replace(assignments, table([
      { title: "#", num: true }, { title: "Agent" }, { title: "Status" }, { title: "Assigned" },
      { title: "Latency", num: true }, { title: "Tokens in / out", num: true }, { title: "Cost", num: true },
      { title: "Output or error" },
    ], items.map((a) => h("tr", { dataset: { assignmentId: a.id, status: a.status } },
      h("td", { class: "num" }, a.attempt),
      h("td", {}, a.agent_id),
      h("td", {}, badge(a.status), a.reason ? h("div", { class: "muted" }, a.reason) : null),
      h("td", {}, when(a.assigned_at)),
      h("td", { class: "num" }, a.latency_ms !== null ? `${a.latency_ms.toFixed(0)} ms` : "—"),
      h("td", { class: "num" }, `${num(a.input_tokens)} / ${num(a.output_tokens)}`),
      h("td", { class: "num" }, cost(a.cost)),
      h("td", {}, a.error ? jsonView("error", a.error) : a.output !== null ? jsonView("output", a.output) : "—"))),
    { empty: "Not assigned yet." }));
  }

  function startStream() {
    let pending = null;
    stream = openStream("task events", `/tasks/${encodeURIComponent(id)}/events`, {
      onEvent: (event) => {
        timeline.append(eventItem(event.data));
        // Many events arrive together on a fast task: one refresh for the lot.
        clearTimeout(pending);
        pending = setTimeout(() => poller.now(), 100);
      },
      onEnd: () => poller.now(),
      onError: (error) => timeline.append(h("li", {}, errorBox(error))),
    });
  }

  // The stream drives the page; the slow poll catches what no event announces (an agent joining the fleet
  // changes why a task waits).
  const poller = poll("task", 5000, refresh);
  return () => { poller.stop(); stream?.close(); };
}

function eventItem(event) {
  const at = h("span", { class: "at" }, new Date(event.at).toLocaleTimeString(undefined, { hour12: false }));
  if (event.kind === "transition") {
    const agent = event.data?.agent_id ? ` · ${event.data.agent_id}` : "";
    return h("li", { class: "transition", dataset: { to: event.to } }, at,
      event.from ? [badge(event.from), " → "] : null, badge(event.to),
      h("span", { class: "muted" }, ` ${event.reason || ""}${agent}`));
  }
  const data = event.data || {};
  const progress = typeof data.progress === "number" ? `${(data.progress * 100).toFixed(0)}%` : "";
  return h("li", { class: event.kind, dataset: { kind: event.kind } }, at, h("strong", {}, event.kind), " ",
    progress, " ", data.message || "");
}
