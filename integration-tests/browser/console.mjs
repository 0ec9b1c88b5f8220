// Drives the console's page in headless Chromium (Debian's, through playwright-core) and prints
// what it showed as one JSON object on stdout; integration-tests/tests/console.rs compares it with
// the services' own answers. Nothing is asserted here but that the page got far enough to show
// each panel: the numbers are judged by the Rust test.
//
//   node console.mjs URL --user U --item I --trace NAME --screenshot FILE.png [--bad-user U]
//        [--token T]
//
// With --token the console is expected to ask for it: the page's first API calls are refused
// (401, logged by the browser apart from the other errors), the login dialog opens, the token
// is typed in, and from then on every call must carry it.
//
// RECALLOC_TEST_PLAYWRIGHT: the folder deploy/local/browser.sh installed playwright-core into.
// RECALLOC_TEST_CHROMIUM: the browser (default /usr/bin/chromium).
import { createRequire } from 'node:module';
import path from 'node:path';

function options(argv) {
  const o = { url: argv[0] };
  for (let i = 1; i < argv.length; i += 2) o[argv[i].replace(/^--/, '').replace(/-/g, '_')] = argv[i + 1];
  for (const k of ['url', 'user', 'item', 'trace', 'screenshot']) {
    if (!o[k]) throw new Error(`missing ${k}: node console.mjs URL --user U --item I --trace NAME --screenshot FILE`);
  }
  return o;
}

const opts = options(process.argv.slice(2));
const dir = process.env.RECALLOC_TEST_PLAYWRIGHT;
if (!dir) throw new Error('RECALLOC_TEST_PLAYWRIGHT is not set (make test sets it from deploy/local/browser.sh)');
const { chromium } = createRequire(path.join(dir, 'package.json'))('playwright-core');

