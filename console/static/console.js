// maskpbx console: progressive enhancement of server-rendered pages.
// Everything works without this script; with it, click-to-call shows the
// call's state live, imports show progress, and players can pick a channel.
// It keeps nothing in the browser's storage.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  // The page's language: its messages come with it (the catalogs' js.* ids).
  let text = {};
  try { text = JSON.parse((document.getElementById("console-text") || {}).textContent || "{}"); } catch (e) { /* none */ }
  function tr(key, args) {
    let s = text[key] || key;
    for (const k in args || {}) s = s.split("{{." + k + "}}").join(String(args[k]));
    return s;
  }

  // A console session that ended (sign-out elsewhere, dismissal) sends the
  // person to the sign-in page with a note.
  function sessionEnded() {
    window.location.assign("/console/signin?ended=1&next=" + encodeURIComponent(location.pathname + location.search));
  }

  async function api(method, path, body) {
    const opts = { method, headers: { "Accept": "application/json", "Accept-Language": document.documentElement.lang || "en" }, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      opts.headers["X-CSRF-Token"] = csrf;
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body || {});
    }
    const resp = await fetch(path, opts);
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (resp.status === 401) {
      sessionEnded();
      throw new Error(tr("session_ended"));
    }
    if (!resp.ok) {
      const msg = data && data.error && data.error.message ? data.error.message : tr("request_failed", { Status: resp.status });
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // ---- click-to-call ----
  const labels = {
    calling_manager: tr("state_calling_manager"),
    calling_client: tr("state_calling_client"),
    connected: tr("state_connected"),
    ended: tr("state_ended"),
  };
  const outcomes = {
    answered: tr("outcome_answered"), missed: tr("outcome_missed"), busy: tr("outcome_busy"), no_answer: tr("outcome_no_answer"),
    rejected: tr("outcome_rejected"), cancelled: tr("outcome_cancelled"), failed: tr("outcome_failed"),
  };

  function clock(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function show(out, state, text) {
    out.dataset.state = state;
    out.textContent = text;
  }

  let active = null; // one call at a time, as the PBX allows

  async function follow(form, callID) {
    const out = form.querySelector(".call-status");
    const btn = form.querySelector("button");
    btn.disabled = true;
    btn.classList.add("busy");
    active = callID;
    let connectedAt = 0, failures = 0;
    try {
      for (;;) {
        let c;
        try {
          c = await api("GET", "/api/v1/calls/" + encodeURIComponent(callID));
          failures = 0;
        } catch (e) {
          if (e.status === 404 || ++failures > 40) { show(out, "error", e.message); return; }
          await sleep(700);
          continue;
        }
        if (c.state === "connected" && !connectedAt) connectedAt = Date.now();
        if (c.state === "ended") {
          let line = labels.ended;
          if (c.disposition) line += " · " + (outcomes[c.disposition] || c.disposition);
          if (c.duration_ms) line += " · " + clock(c.duration_ms);
          show(out, "ended", line);
          refreshLastCall(form.dataset.callClient, callID);
          return;
        }
        let line = labels[c.state] || c.state;
        if (c.state === "connected" && connectedAt) line += " " + clock(Date.now() - connectedAt);
        show(out, c.state, line);
        await sleep(400);
      }
    } finally {
      active = null;
      btn.disabled = false;
      btn.classList.remove("busy");
    }
  }

  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  // After a call from the clients list ends, its row's "Last call" cell is
  // taken from the page as the server renders it now, once the call's
  // record has been written (a moment after the end).
  async function refreshLastCall(clientID, callID) {
    const sel = 'tr[data-client="' + clientID + '"] td[data-last-call]';
    const cell = document.querySelector(sel);
    if (!cell) return;
    for (let i = 0; i < 30; i++) {
      await sleep(i < 10 ? 500 : 2000);
      let fresh;
      try {
        const resp = await fetch(location.pathname + location.search, { credentials: "same-origin", cache: "no-store" });
        if (!resp.ok || resp.redirected) return;
        fresh = new DOMParser().parseFromString(await resp.text(), "text/html").querySelector(sel);
      } catch (e) { continue; }
      if (fresh && fresh.dataset.lastCall === callID) {
        cell.innerHTML = fresh.innerHTML;
        cell.dataset.lastCall = callID;
        return;
      }
    }
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form[data-call-client]");
    if (!form) return;
    ev.preventDefault();
    const out = form.querySelector(".call-status");
    if (active) { show(out, "error", tr("finish_current")); return; }
    show(out, "calling_manager", tr("starting"));
    try {
      const c = await api("POST", "/api/v1/calls", { client_id: form.dataset.callClient });
      show(out, c.state || "calling_manager", labels[c.state] || labels.calling_manager);
      follow(form, c.id);
    } catch (e) {
      show(out, "error", e.message);
    }
  });

  // A call started without the script (the form's fallback) is followed too.
  document.querySelectorAll("[data-live-call]").forEach((el) => {
    const form = document.querySelector('form[data-call-client="' + el.dataset.for + '"]');
    if (form) follow(form, el.dataset.liveCall);
  });

  // ---- assignment: the primary manager is not offered as his own partner ----
  const primary = document.getElementById("primary");
  if (primary) {
    primary.addEventListener("change", () => {
      document.querySelectorAll("#assign-form [data-partner]").forEach((label) => {
        const isPrimary = label.dataset.partner === primary.value;
        const box = label.querySelector("input");
        label.hidden = isPrimary;
        box.disabled = isPrimary;
        if (isPrimary) box.checked = false;
      });
    });
  }

  // ---- recordings: our controls show the length before playing ----
  // The native controls show 0:00 / 0:00 until the audio is fetched, and
  // every fetch of audio is audited: ours take the length from the page.
  document.querySelectorAll("[data-player]").forEach((player) => {
    const audio = player.querySelector("audio");
    const controls = player.querySelector("[data-controls]");
    if (!audio || !controls) return;
    const btn = controls.querySelector("[data-play]");
    const seek = controls.querySelector("[data-seek]");
    const time = controls.querySelector("[data-time]");
    const total = () => (isFinite(audio.duration) && audio.duration > 0 ? audio.duration * 1000 : Number(player.dataset.durationMs) || 0);
    function update() {
      const now = audio.currentTime * 1000;
      time.textContent = clock(now) + " / " + clock(total());
      seek.max = String(Math.round(total()));
      if (document.activeElement !== seek) seek.value = String(Math.round(now));
      seek.setAttribute("aria-valuetext", time.textContent);
      const playing = !audio.paused && !audio.ended;
      btn.toggleAttribute("data-playing", playing);
      btn.setAttribute("aria-label", playing ? btn.dataset.labelPause : btn.dataset.labelPlay);
    }
    btn.addEventListener("click", () => { if (audio.paused) audio.play(); else audio.pause(); });
    seek.addEventListener("input", () => { audio.currentTime = Number(seek.value) / 1000; update(); });
    for (const ev of ["timeupdate", "play", "pause", "ended", "durationchange", "seeked"]) audio.addEventListener(ev, update);
    audio.controls = false;
    audio.hidden = true;
    controls.hidden = false;
    update();
  });

  // ---- recordings: listen to one side ----
  document.querySelectorAll("[data-player]").forEach((player) => {
    const audio = player.querySelector("audio");
    const select = player.querySelector("[data-channel]");
    let gains = null;
    function route(mode) {
      if (!gains) {
        if (mode === "both") return;
        const Ctx = window.AudioContext || window.webkitAudioContext;
        if (!Ctx) return;
        const ctx = new Ctx();
        const src = ctx.createMediaElementSource(audio);
        const split = ctx.createChannelSplitter(2);
        const merge = ctx.createChannelMerger(2);
        src.connect(split);
        // gains[from][to]: left (client) and right (manager) to each ear.
        gains = [[ctx.createGain(), ctx.createGain()], [ctx.createGain(), ctx.createGain()]];
        for (let from = 0; from < 2; from++) {
          for (let to = 0; to < 2; to++) {
            split.connect(gains[from][to], from);
            gains[from][to].connect(merge, 0, to);
          }
        }
        merge.connect(ctx.destination);
        audio.addEventListener("play", () => ctx.resume());
      }
      const m = { both: [[1, 0], [0, 1]], left: [[1, 1], [0, 0]], right: [[0, 0], [1, 1]] }[mode];
      for (let from = 0; from < 2; from++) for (let to = 0; to < 2; to++) gains[from][to].gain.value = m[from][to];
    }
    if (select) select.addEventListener("change", () => route(select.value));
  });

  // ---- CSV import: upload progress, then the job's progress ----
  const importForm = document.getElementById("import-form");
  if (importForm && window.XMLHttpRequest) {
    importForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const bar = importForm.querySelector("progress.upload");
      const btn = importForm.querySelector("button");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", importForm.action);
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) { bar.hidden = false; bar.value = Math.round((e.loaded / e.total) * 100); }
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 401) { sessionEnded(); return; }
        if (xhr.responseURL && xhr.responseURL.indexOf("/console/imports/") >= 0) { location.assign(xhr.responseURL); return; }
        // Not accepted (e.g. a bad header row): let the server's page say why.
        importForm.submit();
      });
      xhr.addEventListener("error", () => { btn.disabled = false; bar.hidden = true; alert(tr("upload_failed")); });
      btn.disabled = true;
      xhr.send(new FormData(importForm));
    });
  }

  const job = document.querySelector("[data-import]");
  if (job && job.dataset.finished !== "true") {
    const bar = document.getElementById("import-progress");
    const pct = document.getElementById("import-pct");
    (async function poll() {
      for (;;) {
        await sleep(400);
        let p;
        try {
          const resp = await fetch("/console/imports/" + encodeURIComponent(job.dataset.import) + "/progress",
            { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" });
          if (resp.status === 401 || resp.redirected) { sessionEnded(); return; }
          p = await resp.json();
        } catch (e) { continue; }
        bar.max = p.total || 1; bar.value = p.done;
        pct.textContent = (p.total ? Math.floor((p.done * 100) / p.total) : 0) + "%";
        for (const k of ["done", "imported", "failed"]) {
          const el = job.querySelector('[data-k="' + k + '"]');
          if (el) el.textContent = p[k];
        }
        if (p.finished) { location.reload(); return; }
      }
    })();
  }
})();
