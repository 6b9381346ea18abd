/* Stats page: tokens and cost per day as inline SVG charts (no chart library, no build). */
(function () {
  "use strict";
  // Rate bars: the width comes from data-rate (no style attribute: the CSP allows none).
  Array.prototype.forEach.call(document.querySelectorAll(".rate-table .bar[data-rate]"), function (bar) {
    bar.style.setProperty("--rate", bar.getAttribute("data-rate"));
  });
  var source = document.getElementById("chart-data");
  if (!source) return;
  var days = JSON.parse(source.textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var W = 800, H = 200, PAD = 24;

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function axis(svg, max, format) {
    svg.appendChild(el("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }));
    svg.appendChild(el("text", { x: PAD + 4, y: 12, class: "label" }, "max " + format(max)));
    if (days.length) {
      svg.appendChild(el("text", { x: PAD, y: H - 6, class: "label" }, days[0].day));
      svg.appendChild(el("text", { x: W - 4, y: H - 6, class: "label", "text-anchor": "end" }, days[days.length - 1].day));
    }
  }

  function bars(svg, key, format) {
    var max = Math.max.apply(null, days.map(function (d) { return d[key]; }).concat([0]));
    var step = (W - PAD) / Math.max(days.length, 1);
    days.forEach(function (d, i) {
      var h = max ? (d[key] / max) * (H - 2 * PAD) : 0;
      var bar = el("rect", { x: PAD + i * step + 1, y: H - PAD - h, width: Math.max(step - 2, 1), height: h, class: "bar" });
      bar.appendChild(el("title", {}, d.day + ": " + format(d[key])));
      svg.appendChild(bar);
    });
    axis(svg, max, format);
  }

  function line(svg, key, format) {
    var max = Math.max.apply(null, days.map(function (d) { return d[key]; }).concat([0]));
    var step = (W - PAD) / Math.max(days.length - 1, 1);
    var points = days.map(function (d, i) {
      var y = H - PAD - (max ? (d[key] / max) * (H - 2 * PAD) : 0);
      return (PAD + i * step).toFixed(1) + "," + y.toFixed(1);
    });
    svg.appendChild(el("polyline", { points: points.join(" "), class: "line" }));
    days.forEach(function (d, i) {
      var y = H - PAD - (max ? (d[key] / max) * (H - 2 * PAD) : 0);
      var dot = el("circle", { cx: PAD + i * step, cy: y, r: 3, class: "dot" });
      dot.appendChild(el("title", {}, d.day + ": " + format(d[key])));
      svg.appendChild(dot);
    });
    axis(svg, max, format);
  }

  var tokens = function (n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n); };
  var usd = function (n) { return "$" + n.toFixed(n < 1 ? 4 : 2); };
  bars(document.getElementById("chart-tokens"), "tokens", tokens);
  line(document.getElementById("chart-cost"), "cost", usd);
})();
