// Why a pending task waits, worked out from the public API: who offers its capabilities, which of them may take
// it (model, named agents), which are connected, and which have a free slot.

import { api } from "../api.js";
import { ago, h, when } from "../dom.js";

const CONNECTED = new Set(["active", "busy"]);

export async function explainWait(task) {
  const reasons = [];
  if (new Date(task.available_at).getTime() > Date.now()) {
    reasons.push(`It is backing off after attempt ${task.attempt}: it may be assigned again ${ago(task.available_at)}.`);
  }
  // Agents with the first capability (one page of up to 500 is plenty to explain the wait), then the rest checked
  // on each agent's own list.
  const page = await api("/agents", { query: { capability: task.capabilities[0], limit: 500 } });
  const capable = page.items.filter((agent) => {
    const names = new Set(agent.capabilities.map((c) => c.name));
    return task.capabilities.every((c) => names.has(c));
  });
  let eligible = capable;
  if (!page.items.length) {
    reasons.push(`No agent has registered capability ${task.capabilities[0]}.`);
  } else if (!capable.length) {
    reasons.push(`No agent offers all of its capabilities (${task.capabilities.join(", ")}).`);
  }
  if (task.agent_ids && capable.length) {
    eligible = eligible.filter((a) => task.agent_ids.includes(a.id));
    if (!eligible.length) reasons.push(`Only ${task.agent_ids.join(", ")} may take it, and none of them offers its capabilities.`);
  }
  if (task.model && eligible.length) {
    const models = [...new Set(eligible.map((a) => a.model))];
    eligible = eligible.filter((a) => a.model === task.model);
    if (!eligible.length) reasons.push(`Only agents of model ${task.model} may take it; the capable ones run ${models.join(", ")}.`);
  }
  const connected = eligible.filter((a) => CONNECTED.has(a.status));
  if (eligible.length && !connected.length) {
    const statuses = eligible.map((a) => `${a.id} ${a.status}`).join(", ");
    reasons.push(`None of the ${eligible.length} agents that could take it is connected and accepting work (${statuses}).`);
  }
  const free = connected.filter((a) => a.status !== "busy" && a.metrics.active_tasks < a.max_concurrency);
  if (connected.length && !free.length) {
    reasons.push(`All ${connected.length} agents that could take it are at capacity: it waits for a free slot.`);
  }
  if (free.length && !reasons.length) {
    reasons.push(`${free.length} capable agent(s) have room: older or higher-priority tasks go first` +
      (task.max_cost !== null ? `, and agents estimated dearer than ${task.max_cost} USD are skipped.` : "."));
  }
  reasons.push(`It gives up (timed_out) at ${when(task.expires_at)} if no agent takes it.`);
  return h("div", { class: "notice", id: "why-waiting" }, h("strong", {}, "Why it waits"),
    h("ul", {}, reasons.map((r) => h("li", {}, r))));
}
