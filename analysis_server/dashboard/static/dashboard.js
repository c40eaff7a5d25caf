// The dashboard's behaviour: live events (SSE), the verify round trip, gallery edits.
// Plain JavaScript, no build step. Untrusted text only ever goes into textContent.
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

  let toastTimer = null;
  function toast(message, kind = "ok") {
    const el = $("#toast");
    el.textContent = message;
    el.className = `toast toast-${kind}`;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function localTimes(root = document) {
    for (const t of $$("time[data-ms]", root)) {
      const ms = Number(t.dataset.ms);
      if (!ms) continue;
      const d = new Date(ms);
      const today = d.toDateString() === new Date().toDateString();
      t.textContent = today && t.closest(".face-card, .hit") ? d.toLocaleTimeString() : d.toLocaleString();
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
  function faceCard(ev, reconstruction) {
    const a = el("a", "face-card fresh" + (ev.identity_id ? " matched" : ""));
    a.href = "/ui/faces/" + encodeURIComponent(ev.face_id);
    a.dataset.faceId = ev.face_id;
    const thumb = el("span", "thumb");
    if (reconstruction) {
      const img = el("img");
      img.alt = "base-layer reconstruction";
      img.loading = "lazy";
      img.src = "/faces/" + encodeURIComponent(ev.face_id) + "/image?layer=base";
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
    const dist = ev.identity_id && ev.distance ? ` · d=${Number(ev.distance).toFixed(3)}` : "";
    meta.append(name, time, el("span", "muted small", `${ev.camera_id}${dist}`));
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

  function addHit(ev) {
    const li = el("li", "hit fresh");
    li.dataset.faceId = ev.face_id;
    const a = el("a");
    a.href = "/ui/faces/" + encodeURIComponent(ev.face_id);
    a.appendChild(el("strong", "", ev.name || ev.identity_id));
    const time = el("time");
    time.dataset.ms = ev.capture_time_ms;
    const info = el("span", "muted small", `${ev.camera_id} · `);
    info.append(time, document.createTextNode(` · d=${Number(ev.distance).toFixed(3)}`));
    li.append(a, info);
    localTimes(li);
    $("#hits").prepend(li);
    for (const extra of $$("#hits .hit").slice(20)) extra.remove();
    $("#no-hits").hidden = true;
  }

  function removeFace(ev) {
    for (const n of $$(`[data-face-id]`)) if (n.dataset.faceId === ev.face_id) n.remove();
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
    es.addEventListener("watchlist_hit", (e) => addHit(JSON.parse(e.data)));
    es.addEventListener("face_deleted", (e) => removeFace(JSON.parse(e.data)));
    window.addEventListener("beforeunload", () => es.close());
  }

  // -- one face ----------------------------------------------------------------------------
  async function refreshAudit(faceId) {
    const r = await fetch(`/ui/faces/${encodeURIComponent(faceId)}/audit`, { credentials: "same-origin" });
    if (!r.ok) return;
    const box = $("#audit");
    box.innerHTML = await r.text(); // rendered (and escaped) by the server
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
      $("#base-bytes").textContent = `${base} B`;
      $("#total-bytes").textContent = `${enh + base} B (${(100 * (enh + base) / Number(page.dataset.rawBytes)).toFixed(1)} % of raw)`;
      page.classList.add("verified");
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
      button.textContent = "Verify";
      refreshAudit(faceId);
    }
  }

  function initFace() {
    const page = $(".face-page");
    const faceId = page.dataset.faceId;
    loadBase(faceId);
    $("#verify-form").addEventListener("submit", (e) => { e.preventDefault(); verify(e.target, page); });
    $("#enrol-new").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target;
      try {
        const ident = await api("POST", "/identities", { name: f.elements.namedItem("name").value.trim(), watchlist: f.watchlist.checked,
                                                         features: [{ face_id: faceId }] });
        toast(`Enrolled ${ident.name} as a new identity.`);
        f.reset();
      } catch (err) { toast(err.message, "error"); }
    });
    const existing = $("#enrol-existing");
    if (existing) existing.addEventListener("submit", async (e) => {
      e.preventDefault();
      const sel = e.target.identity_id;
      try {
        await api("POST", `/identities/${encodeURIComponent(sel.value)}/features`, { face_id: faceId });
        toast(`Added this face to ${sel.options[sel.selectedIndex].text}.`);
      } catch (err) { toast(err.message, "error"); }
    });
    $("#erase-face").addEventListener("click", async () => {
      if (!confirm("Erase this face here and its texture at the edge? This cannot be undone.")) return;
      try {
        await api("DELETE", `/faces/${encodeURIComponent(faceId)}`);
        window.location.assign("/ui");
      } catch (err) { toast(err.message, "error"); }
    });
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
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    imageFallbacks();
    const page = document.body.dataset.page;
    if (page === "live") initLive();
    else if (page === "face") initFace();
    else if (page === "gallery") initGallery();
    else if (page === "search") initSearch();
  });
})();
