// Small hand-written SVG charts: a multi-series line chart and horizontal bars.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = [
  "#4f8cff", "#ff6b6b", "#2ec4b6", "#ffb020", "#a36bff",
  "#ff8fd0", "#7ccf5a", "#c9a27e", "#5bd1ff", "#9aa4b2",
];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * Draw series of [t, y] points (t in seconds) into `host`, replacing what was there.
 * opts: {height, yMin, yMax, unit, window (seconds shown), format(y)}
 */
export function lineChart(host, series, opts = {}) {
  const width = Math.max(host.clientWidth || 320, 200);
  const height = opts.height || 160;
  const pad = { l: 44, r: 8, t: 8, b: 20 };
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart line-chart",
  });
  const points = series.flatMap((x) => x.points);
  const now = points.length ? Math.max(...points.map((p) => p[0])) : 0;
  const span = opts.window || 300;
  const t0 = now - span;
  const ys = points.filter((p) => p[0] >= t0 && p[1] !== null).map((p) => p[1]);
  const yMin = opts.yMin !== undefined ? opts.yMin : Math.min(0, ...ys);
  const yMax = opts.yMax !== undefined ? opts.yMax : niceMax(Math.max(...ys, 0) * 1.1);
  const x = (t) => pad.l + ((t - t0) / span) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - yMin) / (yMax - yMin || 1)) * (height - pad.t - pad.b);
  const fmt = opts.format || ((v) => (Math.abs(v) >= 100 ? v.toFixed(0) : +v.toFixed(2)));
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
  }
  for (const ago of [span, span / 2, 0]) {
    const label = ago === 0 ? "now" : ago >= 120 ? `-${Math.round(ago / 60)} min` : `-${Math.round(ago)} s`;
    svg.append(s("text", { x: x(now - ago), y: height - 4, "text-anchor": ago === span ? "start" : ago === 0 ? "end" : "middle", class: "tick" }, label));
  }
  series.forEach((ser, i) => {
    const pts = ser.points.filter((p) => p[0] >= t0 && p[1] !== null && p[1] !== undefined);
    if (!pts.length) return;
    const color = ser.color || PALETTE[i % PALETTE.length];
    const d = pts.map((p) => `${x(p[0]).toFixed(1)},${y(Math.min(Math.max(p[1], yMin), yMax)).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": ser.name }));
    const last = pts[pts.length - 1];
    svg.append(s("circle", { cx: x(last[0]), cy: y(Math.min(Math.max(last[1], yMin), yMax)), r: 2.5, fill: color }));
  });
  host.replaceChildren(svg);
  if (opts.legend !== false) {
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((ser, i) => {
      const last = ser.points.length ? ser.points[ser.points.length - 1][1] : null;
      const item = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = ser.color || PALETTE[i % PALETTE.length];
      item.append(sw, `${ser.name} ${last === null || last === undefined ? "–" : fmt(last)}`);
      legend.append(item);
    });
    host.append(legend);
  }
  return svg;
}

/**
 * Horizontal bars: rows of {label, value, note}; one bar per row scaled to the largest.
 * opts: {format(v), color}
 */
export function barChart(host, rows, opts = {}) {
  const width = Math.max(host.clientWidth || 320, 200);
  const rowH = 22;
  const labelW = opts.labelWidth || 84;
  const noteW = opts.noteWidth || 64;
  const height = rows.length * rowH + 4;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart bar-chart" });
  const max = Math.max(...rows.map((r) => r.value), 0) || 1;
  const fmt = opts.format || ((v) => String(v));
  rows.forEach((r, i) => {
    const yTop = i * rowH + 2;
    const w = ((width - labelW - noteW - 8) * r.value) / max;
    svg.append(s("text", { x: labelW - 6, y: yTop + 15, "text-anchor": "end", class: "label" }, r.label));
    svg.append(s("rect", { x: labelW, y: yTop + 3, width: Math.max(w, r.value > 0 ? 1 : 0), height: rowH - 8, rx: 3, fill: r.color || opts.color || PALETTE[i % PALETTE.length], class: "bar", "data-value": r.value }));
    svg.append(s("text", { x: labelW + w + 4, y: yTop + 15, class: "value" }, fmt(r.value)));
    if (r.note) svg.append(s("text", { x: width - 2, y: yTop + 15, "text-anchor": "end", class: "note" }, r.note));
  });
  host.replaceChildren(svg);
  return svg;
}
