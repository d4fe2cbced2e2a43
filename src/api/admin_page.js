// The admin endpoint's read-only page (src/api/admin_page.rs). Reads GET /health, /peers,
// /payments and /metrics of the endpoint that served it and shows what `cocoon status` prints,
// with the same arithmetic and labels (amounts exact: every JSON integer is read as a BigInt),
// the request counters, and a chart of earnings sampled while the page is open (kept bounded).
// Only GETs to its own origin; all text goes in with textContent.
'use strict';

const NANOTONS_PER_TON = 1000000000n;
/** Samples kept for the chart: an hour at the default interval. */
const MAX_SAMPLES = 720;
/** Rows of the channel table at most (a worker may hold many channels). */
const MAX_ROWS = 200;
/** A read that takes longer is abandoned (the endpoint answers from memory). */
const FETCH_TIMEOUT_MS = 5000;
const SVG_NS = 'http://www.w3.org/2000/svg';

/** Seconds between refreshes: `?every=N` (1 to 60), else 5. */
const EVERY = (() => {
  const asked = Number(new URLSearchParams(location.search).get('every'));
  return Number.isFinite(asked) && asked >= 1 ? Math.min(Math.floor(asked), 60) : 5;
})();
const samples = [];
let renders = 0;

/** JSON with every integer as a BigInt, exact past 2^53 where the reviver sees the source text
 *  (current browsers; older ones round amounts above 9,007,199 TON). */
function parseExact(text) {
  return JSON.parse(text, (_key, value, context) => {
    if (typeof value !== 'number') return value;
    const source = context && typeof context.source === 'string' ? context.source : null;
    if (source !== null && /^-?\d+$/.test(source)) return BigInt(source);
    return Number.isInteger(value) ? BigInt(value) : value;
  });
}

/** OpenMetrics text as samples `{name, labels, value}`; comments and odd lines are skipped. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** `GET path`: its status and its body through `parse`. */
async function read(path, parse) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(path, { signal: abort.signal, cache: 'no-store' });
    const text = await response.text();
    if (!response.ok) return { status: response.status, body: null };
    return { status: response.status, body: parse(text) };
  } finally {
    clearTimeout(timer);
  }
}

const nano = (v) => (typeof v === 'bigint' && v >= 0n ? v : 0n);
const list = (v) => (Array.isArray(v) ? v : []);
const sum = (items, field) => items.reduce((total, c) => total + nano(c[field]), 0n);
const count = (v) => String(nano(v));

/** `1.500000000 TON`, as the CLI prints amounts. */
function ton(nanotons) {
  const n = nano(nanotons);
  return `${n / NANOTONS_PER_TON}.${String(n % NANOTONS_PER_TON).padStart(9, '0')} TON`;
}

function unixTime(seconds) {
  const s = Number(nano(seconds));
  return s > 0 ? new Date(s * 1000).toLocaleString() : '—';
}

function setFigure(name, text) {
  for (const el of document.querySelectorAll(`[data-figure="${name}"]`)) el.textContent = text;
}

function show(id, visible) {
  document.getElementById(id).hidden = !visible;
}

function renderNode(health, peers) {
  const text = (v) => (typeof v === 'string' ? v : '?');
  setFigure('node.peer_id', text(health.peer_id));
  setFigure('node.roles', list(health.roles).map(text).join(', '));
  setFigure(
    'node.network',
    `${text(health.status)} (${count(health.connected_peers)} peers connected, ` +
      `${count(health.verified_workers)} verified workers)`,
  );
  setFigure(
    'node.peers',
    `${list(peers.connected).length} connected, ${list(peers.routing_table).length} in the routing table`,
  );
  setFigure('node.verified_workers', count(health.verified_workers));
  const up = nano(health.uptime_secs);
  setFigure('node.uptime', `${up / 3600n}h ${(up / 60n) % 60n}m ${up % 60n}s`);
  setFigure('node.version', text(health.version));
}

