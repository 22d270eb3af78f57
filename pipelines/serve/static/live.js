// The live view of `videomini watch --serve`: the newest frame, the session's status, an ask box whose answer
// streams in, and the standing questions' alert events (server-sent events from /api/live/events).
"use strict";

const $ = (id) => document.getElementById(id);

function refreshFrame() {
  const next = new Image();
  next.onload = () => { $("frame").src = next.src; setTimeout(refreshFrame, 1000); };
  next.onerror = () => setTimeout(refreshFrame, 1000);
  next.src = "/api/live/frame.jpg?at=" + Date.now();
}

function showStatus(s) {
  const lag = s.lag_s === null ? "–" : s.lag_s.toFixed(1) + " s";
  const rss = s.resident_bytes ? (s.resident_bytes / 1048576).toFixed(0) + " MB" : "–";
  $("status").textContent = `${s.source} · ${s.frames_encoded} frames (${s.frames_dropped} dropped) · ` +
    `stream ${s.stream_s ?? 0} s · lag ${lag} · ${s.gaps.length} gaps · memory ${rss}` + (s.ended ? " · ended" : "");
  $("standing").replaceChildren(...s.alerts.map((a) => {
    const li = document.createElement("li");
    li.textContent = `${a.question} → ${a.answer}`;
    return li;
  }));
}

async function pollStatus() {
  try {
    const response = await fetch("/api/live/status");
    if (response.ok) showStatus(await response.json());
  } finally {
    setTimeout(pollStatus, 2000);
  }
}

function listen() {
  const events = new EventSource("/api/live/events");
  events.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  for (const kind of ["alert", "gap", "piece", "dropped", "connected", "ended"]) {
    events.addEventListener(kind, (e) => {
      const d = JSON.parse(e.data);
      const li = document.createElement("li");
      li.className = "event-" + kind;
      li.textContent = kind === "alert" ? `${d.wall_utc} ${d.question} → ${d.answer}` :
        `${kind} ${JSON.stringify(d)}`;
      $("alerts").prepend(li);
    });
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("answer").textContent = "";
  $("evidence").replaceChildren();
  const response = await fetch("/api/live/ask", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({question, stream: true}),
  });
  if (!response.ok) {
    $("answer").textContent = "error: " + (await response.json()).error;
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      handle(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function handle(frame) {
  const kind = (frame.match(/^event: (.*)$/m) || [])[1];
  const data = JSON.parse((frame.match(/^data: (.*)$/m) || [])[1] || "{}");
  if (kind === "token") $("answer").textContent += data.text;
  if (kind === "error") $("answer").textContent = "error: " + data.error;
  if (kind === "answer") {
    $("answer").textContent = data.text;
    $("evidence").replaceChildren(...data.evidence.map((e) => {
      const li = document.createElement("li");
      li.textContent = `${e.time_s.toFixed(1)} s of stream · ${e.wall_utc} · score ${e.score.toFixed(2)}`;
      return li;
    }));
    $("answer").dataset.done = "1";
  }
}

$("ask-form").addEventListener("submit", ask);
refreshFrame();
pollStatus();
listen();
