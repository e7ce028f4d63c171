// A small SVG line chart (no library): the training loss per step.

import {h, svg} from "./dom.js";

const WIDTH = 480;
const HEIGHT = 160;
const PAD = {left: 44, right: 10, top: 10, bottom: 24};

function scale(lo, hi, outLo, outHi) {
  const span = hi - lo || 1;
  return (value) => outLo + ((value - lo) / span) * (outHi - outLo);
}

/** A line chart of points [{x, y}] (x ascending) with its extremes on the axes. */
export function lineChart(points, {label = "loss", xLabel = "step"} = {}) {
  if (!points.length) return h("p", {class: "muted chart-empty"}, `No ${label} points yet.`);
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [xMin, xMax, yMin, yMax] = [Math.min(...xs), Math.max(...xs), Math.min(...ys),
    Math.max(...ys)];
  const x = scale(xMin, xMax, PAD.left, WIDTH - PAD.right);
  const y = scale(yMin, yMax, HEIGHT - PAD.bottom, PAD.top);
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`)
    .join(" ");
  const text = (attrs, value) => svg("text", {class: "axis", ...attrs}, value);
  return svg("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-label": `${label} over ${points.length} ${xLabel}s`, "data-points": points.length,
  },
  svg("line", {class: "frame", x1: PAD.left, y1: HEIGHT - PAD.bottom, x2: WIDTH - PAD.right,
    y2: HEIGHT - PAD.bottom}),
  svg("line", {class: "frame", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: HEIGHT - PAD.bottom}),
  text({x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end"}, yMax.toFixed(3)),
  text({x: PAD.left - 4, y: HEIGHT - PAD.bottom, "text-anchor": "end"}, yMin.toFixed(3)),
  text({x: PAD.left, y: HEIGHT - 6}, `${xLabel} ${xMin}`),
  text({x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end"}, `${xLabel} ${xMax}`),
  svg("path", {class: "line", d: path}),
  points.length === 1 ? svg("circle", {class: "dot", cx: x(xs[0]), cy: y(ys[0]), r: 3}) : null);
}
