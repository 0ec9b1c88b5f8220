// The recalloc console's page: reads the console's JSON API (api/…) and draws it. Vanilla
// JavaScript, SVG charts drawn here, nothing fetched from anywhere else: it works offline.
// Every value shown is set through textContent (never parsed as HTML). The elements the
// browser test reads carry data-* attributes named after the API's fields.
'use strict';

const TOKEN_KEY = 'recalloc-console-token';
const SVG_NS = 'http://www.w3.org/2000/svg';
const COLOURS = {
  demand: '#6b6b6b', band: '#9467bd', hpa: '#d62728', seed: '#ff7f0e', recalloc: '#2ca02c',
  replicas: '#2ca02c', actions: '#1d2430',
};

class ApiError extends Error {
  constructor(message, field, status) {
    super(message);
    this.field = field;
    this.status = status;
  }
}

// ---- the API ----------------------------------------------------------------------------

let loginWaiters = [];

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const response = await fetch('api/' + path, Object.assign({}, options, { headers }));
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { error: 'the console answered ' + response.status + ' without JSON' };
  }
  if (response.status === 401) {
    await askToken(body && body.error);
    return api(path, options);
  }
  if (!response.ok) throw new ApiError(body.error || String(response.status), body.field, response.status);
  return body;
}

// Shows the token prompt once, however many calls were refused; resolves when a token is given.
function askToken(reason) {
  const dialog = document.getElementById('login');
  sessionStorage.removeItem(TOKEN_KEY);
  if (reason) document.getElementById('login-reason').textContent = reason;
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => loginWaiters.push(resolve));
}

function wireLogin() {
  document.getElementById('login-form').addEventListener('submit', () => {
    const token = document.getElementById('login-token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    const waiting = loginWaiters;
    loginWaiters = [];
    waiting.forEach((resolve) => resolve());
  });
}

// ---- formatting -------------------------------------------------------------------------

function fmtNumber(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  return v.toFixed(digits);
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + ' ms';
  return s.toFixed(2) + ' s';
}

function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString();
}

function fmtClock(ms, withDate) {
  const d = new Date(ms);
  const hm = String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  const s = ':' + String(d.getSeconds()).padStart(2, '0');
  return withDate ? d.toLocaleDateString() + ' ' + hm : hm + s;
}

function fmtUtc(seconds, span) {
  const iso = new Date(seconds * 1000).toISOString();
  return span > 3 * 86400 ? iso.slice(0, 10) : iso.slice(5, 16).replace('T', ' ');
}

// ---- DOM helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// The `hidden` attribute, also on SVG elements (which have no `hidden` property).
function show(e, visible) {
  e.toggleAttribute('hidden', !visible);
}

function showError(id, err) {
  const p = document.getElementById(id);
  if (!err) {
    p.hidden = true;
    p.textContent = '';
    p.removeAttribute('data-field');
    return;
  }
  p.hidden = false;
  p.textContent = err.message;
  if (err.field) p.setAttribute('data-field', err.field);
}

function figures(dl, pairs) {
  dl.replaceChildren();
  for (const [key, label, value, raw] of pairs) {
    dl.append(h('dt', { text: label }), h('dd', { 'data-field': key, 'data-value': raw, text: value }));
  }
}

// ---- SVG charts ---------------------------------------------------------------------------

function s(tag, attrs = {}, parent) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.append(e);
  return e;
}

// About `count` round tick values covering [lo, hi].
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600,
  6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400];

// Tick times (in the x unit, `unit` seconds each) about `count` apart, on round boundaries.
function timeTicks(lo, hi, unit, count = 8) {
  const spanS = (hi - lo) * unit;
  const stepS = TIME_STEPS.find((st) => spanS / st <= count) || TIME_STEPS[TIME_STEPS.length - 1];
  const step = stepS / unit;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
  return out;
}

