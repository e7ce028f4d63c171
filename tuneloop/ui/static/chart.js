// A small SVG line chart (no library): training loss per step, drift and quality over time.

import {h, svg} from "./dom.js";

const WIDTH = 480;
const HEIGHT = 160;
const PAD = {left: 52, right: 10, top: 10, bottom: 24};
const MAX_DOTS = 120; // beyond this many points the dots would hide the line
const LOG_FLOOR = 1e-12; // log axes (p-values): 0 is drawn at this value

function scale(lo, hi, outLo, outHi) {
  const span = hi - lo || 1;
  return (value) => outLo + ((value - lo) / span) * (outHi - outLo);
}

const plain = (value) => (Math.abs(value) >= 1e-3 || value === 0 ? value.toFixed(3)
  : value.toExponential(1));

/** A line chart of points [{x, y, mark?, title?}] (x ascending), its extremes on the axes.
 *
 * Options: label and xLabel (the texts of the empty state and the aria label); reference
 * {y, label}: a dashed horizontal line (a threshold, a baseline); log: a log10 y axis (p-values);
 * xFormat / yFormat: axis text; id. A point's mark becomes a class of its dot (e.g. "bad") and
 * its title the dot's tooltip. */
export function lineChart(points, options = {}) {
  const {label = "loss", xLabel = "step", reference = null, log = false, id = null,
    xFormat = (x) => `${xLabel} ${x}`, yFormat = plain} = options;
  if (!points.length) {
    return h("p", {class: "muted chart-empty", id}, `No ${label} points yet.`);
  }
  const toY = log ? (v) => Math.log10(Math.max(v, LOG_FLOOR)) : (v) => v;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => toY(p.y));
  const refY = reference && typeof reference.y === "number" ? toY(reference.y) : null;
  const allY = refY === null ? ys : [...ys, refY];
  const [xMin, xMax, yMin, yMax] = [Math.min(...xs), Math.max(...xs), Math.min(...allY),
    Math.max(...allY)];
  const x = scale(xMin, xMax, PAD.left, WIDTH - PAD.right);
  const y = scale(yMin, yMax, HEIGHT - PAD.bottom, PAD.top);
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(ys[i]).toFixed(1)}`)
    .join(" ");
  const text = (attrs, value) => svg("text", {class: "axis", ...attrs}, value);
  const shown = (value) => yFormat(log ? 10 ** value : value);
  const dots = points.length <= MAX_DOTS
    ? points.map((p, i) => svg("circle", {class: `dot ${p.mark || ""}`.trim(),
      cx: x(p.x).toFixed(1), cy: y(ys[i]).toFixed(1), r: points.length === 1 ? 3 : 2.5},
    p.title ? svg("title", null, p.title) : null))
    : points.filter((p) => p.mark).map((p) => svg("circle", {class: `dot ${p.mark}`,
      cx: x(p.x).toFixed(1), cy: y(toY(p.y)).toFixed(1), r: 2.5}));
  return svg("svg", {
    class: "chart", id, viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-label": `${label} over ${points.length} ${xLabel}s`, "data-points": points.length,
  },
  svg("line", {class: "frame", x1: PAD.left, y1: HEIGHT - PAD.bottom, x2: WIDTH - PAD.right,
    y2: HEIGHT - PAD.bottom}),
  svg("line", {class: "frame", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: HEIGHT - PAD.bottom}),
  text({x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end"}, shown(yMax)),
  text({x: PAD.left - 4, y: HEIGHT - PAD.bottom, "text-anchor": "end"}, shown(yMin)),
  text({x: PAD.left, y: HEIGHT - 6}, xFormat(xMin)),
  text({x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end"}, xFormat(xMax)),
  refY === null ? null : [
    svg("line", {class: "reference", x1: PAD.left, y1: y(refY).toFixed(1), x2: WIDTH - PAD.right,
      y2: y(refY).toFixed(1)}),
    text({class: "axis reference-label", x: WIDTH - PAD.right - 2, y: (y(refY) - 3).toFixed(1),
      "text-anchor": "end"}, `${reference.label || "reference"} ${yFormat(reference.y)}`),
  ],
  svg("path", {class: "line", d: path}),
  dots);
}

/** A chart's x axis text for unix seconds: the date and time, short. */
export function timeAxis(seconds) {
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
}
