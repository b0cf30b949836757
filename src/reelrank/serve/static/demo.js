// The demo feed: the engine's real feed for one user, played as a short-video app would,
// sending the events such an app sends.
//
// Per card: `impression` and `play` when it is first shown; `watch` (watch_ms since the
// last report) whenever the viewer leaves it or it ends; `finish` when the playback bar
// completes; `skip` (with watch_ms) when the viewer moves on before the end. Buttons send
// like/unlike, share, follow/unfollow, not_interested, hide_creator and hide_sound. Every
// event carries the request_id of the feed page that served the video.

import { api, fragmentParams, h, saveKey, storedKey, takeKey } from "/static/api.js";

const PAGE = 6; // videos per feed request
const PREFETCH = 3; // fetch the next page when this few unseen cards remain

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const fragment = fragmentParams();

const st = {
  key: takeKey("ingest") || storedKey("admin"),
  user: "",
  cards: [],
  index: -1,
  loading: null,
  speed: Number(query.get("speed")) || 1,
  advance: query.get("advance") !== "0",
  session: Math.random().toString(36).slice(2, 8),
  seq: 0,
  queue: [],
  flushing: null,
  keyWarned: false,
  lastTick: performance.now(),
  generation: 0,
};

// -- events ---------------------------------------------------------------------------
function send(type, card, extra = {}, keepalive = false) {
  const ev = {
    event_id: `web-${st.session}-${++st.seq}`,
    type,
    user_id: st.user,
    video_id: card.item.video_id,
    request_id: card.requestId,
    ts: Date.now() / 1000,
    ...extra,
  };
  st.queue.push(ev);
  logEvent(ev);
  if (keepalive) flush(true);
  else if (!st.flushing) st.flushing = Promise.resolve().then(() => flush(false));
}

