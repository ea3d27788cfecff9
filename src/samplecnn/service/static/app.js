// samplecnn web page: plain JS, no build step, no network access beyond this service.
// It uses the public API (GET v1/model, POST v1/tag, POST v1/taggram) with relative URLs,
// so it also works behind a reverse proxy under a path prefix.
"use strict";

(() => {
  const KEY_STORE = "samplecnn.apiKey";
  const TOP_K = 10;        // bars in the tag list
  const ROWS = 12;         // taggram rows: the clip's best tags
  const MAX_COLUMNS = 150; // taggram windows wanted at most (chooses the hop)
  const MAX_RETRIES = 3;   // for 503 answers with Retry-After
  // viridis, 9 stops: perceptually even and readable in grey
  const CMAP = ["#440154", "#472c7a", "#3b518b", "#2c718e", "#21908d",
                "#27ad81", "#5cc863", "#aadc32", "#fde725"].map((h) => [
    parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), keyForm: $("key-form"), key: $("key"), file: $("file"), drop: $("drop"), dropSub: $("drop-sub"),
    progressRow: $("progress-row"), progress: $("progress"), status: $("status"), error: $("error"),
    result: $("result"), fileName: $("file-name"), fileMeta: $("file-meta"), warnings: $("warnings"),
    player: $("player"), canvas: $("taggram"), box: $("taggram-box"), marker: $("marker"),
    tags: $("tags"), labels: $("labels"), windowS: $("window-s"),
  };

  let model = null;        // GET v1/model answer
  let pendingFile = null;  // chosen while a key was still needed
  let generation = 0;      // the file being handled; older answers are dropped
  let inflight = [];       // XHRs of the current file (aborted when another is chosen)
  let objectUrl = null;
  let view = null;         // what the taggram shows and where: {rows, scores, edges, duration, plot}
  let rafId = 0;

  // -- state, status and errors ------------------------------------------------------
  function setState(state) { document.body.dataset.state = state; }

  function setStatus(text) { ui.status.textContent = text; }

  function showError(message) {
    const line = String(message || "something went wrong").split("\n")[0];
    ui.error.textContent = line;
    ui.error.title = line;
    ui.error.hidden = false;
    ui.progressRow.hidden = true;
    setStatus("");
    setState("error");
  }

  function clearError() { ui.error.hidden = true; ui.error.textContent = ""; }

  function setProgress(fraction) {
    ui.progressRow.hidden = false;
    if (fraction === null) ui.progress.removeAttribute("value"); // indeterminate
    else ui.progress.value = Math.max(0, Math.min(1, fraction));
  }

  // -- the API key -------------------------------------------------------------------
  function apiKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }

  function storeKey(key) {
    try { sessionStorage.setItem(KEY_STORE, key); } catch (e) { /* storage off: kept nowhere */ }
  }

  function askForKey(refused) {
    ui.keyForm.hidden = false;
    ui.model.textContent = "this service needs an API key";
    if (refused) showError("the service refused this API key");
    ui.key.focus();
  }

  // -- requests ----------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // One request through XMLHttpRequest (fetch has no upload progress). Resolves with the
  // JSON answer; rejects with an ApiError carrying the service's one-line `error`.
  function request(method, url, body, onUpload) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      const key = apiKey();
      if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
      if (onUpload) {
        xhr.upload.onprogress = (e) => { if (e.lengthComputable) onUpload(e.loaded, e.total); };
        xhr.upload.onload = () => onUpload(1, 1);
      }
      xhr.onload = () => {
        inflight = inflight.filter((x) => x !== xhr);
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300 && data && !data.error) {
          resolve(data);
          return;
        }
        const message = (data && data.error) ? String(data.error)
          : (data && data.detail) ? String(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail))
          : `the service answered ${xhr.status} ${xhr.statusText}`.trim();
        const retry = parseFloat(xhr.getResponseHeader("Retry-After"));
        reject(new ApiError(xhr.status, message, Number.isFinite(retry) ? retry : null));
      };
      xhr.onerror = () => {
        inflight = inflight.filter((x) => x !== xhr);
        reject(new ApiError(0, "could not reach the service"));
      };
      xhr.ontimeout = xhr.onerror;
      xhr.onabort = () => {
        inflight = inflight.filter((x) => x !== xhr);
        reject(new ApiError(-1, "cancelled"));
      };
      inflight.push(xhr);
      xhr.send(body || null);
    });
  }

  // A busy service (503) says when to come back; try again a few times.
  async function withRetry(send, gen) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 503 || attempt >= MAX_RETRIES || gen !== generation) throw err;
        const wait = Math.min(Math.max(err.retryAfter || 1, 0.2), 10);
        setStatus(`the service is busy; trying again in ${Math.ceil(wait)} s`);
        await new Promise((r) => setTimeout(r, wait * 1000));
      }
    }
  }

  // -- the model -----------------------------------------------------------------------
  async function loadModel() {
    try {
      model = await request("GET", "v1/model");
    } catch (err) {
      model = null;
      if (err.status === 401) { askForKey(Boolean(apiKey())); return false; }
      ui.model.textContent = "the service is not answering";
      showError(err.message);
      return false;
    }
    ui.keyForm.hidden = true;
    const khz = (model.sample_rate / 1000).toLocaleString("en", { maximumFractionDigits: 2 });
    ui.model.textContent = `${model.name} · ${model.tags.length} tags · ${khz} kHz · ` +
      `${fmtSeconds(model.window_s)} windows`;
    ui.windowS.textContent = `${fmtSeconds(model.window_s)} each`;
    if (model.max_upload_mb) ui.dropSub.textContent = `or drop it here (up to ${model.max_upload_mb} MB): ` +
      "its tags and its taggram appear below";
    setState("ready");
    return true;
  }

  // -- a file ------------------------------------------------------------------------
  // The browser's idea of the duration chooses the taggram hop before anything is sent;
  // a file the browser cannot play still gets tagged (with the service's default hop).
  function probeDuration(url, timeoutMs) {
    return new Promise((resolve) => {
      const probe = new Audio();
      const done = (d) => { clearTimeout(timer); probe.removeAttribute("src"); resolve(d); };
      const timer = setTimeout(() => done(NaN), timeoutMs);
      probe.preload = "metadata";
      probe.onloadedmetadata = () => done(probe.duration);
      probe.onerror = () => done(NaN);
      probe.src = url;
    });
  }

  function chooseHop(duration) {
    const win = model.window_s;
    if (!Number.isFinite(duration) || duration <= 0) return null;
    // at least a quarter window (4x the windows of the plain grid), at most one window
    const hop = Math.min(win, Math.max(win / 4, duration / MAX_COLUMNS));
    return Math.round(hop * 1000) / 1000;
  }

  async function handleFile(file) {
    if (!file) return;
    const gen = ++generation;
    inflight.slice().forEach((x) => x.abort());
    inflight = [];
    clearError();
    if (!model) {
      pendingFile = file;
      if (!ui.keyForm.hidden) { showError("enter the API key above first"); ui.key.focus(); }
      else showError("the service is not answering");
      return;
    }
    pendingFile = null;
    // the service would answer 413 after the whole upload; say so before sending it
    if (model.max_upload_mb && file.size > model.max_upload_mb * 1024 * 1024) {
      showError(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is more than this service's ` +
        `limit of ${model.max_upload_mb} MB`);
      return;
    }
    ui.result.hidden = true;
    stopMarker();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file); // the player plays the local file: nothing is fetched back

    setState("uploading");
    setStatus(`reading ${file.name}…`);
    setProgress(0);
    const duration = await probeDuration(objectUrl, 2000);
    if (gen !== generation) return;
    const hop = chooseHop(duration);

    const loaded = [0, 0];
    const onUpload = (i) => (done, total) => {
      if (gen !== generation) return;
      loaded[i] = total ? done / total : 0;
      const fraction = (loaded[0] + loaded[1]) / 2;
      if (fraction >= 1) {
        setState("scoring");
        setProgress(null);
        setStatus(`scoring ${file.name}…`);
      } else {
        setProgress(fraction);
        setStatus(`uploading ${file.name}… ${Math.round(fraction * 100)}%`);
      }
    };
    const form = () => { const f = new FormData(); f.append("file", file, file.name); return f; };
    const tagUrl = `v1/tag?top_k=${TOP_K}`;
    const taggramUrl = hop ? `v1/taggram?hop=${hop}` : "v1/taggram";
    let record, taggram;
    try {
      [record, taggram] = await Promise.all([
        withRetry(() => request("POST", tagUrl, form(), onUpload(0)), gen),
        withRetry(() => request("POST", taggramUrl, form(), onUpload(1)), gen),
      ]);
    } catch (err) {
      if (gen !== generation || err.status === -1) return;
      generation++; // the file failed: its other request no longer counts
      inflight.slice().forEach((x) => x.abort());
      if (err.status === 401) { model = null; pendingFile = file; askForKey(true); return; }
      showError(`${file.name}: ${err.message}`);
      return;
    }
    if (gen !== generation) return;
    render(file, record, taggram);
  }

  // -- rendering -----------------------------------------------------------------------
  function fmtSeconds(s) {
    return `${(Math.round(s * 100) / 100).toLocaleString("en", { maximumFractionDigits: 2 })} s`;
  }

  function fmtClock(s) {
    const m = Math.floor(s / 60);
    const sec = s - m * 60;
    const whole = Math.abs(sec - Math.round(sec)) < 1e-6;
    const ss = whole ? String(Math.round(sec)).padStart(2, "0") : sec.toFixed(1).padStart(4, "0");
    return `${m}:${ss}`;
  }

  function render(file, record, taggram) {
    ui.fileName.textContent = record.path || file.name;
    ui.fileMeta.textContent = `${fmtClock(record.duration_s)} · ${record.segments} windows scored`;
    const warnings = record.warnings || [];
    ui.warnings.hidden = warnings.length === 0;
    ui.warnings.textContent = warnings.join(" · ");

    // the decided tags (score at or above the tag's threshold): listed, and their bars marked
    const labels = record.labels;
    const decided = new Set(labels || []);
    ui.labels.textContent = "";
    if (labels === null || labels === undefined) {
      ui.labels.textContent = "No decisions: this model has no thresholds (fit them with samplecnn thresholds).";
      ui.labels.className = "labels none";
    } else if (!labels.length) {
      ui.labels.textContent = "No tag reaches its threshold.";
      ui.labels.className = "labels none";
    } else {
      ui.labels.className = "labels";
      ui.labels.append("Labels: ");
      labels.forEach((name, i) => {
        const chip = document.createElement("span");
        chip.className = "label-chip";
        chip.textContent = name;
        ui.labels.append(chip, i < labels.length - 1 ? " " : "");
      });
    }
    ui.tags.dataset.labels = JSON.stringify(labels ?? null);
    ui.tags.classList.toggle("deciding", Array.isArray(labels));
    const index0 = new Map((model && model.tags || []).map((t, i) => [t, i]));
    const limits = model && model.thresholds;

    ui.tags.textContent = "";
    const top = (record.top && record.top.length ? record.top
      : Object.entries(record.tags).sort((a, b) => b[1] - a[1])).slice(0, TOP_K);
    for (const [name, score] of top) {
      const li = document.createElement("li");
      if (decided.has(name)) {
        li.className = "decided";
        li.dataset.decided = "true";
      }
      const label = document.createElement("span");
      label.className = "tag-name";
      label.textContent = name;
      label.title = name;
      const bar = document.createElement("span");
      bar.className = "tag-bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-label", name);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "1");
      bar.setAttribute("aria-valuenow", String(score));
      const fill = document.createElement("span");
      fill.className = "tag-fill";
      fill.style.width = `${(Math.max(0, Math.min(1, score)) * 100).toFixed(1)}%`;
      fill.style.display = "block";
      bar.appendChild(fill);
      const limit = limits && index0.has(name) ? limits[index0.get(name)] : null;
      if (limit !== null && limit !== undefined) { // the tag's threshold, as a tick on its bar
        const tick = document.createElement("span");
        tick.className = "tag-threshold";
        tick.style.left = `${(Math.max(0, Math.min(1, limit)) * 100).toFixed(1)}%`;
        tick.title = `threshold ${limit.toFixed(3)}`;
        bar.appendChild(tick);
      }
      if (decided.has(name)) label.textContent = `✓ ${name}`;
      const value = document.createElement("span");
      value.className = "tag-score";
      value.textContent = score.toFixed(3);
      li.append(label, bar, value);
      ui.tags.appendChild(li);
    }

    // rows: the clip's best tags (by the service's clip scores), best on top
    const clip = record.tags || {};
    const index = new Map(taggram.tags.map((t, i) => [t, i]));
    const rows = taggram.tags.slice().sort((a, b) => (clip[b] ?? 0) - (clip[a] ?? 0)).slice(0, ROWS);
    const scores = rows.map((t) => taggram.scores.map((w) => w[index.get(t)]));
    // each window is drawn around its centre: edges halfway between centres
    const centres = taggram.start_s.map((s, i) => (s + taggram.end_s[i]) / 2);
    const duration = taggram.duration_s || record.duration_s;
    const edges = [0];
    for (let i = 1; i < centres.length; i++) edges.push((centres[i - 1] + centres[i]) / 2);
    edges.push(duration);
    view = { rows, scores, edges, duration, plot: null };

    ui.player.src = objectUrl;
    ui.result.hidden = false;
    ui.progressRow.hidden = true;
    setStatus("");
    drawTaggram();
    updateMarker();
    setState("done");
  }

  function colour(score) {
    const x = Math.max(0, Math.min(1, score)) * (CMAP.length - 1);
    const i = Math.min(CMAP.length - 2, Math.floor(x));
    const f = x - i;
    const a = CMAP[i], b = CMAP[i + 1];
    return `rgb(${Math.round(a[0] + f * (b[0] - a[0]))},${Math.round(a[1] + f * (b[1] - a[1]))},` +
      `${Math.round(a[2] + f * (b[2] - a[2]))})`;
  }

  function timeStep(duration, plotW) {
    const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600];
    for (const s of steps) if (plotW * s / duration >= 56) return s;
    return steps[steps.length - 1];
  }

  function drawTaggram() {
    if (!view) return;
    const canvas = ui.canvas;
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(200, canvas.clientWidth || ui.box.clientWidth);
    const narrow = W < 420;
    const font = `${narrow ? 11 : 12}px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif`;
    const ctx = canvas.getContext("2d");
    ctx.font = font;
    const labelW = Math.min(Math.round(W * 0.32),
      Math.ceil(Math.max(...view.rows.map((t) => ctx.measureText(t).width))) + 12);
    const rowH = narrow ? 16 : 20;
    const top = 2;
    const plotH = view.rows.length * rowH;
    const axisH = 22;
    const legendH = 20;
    const H = top + plotH + axisH + legendH;
    const plotX = labelW;
    const plotW = W - labelW - 8;

    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.height = `${H}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = font;

    const { edges, duration, scores, rows } = view;
    const xOf = (t) => plotX + (duration > 0 ? t / duration : 0) * plotW;
    for (let r = 0; r < rows.length; r++) {
      const y = top + r * rowH;
      for (let w = 0; w < scores[r].length; w++) {
        const x0 = Math.floor(xOf(edges[w]));
        const x1 = Math.ceil(xOf(edges[w + 1]));
        ctx.fillStyle = colour(scores[r][w]);
        ctx.fillRect(x0, y, Math.max(1, x1 - x0), rowH);
      }
    }
    // thin gaps between rows keep neighbouring tags apart
    ctx.fillStyle = "rgba(255,255,255,0.55)";
    for (let r = 1; r < rows.length; r++) ctx.fillRect(plotX, top + r * rowH, plotW, 1);

    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let r = 0; r < rows.length; r++) {
      let label = rows[r];
      while (label.length > 1 && ctx.measureText(label).width > labelW - 10) label = label.slice(0, -2) + "…";
      ctx.fillText(label, plotX - 8, top + r * rowH + rowH / 2);
    }

    // time axis
    const axisY = top + plotH;
    ctx.fillStyle = "#5d6677";
    ctx.strokeStyle = "#9aa3b2";
    ctx.lineWidth = 1;
    ctx.textBaseline = "top";
    const step = timeStep(duration, plotW);
    for (let t = 0; t <= duration + 1e-9; t += step) {
      const x = Math.round(xOf(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, axisY);
      ctx.lineTo(x, axisY + 4);
      ctx.stroke();
      ctx.textAlign = t === 0 ? "left" : (xOf(t) > plotX + plotW - 20 ? "right" : "center");
      ctx.fillText(fmtClock(t), x, axisY + 6);
    }

    // colour legend: score 0 .. 1
    const legY = axisY + axisH + 4;
    const legW = Math.min(160, plotW * 0.4);
    const legX = plotX + plotW - legW - ctx.measureText("1").width - 6;
    const grad = ctx.createLinearGradient(legX, 0, legX + legW, 0);
    CMAP.forEach((c, i) => grad.addColorStop(i / (CMAP.length - 1), `rgb(${c[0]},${c[1]},${c[2]})`));
    ctx.fillStyle = grad;
    ctx.fillRect(legX, legY, legW, 8);
    ctx.fillStyle = "#5d6677";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    ctx.fillText("score 0", legX - 6, legY + 4);
    ctx.textAlign = "left";
    ctx.fillText("1", legX + legW + 4, legY + 4);
    ctx.textAlign = "left";
    ctx.fillText("time (m:ss)", plotX, legY + 4);

    view.plot = { x: plotX, w: plotW, y: top, h: plotH, rowH };
    canvas.dataset.rows = String(rows.length);
    canvas.dataset.windows = String(scores.length ? scores[0].length : 0);
    canvas.dataset.plot = JSON.stringify(view.plot); // CSS pixels, for tests and tools
    ui.marker.style.top = `${top}px`;
    ui.marker.style.height = `${plotH}px`;
  }

  // -- playback marker and seeking -------------------------------------------------------
  function updateMarker() {
    if (!view || !view.plot) return;
    const t = ui.player.currentTime || 0;
    const frac = view.duration > 0 ? Math.min(1, t / view.duration) : 0;
    ui.marker.style.left = `${view.plot.x + frac * view.plot.w}px`;
    ui.marker.style.display = "block";
    ui.marker.dataset.time = t.toFixed(3);
  }

  function tick() {
    updateMarker();
    rafId = ui.player.paused || ui.player.ended ? 0 : requestAnimationFrame(tick);
  }

  function startMarker() { if (!rafId) rafId = requestAnimationFrame(tick); }

  function stopMarker() { if (rafId) cancelAnimationFrame(rafId); rafId = 0; }

  function seek(t) {
    if (!view) return;
    ui.player.currentTime = Math.max(0, Math.min(view.duration, t));
    updateMarker();
  }

  ui.player.addEventListener("play", startMarker);
  ui.player.addEventListener("playing", startMarker);
  ui.player.addEventListener("pause", () => { stopMarker(); updateMarker(); });
  ui.player.addEventListener("ended", () => { stopMarker(); updateMarker(); });
  ui.player.addEventListener("timeupdate", updateMarker);
  ui.player.addEventListener("seeked", updateMarker);

  ui.canvas.addEventListener("click", (e) => {
    if (!view || !view.plot) return;
    const rect = ui.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left;
    const frac = (x - view.plot.x) / view.plot.w;
    if (frac < 0 || frac > 1) return;
    seek(frac * view.duration);
  });

  // hovering names the cell: tag, time and score
  ui.canvas.addEventListener("mousemove", (e) => {
    if (!view || !view.plot) return;
    const rect = ui.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    const row = Math.floor((y - view.plot.y) / view.plot.rowH);
    const t = ((x - view.plot.x) / view.plot.w) * view.duration;
    let w = view.edges.findIndex((edge) => edge > t) - 1;
    if (w < 0) w = view.edges.length - 2;
    if (row < 0 || row >= view.rows.length || t < 0 || t > view.duration) {
      ui.canvas.removeAttribute("title");
      return;
    }
    ui.canvas.title = `${view.rows[row]} at ${fmtClock(Math.floor(t * 10) / 10)}: ${view.scores[row][w].toFixed(3)}`;
  });

  ui.canvas.addEventListener("keydown", (e) => {
    if (!view) return;
    const step = model ? model.window_s : 1;
    const t = ui.player.currentTime || 0;
    if (e.key === "ArrowRight") seek(t + step);
    else if (e.key === "ArrowLeft") seek(t - step);
    else if (e.key === "Home") seek(0);
    else if (e.key === "End") seek(view.duration);
    else if (e.key === " ") { if (ui.player.paused) ui.player.play().catch(() => {}); else ui.player.pause(); }
    else return;
    e.preventDefault();
  });

  let resizeQueued = false;
  new ResizeObserver(() => {
    if (resizeQueued) return;
    resizeQueued = true;
    requestAnimationFrame(() => { resizeQueued = false; drawTaggram(); updateMarker(); });
  }).observe(ui.box);

  // -- choosing and dropping files -------------------------------------------------------
  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    if (file) handleFile(file);
  });

  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    dragDepth++;
    ui.drop.classList.add("over");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) ui.drop.classList.remove("over");
  });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    ui.drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) handleFile(file);
  });

  ui.keyForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = ui.key.value.trim();
    if (!key) return;
    storeKey(key);
    clearError();
    if (await loadModel()) {
      ui.key.value = "";
      if (pendingFile) handleFile(pendingFile);
      else ui.file.focus();
    }
  });

  setState("loading");
  loadModel();
})();
