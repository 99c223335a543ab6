// The execution-ledger console: the executions list, one execution's
// timeline, the whole ledger at a moment, and integrity. It uses only the
// public HTTP API of `ledger serve`; the URL holds the view's state.
// Every text that comes from the server is set as a text node or an
// attribute, never parsed as HTML.
'use strict';

(() => {
  const KEY_STORE = 'executionLedger.apiKey';
  const SVG = 'http://www.w3.org/2000/svg';
  const PAGE = 50;
  const STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled', 'timeout'];
  const FILTERS = ['status', 'tenantId', 'callableName', 'since', 'until', 'id'];
  /** The status an execution has right after an event of each kind that
   * sets one (`recovered` sets its `outcome`). */
  const STATUS_AFTER = {
    queued: 'queued',
    released: 'queued',
    started: 'running',
    retry_scheduled: 'queued',
    completed: 'completed',
    failed: 'failed',
    timed_out: 'timeout',
    cancelled: 'cancelled',
  };

  // ---------------------------------------------------------------- DOM

  /** An element: `attrs` are attributes (`on*` functions become listeners,
   * `class` the class name); children are nodes or strings (text nodes). */
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const test = (name, root = document) => $(`[data-test="${name}"]`, root);

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function link(href, attrs, ...children) {
    return el('a', { href, 'data-nav': true, ...attrs }, ...children);
  }

  // ------------------------------------------------------------- format

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace('T', ' ').replace('Z', '');
  }

  /** The time of day (UTC) of an RFC 3339 time, to the millisecond. */
  function fmtClock(iso) {
    return fmtTime(iso).slice(11, 23);
  }

  function fmtDur(ms) {
    if (!Number.isFinite(ms)) return '';
    const a = Math.abs(ms);
    if (a < 1000) return `${Math.round(ms)} ms`;
    if (a < 60000) return `${(ms / 1000).toFixed(a < 10000 ? 2 : 1)} s`;
    if (a < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
    if (a < 86400000) return `${Math.floor(ms / 3600000)} h ${Math.round((ms % 3600000) / 60000)} min`;
    return `${(ms / 86400000).toFixed(1)} d`;
  }

  /** The random tail of an execution id (its head is a timestamp that
   * executions submitted together share). */
  function shortId(id) {
    const s = String(id);
    return s.length > 12 ? '…' + s.slice(-12) : s;
  }

  function badge(status) {
    return el('span', { class: `badge status-${status}`, 'data-test': 'status-badge', 'data-status': status }, status);
  }

  /** A datetime-local value (local time) for an RFC 3339 time, and back. */
  function toLocalInput(iso, { ms = false } = {}) {
    const d = new Date(iso);
    if (!iso || Number.isNaN(d.getTime())) return '';
    const p = (n, w = 2) => String(n).padStart(w, '0');
    const frac = ms ? `.${p(d.getMilliseconds(), 3)}` : '';
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${frac}`;
  }

  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  let keyPrompt = null;

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch (_) {
      return null;
    }
  }

  function authHeaders(extra) {
    const headers = { Accept: 'application/json', ...(extra || {}) };
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  /** Asks for a key (once for any number of requests that got 401). */
  function askKey(message) {
    if (!keyPrompt) {
      keyPrompt = new Promise((resolve) => {
        const dialog = test('key-dialog');
        const form = test('key-form');
        const input = test('key-input');
        test('key-message').textContent = message;
        dialog.hidden = false;
        input.value = '';
        input.focus();
        const onSubmit = (ev) => {
          ev.preventDefault();
          const key = input.value.trim();
          if (!key) return;
          sessionStorage.setItem(KEY_STORE, key);
          form.removeEventListener('submit', onSubmit);
          dialog.hidden = true;
          keyPrompt = null;
          showKeyState();
          resolve();
        };
        form.addEventListener('submit', onSubmit);
      });
    }
    return keyPrompt;
  }

  function showKeyState() {
    test('key-state').hidden = !storedKey();
  }

  async function errorOf(res) {
    let code = 'http_' + res.status;
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.error) {
        code = String(body.error.code || code);
        message = String(body.error.message || message);
      }
    } catch (_) {
      // not JSON: keep the status line
    }
    return new ApiError(res.status, code, message);
  }

  /** A request with the key; a 401 asks for a key and tries again. */
  async function request(path, opts = {}) {
    for (;;) {
      const used = storedKey();
      const res = await fetch(path, {
        method: opts.method || 'GET',
        headers: authHeaders(opts.headers),
        body: opts.body,
        signal: opts.signal,
      });
      if (res.status === 401) {
        const err = await errorOf(res);
        // Forget the key this request was refused with (not one entered
        // since it was sent).
        if (used && storedKey() === used) sessionStorage.removeItem(KEY_STORE);
        showKeyState();
        await askKey(
          err.message === 'unknown API key'
            ? 'That key is not known to this ledger. Try another.'
            : 'This ledger asks for an API key.',
        );
        continue;
      }
      if (!res.ok) throw await errorOf(res);
      return res;
    }
  }

  async function api(path, opts) {
    const res = await request(path, opts);
    return res.json();
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    return s ? '?' + s : '';
  }

  // -------------------------------------------------------- event stream

  /** Reads `/v1/events` (SSE) with fetch, so the key goes in a header;
   * reconnects after the last seq seen. `onEvent(event)` for each event;
   * `onState('open' | 'connecting' | 'closed')`. With `toSeq` it ends
   * after the `end` event. */
  function openStream({ fromSeq, toSeq, onEvent, onState, onEnd }) {
    const ctl = new AbortController();
    let last = fromSeq > 1 ? fromSeq - 1 : 0;
    let retry = 1000;
    let stopped = false;
    const state = (s) => onState && onState(s);

    async function once() {
      const headers = { Accept: 'text/event-stream' };
      if (last > 0) headers['Last-Event-ID'] = String(last);
      const res = await request(`/v1/events${query({ fromSeq: last + 1, toSeq })}`, { headers, signal: ctl.signal });
      if (res.status === 204) return true;
      state('open');
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      let fields = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          // A CR that ends the chunk may be the first half of a CRLF.
          if (buf[nl] === '\r' && nl === buf.length - 1) break;
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
          if (line === '') {
            if (fields.data.length || fields.event) {
              const ended = dispatch(fields);
              if (ended) return true;
            }
            fields = { data: [] };
            continue;
          }
          if (line.startsWith(':')) continue;
          const i = line.indexOf(':');
          const name = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? '' : line.slice(i + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (name === 'data') fields.data.push(val);
          else if (name === 'event') fields.event = val;
          else if (name === 'id') fields.id = val;
          else if (name === 'retry' && /^\d+$/.test(val)) retry = Number(val);
        }
      }
    }

    function dispatch(f) {
      if (f.id && /^\d+$/.test(f.id)) last = Math.max(last, Number(f.id));
      if (f.event === 'end') {
        if (onEnd) onEnd();
        return true;
      }
      let data;
      try {
        data = JSON.parse(f.data.join('\n'));
      } catch (_) {
        return false;
      }
      if (data && typeof data.seq === 'number') {
        last = Math.max(last, data.seq);
        onEvent(data);
      }
      return false;
    }

    (async () => {
      while (!stopped) {
        state('connecting');
        try {
          if (await once()) break;
        } catch (e) {
          if (stopped || (e && e.name === 'AbortError')) break;
          if (e instanceof ApiError && e.status < 500 && e.status !== 429) {
            state('closed');
            return;
          }
        }
        if (stopped) break;
        state('connecting');
        await new Promise((r) => setTimeout(r, retry));
      }
      state('closed');
    })();

    return {
      close() {
        stopped = true;
        ctl.abort();
      },
    };
  }

  /** The events with seq in [from, to] that this key sees, at most `max`. */
  function readEvents(from, to, max = Infinity) {
    return new Promise((resolve) => {
      const got = [];
      let s = null;
      const done = () => {
        if (s) s.close();
        resolve(got);
      };
      s = openStream({
        fromSeq: from,
        toSeq: to,
        onEvent(e) {
          got.push(e);
          if (got.length >= max) done();
        },
        onEnd: done,
        onState(st) {
          if (st === 'closed') resolve(got);
        },
      });
    });
  }

  /** The last seq this key can know of: the head (admin), or, for a tenant
   * key (the head is admin only), the last event of its newest execution. */
  async function knownHead() {
    if (!isTenantKey()) {
      try {
        return (await api('/v1/head')).seq;
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 403) throw e;
        integrity.tenantKey = storedKey();
      }
    }
    const page = await api('/v1/executions?limit=1');
    const newest = page.executions && page.executions[0];
    if (!newest) return 0;
    const events = await api(`/v1/executions/${encodeURIComponent(newest.executionId)}/events`);
    return events.length ? events[events.length - 1].seq : 0;
  }

  // ----------------------------------------------------------- integrity

  const integrity = {
    samples: [],
    timer: null,
    adminOnly: false,
    // The key that was refused what is admin only (a tenant's key): not
    // asked for it again.
    tenantKey: undefined,
  };

  function isTenantKey() {
    return integrity.tenantKey !== undefined && integrity.tenantKey === storedKey();
  }

  function parseMetrics(text) {
    const out = {};
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (m) out[m[1] + (m[2] || '')] = Number(m[3]);
    }
    return out;
  }

  function adminOnly(node) {
    clear(node).append(el('span', { class: 'admin-only', 'data-test': 'admin-only' }, 'admin only'));
  }

  async function pollIntegrity() {
    if (isTenantKey()) return showAdminOnly();
    try {
      const [text, head] = await Promise.all([
        request('/metrics', { headers: { Accept: 'text/plain' } }).then((r) => r.text()),
        api('/v1/head'),
      ]);
      integrity.adminOnly = false;
      const m = parseMetrics(text);
      const now = Date.now();
      integrity.samples.push({ t: now, seq: head.seq, depth: m.ledger_queue_depth || 0 });
      while (integrity.samples.length && integrity.samples[0].t < now - 5 * 60 * 1000) integrity.samples.shift();
      test('head-seq').textContent = String(head.seq);
      const hash = test('head-hash');
      hash.textContent = head.hash.slice(0, 12) + '…';
      hash.title = head.hash;
      test('verify').disabled = false;
      drawSparks();
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        integrity.tenantKey = storedKey();
        showAdminOnly();
        return;
      }
      test('head-seq').textContent = '?';
      test('head-hash').textContent = e.message;
    }
  }

  /** A tenant's key: the head, verify and the figures span every tenant. */
  function showAdminOnly() {
    if (integrity.adminOnly) return;
    integrity.adminOnly = true;
    adminOnly(test('head-seq'));
    test('head-hash').textContent = '';
    test('verify').disabled = true;
    adminOnly(test('verdict'));
    for (const n of ['throughput-now', 'depth-now']) test(n).textContent = '';
    for (const n of ['spark-throughput', 'spark-depth']) clear(test(n));
    adminOnly(test('throughput-now'));
    adminOnly(test('depth-now'));
  }

  function drawSparks() {
    const s = integrity.samples;
    const rates = [];
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i].t - s[i - 1].t) / 1000;
      if (dt > 0) rates.push({ t: s[i].t, v: Math.max(0, (s[i].seq - s[i - 1].seq) / dt) });
    }
    spark(test('spark-throughput'), rates);
    spark(test('spark-depth'), s.map((x) => ({ t: x.t, v: x.depth })));
    const lastRate = rates.length ? rates[rates.length - 1].v : 0;
    test('throughput-now').textContent = lastRate >= 10 ? String(Math.round(lastRate)) : lastRate.toFixed(1);
    test('depth-now').textContent = s.length ? String(s[s.length - 1].depth) : '';
  }

  function spark(node, points) {
    clear(node);
    const now = Date.now();
    const t0 = now - 5 * 60 * 1000;
    const max = Math.max(1, ...points.map((p) => p.v));
    node.append(svg('line', { x1: 0, y1: 23.5, x2: 120, y2: 23.5, class: 'spark-base' }));
    if (points.length < 1) return;
    const xy = points.map((p) => [((p.t - t0) / (now - t0)) * 120, 22 - (p.v / max) * 20]);
    if (xy.length === 1) xy.unshift([Math.max(0, xy[0][0] - 2), xy[0][1]]);
    node.append(
      svg('polyline', { points: xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '), class: 'spark-line' }),
      svg('title', {}, `max ${max >= 10 ? Math.round(max) : max.toFixed(1)} over the last 5 minutes`),
    );
  }

  async function verify() {
    const btn = test('verify');
    const out = test('verdict');
    btn.disabled = true;
    out.className = 'verdict';
    out.dataset.state = 'running';
    out.textContent = 'verifying…';
    try {
      const v = await api('/v1/verify', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{}',
      });
      if (v.ok) {
        const r = v.report;
        out.dataset.state = 'intact';
        out.className = 'verdict ok';
        out.textContent = `intact: ${r.events} events of ${r.executions} executions, chain unbroken to seq ${r.head.seq}`;
        out.title = `head hash ${r.head.hash}`;
      } else {
        out.dataset.state = 'broken';
        out.className = 'verdict bad';
        out.textContent = v.seq !== null && v.seq !== undefined ? `broken at seq ${v.seq}: ${v.error}` : `broken: ${v.error}`;
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        adminOnly(out);
        return;
      }
      out.dataset.state = 'error';
      out.className = 'verdict bad';
      out.textContent = e.message;
    } finally {
      btn.disabled = integrity.adminOnly;
    }
  }

  function startIntegrity() {
    test('verify').addEventListener('click', verify);
    pollIntegrity();
    integrity.timer = setInterval(pollIntegrity, 3000);
  }

  // ------------------------------------------------------------- router

  let teardown = null;

  function navigate(url, { replace = false } = {}) {
    if (replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    render();
  }

  function render() {
    if (teardown) {
      try {
        teardown();
      } catch (_) {
        // a view's teardown does not stop the next view
      }
      teardown = null;
    }
    const main = clear(test('main'));
    const path = location.pathname.replace(/\/+$/, '');
    let m;
    for (const a of document.querySelectorAll('nav a')) a.classList.remove('active');
    if ((m = /^\/ui\/executions\/([^/]+)$/.exec(path))) {
      teardown = executionView(main, decodeURIComponent(m[1]));
    } else if ((m = /^\/ui\/at(?:\/([^/]*))?$/.exec(path))) {
      test('nav-at').classList.add('active');
      teardown = atView(main, m[1]);
    } else {
      test('nav-executions').classList.add('active');
      teardown = listView(main);
    }
  }

  function errorBox(e) {
    return el('div', { class: 'error', 'data-test': 'error', role: 'alert' }, e instanceof ApiError ? `${e.message} (${e.code})` : String(e && e.message ? e.message : e));
  }

  // --------------------------------------------------- executions list

  function filtersFromUrl() {
    const p = new URLSearchParams(location.search);
    const f = {};
    for (const k of FILTERS) {
      const v = p.get(k);
      if (v) f[k] = v;
    }
    return f;
  }

  function matches(rec, f) {
    if (f.status && !f.status.split(',').map((s) => s.trim()).includes(rec.status)) return false;
    if (f.tenantId && rec.tenantId !== f.tenantId) return false;
    if (f.callableName && rec.callableName !== f.callableName) return false;
    if (f.id && rec.executionId !== f.id) return false;
    const q = timeKey(rec.queuedAt);
    // A filter's time in UTC keeps its digits; one with an offset is read
    // to the millisecond.
    const key = (t) => (/Z$/.test(t) ? timeKey(t) : timeKey(new Date(t).toISOString()));
    if (f.since && q < key(f.since)) return false;
    if (f.until && q >= key(f.until)) return false;
    return true;
  }

  /** An RFC 3339 UTC time as a string that sorts as the time does, to
   * the nanosecond (the server writes 0, 3, 6 or 9 digits of fraction). */
  function timeKey(iso) {
    const m = /^(.{19})(?:\.(\d+))?Z$/.exec(String(iso));
    return m ? m[1] + (m[2] || '').padEnd(9, '0') : String(iso);
  }

  /** Newest first, by submission: queuedAt, then id (ids grow with time). */
  function newer(a, b) {
    const ta = timeKey(a.queuedAt);
    const tb = timeKey(b.queuedAt);
    if (ta !== tb) return ta > tb;
    return a.executionId > b.executionId;
  }

  function listView(main) {
    const f = filtersFromUrl();
    // The page size: ?limit=N (1 to 1000), else PAGE.
    const asked = Number(new URLSearchParams(location.search).get('limit'));
    const size = Number.isInteger(asked) && asked >= 1 && asked <= 1000 ? asked : PAGE;
    const rows = new Map(); // id -> {rec, tr}
    let cursor = null;
    let loading = false;
    let stream = null;
    let gone = false;
    const pending = new Set();
    let flushTimer = null;

    const statusBoxes = STATUSES.map((s) =>
      el('label', { class: 'check' },
        el('input', { type: 'checkbox', value: s, 'data-test': `filter-status-${s}`, checked: (f.status || '').split(',').includes(s) }),
        badge(s)),
    );
    const input = (name, attrs) => el('input', { name, 'data-test': `filter-${name}`, ...attrs });
    const tenant = input('tenant', { type: 'text', placeholder: 'any', value: f.tenantId || '', size: 10 });
    const callable = input('callable', { type: 'text', placeholder: 'any', value: f.callableName || '', size: 12 });
    const since = input('since', { type: 'datetime-local', step: 1, value: toLocalInput(f.since) });
    const until = input('until', { type: 'datetime-local', step: 1, value: toLocalInput(f.until) });
    const idIn = input('id', { type: 'text', placeholder: 'exact id', value: f.id || '', size: 38, class: 'mono' });

    const form = el('form', { class: 'filters', 'data-test': 'filters' },
      el('div', { class: 'field' }, el('span', { class: 'label' }, 'status'), el('div', { class: 'checks' }, statusBoxes)),
      el('label', { class: 'field' }, el('span', { class: 'label' }, 'tenant'), tenant),
      el('label', { class: 'field' }, el('span', { class: 'label' }, 'callable'), callable),
      el('label', { class: 'field' }, el('span', { class: 'label' }, 'queued since'), since),
      el('label', { class: 'field' }, el('span', { class: 'label' }, 'until'), until),
      el('label', { class: 'field' }, el('span', { class: 'label' }, 'id'), idIn),
      el('div', { class: 'field actions' },
        el('button', { type: 'submit', 'data-test': 'filter-apply' }, 'Apply'),
        el('button', { type: 'button', class: 'secondary', 'data-test': 'filter-clear', onclick: () => navigate('/ui/') }, 'Clear')),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const statuses = statusBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      navigate('/ui/' + query({
        limit: size === PAGE ? '' : size,
        status: statuses.join(','),
        tenantId: tenant.value.trim(),
        callableName: callable.value.trim(),
        since: fromLocalInput(since.value),
        until: fromLocalInput(until.value),
        id: idIn.value.trim(),
      }));
    });

    const live = el('span', { class: 'live', 'data-test': 'live-status', 'data-state': 'connecting' }, 'connecting');
    const count = el('span', { class: 'muted', 'data-test': 'row-count' });
    const tbody = el('tbody', { 'data-test': 'executions-body' });
    const table = el('table', { class: 'grid clickable', 'data-test': 'executions-table' },
      el('thead', {}, el('tr', {}, ['execution', 'tenant', 'callable', 'status', 'queued at (UTC)', 'attempts'].map((h) => el('th', {}, h)))),
      tbody);
    const more = el('button', { type: 'button', class: 'secondary', 'data-test': 'load-more', hidden: true, onclick: () => loadPage() }, 'Load more');
    const empty = el('p', { class: 'empty', 'data-test': 'empty', hidden: true }, 'No executions match.');
    const errors = el('div');

    main.append(
      el('div', { class: 'view-head' }, el('h1', {}, 'Executions'), el('span', { class: 'muted' }, 'newest first'), count, live),
      form, errors, table, empty, el('div', { class: 'more' }, more),
    );

    tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-id]');
      if (!tr || ev.target.closest('a')) return;
      navigate(`/ui/executions/${encodeURIComponent(tr.dataset.id)}`);
    });

    function rowOf(rec) {
      const href = `/ui/executions/${encodeURIComponent(rec.executionId)}`;
      const max = rec.config && rec.config.retry ? rec.config.retry.maxAttempts : null;
      return el('tr', { 'data-test': 'execution-row', 'data-id': rec.executionId, 'data-status': rec.status },
        el('td', {}, link(href, { class: 'mono id', title: rec.executionId, 'data-test': 'cell-id' }, shortId(rec.executionId))),
        el('td', { 'data-test': 'cell-tenant' }, rec.tenantId),
        el('td', { 'data-test': 'cell-callable', class: 'mono' }, rec.callableName),
        el('td', {}, badge(rec.status)),
        el('td', { class: 'mono', title: rec.queuedAt, 'data-test': 'cell-queued' }, fmtTime(rec.queuedAt)),
        el('td', { class: 'num mono', 'data-test': 'cell-attempts' }, max ? `${rec.attempt || 0}/${max}` : String(rec.attempt || 0)),
      );
    }

    function updateCount() {
      count.textContent = `${rows.size} shown${cursor ? ', more to load' : ''}`;
      empty.hidden = rows.size > 0 || loading;
      more.hidden = !cursor;
    }

    function put(rec, { fresh = false } = {}) {
      const old = rows.get(rec.executionId);
      const tr = rowOf(rec);
      if (!matches(rec, f)) {
        // It no longer matches the filters: kept, dimmed, until a reload.
        tr.classList.add('stale');
        tr.dataset.stale = 'true';
      }
      if (old) {
        old.tr.replaceWith(tr);
        if (old.rec.status !== rec.status) tr.classList.add('fresh');
      } else {
        // its place, newest first
        let before = null;
        for (const r of tbody.children) {
          const other = rows.get(r.dataset.id);
          if (other && newer(rec, other.rec)) {
            before = r;
            break;
          }
        }
        tbody.insertBefore(tr, before);
        if (fresh) tr.classList.add('fresh');
      }
      rows.set(rec.executionId, { rec, tr });
    }

    async function loadPage() {
      if (loading) return;
      loading = true;
      more.disabled = true;
      clear(errors);
      try {
        // A page can hold fewer than asked and still have more behind it
        // (the server bounds what it examines per request): go on until a
        // page's worth is here, within a bound of requests.
        let got = 0;
        for (let i = 0; i < 20; i++) {
          const params = { ...f, limit: size, cursor };
          const page = await api('/v1/executions' + query(params));
          if (gone) return;
          for (const rec of page.executions || []) {
            if (rows.has(rec.executionId)) continue;
            put(rec);
            got++;
          }
          cursor = page.nextCursor || null;
          if (!cursor || got >= size) break;
        }
      } catch (e) {
        if (!gone) errors.append(errorBox(e));
      } finally {
        loading = false;
        more.disabled = false;
        if (!gone) updateCount();
      }
    }

    function refresh(id) {
      pending.add(id);
      if (!flushTimer) flushTimer = setTimeout(flush, 150);
    }

    /** Whether an event of an execution not shown can make it one the
     * filters match (a new submission, or a status the filters ask for). */
    function mayMatch(e) {
      if (f.tenantId && e.tenantId !== f.tenantId) return false;
      if (f.id && e.executionId !== f.id) return false;
      if (e.type === 'queued') {
        return (!f.callableName || e.callableName === f.callableName) && (!f.status || f.status.split(',').includes('queued'));
      }
      const status = STATUS_AFTER[e.type] || (e.type === 'recovered' ? e.outcome : null);
      return Boolean(f.status && status && f.status.split(',').includes(status));
    }

    async function flush() {
      flushTimer = null;
      // A few at a time: the rest wait for the next round.
      const ids = [...pending].slice(0, 16);
      for (const id of ids) pending.delete(id);
      if (pending.size) flushTimer = setTimeout(flush, 150);
      await Promise.all(ids.map(async (id) => {
        let rec;
        try {
          rec = await api(`/v1/executions/${encodeURIComponent(id)}`);
        } catch (_) {
          return;
        }
        if (gone) return;
        if (rows.has(id)) {
          put(rec);
          return;
        }
        if (!matches(rec, f)) return;
        // A new one, or one that now matches: shown when it falls within
        // what is loaded (newer than the oldest row, or all is loaded).
        const list = [...rows.values()].map((r) => r.rec);
        const oldest = list.length ? list.reduce((a, b) => (newer(a, b) ? b : a)) : null;
        if (!oldest || !cursor || newer(rec, oldest)) put(rec, { fresh: true });
      }));
      updateCount();
    }

    (async () => {
      let from = 1;
      try {
        from = (await knownHead()) + 1;
      } catch (_) {
        // the list still loads; the stream starts at the beginning
      }
      if (gone) return;
      await loadPage();
      if (gone) return;
      stream = openStream({
        fromSeq: from,
        onEvent(e) {
          if (rows.has(e.executionId) || mayMatch(e)) refresh(e.executionId);
        },
        onState(s) {
          live.dataset.state = s;
          live.textContent = s === 'open' ? 'live' : s;
        },
      });
    })();

    return () => {
      gone = true;
      if (stream) stream.close();
      if (flushTimer) clearTimeout(flushTimer);
    };
  }

  // ------------------------------------------------------ one execution

  const ENDS = {
    completed: 'completed',
    failed: 'failed',
    timed_out: 'timeout',
    recovered: 'recovered',
    cancelled: 'cancelled',
    retry_scheduled: 'failed',
  };

  /** What an event did, in a few words. */
  function detail(e) {
    switch (e.type) {
      case 'queued':
        return `${e.callableName} · priority ${e.config ? e.config.priority : ''} · ${e.config ? e.config.mode : ''}${e.runAt ? ' · run at ' + fmtTime(e.runAt) : ''}${e.retryOf ? ' · retry of ' + e.retryOf : ''}${e.schedule ? ' · schedule ' + e.schedule.name + ' slot ' + fmtTime(e.schedule.slot) + (e.schedule.missed ? ' (' + e.schedule.missed + ' missed before)' : '') : ''}`;
      case 'started':
        return `attempt ${e.attempt}${e.worker ? ' by ' + e.worker : ''}`;
      case 'completed':
        return `attempt ${e.attempt}`;
      case 'failed':
        return `attempt ${e.attempt}: ${e.error ? e.error.code + ': ' + e.error.message : ''}`;
      case 'retry_scheduled':
        return `attempt ${e.attempt}: ${e.error ? e.error.code + ': ' + e.error.message : ''}; next not before ${fmtTime(e.notBefore)}`;
      case 'timed_out':
        return `attempt ${e.attempt}`;
      case 'cancelled':
        return e.reason || '';
      case 'redacted':
      case 'legal_hold':
      case 'legal_hold_released':
        return `${e.reason}${e.by ? ' (by ' + e.by + ')' : ''}`;
      case 'retried':
        return `as ${e.newExecutionId} · ${e.attempts} attempt(s)${e.reason ? ': ' + e.reason : ''}${e.by ? ' (by ' + e.by + ')' : ''}`;
      case 'recovered':
        return `attempt ${e.attempt} → ${e.outcome}${e.reason ? ' (' + e.reason.replace('_', ' ') + ')' : ''}`;
      case 'target_binding_applied':
        return `${e.target}${e.error ? ': ' + e.error.message : ''}`;
      case 'callback_delivered':
        return `attempt ${e.attempt}: HTTP ${e.statusCode}`;
      case 'callback_failed':
        return `attempt ${e.attempt}: ${e.statusCode ? 'HTTP ' + e.statusCode + ' ' : ''}${e.error || ''}`;
      default:
        return '';
    }
  }

  /** The timeline's pieces from an execution's events: attempt bars, the
   * waits between them, and marks. */
  function timelineOf(events, nowMs) {
    const bars = [];
    const gaps = [];
    const marks = [];
    let open = null;
    let held = null;
    let wait = null;
    const t = (e) => Date.parse(e.at);
    const closeWait = (at) => {
      if (wait && at > wait.from) gaps.push({ kind: 'waiting', from: wait.from, to: at, seq: wait.seq, label: 'queued' });
      wait = null;
    };
    const closeHeld = (at, why) => {
      if (held) gaps.push({ kind: 'deferred', from: held.from, to: at, seq: held.seq, label: `held (deferred)${why ? ', ' + why : ''}` });
      held = null;
    };
    for (const e of events) {
      const at = t(e);
      switch (e.type) {
        case 'queued':
          marks.push({ kind: 'queued', at, seq: e.seq, label: 'queued' });
          if (e.config && e.config.mode === 'deferred') held = { from: at, seq: e.seq };
          else wait = { from: at, seq: e.seq };
          break;
        case 'released':
          closeHeld(at, 'released');
          marks.push({ kind: 'released', at, seq: e.seq, label: 'released' });
          wait = { from: at, seq: e.seq };
          break;
        case 'started':
          closeHeld(at, 'run-at passed');
          closeWait(at);
          open = { attempt: e.attempt, from: at, seq: e.seq, worker: e.worker };
          break;
        case 'completed':
        case 'failed':
        case 'timed_out':
        case 'retry_scheduled':
        case 'recovered':
        case 'cancelled': {
          if (open && (e.attempt === undefined || e.attempt === open.attempt)) {
            let outcome = ENDS[e.type];
            if (e.type === 'retry_scheduled' && e.error && e.error.code === 'timeout') outcome = 'timeout';
            let reason = '';
            if (e.type === 'failed' || e.type === 'retry_scheduled') reason = e.error ? `${e.error.code}: ${e.error.message}` : '';
            if (e.type === 'recovered') reason = (e.reason || 'lost').replace('_', ' ');
            if (e.type === 'cancelled') reason = e.reason || 'cancelled';
            if (e.type === 'timed_out') reason = 'timed out';
            if (e.type === 'retry_scheduled') reason += ' (retried)';
            bars.push({ attempt: open.attempt, from: open.from, to: at, seq: open.seq, endSeq: e.seq, outcome, reason, worker: open.worker, endType: e.type });
            open = null;
          } else if (e.type === 'cancelled') {
            closeHeld(at, 'cancelled');
            closeWait(at);
            marks.push({ kind: 'cancelled', at, seq: e.seq, label: `cancelled${e.reason ? ': ' + e.reason : ''}` });
          }
          if (e.type === 'retry_scheduled') {
            const nb = Date.parse(e.notBefore);
            gaps.push({ kind: 'backoff', from: at, to: Math.max(at, nb), seq: e.seq, label: 'back-off' });
            wait = { from: Math.max(at, nb), seq: e.seq };
          }
          if (e.type === 'recovered' && e.outcome === 'queued') wait = { from: at, seq: e.seq };
          break;
        }
        case 'target_binding_applied':
          marks.push({ kind: 'binding', at, seq: e.seq, label: `target binding ${e.target}${e.error ? ' failed: ' + e.error.message : ' applied'}` });
          break;
        case 'callback_delivered':
          marks.push({ kind: 'callback', at, seq: e.seq, label: `callback delivered (HTTP ${e.statusCode})` });
          break;
        case 'callback_failed':
          marks.push({ kind: 'callback-failed', at, seq: e.seq, label: `callback failed: ${e.error || ''}` });
          break;
        default:
          marks.push({ kind: 'other', at, seq: e.seq, label: e.type });
      }
    }
    const last = events.length ? t(events[events.length - 1]) : nowMs;
    let end = Math.max(last, ...gaps.map((g) => g.to));
    if (open || held || wait) end = Math.max(end, nowMs);
    if (open) bars.push({ attempt: open.attempt, from: open.from, to: end, seq: open.seq, outcome: 'running', reason: 'running', worker: open.worker, ongoing: true });
    if (held) gaps.push({ kind: 'deferred', from: held.from, to: end, seq: held.seq, label: 'held (deferred)', ongoing: true });
    if (wait) gaps.push({ kind: 'waiting', from: wait.from, to: end, seq: wait.seq, label: 'queued', ongoing: true });
    const start = events.length ? t(events[0]) : nowMs;
    return { start, end: Math.max(end, start + 1), bars, gaps, marks };
  }

  function drawTimeline(node, tl, selectedAt, onPick) {
    clear(node);
    const W = 960;
    const H = 132;
    const L = 16;
    const R = W - 16;
    const x = (ms) => L + ((ms - tl.start) / (tl.end - tl.start)) * (R - L);
    const span = tl.end - tl.start;
    const yMarks = 34;
    const yBar = 52;
    const hBar = 22;
    const yAxis = 104;
    node.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const pick = (seq) => (ev) => {
      ev.stopPropagation();
      onPick(seq);
    };
    // axis
    node.append(svg('line', { x1: L, y1: yAxis, x2: R, y2: yAxis, class: 'axis' }));
    for (let i = 0; i <= 5; i++) {
      const ms = tl.start + (span * i) / 5;
      const xx = x(ms);
      node.append(
        svg('line', { x1: xx, y1: yAxis, x2: xx, y2: yAxis + 4, class: 'axis' }),
        svg('text', { x: xx, y: yAxis + 16, class: 'tick', 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' },
          i === 0 ? fmtTime(new Date(tl.start).toISOString()).slice(11) : `+${fmtDur(ms - tl.start)}`),
      );
    }
    // waits: a thin band across the bar row, labelled when wide enough
    for (const g of tl.gaps) {
      const x1 = x(g.from);
      const w = Math.max(2, x(g.to) - x1);
      const grp = svg('g', { class: `gap gap-${g.kind}`, 'data-test': 'tl-gap', 'data-kind': g.kind, 'data-seq': g.seq, onclick: pick(g.seq) },
        svg('rect', { x: x1, y: yBar + hBar / 2 - 4, width: w, height: 8, rx: 2 }),
        svg('title', {}, `${g.label}: ${fmtDur(g.to - g.from)}${g.ongoing ? ' (so far)' : ''}`));
      const text = g.kind === 'waiting' ? '' : `${g.label} ${fmtDur(g.to - g.from)}`;
      if (text && w > text.length * 5.6) grp.append(svg('text', { x: x1 + w / 2, y: yBar + hBar + 14, 'text-anchor': 'middle', class: 'gap-label' }, text));
      else if (text) grp.append(svg('text', { x: x1 + w / 2, y: yBar + hBar + 14, 'text-anchor': 'middle', class: 'gap-label' }, g.kind === 'backoff' ? 'back-off' : 'held'));
      node.append(grp);
    }
    // attempts
    for (const b of tl.bars) {
      const x1 = x(b.from);
      const w = Math.max(4, x(b.to) - x1);
      const label = `#${b.attempt} ${b.outcome}`;
      const grp = svg('g', {
        class: `bar outcome-${b.outcome}`,
        'data-test': 'attempt-bar',
        'data-attempt': b.attempt,
        'data-outcome': b.outcome,
        'data-seq': b.seq,
        'data-end-seq': b.endSeq,
        onclick: pick(b.endSeq || b.seq),
      },
      svg('rect', { x: x1, y: yBar, width: w, height: hBar, rx: 3 }),
      svg('title', {}, `attempt ${b.attempt}${b.worker ? ' on ' + b.worker : ''}: ${b.outcome}${b.reason && b.reason !== b.outcome ? ' — ' + b.reason : ''}, ${fmtDur(b.to - b.from)}${b.ongoing ? ' so far' : ''}`));
      if (w > label.length * 6.2 + 6) grp.append(svg('text', { x: x1 + 5, y: yBar + 15, class: 'bar-label' }, label));
      else grp.append(svg('text', { x: x1 + w / 2, y: yBar - 4, 'text-anchor': 'middle', class: 'bar-label-out' }, `#${b.attempt}`));
      node.append(grp);
    }
    // marks, stacked where they would overlap
    const rowEnds = [];
    for (const m of [...tl.marks].sort((a, b) => a.at - b.at || a.seq - b.seq)) {
      const xx = x(m.at);
      let r = rowEnds.findIndex((end) => xx - end >= 14);
      if (r < 0) r = rowEnds.length < 3 ? rowEnds.length : 2;
      rowEnds[r] = xx;
      const y = yMarks - r * 13;
      node.append(svg('g', { class: `mark mark-${m.kind}`, 'data-test': 'tl-mark', 'data-kind': m.kind, 'data-seq': m.seq, onclick: pick(m.seq) },
        svg('line', { x1: xx, y1: y + 5, x2: xx, y2: yBar + hBar, class: 'mark-stem' }),
        svg('path', { d: `M${xx} ${y - 6} l6 6 l-6 6 l-6 -6 z` }),
        svg('title', {}, `${m.label} (seq ${m.seq}, ${fmtTime(new Date(m.at).toISOString())})`)));
    }
    if (selectedAt !== null && selectedAt !== undefined) {
      const xx = x(selectedAt);
      node.append(svg('line', { x1: xx, y1: 4, x2: xx, y2: yAxis, class: 'cursor', 'data-test': 'tl-cursor' }));
    }
  }

  /** A JSON document as paths to leaves (a leaf's value as JSON text). */
  function flatten(value, prefix = '', out = new Map()) {
    if (value !== null && typeof value === 'object') {
      const entries = Array.isArray(value) ? value.map((v, i) => [`[${i}]`, v]) : Object.entries(value).map(([k, v]) => [prefix ? `.${k}` : k, v]);
      if (!entries.length) out.set(prefix, JSON.stringify(value));
      for (const [k, v] of entries) flatten(v, prefix + k, out);
    } else {
      out.set(prefix, JSON.stringify(value));
    }
    return out;
  }

  function executionView(main, id) {
    let gone = false;
    let events = [];
    let stream = null;
    let recToken = 0;
    let ongoing = false;
    const params = new URLSearchParams(location.search);
    let selected = /^\d+$/.test(params.get('seq') || '') ? Number(params.get('seq')) : null;

    const head = el('div', { class: 'exec-head', 'data-test': 'execution-head' });
    const timeline = svg('svg', { class: 'timeline', 'data-test': 'timeline', role: 'img', 'aria-label': 'timeline of attempts' });
    const legend = el('div', { class: 'legend' },
      ['completed', 'failed', 'timeout', 'recovered', 'cancelled', 'running'].map((o) => el('span', { class: `key outcome-${o}` }, el('i'), o)),
      el('span', { class: 'key gap-backoff' }, el('i'), 'back-off'),
      el('span', { class: 'key gap-deferred' }, el('i'), 'held (deferred)'),
      el('span', { class: 'key gap-waiting' }, el('i'), 'queued'));
    const evBody = el('tbody', { 'data-test': 'event-list-body' });
    const evTable = el('table', { class: 'grid clickable events', 'data-test': 'event-list' },
      el('thead', {}, el('tr', {}, ['seq', 'time (UTC)', 'kind', ''].map((h) => el('th', {}, h)))), evBody);
    const record = el('div', { class: 'record', 'data-test': 'record' });
    const errors = el('div');

    main.append(
      el('div', { class: 'view-head' }, el('h1', {}, 'Execution'), link('/ui/', { class: 'muted' }, '← executions')),
      errors, head,
      el('section', { class: 'panel' }, timeline, legend),
      el('div', { class: 'split' },
        el('section', { class: 'panel events-panel' }, el('h2', {}, 'Events'), evTable),
        el('section', { class: 'panel' }, record)),
    );

    evBody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-seq]');
      if (tr) select(Number(tr.dataset.seq));
    });
    evBody.addEventListener('keydown', (ev) => {
      const tr = ev.target.closest('tr[data-seq]');
      if (tr && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        select(Number(tr.dataset.seq), { focus: true });
      }
    });

    function onKey(ev) {
      if (ev.target.closest('input, textarea, select') || !events.length) return;
      if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp' && ev.key !== 'j' && ev.key !== 'k') return;
      const i = events.findIndex((e) => e.seq === current());
      const next = ev.key === 'ArrowDown' || ev.key === 'j' ? Math.min(events.length - 1, i + 1) : Math.max(0, i - 1);
      if (next !== i) {
        ev.preventDefault();
        select(events[next].seq, { focus: true });
      }
    }
    document.addEventListener('keydown', onKey);

    function current() {
      if (selected !== null) return selected;
      return events.length ? events[events.length - 1].seq : null;
    }

    function select(seq, { focus = false } = {}) {
      selected = seq;
      const u = new URL(location.href);
      u.searchParams.set('seq', String(seq));
      history.pushState(null, '', u.pathname + u.search);
      drawAll();
      if (focus) {
        const row = $('tr.selected', evBody);
        if (row) row.focus();
      }
      showRecord();
    }

    function drawHead(rec) {
      clear(head).append(
        el('div', { class: 'title-row' },
          el('span', { class: 'mono big', 'data-test': 'execution-id' }, rec.executionId),
          badge(rec.status)),
        el('div', { class: 'facts' },
          ...[
            ['tenant', rec.tenantId],
            ['callable', rec.callableName],
            ['mode', rec.config.mode],
            ['priority', rec.config.priority],
            ['attempts', `${rec.attempt || 0}${rec.config.retry ? ' of ' + rec.config.retry.maxAttempts : ''}`],
            ['timeout', fmtDur(rec.config.timeoutMs)],
            ['queued', fmtTime(rec.queuedAt)],
            ['finished', rec.completedAt ? fmtTime(rec.completedAt) : '—'],
          ].map(([k, v]) => el('span', { class: 'fact' }, el('span', { class: 'label' }, k), ' ', String(v)))),
      );
    }

    function drawAll() {
      const tl = timelineOf(events, Date.now());
      ongoing = tl.bars.some((b) => b.ongoing) || tl.gaps.some((g) => g.ongoing);
      const sel = current();
      const selEvent = events.find((e) => e.seq === sel);
      drawTimeline(timeline, tl, selEvent ? Date.parse(selEvent.at) : null, select);
      clear(evBody);
      for (const e of events) {
        evBody.append(el('tr', {
          'data-test': 'event-row',
          'data-seq': e.seq,
          tabindex: 0,
          'data-kind': e.type,
          class: e.seq === sel ? 'selected' : '',
          'aria-selected': e.seq === sel ? 'true' : 'false',
        },
        el('td', { class: 'mono num', 'data-test': 'event-seq' }, String(e.seq)),
        el('td', { class: 'mono', title: e.at }, fmtClock(e.at)),
        el('td', { 'data-test': 'event-kind' }, el('span', { class: `kind kind-${e.type}` }, e.type)),
        el('td', { class: 'detail' }, detail(e))));
      }
    }

    async function showRecord() {
      const seq = current();
      const token = ++recToken;
      if (seq === null) return;
      const i = events.findIndex((e) => e.seq === seq);
      const prevSeq = i > 0 ? events[i - 1].seq : null;
      const at = (n) => api(`/v1/executions/${encodeURIComponent(id)}?atSeq=${n}`);
      let now;
      let before = null;
      try {
        [now, before] = await Promise.all([at(seq), prevSeq !== null ? at(prevSeq) : Promise.resolve(null)]);
      } catch (e) {
        if (token === recToken && !gone) clear(record).append(errorBox(e));
        return;
      }
      if (token !== recToken || gone) return;
      const ev = events[i];
      const a = flatten(now);
      // A seq that is not one of this execution's events: the record as
      // of then, nothing highlighted.
      const b = before ? flatten(before) : ev ? new Map() : a;
      const tbody = el('tbody');
      for (const [path, val] of a) {
        const change = !b.has(path) ? 'added' : b.get(path) !== val ? 'changed' : '';
        tbody.append(el('tr', { 'data-test': 'record-field', 'data-path': path, 'data-change': change, class: change ? `change-${change}` : '' },
          el('td', { class: 'mono path' }, path),
          el('td', { class: 'mono value', 'data-test': 'field-value' }, val,
            change === 'changed' ? el('span', { class: 'was', title: 'before this event' }, b.get(path)) : null)));
      }
      for (const [path, val] of b) {
        if (a.has(path)) continue;
        tbody.append(el('tr', { 'data-test': 'record-field', 'data-path': path, 'data-change': 'removed', class: 'change-removed' },
          el('td', { class: 'mono path' }, path),
          el('td', { class: 'mono value', 'data-test': 'field-value' }, val)));
      }
      // What this event changed, at a glance, above the whole record.
      const changes = el('ul', { class: 'changes', 'data-test': 'record-changes' });
      for (const tr of tbody.children) {
        const change = tr.dataset.change;
        if (!change || !before) continue;
        const path = tr.dataset.path;
        changes.append(el('li', { 'data-path': path, 'data-change': change },
          el('span', { class: 'mono path' }, path), ' ',
          change === 'changed' ? [el('span', { class: 'mono was-inline' }, b.get(path)), ' → ', el('span', { class: 'mono' }, a.get(path))]
            : change === 'added' ? el('span', { class: 'mono' }, a.get(path))
              : el('span', { class: 'muted' }, 'removed')));
      }
      clear(record).append(
        el('div', { class: 'record-head' },
          el('h2', {}, 'Record at seq ', el('span', { class: 'mono', 'data-test': 'record-seq' }, String(seq))),
          el('span', { class: 'muted' }, ev ? `right after ${ev.type}${prevSeq !== null ? `; highlighted: what changed since seq ${prevSeq}` : '; every field is new'}` : 'not one of its events: the record as of then'),
          link(`/ui/at/${seq}`, { 'data-test': 'record-at-link' }, 'the whole ledger at this seq →')),
        changes.children.length ? changes : null,
        el('table', { class: 'fields', 'data-test': 'record-fields' }, tbody),
      );
    }

    async function load(first) {
      try {
        const [rec, evs] = await Promise.all([
          api(`/v1/executions/${encodeURIComponent(id)}`),
          api(`/v1/executions/${encodeURIComponent(id)}/events`),
        ]);
        if (gone) return;
        events = evs;
        drawHead(rec);
        drawAll();
        await showRecord();
        if (first && !gone) {
          stream = openStream({
            fromSeq: (events.length ? events[events.length - 1].seq : 0) + 1,
            onEvent(e) {
              if (e.executionId === id) scheduleReload();
            },
          });
        }
      } catch (e) {
        if (gone) return;
        clear(errors).append(errorBox(e));
      }
    }

    let reloadTimer = null;
    function scheduleReload() {
      if (!reloadTimer) reloadTimer = setTimeout(() => {
        reloadTimer = null;
        load(false);
      }, 150);
    }

    // A running attempt's bar grows with the clock.
    const tick = setInterval(() => {
      if (ongoing) drawAll();
    }, 1000);

    load(true);
    return () => {
      gone = true;
      if (stream) stream.close();
      clearInterval(tick);
      if (reloadTimer) clearTimeout(reloadTimer);
      document.removeEventListener('keydown', onKey);
    };
  }

  // ------------------------------------------------- the ledger at a seq

  /** Where a live execution is at a moment: held, waiting (back-off or
   * run-at), queued, running. */
  function whereAt(rec, atMs) {
    if (rec.status === 'running') return 'running';
    if (rec.status !== 'queued') return 'finishing';
    if (rec.config && rec.config.mode === 'deferred' && !rec.releasedAt && !(rec.notBefore && Date.parse(rec.notBefore) <= atMs)) return 'held';
    if (rec.notBefore && Date.parse(rec.notBefore) > atMs) return 'waiting';
    return 'queued';
  }

  function atView(main, seqPart) {
    let gone = false;
    let head = 0;
    let seq = /^\d+$/.test(seqPart || '') ? Number(seqPart) : null;
    const params = new URLSearchParams(location.search);
    let compare = /^\d+$/.test(params.get('compare') || '') ? Number(params.get('compare')) : null;
    let token = 0;
    let playTimer = null;
    let debounce = null;

    const slider = el('input', { type: 'range', min: 1, max: 1, value: 1, step: 1, 'data-test': 'seq-slider', 'aria-label': 'seq' });
    const seqIn = el('input', { type: 'number', min: 1, value: '', 'data-test': 'seq-input', class: 'mono', 'aria-label': 'seq', size: 8 });
    const headLabel = el('span', { class: 'muted mono', 'data-test': 'slider-head' });
    const prev = el('button', { type: 'button', class: 'secondary', 'data-test': 'step-back', title: 'previous seq' }, '◀');
    const next = el('button', { type: 'button', class: 'secondary', 'data-test': 'step-forward', title: 'next seq' }, '▶');
    const play = el('button', { type: 'button', 'data-test': 'play', 'data-state': 'paused' }, 'Play');
    const timeIn = el('input', { type: 'datetime-local', step: 0.001, 'data-test': 'time-input', 'aria-label': 'time' });
    const timeGo = el('button', { type: 'button', class: 'secondary', 'data-test': 'time-go' }, 'Go to time');
    const eventLine = el('div', { class: 'event-line', 'data-test': 'seq-event' });
    const cmpIn = el('input', { type: 'number', min: 1, 'data-test': 'compare-input', class: 'mono', placeholder: 'seq', value: compare ?? '', 'aria-label': 'compare with seq' });
    const cmpGo = el('button', { type: 'button', class: 'secondary', 'data-test': 'compare-go' }, 'Compare');
    const cmpClear = el('button', { type: 'button', class: 'link', 'data-test': 'compare-clear' }, 'clear');
    const queueBody = el('tbody', { 'data-test': 'queue-body' });
    const liveBody = el('tbody', { 'data-test': 'live-body' });
    const queueCount = el('span', { class: 'muted', 'data-test': 'queue-count' });
    const pausesBox = el('ul', { class: 'pauses', 'data-test': 'pauses' });
    const liveCount = el('span', { class: 'muted', 'data-test': 'live-count' });
    const diffBox = el('section', { class: 'panel diff', 'data-test': 'diff', hidden: true });
    const errors = el('div');

    main.append(
      el('div', { class: 'view-head' }, el('h1', {}, 'The ledger at seq ', el('span', { class: 'mono', 'data-test': 'at-seq' }, '…')), headLabel),
      el('div', { class: 'panel controls' },
        el('div', { class: 'slider-row' }, prev, slider, next, seqIn, play),
        el('div', { class: 'control-row' },
          el('label', {}, el('span', { class: 'label' }, 'at a time'), timeIn), timeGo,
          el('span', { class: 'sep' }),
          el('label', {}, el('span', { class: 'label' }, 'compare with seq'), cmpIn), cmpGo, cmpClear),
        eventLine),
      errors,
      el('div', { class: 'split even' },
        el('section', { class: 'panel' }, el('h2', {}, 'Queue, in claim order ', queueCount), pausesBox,
          el('table', { class: 'grid clickable', 'data-test': 'queue-table' },
            el('thead', {}, el('tr', {}, ['#', 'execution', 'tenant', 'callable', 'prio', 'att', 'queued (UTC)'].map((h) => el('th', {}, h)))), queueBody)),
        el('section', { class: 'panel' }, el('h2', {}, 'Live executions, oldest first ', liveCount),
          el('table', { class: 'grid clickable', 'data-test': 'live-table' },
            el('thead', {}, el('tr', {}, ['execution', 'tenant', 'callable', 'where', 'att', 'queued (UTC)'].map((h) => el('th', {}, h)))), liveBody))),
      diffBox,
    );

    for (const body of [queueBody, liveBody]) {
      body.addEventListener('click', (ev) => {
        const tr = ev.target.closest('tr[data-id]');
        if (tr && !ev.target.closest('a')) navigate(`/ui/executions/${encodeURIComponent(tr.dataset.id)}`);
      });
    }

    function url() {
      return `/ui/at/${seq}${compare !== null ? '?compare=' + compare : ''}`;
    }

    function setSeq(n, how) {
      n = Math.max(1, Math.min(head || n, Math.round(n)));
      seq = n;
      slider.value = String(n);
      seqIn.value = String(n);
      test('at-seq', main).textContent = String(n);
      if (how === 'push') history.pushState(null, '', url());
      else if (how === 'replace') history.replaceState(null, '', url());
      if (debounce) clearTimeout(debounce);
      debounce = setTimeout(load, how === 'slide' ? 120 : 0);
    }

    slider.addEventListener('input', () => {
      setSeq(Number(slider.value), 'slide');
      history.replaceState(null, '', url());
    });
    slider.addEventListener('change', () => setSeq(Number(slider.value), 'replace'));
    seqIn.addEventListener('change', () => seqIn.value && setSeq(Number(seqIn.value), 'push'));
    prev.addEventListener('click', () => setSeq(seq - 1, 'push'));
    next.addEventListener('click', () => setSeq(seq + 1, 'push'));
    play.addEventListener('click', () => (playTimer ? stop() : start()));
    cmpGo.addEventListener('click', () => {
      compare = /^\d+$/.test(cmpIn.value) ? Number(cmpIn.value) : null;
      history.pushState(null, '', url());
      load();
    });
    cmpIn.addEventListener('keydown', (ev) => ev.key === 'Enter' && cmpGo.click());
    cmpClear.addEventListener('click', () => {
      compare = null;
      cmpIn.value = '';
      history.pushState(null, '', url());
      load();
    });
    timeGo.addEventListener('click', goToTime);

    function start() {
      if (seq >= head) setSeq(1, 'replace');
      play.textContent = 'Pause';
      play.dataset.state = 'playing';
      playTimer = setInterval(() => {
        if (seq >= head) return stop();
        setSeq(seq + 1, 'replace');
      }, 700);
    }

    function stop() {
      clearInterval(playTimer);
      playTimer = null;
      play.textContent = 'Play';
      play.dataset.state = 'paused';
    }

    /** The last seq at or before a time, by halving over the seqs (each
     * probe reads the first event this key sees at or after a seq). */
    async function seqAtTime(iso) {
      const t = timeKey(iso);
      const probe = async (from, to) => (await readEvents(from, to, 1))[0] || null;
      let lo = 1;
      let hi = head;
      const first = await probe(1, head);
      if (!first || timeKey(first.at) > t) return null;
      lo = first.seq;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        const e = await probe(mid, hi);
        if (e && timeKey(e.at) <= t) lo = e.seq;
        else hi = mid - 1;
      }
      return lo;
    }

    async function goToTime() {
      const iso = fromLocalInput(timeIn.value);
      if (!iso) return;
      clear(errors);
      timeGo.disabled = true;
      try {
        const n = await seqAtTime(iso);
        if (gone) return;
        if (n === null) errors.append(el('div', { class: 'error', 'data-test': 'error' }, `nothing was recorded at or before ${fmtTime(iso)}`));
        else setSeq(n, 'push');
      } catch (e) {
        errors.append(errorBox(e));
      } finally {
        timeGo.disabled = false;
      }
    }

    function row(rec, cells, attrs) {
      return el('tr', { 'data-id': rec.executionId, ...attrs }, cells.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', {}, String(c)))));
    }

    /** What a pause holds, in words (as `ledger pauses` says it). */
    function scopeText(p) {
      if (p.tenantId && p.callableName) return `tenant ${p.tenantId}'s callable ${p.callableName}`;
      return p.tenantId ? `tenant ${p.tenantId}` : `callable ${p.callableName}`;
    }

    /** The pause that holds a queued execution, if any (the earliest). */
    function holding(pauses, rec) {
      return pauses
        .filter((p) => (!p.tenantId || p.tenantId === rec.tenantId) && (!p.callableName || p.callableName === rec.callableName))
        .sort((a, b) => a.sinceSeq - b.sinceSeq)[0];
    }

    function drawQueue(q, pauses) {
      clear(queueBody);
      clear(pausesBox);
      for (const p of pauses) {
        pausesBox.append(el('li', { 'data-test': 'pause-row', 'data-since': String(p.sinceSeq) },
          el('span', { class: 'badge where-held' }, 'paused'), ` ${scopeText(p)} since seq `,
          el('span', { class: 'mono' }, String(p.sinceSeq)),
          p.by ? ` by ${p.by}` : '', p.reason ? `: ${p.reason}` : ''));
      }
      q.forEach((rec, i) => {
        const held = holding(pauses, rec);
        const callable = el('span', { class: 'mono' }, rec.callableName);
        const cell = held
          ? el('span', {}, callable, ' ', el('span', { class: 'badge where-held', 'data-test': 'held', title: `${scopeText(held)} paused since seq ${held.sinceSeq}` }, 'paused'))
          : callable;
        queueBody.append(row(rec, [
          el('span', { class: 'mono num' }, String(i + 1)),
          link(`/ui/executions/${encodeURIComponent(rec.executionId)}`, { class: 'mono id', title: rec.executionId, 'data-test': 'cell-id' }, shortId(rec.executionId)),
          rec.tenantId, cell, el('span', { class: 'mono num' }, String(rec.config.priority)),
          el('span', { class: 'mono num' }, String(rec.attempt || 0)), el('span', { class: 'mono', title: rec.queuedAt }, fmtClock(rec.queuedAt)),
        ], { 'data-test': 'queue-row', 'data-held': held ? 'paused' : '' }));
      });
      queueCount.textContent = `(${q.length})`;
      if (!q.length) queueBody.append(el('tr', {}, el('td', { colspan: 7, class: 'empty' }, 'nothing runnable')));
    }

    function drawLive(list, atMs) {
      clear(liveBody);
      for (const rec of list) {
        const where = whereAt(rec, atMs);
        liveBody.append(row(rec, [
          link(`/ui/executions/${encodeURIComponent(rec.executionId)}`, { class: 'mono id', title: rec.executionId, 'data-test': 'cell-id' }, shortId(rec.executionId)),
          rec.tenantId, el('span', { class: 'mono' }, rec.callableName),
          el('span', { class: `badge where-${where}`, 'data-test': 'where' }, where),
          el('span', { class: 'mono num' }, String(rec.attempt || 0)), el('span', { class: 'mono', title: rec.queuedAt }, fmtClock(rec.queuedAt)),
        ], { 'data-test': 'live-row', 'data-status': rec.status }));
      }
      liveCount.textContent = `(${list.length})`;
      if (!list.length) liveBody.append(el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'nothing live')));
    }

    /** The diff shown from the compared seq to this one: executions that
     * exist here and not there are added, those there and not here removed. */
    function drawDiff(changes, from, to) {
      clear(diffBox);
      diffBox.hidden = false;
      const forward = from <= to;
      const groups = { added: [], changed: [], removed: [] };
      for (const c of changes) {
        if (c.before === undefined || c.before === null) (forward ? groups.added : groups.removed).push(c);
        else groups.changed.push(c);
      }
      diffBox.append(el('h2', {}, 'From seq ', el('span', { class: 'mono' }, String(from)), forward ? ' to seq ' : ' back to seq ', el('span', { class: 'mono' }, String(to)),
        el('span', { class: 'muted' }, ` — ${groups.added.length} added, ${groups.changed.length} changed, ${groups.removed.length} removed`)));
      const cols = el('div', { class: 'diff-cols' });
      for (const kind of ['added', 'changed', 'removed']) {
        const ul = el('ul', { class: 'diff-list' });
        for (const c of groups[kind]) {
          const [b, a] = forward ? [c.before, c.after] : [c.after, c.before];
          ul.append(el('li', { 'data-test': 'diff-row', 'data-id': c.executionId, 'data-change': kind },
            link(`/ui/executions/${encodeURIComponent(c.executionId)}`, { class: 'mono id', title: c.executionId }, shortId(c.executionId)),
            el('span', { class: 'muted' }, ` ${c.tenantId} `),
            kind === 'added' ? badge(a) : kind === 'removed' ? badge(b) : el('span', {}, badge(b), ' → ', badge(a)),
            el('div', { class: 'diff-events mono' }, c.events.map(([s, t]) => `${s} ${t}`).join(' · '))));
        }
        if (!groups[kind].length) ul.append(el('li', { class: 'empty' }, 'none'));
        cols.append(el('div', { class: `diff-col diff-${kind}`, 'data-test': `diff-${kind}` }, el('h3', {}, kind), ul));
      }
      diffBox.append(cols);
    }

    async function load() {
      const t = ++token;
      const n = seq;
      clear(errors);
      try {
        const cmp = compare;
        const [q, live, evs, changes, paused] = await Promise.all([
          api(`/v1/queue?atSeq=${n}`),
          api(`/v1/live?atSeq=${n}`),
          readEvents(n, n, 1),
          cmp !== null ? api(`/v1/diff?fromSeq=${Math.min(cmp, n)}&toSeq=${Math.max(cmp, n)}`) : Promise.resolve(null),
          api(`/v1/pauses?atSeq=${n}`),
        ]);
        if (t !== token || gone) return;
        const ev = evs[0];
        const atMs = ev ? Date.parse(ev.at) : Date.now();
        clear(eventLine);
        if (ev) {
          eventLine.append('seq ', el('span', { class: 'mono' }, String(ev.seq)), ` at ${fmtTime(ev.at)}: `,
            el('span', { class: `kind kind-${ev.type}` }, ev.type), ' of ',
            link(`/ui/executions/${encodeURIComponent(ev.executionId)}?seq=${ev.seq}`, { class: 'mono id', title: ev.executionId }, shortId(ev.executionId)),
            ` (${ev.tenantId})`);
          if (!timeIn.matches(':focus')) timeIn.value = toLocalInput(ev.at, { ms: true });
        } else {
          const began = paused.pauses.find((p) => p.sinceSeq === n);
          eventLine.append(began
            ? el('span', {}, `seq ${n} at ${fmtTime(began.since)}: `, el('span', { class: 'kind kind-paused' }, 'paused'), ` ${scopeText(began)}`,
              began.by ? ` by ${began.by}` : '', began.reason ? `: ${began.reason}` : '')
            : el('span', { class: 'muted' }, `seq ${n}: not an event of an execution this key sees (another tenant's, or a resume of paused work)`));
        }
        drawQueue(q, paused.pauses);
        drawLive(live, atMs);
        if (changes) drawDiff(changes, cmp, n);
        else diffBox.hidden = true;
      } catch (e) {
        if (t === token && !gone) errors.append(errorBox(e));
      }
    }

    async function refreshHead() {
      try {
        const h = await knownHead();
        if (gone) return;
        head = Math.max(h, 1);
        slider.max = String(head);
        seqIn.max = String(head);
        headLabel.textContent = `of 1…${head}`;
        return true;
      } catch (e) {
        if (!gone) errors.append(errorBox(e));
        return false;
      }
    }

    (async () => {
      await refreshHead();
      if (gone) return;
      if (seq === null) setSeq(head, 'replace');
      // a seq past the head (or 0) shows the nearest, and the URL says so
      else setSeq(seq, seq > head || seq < 1 ? 'replace' : undefined);
    })();
    const headTimer = setInterval(refreshHead, 5000);

    return () => {
      gone = true;
      stop();
      clearInterval(headTimer);
      if (debounce) clearTimeout(debounce);
    };
  }

  // -------------------------------------------------------------- start

  document.addEventListener('click', (ev) => {
    const a = ev.target.closest('a[data-nav]');
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    navigate(a.getAttribute('href'));
  });
  window.addEventListener('popstate', render);
  test('key-forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });
  showKeyState();
  startIntegrity();
  render();
})();
