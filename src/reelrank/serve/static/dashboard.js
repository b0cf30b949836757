// The dashboard: polls the API every POLL_MS and draws what it finds. Rates and recent
// latency quantiles come from differencing two polls of GET /v1/admin/overview, whose
// figures are cumulative; AUC and throughput histories live in this page only.

import { api, fmt, fragmentParams, h, pct, saveKey, takeKey } from "/static/api.js";
import { barChart, lineChart, PALETTE } from "/static/charts.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const POLL_MS = Number(query.get("every")) || 2000;
const EXPERIMENTS_EVERY = 5; // polls between experiment report refreshes
const HISTORY_S = 600;

const st = {
  key: takeKey("admin"),
  prev: null,
  polls: 0,
  series: { feeds: [], events: [], examples: [], p50: [], p99: [], auc: {} },
  video: null,
  user: null,
  deciding: new Set(),
};

function call(path, opts = {}) {
  return api(path, { key: st.key, ...opts });
}

function trim(points, now) {
  while (points.length && points[0][0] < now - HISTORY_S) points.shift();
}

function push(name, t, v) {
  const pts = st.series[name];
  pts.push([t, v]);
  trim(pts, t);
}

/** The q-quantile of cumulative [bound, count] buckets (linear within a bucket). */
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (bound === "+Inf") return lower;
      const inside = count - below;
      return lower + (bound - lower) * (inside ? (rank - below) / inside : 1);
    }
    lower = bound === "+Inf" ? lower : bound;
    below = count;
  }
  return lower;
}

// -- live figures ---------------------------------------------------------------------
function takeOverview(o) {
  const prev = st.prev;
  st.prev = o;
  const t = o.ts;
  const figures = { feedsPerS: null, eventsPerS: null, p50: o.feed.latency.p50_s, p99: o.feed.latency.p99_s, window: false };
  if (prev && t > prev.ts) {
    const dt = t - prev.ts;
    figures.feedsPerS = (o.feed.requests - prev.feed.requests) / dt;
    figures.eventsPerS = (o.events.accepted - prev.events.accepted) / dt;
    const diff = o.feed.latency.buckets.map(([b, c], i) => [b, c - (prev.feed.latency.buckets[i] || [b, 0])[1]]);
    if (diff.length && diff[diff.length - 1][1] > 0) {
      figures.p50 = quantile(diff, 0.5);
      figures.p99 = quantile(diff, 0.99);
      figures.window = true;
    }
    push("feeds", t, figures.feedsPerS);
    push("events", t, figures.eventsPerS);
    push("examples", t, o.model.examples_per_s ?? 0);
    push("p50", t, figures.p50 === null ? null : figures.p50 * 1000);
    push("p99", t, figures.p99 === null ? null : figures.p99 * 1000);
  }
  for (const [head, auc] of Object.entries(o.model.auc || {})) {
    const pts = (st.series.auc[head] = st.series.auc[head] || []);
    pts.push([t, auc]);
    trim(pts, t);
  }
  drawTiles(o, figures);
  drawCharts();
}

