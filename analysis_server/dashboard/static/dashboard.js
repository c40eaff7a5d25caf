// The dashboard's behaviour: live events (SSE), watchlist alerts, the verify and scene round trips, gallery
// edits, the API page's "try it" forms, keyboard shortcuts. Plain JavaScript, no build step. Untrusted
// text only ever goes into textContent (HTML fragments come rendered and escaped by the server).
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const csrf = () => ($('meta[name="csrf-token"]') || {}).content || "";
  const PER_CAMERA = 12;

  function detailOf(data) {
    if (!data) return "";
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map((d) => d.msg).join("; ");
    return "";
  }

  async function errorText(r) {
    try {
      return detailOf(await r.json()) || `${r.status} ${r.statusText}`;
    } catch (e) {
      return `${r.status} ${r.statusText}`;
    }
  }

  // A REST call with the session cookie and the CSRF header.
  async function api(method, url, body) {
    const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(url, opts);
    if (!r.ok) throw new Error(await errorText(r));
    return (r.headers.get("content-type") || "").includes("json") ? r.json() : null;
  }

  // The toast lives in the top bar: it never covers the page's own controls.
  let toastTimer = null;
  function toast(message, kind = "ok") {
    const t = $("#toast");
    t.textContent = message;
    t.className = `toast toast-${kind}`;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  // Times as date, time and time zone: "2024-05-01 04:27:52 CEST" (the browser's zone; ISO in the tooltip).
  const pad = (n) => String(n).padStart(2, "0");
  function zoneName(d) {
    try {
      const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(d)
        .find((p) => p.type === "timeZoneName");
      if (part) return part.value;
    } catch (e) { /* fall through */ }
    const off = -d.getTimezoneOffset();
    return `UTC${off >= 0 ? "+" : "-"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  }
  function formatTime(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneName(d)}`;
  }

  function localTimes(root = document) {
    for (const t of $$("time[data-ms]", root)) {
      const ms = Number(t.dataset.ms);
      if (!ms) continue;
      const d = new Date(ms);
      t.textContent = formatTime(ms);
      t.dateTime = d.toISOString();
      t.title = d.toISOString();
    }
  }

  function imageFallbacks(root = document) {
    for (const img of $$("img[data-fallback]", root)) {
      img.addEventListener("error", () => { img.hidden = true; }, { once: true });
      if (img.complete && img.naturalWidth === 0) img.hidden = true;
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const PLACEHOLDER = '<svg class="thumb-placeholder" viewBox="0 0 64 64" aria-hidden="true"><circle cx="32" cy="24" r="11"/><path d="M12 56c2-11 10-17 20-17s18 6 20 17z"/></svg>';

  // -- live view ---------------------------------------------------------------------------
  function distanceText(ev) {
    return ev.identity_id && ev.distance !== null && ev.distance !== undefined ? ` · d=${Number(ev.distance).toFixed(3)}` : "";
  }

  function faceCard(ev, reconstruction) {
    const a = el("a", "face-card fresh" + (ev.identity_id ? " matched" : ""));
    a.href = "/ui/faces/" + encodeURIComponent(ev.face_id);
    a.dataset.faceId = ev.face_id;
    if (ev.identity_id) a.dataset.identityId = ev.identity_id;
    const thumb = el("span", "thumb");
    if (reconstruction) {
      const img = el("img");
      img.alt = "base-layer reconstruction";
      img.loading = "lazy";
      img.src = "/faces/" + encodeURIComponent(ev.face_id) + "/image?layer=base&purpose=thumbnail";
      img.addEventListener("error", () => { img.hidden = true; }, { once: true });
      thumb.appendChild(img);
    }
    thumb.insertAdjacentHTML("beforeend", PLACEHOLDER);
    const meta = el("span", "face-meta");
    const name = el("span", "face-name");
    if (ev.identity_id) name.textContent = ev.name || ev.identity_id;
    else name.appendChild(el("span", "muted", "unknown"));
    const time = el("time");
    time.dataset.ms = ev.capture_time_ms;
    const bytes = ev.base_layer_bytes !== null && ev.base_layer_bytes !== undefined ? `${ev.base_layer_bytes} B` : "";
    meta.append(name, time, el("span", "muted small face-camera", ev.camera_id),
                el("span", "muted small face-bytes", `${bytes}${distanceText(ev)}`));
    a.append(thumb, meta);
    localTimes(a);
    return a;
  }

  function cameraSection(cameraId) {
    for (const c of $$(".camera")) if (c.dataset.cameraId === cameraId) return c;
    const node = $("#camera-template").content.firstElementChild.cloneNode(true);
    node.dataset.cameraId = cameraId;
    $("h3", node).textContent = cameraId;
    const none = $("#no-cameras");
    if (none) none.remove();
    $("#cameras").appendChild(node);
    for (const id of ["#stat-online", "#stat-cameras"]) {
      const n = $(id);
      if (n) n.textContent = String(Number(n.textContent) + 1);
    }
    return node;
  }

  function addFace(ev, reconstruction) {
    const section = cameraSection(ev.camera_id);
    const strip = $(".strip", section);
    for (const e of $$(".empty", strip)) e.remove();
    strip.prepend(faceCard(ev, reconstruction));
    const cards = $$(".face-card", strip);
    for (const extra of cards.slice(PER_CAMERA)) extra.remove();
    const count = $(".camera-count", section);
    if (count) count.textContent = String(Number(count.textContent) + 1);
    const total = $("#stat-faces");
    if (total) total.textContent = String(Number(total.textContent) + 1);
    const badge = $(".badge", section);
    if (badge && badge.textContent !== "online") {
      badge.className = "badge badge-ok";
      badge.textContent = "online";
      const online = $("#stat-online");
      if (online) online.textContent = String(Number(online.textContent) + 1);
    }
  }

  function removeFace(ev) {
    for (const n of $$(`.face-card[data-face-id]`)) if (n.dataset.faceId === ev.face_id) n.remove();
  }

  // An identity renamed (or created): every card and alert of it shows the new name.
  function renameIdentity(ev) {
    if (!ev.identity_id || !ev.name) return;
    for (const card of $$(".face-card[data-identity-id]")) {
      if (card.dataset.identityId === ev.identity_id) $(".face-name", card).textContent = ev.name;
    }
    for (const hit of $$(".hit[data-identity-id]")) {
      if (hit.dataset.identityId === ev.identity_id) $(".hit-name strong", hit).textContent = ev.name;
    }
  }

  // A stored face enrolled into an identity: its card says who it is now.
  function matchFace(ev) {
    for (const card of $$(".face-card[data-face-id]")) {
      if (card.dataset.faceId !== ev.face_id) continue;
      card.classList.add("matched");
      card.dataset.identityId = ev.identity_id;
      $(".face-name", card).textContent = ev.name || ev.identity_id;
      const bytes = $(".face-bytes", card);
      if (bytes) bytes.textContent = bytes.textContent.replace(/ · d=.*$/, "") + distanceText(ev);
    }
  }

  // -- watchlist alerts: grouped by the server; the list is rendered there and asked for again --
  let soundContext = null;
  function beep() {
    if (!soundContext) return;
    const osc = soundContext.createOscillator();
    const gain = soundContext.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.08;
    osc.connect(gain).connect(soundContext.destination);
    osc.start();
    osc.stop(soundContext.currentTime + 0.18);
  }

  function initSound() {
    const box = $("#hit-sound");
    if (!box) return;
    box.checked = localStorage.getItem("facecodec.sound") === "1";
    const enable = () => {
      if (box.checked && !soundContext) {
        try { soundContext = new AudioContext(); } catch (e) { soundContext = null; }
      }
    };
    box.addEventListener("change", () => {
      localStorage.setItem("facecodec.sound", box.checked ? "1" : "0");
      enable();
      if (!box.checked) soundContext = null;
    });
    // A browser lets a page make sound only after a gesture: the first key or click after load.
    for (const kind of ["click", "keydown"]) document.addEventListener(kind, enable, { once: true });
  }

  let hitsTimer = null;
  let hitsSeq = 0;
  function refreshHits(soundOnNew = false) {
    clearTimeout(hitsTimer);
    hitsTimer = setTimeout(async () => {
      const seq = ++hitsSeq;
      const before = new Set($$("#hits .hit").map((h) => h.dataset.groupId));
      const r = await fetch("/ui/hits", { credentials: "same-origin" });
      if (!r.ok || seq !== hitsSeq) return;
      const list = $("#hits");
      const focused = document.activeElement && list.contains(document.activeElement)
        ? [document.activeElement.closest(".hit")?.dataset.groupId, document.activeElement.dataset.action] : null;
      list.innerHTML = await r.text(); // rendered (and escaped) by the server
      localTimes(list);
      imageFallbacks(list);
      const groups = $$(".hit", list);
      $("#no-hits").hidden = groups.length > 0;
      const fresh = groups.filter((g) => !before.has(g.dataset.groupId));
      for (const g of fresh) g.classList.add("fresh");
      if (soundOnNew && fresh.some((g) => g.classList.contains("hit-open"))) beep();
      if (focused) {
        const g = groups.find((x) => x.dataset.groupId === focused[0]);
        const target = g && (focused[1] ? $(`[data-action="${focused[1]}"]`, g) : null);
        if (target) target.focus();
      }
    }, 250);
  }

  function initHits() {
    $("#hits").addEventListener("click", async (e) => {
      const button = e.target.closest("button[data-action]");
      if (!button) return;
      const group = button.closest(".hit");
      button.disabled = true;
      try {
        const out = await api("POST", `/watchlist/hits/${encodeURIComponent(group.dataset.groupId)}/${button.dataset.action}`);
        toast(`${out.name || out.identity_id}: ${out.hits} hit(s) ${out.state}.`);
        refreshHits();
      } catch (err) {
        button.disabled = false;
        toast(err.message, "error");
      }
    });
  }

  function initLive() {
    const root = $(".live");
    const reconstruction = Boolean(root.dataset.reconstruction);
    const after = root.dataset.lastEventId;
    const es = new EventSource("/events/live" + (after ? "?after=" + encodeURIComponent(after) : ""));
    const state = $("#live-state");
    const dot = $("#live-dot");
    es.onopen = () => { state.textContent = "live"; dot.className = "live-dot on"; };
    es.onerror = () => { state.textContent = "reconnecting…"; dot.className = "live-dot"; };
    es.addEventListener("observation", (e) => addFace(JSON.parse(e.data), reconstruction));
    es.addEventListener("watchlist_hit", () => refreshHits(true));
    es.addEventListener("watchlist_ack", () => refreshHits());
    es.addEventListener("face_deleted", (e) => { removeFace(JSON.parse(e.data)); refreshHits(); });
    es.addEventListener("identity_deleted", () => refreshHits());
    es.addEventListener("identity_updated", (e) => { renameIdentity(JSON.parse(e.data)); refreshHits(); });
    es.addEventListener("face_matched", (e) => matchFace(JSON.parse(e.data)));
    window.addEventListener("beforeunload", () => es.close());
    initHits();
    initSound();
  }

  // -- one face ----------------------------------------------------------------------------
  let auditSeq = 0;
  async function refreshAudit(faceId) {
    const seq = ++auditSeq; // answers may come back out of order: only the newest is shown
    const r = await fetch(`/ui/faces/${encodeURIComponent(faceId)}/audit`, { credentials: "same-origin" });
    if (!r.ok || seq !== auditSeq) return;
    const html = await r.text();
    if (seq !== auditSeq) return;
    const box = $("#audit");
    box.innerHTML = html; // rendered (and escaped) by the server
    localTimes(box);
  }

  async function loadBase(faceId) {
    const img = $("#base-image");
    if (!img) return;
    const r = await fetch(img.dataset.src, { credentials: "same-origin" });
    if (r.ok) {
      img.src = URL.createObjectURL(await r.blob());
      img.hidden = false;
      $("#base-note").hidden = true;
    } else {
      $("#base-note").replaceChildren(el("strong", "", r.status === 503 ? "No base-layer picture" : "Cannot rebuild"),
                                     el("span", "", await errorText(r)));
    }
    refreshAudit(faceId);
  }

  async function verify(form, page) {
    const faceId = page.dataset.faceId;
    const button = $("#verify-button");
    const error = $("#verify-error");
    const params = new URLSearchParams({ layer: "full" });
    if (form.codec.value) params.set("codec", form.codec.value);
    if (form.quality.value) params.set("quality", form.quality.value);
    button.disabled = true;
    button.textContent = "Fetching from the edge…";
    error.hidden = true;
    try {
      const r = await fetch(`/faces/${encodeURIComponent(faceId)}/image?${params}`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(await errorText(r));
      const img = $("#full-image");
      img.src = URL.createObjectURL(await r.blob());
      img.hidden = false;
      $("#full-note").hidden = true;
      const enh = Number(r.headers.get("X-Enhancement-Layer-Bytes"));
      const base = Number(r.headers.get("X-Base-Layer-Bytes") || page.dataset.baseBytes);
      const source = r.headers.get("X-Enhancement-Source") === "cache" ? "cached" : "from the edge";
      $("#enh-bytes").textContent = `${enh} B (${source})`;
      $("#enh-bytes").title = `${r.headers.get("X-Enhancement-Codec")} q${r.headers.get("X-Enhancement-Quality")}`;
      $("#base-bytes").textContent = `${base} B`;
      $("#total-bytes").textContent = `${enh + base} B (${(100 * (enh + base) / Number(page.dataset.rawBytes)).toFixed(1)} % of raw)`;
      page.classList.add("verified");
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
      button.textContent = "Verify";
      await refreshAudit(faceId);
    }
  }

  async function showContext(page) {
    const faceId = page.dataset.faceId;
    const button = $("#context-button");
    const error = $("#context-error");
    button.disabled = true;
    button.textContent = "Fetching from the edge…";
    error.hidden = true;
    try {
      const r = await fetch(`/faces/${encodeURIComponent(faceId)}/image?layer=context`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(await errorText(r));
      const img = $("#context-image");
      const loaded = new Promise((ok) => img.addEventListener("load", ok, { once: true }));
      img.src = URL.createObjectURL(await r.blob());
      await loaded;
      const [x, y, w, h] = (r.headers.get("X-Face-Box") || "0,0,0,0").split(",").map(Number);
      const box = $("#context-box");
      const W = img.naturalWidth, H = img.naturalHeight;
      Object.assign(box.style, { left: `${100 * x / W}%`, top: `${100 * y / H}%`, width: `${100 * w / W}%`, height: `${100 * h / H}%` });
      $("#scene-frame").style.aspectRatio = `${W} / ${H}`;
      $("#scene-frame").hidden = false;
      $("#context-size").textContent = `${r.headers.get("X-Context-Bytes")} B (${r.headers.get("X-Context-Codec")} ` +
        `q${r.headers.get("X-Context-Quality")}, ${W}×${H} px, from the edge)`;
      $("#context-bytes").hidden = false;
      button.textContent = "Show it again";
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      button.textContent = "Show the scene";
    } finally {
      button.disabled = false;
      await refreshAudit(faceId);
    }
  }

  // After an enrolment the page says who this is, without a reload.
  function showIdentity(ident, distance) {
    $("#face-name").textContent = ident.name;
    $("#face-title").dataset.identityId = ident.identity_id;
    const badge = $("#watchlist-badge");
    if (ident.watchlist && !badge) {
      $("#face-title").append(" ", el("span", "badge badge-alert", "watchlist"));
      $("#face-title").lastElementChild.id = "watchlist-badge";
    } else if (!ident.watchlist && badge) {
      badge.remove();
    }
    const link = el("a", "", ident.name);
    link.href = "/ui/search?identity=" + encodeURIComponent(ident.identity_id);
    $("#face-match").replaceChildren(link, document.createTextNode(` at distance ${distance.toFixed(3)} (enrolled from this face)`));
    const form = $("#enrol-existing");
    const select = form.identity_id;
    if (!Array.from(select.options).some((o) => o.value === ident.identity_id)) {
      const option = el("option", "", ident.name);
      option.value = ident.identity_id;
      select.append(option);
    }
    select.value = ident.identity_id;
    form.hidden = false;
  }

  async function erase(faceId) {
    if (!confirm("Erase this face here and its texture at the edge? This cannot be undone.")) return;
    try {
      await api("DELETE", `/faces/${encodeURIComponent(faceId)}`);
      window.location.assign("/ui");
    } catch (err) { toast(err.message, "error"); }
  }

  function initFace() {
    const page = $(".face-page");
    const faceId = page.dataset.faceId;
    loadBase(faceId);
    $("#verify-form").addEventListener("submit", (e) => { e.preventDefault(); verify(e.target, page); });
    $("#context-button").addEventListener("click", () => showContext(page));
    $("#enrol-new").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target;
      try {
        const ident = await api("POST", "/identities", { name: f.elements.namedItem("name").value.trim(), watchlist: f.watchlist.checked,
                                                         features: [{ face_id: faceId }] });
        toast(`Enrolled ${ident.name} as a new identity.`);
        showIdentity(ident, 0);
        f.reset();
      } catch (err) { toast(err.message, "error"); }
      await refreshAudit(faceId);
    });
    $("#enrol-existing").addEventListener("submit", async (e) => {
      e.preventDefault();
      const sel = e.target.identity_id;
      try {
        await api("POST", `/identities/${encodeURIComponent(sel.value)}/features`, { face_id: faceId });
        const ident = await api("GET", `/identities/${encodeURIComponent(sel.value)}`);
        toast(`Added this face to ${ident.name}.`);
        showIdentity(ident, 0);
      } catch (err) { toast(err.message, "error"); }
      await refreshAudit(faceId);
    });
    $("#erase-face").addEventListener("click", () => erase(faceId));
    followFace(faceId, page);
  }

  // What other tabs and operators do to this face reaches its page without a reload: its identity
  // renamed, the face enrolled, the face erased.
  function followFace(faceId, page) {
    const es = new EventSource("/events/live");
    const title = $("#face-title");
    es.addEventListener("identity_updated", (e) => {
      const ev = JSON.parse(e.data);
      if (ev.name && ev.identity_id === title.dataset.identityId) $("#face-name").textContent = ev.name;
    });
    es.addEventListener("face_matched", (e) => {
      const ev = JSON.parse(e.data);
      if (ev.face_id !== faceId || ev.identity_id === title.dataset.identityId) return;
      title.dataset.identityId = ev.identity_id;
      $("#face-name").textContent = ev.name || ev.identity_id;
      refreshAudit(faceId);
    });
    es.addEventListener("face_deleted", (e) => {
      if (JSON.parse(e.data).face_id !== faceId) return;
      page.classList.add("erased");
      toast("This face has been erased (by another tab or operator): nothing more can be fetched for it.", "error");
    });
    window.addEventListener("beforeunload", () => es.close());
  }

  // -- gallery -----------------------------------------------------------------------------
  function initGallery() {
    for (const f of $$(".rename-form")) f.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const ident = await api("PATCH", `/identities/${encodeURIComponent(f.dataset.identityId)}`, { name: f.elements.namedItem("name").value.trim() });
        toast(`Renamed to ${ident.name}.`);
      } catch (err) { toast(err.message, "error"); }
    });
    for (const box of $$(".watchlist-toggle")) box.addEventListener("change", async () => {
      try {
        await api("PATCH", `/identities/${encodeURIComponent(box.dataset.identityId)}`, { watchlist: box.checked });
        toast(box.checked ? "On the watchlist." : "Off the watchlist.");
      } catch (err) { box.checked = !box.checked; toast(err.message, "error"); }
    });
    for (const b of $$(".delete-identity")) b.addEventListener("click", async () => {
      if (!confirm(`Delete ${b.dataset.name} and erase every face matched to them?`)) return;
      try {
        const out = await api("DELETE", `/identities/${encodeURIComponent(b.dataset.identityId)}`);
        b.closest("tr").remove();
        toast(`Deleted; ${out.faces_erased.length} face(s) erased.`);
      } catch (err) { toast(err.message, "error"); }
    });
  }

  // -- search ------------------------------------------------------------------------------
  function toLocalInput(ms) {
    const d = new Date(Number(ms));
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  }

  function initSearch() {
    const form = $("#search-form");
    for (const input of $$("input[data-ms-field]", form)) {
      const hidden = form.elements[input.dataset.msField];
      if (hidden.value) input.value = toLocalInput(hidden.value);
    }
    form.addEventListener("submit", () => {
      for (const input of $$("input[data-ms-field]", form)) {
        form.elements[input.dataset.msField].value = input.value ? String(new Date(input.value).getTime()) : "";
      }
      for (const e of Array.from(form.elements)) if (e.name && !e.value) e.disabled = true;
    });
    // Enter in a list submits the search too (a browser submits only from text fields).
    for (const select of $$("select", form)) select.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
    });
    if (new URLSearchParams(location.search).get("focus") === "1" || location.hash === "#search") {
      form.elements.identity.focus();
    }
  }

  // -- API page: "try it" ------------------------------------------------------------------
  function initDocs() {
    for (const form of $$("form.try")) form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = form.nextElementSibling;
      let path = form.dataset.path;
      const query = new URLSearchParams();
      for (const input of $$("input[data-in]", form)) {
        if (!input.value) continue;
        if (input.dataset.in === "path") path = path.replace(`{${input.name}}`, encodeURIComponent(input.value));
        else if (input.dataset.in === "query") query.set(input.name, input.value);
      }
      const url = path + (String(query) ? `?${query}` : "");
      const opts = { method: form.dataset.method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
      const body = form.elements.namedItem("__body");
      if (body) { opts.headers["Content-Type"] = "application/json"; opts.body = body.value; }
      out.hidden = false;
      out.textContent = `${form.dataset.method} ${url} …`;
      try {
        const r = await fetch(url, opts);
        const type = r.headers.get("content-type") || "";
        let text;
        if (type.includes("json")) text = JSON.stringify(await r.json(), null, 2);
        else if (type.startsWith("image/")) text = `(${type}, ${(await r.blob()).size} bytes)`;
        else text = (await r.text()).slice(0, 4000);
        out.textContent = `${r.status} ${r.statusText}\n${text}`;
      } catch (err) {
        out.textContent = String(err);
      }
    });
  }

  // -- keyboard ----------------------------------------------------------------------------
  function typing(target) {
    return target && (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));
  }

  function moveFocus(step) {
    const cards = $$(".face-card").filter((c) => c.offsetParent !== null);
    if (!cards.length) return;
    const at = cards.indexOf(document.activeElement);
    const next = at < 0 ? (step > 0 ? 0 : cards.length - 1) : Math.min(cards.length - 1, Math.max(0, at + step));
    cards[next].focus();
    cards[next].scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  function initKeys() {
    const dialog = $("#shortcuts");
    const opener = $("#shortcuts-open");
    if (opener && dialog) opener.addEventListener("click", () => dialog.showModal());
    let go = false;
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && typing(e.target)) { e.target.blur(); return; }
      if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || (dialog && dialog.open)) return;
      const page = document.body.dataset.page;
      if (go) {
        go = false;
        const target = { l: "/ui", s: "/ui/search", g: "/ui/gallery" }[e.key];
        if (target) { e.preventDefault(); location.assign(target); }
        return;
      }
      const face = $(".face-page");
      const actions = {
        "/": () => (page === "search" ? $("#search-form").elements.identity.focus() : location.assign("/ui/search?focus=1")),
        "?": () => dialog && dialog.showModal(),
        g: () => { go = true; },
        j: () => moveFocus(1),
        k: () => moveFocus(-1),
        h: () => { const b = $("#hits .hit-open .hit-ack"); if (b) b.focus(); },
        v: () => face && $("#verify-form").requestSubmit(),
        c: () => face && $("#context-button").click(),
        n: () => face && $("#enrol-new").elements.namedItem("name").focus(),
        a: () => face && !$("#enrol-existing").hidden && $("#enrol-existing").identity_id.focus(),
        Delete: () => face && erase(face.dataset.faceId),
      };
      const act = actions[e.key];
      if (act) { e.preventDefault(); act(); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    imageFallbacks();
    initKeys();
    const page = document.body.dataset.page;
    if (page === "live") initLive();
    else if (page === "face") initFace();
    else if (page === "gallery") initGallery();
    else if (page === "search") initSearch();
    else if (page === "docs") initDocs();
  });
})();