async function flush(keepalive) {
  const events = st.queue.splice(0);
  st.flushing = null;
  if (!events.length) return;
  if (!st.key) {
    showKeyBanner(true);
    markFailed(events, "no key");
    return;
  }
  if (keepalive) {
    fetch("/v1/events", {
      method: "POST",
      keepalive: true,
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${st.key}` },
      body: JSON.stringify({ events }),
    }).catch(() => {});
    return;
  }
  try {
    const res = await api("/v1/events", { key: st.key, method: "POST", body: { events } });
    if (res.rejected && res.rejected.length) {
      showError(`events rejected: ${res.rejected.map((r) => r.error).join("; ")}`);
    }
  } catch (err) {
    markFailed(events, err.message);
    if (err.status === 401 || err.status === 403) showKeyBanner(true, err.detail);
    else showError(`sending events failed: ${err.message}`);
  }
}

function logEvent(ev) {
  const extra = ev.watch_ms !== undefined ? ` ${ev.watch_ms} ms` : "";
  const li = h("li", { dataset: { eventId: ev.event_id, type: ev.type } }, `${ev.type} ${ev.video_id}${extra}`);
  const log = $("log");
  log.prepend(li);
  while (log.children.length > 60) log.lastChild.remove();
}

function markFailed(events, why) {
  for (const ev of events) {
    const li = $("log").querySelector(`[data-event-id="${ev.event_id}"]`);
    if (li) {
      li.classList.add("failed");
      li.title = why;
    }
  }
}

// -- feed pages -----------------------------------------------------------------------
function loadPage() {
  if (st.loading) return st.loading;
  const generation = st.generation;
  st.loading = (async () => {
    try {
      const page = await api(`/v1/feed/${encodeURIComponent(st.user)}?n=${PAGE}`, { key: st.key });
      if (generation !== st.generation) return;
      const videos = await Promise.all(
        page.items.map((it) =>
          api(`/v1/videos/${encodeURIComponent(it.video_id)}`, { key: st.key }).catch(() => null),
        ),
      );
      if (generation !== st.generation) return;
      page.items.forEach((item, i) => addCard(item, videos[i], page));
      showPageInfo(page);
      $("empty").classList.toggle("hidden", st.cards.length > 0);
      if (!st.cards.length) $("empty").textContent = "No videos to show yet.";
    } catch (err) {
      showError(`feed request failed: ${err.message}`);
    } finally {
      st.loading = null;
    }
  })();
  return st.loading;
}

function showPageInfo(page) {
  const arms = page.experiments ? Object.entries(page.experiments).map(([e, a]) => `${e}: ${a}`).join(", ") : "none";
  const rows = [
    ["request", page.request_id],
    ["ranker", `${page.ranker} (${page.model_version})`],
    ["note", page.ranker_note || ""],
    ["cold start", page.cold_start ? "yes" : "no"],
    ["experiments", arms],
    ["cards", `${st.cards.length} loaded`],
  ];
  $("page-info").replaceChildren(...rows.flatMap(([k, v]) => (v ? [h("dt", {}, k), h("dd", {}, v)] : [])));
}

function hue(id) {
  let x = 0;
  for (const c of id) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  return x % 360;
}

function clock(ms) {
  const sec = Math.floor(ms / 1000);
  return `${Math.floor(sec / 60)}:${String(sec % 60).padStart(2, "0")}`;
}

function addCard(item, detail, page) {
  const video = detail ? detail.video : { id: item.video_id, creator_id: "?", caption: "", hashtags: [], sound_id: null, duration_ms: 15000 };
  const card = {
    item, video, requestId: page.request_id,
    duration: Math.max(video.duration_ms || 15000, 1000),
    watched: 0, reported: 0, impressed: false, finished: false, skipped: false, liked: false,
  };
  const following = () => st.cards.some((c) => c.video.creator_id === video.creator_id && c.followed);
  card.followed = following();
  const btn = (cls, icon, label, onclick, title) =>
    h("button", { class: cls, title: title || label, "aria-label": title || label, onclick }, h("b", {}, icon), label);
  const why = h("div", { class: "why hidden" },
    h("h3", {}, "Why this video"),
    h("ul", {}, ...(item.reasons.length ? item.reasons : ["no particular reason given"]).map((r) => h("li", {}, r))),
    h("p", { class: "muted" }, `channel ${item.source} · score ${item.score.toFixed(3)}`),
  );
  const el = h("article", {
    class: "card",
    dataset: { videoId: video.id, creator: video.creator_id, sound: video.sound_id || "", requestId: page.request_id },
    style: `--hue: ${hue(video.id)}; top: ${st.cards.length * 100}%`,
  },
    h("div", { class: "art", "aria-hidden": "true" }, video.hashtags.length ? `#${video.hashtags[0]}` : video.id),
    why,
    h("div", { class: "actions" },
      btn("like", "♥", "Like", () => toggleLike(card)),
      btn("share", "↗", "Share", () => { send("share", card); toast("Shared"); }),
      btn("why-btn", "?", "Why", () => why.classList.toggle("hidden"), "Why this video"),
      btn("not-interested", "⊘", "Not for me", () => negative(card, "not_interested"), "Not interested"),
      btn("hide-creator", "✕", "Hide creator", () => negative(card, "hide_creator")),
      btn("hide-sound", "♪̸", "Hide sound", () => negative(card, "hide_sound")),
    ),
    h("div", { class: "meta" },
      h("div", { class: "creator" }, `@${video.creator_id}`,
        h("button", { class: `follow${card.followed ? " on" : ""}`, onclick: () => toggleFollow(card) }, card.followed ? "Following" : "Follow"),
        h("span", { class: "badge" }, item.source),
      ),
      h("p", { class: "caption" }, video.caption || ""),
      h("p", { class: "tags" }, video.hashtags.map((t) => `#${t}`).join(" ")),
      video.sound_id ? h("p", { class: "sound" }, `♪ ${video.sound_id}`) : null,
    ),
    h("div", { class: "progress" },
      h("div", { class: "rail" }, h("div", { class: "bar" })),
      h("span", { class: "time" }, `0:00 / ${clock(card.duration)}`),
    ),
  );
  card.el = el;
  card.bar = el.querySelector(".bar");
  card.time = el.querySelector(".time");
  st.cards.push(card);
  $("track").append(el);
}

// -- moving through the feed ----------------------------------------------------------
function current() {
  return st.cards[st.index];
}

function leave(card, keepalive = false) {
  if (!card) return;
  card.el.classList.remove("playing");
  const delta = Math.round(card.watched - card.reported);
  if (delta > 0) {
    send("watch", card, { watch_ms: delta }, keepalive);
    card.reported = card.watched;
  }
  if (!card.finished && !card.skipped && card.impressed) {
    card.skipped = true;
    send("skip", card, { watch_ms: Math.round(card.watched) }, keepalive);
  }
}

function show(i) {
  if (i < 0 || i >= st.cards.length || i === st.index) return;
  leave(current());
  st.index = i;
  $("track").style.transform = `translateY(${-100 * i}%)`;
  const card = current();
  card.el.classList.add("playing");
  if (!card.impressed) {
    card.impressed = true;
    send("impression", card);
    send("play", card);
  }
  st.lastTick = performance.now();
  if (st.cards.length - 1 - i < PREFETCH) loadPage();
}

async function next() {
  if (st.index + 1 >= st.cards.length) await loadPage();
  show(st.index + 1);
}

function prev() {
  show(st.index - 1);
}

function tick(now) {
  const dt = Math.min(now - st.lastTick, 250);
  st.lastTick = now;
  const card = current();
  if (card && !card.finished && document.visibilityState === "visible") {
    card.watched = Math.min(card.watched + dt * st.speed, card.duration);
    if (card.watched >= card.duration) {
      card.finished = true;
      card.el.classList.add("finished");
      const delta = Math.round(card.duration - card.reported);
      if (delta > 0) send("watch", card, { watch_ms: delta });
      card.reported = card.duration;
      send("finish", card);
      if (st.advance) setTimeout(() => current() === card && next(), 600);
    }
    card.bar.style.width = `${(100 * card.watched) / card.duration}%`;
    card.time.textContent = `${clock(card.watched)} / ${clock(card.duration)}`;
  }
  requestAnimationFrame(tick);
}

// -- buttons --------------------------------------------------------------------------
function toggleLike(card) {
  card.liked = !card.liked;
  send(card.liked ? "like" : "unlike", card);
  card.el.querySelector(".like").classList.toggle("on", card.liked);
}

function toggleFollow(card) {
  const creator = card.video.creator_id;
  const on = !card.followed;
  send(on ? "follow" : "unfollow", card);
  for (const c of st.cards) {
    if (c.video.creator_id !== creator) continue;
    c.followed = on;
    const b = c.el.querySelector("button.follow");
    b.classList.toggle("on", on);
    b.textContent = on ? "Following" : "Follow";
  }
  toast(on ? `Following @${creator}` : `Unfollowed @${creator}`);
}

/** not_interested / hide_creator / hide_sound: send it, drop the cards not yet shown and
 * fetch a fresh page, so what follows already reflects it. */
async function negative(card, type) {
  send(type, card);
  const label = { not_interested: "Fewer videos like this", hide_creator: `Hiding @${card.video.creator_id}`, hide_sound: `Hiding ♪ ${card.video.sound_id}` }[type];
  toast(label);
  await st.flushing;
  for (const c of st.cards.splice(st.index + 1)) c.el.remove();
  st.generation++;
  st.loading = null;
  await loadPage();
  next();
}

let toastTimer = null;
function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.remove("hidden");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.add("hidden"), 1600);
}

