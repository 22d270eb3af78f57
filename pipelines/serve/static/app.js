// videomini's page: search moments, play them, ask (streamed), browse the library. No build step, no CDN.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { token: "", videos: new Map(), byPath: new Map(), playingId: null, stopAt: null, moment: null };

// ---------------------------------------------------------------------------------------------- token
// A token arrives as #token=... (never sent to the server in a URL) or is typed in; it goes in the
// Authorization header of API calls and in a same-site cookie, which <video> and <img> requests carry.
function setToken(token) {
  state.token = token || "";
  sessionStorage.setItem("videomini_token", state.token);
  document.cookie = `videomini_token=${encodeURIComponent(state.token)}; path=/; SameSite=Strict`;
}
function initToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) { setToken(fromHash); history.replaceState(null, "", location.pathname); }
  else setToken(sessionStorage.getItem("videomini_token") || "");
}
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { $("#token-bar").hidden = false; throw new Error("this server needs a token"); }
  if (!response.ok) {
    let reason = `${response.status}`;
    try { const body = await response.json(); reason = body.error || reason; } catch (_) { /* not JSON */ }
    throw new Error(reason);
  }
  return response;
}

// ---------------------------------------------------------------------------------------------- helpers
function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds + 1e-6));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
const baseName = (path) => (path || "").split(/[\\/]/).pop();
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// ---------------------------------------------------------------------------------------------- player
// A moment plays from its start and pauses at its end (marked on the bar under the player) unless the user plays
// on; on a narrow screen, where the player may be far above the card clicked, the page scrolls to it.
function markMoment() {
  const player = $("#player"), span = $("#moment-span"), moment = state.moment;
  if (!moment || !(player.duration > 0)) { span.hidden = true; return; }
  const left = Math.min(100, (100 * moment.start) / player.duration);
  const right = Math.min(100, (100 * moment.end) / player.duration);
  span.style.left = `${left}%`; span.style.width = `${Math.max(0.5, right - left)}%`; span.hidden = false;
}
function stopAtMomentEnd() {
  const player = $("#player");
  if (state.stopAt !== null && player.currentTime >= state.stopAt) {
    state.stopAt = null;  // once: pressing play again plays on
    player.pause();
    $("#moment-track").classList.add("ended");
  }
}
function showPlayer() {
  const box = $("#player").getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) $("#player").scrollIntoView({ block: "start" });
}
function play(videoId, startS, label, endS) {
  const player = $("#player");
  const hasEnd = typeof endS === "number" && endS > startS;
  state.moment = hasEnd ? { start: startS, end: endS } : null;
  state.stopAt = hasEnd ? endS : null;
  $("#moment-track").classList.remove("ended");
  $("#moment-track").dataset.end = hasEnd ? String(endS) : "";
  const seek = () => { player.currentTime = startS; player.play().catch(() => {}); };
  if (state.playingId !== videoId) {
    state.playingId = videoId;
    player.src = `/media/${videoId}`;
    player.addEventListener("loadedmetadata", seek, { once: true });
    player.load();
  } else if (player.readyState >= 1) seek();
  else player.addEventListener("loadedmetadata", seek, { once: true });
  const info = state.videos.get(videoId);
  $("#now-playing").textContent = `${label || baseName(info && info.path)} · `
    + (hasEnd ? `${clock(startS)}–${clock(endS)} (pauses at the end; play to go on)` : `from ${clock(startS)}`);
  markMoment();
  showPlayer();
  document.querySelectorAll(".result").forEach((card) =>
    card.classList.toggle("playing", card.dataset.videoId === String(videoId) && card.dataset.start === String(startS)));
}

// ---------------------------------------------------------------------------------------------- search
function resultCard(moment) {
  const name = baseName(moment.video);
  const signals = [...new Set(moment.matches.map((m) => m.signal))];
  const quotes = moment.matches.filter((m) => m.text).map((m) => el("p", { class: "quote" }, m.text));
  const relevance = Number(moment.relevance || 0).toFixed(2);
  const card = el("article", {
    class: `result${moment.confident ? " confident" : ""}`, tabindex: "0", "data-video-id": String(moment.video_id), "data-start": String(moment.start_s),
    title: `Play ${name} from ${clock(moment.start_s)}`,
    onclick: () => play(moment.video_id, moment.start_s, name, moment.end_s),
    onkeydown: (e) => { if (e.key === "Enter") play(moment.video_id, moment.start_s, name, moment.end_s); },
  },
  moment.thumbnail ? el("img", { src: moment.thumbnail, alt: `${name} at ${clock(moment.best_s)}`, loading: "lazy" }) : null,
  el("div", { class: "body" },
    el("div", { class: "name" }, name),
    el("div", { class: "when" }, `${clock(moment.start_s)}–${clock(moment.end_s)}`,
      el("span", { class: "relevance", title: "relevance 0–1: 0.5 and above is a confident match" },
        moment.confident ? `${relevance} · match` : relevance)),
    el("div", { class: "badges" }, ...signals.map((s) => el("span", { class: `badge ${s}` }, s === "ocr" ? "on screen" : s))),
    ...quotes));
  return card;
}
async function search(query) {
  showView("search");
  $("#status").textContent = "Searching…";
  $("#results").replaceChildren();
  try {
    const signal = $("#signal").value;
    const response = await api(`/api/search?q=${encodeURIComponent(query)}&top_k=24${signal ? `&signal=${signal}` : ""}`);
    const moments = await response.json();
    const notes = response.headers.get("X-Videomini-Notes");
    const matching = moments.filter((m) => m.confident).length;
    $("#status").textContent = !moments.length ? `Nothing found for “${query}”.`
      : matching ? `${matching} of ${moments.length} moments match “${query}” (relevance ≥ 0.5)`
      : `Nothing in the library matches “${query}”: the ${moments.length} closest moments are shown, none is a match.`;
    if (notes && matching) $("#status").textContent += ` — ${notes}`;
    $("#results").replaceChildren(...moments.map(resultCard));
  } catch (error) { $("#status").textContent = `Search failed: ${error.message}`; }
}

