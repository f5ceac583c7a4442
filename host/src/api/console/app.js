// The sessiond web console: a page over the public API, signed in with a
// tenant's API key (that tenant's view) or an operator key (every tenant,
// through /admin/v1). The key lives in sessionStorage (this tab only) and
// goes out only as a bearer token; nothing is ever put in a URL but a user
// name.
'use strict';

const KEY_SLOT = 'sessiond.console.key';
const POLL_MS = 2000;
const CHART_POINTS = 300; // ten minutes at one point every 2 s
const AUDIT_ROWS = 200;

const state = {
  key: sessionStorage.getItem(KEY_SLOT),
  tab: 'sessions',
  operator: false, // signed in with an operator key
  user: null,
  timer: null,
  samples: [], // {at, calls, failures}: totals over every plugin
  auditAfter: null,
};

const $ = (id) => document.getElementById(id);

/** Calls the API; resolves to the JSON body (null for 204), rejects with the problem's detail. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json() : null;
  if (!res.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${res.status}`);
    error.status = res.status;
    throw error;
  }
  return data;
}

/** A new element with text content and attributes. */
function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === null || cell === undefined ? '' : String(cell);
    tr.append(td);
  }
  return tr;
}

function status(text, bad = false) {
  $('status').textContent = text;
  $('status').classList.toggle('bad', bad);
}

/** Microseconds as a person reads them: 850 µs, 12.4 ms, 2.1 s. */
function micros(us) {
  if (us < 1000) return `${us} µs`;
  if (us < 1000000) return `${(us / 1000).toFixed(1)} ms`;
  return `${(us / 1000000).toFixed(1)} s`;
}

/** A large count with a unit prefix: 950, 12.3 k, 4.5 M. */
function count(n) {
  if (n < 1000) return String(n);
  if (n < 1000000) return `${(n / 1000).toFixed(1)} k`;
  return `${(n / 1000000).toFixed(1)} M`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}

// ------------------------------------------------------------- signing in

async function signIn(key) {
  state.key = key;
  try {
    state.operator = false;
    await api('GET', '/v1/plugins');
  } catch (e) {
    // Not a tenant's key: it may be an operator's.
    if (e.status !== 401) {
      state.key = null;
      throw e;
    }
    try {
      await api('GET', '/admin/v1/tenants');
      state.operator = true;
    } catch (_) {
      state.key = null;
      throw e;
    }
  }
  sessionStorage.setItem(KEY_SLOT, key);
  document.body.classList.toggle('operator', state.operator);
  if (state.operator) state.tab = 'tenants';
  $('who').textContent = state.operator
    ? `signed in with operator key …${key.slice(-4)} (every tenant)`
    : `signed in with key …${key.slice(-4)}`;
  $('sign-in-view').classList.add('hidden');
  $('app-view').classList.remove('hidden');
  $('sign-out').classList.remove('hidden');
  state.auditAfter = `${Date.now()}-0`;
  show(state.tab);
  poll();
  state.timer = setInterval(poll, POLL_MS);
}

function signOut() {
  sessionStorage.removeItem(KEY_SLOT);
  state.key = null;
  clearInterval(state.timer);
  location.reload();
}

// ----------------------------------------------------------------- tabs

function show(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll('nav button')) {
    button.classList.toggle('active', button.dataset.tab === tab);
  }
  for (const pane of document.querySelectorAll('.tab')) {
    pane.classList.toggle('hidden', pane.id !== `tab-${tab}`);
  }
  poll();
}

/** Refreshes what the open tab shows; the chart's samples are taken whatever the tab. */
async function poll() {
  if (!state.key) return;
  try {
    if (state.operator) {
      const { tenants } = await api('GET', '/admin/v1/tenants');
      const plugins = tenants.flatMap((t) => t.plugins.map((p) => ({ ...p, tenant: t.name })));
      sample(plugins);
      if (state.tab === 'tenants') renderTenants(tenants);
      if (state.tab === 'plugins') renderPlugins(plugins);
      return;
    }
    const plugins = await api('GET', '/v1/plugins');
    sample(plugins.plugins);
    if (state.tab === 'plugins') renderPlugins(plugins.plugins);
    if (state.tab === 'activity') await tailAudit();
    if (state.tab === 'queues') await renderQueues();
  } catch (e) {
    if (e.status === 401) signOut();
    else status(`Cannot reach sessiond: ${e.message}`, true);
  }
}

// ------------------------------------------------------------- sessions

