// The connection indicator: every live source (a poll, an event stream) reports its state here.

const sources = new Map();
const TEXT = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline", idle: "Idle" };

export function report(source, state) {
  if (state === null) sources.delete(source);
  else sources.set(source, state);
  render();
}

function render() {
  const states = [...sources.values()];
  let state = "idle";
  if (states.includes("offline")) state = "offline";
  else if (states.includes("reconnecting")) state = "reconnecting";
  else if (states.includes("live")) state = "live";
  const el = document.getElementById("conn");
  if (!el) return;
  el.dataset.state = state;
  el.querySelector(".conn-text").textContent = TEXT[state];
  el.title = [...sources.entries()].map(([name, s]) => `${name}: ${s}`).join("\n") || "nothing live on this page";
}

// Calls `fn` now and then every `interval` ms after it settles; paused while the tab is hidden. The page
// shown is all that is fetched, so a poll costs the same at 10 agents or 100,000 tasks.
export function poll(name, interval, fn) {
  let stopped = false;
  let timer = null;
  let again = false; // asked for while a call was in flight: run once more as soon as it settles
  async function tick() {
    timer = null;
    again = false;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
        if (!stopped) report(name, "live");
      } catch (error) {
        if (!stopped) report(name, error?.status === 0 ? "offline" : "reconnecting");
      }
    }
    if (!stopped) timer = setTimeout(tick, again ? 0 : interval);
  }
  tick();
  return {
    stop() { stopped = true; clearTimeout(timer); report(name, null); },
    now() {
      if (timer === null) again = true;
      else { clearTimeout(timer); tick(); }
    },
  };
}
