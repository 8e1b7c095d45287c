// A collaboration session: map_reduce chunks, consensus rounds and answers, chain steps; cost against budget.

import { ApiError, api } from "../api.js";
import {
  ago, badge, compact, confirmButton, cost, errorBox, facts, h, jsonView, link, meter, replace, shortId, table, when,
} from "../dom.js";
import { poll } from "../live.js";
import { openStream } from "../sse.js";

export function render(root, { id }) {
  const flash = h("div", { class: "flash" });
  const header = h("div", { class: "panel", id: "session" }, h("span", { class: "muted" }, "Loading…"));
  const strategy = h("section", { class: "panel", id: "strategy" });
  const subtasks = h("div", { id: "subtasks" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  replace(root, h("p", {}, link("#/sessions", "← Sessions")), flash, header, strategy,
    h("div", { class: "grid2" },
      h("section", {}, h("h2", {}, "Subtasks"), subtasks),
      h("section", { class: "panel" }, h("h2", {}, "Events"), timeline)));

  const inputs = new Map(); // chain step task id -> its payload (a task's payload never changes)
  let stream = null;
  let last = null;

  async function refresh() {
    let session;
    try {
      session = await api(`/sessions/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 422)) {
        replace(header, errorBox(error));
        poller.stop();
        return;
      }
      throw error;
    }
    if (session.strategy === "chain") await loadInputs(session);
    const json = JSON.stringify([session, inputs.size]);
    if (json !== last) {
      last = json;
      renderHeader(session);
      replace(strategy, ...strategyView(session, inputs));
      renderSubtasks(session.subtasks || []);
    }
    if (!stream) startStream();
  }

  async function loadInputs(session) {
    const wanted = (session.subtasks || []).filter((s) => !inputs.has(s.task_id));
    for (const subtask of wanted) inputs.set(subtask.task_id, (await api(`/tasks/${subtask.task_id}`)).payload);
  }

  function renderHeader(session) {
    const actions = session.status === "running" ? confirmButton("Cancel", async () => {
      try {
        await api(`/sessions/${encodeURIComponent(id)}/cancel`, { method: "POST" });
        replace(flash);
      } catch (error) {
        replace(flash, errorBox(error));
      }
      poller.now();
    }, { name: "cancel" }) : null;
    replace(header,
      h("div", { class: "row" }, h("h1", {}, `Session ${session.strategy}`), badge(session.status),
        h("code", {}, session.id), h("span", { class: "spacer" }), actions),
      facts([
        ["Task", [session.task.type, ...(session.task.capabilities || [])].join(" · ")],
        ["Participants", session.participants.length ? session.participants.join(", ") : "any capable agent"],
        ["Cost", h("span", { id: "budget" }, session.budget ? meter(session.cost, session.budget, { wide: true }) : null,
          `${cost(session.cost)}${session.budget ? ` of ${cost(session.budget)} budget` : " (no budget)"}`)],
        ["Round", String(session.round)],
        ["Created", `${when(session.created_at)} (${ago(session.created_at)})`],
        ["Deadline", session.status === "running" ? when(session.deadline) : undefined],
        ["Finished", session.finished_at ? when(session.finished_at) : undefined],
        ["Params", jsonView("params", session.params)],
      ]),
      session.error ? jsonView("error", session.error, { open: true }) : null,
      session.result !== null && session.result !== undefined ? jsonView("result", session.result, { open: true }) : null);
  }

  function renderSubtasks(items) {
    replace(subtasks, table([
      { title: "Key" }, { title: "Status" }, { title: "Agent" }, { title: "Attempt", num: true },
      { title: "Cost", num: true }, { title: "Task" },
    ], items.map((s) => h("tr", { dataset: { key: s.key, status: s.status } },
      h("td", {}, s.key), h("td", {}, badge(s.status)), h("td", {}, s.agent_id || "—"),
      h("td", { class: "num" }, s.attempt), h("td", { class: "num" }, cost(s.cost)),
      h("td", {}, link(`#/tasks/${s.task_id}`, h("code", {}, shortId(s.task_id)))))),
    { empty: "No subtasks yet." }));
  }

  function startStream() {
    let pending = null;
    stream = openStream("session events", `/sessions/${encodeURIComponent(id)}/events`, {
      onEvent: (event) => {
        const at = new Date(event.data.at).toLocaleTimeString(undefined, { hour12: false });
        timeline.append(h("li", { class: event.type === "finished" ? "transition" : "", dataset: { kind: event.type } },
          h("span", { class: "at" }, at), h("strong", {}, event.type), " ",
          h("span", { class: "muted" }, describe(event.type, event.data.data || {}))));
        clearTimeout(pending);
        pending = setTimeout(() => poller.now(), 100);
      },
      onEnd: () => poller.now(),
      onError: (error) => timeline.append(h("li", {}, errorBox(error))),
    });
  }

  const poller = poll("session", 5000, refresh);
  return () => { poller.stop(); stream?.close(); };
}

function describe(kind, d) {
  if (kind === "subtask_submitted") return `${d.key}${d.agent_ids ? ` → ${d.agent_ids.join(", ")}` : ""}`;
  if (kind === "subtask_finished") return `${d.key} ${d.status}${d.agent_id ? ` by ${d.agent_id}` : ""}`;
  if (kind === "round") return `round ${d.round}`;
  if (kind === "finished") return `${d.status} · ${cost(d.cost)}`;
  if (kind === "created") return `${d.strategy}${d.participants?.length ? ` · ${d.participants.join(", ")}` : ""}`;
  return compact(d);
}

function strategyView(session, inputs) {
  if (session.strategy === "map_reduce") return mapReduce(session);
  if (session.strategy === "consensus") return consensus(session);
  return chain(session, inputs);
}

function mapReduce(session) {
  const state = session.state || {};
  const subtasks = new Map((session.subtasks || []).map((s) => [s.key, s]));
  const total = state.chunks ?? [...subtasks.keys()].filter((k) => k.startsWith("map-")).length;
  const done = Array.from({ length: total }, (_, i) => subtasks.get(`map-${i}`))
    .filter((s) => s && s.status === "succeeded").length;
  const cells = Array.from({ length: total }, (_, i) => {
    const subtask = subtasks.get(`map-${i}`);
    const status = subtask ? subtask.status : "waiting";
    return h("span", { class: `chunk ${status}`, title: `map-${i}: ${status}`, dataset: { chunk: i, status } }, i);
  });
  const reduce = subtasks.get("reduce");
  return [
    h("h2", {}, "Chunks"),
    h("div", { class: "row", id: "chunk-progress" }, meter(done, total, { wide: true, progress: true }),
      h("strong", {}, `${done} / ${total} chunks done`),
      state.failed && Object.keys(state.failed).length ? h("span", { class: "muted" },
        `failed: ${Object.keys(state.failed).join(", ")}`) : null,
      reduce ? h("span", {}, "reduce: ", badge(reduce.status)) : null),
    h("div", { class: "chunks" }, cells),
  ];
}

// Answers agree when their values at params.key are equal as canonical JSON (the server's rule, for display).
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function pick(output, path) {
  if (!path) return output;
  let value = output;
  for (const part of String(path).split(".")) {
    if (value === null || typeof value !== "object" || !(part in value)) return undefined;
    value = value[part];
  }
  return value;
}

function consensus(session) {
  const state = session.state || {};
  const key = session.params?.key;
  const rounds = [...(state.rounds || [])];
  if (state.answers && Object.keys(state.answers).length && !rounds.some((r) => r.round === state.round)) {
    rounds.push({ round: state.round, answers: state.answers, open: true });
  }
  const threshold = session.params?.threshold;
  return [
    h("h2", {}, "Rounds"),
    rounds.length ? null : h("p", { class: "muted" }, "No answers yet."),
    rounds.map((round) => {
      const answers = Object.values(round.answers || {});
      const groups = new Map();
      for (const answer of answers) {
        if (answer.status !== "succeeded") continue;
        const value = pick(answer.output, key);
        if (value === undefined) continue;
        const id = canonical(value);
        groups.set(id, [...(groups.get(id) || []), answer.agent_id]);
      }
      const answered = answers.filter((a) => a.status === "succeeded").length;
      const [top, voters] = [...groups.entries()].sort((a, b) => b[1].length - a[1].length)[0] || [null, []];
      const share = answered ? voters.length / answered : 0;
      return h("div", { class: "round", dataset: { round: round.round } },
        h("h3", {}, `Round ${round.round}${round.open ? " (in progress)" : ""}`),
        h("p", { class: "agreement" }, top !== null
          ? [`Largest group: ${voters.length} of ${answered} agree (${(share * 100).toFixed(0)}%`,
            threshold ? `, threshold ${(threshold * 100).toFixed(0)}%` : "", ") on ", h("code", { class: "agree" }, top)]
          : "No agreeing answers."),
        table([{ title: "Participant" }, { title: "Status" }, { title: key ? `Answer (${key})` : "Answer" },
          { title: "Agrees" }],
        answers.map((a) => {
          const value = a.status === "succeeded" ? pick(a.output, key) : undefined;
          return h("tr", { dataset: { participant: a.agent_id } },
            h("td", {}, a.agent_id), h("td", {}, badge(a.status || "pending")),
            h("td", {}, value !== undefined ? h("code", {}, compact(value)) : a.error ? compact(a.error) : "—"),
            h("td", {}, voters.includes(a.agent_id) ? h("span", { class: "agree" }, "✓") : ""));
        })));
    }),
    session.result && session.status === "succeeded" ? h("p", { id: "consensus-result" },
      "Consensus in round ", String(session.result.round), ": ", h("code", { class: "agree" },
        compact(pick(session.result.answer, key) ?? session.result.answer)),
      ` (${session.result.votes} of ${session.result.of}, ${(session.result.share * 100).toFixed(0)}%)`) : null,
  ];
}

function chain(session, inputs) {
  const subtasks = new Map((session.subtasks || []).map((s) => [s.key, s]));
  const steps = session.params?.steps || [];
  return [
    h("h2", {}, "Steps"),
    table([{ title: "Step" }, { title: "Capability" }, { title: "Status" }, { title: "Input" }, { title: "Output" }],
      steps.map((step) => {
        const subtask = subtasks.get(`step-${step.name}`);
        const input = subtask ? inputs.get(subtask.task_id) : undefined;
        return h("tr", { dataset: { step: step.name, status: subtask ? subtask.status : "waiting" } },
          h("td", {}, step.name), h("td", {}, step.capability),
          h("td", {}, badge(subtask ? subtask.status : "waiting")),
          h("td", {}, input !== undefined ? jsonView("input", input) : "—"),
          h("td", {}, subtask?.error ? jsonView("error", subtask.error) : subtask && subtask.output !== null
            ? jsonView("output", subtask.output) : "—"));
      })),
  ];
}
