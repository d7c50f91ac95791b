/* The dashboard at GET /: config, pool, miss rate and pool size over time, recent decisions.
 *
 * - Every URL is relative, never with a leading slash: API Gateway adds a stage prefix.
 * - The API token is kept in the scaler_token cookie for this browser session (so the HTML
 *   pages open too); this script sends it as a bearer header, which a change requires.
 * - Charts use Chart.js 4.5.1, served by the app (assets/chart-4.5.1.umd.min.js).
 */
(function () {
  'use strict';

  const REFRESH_MS = 5000;
  const DECISIONS_SHOWN = 20;
  const COOKIE = 'scaler_token';
  // What a cookie value may hold unquoted (RFC 6265 cookie-octet): no space, quote, comma,
  // semicolon or backslash.
  const COOKIE_SAFE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$/;
  const NUMBER_TEXT = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
  const MAX_NODES = 8;
  const MINUTE_MS = 60000;
  // Time-axis steps, in minutes: the first that gives at most 8 labels.
  const AXIS_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];

  const $ = (id) => document.getElementById(id);

  let token = null;
  let storedConfig = null; // the config as the API last answered it
  let configDirty = false; // the form holds edits not saved yet: refreshes leave it alone
  let timer = null;
  let inFlight = false;
  let rerun = false;
  let missRateChart = null;
  let poolSizeChart = null;

  // -- the token ---------------------------------------------------------------------------

  function cookieSuffix() {
    return '; SameSite=Strict; path=/' + (location.protocol === 'https:' ? '; Secure' : '');
  }

  function readTokenCookie() {
    for (const part of document.cookie.split(';')) {
      const [name, ...value] = part.trim().split('=');
      if (name === COOKIE && value.join('=')) return value.join('=');
    }
    return null;
  }

  function keepToken(value) {
    document.cookie = COOKIE + '=' + value + cookieSuffix(); // no Expires: this session only
    token = value;
  }

  function forgetToken() {
    document.cookie = COOKIE + '=; Max-Age=0' + cookieSuffix();
    token = null;
  }

  function askForToken(message) {
    clearTimeout(timer);
    forgetToken();
    $('dashboard').hidden = true;
    $('forget-token').hidden = true;
    $('token-form').hidden = false;
    $('token-message').textContent = message;
    setStatus('', false);
    $('token').focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const value = $('token').value.trim();
    if (!COOKIE_SAFE.test(value)) {
      $('token-message').textContent =
        'A token with spaces, quotes, commas, semicolons, backslashes or non-ASCII characters ' +
        'cannot be kept in a cookie.';
      return;
    }
    $('token').value = '';
    keepToken(value);
    start();
  }

  function start() {
    $('token-form').hidden = true;
    $('dashboard').hidden = false;
    $('forget-token').hidden = false;
    refreshSoon();
  }

  // -- talking to the API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function callApi(path, body) {
    const headers = { Accept: 'application/json', Authorization: 'Bearer ' + token };
    const init = { method: 'GET', headers, cache: 'no-store' };
    if (body !== undefined) {
      init.method = 'POST';
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let payload = null;
    try {
      payload = await response.json();
    } catch (ignored) {
      // not JSON: the status line says enough
    }
    if (!response.ok) {
      const fallback = `${response.status} ${response.statusText}`;
      const message = payload && payload.Message ? payload.Message : fallback;
      throw new ApiError(response.status, message);
    }
    return payload;
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 0);
  }

  async function refresh() {
    if (inFlight) {
      rerun = true;
      return;
    }
    inFlight = true;
    const minutes = $('history-minutes').value;
    try {
      const [config, cacheList, history] = await Promise.all([
        callApi('api/scaler/config'),
        callApi('api/scaler/cache_list'),
        callApi('api/scaler/history?minutes=' + encodeURIComponent(minutes)),
      ]);
      const ticks = history.records.filter((record) => record.kind === 'tick');
      showConfig(config);
      showPool(cacheList, config);
      showCharts(ticks, config, minutes);
      showDecisions(ticks);
      const now = new Date().toLocaleTimeString();
      setStatus(`Updated ${now}; refreshes every ${REFRESH_MS / 1000} s.`, false);
    } catch (error) {
      if (error.status === 401) {
        inFlight = false;
        askForToken('The API refused this token (' + error.message + '). Enter it again.');
        return;
      }
      setStatus('Could not refresh: ' + error.message, true);
    }
    inFlight = false;
    if (token === null) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, rerun ? 0 : REFRESH_MS);
    rerun = false;
  }

  function setStatus(text, isError) {
    $('refresh-status').textContent = text;
    $('refresh-status').classList.toggle('error', isError);
  }

  // -- the config form ---------------------------------------------------------------------

  function configControls() {
    return Array.from($('config-form').querySelectorAll('[data-kind]'));
  }

  function showConfig(config) {
    storedConfig = config;
    if (configDirty) return;
    for (const control of configControls()) {
      const value = config[control.name];
      if (control.dataset.kind === 'boolean') control.checked = value === true;
      else control.value = value === undefined || value === null ? '' : String(value);
    }
  }

  // What a control holds, typed for the API. Text that is no number goes as text, so that the
  // API's 400 names the field and the problem.
  function controlValue(control) {
    const kind = control.dataset.kind;
    if (kind === 'boolean') return control.checked;
    const numeric = kind === 'number' || kind === 'integer';
    if (numeric && NUMBER_TEXT.test(control.value)) return Number(control.value);
    return control.value;
  }

  function setConfigDirty(dirty) {
    configDirty = dirty;
    $('config-form').classList.toggle('dirty', dirty);
  }

  function sayAboutConfig(text, kind) {
    const message = $('config-message');
    message.textContent = text;
    message.classList.toggle('error', kind === 'error');
    message.classList.toggle('ok', kind === 'ok');
  }

  async function onConfigSubmit(event) {
    event.preventDefault();
    if (storedConfig === null) return;
    const changes = {};
    for (const control of configControls()) {
      const value = controlValue(control);
      if (value !== storedConfig[control.name]) changes[control.name] = value;
    }
    const names = Object.keys(changes);
    if (names.length === 0) {
      setConfigDirty(false);
      sayAboutConfig('Nothing to save: the form matches the stored config.', 'ok');
      return;
    }
    $('config-save').disabled = true;
    sayAboutConfig('Saving…', null);
    try {
      const config = await callApi('api/scaler/config', changes); // only the changed fields
      setConfigDirty(false);
      showConfig(config);
      sayAboutConfig('Saved ' + names.join(', ') + '. It takes effect at the next tick.', 'ok');
      refreshSoon();
    } catch (error) {
      if (error.status === 401) askForToken('The API refused this token (' + error.message + ').');
      else sayAboutConfig('Not saved (' + error.status + '): ' + error.message, 'error');
    } finally {
      $('config-save').disabled = false;
    }
  }

  function onConfigRevert() {
    setConfigDirty(false);
    if (storedConfig !== null) showConfig(storedConfig);
    sayAboutConfig('', null);
  }

  // -- the pool ----------------------------------------------------------------------------

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const td = cell(tbody.insertRow(), text, 'empty');
    td.colSpan = columns;
  }

  function showPool(cacheList, config) {
    const tbody = $('pool-table').tBodies[0];
    tbody.replaceChildren();
    for (const node of cacheList.nodes) {
      const row = tbody.insertRow();
      row.dataset.nodeId = node.id;
      cell(row, String(node.index));
      cell(row, node.id);
      cell(row, node.ip || '');
      cell(row, node.state, 'state-' + node.state);
    }
    if (cacheList.nodes.length === 0) emptyRow(tbody, 4, 'The pool has no nodes.');
    const draining = cacheList.nodes.filter((node) => node.state === 'draining').length;
    $('pool-summary').textContent =
      'Pool size ' + cacheList.cache_pool_ids.length + ' (launching and in service), ' +
      draining + ' draining; bounds ' + config.min_pool_size + '..' + config.max_pool_size +
      '; auto mode ' + (config.auto_mode ? 'on' : 'off') + '; policy ' + config.policy + '.';
  }

  // -- the charts --------------------------------------------------------------------------

  function utc(ms, withDate) {
    const text = new Date(ms).toISOString(); // 2026-11-26T12:03:00.000Z
    return withDate ? text.slice(0, 16).replace('T', ' ') : text.slice(11, 16);
  }

  function percent(rate) {
    return rate === null || rate === undefined ? 'no data' : (rate * 100).toFixed(1) + ' %';
  }

  function makeChart(canvas, yScale) {
    return new Chart(canvas, {
      type: 'line',
      data: { datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        interaction: { mode: 'nearest', axis: 'x', intersect: false },
        scales: {
          x: { type: 'linear', ticks: { maxRotation: 0, callback: (value) => utc(value, false) } },
          y: yScale,
        },
        plugins: {
          legend: { position: 'bottom', labels: { boxHeight: 2 } },
          tooltip: {
            callbacks: { title: (items) => (items.length ? `${utc(items[0].parsed.x, true)} UTC` : '') },
          },
        },
      },
    });
  }

  function series(label, color, points, extra) {
    const style = { borderColor: color, backgroundColor: color, borderWidth: 2, pointRadius: 2 };
    return Object.assign({ label, data: points }, style, extra);
  }

  // A horizontal line across [from, to]: a threshold or a bound.
  function level(label, color, value, from, to) {
    const points = [{ x: from, y: value }, { x: to, y: value }];
    return series(label, color, points, { borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0 });
  }

  function showCharts(ticks, config, minutes) {
    if (missRateChart === null) {
      const percentTicks = { callback: (value) => Math.round(value * 100) + ' %' };
      missRateChart = makeChart($('miss-rate-chart'), { min: 0, max: 1, ticks: percentTicks });
      poolSizeChart = makeChart($('pool-size-chart'), { min: 0, max: MAX_NODES, ticks: { stepSize: 1 } });
    }
    const times = ticks.map((tick) => Date.parse(tick.time));
    const from = times.length ? times[0] : Date.now();
    const to = Math.max(times.length ? times[times.length - 1] : from, from + MINUTE_MS);
    const step = AXIS_STEPS.find((minutes) => (to - from) / (minutes * MINUTE_MS) <= 8) || AXIS_STEPS.at(-1);
    const missRates = ticks.map((tick, i) => ({ x: times[i], y: tick.miss_rate })); // null: a gap
    const sizes = ticks.map((tick, i) => ({ x: times[i], y: tick.target_size }));

    missRateChart.data.datasets = [
      series('miss rate', '#1f5fbf', missRates),
      level('max threshold', '#c62828', config.max_miss_rate_threshold, from, to),
      level('min threshold', '#2e7d32', config.min_miss_rate_threshold, from, to),
    ];
    poolSizeChart.data.datasets = [
      // 'before': a tick's size holds from that tick until the next one.
      series('pool size after the tick', '#6a3fb5', sizes, { stepped: 'before' }),
      level('max_pool_size', '#c62828', config.max_pool_size, from, to),
      level('min_pool_size', '#2e7d32', config.min_pool_size, from, to),
    ];
    for (const chart of [missRateChart, poolSizeChart]) {
      Object.assign(chart.options.scales.x, { min: from, max: to });
      chart.options.scales.x.ticks.stepSize = step * MINUTE_MS;
      chart.update('none');
      chart.canvas.dataset.ticks = String(ticks.length);
    }

    if (ticks.length === 0) {
      const none = 'No ticks in the last ' + minutes + ' minutes.';
      $('miss-rate-summary').textContent = none;
      $('pool-size-summary').textContent = none;
      return;
    }
    const last = ticks[ticks.length - 1];
    const at = utc(times[times.length - 1], false);
    const low = percent(config.min_miss_rate_threshold);
    const high = percent(config.max_miss_rate_threshold);
    $('miss-rate-summary').textContent =
      `${ticks.length} ticks; latest ${percent(last.miss_rate)} at ${at} UTC; thresholds ${low} to ${high}.`;
    $('pool-size-summary').textContent =
      `${ticks.length} ticks; latest ${last.previous_size} → ${last.target_size} at ${at} UTC.`;
  }

  // -- the decisions -----------------------------------------------------------------------

  function showDecisions(ticks) {
    const tbody = $('decisions').tBodies[0];
    tbody.replaceChildren();
    for (const tick of ticks.slice(-DECISIONS_SHOWN).reverse()) {
      const row = tbody.insertRow();
      row.className = 'action-' + tick.action;
      cell(row, utc(Date.parse(tick.time), true));
      cell(row, tick.action);
      cell(row, percent(tick.miss_rate));
      cell(row, tick.previous_size + ' → ' + tick.target_size);
      cell(row, tick.reason);
    }
    if (ticks.length === 0) emptyRow(tbody, 5, 'No ticks in this window yet.');
  }

  // -- wiring ------------------------------------------------------------------------------

  function main() {
    $('token-form').addEventListener('submit', onTokenSubmit);
    $('forget-token').addEventListener('click', () => askForToken('Token forgotten.'));
    $('config-form').addEventListener('submit', onConfigSubmit);
    $('config-form').addEventListener('input', () => setConfigDirty(true));
    $('config-revert').addEventListener('click', onConfigRevert);
    $('history-minutes').addEventListener('change', refreshSoon);
    token = readTokenCookie();
    if (token === null) askForToken('');
    else start();
  }

  main();
})();
