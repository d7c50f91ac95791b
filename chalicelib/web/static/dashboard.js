/* The dashboard at GET /: config, pool, miss rate and pool size over time, recent decisions.
 *
 * - Every URL is relative, never with a leading slash: API Gateway adds a stage prefix.
 * - The API token is kept in the scaler_token cookie for this browser session (so the HTML
 *   pages open too); this script sends it as a bearer header, which a change requires.
 * - Charts use Chart.js 4.5.1, served by the app (assets/chart-4.5.1.umd.min.js).
 * - It refreshes every 5 s while the tab is visible, every 30 s while it is hidden, and not at
 *   all while paused (the pause control: WCAG 2.2.2, content that updates by itself).
 */
(function () {
  'use strict';

  const REFRESH_MS = 5000; // while the tab is visible
  const HIDDEN_REFRESH_MS = 30000; // while it is hidden: nobody is looking, the API is spared
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
  let paused = false; // the pause control: no refresh until resumed
  // Refreshes started and finished, as data-refreshes and data-refreshed on #refresh-status.
  let refreshes = 0;
  let lastUpdated = null; // when the last refresh succeeded, as text
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
    lastUpdated = null;
    forgetToken();
    $('dashboard').hidden = true;
    $('forget-token').hidden = true;
    $('refresh-pause').hidden = true;
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
    $('refresh-pause').hidden = false;
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

  // One refresh now (a person asked for it, or the tab came back into view), paused or not.
  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 0);
  }

  function hidden() {
    return document.visibilityState === 'hidden';
  }

  // The next refresh, as the tab's visibility and the pause control say.
  function scheduleNext() {
    clearTimeout(timer);
    timer = null;
    if (token !== null && !paused) timer = setTimeout(refresh, hidden() ? HIDDEN_REFRESH_MS : REFRESH_MS);
    showSchedule();
  }

  function showSchedule() {
    const status = $('refresh-status');
    status.dataset.interval = paused ? 'paused' : String(hidden() ? HIDDEN_REFRESH_MS : REFRESH_MS);
    if (status.classList.contains('error') || lastUpdated === null) return;
    let next = `refreshes every ${REFRESH_MS / 1000} s.`;
    if (paused) next = 'updates paused.';
    else if (hidden()) next = `refreshes every ${HIDDEN_REFRESH_MS / 1000} s while this tab is hidden.`;
    status.textContent = `Updated ${lastUpdated}; ${next}`;
  }

  function onVisibilityChange() {
    if (token === null || paused) return showSchedule();
    // Back in view: what is shown may be 30 s old, so refresh at once.
    if (hidden()) scheduleNext();
    else refreshSoon();
  }

  function onPauseClick() {
    paused = !paused;
    const button = $('refresh-pause');
    button.setAttribute('aria-pressed', String(paused));
    button.textContent = paused ? 'Resume updates' : 'Pause updates';
    if (paused) scheduleNext();
    else refreshSoon();
  }

  async function refresh() {
    if (inFlight) {
      rerun = true;
      return;
    }
    inFlight = true;
    refreshes += 1;
    $('refresh-status').dataset.refreshes = String(refreshes);
    const minutes = $('history-minutes').value;
    try {
      const [config, cacheList, history] = await Promise.all([
        callApi('api/scaler/config'),
        callApi('api/scaler/cache_list'),
        callApi('api/scaler/history?minutes=' + encodeURIComponent(minutes)),
      ]);
      const ticks = history.records.filter((record) => record.kind === 'tick');
      showConfig(config);
      showPool(cacheList, config, ticks);
      showCharts(ticks, config, minutes);
      showDecisions(ticks);
      lastUpdated = new Date().toLocaleTimeString();
      setStatus('', false);
    } catch (error) {
      if (error.status === 401) {
        inFlight = false;
        askForToken('The API refused this token (' + error.message + '). Enter it again.');
        return;
      }
      setStatus('Could not refresh: ' + error.message, true);
    }
    inFlight = false;
    $('refresh-status').dataset.refreshed = String(refreshes);
    if (token === null) return;
    if (rerun) refreshSoon();
    else scheduleNext();
    rerun = false;
  }

  function setStatus(text, isError) {
    $('refresh-status').textContent = text;
    $('refresh-status').classList.toggle('error', isError);
    if (!isError) showSchedule();
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
      else if (control.dataset.kind === 'floors') showFloors(control, value || []);
      else control.value = value === undefined || value === null ? '' : String(value);
    }
  }

  // Text that is a number goes as a number; anything else as typed, for the API's 400 to name.
  function typed(text) {
    return NUMBER_TEXT.test(text) ? Number(text) : text;
  }

  // What a control holds, typed for the API. Text that is no number goes as text, so that the
  // API's 400 names the field and the problem.
  function controlValue(control) {
    const kind = control.dataset.kind;
    if (kind === 'boolean') return control.checked;
    if (kind === 'floors') return floorsValue(control);
    if ('nullable' in control.dataset && control.value === '') return null;
    const numeric = kind === 'number' || kind === 'integer';
    if (numeric) return typed(control.value);
    return control.value;
  }

  function sameValue(a, b) {
    return typeof a === 'object' || typeof b === 'object' ? JSON.stringify(a) === JSON.stringify(b) : a === b;
  }

  // -- the scheduled floors' editor: a row per window ---------------------------------------

  function addFloorRow(editor, floor) {
    const row = $('floor-row').content.firstElementChild.cloneNode(true);
    const number = editor.tBodies[0].rows.length + 1;
    row.querySelector('.floor-start').value = floor ? floor.start : '';
    row.querySelector('.floor-duration').value = floor ? String(floor.duration_minutes) : '';
    row.querySelector('.floor-size').value = floor ? String(floor.min_pool_size) : '';
    for (const box of row.querySelectorAll('.floor-day')) {
      box.checked = Boolean(floor && floor.days && floor.days.includes(box.value));
    }
    for (const input of row.querySelectorAll('input[aria-label]')) {
      input.setAttribute('aria-label', `window ${number}: ${input.getAttribute('aria-label')}`);
    }
    row.querySelector('.floor-remove').setAttribute('aria-label', `Remove window ${number}`);
    editor.tBodies[0].appendChild(row);
    return row;
  }

  function showFloors(fieldset, floors) {
    const editor = fieldset.querySelector('table');
    editor.tBodies[0].replaceChildren();
    for (const floor of floors) addFloorRow(editor, floor);
  }

  function floorsValue(fieldset) {
    return Array.from(fieldset.querySelector('table').tBodies[0].rows, (row) => {
      const floor = {
        start: row.querySelector('.floor-start').value.trim(),
        duration_minutes: typed(row.querySelector('.floor-duration').value),
        min_pool_size: typed(row.querySelector('.floor-size').value),
      };
      const days = Array.from(row.querySelectorAll('.floor-day:checked'), (box) => box.value);
      if (days.length) floor.days = days;
      return floor;
    });
  }

  function onFloorAdd() {
    const row = addFloorRow($('config-scheduled_floors').querySelector('table'), null);
    setConfigDirty(true);
    row.querySelector('.floor-start').focus();
  }

  function onFloorRemove(event) {
    const button = event.target.closest('.floor-remove');
    if (!button) return;
    button.closest('tr').remove();
    setConfigDirty(true);
    $('floor-add').focus();
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
      if (!sameValue(value, storedConfig[control.name])) changes[control.name] = value;
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

  function minutesText(ms) {
    const minutes = Math.round(ms / MINUTE_MS);
    return minutes < 1 ? 'under a minute' : minutes === 1 ? '1 min' : minutes + ' min';
  }

  // How long a node has been in its state, and when a tick ends it if it stays there, on the
  // pool's clock (the last tick's T: ticks may run on a simulated day far from this browser's).
  function nodeTiming(node, clock) {
    if (!node.since) return ['not stamped yet (the next tick starts its clock)', ''];
    const age = minutesText(clock - Date.parse(node.since));
    if (node.deadline) {
      const left = Date.parse(node.deadline) - clock;
      const ending = node.state === 'launching' ? 'ended unless in service by' : 'ended unless confirmed by';
      const when = left > 0 ? `, in ${minutesText(left)}` : ', at the next tick';
      return [age, `${ending} ${utc(Date.parse(node.deadline), false)} UTC${when}`];
    }
    if (node.state === 'draining') return [age, 'waits for its decrease to be delivered'];
    return [age, ''];
  }

  function showPool(cacheList, config, ticks) {
    const tbody = $('pool-table').tBodies[0];
    tbody.replaceChildren();
    const last = ticks.length ? ticks[ticks.length - 1] : null;
    const clock = last ? Date.parse(last.time) : Date.now();
    for (const node of cacheList.nodes) {
      const row = tbody.insertRow();
      row.dataset.nodeId = node.id;
      cell(row, String(node.index));
      cell(row, node.id);
      cell(row, node.ip || '');
      cell(row, node.state, 'state-' + node.state);
      const [age, deadline] = nodeTiming(node, clock);
      cell(row, age, 'age');
      cell(row, deadline, 'deadline');
    }
    if (cacheList.nodes.length === 0) emptyRow(tbody, 6, 'The pool has no nodes.');
    const draining = cacheList.nodes.filter((node) => node.state === 'draining').length;
    const shadow = config.shadow_policy || (config.auto_mode ? null : config.policy);
    const floor = last && last.scheduled_floor;
    const until = floor ? utc(Date.parse(floor.ends), true) : '';
    $('pool-summary').textContent =
      'Pool size ' + cacheList.cache_pool_ids.length + ' (launching and in service), ' +
      draining + ' draining; bounds ' + config.min_pool_size + '..' + config.max_pool_size +
      (floor ? ` (scheduled floor ${floor.min_pool_size} until ${until} UTC)` : '') +
      '; ' + (config.scheduled_floors || []).length + ' scheduled floor window(s)' +
      '; auto mode ' + (config.auto_mode ? 'on' : 'off') + '; policy ' + config.policy +
      (shadow ? '; shadow ' + shadow : '') + '.';
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
    // The minimum each tick decided with: a scheduled floor raises it while it is open.
    const minimums = ticks.map((tick, i) => ({
      x: times[i],
      y: tick.scheduled_floor ? tick.scheduled_floor.min_pool_size : config.min_pool_size,
    }));
    const shadows = ticks.map((tick, i) => ({
      x: times[i],
      y: tick.shadow ? tick.shadow.target_size : null, // null: no shadow, a gap
    }));
    const shadowNames = [...new Set(ticks.filter((tick) => tick.shadow).map((tick) => tick.shadow.policy))];

    missRateChart.data.datasets = [
      series('miss rate', '#1f5fbf', missRates),
      level('max threshold', '#c62828', config.max_miss_rate_threshold, from, to),
      level('min threshold', '#2e7d32', config.min_miss_rate_threshold, from, to),
    ];
    poolSizeChart.data.datasets = [
      // 'before': a tick's size holds from that tick until the next one.
      series('pool size after the tick', '#6a3fb5', sizes, { stepped: 'before' }),
      level('max_pool_size', '#c62828', config.max_pool_size, from, to),
      ticks.length
        ? series('min_pool_size (scheduled floors raise it)', '#2e7d32', minimums, {
            stepped: 'before',
            borderDash: [6, 4],
            borderWidth: 1.5,
            pointRadius: 0,
          })
        : level('min_pool_size', '#2e7d32', config.min_pool_size, from, to),
    ];
    if (shadowNames.length) {
      poolSizeChart.data.datasets.push(
        series(`shadow (${shadowNames.join(', ')}): would have gone to`, '#ef6c00', shadows, {
          stepped: 'before',
          borderDash: [2, 3],
          pointRadius: 1,
        }),
      );
    }
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
      const shadow = cell(row, '', 'shadow');
      if (tick.shadow) {
        const what = document.createElement('strong');
        what.textContent = `${tick.shadow.policy}: ${tick.shadow.action} → ${tick.shadow.target_size}`;
        const why = document.createElement('small');
        why.textContent = tick.shadow.reason;
        shadow.append(what, ' ', why);
        if (tick.shadow.target_size !== tick.target_size) shadow.classList.add('differs');
      }
    }
    if (ticks.length === 0) emptyRow(tbody, 6, 'No ticks in this window yet.');
  }

  // -- wiring ------------------------------------------------------------------------------

  function main() {
    $('token-form').addEventListener('submit', onTokenSubmit);
    $('forget-token').addEventListener('click', () => askForToken('Token forgotten.'));
    $('config-form').addEventListener('submit', onConfigSubmit);
    $('config-form').addEventListener('input', () => setConfigDirty(true));
    $('config-revert').addEventListener('click', onConfigRevert);
    $('floor-add').addEventListener('click', onFloorAdd);
    $('config-scheduled_floors').addEventListener('click', onFloorRemove);
    $('history-minutes').addEventListener('change', refreshSoon);
    $('refresh-pause').addEventListener('click', onPauseClick);
    document.addEventListener('visibilitychange', onVisibilityChange);
    token = readTokenCookie();
    if (token === null) askForToken('');
    else start();
  }

  main();
})();
