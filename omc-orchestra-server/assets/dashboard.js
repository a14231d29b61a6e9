// omc-orchestra dashboard: one WebSocket to /ws for live updates, plain HTTP for snapshots.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = {
    config: { jobsUrl: null, gatewayUrl: null, loggingUrl: null, authRequired: false },
    token: localStorage.getItem("orchestra.token") || "",
    services: [], latency: {}, alerts: new Map(), logs: [], logKeys: new Set(), logsLoaded: false,
    events: [], eventIds: new Set(),
    series: { cpu: [], mem: [], disk: [], net: [] }, gateway: null, socket: null, retry: 0, reconnect: null,
  };
  const HOUR_POINTS = 360;

  const headers = () => (state.token ? { Authorization: "Bearer " + state.token } : {});
  async function api(url, options = {}) {
    const res = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
    if (res.status === 401) { askForToken("the token was refused"); throw new Error("unauthorized"); }
    if (!res.ok) throw new Error(res.status + " " + url);
    const type = res.headers.get("content-type") || "";
    return type.includes("json") ? res.json() : res.text();
  }
  const text = (v) => (v === undefined || v === null ? "" : String(v));
  const esc = (v) => text(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const ago = (t) => {
    if (!t) return "–";
    const s = Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));
    return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  };
  const pick = (o, ...keys) => { for (const k of keys) { if (o && o[k] !== undefined && o[k] !== null) return o[k]; } return undefined; };

  // ---- connection -------------------------------------------------------------------
  function setConn(up, label) {
    const el = $("conn");
    el.className = "conn " + (up ? "up" : "down");
    el.dataset.state = up ? "live" : "disconnected";
    el.textContent = label;
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = state.token ? "?token=" + encodeURIComponent(state.token) : "";
    const socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    state.socket = socket;
    socket.onopen = () => {
      state.retry = 0;
      setConn(true, "live");
      send("subscribe", { channels: ["services", "alerts", "metrics", "events", "logs", "jobs"] });
      send("get_system_dashboard", {});
      refreshAll();
    };
    socket.onmessage = (msg) => { try { onMessage(JSON.parse(msg.data)); } catch (e) { console.warn(e); } };
    socket.onclose = () => {
      if (state.socket !== socket) return; // replaced by a connection with a new token
      const wait = Math.min(10000, 500 * 2 ** state.retry++);
      setConn(false, `disconnected, reconnecting in ${Math.round(wait / 1000)} s…`);
      state.reconnect = setTimeout(connect, wait);
    };
    socket.onerror = () => socket.close();
  }
  function send(event, data) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify({ event, data }));
  }
  let servicesTimer = null;
  // Job events can come by the thousand; the stats they trigger (which now count waiting
  // jobs per type) are asked for at most once a second.
  let jobsTimer = null;
  function onMessage({ event, data }) {
    switch (event) {
      case "service_update":
        notePayload(data);
        clearTimeout(servicesTimer);
        servicesTimer = setTimeout(loadServices, 150);
        break;
      case "alert": addAlert(data); break;
      case "metric": addMetric(pick(data, "data") || data); break;
      case "log": addLog(pick(data, "data") || data); break;
      case "event": addEvent(data); break;
      case "job":
        if (!jobsTimer) jobsTimer = setTimeout(() => { jobsTimer = null; loadJobs(); }, 1000);
        break;
      case "system_dashboard": renderSummary(data); break;
      case "lagged": send("get_system_dashboard", {}); loadServices(); break;
      default: break;
    }
  }

  // ---- services ---------------------------------------------------------------------
  function notePayload(event) {
    const d = (event && event.data) || {};
    const inst = d.instance || d;
    const ms = pick(d, "latencyMs", "responseTimeMs");
    if (inst && inst.id && ms !== undefined) state.latency[inst.id] = ms;
  }
  async function loadServices() {
    try { state.services = await api("/registry/services"); } catch (e) { return; }
    renderServices();
    send("get_system_dashboard", {});
  }
  async function loadResponseTimes() {
    await Promise.all(state.services.slice(0, 50).map(async (s) => {
      try {
        const m = await api(`/registry/services/${encodeURIComponent(s.id)}/metrics`);
        if (m.lastResponseMs !== undefined && m.lastResponseMs !== null) state.latency[s.id] = m.lastResponseMs;
      } catch (e) { /* gone meanwhile */ }
    }));
    renderServices();
  }
  function renderServices() {
    const needle = $("svc-filter").value.trim().toLowerCase();
    const shown = state.services.filter((s) => !needle ||
      [s.name, s.host, s.version, s.type, ...(s.tags || [])].join(" ").toLowerCase().includes(needle));
    // Grouped by service name: a line per service, then its instances.
    const groups = new Map();
    for (const s of shown) { if (!groups.has(s.name)) groups.set(s.name, []); groups.get(s.name).push(s); }
    $("services").tBodies[0].innerHTML = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, list]) => {
      const up = list.filter((s) => s.status !== "critical").length;
      return `<tr class="group" data-group="${esc(name)}"><td colspan="7"><b>${esc(name)}</b> · ${list.length} instance${list.length === 1 ? "" : "s"} · ${up} healthy</td></tr>` +
        list.map(instanceRow).join("");
    }).join("");
    $("services-empty").hidden = state.services.length > 0;
    const healthy = state.services.filter((s) => s.status !== "critical").length;
    $("svc-counts").innerHTML = `<span class="badge passing">${healthy} healthy</span>
      <span class="badge critical">${state.services.length - healthy} unhealthy</span>`;
  }
  function instanceRow(s) {
    return `
      <tr data-service="${esc(s.name)}" data-id="${esc(s.id)}" data-status="${esc(s.status)}">
        <td><span class="badge ${esc(s.status)}">${esc(s.status)}</span></td>
        <td>${esc(s.name)}</td><td>${esc(s.version)}</td><td>${esc(s.host)}:${esc(s.port)}</td>
        <td>${(s.tags || []).map(esc).join(", ")}</td>
        <td class="heartbeat" title="${esc(s.lastHeartbeat)}">${ago(s.lastHeartbeat)}</td>
        <td>${state.latency[s.id] !== undefined ? Number(state.latency[s.id]).toFixed(1) + " ms" : "–"}</td>
      </tr>`;
  }
  // An instance's health detail (status, since, probe results) and what it depends on.
  $("services").onclick = async (e) => {
    const row = e.target.closest("tr[data-id]");
    if (!row) return;
    const id = row.dataset.id;
    const instance = state.services.find((s) => s.id === id) || {};
    const health = await api(`/registry/services/${encodeURIComponent(id)}/health`).catch(() => null);
    $("svc-detail").hidden = false;
    $("svc-detail").textContent = JSON.stringify({ id, dependencies: instance.dependencies || [], health }, null, 2);
  };
  function renderSummary(d) {
    const s = (d && d.services) || {};
    const names = new Set(state.services.map((i) => i.name)).size;
    $("summary").textContent = `${names} services · ${text(s.total ?? 0)} instances · ${text(s.healthy ?? 0)} healthy · ${text(s.unhealthy ?? 0)} unhealthy`;
    for (const a of (d && d.recentAlerts) || []) addAlert(a, true);
  }

  // ---- alerts -----------------------------------------------------------------------
  function addAlert(event, quiet) {
    const a = (event && event.data && typeof event.data === "object" ? event.data : event) || {};
    if (!a.rule && !a.name) return;
    // `inhibited_by` comes and goes on the same alert, so it is no part of its key.
    const { inhibited_by: inhibitedBy, ...labels } = a.labels || {};
    const key = text(a.rule || a.name) + "|" + JSON.stringify(labels);
    const known = state.alerts.get(key);
    const at = a.at || (event && event.time);
    // An active alert from GET /alerts (no `at`) says only whether it is inhibited now.
    if (known && !at) {
      known.inhibitedBy = inhibitedBy;
      if (!quiet) renderAlerts();
      return;
    }
    if (known && text(known.at) > text(at)) return;
    const inhibited = inhibitedBy || (known && known.inhibitedBy);
    state.alerts.set(key, { ...a, labels, at, inhibitedBy: inhibited, since: a.firingSince || a.since || at });
    if (!quiet) renderAlerts();
  }
  function renderAlerts() {
    const items = [...state.alerts.values()]
      .sort((x, y) => (x.state === y.state ? text(y.at).localeCompare(text(x.at)) : x.state === "firing" ? -1 : 1))
      .slice(0, 50);
    $("alerts").innerHTML = items.map((a) => {
      const st = text(a.state || "firing").toLowerCase();
      const labels = a.labels || {};
      const subject = labels.service || labels.dependency || labels.host || labels.jobType || "";
      const when = st === "resolved" ? `resolved ${ago(a.at)}` : `since ${ago(a.since)}`;
      const inhibited = st !== "resolved" && a.inhibitedBy ? ` <span class="muted">inhibited by ${esc(a.inhibitedBy)}, not sent</span>` : "";
      return `<li data-alert-state="${esc(st)}" data-alert-rule="${esc(a.rule || a.name)}" data-alert-subject="${esc(subject)}">
        <span class="badge ${esc(st)}">${esc(st)}</span>
        <span class="badge ${a.severity === "critical" ? "critical" : "warning"}">${esc(a.severity || "warning")}</span>
        <b>${esc(subject)}</b> ${esc(a.summary || a.rule || a.name)} <span class="muted">${when}</span>${inhibited}</li>`;
    }).join("");
    $("alerts-empty").hidden = items.length > 0;
  }
  async function loadAlerts() {
    try {
      const body = await api("/alerts");
      const list = Array.isArray(body) ? body : [...(body.history || []).slice().reverse(), ...(body.active || [])];
      list.forEach((a) => addAlert(a, true));
      renderAlerts();
    } catch (e) { /* no alert API on this server */ }
  }

  // ---- system metrics ---------------------------------------------------------------
  function percent(v) { return v === undefined || v === null || isNaN(v) ? undefined : Number(v); }
  function addMetric(m) {
    if (!m || !m.cpu) return;
    // The history loaded at start and the live feed overlap: plot each sample once.
    const sampled = new Date(m.at).getTime();
    if (state.lastSample !== undefined && !(sampled > state.lastSample)) return;
    state.lastSample = sampled;
    push("cpu", percent(m.cpu.totalPercent), "%");
    push("mem", percent(m.memoryPercent), "%");
    const disks = (m.disks || []).map((d) => 100 - d.freePercent);
    if (disks.length) push("disk", Math.max(...disks), "%");
    const bytes = (m.networks || []).filter((n) => n.interface !== "lo")
      .reduce((sum, n) => sum + n.receivedBytes + n.transmittedBytes, 0);
    const at = new Date(m.at).getTime();
    const last = state.lastNet;
    state.lastNet = { at, bytes };
    if (last && at > last.at && bytes >= last.bytes) push("net", ((bytes - last.bytes) * 1000) / (at - last.at), "B/s");
  }
  function push(name, value, unit) {
    if (value === undefined || isNaN(value)) return;
    const s = state.series[name];
    s.push(value);
    if (s.length > HOUR_POINTS) s.shift();
    const label = { cpu: "cpu-now", mem: "mem-now", disk: "disk-now", net: "net-now" }[name];
    $(label).textContent = unit === "%" ? value.toFixed(1) + " %" : human(value) + "/s";
    draw($("chart-" + name), s, unit === "%" ? 100 : Math.max(...s, 1));
  }
  function human(n) { const u = ["B", "KB", "MB", "GB"]; let i = 0; while (n >= 1024 && i < 3) { n /= 1024; i++; } return n.toFixed(1) + " " + u[i]; }
  function draw(canvas, values, max) {
    const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#58a6ff"; g.lineWidth = 1.5; g.beginPath();
    values.forEach((v, i) => {
      const x = values.length < 2 ? w : (i / (values.length - 1)) * w;
      const y = h - (Math.min(v, max) / max) * (h - 4) - 2;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
  async function loadSystem() {
    try {
      const body = await api("/system/metrics");
      const samples = Array.isArray(body) ? body : (body.history && body.history.length ? body.history : [body.latest].filter(Boolean));
      samples.slice(-HOUR_POINTS).forEach(addMetric);
    } catch (e) { /* no system metrics on this server */ }
  }

  // ---- gateway ----------------------------------------------------------------------
  function promSum(textBody, name, test) {
    let total = 0;
    for (const line of textBody.split("\n")) {
      if (!line.startsWith(name)) continue;
      const labels = line.slice(name.length, line.lastIndexOf(" "));
      if (test && !test(labels)) continue;
      total += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
    }
    return total;
  }
  // The proxied requests only (`orchestra_gateway_*`), not the gateway's admin calls such
  // as this page's own polling: per route and service, a rate, a 5xx rate and p50/p99
  // from the latency histogram's buckets between two scrapes.
  function gatewaySeries(body) {
    const series = new Map();
    const entry = (labels) => {
      const route = (labels.match(/route="([^"]*)"/) || [])[1] || "";
      const service = (labels.match(/service="([^"]*)"/) || [])[1] || "";
      const key = route + "\u0000" + service;
      if (!series.has(key)) series.set(key, { route, service, req: 0, err: 0, buckets: new Map() });
      return series.get(key);
    };
    for (const line of body.split("\n")) {
      const value = Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
      const labels = line.slice(line.indexOf("{"), line.lastIndexOf(" "));
      if (line.startsWith("orchestra_gateway_requests_total{")) {
        const e = entry(labels);
        e.req += value;
        if (/status="5/.test(labels)) e.err += value;
      } else if (line.startsWith("orchestra_gateway_request_duration_seconds_bucket{")) {
        const le = (labels.match(/le="([^"]*)"/) || [])[1];
        const e = entry(labels);
        e.buckets.set(le, (e.buckets.get(le) || 0) + value);
      }
    }
    return series;
  }
  function quantile(now, prev, q) {
    const bounds = [...now.buckets.keys()].sort((x, y) => (x === "+Inf" ? 1 : y === "+Inf" ? -1 : Number(x) - Number(y)));
    const count = (le) => (now.buckets.get(le) || 0) - ((prev && prev.buckets.get(le)) || 0);
    const total = bounds.length ? count(bounds[bounds.length - 1]) : 0;
    if (total <= 0) return undefined;
    const bound = bounds.find((le) => count(le) >= q * total);
    return bound === undefined || bound === "+Inf" ? undefined : Number(bound) * 1000;
  }
  const ms = (v) => (v === undefined ? "–" : "≤ " + (v < 1 ? v.toFixed(1) : Math.round(v)) + " ms");
  async function loadGateway() {
    if (!state.config.gatewayUrl) return;
    let body;
    try { body = await api(state.config.gatewayUrl + "/metrics"); } catch (e) { return; }
    const now = { t: Date.now(), series: gatewaySeries(body) };
    const prev = state.gateway;
    loadBreakers();
    // Two scrapes close together (the page's start asks twice) make a rate of noise.
    if (prev && now.t - prev.t < 2000) return;
    state.gateway = now;
    if (!prev) return;
    const dt = (now.t - prev.t) / 1000;
    let req = 0, err = 0;
    const all = { buckets: new Map() }, before = { buckets: new Map() };
    const rows = [];
    for (const [key, e] of now.series) {
      const p = prev.series.get(key);
      const r = (e.req - (p ? p.req : 0)) / dt, x = (e.err - (p ? p.err : 0)) / dt;
      req += r; err += x;
      for (const [le, v] of e.buckets) all.buckets.set(le, (all.buckets.get(le) || 0) + v);
      if (p) for (const [le, v] of p.buckets) before.buckets.set(le, (before.buckets.get(le) || 0) + v);
      rows.push(`<tr data-route="${esc(e.route)}" data-service="${esc(e.service)}"><td>${esc(e.route)}</td><td>${esc(e.service)}</td>
        <td class="rps">${r.toFixed(1)}</td><td>${x.toFixed(2)}</td><td>${ms(quantile(e, p, 0.5))}</td><td>${ms(quantile(e, p, 0.99))}</td></tr>`);
    }
    $("gw-rps").textContent = req.toFixed(1);
    $("gw-err").textContent = err.toFixed(2);
    $("gw-lat").textContent = `${ms(quantile(all, before, 0.5))} / ${ms(quantile(all, before, 0.99))}`;
    $("gw-routes").tBodies[0].innerHTML = rows.join("");
  }
  async function loadBreakers() {
    let list;
    try { list = await api(state.config.gatewayUrl + "/gateway/breakers"); } catch (e) { return; }
    $("gw-breakers").innerHTML = (list || []).map((b) =>
      `<li data-breaker="${esc(b.instance)}"><span class="badge ${b.phase === "closed" ? "passing" : "critical"}">${esc(b.phase)}</span> ${esc(b.service)} ${esc(b.instance)}
        <span class="muted">${esc(b.windowFailures)}/${esc(b.windowRequests)} failed</span></li>`).join("") || '<li class="muted">none yet</li>';
  }

  // ---- jobs -------------------------------------------------------------------------
  async function loadJobs() {
    if (!state.config.jobsUrl) return;
    try {
      const stats = await api(state.config.jobsUrl + "/jobs/stats");
      const flat = Object.entries(stats).filter(([, v]) => typeof v === "number");
      const nested = Object.entries(stats).filter(([k, v]) => v && typeof v === "object" && !Array.isArray(v) && /ByPriority|lastMinute/.test(k));
      $("job-stats").innerHTML = flat.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("") +
        nested.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${Object.entries(v).map(([a, b]) => `${esc(a)} ${esc(typeof b === "object" ? JSON.stringify(b) : b)}`).join(" · ")}</dd>`).join("");
      const unattended = stats.unattended || [];
      $("job-unattended").hidden = unattended.length === 0;
      $("job-unattended").innerHTML = unattended.map((u) => `<b>${esc(u.type)}</b>: ${esc(u.waiting)} waiting, no worker`).join("<br>");
      const types = await api(state.config.jobsUrl + "/jobs/types").catch(() => []);
      $("job-types").tBodies[0].innerHTML = (types || []).map((t) => `<tr data-type="${esc(t.type)}"><td>${esc(t.type)}</td>
        <td>${esc(t.waiting)}</td><td>${esc(t.delayed)}</td><td>${esc(t.active)}</td><td class="failed">${esc(t.failed)}</td></tr>`).join("");
      const wanted = $("job-state").value;
      const found = await api(`${state.config.jobsUrl}/jobs?state=${encodeURIComponent(wanted)}&limit=20`).catch(() => []);
      const list = Array.isArray(found) ? found : found.jobs || found.items || [];
      const action = (j) => wanted === "failed"
        ? `<button type="button" class="job-retry" data-job="${esc(j.id)}">Retry</button>`
        : wanted === "completed" ? "" : `<button type="button" class="job-cancel" data-job="${esc(j.id)}">Cancel</button>`;
      $("job-failures").innerHTML = list.map((j) => `<li data-job="${esc(j.id)}"><b>${esc(j.type)}</b>
        <a href="#" class="job-open" data-job="${esc(j.id)}">${esc(j.id)}</a> <span class="muted">${esc(j.attempts)}/${esc(j.maxAttempts)}</span>
        <span class="error">${esc(j.error)}</span> ${action(j)}</li>`).join("") || '<li class="muted">none</li>';
      const schedules = await api(state.config.jobsUrl + "/schedules").catch(() => []);
      $("job-schedules").innerHTML = (schedules || []).map((s) => `<li data-schedule="${esc(s.id)}"><b>${esc(s.id)}</b>
        <code>${esc(s.cron)}</code> ${esc(s.job && s.job.type)} <span class="muted">${s.paused ? "paused" : "next " + esc(text(s.nextRunAt).slice(0, 19).replace("T", " "))}</span></li>`).join("") || '<li class="muted">none</li>';
      const workers = await api(state.config.jobsUrl + "/jobs/workers").catch(() => []);
      $("job-workers").innerHTML = (workers || []).map((w) => `<li><b>${esc(w.worker)}</b> ${(w.types || []).map(esc).join(", ")}
        <span class="muted">${esc(w.inFlight)} in flight · seen ${esc(w.lastSeenSecs)} s ago</span></li>`).join("") || '<li class="muted">none seen in the last minute</li>';
    } catch (e) { /* jobs server unreachable */ }
  }
  $("job-failures").onclick = async (e) => {
    const id = e.target.dataset && e.target.dataset.job;
    if (!id || !state.config.jobsUrl) return;
    e.preventDefault();
    if (e.target.classList.contains("job-retry")) {
      await api(`${state.config.jobsUrl}/jobs/${encodeURIComponent(id)}/retry`, { method: "POST" }).catch(() => {});
      loadJobs();
    } else if (e.target.classList.contains("job-cancel")) {
      await api(`${state.config.jobsUrl}/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }).catch(() => {});
      loadJobs();
    } else if (e.target.classList.contains("job-open")) {
      const job = await api(`${state.config.jobsUrl}/jobs/${encodeURIComponent(id)}`).catch(() => null);
      $("job-detail").hidden = !job;
      if (job) $("job-detail").textContent = JSON.stringify(job, null, 2);
      // Each failed attempt, oldest first: when, on which worker, with what error.
      const attempts = (job && job.failedAttempts) || [];
      $("job-attempts").hidden = attempts.length === 0;
      $("job-attempts").innerHTML = attempts.map((a) => `<li data-attempt="${esc(a.attempt)}"><b>attempt ${esc(a.attempt)}</b>
        <span class="muted">${esc(text(a.failedAt).slice(0, 19).replace("T", " "))}${a.worker ? " on " + esc(a.worker) : ""}</span>
        <span class="error">${esc(a.error)}</span></li>`).join("");
    }
  };
  $("job-state").onchange = loadJobs;
  $("retry-failed").onclick = async () => {
    if (!state.config.jobsUrl) return;
    await api(state.config.jobsUrl + "/jobs/retry-failed", { method: "POST" }).catch(() => {});
    loadJobs();
  };

  // ---- events -----------------------------------------------------------------------
  function addEvent(e) {
    if (!e || !e.id || state.eventIds.has(e.id)) return;
    state.eventIds.add(e.id);
    state.events.push(e);
    if (state.events.length > 200) state.eventIds.delete(state.events.shift().id);
    renderEvents();
  }
  function renderEvents() {
    const type = $("ev-type").value.trim().toUpperCase();
    const shown = state.events.filter((e) => !type || text(e.type).includes(type)).slice(-50).reverse();
    $("events").innerHTML = shown.map((e) => `<li data-event="${esc(e.id)}" data-type="${esc(e.type)}">
      <span class="muted">${esc(text(e.time).slice(0, 19).replace("T", " "))}</span> <b>${esc(e.type)}</b> ${esc(e.source)}
      <span class="muted">${esc(e.priority)}</span></li>`).join("") || '<li class="muted">none yet</li>';
  }
  async function loadEvents() {
    const history = await api("/events?limit=50").catch(() => []);
    (Array.isArray(history) ? history : []).slice().sort((a, b) => text(a.time).localeCompare(text(b.time))).forEach(addEvent);
    const dead = await api("/events/dead-letters?limit=20").catch(() => []);
    $("dead-letters").innerHTML = (Array.isArray(dead) ? dead : []).map((d) => `<li><b>${esc(d.event ? d.event.type : d.eventId)}</b>
      ${esc(d.group)} <span class="muted">${esc(d.deliveries)} deliveries · ${esc(d.reason)}</span></li>`).join("") || '<li class="muted">none</li>';
  }
  $("ev-type").oninput = renderEvents;

  // ---- logs -------------------------------------------------------------------------
  // The first page of records and the live feed overlap: a record is shown once.
  const logKey = (r) => [r.timestamp, r.level, r.service, r.message, r.requestId].map(text).join("\u0000");
  function addLog(r) {
    if (!r || !r.message) return;
    const key = logKey(r);
    if (state.logKeys.has(key)) return;
    state.logKeys.add(key);
    state.logs.push(r);
    if (state.logs.length > 500) state.logKeys.delete(logKey(state.logs.shift()));
    state.logs.sort((a, b) => text(a.timestamp).localeCompare(text(b.timestamp)));
    renderLogs();
  }
  async function loadLogs() {
    if (!state.config.loggingUrl || state.logsLoaded) return;
    state.logsLoaded = true;
    try {
      const body = await api(state.config.loggingUrl + "/logs?limit=50");
      const records = Array.isArray(body) ? body : body.records || [];
      records.slice().reverse().forEach(addLog);
    } catch (e) { /* logging server unreachable */ }
  }
  function renderLogs() {
    const level = $("log-level").value, service = $("log-service").value.trim();
    const order = ["error", "warn", "info", "http", "verbose", "debug"];
    const shown = state.logs.filter((r) => (!level || order.indexOf(r.level) <= order.indexOf(level)) && (!service || text(r.service).includes(service)));
    $("logs").innerHTML = shown.slice(-200).map((r) =>
      `<span class="lvl-${esc(r.level)}">${esc(text(r.timestamp).slice(0, 23).replace("T", " "))} ${esc(text(r.level).padEnd(7))} ${esc(r.service)}  ${esc(r.message)}</span>`).join("\n");
    $("logs").scrollTop = $("logs").scrollHeight;
  }

  // ---- start ------------------------------------------------------------------------
  function askForToken(reason) {
    $("login").hidden = false;
    $("main").hidden = true;
    $("login-error").textContent = reason || "";
  }
  $("login-form").onsubmit = (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    localStorage.setItem("orchestra.token", state.token);
    $("login").hidden = true;
    $("main").hidden = false;
    // Connect with the new token now, not after the back-off a refused token built up.
    const old = state.socket;
    clearTimeout(state.reconnect);
    state.retry = 0;
    connect();
    if (old) old.close();
  };
  $("svc-filter").oninput = renderServices;
  $("log-level").onchange = renderLogs;
  $("log-service").oninput = renderLogs;
  function refreshAll() { loadServices().then(loadResponseTimes); loadAlerts(); loadSystem(); loadJobs(); loadGateway(); loadLogs(); loadEvents(); }

  // The other servers' data comes through this server (`/dashboard/api/{server}`), so the
  // page needs only this port.
  const sibling = (port, server) => (port ? `/dashboard/api/${server}` : null);
  fetch("/dashboard/config.json").then((r) => r.json()).then((config) => {
    state.config = { ...state.config, authRequired: config.authRequired,
      jobsUrl: sibling(config.jobsPort, "jobs"), gatewayUrl: sibling(config.gatewayPort, "gateway"),
      loggingUrl: sibling(config.loggingPort, "logging") };
    if (state.config.authRequired && !state.token) { askForToken(); return; }
    refreshAll();
    connect();
  }).catch(connect);
  // Heartbeats send no event: the list is read again so their ages reset, and the ages
  // tick in between.
  setInterval(() => { loadGateway(); loadServices(); }, 5000);
  setInterval(renderServices, 1000);
  setInterval(loadJobs, 10000);
  setInterval(loadResponseTimes, 10000);
})();
