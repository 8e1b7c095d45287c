// Fleet: the registry's counts, the agents (paged, live), each agent's health and load, the capability index.

import { api } from "../api.js";
import {
  ago, badge, confirmButton, cost, errorBox, h, jsonView, link, meter, num, percent, replace, select, table,
} from "../dom.js";
import { sparkline } from "../charts.js";
import { poll } from "../live.js";
import { filterForm, pagedList } from "../paged.js";

const STATUSES = ["active", "busy", "draining", "offline", "error", "unhealthy", "quarantined"];

export function render(root, { query, ctx }) {
  const expanded = new Set();
  const flash = h("div", { class: "flash" });
  const summary = h("div", { class: "panel", id: "registry" }, h("span", { class: "muted" }, "Loading…"));
  const agents = h("section", { id: "agents" });
  const capabilities = h("div", { id: "capabilities" });
  replace(root,
    h("h1", {}, "Fleet"), flash, summary,
    filterForm("fleet", [
      ["Status", select("status", [["", "any"], ...STATUSES.map((s) => [s, s])], query.status)],
      ["Model", h("input", { name: "model", value: query.model || "", placeholder: "any" })],
      ["Capability", h("input", { name: "capability", value: query.capability || "", placeholder: "any" })],
    ], query),
    agents,
    h("h2", {}, "Capability index"), capabilities);

  let index = null;
  const registry = poll("registry", 5000, async () => {
    const metrics = await api("/registry/metrics");
    replace(summary, h("div", { class: "row" },
      h("strong", {}, `${num(metrics.total_agents)} agents`),
      h("span", { class: "chips" }, Object.entries(metrics.agents_by_status).map(([s, n]) =>
        h("span", { class: "chip" }, badge(s), " ", h("b", {}, n)))),
      h("span", { class: "chips" }, Object.entries(metrics.agents_by_model).map(([m, n]) =>
        h("span", { class: "chip" }, m, ": ", h("b", {}, n)))),
      h("span", { class: "muted" }, `${num(metrics.unique_capabilities)} capabilities`)));
  });

  async function act(label, fn) {
    try {
      await fn();
      replace(flash, h("div", { class: "notice", role: "status" }, label));
    } catch (error) {
      replace(flash, errorBox(error));
    }
    list.refresh();
    registry.now();
  }

  function agentRow(agent, detail) {
    const m = agent.metrics;
    const open = expanded.has(agent.id);
    const toggle = h("button", { type: "button", class: "mono", "aria-expanded": open, onclick: () => {
      if (open) expanded.delete(agent.id); else expanded.add(agent.id);
      list.refresh();
    } }, `${open ? "▾" : "▸"} ${agent.id}`);
    const actions = ctx.admin ? [
      agent.status !== "draining" && agent.status !== "offline"
        ? confirmButton("Drain", () => act(`Agent ${agent.id} is draining.`,
          () => api(`/agents/${encodeURIComponent(agent.id)}/drain`, { method: "POST" })), { name: "drain" })
        : null,
      " ",
      confirmButton("Deregister", () => act(`Agent ${agent.id} was deregistered.`,
        () => api(`/agents/${encodeURIComponent(agent.id)}`, { method: "DELETE" })), { name: "deregister" }),
    ] : [];
    const rows = [h("tr", { dataset: { agentId: agent.id, status: agent.status } },
      h("td", {}, toggle),
      h("td", {}, agent.name),
      h("td", {}, agent.model),
      h("td", {}, badge(agent.status)),
      h("td", {}, h("span", { class: "chips" }, agent.capabilities.map((c) => h("span", { class: "chip" }, c.name)))),
      h("td", {}, meter(m.active_tasks, agent.max_concurrency), `${m.active_tasks}/${agent.max_concurrency}`),
      h("td", { class: "num" }, m.tasks_completed + m.tasks_failed ? percent(m.success_rate) : "—"),
      h("td", { class: "num" }, `${num(m.tasks_completed)} / ${num(m.tasks_failed)}`),
      h("td", { class: "num" }, m.avg_latency_ms ? `${m.avg_latency_ms.toFixed(0)} ms` : "—"),
      h("td", {}, ago(agent.last_seen_at)),
      h("td", {}, ctx.client ? link(`#/tasks?agent_id=${encodeURIComponent(agent.id)}`, "tasks") : null, " ", actions))];
    if (open && detail) rows.push(h("tr", { class: "detail" }, h("td", { colspan: 11 }, agentDetail(detail))));
    return rows;
  }

  const list = pagedList(agents, {
    name: "fleet",
    path: "/agents",
    query: { status: query.status, model: query.model, capability: query.capability },
    limit: 100,
    enrich: async (items) => {
      const shown = items.filter((a) => expanded.has(a.id));
      const details = await Promise.all(shown.map(async (a) => {
        const detail = await api(`/agents/${encodeURIComponent(a.id)}`);
        // The last task this agent failed, when the key may read tasks (its own or its project's).
        const failed = ctx.client
          ? await api("/tasks", { query: { agent_id: a.id, status: "failed", limit: 1 } }) : { items: [] };
        return { ...detail, last_failed_task: failed.items[0] || null };
      }));
      return Object.fromEntries(details.map((d) => [d.id, d]));
    },
    render: (body, items, details) => {
      // The fleet changed: the counts and the index follow at once rather than on their slower clocks.
      registry?.now();
      index?.now();
      renderAgents(body, items, details);
    },
  });

  const renderAgents = (body, items, details) => replace(body, table([
      { title: "Agent" }, { title: "Name" }, { title: "Model" }, { title: "Status" }, { title: "Capabilities" },
      { title: "Load" }, { title: "Success", num: true }, { title: "Done / failed", num: true },
      { title: "Avg latency", num: true }, { title: "Last seen" }, { title: "" },
    ], items.flatMap((agent) => agentRow(agent, details[agent.id])), { empty: "No agents match." }));

  index = poll("capabilities", 10000, async () => {
    const data = await api("/capabilities");
    replace(capabilities, table([{ title: "Capability" }, { title: "Active", num: true }, { title: "Agents" }],
      data.items.map((c) => h("tr", { dataset: { capability: c.name } },
        h("td", {}, link(`#/fleet?capability=${encodeURIComponent(c.name)}`, c.name)),
        h("td", { class: "num" }, `${c.active_agents} / ${c.agents.length}`),
        h("td", { class: "muted" }, c.agents.slice(0, 12).join(", "), c.agents.length > 12 ? " …" : ""))),
      { empty: "No capabilities registered." }));
  });

  return () => { list.stop(); registry.stop(); index.stop(); };
}

