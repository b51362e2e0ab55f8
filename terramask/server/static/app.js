// The TerraMask page: a scene on a Leaflet map, clicks and boxes answered at once, segment
// and ask as jobs with progress, and a layer list with scores, toggles and downloads.
// Plain script, no build step; Leaflet is vendored under /static/vendor (see web/).
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const state = {
    config: null, scene: null, info: null, token: sessionStorage.getItem("terramask-token"),
    tool: "positive", current: { points: [], negatives: [], box: null }, corner: null,
    layers: [], lastPrompt: null, busy: 0, jobs: {},
  };
  const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
    "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3"];

  // ------------------------------------------------------------------ requests

  function headers(extra = {}) {
    const h = { ...extra };
    if (state.token) h.Authorization = `Bearer ${state.token}`;
    return h;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: headers(options.body ? { "Content-Type": "application/json" } : {}),
    });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (response.status === 401) {
      $("#auth").hidden = false;
    }
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function say(text, isError = false) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  // ------------------------------------------------------------------ map

  const map = L.map("map", { doubleClickZoom: false, keyboard: true, zoomControl: true,
    attributionControl: true, worldCopyJump: false });
  map.setView([0, 0], 2);
  const currentLayer = L.featureGroup().addTo(map);  // the object being clicked
  const marks = L.layerGroup().addTo(map);          // its clicks and box
  let sceneLayer = null;

  const AuthTileLayer = L.TileLayer.extend({
    createTile(coords, done) {
      const tile = document.createElement("img");
      tile.alt = "";
      if (!state.token) {
        tile.onload = () => done(null, tile);
        tile.onerror = (e) => done(e, tile);
        tile.src = this.getTileUrl(coords);
        return tile;
      }
      fetch(this.getTileUrl(coords), { headers: headers() })
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.status))))
        .then((blob) => {
          tile.onload = () => { URL.revokeObjectURL(tile.src); done(null, tile); };
          tile.src = URL.createObjectURL(blob);
        })
        .catch((e) => done(e, tile));
      return tile;
    },
  });

  async function showScene(id) {
    state.scene = id;
    clearCurrent();
    say(`Opening ${id}…`);
    try {
      state.info = await api(`/scenes/${encodeId(id)}`);
    } catch (e) {
      say(e.message, true);
      return;
    }
    const info = state.info;
    $("#scene-info").textContent =
      `${info.width} × ${info.height} px, ${info.crs || "no CRS"}, bands ${info.bands.join(",")}`;
    if (sceneLayer) map.removeLayer(sceneLayer);
    sceneLayer = null;
    if (!info.georeferenced) {
      say("This scene has no georeferencing, so it cannot be shown on a map; the API still " +
        "segments it in pixel coordinates.", true);
      return;
    }
    const [w, s, e, n] = info.bounds_wgs84;
    const bounds = L.latLngBounds([s, w], [n, e]);
    // Go to the scene first, and hide the layer when zoomed far out: Leaflet walks every
    // native tile of the view, which far below minNativeZoom is billions (a frozen page).
    map.fitBounds(bounds);
    sceneLayer = new AuthTileLayer(info.tiles.url, {
      bounds, tileSize: info.tiles.tile_size, minZoom: Math.max(0, info.tiles.minzoom - 4),
      maxZoom: 24, minNativeZoom: info.tiles.minzoom, maxNativeZoom: info.tiles.maxzoom,
      attribution: `${info.name} (TerraMask)`,
    });
    sceneLayer.once("load", () => { document.body.dataset.sceneLoaded = "1"; });
    sceneLayer.addTo(map);
    say(`${info.name}: click the scene to segment an object.`);
  }

  function encodeId(id) {
    return id.split("/").map(encodeURIComponent).join("/");
  }

  // ------------------------------------------------------------------ clicks and boxes

  function setTool(tool) {
    state.tool = tool;
    state.corner = null;
    document.querySelectorAll("input[name=tool]").forEach((r) => { r.checked = r.value === tool; });
    const container = map.getContainer();
    container.classList.remove("tool-pan", "tool-positive", "tool-negative", "tool-box");
    container.classList.add(`tool-${tool}`);
  }

  function useTool(latlng) {
    const xy = [latlng.lng, latlng.lat];
    if (state.tool === "pan") return;
    if (state.info && !state.info.georeferenced) {
      // the map has no place for this scene: a click would be sent as WGS84 and refused
      say("This scene has no georeferencing, so a click on the map cannot be placed on it; " +
        "send clicks in pixel coordinates to POST /scenes/{id}/prompt instead.", true);
      return;
    }
    if (state.tool === "positive") state.current.points.push(xy);
    else if (state.tool === "negative") state.current.negatives.push(xy);
    else if (state.tool === "box") {
      if (!state.corner) {
        state.corner = xy;
        drawMarks();
        say("Box: now click the opposite corner.");
        return;
      }
      const [x1, y1] = state.corner;
      state.corner = null;
      state.current.box = [Math.min(x1, xy[0]), Math.min(y1, xy[1]),
        Math.max(x1, xy[0]), Math.max(y1, xy[1])];
    }
    drawMarks();
    runPrompt();
  }

  function drawMarks() {
    marks.clearLayers();
    const c = state.current;
    c.points.forEach(([x, y]) => L.circleMarker([y, x], { radius: 6, color: "#fff", weight: 2,
      fillColor: "#1a9c3c", fillOpacity: 1 }).addTo(marks));
    c.negatives.forEach(([x, y]) => L.circleMarker([y, x], { radius: 6, color: "#fff", weight: 2,
      fillColor: "#d0202f", fillOpacity: 1 }).addTo(marks));
    if (c.box) {
      const [x1, y1, x2, y2] = c.box;
      L.rectangle([[y1, x1], [y2, x2]], { color: "#f5d000", weight: 2, fill: false }).addTo(marks);
    }
    if (state.corner) {
      L.circleMarker([state.corner[1], state.corner[0]], { radius: 4, color: "#f5d000" })
        .addTo(marks);
    }
  }

  let promptSeq = 0;
  async function runPrompt() {
    const c = state.current;
    if (!c.points.length && !c.box) {
      $("#click-result").textContent = "Add an object point or a box for the not-object points " +
        "to refine.";
      return;
    }
    const seq = ++promptSeq;
    const body = { points: c.points, negatives: c.negatives, boxes: c.box ? [c.box] : [],
      crs: "EPSG:4326" };
    state.busy += 1;
    document.body.dataset.busy = String(state.busy);
    $("#click-result").textContent = "Segmenting…";
    try {
      const result = await api(`/scenes/${encodeId(state.scene)}/prompt`, {
        method: "POST", body: JSON.stringify(body),
      });
      if (seq !== promptSeq) return;  // a newer click has been sent
      state.lastPrompt = result;
      currentLayer.clearLayers();
      L.geoJSON(result, { style: { color: "#ff7800", weight: 2, fillOpacity: 0.35 } })
        .addTo(currentLayer);
      const scores = result.objects.map((o) => (o.score ?? 0).toFixed(3)).join(", ");
      const cached = result.embedding.every((s) => s !== "computed") ? "cached tile" : "new tile";
      $("#click-result").textContent = result.features.length
        ? `Score ${scores} · ${Math.round(result.timings_ms.total)} ms (${cached})`
        : `Nothing found under the clicks · ${Math.round(result.timings_ms.total)} ms`;
      document.body.dataset.prompts = String(Number(document.body.dataset.prompts || 0) + 1);
    } catch (e) {
      if (seq !== promptSeq) return;
      $("#click-result").textContent = e.message;
      $("#click-result").classList.add("error");
      undoLast();
    } finally {
      state.busy -= 1;
      document.body.dataset.busy = String(state.busy);
    }
  }

  function undoLast() {
    const c = state.current;
    if (state.tool === "positive") c.points.pop();
    else if (state.tool === "negative") c.negatives.pop();
    else if (state.tool === "box") c.box = null;
    drawMarks();
    setTimeout(() => $("#click-result").classList.remove("error"), 4000);
  }

  function clearCurrent() {
    state.current = { points: [], negatives: [], box: null };
    state.corner = null;
    state.lastPrompt = null;
    currentLayer.clearLayers();
    marks.clearLayers();
    $("#click-result").textContent = "";
  }

  function keepCurrent() {
    const result = state.lastPrompt;
    if (!result || !result.features.length) {
      say("Nothing to keep yet: click an object first.");
      return;
    }
    const n = state.layers.filter((l) => l.kind === "object").length + 1;
    const prompts = { ...state.current };
    addLayer({
      kind: "object", name: `object ${n}`, geojson: result, color: PALETTE[n % PALETTE.length],
      scores: result.objects.map((o) => o.score), prompts, scene: state.scene,
    });
    clearCurrent();
  }

  // ------------------------------------------------------------------ layers

  function addLayer(entry) {
    const color = entry.color;
    const byLabel = entry.labels || {};
    entry.leaflet = L.geoJSON(entry.geojson, {
      style: (f) => {
        const label = f.properties && f.properties.label;
        const c = label && byLabel[label] ? byLabel[label] : color;
        return { color: c, weight: 1.5, fillColor: c, fillOpacity: 0.4 };
      },
      onEachFeature: (f, layer) => {
        const p = f.properties || {};
        const name = p.label || p.name || entry.name;
        const score = typeof p.score === "number" ? ` · score ${p.score.toFixed(3)}` : "";
        layer.bindPopup(`${escapeHtml(name)}${score}`);
      },
    }).addTo(map);
    if (entry.answer) {
      const bounds = entry.leaflet.getBounds();
      const anchor = bounds.isValid() ? bounds.getCenter() : map.getCenter();
      entry.tooltip = L.tooltip({ permanent: true, direction: "right", className: "answer-tooltip" })
        .setLatLng(anchor).setContent(escapeHtml(entry.answer)).addTo(map);
    }
    state.layers.push(entry);
    renderLayer(entry);
    document.body.dataset.layers = String(state.layers.length);
  }

  function renderLayer(entry) {
    const li = document.createElement("li");
    li.dataset.kind = entry.kind;
    const head = document.createElement("div");
    head.className = "head";
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = true;
    toggle.setAttribute("aria-label", `show ${entry.name}`);
    toggle.addEventListener("change", () => {
      [entry.leaflet, entry.tooltip].filter(Boolean).forEach((l) =>
        (toggle.checked ? l.addTo(map) : map.removeLayer(l)));
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.color;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name;
    const scores = document.createElement("span");
    scores.className = "small muted";
    if (entry.scores && entry.scores.length) {
      scores.textContent = `score ${entry.scores.map((s) => (s ?? 0).toFixed(3)).join(", ")}`;
    }
    const zoom = button("Zoom", () => {
      const b = entry.leaflet.getBounds();
      if (b.isValid()) map.fitBounds(b);
    });
    head.append(toggle, swatch, name, scores, zoom);
    li.append(head);
    if (entry.answer) {
      const answer = document.createElement("p");
      answer.className = "answer";
      answer.textContent = entry.answer;
      li.append(answer);
    }
    if (entry.labels) {
      const list = document.createElement("ul");
      list.className = "classes";
      for (const [label, c] of Object.entries(entry.labels)) {
        const item = document.createElement("li");
        item.innerHTML = `<span class="swatch" style="background:${c}"></span> `;
        item.append(document.createTextNode(label));
        list.append(item);
      }
      li.append(list);
    }
    const links = document.createElement("div");
    links.className = "links";
    links.append(button("GeoJSON", () => saveBlob(
      new Blob([JSON.stringify(entry.geojson)], { type: "application/geo+json" }),
      `${entry.name.replace(/\W+/g, "_")}.geojson`)));
    for (const link of entry.links || []) {
      if (!["gpkg", "labels", "mask", "score", "geojson"].includes(link.kind)) continue;
      if (link.kind === "geojson") continue;
      links.append(button(link.kind === "gpkg" ? "GPKG" : `${link.kind} COG`,
        () => download(link.href, link.href.split("/").pop())));
    }
    if (entry.kind === "object" && !entry.links) {
      links.append(button("GPKG / COG…", () => exportObject(entry, li)));
    }
    li.append(links);
    entry.element = li;
    $("#layers").prepend(li);
  }

  function button(text, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function saveBlob(blob, filename) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  async function download(href, filename) {
    try {
      const response = await fetch(href, { headers: headers() });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      saveBlob(await response.blob(), filename);
    } catch (e) {
      say(`Download failed: ${e.message}`, true);
    }
  }

  // ------------------------------------------------------------------ jobs

  async function startJob(process, inputs, panel, onDone) {
    const box = $(panel);
    const bar = box.querySelector("progress");
    const status = box.querySelector(".status");
    box.hidden = false;
    bar.value = 0;
    status.textContent = "submitting…";
    status.classList.remove("error");
    let job;
    try {
      job = await api(`/processes/${process}/execution`, {
        method: "POST", body: JSON.stringify({ inputs }),
      });
    } catch (e) {
      status.textContent = e.message;
      status.classList.add("error");
      return;
    }
    state.jobs[job.jobID] = job;
    const cancel = box.querySelector(".cancel");
    cancel.hidden = false;
    cancel.onclick = () => api(`/jobs/${job.jobID}`, { method: "DELETE" }).catch(() => {});
    for (;;) {
      await new Promise((r) => setTimeout(r, 400));
      try {
        job = await api(`/jobs/${job.jobID}`);
      } catch (e) {
        status.textContent = e.message;
        status.classList.add("error");
        return;
      }
      bar.value = job.progress || 0;
      status.textContent = `${job.status}: ${job.message || ""}`;
      if (job.status === "successful") break;
      if (job.status === "failed" || job.status === "dismissed") {
        status.classList.toggle("error", job.status === "failed");
        cancel.hidden = true;
        return;
      }
    }
    cancel.hidden = true;
    bar.value = 100;
    const results = await api(`/jobs/${job.jobID}/results`);
    status.textContent = "done";
    onDone(results);
  }

  function segmentDone(results) {
    const classes = (results.summary.classes || []).map((c) => c.name);
    const labels = {};
    classes.forEach((name, i) => { labels[name] = PALETTE[i % PALETTE.length]; });
    addLayer({
      kind: "segment", name: `segment: ${classes.join(", ")}`, geojson: results.geojson
        || { type: "FeatureCollection", features: [] }, color: PALETTE[0], labels,
      links: results.links, scene: results.scene,
    });
  }

  function askDone(question) {
    return (results) => {
      const n = state.layers.length + 1;
      addLayer({
        kind: "ask", name: `ask: ${question}`, geojson: results.geojson
          || { type: "FeatureCollection", features: [] },
        color: PALETTE[(n + 5) % PALETTE.length], answer: results.answer || "(no answer)",
        scores: (results.summary.objects || []).map((o) => o.score), links: results.links,
        scene: results.scene,
      });
    };
  }

  function exportObject(entry, li) {
    const p = entry.prompts;
    const inputs = { scene: entry.scene, points: p.points, negatives: p.negatives,
      boxes: p.box ? [p.box] : [], crs: "EPSG:4326" };
    const holder = document.createElement("div");
    holder.className = "job";
    holder.innerHTML = '<progress max="100" value="0"></progress><span class="small status">' +
      '</span><button type="button" class="cancel" hidden>Cancel</button>';
    holder.id = `export-${Math.random().toString(36).slice(2)}`;
    li.append(holder);
    startJob("prompt", inputs, `#${holder.id}`, (results) => {
      entry.links = results.links;
      const links = li.querySelector(".links");
      for (const link of results.links) {
        if (!["gpkg", "mask", "score"].includes(link.kind)) continue;
        links.append(button(link.kind === "gpkg" ? "GPKG" : `${link.kind} COG`,
          () => download(link.href, link.href.split("/").pop())));
      }
    });
  }

  // ------------------------------------------------------------------ wiring

  document.querySelectorAll("input[name=tool]").forEach((r) =>
    r.addEventListener("change", () => setTool(r.value)));
  $("#keep").addEventListener("click", keepCurrent);
  $("#clear").addEventListener("click", clearCurrent);
  map.on("click", (e) => useTool(e.latlng));
  $("#segment-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const classes = $("#classes").value.split("\n").map((s) => s.trim()).filter(Boolean);
    startJob("segment", { scene: state.scene, classes, engine: $("#engine").value },
      "#segment-job", segmentDone);
  });
  $("#ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const question = $("#question").value.trim();
    startJob("ask", { scene: state.scene, question }, "#ask-job", askDone(question));
  });
  $("#scene").addEventListener("change", (e) => showScene(e.target.value));
  $("#auth").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value;
    sessionStorage.setItem("terramask-token", state.token);
    $("#auth").hidden = true;
    start();
  });
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)
      && document.activeElement.type !== "radio";
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const tools = { v: "pan", p: "positive", n: "negative", b: "box" };
    const key = e.key.toLowerCase();
    if (tools[key]) { setTool(tools[key]); e.preventDefault(); }
    else if (key === "c") { useTool(map.getCenter()); e.preventDefault(); }
    else if (e.key === "Enter" && document.activeElement.tagName !== "BUTTON") {
      keepCurrent(); e.preventDefault();
    } else if (e.key === "Escape") { clearCurrent(); }
  });

  async function start() {
    try {
      state.config = await api("/config");
      if (state.config.basemap) {
        L.tileLayer(state.config.basemap, { maxZoom: 22, attribution: "basemap" }).addTo(map);
      }
      if (!state.config.mllm) {
        $("#ask-form").querySelector("button").disabled = true;
        $("#ask-note").hidden = false;
        $("#ask-note").textContent = "This server has no multimodal LLM (start it with " +
          "--mllm-url and --mllm-model to ask questions).";
      }
      const { scenes } = await api("/scenes");
      const select = $("#scene");
      select.innerHTML = "";
      for (const s of scenes) {
        const option = document.createElement("option");
        option.value = s.id;
        option.textContent = s.id;
        select.append(option);
      }
      const wanted = new URLSearchParams(location.search).get("scene");
      const first = scenes.find((s) => s.id === wanted) || scenes[0];
      if (!first) { say("No scene is served."); return; }
      select.value = first.id;
      await showScene(first.id);
      document.body.dataset.ready = "1";
    } catch (e) {
      if (e.status !== 401) say(e.message, true);
    }
  }

  setTool("positive");
  window.terramask = { map, state, L };
  start();
})();