async function search(user) {
  state.user = user;
  const list = await api('GET', `/v1/users/${encodeURIComponent(user)}/sessions`);
  const body = $('sessions').querySelector('tbody');
  body.replaceChildren();
  $('details').classList.add('hidden');
  for (const s of list.sessions) {
    const details = el('button', 'Details', { type: 'button', class: 'link' });
    details.addEventListener('click', () => {
      $('details').textContent = JSON.stringify(s, null, 2);
      $('details').classList.remove('hidden');
    });
    const revoke = el('button', 'Revoke', { type: 'button', class: 'danger', 'data-session': s.public_id });
    revoke.addEventListener('click', () => armThen(revoke, 'Confirm revoke', () => revokeOne(s.public_id)));
    const actions = document.createElement('span');
    actions.append(details, revoke);
    const tr = row([s.public_id, when(s.created_at), when(s.last_seen_at), when(s.expires_at),
      s.device, s.remote_addr, actions]);
    tr.dataset.session = s.public_id;
    body.append(tr);
  }
  const any = list.sessions.length > 0;
  $('sessions').classList.toggle('hidden', !any);
  $('no-sessions').classList.toggle('hidden', any);
  $('revoke-all').classList.toggle('hidden', !any);
  status(`${list.sessions.length} live session(s) of ${user}`);
}

/** A destructive button asks once more: the first click arms it for 3 s. */
function armThen(button, armedText, action) {
  if (button.classList.contains('armed')) {
    button.disabled = true;
    action().catch((e) => status(e.message, true));
    return;
  }
  const text = button.textContent;
  button.classList.add('armed');
  button.textContent = armedText;
  setTimeout(() => {
    button.classList.remove('armed');
    button.textContent = text;
  }, 3000);
}

async function revokeOne(publicId) {
  await api('DELETE', `/v1/users/${encodeURIComponent(state.user)}/sessions/${encodeURIComponent(publicId)}`);
  await search(state.user);
  status(`Session ${publicId} revoked`);
}

async function revokeAll() {
  const ended = await api('DELETE', `/v1/users/${encodeURIComponent(state.user)}/sessions`);
  await search(state.user);
  status(`${ended.ended} session(s) of ${state.user} revoked`);
}

// -------------------------------------------------------------- plugins

function totals(plugins) {
  let calls = 0;
  let failures = 0;
  for (const p of plugins) {
    calls += p.calls;
    for (const n of Object.values(p.failures)) failures += n;
  }
  return { calls, failures };
}

function sample(plugins) {
  state.samples.push({ at: Date.now(), ...totals(plugins) });
  if (state.samples.length > CHART_POINTS + 1) state.samples.shift();
  if (state.tab === 'plugins') drawChart();
}

function renderPlugins(plugins) {
  const body = $('plugins').querySelector('tbody');
  body.replaceChildren();
  for (const p of plugins) {
    const failed = Object.entries(p.failures).filter(([, n]) => n > 0);
    const failures = failed.length
      ? el('span', failed.map(([kind, n]) => `${kind} ${n}`).join(', '), { class: 'bad' })
      : '0';
    const circuit = p.circuit.state === 'closed' ? 'closed' : el('span', p.circuit.state, { class: 'bad' });
    const recent = p.recent.calls ? p.recent : null;
    body.append(row([p.tenant ?? '', p.name, `${p.describe.name} ${p.describe.version}`, p.hooks.join(', '),
      p.calls, failures,
      recent ? micros(recent.wall_us.p99) : '—',
      recent ? count(recent.fuel.p99) : '—',
      circuit]));
  }
  drawChart();
}

