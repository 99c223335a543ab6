// End-to-end tests of the execution-ledger console (ui/), in headless
// Chromium, against a real `ledger serve` on a ledger filled by
// `ledger demo`. What the console shows is checked against what the
// `ledger` command prints for the same question.
//
//   node --test tests/browser/console.test.mjs          (from the repository)
//   node tests/browser/console.test.mjs --docs          (also writes docs/console-*.png)
//
// Environment: LEDGER_BIN (default <repo>/target/debug/ledger), CHROMIUM
// (default /usr/bin/chromium), CONSOLE_DOCS=1 (as --docs), CONSOLE_DEV_UI
// (see serveEnv).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const LEDGER = path.resolve(REPO, process.env.LEDGER_BIN || 'target/debug/ledger');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DOCS = process.argv.includes('--docs') || process.env.CONSOLE_DOCS === '1';
const SHOTS = path.join(REPO, 'target', 'browser-screenshots');
const VIEWPORT = { width: 1000, height: 650 };
const T = { timeout: 90_000 };

let dir;
let server;
let browser;
let context;
let page;
const requested = [];

// ------------------------------------------------------------ helpers

/** Runs `ledger --data-dir DIR ARGS…` (through the server while one
 * serves DIR) and returns its stdout. */
async function ledger(args, { key } = {}) {
  const full = ['--data-dir', dir, ...(key ? ['--api-key', key] : []), ...args];
  try {
    const env = { ...process.env };
    delete env.LEDGER_API_KEY;
    delete env.LEDGER_SERVER;
    const { stdout } = await run(LEDGER, full, { maxBuffer: 64 << 20, env });
    return stdout;
  } catch (e) {
    throw new Error(`ledger ${full.join(' ')} failed (${e.code}): ${e.stderr || e.message}`);
  }
}

const json = async (args, opts) => JSON.parse(await ledger([...args, '--json'], opts));
const jsonLines = async (args, opts) =>
  (await ledger([...args, '--json'], opts)).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

/** The environment of `ledger serve`: the console as the binary embeds
 * it; with CONSOLE_DEV_UI (1: this checkout's ui/, or a directory) the
 * server reads the files from there instead (development, no rebuild). */
function serveEnv() {
  const env = { ...process.env };
  const dev = process.env.CONSOLE_DEV_UI;
  if (!dev) delete env.LEDGER_UI_DIR;
  else env.LEDGER_UI_DIR = dev === '1' ? path.join(REPO, 'ui') : path.resolve(dev);
  return env;
}