/** Earnings (worker side) and spending (client side), as `cocoon status` prints them. */
function renderMoney(roles, report) {
  show('payments-off', report === null);
  const r = report || {};
  const earning = list(r.worker_channels);
  const spending = list(r.client_channels);
  const debts = list(r.debts);
  const totals = r.totals || {};
  const worker = report !== null && (roles.includes('worker') || earning.length > 0 || debts.length > 0);
  const client = report !== null && (roles.includes('client') || spending.length > 0);
  show('worker', worker);
  show('client', client);
  const open = earning.filter((c) => c.closing !== true).length;
  setFigure('worker.earned', ton(sum(earning, 'voucher_cumulative_nanotons')));
  setFigure('worker.claimed', ton(totals.claimed_nanotons));
  setFigure('worker.unclaimed', ton(totals.unclaimed_nanotons));
  setFigure('worker.channels', `${open} open, ${earning.length - open} closing`);
  setFigure('worker.deposits', ton(sum(earning, 'deposited_nanotons')));
  setFigure('worker.unpaid', `${ton(totals.owed_nanotons)} by ${debts.length} clients`);
  const retired = spending.filter((c) => c.retired === true).length;
  setFigure('client.locked', ton(sum(spending, 'deposited_nanotons')));
  setFigure('client.paid', ton(sum(spending, 'signed_cumulative_nanotons')));
  setFigure('client.remaining', ton(sum(spending, 'remaining_nanotons')));
  setFigure('client.channels', `${spending.length - retired} open, ${retired} closing`);
  return { worker, client };
}

/** Sum and `outcome n, …` text of a counter family's samples by their `outcome` label. */
function byOutcome(metrics, name) {
  const outcomes = new Map();
  for (const s of metrics) {
    if (s.name !== name) continue;
    const outcome = s.labels.outcome || '';
    outcomes.set(outcome, (outcomes.get(outcome) || 0) + s.value);
  }
  const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
  const text = [...outcomes].sort().map(([o, n]) => `${o} ${n}`).join(', ');
  return { total: String(total), text: text || 'none' };
}

function renderRequests(metrics) {
  const served = byOutcome(metrics, 'cocoon_inference_worker_requests_total');
  const sent = byOutcome(metrics, 'cocoon_inference_client_requests_total');
  const vouchers = metrics
    .filter((s) => s.name === 'cocoon_payments_vouchers_total' && s.labels.outcome === 'accepted')
    .reduce((a, s) => a + s.value, 0);
  setFigure('requests.served', served.total);
  setFigure('requests.served_by_outcome', served.text);
  setFigure('requests.sent', sent.total);
  setFigure('requests.sent_by_outcome', sent.text);
  setFigure('requests.vouchers_accepted', String(vouchers));
}

function cell(row, text, title) {
  const td = row.insertCell();
  td.textContent = text;
  if (title) td.title = title;
}

function shortAddress(address) {
  const a = typeof address === 'string' ? address : '?';
  return a.length > 16 ? `${a.slice(0, 8)}…${a.slice(-6)}` : a;
}

function pendingClaim(p) {
  if (!p || typeof p !== 'object') return '—';
  const sent = nano(p.sent_at) > 0n ? `sent ${unixTime(p.sent_at)}` : 'not sent yet';
  return `${ton(p.cumulative_nanotons)} (${sent})`;
}

/** One row per channel (the timestamps the report has: last voucher, claim in flight). */
function renderChannels(report) {
  const r = report || {};
  const rows = [
    ...list(r.worker_channels).map((c) => [
      c.closing === true ? 'worker (closing)' : 'worker', c.address, ton(c.deposited_nanotons),
      ton(c.voucher_cumulative_nanotons), ton(c.claimed_nanotons), unixTime(c.last_voucher_at),
      pendingClaim(c.pending_claim),
    ]),
    ...list(r.client_channels).map((c) => [
      c.retired === true ? 'client (retired)' : 'client', c.address, ton(c.deposited_nanotons),
      ton(c.signed_cumulative_nanotons), ton(c.remaining_nanotons), '—', '—',
    ]),
  ];
  const body = document.querySelector('#channels tbody');
  body.replaceChildren();
  for (const [side, address, ...rest] of rows.slice(0, MAX_ROWS)) {
    const row = body.insertRow();
    cell(row, side);
    cell(row, shortAddress(address), typeof address === 'string' ? address : '');
    for (const text of rest) cell(row, text);
  }
  if (rows.length > MAX_ROWS) cell(body.insertRow(), `and ${rows.length - MAX_ROWS} more`);
  show('channels', rows.length > 0);
}

