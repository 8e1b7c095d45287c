// Usage: tokens and cost by model, agent and task type over a chosen window, as charts.

import { api } from "../api.js";
import { cost, h, num, replace, select, table } from "../dom.js";
import { barChart } from "../charts.js";
import { poll } from "../live.js";

const WINDOWS = [["1h", "last hour", 3600], ["24h", "last 24 hours", 86400], ["7d", "last 7 days", 604800],
  ["30d", "last 30 days", 2592000], ["all", "all time", null]];
const GROUPS = [["model", "By model"], ["agent", "By agent"], ["task_type", "By task type"]];

export function render(root, { query }) {
  const window = WINDOWS.find(([name]) => name === query.window) || WINDOWS[1];
  const picker = select("window", WINDOWS.map(([name, text]) => [name, text]), window[0]);
  picker.addEventListener("change", () => { location.hash = `#/usage?window=${picker.value}`; });
  const total = h("div", { class: "panel", id: "usage-total" });
  const charts = h("div", { id: "usage-charts" });
  replace(root, h("div", { class: "row" }, h("h1", {}, "Usage"), h("label", {}, "Window ", picker)), total, charts);

  const poller = poll("usage", 10000, async () => {
    const since = window[2] === null ? undefined : new Date(Date.now() - window[2] * 1000).toISOString();
    const reports = await Promise.all(GROUPS.map(([group]) => api("/usage", { query: { group_by: group, since } })));
    const all = reports[0].total;
    replace(total, h("strong", {}, `${window[1]}: `),
      `${num(all.attempts)} attempts · ${num(all.input_tokens)} input and ${num(all.output_tokens)} output tokens · ` +
      `${cost(all.cost)}`);
    replace(charts, reports.map((report, index) => {
      const rows = report.items;
      return h("section", { class: "panel", dataset: { group: report.group_by } },
        h("h2", {}, GROUPS[index][1]),
        h("div", { class: "grid2" },
          h("div", {}, h("div", { class: "muted" }, "Cost (USD)"),
            barChart(`cost ${GROUPS[index][1].toLowerCase()}`, rows.map((r) => ({ label: r.key, value: r.cost })), cost)),
          h("div", {}, h("div", { class: "muted" }, "Tokens (input + output)"),
            barChart(`tokens ${GROUPS[index][1].toLowerCase()}`,
              rows.map((r) => ({ label: r.key, value: r.input_tokens + r.output_tokens })), num))),
        table([{ title: report.group_by }, { title: "Attempts", num: true }, { title: "Input", num: true },
          { title: "Output", num: true }, { title: "Cost", num: true }],
        rows.map((r) => h("tr", { dataset: { key: r.key } }, h("td", {}, r.key), h("td", { class: "num" }, num(r.attempts)),
          h("td", { class: "num" }, num(r.input_tokens)), h("td", { class: "num" }, num(r.output_tokens)),
          h("td", { class: "num" }, cost(r.cost)))), { empty: "No usage in this window." }));
    }));
  });
  return () => poller.stop();
}
