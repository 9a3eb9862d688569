// A bar chart in SVG, drawn from data (no library: the console needs one chart kind, and a year
// of daily rollups is 365 bars). Labels are set as text content, never as markup.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function barChart(points, title) {
  const width = 800, height = 220, left = 56, bottom = 24, top = 8;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  const max = Math.max(0, ...points.map((p) => p.value));
  const plotH = height - bottom - top, plotW = width - left;
  root.append(svg("line", { x1: left, y1: top + plotH, x2: width, y2: top + plotH }));
  root.append(svg("text", { x: 4, y: top + 10 }, max ? max.toPrecision(3) : "0"));
  root.append(svg("text", { x: 4, y: top + plotH }, "0"));
  if (!points.length) {
    root.append(svg("text", { x: left + 8, y: top + plotH / 2 }, `No ${title.toLowerCase()} in this range`));
    return root;
  }
  const step = plotW / points.length;
  points.forEach((p, i) => {
    const h = max ? (p.value / max) * plotH : 0;
    const w = Math.min(Math.max(step * 0.8, 1), 48);
    const bar = svg("rect", { x: left + i * step + (step - w) / 2, y: top + plotH - h, width: w, height: h,
      "data-value": p.value, "data-label": p.label });
    bar.append(svg("title", {}, `${p.label}: ${p.value}`));
    root.append(bar);
  });
  const labels = Math.min(points.length, 6);
  for (let j = 0; j < labels; j++) {
    const i = Math.floor((j * (points.length - 1)) / Math.max(labels - 1, 1));
    root.append(svg("text", { x: left + i * step, y: height - 6 }, String(points[i].label).slice(0, 13)));
  }
  return root;
}