/** Record a sample; the series to draw (worker: earned and claimed; client: paid). */
function sampleSeries(report, sides) {
  const r = report || {};
  const earning = list(r.worker_channels);
  const now = Date.now();
  samples.push({
    t: now,
    earned: sum(earning, 'voucher_cumulative_nanotons'),
    claimed: nano((r.totals || {}).claimed_nanotons),
    paid: sum(list(r.client_channels), 'signed_cumulative_nanotons'),
  });
  while (samples.length > MAX_SAMPLES) samples.shift();
  setFigure('history.samples', String(samples.length));
  const points = (key) => samples.map((s) => [s.t, s[key]]);
  const series = [];
  if (sides.worker) {
    // No voucher arrived since the last one: earned has been what it is now since then.
    const last = earning.reduce((m, c) => (nano(c.last_voucher_at) > m ? nano(c.last_voucher_at) : m), 0n);
    const since = Number(last) * 1000;
    const earned = points('earned');
    if (since > 0 && since < samples[0].t) earned.unshift([since, samples[samples.length - 1].earned]);
    series.push({ key: 'earned', points: earned }, { key: 'claimed', points: points('claimed') });
  }
  if (sides.client) series.push({ key: 'paid', points: points('paid') });
  const title = document.getElementById('history-title');
  title.textContent = sides.worker ? 'Earnings over time' : 'Spending over time';
  return series;
}

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  parent.appendChild(el);
  return el;
}

function label(parent, x, y, anchor, text) {
  svg('text', { x, y, 'text-anchor': anchor }, parent).textContent = text;
}

/** An SVG line chart of `series` (amounts in nanotons against milliseconds). */
function drawChart(series) {
  const [W, H, L, R, T, B] = [640, 220, 110, 12, 12, 28];
  const box = document.getElementById('chart');
  const all = series.flatMap((s) => s.points);
  show('history', all.length > 0);
  if (all.length === 0) return box.replaceChildren();
  const root = document.createElementNS(SVG_NS, 'svg');
  root.setAttribute('viewBox', `0 0 ${W} ${H}`);
  root.setAttribute('id', 'earnings-chart');
  root.setAttribute('role', 'img');
  root.setAttribute('aria-label', 'earnings over time');
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const top = all.reduce((m, p) => (p[1] > m ? p[1] : m), 0n);
  const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = (v) => H - B - (top > 0n ? Number(v) / Number(top) : 0) * (H - T - B);
  svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }, root);
  svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }, root);
  label(root, L - 6, T + 4, 'end', ton(top));
  label(root, L - 6, H - B + 4, 'end', ton(0n));
  label(root, L, H - 8, 'start', new Date(t0).toLocaleTimeString());
  label(root, W - R, H - 8, 'end', new Date(t1).toLocaleTimeString());
  for (const s of series) {
    const xy = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    if (xy.length === 1) {
      const [cx, cy] = xy[0].split(',');
      svg('circle', { class: `dot ${s.key}`, cx, cy, r: 3 }, root);
    } else {
      svg('polyline', { class: s.key, points: xy.join(' '), 'data-series': s.key }, root);
    }
  }
  box.replaceChildren(root);
  for (const key of ['earned', 'claimed', 'paid']) {
    document.querySelector(`.legend .${key}`).hidden = !series.some((s) => s.key === key);
  }
}

async function refresh() {
  const [health, peers, payments, metrics] = await Promise.all([
    read('/health', parseExact),
    read('/peers', parseExact),
    read('/payments', parseExact),
    read('/metrics', parseMetrics),
  ]);
  if (!health.body || !peers.body) throw new Error(`the node answered ${health.status} / ${peers.status}`);
  if (!payments.body && payments.status !== 404) throw new Error(`GET /payments answered ${payments.status}`);
  const roles = list(health.body.roles);
  renderNode(health.body, peers.body);
  const sides = renderMoney(roles, payments.body);
  renderRequests(metrics.body || []);
  renderChannels(payments.body);
  drawChart(sampleSeries(payments.body, sides));
}

async function loop() {
  const error = document.getElementById('error');
  try {
    await refresh();
    renders += 1;
    error.hidden = true;
    document.body.dataset.state = 'ready';
    document.body.dataset.renders = String(renders);
    setFigure('page.updated', new Date().toLocaleTimeString());
  } catch (e) {
    error.textContent = `Could not read the node: ${e && e.message ? e.message : e}`;
    error.hidden = false;
    document.body.dataset.state = 'error';
  }
  setTimeout(loop, EVERY * 1000);
}

setFigure('page.every', String(EVERY));
loop();
