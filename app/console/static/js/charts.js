// Charts as plain SVG: horizontal bars for usage, a sparkline for an agent's health checks.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

// rows: [{label, value}]; the largest value spans the width. `format` renders a value as text.
export function barChart(title, rows, format = String) {
  const rowHeight = 22;
  const labelWidth = 150;
  const width = 460;
  const valueWidth = 90;
  const max = Math.max(...rows.map((r) => r.value), 0);
  const height = Math.max(rows.length, 1) * rowHeight + 8;
  const chart = svg("svg", { class: "chart", width: "100%", viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": title });
  chart.append(svg("title", {}, title));
  if (!rows.length) chart.append(svg("text", { x: 4, y: 16 }, "no usage in this window"));
  rows.forEach((row, index) => {
    const y = index * rowHeight + 4;
    const span = width - labelWidth - valueWidth;
    const barWidth = max > 0 ? Math.max((row.value / max) * span, row.value > 0 ? 1 : 0) : 0;
    const label = row.label.length > 22 ? `${row.label.slice(0, 21)}…` : row.label;
    chart.append(
      svg("text", { x: 0, y: y + 14 }, label),
      svg("rect", { class: "bar", x: labelWidth, y: y + 3, width: barWidth.toFixed(1), height: rowHeight - 8, rx: 2 },
        svg("title", {}, `${row.label}: ${format(row.value)}`)),
      svg("text", { x: labelWidth + barWidth + 6, y: y + 14 }, format(row.value)),
    );
  });
  return chart;
}

// checks: the agent's health checks, newest first (as the API gives them); drawn oldest to newest, a bar's
// height is the ping's duration and a failed check is a full red bar.
export function sparkline(checks) {
  const width = 200;
  const height = 28;
  const points = [...checks].reverse();
  const chart = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${checks.filter((c) => !c.ok).length} failed of the last ${checks.length} health checks` });
  if (!points.length) return chart;
  const slot = width / Math.max(points.length, 20);
  const slowest = Math.max(...points.map((p) => p.duration_ms || 0), 1);
  points.forEach((point, index) => {
    const barHeight = point.ok ? Math.max(((point.duration_ms || 0) / slowest) * (height - 4), 3) : height;
    chart.append(svg("rect", { class: point.ok ? "ok" : "bad", x: (index * slot).toFixed(1),
      y: (height - barHeight).toFixed(1), width: Math.max(slot - 1, 1).toFixed(1), height: barHeight.toFixed(1) },
    svg("title", {}, `${point.at}: ${point.ok ? `${(point.duration_ms || 0).toFixed(1)} ms` : point.error}`)));
  });
  return chart;
}