/** Calls and failures per second between samples, as two polylines; the newest at the right. */
function drawChart() {
  const svg = $('chart');
  const ns = 'http://www.w3.org/2000/svg';
  const [w, h, left, bottom] = [svg.clientWidth || 600, svg.clientHeight || 180, 44, 18];
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.replaceChildren();
  const rates = [];
  for (let i = 1; i < state.samples.length; i++) {
    const [a, b] = [state.samples[i - 1], state.samples[i]];
    const secs = Math.max((b.at - a.at) / 1000, 0.001);
    rates.push({ calls: Math.max(b.calls - a.calls, 0) / secs, failures: Math.max(b.failures - a.failures, 0) / secs });
  }
  const top = Math.max(1, ...rates.map((r) => r.calls), ...rates.map((r) => r.failures));
  const svgEl = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const label = { 'font-size': 11, fill: '#6b7280' };
  svgEl('text', { x: 4, y: 14, ...label }, `${top.toFixed(top < 10 ? 1 : 0)}/s`);
  svgEl('text', { x: 4, y: h - bottom, ...label }, '0');
  svgEl('text', { x: left, y: h - 4, ...label }, '10 min ago');
  svgEl('text', { x: w - 4, y: h - 4, 'text-anchor': 'end', ...label }, 'now');
  svgEl('line', { x1: left, x2: w, y1: h - bottom, y2: h - bottom, stroke: '#e5e7eb' });
  const step = (w - left) / Math.max(CHART_POINTS - 1, 1);
  for (const [field, color] of [['calls', '#2563eb'], ['failures', '#b91c1c']]) {
    const points = rates.map((r, i) => {
      const x = w - (rates.length - 1 - i) * step;
      const y = h - bottom - ((h - bottom - 20) * r[field]) / top;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svgEl('polyline', { points: points.join(' '), fill: 'none', stroke: color, 'stroke-width': 2, 'data-series': field });
  }
}

// --------------------------------------------------------------- audit

async function tailAudit() {
  const body = $('audit').querySelector('tbody');
  for (;;) {
    const page = await api('GET', `/v1/audit?limit=100&after=${encodeURIComponent(state.auditAfter)}`);
    for (const r of page.records) {
      body.prepend(row([when(r.at), r.plugin, r.session, el('span', JSON.stringify(r.record), { class: 'record' })]));
      state.auditAfter = r.id;
    }
    while (body.children.length > AUDIT_ROWS) body.lastChild.remove();
    if (!page.next || page.records.length === 0) break;
  }
}

// -------------------------------------------------------------- tenants

function renderTenants(tenants) {
  const body = $('tenants').querySelector('tbody');
  body.replaceChildren(...tenants.map((t) => {
    const { calls, failures } = totals(t.plugins);
    const ran = t.plugins.filter((p) => p.recent.calls);
    const worst = ran.length ? micros(Math.max(...ran.map((p) => p.recent.wall_us.p99))) : '—';
    let state = 'serving';
    if (t.degraded) state = el('span', `degraded: ${t.degraded}`, { class: 'bad' });
    else if (t.store_error) state = el('span', `store: ${t.store_error}`, { class: 'bad' });
    const known = (n) => (n === null || n === undefined ? '—' : n);
    const tr = row([t.name, state, known(t.sessions), t.plugins.length, calls,
      failures ? el('span', failures, { class: 'bad' }) : '0', worst,
      known(t.ends_waiting), known(t.dead_letters), known(t.webhooks_held)]);
    tr.dataset.tenant = t.name;
    return tr;
  }));
}

// -------------------------------------------------------------- queues

function facts(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) list.append(el('dt', name), el('dd', value));
}

async function renderQueues() {
  const [ends, hooks] = await Promise.all([api('GET', '/v1/ends'), api('GET', '/v1/webhooks')]);
  facts($('ends'), [
    ['waiting', ends.waiting],
    ['claimed by a host', ends.claimed],
    ['dead letters', ends.dead],
    ['ran on this host', ends.ran],
  ]);
  facts($('outbox'), [
    ['deliveries waiting', hooks.held],
    ['due now', hooks.due],
    ['oldest queued', hooks.oldest_queued_at ? when(hooks.oldest_queued_at) : '—'],
  ]);
  const body = $('endpoints').querySelector('tbody');
  body.replaceChildren(...hooks.endpoints.map((e) => {
    const h = e.this_host;
    const failure = h.last_failure
      ? el('span', `${h.last_failure.error} (attempt ${h.last_failure.attempt}, ${when(h.last_failure.at)})`,
        { class: h.failing_in_a_row ? 'bad' : 'muted' })
      : '—';
    return row([e.url, e.events.join(', '), h.sent, h.failed, h.gave_up,
      h.last_sent_at ? when(h.last_sent_at) : '—', failure]);
  }));
}

// ---------------------------------------------------------------- wiring

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    $('sign-in-error').textContent = '';
    signIn($('key').value.trim()).catch((e) => {
      $('sign-in-error').textContent = e.status === 401 ? 'That key is not valid.' : e.message;
    });
  });
  $('sign-out').addEventListener('click', signOut);
  for (const button of document.querySelectorAll('nav button')) {
    button.addEventListener('click', () => show(button.dataset.tab));
  }
  $('search').addEventListener('submit', (event) => {
    event.preventDefault();
    search($('user').value.trim()).catch((e) => status(e.message, true));
  });
  $('revoke-all').addEventListener('click', () => armThen($('revoke-all'), 'Confirm: revoke all', revokeAll));
  if (state.key) signIn(state.key).catch(() => sessionStorage.removeItem(KEY_SLOT));
});