function agentDetail(agent) {
  const failed = agent.health_checks.filter((c) => !c.ok);
  const lastError = agent.health_checks.find((c) => c.error);
  return h("div", { class: "grid2", dataset: { agentDetail: agent.id } },
    h("div", {},
      h("div", { class: "row" }, h("strong", {}, "Health"), sparkline(agent.health_checks),
        h("span", { class: "muted" }, `${failed.length} failed of ${agent.health_checks.length} checks; ` +
          `${agent.health_failures} in a row now`)),
      h("p", {}, "Last error: ", lastError ? h("span", { class: "error-text" }, `${lastError.error} (${ago(lastError.at)})`)
        : h("span", { class: "muted" }, "none")),
      agent.last_failed_task ? h("p", {}, "Last failed task: ",
        link(`#/tasks/${agent.last_failed_task.id}`, agent.last_failed_task.type), " ",
        h("code", {}, agent.last_failed_task.error?.code || ""), " ", agent.last_failed_task.error?.message || "",
        h("span", { class: "muted" }, ` (${ago(agent.last_failed_task.finished_at)})`)) : null),
    h("div", {},
      h("p", {}, `Tokens ${num(agent.metrics.tokens_processed)} · cost ${cost(agent.metrics.cost_incurred)} · ` +
        `replica ${agent.replica_id || "—"} · connected ${ago(agent.connected_at)}`),
      jsonView("capabilities", agent.capabilities)));
}