/** Starts `ledger serve` on DIR (port 0) and resolves with its URL. */
function serve(extra = [], listen = '127.0.0.1:0') {
  return new Promise((resolve, reject) => {
    const child = spawn(LEDGER, ['--data-dir', dir, 'serve', '--listen', listen, ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: serveEnv(),
    });
    let err = '';
    const timer = setTimeout(() => reject(new Error(`ledger serve did not start in 30 s: ${err}`)), 30_000);
    child.stderr.on('data', (d) => {
      err += d;
      const m = /serving .* on (http:\/\/\S+)/.exec(err);
      if (m && !child.url) {
        child.url = m[1];
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => {
      child.exited = true;
      if (!child.url) {
        clearTimeout(timer);
        reject(new Error(`ledger serve exited (${code}): ${err}`));
      }
    });
  });
}

function stop(child) {
  if (!child || child.exited) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Polls `fn` until it returns a truthy value; fails with `what` (and the
 * last value seen) after `ms`. */
async function until(what, fn, ms = 20_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${describe(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function describe(v) {
  if (v instanceof Error) return v.message;
  try {
    return JSON.stringify(v);
  } catch (_) {
    return String(v);
  }
}

/** Waits until `fn()` deep-equals `expected`, then asserts it (so a
 * mismatch fails with a diff). */
async function eventually(what, fn, expected, ms = 20_000) {
  let got;
  try {
    await until(what, async () => {
      got = await fn();
      return JSON.stringify(got) === JSON.stringify(expected);
    }, ms);
  } catch (_) {
    // fall through to the assertion, which shows the difference
  }
  assert.deepStrictEqual(got, expected, what);
}

const sel = (name) => `[data-test="${name}"]`;

/** The values of `attr` on the elements matching `selector`, in order. */
const attrs = (p, selector, attr) => p.$$eval(selector, (els, a) => els.map((e) => e.getAttribute(a)), attr);
const rowIds = (p, name) => attrs(p, `${sel(name)}[data-id]`, 'data-id');

async function shot(p, name, docName) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await p.evaluate(() => window.scrollTo(0, 0));
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  if (DOCS && docName) {
    const out = path.join(REPO, 'docs', `${docName}.png`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await p.screenshot({ path: out });
    const size = fs.statSync(out).size;
    assert.ok(size < 150 * 1024, `${out} is ${size} bytes, over 150 KB`);
  }
}

/** A JSON document as paths to leaves, as the console names them. */
function flatten(value, prefix = '', out = new Map()) {
  if (value !== null && typeof value === 'object') {
    const entries = Array.isArray(value)
      ? value.map((v, i) => [`[${i}]`, v])
      : Object.entries(value).map(([k, v]) => [prefix ? `.${k}` : k, v]);
    if (!entries.length) out.set(prefix, JSON.stringify(value));
    for (const [k, v] of entries) flatten(v, prefix + k, out);
  } else {
    out.set(prefix, JSON.stringify(value));
  }
  return out;
}

/** An RFC 3339 UTC time in nanoseconds, and back. */
function nanos(iso) {
  const m = /^(.{19})(?:\.(\d+))?Z$/.exec(iso);
  return BigInt(Date.parse(`${m[1]}Z`)) * 1_000_000n + BigInt((m[2] || '').padEnd(9, '0'));
}

function rfc3339(ns) {
  const secs = ns / 1_000_000_000n;
  return `${new Date(Number(secs) * 1000).toISOString().slice(0, 19)}.${String(ns % 1_000_000_000n).padStart(9, '0')}Z`;
}

/** The time halfway between two. */
const between = (a, b) => rfc3339((nanos(a) + nanos(b)) / 2n);

/** How each attempt of a history ended, as the timeline colours it. */
function outcomes(history) {
  const out = [];
  for (const [i, e] of history.entries()) {
    if (e.type !== 'started') continue;
    const end = history.slice(i + 1).find((x) =>
      ['completed', 'failed', 'retry_scheduled', 'timed_out', 'recovered', 'cancelled'].includes(x.type) &&
      (x.attempt === undefined || x.attempt === e.attempt));
    let outcome = 'running';
    if (end) {
      outcome = {
        completed: 'completed',
        failed: 'failed',
        retry_scheduled: end.error && end.error.code === 'timeout' ? 'timeout' : 'failed',
        timed_out: 'timeout',
        recovered: 'recovered',
        cancelled: 'cancelled',
      }[end.type];
    }
    out.push({ attempt: String(e.attempt), outcome });
  }
  return out;
}

async function api(pathAndQuery, opts = {}) {
  const res = await fetch(server.url + pathAndQuery, opts);
  const body = await res.text();
  if (!res.ok) throw new Error(`${opts.method || 'GET'} ${pathAndQuery}: ${res.status} ${body}`);
  return JSON.parse(body);
}

/** What went wrong inside the pages: script errors, refused content
 * (CSP), failed loads. The last test asserts there was nothing. */
const problems = [];
/** While the server restarts, refused connections and 503s are expected. */
let restarting = false;

function watch(p) {
  p.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  p.on('console', (m) => {
    // 401 (a key is asked for) and 403 (a tenant's key, on what is admin only) are answers the console expects.
    if (m.type() !== 'error' || /status of 40[13]\b/.test(m.text())) return;
    if (restarting && /ERR_CONNECTION_REFUSED|status of 503\b/.test(m.text())) return;
    problems.push(`console error on ${p.url()}: ${m.text()}`);
  });
}

// -------------------------------------------------------------- setup

before(async () => {
  assert.ok(fs.existsSync(LEDGER), `no ledger binary at ${LEDGER} (build it with cargo build --bin ledger, or set LEDGER_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (install the distribution's chromium, or set CHROMIUM)`);
  dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ledger-console-')), 'ledger');
  await run(LEDGER, ['demo', '--dir', dir], { maxBuffer: 16 << 20 });
  server = await serve();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: VIEWPORT, timezoneId: 'UTC', locale: 'en-GB' });
  page = await context.newPage();
  page.on('request', (r) => requested.push(r.url()));
  watch(page);
}, { timeout: 120_000 });

after(async () => {
  if (browser) await browser.close();
  await stop(server);
  if (dir) fs.rmSync(path.dirname(dir), { recursive: true, force: true });
});

// -------------------------------------------------------------- tests

test('the list shows the newest executions, as `ledger list` does, and filters like it', T, async () => {
  const all = await jsonLines(['list']);
  assert.ok(all.length >= 8, `the demo made ${all.length} executions`);
  await page.goto(`${server.url}/`);
  assert.match(page.url(), /\/ui\/$/, 'the root redirects to the console');
  await eventually('the first page: ids in order', () => rowIds(page, 'execution-row'), all.map((e) => e.executionId));
  assert.deepStrictEqual(
    await attrs(page, `${sel('execution-row')} ${sel('status-badge')}`, 'data-status'),
    all.map((e) => e.status),
    'each row shows its status',
  );
  assert.deepStrictEqual(
    await page.$$eval(`${sel('execution-row')} ${sel('cell-tenant')}`, (els) => els.map((e) => e.textContent)),
    all.map((e) => e.tenantId),
    'each row shows its tenant',
  );
  await shot(page, 'list', 'console-list');

  // status, through the form
  const failed = await jsonLines(['list', '--status', 'failed']);
  assert.ok(failed.length >= 1, 'the demo has a failed execution');
  await page.check(sel('filter-status-failed'));
  await page.click(sel('filter-apply'));
  await until('status=failed in the URL', () => new URL(page.url()).searchParams.get('status') === 'failed');
  await eventually('rows with status failed', () => rowIds(page, 'execution-row'), failed.map((e) => e.executionId));

  // callable, through the form
  const sleeps = await jsonLines(['list', '--callable', 'sleep']);
  assert.ok(sleeps.length >= 2, 'the demo has several sleep executions');
  await page.click(sel('filter-clear'));
  await until('the filters cleared', () => new URL(page.url()).search === '');
  await page.fill(sel('filter-callable'), 'sleep');
  await page.click(sel('filter-apply'));
  await until('callableName=sleep in the URL', () => new URL(page.url()).searchParams.get('callableName') === 'sleep');
  await eventually('rows of callable sleep', () => rowIds(page, 'execution-row'), sleeps.map((e) => e.executionId));

  // both, from the URL
  const both = await jsonLines(['list', '--status', 'completed', '--callable', 'echo']);
  await page.goto(`${server.url}/ui/?status=completed&callableName=echo`);
  await eventually('rows completed and echo', () => rowIds(page, 'execution-row'), both.map((e) => e.executionId));
  assert.equal(await page.isChecked(sel('filter-status-completed')), true, 'the form shows the URL\'s filters');

  // a time window and an id, from the URL (the window's ends between
  // submissions, to the nanosecond)
  const [since, upTo] = [between(all[6].queuedAt, all[5].queuedAt), between(all[2].queuedAt, all[1].queuedAt)];
  const inWindow = await jsonLines(['list', '--since', since, '--until', upTo]);
  assert.ok(inWindow.length >= 3, `a window of several (${inWindow.length})`);
  await page.goto(`${server.url}/ui/?${new URLSearchParams({ since, until: upTo })}`);
  await eventually('rows since … until …', () => rowIds(page, 'execution-row'), inWindow.map((e) => e.executionId));
  assert.deepStrictEqual(await attrs(page, `${sel('execution-row')}[data-stale]`, 'data-id'), [], 'every row shown matches the filters');
  await page.goto(`${server.url}/ui/?id=${all[2].executionId}`);
  await eventually('the row of one id', () => rowIds(page, 'execution-row'),
    (await jsonLines(['list', '--id', all[2].executionId])).map((e) => e.executionId));
  // the same window through the form's datetime-local fields (whole seconds, UTC here)
  const s0 = new Date(Math.floor(Date.parse(all[all.length - 1].queuedAt) / 1000) * 1000);
  const u0 = new Date(s0.getTime() + 3_600_000);
  await page.goto(`${server.url}/ui/`);
  await page.fill(sel('filter-since'), s0.toISOString().slice(0, 19));
  await page.fill(sel('filter-until'), u0.toISOString().slice(0, 19));
  await page.click(sel('filter-apply'));
  await until('since in the URL', () => new URL(page.url()).searchParams.get('since') === s0.toISOString());
  await eventually('rows in the window from the form', () => rowIds(page, 'execution-row'),
    (await jsonLines(['list', '--since', s0.toISOString(), '--until', u0.toISOString()])).map((e) => e.executionId));

  // pages: ?limit=3 shows `ledger list --limit 3`; "Load more" follows the cursor to the end
  const page1 = await jsonLines(['list', '--limit', '3']);
  await page.goto(`${server.url}/ui/?limit=3`);
  await eventually('the first page of 3', () => rowIds(page, 'execution-row'), page1.map((e) => e.executionId));
  let clicks = 0;
  while (await page.isVisible(sel('load-more'))) {
    const shown = (await rowIds(page, 'execution-row')).length;
    await page.click(sel('load-more'));
    await until('more rows', async () => (await rowIds(page, 'execution-row')).length > shown);
    const ids = await rowIds(page, 'execution-row');
    assert.deepStrictEqual(ids, all.slice(0, ids.length).map((e) => e.executionId), 'the rows so far are the newest, in order');
    assert.ok(++clicks < 20, 'the pages end');
  }
  assert.ok(clicks >= 2, `several pages (${clicks} loaded after the first)`);
  assert.deepStrictEqual(await rowIds(page, 'execution-row'), all.map((e) => e.executionId), 'every execution, once');

  // a row opens its execution
  await page.click(`${sel('execution-row')}[data-id="${both[0].executionId}"] ${sel('cell-tenant')}`);
  await until('the execution view', () => new URL(page.url()).pathname === `/ui/executions/${both[0].executionId}`);
});

test('one execution: its timeline and events match `ledger history`; an event shows the record as it was', T, async () => {
  const all = await jsonLines(['list']);
  for (const e of all) {
    const history = await jsonLines(['history', e.executionId]);
    await page.goto(`${server.url}/ui/executions/${e.executionId}`);
    await eventually(`the events of ${e.executionId} (seq, kind)`,
      async () => (await page.$$eval(sel('event-row'), (rows) => rows.map((r) => [Number(r.dataset.seq), r.dataset.kind]))),
      history.map((h) => [h.seq, h.type]));
    assert.deepStrictEqual(
      await page.$$eval(sel('attempt-bar'), (bars) => bars.map((b) => ({ attempt: b.dataset.attempt, outcome: b.dataset.outcome }))),
      outcomes(history),
      `the attempt bars of ${e.executionId} (${e.callableName}, ${e.status})`,
    );
    const gaps = await attrs(page, sel('tl-gap'), 'data-kind');
    if (history.some((h) => h.type === 'retry_scheduled')) assert.ok(gaps.includes('backoff'), `a back-off gap for ${e.executionId}: ${gaps}`);
    if (e.config.mode === 'deferred') {
      assert.ok(gaps.includes('deferred'), `a deferred wait for ${e.executionId}: ${gaps}`);
      if (history.some((h) => h.type === 'released')) assert.ok((await attrs(page, sel('tl-mark'), 'data-kind')).includes('released'), 'a released mark');
    }
  }

  // the execution that was retried: several attempts
  const flaky = all.find((e) => (e.attempt || 0) >= 2);
  assert.ok(flaky, 'the demo has an execution with several attempts');
  const history = await jsonLines(['history', flaky.executionId]);
  await page.goto(`${server.url}/ui/executions/${flaky.executionId}`);
  await until('its attempt bars', async () => (await page.$$(sel('attempt-bar'))).length >= 2);

  for (const [i, ev] of history.entries()) {
    await page.click(`${sel('event-row')}[data-seq="${ev.seq}"]`);
    await until(`?seq=${ev.seq} in the URL`, () => new URL(page.url()).searchParams.get('seq') === String(ev.seq));
    await until(`the record at seq ${ev.seq}`, async () => (await page.textContent(sel('record-seq'))) === String(ev.seq));
    const now = flatten(await json(['show', flaky.executionId, '--at-seq', String(ev.seq)]));
    const before = i > 0 ? flatten(await json(['show', flaky.executionId, '--at-seq', String(history[i - 1].seq)])) : new Map();
    const fields = await page.$$eval(sel('record-field'), (rows) => rows.map((r) => ({
      path: r.dataset.path,
      change: r.dataset.change,
      value: r.querySelector('[data-test="field-value"]').firstChild.textContent,
    })));
    assert.deepStrictEqual(
      Object.fromEntries(fields.filter((f) => f.change !== 'removed').map((f) => [f.path, f.value])),
      Object.fromEntries(now),
      `the record shown at seq ${ev.seq} (${ev.type}) is \`ledger show --at-seq ${ev.seq}\``,
    );
    const expectChange = {};
    for (const [p, v] of now) if (!before.has(p)) expectChange[p] = 'added'; else if (before.get(p) !== v) expectChange[p] = 'changed';
    for (const p of before.keys()) if (!now.has(p)) expectChange[p] = 'removed';
    assert.deepStrictEqual(
      Object.fromEntries(fields.filter((f) => f.change).map((f) => [f.path, f.change])),
      expectChange,
      `the fields highlighted at seq ${ev.seq} (${ev.type}) are what it changed`,
    );
    assert.ok(Object.keys(expectChange).length > 0, `seq ${ev.seq} changed something`);
  }
  // the keyboard steps through the events
  await page.click(`${sel('event-row')}[data-seq="${history[0].seq}"]`);
  await page.keyboard.press('ArrowDown');
  await until('ArrowDown selects the next event', () => new URL(page.url()).searchParams.get('seq') === String(history[1].seq));
  await page.keyboard.press('ArrowDown');
  await until('and the next', () => new URL(page.url()).searchParams.get('seq') === String(history[2].seq));
  await page.keyboard.press('ArrowUp');
  await until('ArrowUp the one before', () => new URL(page.url()).searchParams.get('seq') === String(history[1].seq));
  await until('its record', async () => (await page.textContent(sel('record-seq'))) === String(history[1].seq));

  const retry = history.find((h) => h.type === 'retry_scheduled');
  await page.click(`${sel('event-row')}[data-seq="${retry.seq}"]`);
  await until('the retry selected', async () => (await page.textContent(sel('record-seq'))) === String(retry.seq));
  await shot(page, 'execution', 'console-execution');

  // the timeline picks events too: an attempt bar selects the event that ended it
  const last = history[history.length - 1];
  await page.click(`${sel('attempt-bar')}[data-attempt="${last.attempt}"] rect`);
  await until('the bar selected its end', () => new URL(page.url()).searchParams.get('seq') === String(last.seq));
  await until('the record at the bar\'s end', async () => (await page.textContent(sel('record-seq'))) === String(last.seq));

  // and ?seq=N in the URL selects it on load
  await page.goto(`${server.url}/ui/executions/${flaky.executionId}?seq=${history[1].seq}`);
  await until('the record at ?seq', async () => (await page.textContent(sel('record-seq'))) === String(history[1].seq));
  assert.equal(await page.getAttribute(`${sel('event-row')}[data-seq="${history[1].seq}"]`, 'aria-selected'), 'true');
});

test('the ledger at a seq: the queue equals `ledger queue --at-seq`; compare equals `ledger diff`', T, async () => {
  const head = (await json(['head'])).seq;
  const queues = {};
  for (let n = 1; n <= Math.min(head, 60); n++) queues[n] = (await json(['queue', '--at-seq', String(n)])).map((e) => e.executionId);
  const busiest = Number(Object.keys(queues).reduce((a, b) => (queues[b].length > queues[a].length ? b : a)));
  assert.ok(queues[busiest].length >= 3, `a seq with a queue of several: ${busiest}`);

  // by URL
  await page.goto(`${server.url}/ui/at/${busiest}`);
  await eventually(`the queue at seq ${busiest}`, () => rowIds(page, 'queue-row'), queues[busiest]);
  const live = await api(`/v1/live?atSeq=${busiest}`);
  assert.deepStrictEqual(await rowIds(page, 'live-row'), live.map((e) => e.executionId), 'the live set at that seq');
  for (const id of queues[busiest]) assert.ok(live.some((e) => e.executionId === id), `queued ${id} is live`);
  assert.equal(await page.getAttribute(sel('seq-slider'), 'max'), String(head), 'the slider goes to the head');
  await page.goto(`${server.url}/ui/at/${head + 1000}`);
  await until(`a seq past the head shows the head (/ui/at/${head})`, () => new URL(page.url()).pathname === `/ui/at/${head}`);
  await page.goto(`${server.url}/ui/at`);
  await until(`no seq: the head (/ui/at/${head})`, () => new URL(page.url()).pathname === `/ui/at/${head}`);
  await page.goto(`${server.url}/ui/at/${busiest}`);
  await eventually(`the queue at seq ${busiest} again`, () => rowIds(page, 'queue-row'), queues[busiest]);

  // by the slider (keyboard), three seqs back
  const target = Math.max(1, busiest - 3);
  await page.focus(sel('seq-slider'));
  for (let i = 0; i < busiest - target; i++) await page.keyboard.press('ArrowLeft');
  await until(`the URL at /ui/at/${target}`, () => new URL(page.url()).pathname === `/ui/at/${target}`);
  await eventually(`the queue at seq ${target}`, () => rowIds(page, 'queue-row'), queues[target]);

  // compare with a later and an earlier point
  const later = Math.min(head, busiest + 8);
  for (const [n, m] of [[busiest, later], [busiest, target]]) {
    await page.goto(`${server.url}/ui/at/${n}`);
    await eventually(`the queue at seq ${n}`, () => rowIds(page, 'queue-row'), queues[n]);
    await page.fill(sel('compare-input'), String(m));
    await page.click(sel('compare-go'));
    await until(`compare=${m} in the URL`, () => new URL(page.url()).searchParams.get('compare') === String(m));
    const [from, to] = [Math.min(n, m), Math.max(n, m)];
    const changes = await json(['diff', '--from-seq', String(from), '--to-seq', String(to)]);
    const fresh = changes.filter((c) => c.before === undefined).map((c) => c.executionId).sort();
    const expected = {
      added: m < n ? fresh : [],
      changed: changes.filter((c) => c.before !== undefined).map((c) => c.executionId).sort(),
      removed: m < n ? [] : fresh,
    };
    assert.ok(changes.length > 0, `something changed between ${from} and ${to}`);
    const shown = async () => {
      const rows = await page.$$eval(sel('diff-row'), (els) => els.map((e) => [e.dataset.change, e.dataset.id]));
      const out = { added: [], changed: [], removed: [] };
      for (const [k, id] of rows) out[k].push(id);
      for (const k of Object.keys(out)) out[k].sort();
      return out;
    };
    await eventually(`the diff from seq ${m} to seq ${n}`, shown, expected);
  }
  await shot(page, 'at', 'console-at');

  // play steps forward through the seqs, updating the URL
  const start = Math.max(1, head - 6);
  await page.goto(`${server.url}/ui/at/${start}`);
  await eventually(`the queue at seq ${start}`, () => rowIds(page, 'queue-row'), queues[start] || (await json(['queue', '--at-seq', String(start)])).map((e) => e.executionId));
  await page.click(sel('play'));
  await until('play moved two seqs on', () => Number(new URL(page.url()).pathname.split('/').pop()) >= start + 2, 15_000);
  await page.click(sel('play'));
  assert.equal(await page.getAttribute(sel('play'), 'data-state'), 'paused');
  const at = Number(new URL(page.url()).pathname.split('/').pop());
  await eventually(`the queue at seq ${at}, where play stopped`, () => rowIds(page, 'queue-row'),
    (await json(['queue', '--at-seq', String(at)])).map((e) => e.executionId));

  // a time (to the millisecond) resolves to the last seq at or before it,
  // and the queue then is `ledger queue --at-time`
  const events = await jsonLines(['events']);
  for (const k of [Math.floor(events.length / 3), Math.floor(events.length / 2)]) {
    const when = new Date(Math.floor(Date.parse(events[k].at)) + 1);
    const expect = events.filter((e) => nanos(e.at) <= nanos(when.toISOString())).pop().seq;
    await page.fill(sel('time-input'), when.toISOString().slice(0, 23));
    await page.click(sel('time-go'));
    await until(`the time ${when.toISOString()} at seq ${expect}`, () => new URL(page.url()).pathname === `/ui/at/${expect}`);
    const queue = (await json(['queue', '--at-time', when.toISOString()])).map((e) => e.executionId);
    assert.deepStrictEqual(queue, queues[expect] || queue, `ledger queue at ${when.toISOString()} is its queue at seq ${expect}`);
    await eventually(`the queue at ${when.toISOString()}`, () => rowIds(page, 'queue-row'), queue);
  }
});

test('integrity: the head shown is `ledger head`; verify says intact', T, async () => {
  await page.goto(`${server.url}/ui/`);
  const head = await json(['head']);
  await until('the head seq shown', async () => (await page.textContent(sel('head-seq'))) === String(head.seq));
  assert.ok(head.hash.startsWith((await page.textContent(sel('head-hash'))).replace('…', '')), 'the head hash shown');
  assert.equal(await page.getAttribute(sel('head-hash'), 'title'), head.hash);
  const verdict = await json(['verify']);
  assert.equal(verdict.ok, true, 'the ledger verifies');
  await page.click(sel('verify'));
  await until('the verdict', async () => (await page.getAttribute(sel('verdict'), 'data-state')) === 'intact');
  assert.match(await page.textContent(sel('verdict')), new RegExp(`${verdict.report.events} events .* seq ${verdict.report.head.seq}\\b`));
  // the sparklines have drawn something after a couple of polls
  await until('a throughput line', async () => (await page.$$(`${sel('spark-throughput')} polyline`)).length === 1, 15_000);
  await until('a queue depth line', async () => (await page.$$(`${sel('spark-depth')} polyline`)).length === 1, 15_000);
});

test('live: an execution submitted while the list is open appears, and its status follows, without a reload', T, async () => {
  await page.goto(`${server.url}/ui/`);
  const before = await jsonLines(['list']);
  await eventually('the list', () => rowIds(page, 'execution-row'), before.map((e) => e.executionId));
  await until('the stream open', async () => (await page.getAttribute(sel('live-status'), 'data-state')) === 'open');
  await page.evaluate(() => (window.__noReload = true));
  const created = await api('/v1/executions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ tenantId: 'acme', callableName: 'echo', input: 'submitted while the list is open' }),
  });
  const id = created.executionId;
  await until('the new execution at the top', async () => (await rowIds(page, 'execution-row'))[0] === id);
  await until('its status completed', async () =>
    (await page.getAttribute(`${sel('execution-row')}[data-id="${id}"] ${sel('status-badge')}`, 'data-status')) === 'completed');
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  const after = await jsonLines(['list']);
  assert.deepStrictEqual(await rowIds(page, 'execution-row'), after.map((e) => e.executionId), 'the list is `ledger list` again');

  // filtered: one that comes to match (completed echo) appears; one that does not (another callable) does not
  await page.goto(`${server.url}/ui/?status=completed&callableName=echo`);
  const shown = (await jsonLines(['list', '--status', 'completed', '--callable', 'echo'])).map((e) => e.executionId);
  await eventually('completed echo executions', () => rowIds(page, 'execution-row'), shown);
  await until('the stream open', async () => (await page.getAttribute(sel('live-status'), 'data-state')) === 'open');
  const submit = (callableName) => api('/v1/executions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ tenantId: 'globex', callableName, input: 'filtered live' }),
  });
  const other = await submit('sleep');
  const echo = await submit('echo');
  await until('the echo, once completed, at the top', async () => (await rowIds(page, 'execution-row'))[0] === echo.executionId);
  assert.equal(await page.getAttribute(`${sel('execution-row')}[data-id="${echo.executionId}"] ${sel('status-badge')}`, 'data-status'), 'completed');
  assert.ok(!(await rowIds(page, 'execution-row')).includes(other.executionId), 'a sleep is not shown');
  await eventually('the list is `ledger list --status completed --callable echo` again', () => rowIds(page, 'execution-row'),
    (await jsonLines(['list', '--status', 'completed', '--callable', 'echo'])).map((e) => e.executionId));
});

test('live: when the server comes back, the stream resumes after the last event seen (Last-Event-ID)', T, async () => {
  await page.goto(`${server.url}/ui/`);
  await until('the stream open', async () => (await page.getAttribute(sel('live-status'), 'data-state')) === 'open');
  await page.evaluate(() => (window.__noReload = true));
  const streams = [];
  const onRequest = (r) => {
    if (new URL(r.url()).pathname === '/v1/events') streams.push(r.allHeaders());
  };
  page.on('request', onRequest);
  const head = (await json(['head'])).seq;
  const { port } = new URL(server.url);
  restarting = true;
  await stop(server);
  await until('the console sees the stream gone', async () => (await page.getAttribute(sel('live-status'), 'data-state')) !== 'open');
  server = await serve([], `127.0.0.1:${port}`);
  await until('the stream open again', async () => (await page.getAttribute(sel('live-status'), 'data-state')) === 'open', 30_000);
  await new Promise((r) => setTimeout(r, 3500)); // a poll of the integrity strip, which may have been refused, is over
  restarting = false;
  const created = await api('/v1/executions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ tenantId: 'globex', callableName: 'echo', input: 'after the restart' }),
  });
  await until('the new execution at the top', async () => (await rowIds(page, 'execution-row'))[0] === created.executionId);
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  page.off('request', onRequest);
  const resumed = (await Promise.all(streams)).map((h) => h['last-event-id']);
  assert.ok(resumed.length >= 1, 'the console reconnected');
  assert.ok(resumed.every((id) => id === String(head)), `each reconnect resumed after seq ${head}: ${resumed}`);
});

test('the timeline: a lost attempt is recovered; a deferred wait, its release, binding and callback are marks', T, async () => {
  const post = (p, body) => api(p, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  // An attempt whose worker stops heartbeating: recovered (lease expired), then completed.
  const lost = await post('/v1/executions', {
    tenantId: 'acme',
    callableName: 'outside-worker',
    config: { retry: { maxAttempts: 2, initialDelayMs: 10 } },
  });
  const claim = () => post('/v1/workers/claim', { worker: 'browser-test', callables: ['outside-worker'], leaseMs: 100, waitMs: 5000 });
  assert.equal((await claim()).attempts[0].executionId, lost.executionId);
  await until('the lease expired', async () => (await jsonLines(['history', lost.executionId])).some((e) => e.type === 'recovered'));
  const second = await claim();
  assert.equal(second.attempts[0].attempt, 2);
  await post(`/v1/executions/${lost.executionId}/attempts/2/complete`, { output: { ok: true } });

  // A deferred execution with a target binding and a callback, released.
  const calls = [];
  const hook = http.createServer((req, res) => {
    calls.push(req.url);
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  await new Promise((r) => hook.listen(0, '127.0.0.1', r));
  try {
    const deferred = await post('/v1/executions', {
      tenantId: 'globex',
      callableName: 'echo',
      input: 'held until released',
      config: {
        mode: 'deferred',
        callbackUrl: `http://127.0.0.1:${hook.address().port}/done`,
        targetBinding: { target: 'var:summary' },
      },
    });
    await new Promise((r) => setTimeout(r, 300));
    await post(`/v1/executions/${deferred.executionId}/release`, {});
    await until('the callback delivered', async () =>
      (await jsonLines(['history', deferred.executionId])).some((e) => e.type === 'callback_delivered'), 30_000);
    assert.ok(calls.length >= 1, 'the callback reached its URL');

    for (const id of [lost.executionId, deferred.executionId]) {
      const history = await jsonLines(['history', id]);
      await page.goto(`${server.url}/ui/executions/${id}`);
      await eventually(`the events of ${id}`, () => attrs(page, sel('event-row'), 'data-seq'), history.map((h) => String(h.seq)));
      assert.deepStrictEqual(
        await page.$$eval(sel('attempt-bar'), (bars) => bars.map((b) => ({ attempt: b.dataset.attempt, outcome: b.dataset.outcome }))),
        outcomes(history),
        `the attempt bars of ${id}`,
      );
    }
    await page.goto(`${server.url}/ui/executions/${lost.executionId}`);
    await until('the recovered bar', async () => (await page.$(`${sel('attempt-bar')}[data-outcome="recovered"]`)) !== null);
    assert.match(await page.textContent(`${sel('attempt-bar')}[data-outcome="recovered"] title`), /lease expired/, 'the recovered bar names its reason');

    await page.goto(`${server.url}/ui/executions/${deferred.executionId}`);
    await until('the marks', async () => (await page.$$(sel('tl-mark'))).length >= 4);
    const marks = await attrs(page, sel('tl-mark'), 'data-kind');
    for (const kind of ['queued', 'released', 'binding', 'callback']) assert.ok(marks.includes(kind), `a ${kind} mark: ${marks}`);
    const held = await page.$(`${sel('tl-gap')}[data-kind="deferred"]`);
    assert.ok(held, 'the deferred wait is a gap');
    assert.match(await held.textContent(), /held/, 'the deferred wait is labelled');
    // a mark selects its event
    const callback = history1(await jsonLines(['history', deferred.executionId]), 'callback_delivered');
    await page.click(`${sel('tl-mark')}[data-kind="callback"] path`);
    await until('the callback event selected', () => new URL(page.url()).searchParams.get('seq') === String(callback.seq));
  } finally {
    hook.close();
  }
});

const history1 = (history, type) => history.find((e) => e.type === type);

test("a schedule's firing: its queued event names the schedule and the slot", T, async () => {
  const post = (p, body) => api(p, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  await post('/v1/schedules', {
    tenantId: 'globex', name: 'browser-tick', cron: '* * * * * *', submission: { callableName: 'echo', input: 'tick' },
  });
  let fired;
  try {
    await until('the schedule fired', async () => {
      const listed = await api('/v1/schedules?tenantId=globex');
      fired = listed.schedules[0] && listed.schedules[0].lastFired;
      return Boolean(fired);
    });
  } finally {
    await api('/v1/schedules/browser-tick?tenantId=globex', { method: 'DELETE' });
  }
  await page.goto(`${server.url}/ui/executions/${fired.executionId}`);
  const queued = `${sel('event-row')}[data-kind="queued"] .detail`;
  await until('the queued event', async () => (await page.$(queued)) !== null);
  const text = await page.textContent(queued);
  assert.ok(text.includes(' · schedule browser-tick slot '), `the schedule named: ${text}`);
  const first = (await jsonLines(['history', fired.executionId]))[0];
  assert.deepStrictEqual(first.schedule, { name: 'browser-tick', slot: fired.slot }, 'the event the page shows');
});

test('a pause: the ledger at a seq lists it, marks the work it holds, and the seq before has none', T, async () => {
  const post = (p, body) => api(p, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const scope = { tenantId: 'globex', callableName: 'echo' };
  const pause = await post('/v1/pauses', { ...scope, reason: 'checked in the console', by: 'browser' });
  const held = [];
  try {
    for (const input of ['held one', 'held two']) {
      held.push((await post('/v1/executions', { ...scope, input })).executionId);
    }
    const head = (await json(['head'])).seq;
    const queue = (await json(['queue', '--at-seq', String(head)])).map((e) => e.executionId);
    await page.goto(`${server.url}/ui/at/${head}`);
    await eventually(`the queue at seq ${head}`, () => rowIds(page, 'queue-row'), queue);
    const marked = await page.$$eval(`${sel('queue-row')}[data-held="paused"]`, (rows) => rows.map((r) => r.dataset.id));
    assert.deepStrictEqual(marked, held, 'the held work is marked, in submission order');
    assert.deepStrictEqual(queue.slice(-2), held, 'and listed after what claims take');
    const listed = await page.textContent(sel('pause-row'));
    assert.ok(
      listed.includes(`tenant globex's callable echo since seq ${pause.sinceSeq} by browser (via api:admin): checked in the console`),
      `the pause listed: ${listed}`,
    );
    // At its own seq the event line says what began; before it, nothing is paused.
    await page.goto(`${server.url}/ui/at/${pause.sinceSeq}`);
    await until('the pause at its seq', async () => /paused tenant globex's callable echo by browser/.test(await page.textContent(sel('seq-event'))));
    await page.goto(`${server.url}/ui/at/${pause.sinceSeq - 1}`);
    await until(`seq ${pause.sinceSeq - 1} shown`, async () => (await page.textContent(sel('at-seq'))) === String(pause.sinceSeq - 1));
    await until('no pause before it', async () => (await page.$$(sel('pause-row'))).length === 0);
  } finally {
    await post('/v1/pauses/resume', scope);
  }
  for (const id of held) await until(`${id} runs once resumed`, async () => (await api(`/v1/executions/${id}`)).status === 'completed');
});

test('what the server says is shown as text, never read as HTML', T, async () => {
  const html = '<img src="x" onerror="window.__injected = 1">';
  const created = await api('/v1/executions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ tenantId: 'globex', callableName: html, input: `<script>window.__injected = 2</script>`, metadata: { note: html } }),
  });
  await page.goto(`${server.url}/ui/`);
  const cell = `${sel('execution-row')}[data-id="${created.executionId}"] ${sel('cell-callable')}`;
  await until('the row', async () => (await page.$(cell)) !== null);
  assert.equal(await page.textContent(cell), html, 'the callable name, as text');
  await page.goto(`${server.url}/ui/executions/${created.executionId}`);
  await until('the record', async () => (await page.$$(sel('record-field'))).length > 0);
  const values = await page.$$eval(sel('field-value'), (els) => els.map((e) => e.textContent));
  assert.ok(values.includes(JSON.stringify(html)), `the metadata, as text: ${values}`);
  assert.equal(await page.$$eval('main img, main script', (els) => els.length), 0, 'no element made from server text');
  assert.equal(await page.evaluate(() => window.__injected), undefined, 'nothing ran');
});

test('keys: the console asks for a key; a tenant key lists only its tenant; the key is never in a URL', T, async () => {
  await page.goto('about:blank');
  await stop(server);
  const admin = randomBytes(16).toString('hex');
  const tenant = randomBytes(16).toString('hex');
  const sha = (k) => createHash('sha256').update(k).digest('hex');
  const keys = path.join(path.dirname(dir), 'keys.json');
  fs.writeFileSync(keys, JSON.stringify({ keys: [{ admin: true, sha256: sha(admin) }, { tenant: 'acme', sha256: sha(tenant) }] }));
  server = await serve(['--keys', keys]);

  const ctx = await browser.newContext({ viewport: VIEWPORT, timezoneId: 'UTC' });
  const p = await ctx.newPage();
  watch(p);
  const requests = [];
  p.on('request', (r) => {
    const at = Date.now();
    requests.push(r.allHeaders().then((h) => ({ url: r.url(), auth: h.authorization, at })));
  });
  await p.goto(`${server.url}/ui/`);
  await until('the key dialog', () => p.isVisible(sel('key-dialog')));
  await shot(p, 'key-dialog');

  // a wrong key is refused and asked again
  await p.fill(sel('key-input'), 'not-a-key');
  await p.click(sel('key-submit'));
  await until('asked again', async () => (await p.isVisible(sel('key-dialog'))) && /not known/.test(await p.textContent(sel('key-message'))));

  const entered = Date.now();
  await p.fill(sel('key-input'), tenant);
  await p.click(sel('key-submit'));
  const mine = await jsonLines(['list'], { key: tenant });
  assert.ok(mine.length > 0 && mine.every((e) => e.tenantId === 'acme'), 'the tenant key lists acme\'s executions');
  const everyone = await jsonLines(['list'], { key: admin });
  assert.ok(everyone.some((e) => e.tenantId !== 'acme'), 'other tenants exist');
  await eventually('only acme\'s executions', () => rowIds(p, 'execution-row'), mine.map((e) => e.executionId));
  assert.deepStrictEqual([...new Set(await p.$$eval(sel('cell-tenant'), (els) => els.map((e) => e.textContent)))], ['acme']);

  // admin-only parts say so
  await until('head: admin only', async () => (await p.$(`${sel('head-seq')} ${sel('admin-only')}`)) !== null);
  assert.equal(await p.isDisabled(sel('verify')), true, 'verify is for admin keys');
  await shot(p, 'tenant-list');

  // the queue at a seq, as the tenant sees it
  const busy = 8;
  await p.goto(`${server.url}/ui/at/${busy}`);
  await eventually(`acme's queue at seq ${busy}`, () => rowIds(p, 'queue-row'),
    (await json(['queue', '--at-seq', String(busy)], { key: tenant })).map((e) => e.executionId));
  // and one execution
  await p.goto(`${server.url}/ui/executions/${mine[0].executionId}`);
  const history = await jsonLines(['history', mine[0].executionId], { key: tenant });
  await eventually('its events', () => attrs(p, sel('event-row'), 'data-seq'), history.map((h) => String(h.seq)));

  assert.equal(await p.evaluate(() => sessionStorage.length), 1, 'the key is in session storage');
  const seen = await Promise.all(requests);
  for (const r of seen) {
    assert.ok(!r.url.includes(tenant) && !r.url.includes('not-a-key'), `a key in the URL ${r.url}`);
  }
  const apiRequests = seen.filter((r) => r.at > entered + 50 && /\/(v1|metrics)/.test(new URL(r.url).pathname));
  assert.ok(apiRequests.length > 5, 'the console made API requests');
  for (const r of apiRequests) assert.equal(r.auth, `Bearer ${tenant}`, `the key is sent as a bearer token to ${r.url}`);
  await ctx.close();

  // an admin key: the head and verify
  const ctx2 = await browser.newContext({ viewport: VIEWPORT, timezoneId: 'UTC' });
  const q = await ctx2.newPage();
  watch(q);
  await q.goto(`${server.url}/ui/`);
  await until('the key dialog', () => q.isVisible(sel('key-dialog')));
  await q.fill(sel('key-input'), admin);
  await q.click(sel('key-submit'));
  const head = await json(['head'], { key: admin });
  await until('the head seq shown', async () => (await q.textContent(sel('head-seq'))) === String(head.seq));
  await q.click(sel('verify'));
  await until('intact', async () => (await q.getAttribute(sel('verdict'), 'data-state')) === 'intact');
  await eventually('every execution', () => rowIds(q, 'execution-row'), everyone.map((e) => e.executionId));
  await ctx2.close();
});

test('the pages raised no script error, refused no content and loaded every resource', () => {
  assert.deepStrictEqual(problems, []);
});

// When run as `node console.test.mjs`, node:test runs these in this process.