// Draws a time chart into `svg`. `spec`: { width, height, unit (seconds per x unit), xFormat,
// yLabel, y2Label, now, series: [{ kind: 'line'|'step'|'band'|'dots', colour, points, lower,
// upper, axis: 'y'|'y2', dash, width, opacity, label }] } where points are [x, y|null].
function timeChart(svg, spec) {
  const W = spec.width || 1000, H = spec.height || 300;
  const L = 64, R = spec.y2Label ? 56 : 20, T = 14, B = 46;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
  let xs = [], ys = [0], y2s = [0];
  for (const se of spec.series) {
    const target = se.axis === 'y2' ? y2s : ys;
    const pts = se.kind === 'band' ? se.lower.concat(se.upper) : se.points;
    for (const [x, y] of pts) {
      if (y === null || y === undefined || !Number.isFinite(y)) continue;
      xs.push(x);
      target.push(y);
    }
  }
  if (spec.now !== undefined) xs.push(spec.now);
  if (xs.length === 0) {
    s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, svg).textContent = spec.empty || 'nothing to draw yet';
    return;
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const yMax = Math.max(...ys) * 1.08 || 1;
  const y2Max = Math.max(Math.ceil(Math.max(...y2s) * 1.15), 1);
  const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const py = (y) => T + (1 - y / yMax) * (H - T - B);
  const py2 = (y) => T + (1 - y / y2Max) * (H - T - B);

  for (const v of ticks(0, yMax)) {
    s('line', { x1: L, x2: W - R, y1: py(v), y2: py(v), class: 'grid' }, svg);
    s('text', { x: L - 6, y: py(v) + 4, 'text-anchor': 'end' }, svg).textContent = fmtNumber(v, 2);
  }
  if (spec.y2Label) {
    for (const v of ticks(0, y2Max, 4).filter(Number.isInteger)) {
      s('text', { x: W - R + 6, y: py2(v) + 4 }, svg).textContent = String(v);
    }
    const t = s('text', { x: W - 12, y: T + (H - T - B) / 2, 'text-anchor': 'middle', transform: `rotate(90 ${W - 12} ${T + (H - T - B) / 2})` }, svg);
    t.textContent = spec.y2Label;
  }
  const ty = s('text', { x: 12, y: T + (H - T - B) / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${T + (H - T - B) / 2})` }, svg);
  ty.textContent = spec.yLabel || '';
  for (const v of timeTicks(x0, x1, spec.unit || 1)) {
    s('line', { x1: px(v), x2: px(v), y1: T, y2: H - B, class: 'grid' }, svg);
    s('text', { x: px(v), y: H - B + 16, 'text-anchor': 'middle' }, svg).textContent = spec.xFormat(v, x1 - x0);
  }
  s('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }, svg);
  s('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }, svg);

  for (const se of spec.series) {
    const fy = se.axis === 'y2' ? py2 : py;
    if (se.kind === 'band') {
      // One polygon per run of defined steps (a gap in the forecast is a gap in the band).
      const n = se.lower.length;
      let start = null;
      for (let i = 0; i <= n; i++) {
        const ok = i < n && Number.isFinite(se.lower[i][1]) && Number.isFinite(se.upper[i][1]);
        if (ok && start === null) start = i;
        if (!ok && start !== null) {
          const up = se.upper.slice(start, i).map(([x, y]) => `${px(x)},${fy(y)}`);
          const down = se.lower.slice(start, i).reverse().map(([x, y]) => `${px(x)},${fy(y)}`);
          s('polygon', { points: up.concat(down).join(' '), fill: se.colour, 'fill-opacity': se.opacity || 0.18, stroke: 'none' }, svg);
          start = null;
        }
      }
      continue;
    }
    if (se.kind === 'dots') {
      for (const [x, y] of se.points) {
        s('circle', { cx: px(x), cy: fy(y), r: 3.5, fill: se.colour }, svg);
      }
      continue;
    }
    let d = '', pen = false, lastY = null;
    for (const [x, y] of se.points) {
      if (y === null || y === undefined || !Number.isFinite(y)) { pen = false; continue; }
      if (!pen) d += `M${px(x)},${fy(y)}`;
      else if (se.kind === 'step') d += `H${px(x)}V${fy(y)}`;
      else d += `L${px(x)},${fy(y)}`;
      pen = true;
      lastY = y;
    }
    if (se.kind === 'step' && pen && se.extendTo !== undefined) d += `H${px(se.extendTo)}`;
    if (d) {
      s('path', {
        d, fill: 'none', stroke: se.colour, 'stroke-width': se.width || 1.6,
        'stroke-dasharray': se.dash || '', 'stroke-opacity': se.opacity || 1,
      }, svg);
    }
  }
  if (spec.now !== undefined) {
    s('line', { x1: px(spec.now), x2: px(spec.now), y1: T, y2: H - B, class: 'now' }, svg);
    s('text', { x: px(spec.now) + 4, y: T + 10 }, svg).textContent = 'now';
  }
  // Legend under the axis.
  let lx = L;
  for (const se of spec.series.filter((x) => x.label)) {
    s('rect', { x: lx, y: H - 16, width: 14, height: 4, fill: se.colour, 'fill-opacity': se.kind === 'band' ? 0.35 : 1 }, svg);
    const t = s('text', { x: lx + 18, y: H - 11, class: 'legend' }, svg);
    t.textContent = se.label;
    lx += 30 + se.label.length * 7;
  }
}

// ---- overview -------------------------------------------------------------------------------

function renderOverview(o) {
  const tbody = document.querySelector('#services tbody');
  tbody.replaceChildren();
  for (const svc of o.services) {
    const health = svc.health.state;
    const replicas = svc.replicas
      ? `${svc.replicas.current} → ${svc.replicas.planned}` : '—';
    const p99 = svc.latency ? fmtSeconds(svc.latency.p99_seconds) : '—';
    const p99Title = svc.latency
      ? (svc.latency.source === 'window' ? 'between the last two reads, all methods'
        : `${svc.latency.method}, since the process started`) : '';
    tbody.append(h('tr', { 'data-service': svc.name },
      h('td', {}, h('strong', { text: svc.name }), h('span', { class: 'detail', text: svc.url })),
      h('td', { class: 'health ' + health, 'data-field': 'health', 'data-value': health },
        health.replace('_', ' '),
        svc.health.detail ? h('span', { class: 'detail', text: svc.health.detail }) : null,
        svc.metrics_error ? h('span', { class: 'detail', text: 'metrics: ' + svc.metrics_error }) : null),
      h('td', {
        'data-field': 'replicas', 'data-current': svc.replicas ? svc.replicas.current : null,
        'data-planned': svc.replicas ? svc.replicas.planned : null, title: svc.deployment || 'not a managed Deployment',
        text: replicas,
      }),
      h('td', { class: 'num', 'data-field': 'request_rate', 'data-value': svc.request_rate, text: fmtNumber(svc.request_rate) }),
      h('td', { class: 'num', 'data-field': 'p99', 'data-value': svc.latency ? svc.latency.p99_seconds : null, title: p99Title, text: p99 }),
      h('td', { class: 'num', 'data-field': 'lag', 'data-value': svc.lag, text: fmtNumber(svc.lag, 0) }),
    ));
  }
  const st = o.stats;
  figures(document.getElementById('stats'), st ? [
    ['events', 'events', String(st.events), st.events],
    ['users', 'users', String(st.users), st.users],
    ['items', 'items', String(st.items), st.items],
    ['ratings', 'ratings', String(st.ratings), st.ratings],
    ['embedded_items', 'embedded items', String(st.embedded_items), st.embedded_items],
    ['embedded_users', 'embedded users', String(st.embedded_users), st.embedded_users],
  ] : [['stats_error', 'stats', o.stats_error, null]]);
  const p = o.plan;
  figures(document.getElementById('plan-summary'), p ? [
    ['created_at_ms', 'plan made', fmtTime(p.created_at_ms), p.created_at_ms],
    ['dry_run', 'mode', p.dry_run ? 'dry run (planned, not applied)' : 'applied by the lease holder', String(p.dry_run)],
    ['step_seconds', 'step', p.step_seconds + ' s', p.step_seconds],
    ['solver', 'solver', `${p.solver} (${fmtNumber(p.solve_ms)} ms)`, p.solver],
  ] : [['plan_error', 'plan', o.plan_error, null]]);
}

// ---- deployments ----------------------------------------------------------------------------

function renderDeployments(view) {
  const list = document.getElementById('deployment-list');
  if (view.plan_error) {
    showError('deployments-error', new ApiError(view.plan_error, 'scheduler'));
    list.replaceChildren();
    return;
  }
  showError('deployments-error', null);
  const now = Date.now();
  const boxes = view.deployments.map((d) => {
    const svg = s('svg', { class: 'chart', 'data-chart': d.deployment });
    const qs = d.forecast;
    const series = [];
    if (qs.length >= 2) {
      series.push({ kind: 'band', colour: COLOURS.band, lower: qs[0].points, upper: qs[qs.length - 1].points,
        label: `forecast q${qs[0].quantile}–q${qs[qs.length - 1].quantile}` });
    }
    const median = qs.find((q) => q.quantile === 0.5);
    if (median) series.push({ kind: 'line', colour: COLOURS.band, dash: '5 4', points: median.points, label: 'forecast median' });
    series.push({ kind: 'line', colour: COLOURS.demand, points: d.demand, width: 2, label: 'demand' });
    series.push({ kind: 'step', colour: COLOURS.replicas, points: d.replicas, axis: 'y2', opacity: 0.55, label: 'replicas' });
    const lastPlan = d.plan.length ? d.plan[d.plan.length - 1][0] + d.step_seconds * 1000 : undefined;
    series.push({ kind: 'step', colour: COLOURS.replicas, points: d.plan, axis: 'y2', width: 2.4, extendTo: lastPlan, label: 'planned replicas' });
    const marks = d.actions.map((a) => [a.at_ms, a.to]);
    if (marks.length) series.push({ kind: 'dots', colour: COLOURS.actions, points: marks, axis: 'y2', label: 'scaling actions' });
    timeChart(svg, {
      width: 1100, height: 260, unit: 0.001, now,
      xFormat: (ms, span) => fmtClock(ms, span > 86400e3), yLabel: 'demand', y2Label: 'replicas', series,
    });
    const actions = d.actions.length
      ? h('ul', { class: 'actions' }, ...d.actions.map((a) => h('li', {
        'data-action': `${a.from}->${a.to}`,
        text: `${fmtTime(a.at_ms)}: ${a.from} → ${a.to} replicas (demand ${fmtNumber(a.demand)})${a.applied ? '' : ', dry run'}`,
      })))
      : h('p', { class: 'actions', text: 'no scaling action since the console started' });
    return h('div', { class: 'deployment', 'data-deployment': d.deployment },
      h('h3', { text: d.deployment }),
      h('p', { class: 'meta' },
        'replicas now ', h('strong', { 'data-field': 'current_replicas', text: String(d.current_replicas) }),
        ', planned per step ', h('span', { 'data-field': 'planned_replicas', text: d.planned_replicas.join(' ') }),
        ` · one replica serves ${fmtNumber(d.capacity_per_replica)} · step ${d.step_seconds} s · forecast `,
        h('span', { 'data-field': 'forecast_method', text: d.forecast_method || d.forecast_error || '—' })),
      svg, actions);
  });
  list.replaceChildren(...boxes);
}

// ---- models -----------------------------------------------------------------------------------

function renderModels(m) {
  showError('models-error', m.error ? new ApiError(m.error, 'rank') : null);
  const c = m.current;
  figures(document.getElementById('model'), c ? [
    ['version', 'version', c.version, c.version],
    ['algorithm', 'algorithm', c.algorithm, c.algorithm],
    ['factors', 'factors', String(c.factors), c.factors],
    ['users', 'users', String(c.users), c.users],
    ['items', 'items', String(c.items), c.items],
    ['trained_at_ms', 'trained at', fmtTime(c.trained_at_ms), c.trained_at_ms],
  ] : []);
  figures(document.getElementById('model-metrics'), c
    ? Object.entries(c.metrics).map(([k, v]) => [k, k, fmtNumber(v, 4), v]) : []);
  const tbody = document.querySelector('#model-versions tbody');
  tbody.replaceChildren(...m.seen.map((v) => h('tr', { 'data-version': v.version },
    h('td', { text: v.version }), h('td', { text: v.algorithm }),
    h('td', { text: fmtTime(v.trained_at_ms) }), h('td', { text: fmtTime(v.first_seen_ms) }))));
  const e = m.embed;
  figures(document.getElementById('embed-model'), e ? [
    ['model', 'model', e.model, e.model],
    ['dimension', 'dimension', String(e.dimension), e.dimension],
    ['max_seq_length', 'max tokens', String(e.max_seq_length), e.max_seq_length],
    ['device', 'device', e.device, e.device],
  ] : [['embed_error', 'embed', m.embed_error, null]]);
}

// ---- the live loop ---------------------------------------------------------------------------

let refreshMs = 5000;

async function refresh() {
  try {
    const [o, d, m] = await Promise.all([api('overview'), api('deployments'), api('models')]);
    refreshMs = o.refresh_ms || refreshMs;
    showError('overview-error', null);
    renderOverview(o);
    renderDeployments(d);
    renderModels(m);
    const updated = document.getElementById('updated');
    updated.textContent = o.rounds ? 'read ' + fmtClock(o.at_ms) : 'waiting for the first read…';
    document.body.dataset.rounds = String(o.rounds);
    document.body.dataset.atMs = String(o.at_ms);
  } catch (e) {
    showError('overview-error', e);
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

// ---- try it -------------------------------------------------------------------------------------

function itemLine(i) {
  return [
    h('span', { class: 'title', text: i.title || '(no title)' }),
    h('span', { class: 'id', text: '[' + i.item_id + ']' }),
    h('span', { class: 'score', text: 'score ' + i.score.toFixed(3) }),
  ];
}

function wireTry() {
  const recs = document.getElementById('recommendations');
  document.getElementById('recommend-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = document.getElementById('recommend-user').value;
    const k = document.getElementById('recommend-k').value;
    recs.dataset.state = 'loading';
    try {
      const r = await api('recommend?' + new URLSearchParams({ user, k }));
      showError('recommend-error', null);
      const meta = document.getElementById('recommend-meta');
      meta.replaceChildren('source ', h('strong', { 'data-field': 'source', text: r.source }),
        ', model ', h('span', { 'data-field': 'model_version', text: r.model_version }));
      recs.replaceChildren(...r.items.map((i) => h('li', { 'data-item': i.item_id },
        ...itemLine(i),
        i.reasons.length ? h('div', { class: 'reasons', text: 'because you liked: ' + i.reasons.map((x) => x.title || x.item_id).join('; ') }) : null,
        i.explain_error ? h('div', { class: 'reasons error', text: i.explain_error }) : null)));
    } catch (e) {
      showError('recommend-error', e);
      document.getElementById('recommend-meta').textContent = '';
      recs.replaceChildren();
    }
    recs.dataset.state = 'done';
  });
  const similar = document.getElementById('similar');
  document.getElementById('similar-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const item = document.getElementById('similar-item').value;
    const k = document.getElementById('similar-k').value;
    const byText = document.getElementById('similar-by-text').checked;
    similar.dataset.state = 'loading';
    try {
      const r = await api('similar?' + new URLSearchParams({ item, k, by_text: byText }));
      showError('similar-error', null);
      similar.replaceChildren(...r.items.map((i) => h('li', { 'data-item': i.item_id }, ...itemLine(i))));
    } catch (e) {
      showError('similar-error', e);
      similar.replaceChildren();
    }
    similar.dataset.state = 'done';
  });
}

// ---- the simulator ------------------------------------------------------------------------------

const UPLOAD = '(upload a CSV)';
let bundled = [];

async function wireSimulator() {
  const select = document.getElementById('simulate-trace');
  const capacity = document.getElementById('simulate-capacity');
  const startup = document.getElementById('simulate-startup');
  const fileLabel = document.getElementById('simulate-file-label');
  const pick = () => {
    const t = bundled.find((b) => b.name === select.value);
    fileLabel.hidden = !!t;
    if (t) {
      capacity.value = t.capacity_per_pod;
      startup.value = t.startup_seconds;
    }
  };
  select.addEventListener('change', pick);
  try {
    bundled = await api('traces');
  } catch (e) {
    showError('simulate-error', e);
  }
  select.replaceChildren(...bundled.map((t) => h('option', { value: t.name, title: t.description, text: t.name })),
    h('option', { value: UPLOAD, text: UPLOAD }));
  pick();

  const form = document.getElementById('simulate-form');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const button = form.querySelector('button');
    const table = document.getElementById('simulate-results');
    const chart = document.getElementById('simulate-chart');
    const body = { capacity_per_pod: Number(capacity.value), startup_seconds: Number(startup.value || 60) };
    table.dataset.state = 'loading';
    button.disabled = true;
    document.getElementById('simulate-meta').textContent = 'simulating… (the recalloc policy re-plans at every step)';
    try {
      if (select.value === UPLOAD) {
        const file = document.getElementById('simulate-file').files[0];
        if (!file) throw new ApiError('choose a CSV file (ts,value or Prophet\'s ds,y)', 'csv', 400);
        body.csv = await file.text();
      } else {
        body.trace = select.value;
      }
      const r = await api('simulate', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      showError('simulate-error', null);
      renderSimulation(r);
    } catch (e) {
      showError('simulate-error', e);
      document.getElementById('simulate-meta').textContent = '';
      table.hidden = true;
      show(chart, false);
    } finally {
      button.disabled = false;
      table.dataset.state = 'done';
    }
  });
}

function renderSimulation(r) {
  const table = document.getElementById('simulate-results');
  const chart = document.getElementById('simulate-chart');
  document.getElementById('simulate-meta').textContent =
    `${r.source}: ${r.points} points every ${r.step_seconds} s, ${fmtNumber(r.capacity_per_pod)} per pod, ${r.startup_seconds} s start-up`;
  table.querySelector('tbody').replaceChildren(...r.results.map((p) => h('tr', { 'data-policy': p.policy },
    h('td', { style: `color:${COLOURS[p.policy] || 'inherit'}`, text: p.policy }),
    h('td', { class: 'num', 'data-field': 'slack', 'data-value': p.slack, text: p.slack.toFixed(3) }),
    h('td', { class: 'num', 'data-field': 'under_provisioned_seconds', 'data-value': p.under_provisioned_seconds, text: p.under_provisioned_seconds.toFixed(0) }),
    h('td', { class: 'num', 'data-field': 'unmet_demand', 'data-value': p.unmet_demand, text: fmtNumber(p.unmet_demand) }),
    h('td', { class: 'num', 'data-field': 'scaling_actions', 'data-value': p.scaling_actions, text: String(p.scaling_actions) }),
    h('td', { class: 'num', 'data-field': 'mean_replicas', 'data-value': p.mean_replicas, text: p.mean_replicas.toFixed(2) }))));
  table.hidden = false;
  if (!r.chart) {
    show(chart, false);
    return;
  }
  const c = r.chart;
  const at = (values) => values.map((v, i) => [c.ts[i], v]);
  const series = [
    { kind: 'band', colour: COLOURS.band, lower: at(c.forecast_low), upper: at(c.forecast_high), label: 'forecast band' },
    { kind: 'line', colour: COLOURS.demand, points: at(c.demand), width: 1.2, label: 'demand' },
  ];
  for (const p of c.capacity) {
    series.push({ kind: 'step', colour: COLOURS[p.policy] || '#000', points: at(p.values), width: 1.4, label: p.policy + ' capacity' });
  }
  show(chart, true);
  timeChart(chart, {
    width: 1200, height: 380, unit: 1, xFormat: fmtUtc, yLabel: 'load (trace unit)', series,
  });
}

// ---- start ----------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  wireLogin();
  wireTry();
  wireSimulator();
  refresh();
});