function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.classList.remove("hidden");
}

function showKeyBanner(on, why) {
  $("key-banner").classList.toggle("hidden", !on);
  if (on && why && !st.keyWarned) {
    st.keyWarned = true;
    showError(`events not accepted: ${why}`);
  }
}

// -- users ----------------------------------------------------------------------------
function newUserId() {
  return `viewer-${Math.random().toString(36).slice(2, 8)}`;
}

async function switchUser(user) {
  leave(current());
  await flush(false);
  st.generation++;
  st.loading = null;
  st.user = user;
  localStorage.setItem("reelrank.demo.user", user);
  $("user-id").value = user;
  $("who").textContent = `@${user}`;
  $("dash-link").href = `/dashboard#user=${encodeURIComponent(user)}`;
  for (const c of st.cards) c.el.remove();
  st.cards = [];
  st.index = -1;
  $("track").style.transform = "translateY(0)";
  $("empty").textContent = "Loading the feed…";
  $("empty").classList.remove("hidden");
  $("error").classList.add("hidden");
  await loadPage();
  show(0);
}

// -- wiring ---------------------------------------------------------------------------
function wire() {
  $("next").addEventListener("click", () => next());
  $("prev").addEventListener("click", () => prev());
  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    if (e.key === "ArrowDown") { e.preventDefault(); next(); }
    if (e.key === "ArrowUp") { e.preventDefault(); prev(); }
  });
  let wheelAt = 0;
  $("viewport").addEventListener("wheel", (e) => {
    e.preventDefault();
    const now = Date.now();
    if (Math.abs(e.deltaY) < 20 || now - wheelAt < 500) return;
    wheelAt = now;
    if (e.deltaY > 0) next(); else prev();
  }, { passive: false });
  let touchY = null;
  $("viewport").addEventListener("touchstart", (e) => { touchY = e.touches[0].clientY; }, { passive: true });
  $("viewport").addEventListener("touchend", (e) => {
    if (touchY === null) return;
    const dy = e.changedTouches[0].clientY - touchY;
    touchY = null;
    if (dy < -50) next();
    else if (dy > 50) prev();
  });
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $("user-id").value.trim();
    if (user) switchUser(user);
  });
  $("new-user").addEventListener("click", () => switchUser(newUserId()));
  $("speed").value = String(st.speed);
  if (![...$("speed").options].some((o) => o.value === String(st.speed))) {
    $("speed").append(h("option", { value: String(st.speed) }, `${st.speed}×`));
    $("speed").value = String(st.speed);
  }
  $("speed").addEventListener("change", () => { st.speed = Number($("speed").value); });
  $("advance").checked = st.advance;
  $("advance").addEventListener("change", () => { st.advance = $("advance").checked; });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    st.key = $("key-input").value.trim();
    saveKey("ingest", st.key);
    st.keyWarned = false;
    $("error").classList.add("hidden");
    showKeyBanner(!st.key);
  });
  $("forget-key").addEventListener("click", () => {
    saveKey("ingest", "");
    st.key = storedKey("admin");
    showKeyBanner(!st.key);
  });
  $("menu").addEventListener("click", () => $("side").classList.toggle("open"));
  $("close-side").addEventListener("click", () => $("side").classList.remove("open"));
  window.addEventListener("pagehide", () => leave(current(), true));
}

wire();
showKeyBanner(!st.key);
requestAnimationFrame(tick);
switchUser(fragment.get("user") || query.get("user") || localStorage.getItem("reelrank.demo.user") || newUserId());
$("viewport").focus();