function drawTiles(o, f) {
  const ms = (s) => (s === null || s === undefined ? "–" : `${fmt(s * 1000, 1)} ms`);
  const tiles = [
    ["feed requests/s", f.feedsPerS === null ? "–" : fmt(f.feedsPerS, 1), "feeds-rate"],
    [`feed p50${f.window ? "" : " (all time)"}`, ms(f.p50), "p50"],
    [`feed p99${f.window ? "" : " (all time)"}`, ms(f.p99), "p99"],
    ["events/s", f.eventsPerS === null ? "–" : fmt(f.eventsPerS, 0), "events-rate"],
    ["training examples/s", fmt(o.model.examples_per_s, 0), "examples-rate"],
    ["training lag", o.model.lag_s === null || o.model.lag_s === undefined ? "–" : `${fmt(o.model.lag_s, 1)} s`, "train-lag"],
    ["model version", o.model.version || "none yet", "model-version"],
    ["ranker", o.model.ready ? "learned" : "heuristic", "ranker"],
    ["pairs ordered, learned / heuristic", championFigures(o.model.champion), "champion"],
    ["examples trained", fmt(o.model.examples_trained, 0), "examples"],
    ["feeds served", fmt(o.feed.requests, 0), "feeds"],
    ["events accepted", fmt(o.events.accepted, 0), "events"],
    ["state lag (events)", fmt(o.events.state_lag, 0), "state-lag"],
    ["videos", fmt(o.videos, 0), "videos"],
    ["users", fmt(o.users, 0), "users"],
  ];
  $("tiles").replaceChildren(
    ...tiles.map(([k, v, id]) => h("div", { class: "tile", dataset: { tile: id } },
      h("div", { class: /[a-z]{3}/.test(v) ? "v text" : "v" }, v), h("div", { class: "k" }, k))),
  );
}

/** Seconds of history shown: what has been collected, between one and ten minutes. */
function shownWindow() {
  const first = st.series.feeds.length ? st.series.feeds[0][0] : null;
  const last = st.prev ? st.prev.ts : null;
  if (first === null || last === null) return 60;
  return Math.min(HISTORY_S, Math.max(60, Math.ceil((last - first) / 60) * 60));
}

function drawCharts() {
  const s = st.series;
  const span = shownWindow();
  lineChart($("chart-feeds"), [{ name: "requests/s", points: s.feeds }], { window: span });
  lineChart($("chart-events"), [
    { name: "events/s", points: s.events },
    { name: "examples/s", points: s.examples },
  ], { window: span });
  lineChart($("chart-latency"), [
    { name: "p50", points: s.p50 },
    { name: "p99", points: s.p99 },
  ], { window: span });
  const heads = Object.keys(s.auc);
  if (heads.length) {
    // 0.5 is a coin toss: show from 0.4 up, lower only when a head is worse than that.
    const lowest = Math.min(...heads.flatMap((name) => s.auc[name].map((p) => p[1])));
    lineChart($("chart-auc"), heads.map((name) => ({ name, points: s.auc[name] })), {
      window: span, yMin: Math.min(0.4, Math.floor(lowest * 10) / 10), yMax: 1.0, format: (v) => v.toFixed(2),
    });
  } else {
    $("chart-auc").replaceChildren(h("p", { class: "muted" }, "No trainer figures yet: the trainer publishes them once it has learned from joined examples."));
  }
}

/** The champion/challenger comparison: shares of page pairs each ranker orders right. */
function championFigures(c) {
  if (!c || c.learned === null || c.learned === undefined) return "–";
  return `${fmt(c.learned, 3)} / ${fmt(c.heuristic, 3)}`;
}

function drawModel(m) {
  const serving = m.serving || {};
  const trainer = m.trainer;
  const parts = [
    `serving ${serving.model_version || "nothing yet"}`,
    serving.ready ? "learned ranker serving (it orders recent pages better than the heuristic)" : `heuristic serving: ${serving.note || "no learned ranker"}`,
    `trainer: ${serving.trainer_mode}`,
  ];
  const c = serving.champion;
  if (c && c.pairs) parts.push(`champion/challenger over ${fmt(c.pairs, 0)} page pairs: learned ${fmt(c.learned, 3)}, heuristic ${fmt(c.heuristic, 3)}`);
  if (trainer && trainer.two_tower) parts.push(`two-tower in-batch recall@10 ${fmt(trainer.two_tower.in_batch_recall_at_10, 3)}`);
  if (serving.retrieval) parts.push(`retrieval index ${serving.retrieval.ready ? `${fmt(serving.retrieval.videos, 0)} videos` : "not built yet"}`);
  $("model-note").textContent = parts.join(" · ");
}