const started = Date.now();
const out = { errors: [], login_errors: [], bad_input_errors: [], timings_ms: {} };
let errors = opts.token ? out.login_errors : out.errors;
const browser = await chromium.launch({
  executablePath: process.env.RECALLOC_TEST_CHROMIUM || '/usr/bin/chromium',
  headless: true,
});
out.timings_ms.launch = Date.now() - started;
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
  page.on('pageerror', (e) => errors.push('page: ' + e.message));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`); });

  const response = await page.goto(opts.url, { waitUntil: 'load' });
  out.status = response.status();
  out.content_type = response.headers()['content-type'];
  out.title = await page.title();
  if (opts.token) {
    await page.waitForSelector('#login[open]', { timeout: 30000 });
    out.login = {
      asked: true,
      reason: await page.textContent('#login-reason'),
      data_before: await page.evaluate(() => document.body.dataset.rounds ?? null),
    };
    await page.fill('#login-token', opts.token);
    await page.click('#login-form button');
    await page.waitForFunction(() => !document.getElementById('login').open, null, { timeout: 10000 });
    await page.waitForFunction(() => Number(document.body.dataset.rounds || 0) >= 1, null, { timeout: 30000 });
    out.login.token_kept = await page.evaluate(() => sessionStorage.getItem('recalloc-console-token') !== null);
    errors = out.errors;
  }
  // Two rounds of the console's reads: the request rates need two scrapes.
  await page.waitForFunction(() => Number(document.body.dataset.rounds || 0) >= 2, null, { timeout: 60000 });
  await page.waitForSelector('#deployment-list .deployment svg path', { state: 'attached', timeout: 60000 });
  out.timings_ms.loaded = Date.now() - started;

  out.overview = await page.evaluate(() => {
    const text = (e) => (e ? e.textContent.trim() : null);
    const services = {};
    for (const tr of document.querySelectorAll('#services tr[data-service]')) {
      const f = (name) => tr.querySelector(`[data-field="${name}"]`);
      services[tr.dataset.service] = {
        health: f('health').dataset.value,
        replicas: text(f('replicas')),
        replicas_current: f('replicas').dataset.current ?? null,
        replicas_planned: f('replicas').dataset.planned ?? null,
        request_rate: text(f('request_rate')),
        p99: text(f('p99')),
        lag: text(f('lag')),
      };
    }
    const dl = (id) => Object.fromEntries([...document.querySelectorAll(`#${id} dd`)].map((d) => [d.dataset.field, text(d)]));
    return { services, stats: dl('stats'), plan: dl('plan-summary'), rounds: Number(document.body.dataset.rounds) };
  });
  out.deployments = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('.deployment')].map((d) => [
    d.dataset.deployment, {
      current_replicas: d.querySelector('[data-field="current_replicas"]').textContent,
      planned_replicas: d.querySelector('[data-field="planned_replicas"]').textContent,
      forecast_method: d.querySelector('[data-field="forecast_method"]').textContent,
      chart_height: d.querySelector('svg').getBoundingClientRect().height,
      chart_paths: d.querySelectorAll('svg path').length,
      chart_bands: d.querySelectorAll('svg polygon').length,
    }])));
  out.model = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#model dd')].map((d) => [d.dataset.field, d.textContent])));
  out.model_metrics = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#model-metrics dd')].map((d) => [d.dataset.field, d.textContent])));
  out.models_seen = await page.evaluate(() => [...document.querySelectorAll('#model-versions tr[data-version]')].map((r) => r.dataset.version));

  // Try it: recommendations with reasons, then similar items.
  await page.fill('#recommend-user', opts.user);
  await page.fill('#recommend-k', '5');
  await page.click('#recommend-form button');
  await page.waitForSelector('#recommendations[data-state="done"]', { state: 'attached' });
  out.recommend = await page.evaluate(() => ({
    error: document.getElementById('recommend-error').hidden ? null : document.getElementById('recommend-error').textContent,
    source: document.querySelector('#recommend-meta [data-field="source"]')?.textContent ?? null,
    model_version: document.querySelector('#recommend-meta [data-field="model_version"]')?.textContent ?? null,
    items: [...document.querySelectorAll('#recommendations li')].map((li) => ({
      item_id: li.dataset.item,
      title: li.querySelector('.title').textContent,
      reasons: li.querySelector('.reasons')?.textContent ?? null,
    })),
  }));
  await page.fill('#similar-item', opts.item);
  await page.fill('#similar-k', '5');
  await page.click('#similar-form button');
  await page.waitForSelector('#similar[data-state="done"]', { state: 'attached' });
  out.similar = await page.evaluate(() => ({
    error: document.getElementById('similar-error').hidden ? null : document.getElementById('similar-error').textContent,
    items: [...document.querySelectorAll('#similar li')].map((li) => li.dataset.item),
  }));

  // The simulator on a bundled trace.
  await page.selectOption('#simulate-trace', opts.trace);
  const t0 = Date.now();
  await page.click('#simulate-form button');
  await page.waitForSelector('#simulate-results[data-state="done"]', { state: 'attached', timeout: 300000 });
  out.timings_ms.simulate = Date.now() - t0;
  out.simulate = await page.evaluate(() => ({
    error: document.getElementById('simulate-error').hidden ? null : document.getElementById('simulate-error').textContent,
    meta: document.getElementById('simulate-meta').textContent,
    capacity_per_pod: document.getElementById('simulate-capacity').value,
    results: Object.fromEntries([...document.querySelectorAll('#simulate-results tr[data-policy]')].map((tr) => [
      tr.dataset.policy, Object.fromEntries([...tr.querySelectorAll('[data-field]')].map((td) => [td.dataset.field, td.textContent]))])),
    chart_height: document.getElementById('simulate-chart').getBoundingClientRect().height,
    chart_paths: document.querySelectorAll('#simulate-chart path').length,
    chart_bands: document.querySelectorAll('#simulate-chart polygon').length,
    legend: [...document.querySelectorAll('#simulate-chart text.legend')].map((t) => t.textContent),
  }));
  // From the top: the sticky header would otherwise sit in the middle of the full page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  out.screenshot = opts.screenshot;

  // Bad input, last: the browser logs the 404 and 400 answers as console errors, which are
  // expected here and kept apart.
  errors = out.bad_input_errors;
  if (opts.bad_user) {
    await page.fill('#recommend-user', opts.bad_user);
    await page.click('#recommend-form button');
    await page.waitForSelector('#recommendations[data-state="done"]', { state: 'attached' });
    out.bad_user = await page.evaluate(() => {
      const e = document.getElementById('recommend-error');
      return { shown: !e.hidden, text: e.textContent, field: e.dataset.field ?? null, items: document.querySelectorAll('#recommendations li').length };
    });
  }
  await page.selectOption('#simulate-trace', '(upload a CSV)');
  await page.setInputFiles('#simulate-file', { name: 'bad.csv', mimeType: 'text/csv', buffer: Buffer.from('ts,value\n0,1\n60,lots\n') });
  await page.fill('#simulate-capacity', '2');
  await page.click('#simulate-form button');
  await page.waitForFunction(() => !document.getElementById('simulate-error').hidden, null, { timeout: 30000 });
  out.bad_csv = await page.evaluate(() => {
    const e = document.getElementById('simulate-error');
    return { shown: !e.hidden, text: e.textContent, field: e.dataset.field ?? null, chart_height: document.getElementById('simulate-chart').getBoundingClientRect().height };
  });
} finally {
  await browser.close();
}
out.timings_ms.total = Date.now() - started;
process.stdout.write(JSON.stringify(out, null, 1) + '\n');