// ---------------------------------------------------------------------------------------------- ask (SSE)
function evidenceLink(evidence) {
  const row = state.byPath.get(evidence.video);
  const name = baseName(evidence.video);
  const label = `${row && state.videos.size > 1 ? name + " " : ""}${clock(evidence.start_s)}–${clock(evidence.end_s)}`;
  return el("a", { href: "#", title: `${name} ${clock(evidence.start_s)}–${clock(evidence.end_s)}, score `
    + evidence.score.toFixed(2), "data-time": String(evidence.start_s), "data-score": String(evidence.score),
    onclick: (e) => { e.preventDefault(); if (row) play(row.id, evidence.start_s, name, evidence.end_s); } },
  label, el("span", { class: "score" }, evidence.score.toFixed(2)));
}
// chips in the order a viewer meets them: by video (in the answer's order), then by time
function inTimeOrder(evidence) {
  const videos = [...new Set(evidence.map((e) => e.video))];
  return [...evidence].sort((a, b) => videos.indexOf(a.video) - videos.indexOf(b.video) || a.start_s - b.start_s);
}
const shortModel = (model) => baseName(String(model || "").replace(/[\\/]+$/, ""));
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(event, JSON.parse(data));
    }
  }
}
async function ask(question) {
  const answerBox = $("#ask-answer");
  answerBox.textContent = ""; answerBox.dataset.tokens = "0"; $("#ask-evidence").replaceChildren(); $("#ask-meta").textContent = "Thinking…";
  $("#ask-go").disabled = true;
  const body = { question, stream: true };
  if ($("#ask-this").checked && state.playingId !== null) body.video = state.playingId;
  try {
    const response = await api("/api/ask", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    await readEvents(response, (event, data) => {
      if (event === "token") {
        answerBox.textContent += data.text; answerBox.dataset.tokens = String(Number(answerBox.dataset.tokens) + 1);
        $("#ask-meta").textContent = "Answering…";
      }
      else if (event === "answer") {
        answerBox.textContent = data.text;
        $("#ask-evidence").replaceChildren(...inTimeOrder(data.evidence).map(evidenceLink));
        const by = data.generated_by === "signals" ? "from stored speech and on-screen text"
          : `${data.frames_used} frames · ${shortModel(data.model)}`;
        $("#ask-meta").textContent = `${by}${data.evidence.length ? " · the links above play the evidence" : ""}`;
      } else if (event === "error") $("#ask-meta").textContent = `Failed: ${data.error}`;
    });
  } catch (error) { $("#ask-meta").textContent = `Failed: ${error.message}`; }
  finally { $("#ask-go").disabled = false; }
}

// ---------------------------------------------------------------------------------------------- library
async function loadLibrary() {
  try {
    const { stats, videos } = await (await api("/api/videos")).json();
    state.videos = new Map(videos.map((v) => [v.id, v]));
    state.byPath = new Map(videos.map((v) => [v.path, v]));
    const index = stats.index || {};
    $("#library-stats").textContent = `${stats.videos} videos (${stats.status.done} indexed, ${stats.status.failed} failed)`
      + ` · ${(stats.hours * 60).toFixed(1)} min · ${stats.frames} frames · ${index.text_n_vectors || 0} text segments`;
    $("#videos tbody").replaceChildren(...videos.map((v) => {
      const row = el("tr", { class: v.status === "done" ? "clickable" : "" },
        el("td", {}, baseName(v.path)), el("td", {}, v.duration_s ? clock(v.duration_s) : "–"),
        el("td", { class: v.status === "failed" ? "error" : "" }, v.status === "failed" ? `failed: ${v.error}` : v.status),
        el("td", {}, String(v.n_frames || 0)), el("td", {}, v.signals || "–"));
      if (v.status === "done") row.addEventListener("click", () => play(v.id, 0, baseName(v.path)));
      return row;
    }));
  } catch (error) { $("#library-stats").textContent = `Library unavailable: ${error.message}`; }
}
function showView(which) {
  $("#results-view").hidden = which !== "search";
  $("#library-view").hidden = which !== "library";
  $("#tab-search").classList.toggle("active", which === "search");
  $("#tab-library").classList.toggle("active", which === "library");
  if (which === "library") loadLibrary();
}

document.addEventListener("DOMContentLoaded", () => {
  initToken();
  $("#player").addEventListener("timeupdate", stopAtMomentEnd);
  $("#player").addEventListener("loadedmetadata", markMoment);
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); const q = $("#q").value.trim(); if (q) search(q); });
  $("#ask-form").addEventListener("submit", (e) => { e.preventDefault(); const q = $("#ask-q").value.trim(); if (q) ask(q); });
  $("#ask-q").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#ask-form").requestSubmit(); } });
  $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); setToken($("#token").value); $("#token-bar").hidden = true; loadLibrary(); });
  $("#tab-search").addEventListener("click", () => showView("search"));
  $("#tab-library").addEventListener("click", () => showView("library"));
  loadLibrary();
});