function drawChannels(channels) {
  const names = Object.keys(channels);
  barChart($("chart-channels"), names.map((name, i) => ({
    label: name,
    value: channels[name].slots,
    note: channels[name].engagement_rate === null ? "–" : pct(channels[name].engagement_rate),
    color: PALETTE[i % PALETTE.length],
  })), { format: (v) => fmt(v, 0) });
  $("channels-table").replaceChildren(
    h("tr", {}, h("th", {}, "channel"), h("th", { class: "num" }, "candidates"), h("th", { class: "num" }, "slots"),
      h("th", { class: "num" }, "engaged"), h("th", { class: "num" }, "rate"), h("th", { class: "num" }, "failures")),
    ...names.map((n) => {
      const c = channels[n];
      return h("tr", {}, h("td", {}, n), h("td", { class: "num" }, fmt(c.candidates, 0)), h("td", { class: "num" }, fmt(c.slots, 0)),
        h("td", { class: "num" }, fmt(c.engagements, 0)), h("td", { class: "num" }, pct(c.engagement_rate)), h("td", { class: "num" }, fmt(c.failures, 0)));
    }),
  );
}

function drawPools(p) {
  const f = p.funnel;
  barChart($("chart-pools"), [
    { label: "entered", value: f.entered },
    { label: "promoted", value: f.promotions },
    { label: "graduated", value: f.graduations },
    { label: "stopped", value: f.stops, color: "#ff6b6b" },
    { label: "cooled", value: f.cooled, color: "#9aa4b2" },
    { label: "revived", value: f.revivals, color: "#ffb020" },
  ], { format: (v) => fmt(v, 0) });
  const stages = Object.entries(p.videos).map(([k, v]) => `${k} ${fmt(v, 0)}`).join(" · ");
  $("pools-detail").replaceChildren(
    h("div", { class: "table-wrap" }, h("table", { class: "table" },
      h("tr", {}, h("th", {}, "tier"), h("th", { class: "num" }, "size"), h("th", { class: "num" }, "threshold"),
        h("th", { class: "num" }, "testing"), h("th", { class: "num" }, "judging"), h("th", { class: "num" }, "promoted"), h("th", { class: "num" }, "stopped")),
      ...p.tiers.map((t) => h("tr", {}, h("td", {}, t.tier), h("td", { class: "num" }, fmt(t.size, 0)), h("td", { class: "num" }, fmt(t.threshold, 2)),
        h("td", { class: "num" }, t.testing), h("td", { class: "num" }, t.judging), h("td", { class: "num" }, t.promoted), h("td", { class: "num" }, t.stopped))),
    )),
    h("p", { class: "muted small" }, `videos by stage: ${stages}; boosts outstanding ${fmt(p.boost_outstanding, 0)}`),
  );
}

// -- review ---------------------------------------------------------------------------
function videoLink(id) {
  return h("a", { class: "vid", href: `#video=${encodeURIComponent(id)}`, onclick: (e) => { e.preventDefault(); openVideo(id); } }, id);
}

function drawReview(q) {
  $("review-count").textContent = `(${q.pending} pending)`;
  if (!q.items.length) {
    $("review-table").replaceChildren(h("tr", {}, h("td", { class: "muted" }, "Nothing waits for a person.")));
    return;
  }
  $("review-table").replaceChildren(
    h("tr", {}, h("th", {}, "video"), h("th", {}, "caption and hashtags"), h("th", {}, "held because"), h("th", { class: "num" }, "reports"), h("th", {}, "decision")),
    ...q.items.map((it) => {
      const v = it.video;
      const busy = st.deciding.has(v.id);
      return h("tr", { dataset: { videoId: v.id } },
        h("td", {}, videoLink(v.id), h("div", { class: "muted small" }, `@${v.creator_id}`)),
        h("td", {}, v.caption, h("div", { class: "muted small" }, v.hashtags.map((t) => `#${t}`).join(" "))),
        h("td", {}, it.reason || "", h("div", { class: "muted small" }, `by ${it.held_by || "?"}`)),
        h("td", { class: "num" }, it.reports),
        h("td", {},
          h("button", { class: "good approve", disabled: busy, onclick: () => decide(v.id, "approve") }, "Approve"), " ",
          h("button", { class: "bad reject", disabled: busy, onclick: () => decide(v.id, "reject") }, "Reject")),
      );
    }),
  );
}

