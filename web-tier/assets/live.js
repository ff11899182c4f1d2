// The live view: listens to GET /live (server-sent events, one JSON snapshot per tick) and
// draws the queues, the fleet, two small charts and the recent results. Everything from the
// server is put into the page as text or as SVG attributes, never as markup.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const status = $("live-status");
  const recent = $("recent");
  const fleetBody = document.querySelector("#fleet tbody");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function ms(v) {
    if (v < 1000) return `${v} ms`;
    return `${(v / 1000).toFixed(v < 10000 ? 1 : 0)} s`;
  }

  function rate(r) {
    return r >= 10 ? r.toFixed(0) : r.toFixed(1);
  }

  function tile(id, value, detail, error) {
    const node = $(id);
    node.querySelector(".tile-value").textContent = value;
    const d = node.querySelector(".tile-detail");
    d.textContent = error || detail;
    d.classList.toggle("error", Boolean(error));
  }

  function queueTile(id, q) {
    if (q.error) return tile(id, "?", "", q.error);
    tile(id, String(q.visible), `visible · ${q.in_flight} in flight · ${q.delayed} delayed`);
    $(id).title = q.name;
  }

  // The rate over the last two buckets (the newest is still filling), so a burst shorter
  // than a bucket shows at once.
  function latest(values) {
    const recent = values.slice(-2);
    return recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  }

  function latestDefined(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function niceMax(max) {
    if (max <= 0) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(max)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= max) return m * step;
    return 10 * step;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Lines over the window (null = no value: a gap), a 0-based y axis with its top value.
  function drawChart(node, lines, format, label) {
    const W = 640, H = 130, left = 48, bottom = 16, top = 6;
    const all = lines.flatMap((l) => l.values.filter((v) => v !== null));
    const max = niceMax(Math.max(0, ...all));
    const n = Math.max(1, ...lines.map((l) => l.values.length)) - 1 || 1;
    const x = (i) => left + (i / n) * (W - left - 2);
    const y = (v) => H - bottom - (v / max) * (H - bottom - top);
    const children = [
      svg("line", { x1: left, y1: y(0), x2: W - 2, y2: y(0), class: "axis" }),
      svg("line", { x1: left, y1: y(max), x2: W - 2, y2: y(max), class: "grid" }),
      svg("text", { x: left - 4, y: y(max) + 4, "text-anchor": "end", class: "tick" }, format(max)),
      svg("text", { x: left - 4, y: y(0) + 4, "text-anchor": "end", class: "tick" }, "0"),
      svg("text", { x: left, y: H - 2, class: "tick" }, "−5 min"),
      svg("text", { x: W - 2, y: H - 2, "text-anchor": "end", class: "tick" }, "now"),
    ];
    // A line that stays at zero (no errors) is left out rather than drawn over the axis.
    for (const line of lines.filter((l) => !l.optional || l.values.some((v) => v))) {
      let run = [];
      const flush = () => {
        if (run.length === 1) children.push(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, class: line.cls }));
        if (run.length > 1) children.push(svg("polyline", { points: run.map((p) => p.join(",")).join(" "), class: line.cls }));
        run = [];
      };
      line.values.forEach((v, i) => (v === null ? flush() : run.push([x(i).toFixed(1), y(v).toFixed(1)])));
      flush();
    }
    node.replaceChildren(...children);
    node.setAttribute("aria-label", label);
  }

  function fleetRows(snapshot) {
    const rows = [];
    const counts = {};
    for (const m of snapshot.fleet) {
      const state = m.state || "not in the fleet";
      counts[state] = (counts[state] || 0) + 1;
      const tr = el("tr");
      tr.append(el("th", "", m.name));
      tr.firstChild.scope = "row";
      const badge = el("span", `state state-${m.state || "outside"}`, state);
      tr.insertCell().append(badge);
      // Uptime while it lives; an instance that ended has none.
      const alive = ["pending", "running", "stopping"].includes(m.state);
      tr.insertCell().textContent = alive && m.launched_at_ms ? duration(snapshot.at_ms - m.launched_at_ms) : "–";
      tr.insertCell().textContent = String(m.answered_last_minute);
      tr.insertCell().textContent = m.last_at_ms
        ? `${m.last} (${m.last_file}), ${duration(snapshot.at_ms - m.last_at_ms)} ago`
        : "–";
      rows.push(tr);
    }
    if (rows.length === 0) {
      const tr = el("tr");
      const td = tr.insertCell();
      td.colSpan = 5;
      td.className = "meta";
      td.textContent = "No app tier yet: the scaler starts one when requests queue up.";
      rows.push(tr);
    }
    fleetBody.replaceChildren(...rows);
    const summary = Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(" · ");
    $("fleet-summary").textContent = summary ? `(${summary})` : "";
    const error = $("fleet-error");
    error.hidden = !snapshot.fleet_error;
    error.textContent = snapshot.fleet_error ? `The fleet could not be listed: ${snapshot.fleet_error}` : "";
  }

  // Keyed by request id, so a thumbnail already shown is not fetched again.
  const shown = new Map();
  function recentItems(snapshot) {
    const items = [];
    const keep = new Set();
    for (const r of snapshot.recent) {
      keep.add(r.id);
      let li = shown.get(r.id);
      if (!li) {
        li = el("li");
        const img = el("img");
        img.alt = "";
        img.loading = "lazy";
        img.addEventListener("error", () => img.remove());
        img.src = `/results/${encodeURIComponent(r.id)}/image`;
        const body = el("div");
        body.append(r.label !== null ? el("div", "label", r.label) : el("div", "error", r.error));
        body.append(el("div", "name", r.filename));
        body.append(el("div", "meta", `${r.worker} · ${r.latency_ms} ms`));
        li.append(img, body);
        shown.set(r.id, li);
      }
      items.push(li);
    }
    for (const id of [...shown.keys()]) if (!keep.has(id)) shown.delete(id);
    recent.replaceChildren(...items);
    if (items.length === 0) recent.append(el("li", "meta empty", "No results yet."));
  }

  function render(snapshot) {
    queueTile("tile-requests", snapshot.requests);
    queueTile("tile-responses", snapshot.responses);
    const s = snapshot.series;
    tile("tile-throughput", `${rate(latest(s.labels_per_sec))}/s`,
      `${rate(latest(s.errors_per_sec))}/s errors · ${snapshot.waiting} waiting here`);
    const p50 = latestDefined(s.p50_ms), p95 = latestDefined(s.p95_ms);
    tile("tile-latency", p50 === null ? "–" : `${ms(p50)} / ${ms(p95)}`, "queued + in the worker");
    drawChart($("chart-throughput"), [
      { values: s.labels_per_sec, cls: "line-labels" },
      { values: s.errors_per_sec, cls: "line-errors", optional: true },
    ], (v) => `${v}/s`, `Results per second over the last 5 minutes; now ${rate(latest(s.labels_per_sec))}`);
    drawChart($("chart-latency"), [
      { values: s.p95_ms, cls: "line-p95" },
      { values: s.p50_ms, cls: "line-p50" },
    ], ms, `Latency over the last 5 minutes; latest p50 ${p50 === null ? "–" : ms(p50)}, p95 ${p95 === null ? "–" : ms(p95)}`);
    fleetRows(snapshot);
    recentItems(snapshot);
    status.textContent = `live · ${snapshot.backend} backend · every ${snapshot.interval_ms / 1000} s`;
    status.classList.remove("error");
  }

  if (!("EventSource" in window)) {
    status.textContent = "This browser cannot show the live view.";
    return;
  }
  const source = new EventSource("/live");
  source.addEventListener("snapshot", (event) => {
    try {
      render(JSON.parse(event.data));
    } catch (e) {
      status.textContent = `live view error: ${e}`;
      status.classList.add("error");
    }
  });
  source.addEventListener("error", () => {
    status.textContent = "reconnecting…";
    status.classList.add("error");
  });
})();
