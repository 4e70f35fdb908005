// Live updates of the ipng-stats status page: polls the exporter's JSON
// document and re-renders the health header and the table; pauses while the
// tab is hidden. The page works without this script (server-rendered).
(function () {
  'use strict';
  var root = document.getElementById('status');
  if (!root || !window.fetch) { return; }
  var url = root.getAttribute('data-json');
  var interval = parseInt(root.getAttribute('data-interval'), 10) || 2000;
  var input = document.getElementById('q');
  var state = document.getElementById('state');
  var updated = document.getElementById('updated');
  var tbody = document.querySelector('#traffic tbody');
  var shown = document.getElementById('shown');
  var health = document.getElementById('health');
  var bindings = document.querySelector('#bindings tbody');
  var classes = ['2xx', '3xx', '4xx', '5xx', 'other'];
  var timer = null, inflight = false, last = null, prevMisses = null, prevFallbacks = null;

  // Formatters: the same rules as status/format.go.
  function fixed(v, d) { return v.toFixed(d); }
  function rate(v) { return v < 10 ? fixed(v, 2) : v < 100 ? fixed(v, 1) : fixed(v, 0); }
  function sig3(v) { return v >= 100 ? fixed(v, 0) : v >= 10 ? fixed(v, 1) : fixed(v, 2); }
  function share(v, seen) { return seen ? fixed(100 * v, 1) + '%' : '–'; }
  function secs(v) {
    if (v === undefined || v === null) { return '–'; }
    if (v < 1e-3) { return sig3(v * 1e6) + ' µs'; }
    if (v < 1) { return sig3(v * 1e3) + ' ms'; }
    return sig3(v) + ' s';
  }
  function bytes(v) {
    var units = ['B', 'kB', 'MB', 'GB', 'TB'], i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return i === 0 ? fixed(Math.round(v), 0) + ' B' : sig3(v) + ' ' + units[i];
  }
  function uptime(sec) {
    var s = Math.floor(sec), d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) { return d + 'd ' + h + 'h'; }
    if (h > 0) { return h + 'h ' + m + 'm'; }
    if (m > 0) { return m + 'm ' + (s % 60) + 's'; }
    return s + 's';
  }
  function sum(obj) { var n = 0; for (var k in obj) { n += obj[k]; } return n; }
  function matches(tag, vip, f) {
    f = f.toLowerCase();
    return f === '' || tag.toLowerCase().indexOf(f) >= 0 || vip.toLowerCase().indexOf(f) >= 0;
  }
  function el(name, text, cls) {
    var e = document.createElement(name);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }

  function renderHealth(doc) {
    var m = doc.meta, h = m.health, facts = [['version', m.build.version], ['uptime', uptime(m.uptime_seconds)]];
    if (h) {
      facts.push(['component', h.component]);
      facts.push(['BPF', h.bpf ? 'attached' : 'not attached', !h.bpf && h.attribution_mode !== 'fallback']);
      var methods = [];
      if (h.bpf) { methods.push('bpf'); }
      if (h.pktinfo) { methods.push('pktinfo'); }
      facts.push(['attribution', h.attribution_mode + ' (' + (methods.join('+') || 'none') + ')']);
      if (h.nginx_backlog_bytes !== undefined) {
        facts.push(['nginx backlog', bytes(h.nginx_backlog_bytes), h.nginx_backlog_bytes > 1048576]);
      }
    }
    var misses = sum(m.ifindex_misses), fallbacks = sum(m.attribution_fallbacks);
    var rising = function (now, prev) { return prev !== null && now > prev; };
    facts.push(['ifindex misses', misses + (rising(misses, prevMisses) ? ' (rising)' : ''), rising(misses, prevMisses)]);
    facts.push(['fallbacks', fallbacks + (rising(fallbacks, prevFallbacks) ? ' (rising)' : ''), rising(fallbacks, prevFallbacks)]);
    prevMisses = misses; prevFallbacks = fallbacks;
    facts.push(['series', m.series + ' / ' + m.series_limit,
      (m.series_limit > 0 && m.series * 10 >= m.series_limit * 9) || m.series_overflow > 0]);
    var frag = document.createDocumentFragment();
    facts.forEach(function (f) {
      var d = el('div', undefined, f[2] ? 'warn' : '');
      d.appendChild(el('dt', f[0]));
      d.appendChild(el('dd', f[1]));
      frag.appendChild(d);
    });
    health.replaceChildren(frag);
    if (h) {
      var bf = document.createDocumentFragment();
      h.bindings.forEach(function (b) {
        var tr = el('tr');
        tr.appendChild(el('th', b.device)).setAttribute('scope', 'row');
        tr.appendChild(el('td', b.family));
        tr.appendChild(el('td', b.source_tag));
        tr.appendChild(el('td', b.present ? String(b.ifindex) : 'absent', 'num'));
        bf.appendChild(tr);
      });
      if (h.bindings.length > 0) { bindings.replaceChildren(bf); }
    }
  }

  function renderTable(doc) {
    var f = input.value.trim(), frag = document.createDocumentFragment(), n = 0;
    doc.series.forEach(function (s) {
      if (!matches(s.source_tag, s.vip, f)) { return; }
      n++;
      var sm = s.summary, tr = el('tr'), shares = {};
      for (var c in sm.share) {
        var k = classes.indexOf(c) >= 0 ? c : 'other';
        shares[k] = (shares[k] || 0) + sm.share[c];
      }
      tr.setAttribute('data-tag', s.source_tag);
      tr.setAttribute('data-vip', s.vip);
      tr.appendChild(el('th', s.source_tag, 'tag')).setAttribute('scope', 'row');
      tr.appendChild(el('td', s.vip, 'vip'));
      tr.appendChild(el('td', String(sm.requests), 'num req'));
      tr.appendChild(el('td', rate(s.rate.m1), 'num m1'));
      tr.appendChild(el('td', rate(s.rate.m5), 'num m5'));
      tr.appendChild(el('td', rate(s.rate.m15), 'num m15'));
      classes.forEach(function (c) { tr.appendChild(el('td', share(shares[c], c in shares), 'num share')); });
      tr.appendChild(el('td', secs(sm.latency_p50_seconds), 'num p50'));
      tr.appendChild(el('td', secs(sm.latency_p99_seconds), 'num p99'));
      tr.appendChild(el('td', bytes(sm.request_bytes_per_second) + '/s', 'num in'));
      tr.appendChild(el('td', bytes(sm.response_bytes_per_second) + '/s', 'num out'));
      tr.appendChild(el('td', s.connections ? String(s.connections.active) : '–', 'num conns'));
      frag.appendChild(tr);
    });
    if (n === 0) {
      var tr = el('tr', undefined, 'empty'), td = el('td', f ? 'No series match “' + f + '”.' : 'No series yet: no request has been counted.');
      td.setAttribute('colspan', '16');
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    shown.textContent = '(' + n + ' of ' + doc.series.length + ' series)';
  }

  // setState changes the live region only when the state changes, so that
  // a screen reader announces "live", "lost" or "paused", not every poll.
  function setState(text, cls) {
    if (state.textContent !== text) { state.textContent = text; }
    state.className = cls || '';
  }

  function render(doc) {
    last = doc;
    renderHealth(doc);
    renderTable(doc);
    setState('Live ·');
    updated.textContent = 'updated ' + doc.meta.generated_at.substring(11, 19) + ' UTC';
  }

  function lost(err) {
    setState('Connection to the agent lost (' + err.message + '); retrying…', 'lost');
  }

  function schedule() {
    clearTimeout(timer);
    timer = document.hidden ? null : setTimeout(poll, interval);
  }

  function poll() {
    if (inflight || document.hidden) { return; }
    inflight = true;
    fetch(url, { cache: 'no-store', credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(render, lost)
      .then(function () { inflight = false; schedule(); });
  }

  function applyFilter() {
    var u = new URL(window.location.href);
    if (input.value.trim()) { u.searchParams.set('q', input.value.trim()); } else { u.searchParams.delete('q'); }
    window.history.replaceState(null, '', u);
    if (last) { renderTable(last); }
  }

  document.getElementById('filter').addEventListener('submit', function (e) { e.preventDefault(); applyFilter(); });
  input.addEventListener('input', applyFilter);
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
      setState('Paused while the tab is hidden ·');
    } else {
      poll();
    }
  });
  poll();
}());
