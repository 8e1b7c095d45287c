// Server-sent events over fetch: EventSource cannot send an Authorization header, and the key must not go
// in a URL. Reconnects with Last-Event-ID after a drop, so no event is missed or repeated.

import { ApiError, apiUrl, authHeaders, problemOf } from "./api.js";
import { report } from "./live.js";

const LINE = /\r\n|\n|\r(?!$)/; // a lone CR at the end of a chunk may be the first half of CRLF

export function openStream(name, path, { onEvent, onEnd, onError }) {
  let lastId = null;
  let closed = false;
  let controller = null;
  let retry = 1000;

  async function connect() {
    controller = new AbortController();
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(apiUrl(path), { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    report(name, "live");
    retry = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { id: null, type: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let match;
      while ((match = LINE.exec(buffer))) {
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === "") {
          if (event.data.length) {
            if (event.id !== null) lastId = event.id;
            onEvent({ id: event.id, type: event.type, data: JSON.parse(event.data.join("\n")) });
          }
          event = { id: null, type: "message", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "event") event.type = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  }

  async function run() {
    while (!closed) {
      try {
        await connect();
        // The server ends a stream after the last event (a finished task or session): nothing more to wait for.
        if (!closed) {
          closed = true;
          report(name, null);
          onEnd?.();
        }
        return;
      } catch (error) {
        if (closed) return;
        if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) {
          closed = true;
          report(name, null);
          onError?.(error);
          return;
        }
        report(name, error instanceof ApiError ? "reconnecting" : "offline");
        await new Promise((resolve) => setTimeout(resolve, retry));
        retry = Math.min(retry * 2, 15000);
      }
    }
  }

  report(name, "reconnecting");
  run();
  return {
    close() {
      closed = true;
      controller?.abort();
      report(name, null);
    },
  };
}
