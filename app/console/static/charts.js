// Charts drawn as SVG from the API's numbers: bars by day or model, and the budget gauge.
import { svg } from "./lib.js";

const WIDTH = 640;
const HEIGHT = 220;
const PAD = { top: 16, right: 12, bottom: 48, left: 64 };

export function barChart({ label, points, format = (v) => v.toFixed(4) }) {
  const max = Math.max(0, ...points.map((p) => p.value)) || 1;
  const inner = WIDTH - PAD.left - PAD.right;
  const height = HEIGHT - PAD.top - PAD.bottom;
  const step = points.length ? inner / points.length : inner;
  const barWidth = Math.max(2, Math.min(48, step * 0.7));
  const chart = svg(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": label,
      class: "chart",
      "data-bars": String(points.length),
    },
    svg("title", {}, label),
    svg("line", {
      x1: PAD.left, y1: PAD.top + height, x2: WIDTH - PAD.right, y2: PAD.top + height,
      class: "axis",
    }),
    svg("text", { x: PAD.left - 8, y: PAD.top + 4, class: "tick", "text-anchor": "end" }, format(max)),
    svg("text", { x: PAD.left - 8, y: PAD.top + height, class: "tick", "text-anchor": "end" }, format(0)),
  );
  points.forEach((point, i) => {
    const barHeight = (point.value / max) * height;
    const x = PAD.left + i * step + (step - barWidth) / 2;
    const y = PAD.top + height - barHeight;
    chart.append(
      svg(
        "rect",
        { x, y, width: barWidth, height: Math.max(barHeight, 0.5), class: "bar" },
        svg("title", {}, `${point.label}: ${format(point.value)}`),
      ),
    );
    if (points.length <= 16 || i % Math.ceil(points.length / 16) === 0) {
      chart.append(
        svg(
          "text",
          { x: x + barWidth / 2, y: PAD.top + height + 16, class: "tick", "text-anchor": "middle" },
          point.label.length > 12 ? `${point.label.slice(0, 11)}…` : point.label,
        ),
      );
    }
  });
  return chart;
}

// spent and reserved against the budget, as a bar: spent solid, reserved lighter.
export function gauge({ label, budget, spent, reserved, caption }) {
  const width = 480;
  const total = budget > 0 ? budget : 1;
  const spentWidth = Math.min(1, spent / total) * width;
  const reservedWidth = Math.min(1 - spentWidth / width, reserved / total) * width;
  const share = budget > 0 ? (((spent + reserved) / budget) * 100).toFixed(1) : "0";
  return svg(
    "svg",
    { viewBox: `0 0 ${width} 56`, role: "img", "aria-label": label, class: "gauge" },
    svg("title", {}, label),
    svg("rect", { x: 0, y: 8, width, height: 24, rx: 4, class: "gauge-track" }),
    svg("rect", { x: 0, y: 8, width: spentWidth, height: 24, rx: 4, class: "gauge-spent" }),
    svg("rect", { x: spentWidth, y: 8, width: reservedWidth, height: 24, class: "gauge-reserved" }),
    svg("text", { x: 0, y: 50, class: "tick" }, caption || `${share}% of the budget spent or reserved`),
  );
}
