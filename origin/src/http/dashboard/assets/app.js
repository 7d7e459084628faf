// failsoft's origin dashboard: polls /v1/health and /v1/dashboard every two
// seconds and renders them with plain DOM calls (no library, no build step).
// Every shown value also sits in a data-* attribute, for tests and scripts.
"use strict";
(function () {
  const POLL_MS = 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SIGNALS = [
    ["cacheHitRate", "Cache hit rate"],
    ["crmLatency", "CRM latency"],
    ["queueDepth", "Queue depth"],
    ["dlqDepth", "DLQ depth"],
    ["degradedShare", "Degraded answers"],
  ];
  const UNITS = { percent: "%", ms: "ms", messages: "msgs" };
  const CHART = { width: 960, height: 240, left: 44, right: 12, top: 12, bottom: 26 };

  const $ = (id) => document.getElementById(id);
  let polls = 0;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "no data";
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1);
  }

  // ── signals ───────────────────────────────────────────────────────────

  function card(name, title) {
    let node = $("signal-" + name);
    if (node) return node;
    node = el("article", { id: "signal-" + name, class: "signal", "data-signal": name, "data-value": "", "data-level": "" });
    node.append(
      el("div", { class: "name" }, title),
      (() => {
        const r = el("div", { class: "reading" });
        r.append(el("span", { class: "value" }, "…"), el("span", { class: "unit" }));
        return r;
      })(),
      el("span", { class: "pill level", "data-level": "" }, "…"),
      el("div", { class: "band-wrap" }),
      el("div", { class: "note" })
    );
    $("signals").append(node);
    return node;
  }

  // The bar's scale: a rate that must stay high 0..100 %, others up to 1.5 × critical (or
  // past the value, so the marker always shows).
  function scaleMax(s) {
    if (s.unit === "percent" && s.direction === "below") return 100;
    const base = Math.max(s.critical * 1.5, 1);
    return s.value !== null && s.value > base ? s.value * 1.1 : base;
  }

  function band(s) {
    const max = scaleMax(s);
    const pct = (x) => Math.max(0, Math.min(100, (x / max) * 100));
    const zones = s.direction === "below"
      ? [["critical", 0, s.critical], ["warning", s.critical, s.warning], ["ok", s.warning, max]]
      : [["ok", 0, s.warning], ["warning", s.warning, s.critical], ["critical", s.critical, max]];
    const wrap = el("div", { class: "band-wrap" });
    const bar = el("div", { class: "band", title: "warning " + s.warning + ", critical " + s.critical });
    for (const [level, from, to] of zones) {
      // Through CSSOM: the page's Content-Security-Policy refuses style attributes.
      const zone = el("div", { class: "zone " + level });
      zone.style.width = pct(to) - pct(from) + "%";
      bar.append(zone);
    }
    wrap.append(bar);
    for (const [kind, at] of [["warning", s.warning], ["critical", s.critical]]) {
      const tick = el("span", { class: "tick", "data-threshold": kind, "data-at": String(at) }, fmt(at));
      tick.style.left = pct(at) + "%";
      wrap.append(tick);
    }
    if (s.value !== null) {
      const marker = el("span", { class: "marker" });
      marker.style.left = pct(s.value) + "%";
      wrap.append(marker);
    }
    return wrap;
  }

  function note(name, s) {
    if (s.value === null) return s.note || s.source || "";
    if (name === "crmLatency") return s.statistic + " of " + s.samples + " calls, " + s.windowSeconds / 60 + " min";
    if (s.ageSeconds !== undefined) return "sampled " + s.ageSeconds + " s ago";
    return s.source || "";
  }

  function renderSignals(health) {
    for (const [name, title] of SIGNALS) {
      const s = health.signals[name];
      if (!s) continue;
      const node = card(name, title);
      node.dataset.value = s.value === null ? "" : String(s.value);
      node.dataset.level = s.level;
      node.dataset.warning = String(s.warning);
      node.dataset.critical = String(s.critical);
      node.dataset.direction = s.direction;
      node.querySelector(".value").textContent = fmt(s.value);
      node.querySelector(".unit").textContent = s.value === null ? "" : UNITS[s.unit] || s.unit;
      const level = node.querySelector(".level");
      level.dataset.level = s.value === null ? "" : s.level;
      level.textContent = s.value === null ? "no data" : s.level;
      node.querySelector(".band-wrap").replaceWith(band(s));
      node.querySelector(".note").textContent = note(name, s);
    }
    const overall = $("overall");
    overall.dataset.level = health.level;
    overall.textContent = health.level;
    const breaker = $("breaker");
    breaker.dataset.state = health.breaker || "";
    breaker.textContent = health.breaker || "n/a";
    // The edges' write outboxes: writes kept while SQS was out of their reach.
    const outbox = $("edge-outbox");
    const o = health.edgeOutbox;
    outbox.dataset.level = o ? o.level : "";
    outbox.dataset.entries = o ? String(o.entries) : "";
    outbox.textContent = !o
      ? "none reported"
      : o.entries === 0
        ? "empty"
        : o.entries + " waiting · oldest " + fmt(o.oldestAgeSeconds) + " s";
  }

  // ── depth chart ───────────────────────────────────────────────────────

  // The chart's top: four grid steps of 1, 2 or 5 × 10^k above the data.
  function niceMax(v) {
    const raw = Math.max(4, v * 1.1) / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    return step * 4;
  }

  function renderChart(doc) {
    const chart = $("depth-chart");
    const { width, height, left, right, top, bottom } = CHART;
    const points = doc.depths.points;
    const windowMs = doc.depths.windowSeconds * 1000;
    const start = doc.now - windowMs;
    const values = points.flatMap((p) => [p.queue, p.dlq]).filter((v) => v !== null);
    const max = niceMax(values.length ? Math.max(...values) : 0);
    const x = (at) => left + ((at - start) / windowMs) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);

    chart.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      chart.append(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    for (let m = 60; m >= 0; m -= 15) {
      const at = doc.now - m * 60000;
      chart.append(svg("text", { class: "axis", x: x(at), y: height - 6, "text-anchor": m === 0 ? "end" : "middle" },
        m === 0 ? "now" : "−" + m + " min"));
    }
    for (const series of ["queue", "dlq"]) {
      const shown = points.filter((p) => p[series] !== null && p.at >= start);
      const line = svg("polyline", {
        id: series + "-line",
        class: "line " + series,
        "data-count": String(shown.length),
        points: shown.map((p) => x(p.at).toFixed(1) + "," + y(p[series]).toFixed(1)).join(" "),
      });
      chart.append(line);
      const last = shown[shown.length - 1];
      if (last) chart.append(svg("circle", { class: "dot " + series, cx: x(last.at), cy: y(last[series]), r: 3.5 }));
    }
    if (!points.length) {
      chart.append(svg("text", { class: "nodata", x: width / 2, y: height / 2, "text-anchor": "middle" },
        "no samples yet"));
    }
    chart.dataset.points = String(points.length);
    const last = points[points.length - 1];
    $("queue-now").textContent = last ? fmt(last.queue) : "–";
    $("dlq-now").textContent = last ? fmt(last.dlq) : "–";
    $("sample-every").textContent = String(doc.depths.sampleEverySeconds);
  }

  // ── dead letters ──────────────────────────────────────────────────────

  function when(at) {
    const d = new Date(at);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function renderDeadLetters(doc) {
    const body = $("dead-letters").querySelector("tbody");
    const rows = doc.deadLetters.map((d) => {
      const tr = el("tr", { "data-correlation-id": d.correlationId || "", "data-reason": d.reason });
      const cls = el("td");
      cls.append(el("span", { class: "class " + d.errorClass }, d.errorClass));
      tr.append(
        el("td", { class: "when" }, when(d.at)),
        el("td", { class: "id" }, d.correlationId || "–"),
        el("td", {}, d.kind),
        cls,
        el("td", {}, d.lastStatus === null ? "–" : String(d.lastStatus)),
        el("td", { class: "reason" }, d.reason),
        el("td", { class: "attempts" }, String(d.attempts))
      );
      return tr;
    });
    if (!rows.length) {
      const tr = el("tr", { class: "empty" });
      tr.append(el("td", { colspan: "7" }, "No dead letters."));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const count = $("dead-letter-count");
    count.dataset.count = String(doc.deadLetters.length);
    count.textContent = String(doc.deadLetters.length);
  }

  // ── polling ───────────────────────────────────────────────────────────

  async function json(path) {
    const resp = await fetch(path, { cache: "no-store" });
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
    return resp.json();
  }

  async function poll() {
    const status = $("status");
    try {
      const [health, doc] = await Promise.all([json("/v1/health"), json("/v1/dashboard")]);
      renderSignals(health);
      renderChart(doc);
      renderDeadLetters(doc);
      polls += 1;
      status.classList.remove("stale");
      status.dataset.updated = String(Date.now());
      status.dataset.polls = String(polls);
      status.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      status.classList.add("stale");
      status.textContent = "origin unreachable: " + e.message;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