async function decide(videoId, decision) {
  st.deciding.add(videoId);
  try {
    await call(`/v1/admin/review/${encodeURIComponent(videoId)}`, {
      method: "POST",
      body: { decision, reason: $("review-reason").value.trim() || "checked on the dashboard", reviewer: $("reviewer").value.trim() || "dashboard" },
    });
    localStorage.setItem("reelrank.dashboard.reviewer", $("reviewer").value.trim());
    drawReview(await call("/v1/admin/review?limit=100"));
    if (st.video === videoId) openVideo(videoId);
  } catch (err) {
    showError(`review decision failed: ${err.message}`);
  } finally {
    st.deciding.delete(videoId);
  }
}

// -- experiments ----------------------------------------------------------------------
async function refreshExperiments() {
  const { experiments } = await call("/v1/experiments");
  if (!experiments.length) {
    $("experiments-list").replaceChildren(h("p", { class: "muted" }, "No experiments. Start one with POST /v1/admin/experiments or in the config file."));
    return;
  }
  const reports = await Promise.all(experiments.map((e) => call(`/v1/experiments/${encodeURIComponent(e.id)}`).catch(() => null)));
  $("experiments-list").replaceChildren(...experiments.map((e, i) => drawExperiment(e, reports[i])));
}

function drawExperiment(e, rep) {
  const head = h("h3", {}, e.id, " ", h("span", { class: "pill" }, e.status), " ",
    h("span", { class: "muted small" }, `layer ${e.layer} · ${pct(e.traffic, 0)} of users · control ${e.control}`));
  const box = h("div", { class: "experiment", dataset: { experiment: e.id } }, head);
  if (e.description) box.append(h("p", { class: "muted small" }, e.description));
  if (!rep) return box;
  const metric = (a, k, f) => (a[k] === null || a[k] === undefined ? "–" : f(a[k]));
  const cmp = (name, k, f) => {
    const c = rep.comparisons[name] && rep.comparisons[name][k];
    if (!c) return "";
    return h("div", { class: c.significant ? "sig small" : "muted small" },
      `${c.delta >= 0 ? "+" : ""}${f(c.delta)} [${f(c.ci_low)}, ${f(c.ci_high)}] p=${c.p_value.toFixed(3)}`);
  };
  const cols = [
    ["watch_time_per_user_s", "watch s/user", (x) => fmt(x, 1)],
    ["session_length", "session length", (x) => fmt(x, 2)],
    ["finish_rate", "finish rate", (x) => pct(x, 2)],
    ["like_rate", "like rate", (x) => pct(x, 2)],
  ];
  box.append(h("div", { class: "table-wrap" }, h("table", { class: "table" },
    h("tr", {}, h("th", {}, "arm"), h("th", { class: "num" }, "users"), h("th", { class: "num" }, "impressions"), ...cols.map(([, label]) => h("th", { class: "num" }, label))),
    ...Object.entries(rep.arms).map(([name, a]) => h("tr", { dataset: { arm: name } },
      h("td", {}, name), h("td", { class: "num" }, fmt(a.users, 0)), h("td", { class: "num" }, fmt(a.impressions, 0)),
      ...cols.map(([k, , f]) => h("td", { class: "num" }, metric(a, k, f), name === e.control ? "" : cmp(name, k, f))))),
  )));
  const srm = rep.sample_ratio || {};
  if (srm.p_value !== undefined && srm.p_value !== null) {
    box.append(h("p", { class: srm.p_value < 0.001 ? "banner error small" : "muted small" },
      `sample ratio check p=${srm.p_value.toFixed(4)}${srm.p_value < 0.001 ? ": assignment or logging is broken, do not trust these results" : ""}`));
  }
  return box;
}

// -- video and user pages -------------------------------------------------------------
function dl(pairs) {
  return h("dl", {}, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function openVideo(id) {
  st.video = id;
  $("video-id").value = id;
  try {
    drawVideo(await call(`/v1/videos/${encodeURIComponent(id)}`));
  } catch (err) {
    $("video-detail").replaceChildren(h("p", { class: "muted" }, err.status === 404 ? `No video ${id}.` : err.message));
  }
}

function drawVideo(d) {
  const v = d.video;
  const life = d.lifecycle || {};
  const pool = life.pool || {};
  const c = d.counters;
  const imps = c.impressions || 0;
  const rate = (k) => (imps ? pct(c[k] / imps) : "–");
  const poolRates = pool.rates ? Object.entries(pool.rates).map(([k, x]) => `${k} ${pct(x)}`).join(" · ") : null;
  $("video-detail").replaceChildren(
    h("p", {}, h("b", {}, v.id), " ", h("span", { class: `pill ${d.status}`, dataset: { status: d.status } }, d.status),
      life.status_reason ? h("span", { class: "muted small" }, ` ${life.status_reason}`) : ""),
    dl([
      ["caption", v.caption], ["creator", v.creator_id], ["sound", v.sound_id || "–"],
      ["hashtags", v.hashtags.map((t) => `#${t}`).join(" ")], ["duration", `${(v.duration_ms / 1000).toFixed(1)} s`],
      ["language · region", `${v.language || "–"} · ${v.region || "–"}`],
      ["reviewed by", life.reviewed_by || v.reviewed_by], ["duplicate of", life.duplicate_of],
      ["servable", life.servable === undefined ? null : life.servable ? "yes" : "no"],
      ["hotness", fmt(d.hotness, 3)],
      ["pool", pool.stage ? `${pool.stage}${pool.tier !== null && pool.tier !== undefined ? `, tier ${pool.tier}` : ""}${pool.tier_size ? `, ${fmt(pool.served_in_tier, 0)} of ${fmt(pool.tier_size, 0)} impressions` : ""}` : null],
      ["pool quality", pool.quality === undefined ? (pool.last_quality === undefined ? null : `${fmt(pool.last_quality, 3)} (last judged)`) : `${fmt(pool.quality, 3)} (threshold ${fmt(pool.threshold, 2)})`],
      ["pool rates", poolRates],
      ["boost left", pool.boost_left],
    ]),
    h("h3", {}, "Counters"),
    h("div", { class: "table-wrap" }, h("table", { class: "table counters" },
      h("tr", {}, h("th", {}, "counter"), h("th", { class: "num" }, "total"), h("th", { class: "num" }, "per impression")),
      ...Object.entries(c).map(([k, x]) => h("tr", { dataset: { counter: k } }, h("td", {}, k), h("td", { class: "num" }, fmt(x, 0)),
        h("td", { class: "num" }, k === "impressions" || k === "watch_ms" ? "" : rate(k)))),
    )),
  );
}

async function openUser(id, withPreview = false) {
  st.user = id;
  $("user-id").value = id;
  try {
    drawUser(await call(`/v1/users/${encodeURIComponent(id)}`));
  } catch (err) {
    $("user-detail").replaceChildren(h("p", { class: "muted" }, err.status === 404 ? `No user ${id} yet (a new user gets a cold-start page).` : err.message));
  }
  if (withPreview) previewUser();
}

function drawUser(p) {
  const u = p.user || {};
  const interest = (rows) => rows.length ? rows.map((r) => `${r.id} ${r.weight.toFixed(2)}`).join(" · ") : "–";
  $("user-detail").replaceChildren(
    dl([
      ["user", u.id], ["region · language", `${u.region || "–"} · ${u.language || "–"}`],
      ["onboarding interests", (u.interests || []).join(", ") || "–"],
      ["hashtags", interest(p.top_interests.hashtags)], ["sounds", interest(p.top_interests.sounds)],
      ["creators", interest(p.top_interests.creators)],
      ["follows", p.follows.join(", ") || "–"], ["hidden creators", p.hidden_creators.join(", ") || "–"],
      ["hidden sounds", p.hidden_sounds.join(", ") || "–"], ["not interested", p.not_interested.join(", ") || "–"],
      ["seen", fmt(p.seen, 0)], ["engagements", fmt(p.engagements, 0)],
    ]),
    h("h3", {}, "Session (latest last)"),
    p.session.length
      ? h("ol", { class: "small" }, ...p.session.slice(-10).map((s) => h("li", {}, `${s.type} `, videoLink(s.video_id))))
      : h("p", { class: "muted small" }, "no engagements yet"),
  );
}

async function previewUser() {
  if (!st.user) return;
  try {
    const page = await call(`/v1/admin/users/${encodeURIComponent(st.user)}/preview?n=8`);
    $("user-preview").replaceChildren(
      h("h3", {}, `Next page, not served (${page.ranker}, ${page.model_version}${page.cold_start ? ", cold start" : ""})`),
      h("ol", { class: "small preview" }, ...page.items.map((it) => h("li", { dataset: { videoId: it.video_id } },
        videoLink(it.video_id), h("span", { class: "muted" }, ` ${it.source} · ${it.score.toFixed(3)}`),
        h("ul", { class: "reasons" }, ...it.reasons.map((r) => h("li", {}, r)))))),
    );
  } catch (err) {
    $("user-preview").replaceChildren(h("p", { class: "muted" }, err.message));
  }
}

// -- polling --------------------------------------------------------------------------
function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.classList.toggle("hidden", !text);
}

function setStatus(ok, text) {
  const s = $("status");
  s.className = `status ${ok ? "ok" : "err"}`;
  s.textContent = text;
}

async function poll() {
  const open = [
    call("/v1/channels").then((r) => drawChannels(r.channels)),
    call("/v1/pools").then(drawPools),
    call("/v1/model").then(drawModel),
  ];
  const admin = st.key
    ? [
        call("/v1/admin/overview").then(takeOverview),
        call("/v1/admin/review?limit=100").then(drawReview),
        st.polls % EXPERIMENTS_EVERY === 0 ? refreshExperiments() : null,
        st.video ? openVideo(st.video) : null,
        st.user ? openUser(st.user) : null,
      ]
    : [];
  const results = await Promise.allSettled([...open, ...admin]);
  st.polls++;
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  const auth = failed.find((e) => e && (e.status === 401 || e.status === 403));
  $("key-banner").classList.toggle("hidden", Boolean(st.key) && !auth);
  if (auth) showError(`admin calls refused: ${auth.detail}`);
  else if (failed.length) showError(failed.map((e) => e.message).join("; "));
  else showError("");
  setStatus(!failed.length, `${failed.length ? "errors" : "live"} · ${new Date().toLocaleTimeString()}`);
}

async function loop() {
  try {
    await poll();
  } catch (err) {
    setStatus(false, err.message);
  }
  setTimeout(loop, POLL_MS);
}

function wire() {
  $("key-input").value = st.key ? "••••••••" : "";
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("key-input").value.trim();
    if (v === "••••••••") return;
    st.key = v;
    saveKey("admin", v);
    st.prev = null;
    poll();
  });
  $("reviewer").value = localStorage.getItem("reelrank.dashboard.reviewer") || "dashboard";
  $("video-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("video-id").value.trim();
    if (id) openVideo(id);
  });
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-id").value.trim();
    if (id) openUser(id, true);
  });
  $("preview-btn").addEventListener("click", () => previewUser());
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(drawCharts, 150);
  });
  const frag = fragmentParams();
  if (frag.get("user")) openUser(frag.get("user"), true);
  if (frag.get("video")) openVideo(frag.get("video"));
}

wire();
loop();
