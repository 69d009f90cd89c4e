// ClinAuth officer console. Plain script, no dependencies, no inline
// handlers: the page is served with Content-Security-Policy: default-src 'self'.
'use strict';

(function () {
  var TICKET_KEY = 'clinauth.officer.ticket';
  var VIEWS = ['users', 'workstations', 'devices', 'policies', 'reviews', 'audit'];
  var NOTE_MAX = 2000;
  var USER_STATES = ['active', 'suspended', 'disabled'];
  var DEVICE_STATES = ['active', 'suspended', 'decommissioned'];
  var AUDIT_PAGE = 50;

  var current = null;
  var auditFirst = null; // seq of the oldest entry shown

  function $(id) { return document.getElementById(id); }

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') { e.textContent = attrs[k]; }
        else if (k === 'className') { e.className = attrs[k]; }
        else { e.setAttribute(k, attrs[k]); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) { continue; }
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  // English text followed by its Japanese counterpart.
  function bi(en, ja) {
    var f = document.createDocumentFragment();
    f.appendChild(document.createTextNode(en + ' '));
    f.appendChild(el('span', { lang: 'ja', text: ja }));
    return f;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function time(ms) {
    if (ms === null || ms === undefined) { return '—'; }
    var d = new Date(ms);
    if (isNaN(d.getTime())) { return String(ms); }
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  // ---- ticket ----------------------------------------------------------

  function ticket() {
    try { return sessionStorage.getItem(TICKET_KEY) || ''; } catch (e) { return ''; }
  }

  function setTicket(t) {
    try {
      if (t) { sessionStorage.setItem(TICKET_KEY, t); } else { sessionStorage.removeItem(TICKET_KEY); }
    } catch (e) { /* storage disabled: the ticket lives until reload */ }
    showTicketState();
  }

  function showTicketState() {
    var s = $('ticket-state');
    clear(s);
    s.appendChild(ticket() ? bi('A ticket is in use.', 'チケット使用中。') : bi('No ticket.', 'チケットなし。'));
    $('no-ticket').hidden = !!ticket();
  }

  // Reads `#ticket=…&view=…` once, keeps the ticket in sessionStorage and
  // removes it from the address (and so from history).
  function readFragment() {
    var hash = location.hash.replace(/^#/, '');
    var params = new URLSearchParams(hash);
    var t = params.get('ticket');
    var view = params.get('view');
    if (VIEWS.indexOf(view) < 0) { view = null; }
    if (t) {
      setTicket(t.trim());
      history.replaceState(null, '', location.pathname + location.search + (view ? '#view=' + view : ''));
    }
    return view;
  }

  // ---- messages --------------------------------------------------------

  function showError(node) {
    var e = $('error');
    clear(e);
    if (node) { e.appendChild(node); e.hidden = false; } else { e.hidden = true; }
  }

  function status(node) {
    var s = $('status');
    clear(s);
    if (node) { s.appendChild(node); }
  }

  function apiErrorNode(err) {
    var f = document.createDocumentFragment();
    f.appendChild(el('strong', null, bi('Error', 'エラー')));
    f.appendChild(document.createTextNode(': '));
    f.appendChild(el('span', { className: 'message', text: err.message }));
    if (err.code || err.status) {
      f.appendChild(el('span', { className: 'code', text: ' (' + [err.status, err.code].filter(Boolean).join(' ') + ')' }));
    }
    return f;
  }

  // ---- API -------------------------------------------------------------

  function ApiError(status, code, message, body) {
    this.status = status; this.code = code; this.message = message; this.body = body;
  }

  function api(method, path, body) {
    var t = ticket();
    if (!t) {
      return Promise.reject(new ApiError(0, 'no_ticket', 'Paste an officer ticket first / チケットを貼り付けてください', null));
    }
    var init = { method: method, headers: { 'Authorization': 'Bearer ' + t }, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        if (text) { try { data = JSON.parse(text); } catch (e) { data = null; } }
        if (r.ok) { return { status: r.status, data: data }; }
        var message = data && typeof data.message === 'string' ? data.message : (r.statusText || 'request failed');
        throw new ApiError(r.status, data && data.error, message, data);
      });
    }, function (e) {
      throw new ApiError(0, 'network', 'The server could not be reached / サーバーに接続できません: ' + e.message, null);
    });
  }

  function failed(err) {
    if (!(err instanceof ApiError)) { err = new ApiError(0, 'script', String(err), null); }
    status(null);
    showError(apiErrorNode(err));
  }

  // ---- shared widgets -------------------------------------------------

  // A state selector and an Apply button posting {state} to `path`.
  function stateControl(label, id, states, currentState, path, after) {
    var sel = el('select', { 'aria-label': 'New state of ' + label + ' ' + id + ' / 新しい状態' });
    states.forEach(function (s) {
      var o = el('option', { value: s, text: s });
      if (s === currentState) { o.selected = true; }
      sel.appendChild(o);
    });
    var btn = el('button', { type: 'button' }, bi('Set state', '状態変更'));
    btn.addEventListener('click', function () {
      var state = sel.value;
      if (state === currentState) { return; }
      btn.disabled = true;
      api('POST', path, { state: state }).then(function () {
        status(bi(label.charAt(0).toUpperCase() + label.slice(1) + ' ' + id + ' is now ' + state + '.', id + ' の状態を ' + state + ' に変更しました。'));
        after();
      }, failed).then(function () { btn.disabled = false; });
    });
    return el('span', { className: 'control' }, sel, btn);
  }

  function fill(tableId, rows, empty, columns) {
    var tbody = $(tableId).tBodies[0];
    clear(tbody);
    if (!rows.length) {
      var td = el('td', { colspan: String(columns) }, empty);
      tbody.appendChild(el('tr', null, td));
      return;
    }
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function stateCell(state) { return el('td', null, el('span', { className: 'state state-' + state, text: state })); }

  // ---- views -----------------------------------------------------------

  function loadUsers() {
    return api('GET', '/v1/users').then(function (r) {
      var users = (r.data && r.data.users) || [];
      fill('users-table', users.map(function (u) {
        var path = '/v1/users/' + encodeURIComponent(u.id);
        var unlock = el('button', { type: 'button' }, bi('Unlock', 'ロック解除'));
        unlock.addEventListener('click', function () {
          unlock.disabled = true;
          api('POST', path + '/unlock').then(function () {
            status(bi('User ' + u.id + ' unlocked.', u.id + ' のロックを解除しました。'));
          }, failed).then(function () { unlock.disabled = false; });
        });
        return el('tr', { 'data-user': u.id },
          el('th', { scope: 'row', text: u.id }),
          el('td', { text: u.display_name }),
          el('td', { text: (u.roles || []).join(', ') }),
          stateCell(u.state),
          el('td', { className: 'time', text: time(u.updated_at) }),
          el('td', null, stateControl('user', u.id, USER_STATES, u.state, path + '/state', loadUsers), unlock));
      }), bi('No users.', '利用者はいません。'), 6);
    });
  }

  function loadWorkstations() {
    return api('GET', '/v1/workstations').then(function (r) {
      var list = (r.data && r.data.workstations) || [];
      fill('workstations-table', list.map(function (w) {
        return el('tr', { 'data-workstation': w.id },
          el('th', { scope: 'row', text: w.id }),
          el('td', { text: w.group }),
          el('td', { text: w.location }),
          stateCell(w.state),
          el('td', { className: 'time', text: time(w.last_contact) }),
          el('td', null, stateControl('workstation', w.id, DEVICE_STATES, w.state,
            '/v1/workstations/' + encodeURIComponent(w.id) + '/state', loadWorkstations)));
      }), bi('No workstations.', '端末は登録されていません。'), 6);
    });
  }

  function loadDevices() {
    return api('GET', '/v1/devices').then(function (r) {
      var list = (r.data && r.data.devices) || [];
      fill('devices-table', list.map(function (d) {
        return el('tr', { 'data-device': d.id },
          el('th', { scope: 'row', text: d.id }),
          el('td', { text: d.kind }),
          el('td', { text: d.owner || '—' }),
          el('td', { text: d.description }),
          stateCell(d.state),
          el('td', { className: 'time', text: time(d.last_contact) }),
          el('td', null, stateControl('device', d.id, DEVICE_STATES, d.state,
            '/v1/devices/' + encodeURIComponent(d.id) + '/state', loadDevices)));
      }), bi('No devices.', 'デバイスは登録されていません。'), 7);
    });
  }

  function loadPolicies() {
    return api('GET', '/v1/policies').then(function (r) {
      var list = (r.data && r.data.policies) || [];
      fill('policies-table', list.map(function (p) {
        return el('tr', { 'data-policy-version': String(p.version), className: p.active ? 'active' : '' },
          el('th', { scope: 'row', text: String(p.version) }),
          el('td', null, el('code', { text: p.digest })),
          el('td', { className: 'time', text: time(p.created_at) }),
          el('td', { text: p.created_by }),
          el('td', null, p.active ? bi('active', '有効') : document.createTextNode('—')));
      }), bi('No policy has been activated.', '有効化されたポリシーはありません。'), 5);
    });
  }

  // A pending break-glass item: outcome, note and a Close button.
  function reviewControl(r) {
    var outcome = el('select', { 'aria-label': 'Outcome for ' + r.id + ' / 確認結果' },
      el('option', { value: 'justified', text: 'justified / 正当' }),
      el('option', { value: 'unjustified', text: 'unjustified / 不当' }));
    var note = el('textarea', { rows: '2', maxlength: String(NOTE_MAX), required: 'required',
      'aria-label': 'Note for ' + r.id + ' / メモ', placeholder: 'Note / メモ', className: 'note' });
    var btn = el('button', { type: 'button', className: 'close-review' }, bi('Close', '完了'));
    btn.addEventListener('click', function () {
      var text = note.value.trim();
      if (!text) {
        showError(bi('Write a note first.', 'メモを記入してください。'));
        note.focus();
        return;
      }
      showError(null);
      btn.disabled = true;
      api('POST', '/v1/officer/reviews/' + encodeURIComponent(r.id), { outcome: outcome.value, note: text }).then(function () {
        status(bi('Review of ' + r.user + ' closed as ' + outcome.value + '.', r.user + ' の緊急アクセスを確認済みにしました。'));
        return loadReviews();
      }, failed).then(function () { btn.disabled = false; });
    });
    return el('div', { className: 'control review-control' }, outcome, note, btn);
  }

  function loadReviews() {
    return api('GET', '/v1/officer/reviews?state=pending').then(function (r) {
      var list = (r.data && r.data.reviews) || [];
      fill('reviews-table', list.map(function (x) {
        return el('tr', { 'data-review': x.id },
          el('td', { className: 'time', text: time(x.created_at) }),
          el('th', { scope: 'row', text: x.user }),
          el('td', { text: x.workstation }),
          el('td', null, el('span', { text: x.rule }), el('br'), el('small', { text: (x.factors || []).join(' + ') })),
          el('td', { text: '#' + x.audit_seq }),
          el('td', null, reviewControl(x)));
      }), bi('No break-glass access waits for review.', '確認待ちの緊急アクセスはありません。'), 6);
    });
  }

  function showViolations(out, err) {
    out.appendChild(el('p', { className: 'refused' }, bi('The policy was refused.', 'ポリシーは拒否されました。'),
      document.createTextNode(' '), el('span', { className: 'message', text: err.message })));
    var list = el('ol', { className: 'violations', id: 'violations' });
    err.body.violations.forEach(function (v) {
      var dl = el('dl', null,
        el('dt', null, bi('Code', 'コード')), el('dd', null, el('code', { text: v.code })),
        el('dt', null, bi('Rule', 'ルール')), el('dd', { text: v.rule === null || v.rule === undefined ? '—' : String(v.rule) }),
        el('dt', null, bi('Combination', '組み合わせ')), el('dd', { text: v.combination === null || v.combination === undefined ? '—' : (Array.isArray(v.combination) ? v.combination.join(' + ') : String(v.combination)) }),
        el('dt', null, document.createTextNode('English')), el('dd', { lang: 'en', text: v.en }),
        el('dt', null, el('span', { lang: 'ja', text: '日本語' })), el('dd', { lang: 'ja', text: v.ja }));
      list.appendChild(el('li', { className: 'violation' }, dl));
    });
    out.appendChild(list);
  }

  function activatePolicy(ev) {
    ev.preventDefault();
    var out = $('policy-result');
    clear(out);
    showError(null);
    var text = $('policy-text').value;
    var btn = ev.target.querySelector('button[type=submit]');
    btn.disabled = true;
    api('POST', '/v1/policies', { text: text }).then(function (r) {
      out.appendChild(el('p', { className: 'ok' }, bi('Activated version ' + r.data.version + ' (' + r.data.digest + ').',
        '版 ' + r.data.version + ' を有効化しました。')));
      return loadPolicies();
    }, function (err) {
      if (err instanceof ApiError && err.status === 422 && err.body && Array.isArray(err.body.violations)) {
        showViolations(out, err);
      } else {
        failed(err);
      }
    }).then(function () { btn.disabled = false; });
  }

  function auditRow(e) {
    return el('tr', { 'data-seq': String(e.seq) },
      el('th', { scope: 'row', text: String(e.seq) }),
      el('td', { className: 'time', text: time(e.at_ms) }),
      el('td', { text: e.actor }),
      el('td', { text: e.workstation || '—' }),
      el('td', { text: e.action }),
      el('td', { text: e.target || '—' }),
      el('td', { text: e.outcome }),
      el('td', null, detailNode(e.detail)));
  }

  // Short details as they are; long ones (policy diffs) folded.
  function detailNode(detail) {
    var text = String(detail === null || detail === undefined ? '' : detail);
    if (text.length <= 120) { return el('code', { text: text }); }
    var pretty = text;
    try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { pretty = text; }
    return el('details', null, el('summary', null, el('code', { text: text.slice(0, 100) + '…' })),
      el('pre', { text: pretty }));
  }

  function probe(after) {
    return api('GET', '/v1/audit?after=' + after + '&limit=1').then(function (r) {
      var e = (r.data && r.data.entries) || [];
      return e.length ? e[0].seq : null;
    });
  }

  // The newest sequence number, in a few one-entry requests: a galloping
  // search for a bound, then a binary search (sequence numbers ascend).
  function lastSeq() {
    return probe(0).then(function (first) {
      if (first === null) { return 0; }
      var lo = first; // an entry with seq lo exists
      function gallop(step) {
        var x = lo + step;
        return probe(x).then(function (s) {
          if (s === null) { return bisect(lo, x); }
          lo = s;
          return gallop(step * 2);
        });
      }
      // An entry with seq a exists and none after hi.
      function bisect(a, hi) {
        if (hi <= a) { return a; }
        var mid = Math.floor((a + hi + 1) / 2);
        return probe(mid - 1).then(function (s) {
          return s === null ? bisect(a, mid - 1) : bisect(s, hi);
        });
      }
      return gallop(1);
    });
  }

  function showAudit(after, limit) {
    return api('GET', '/v1/audit?after=' + after + '&limit=' + limit).then(function (r) {
      var entries = (r.data && r.data.entries) || [];
      entries.reverse(); // newest first
      fill('audit-table', entries.map(auditRow), bi('No entries.', '記録はありません。'), 8);
      auditFirst = entries.length ? entries[entries.length - 1].seq : null;
      $('audit-older').disabled = !(auditFirst > 1);
      $('audit-range').textContent = entries.length ? '(' + entries[entries.length - 1].seq + '–' + entries[0].seq + ')' : '';
    });
  }

  function loadAudit() {
    return lastSeq().then(function (last) { return showAudit(Math.max(0, last - AUDIT_PAGE), AUDIT_PAGE); });
  }

  function olderAudit() {
    if (auditFirst === null || auditFirst <= 1) { return; }
    showError(null);
    var after = Math.max(0, auditFirst - 1 - AUDIT_PAGE);
    showAudit(after, auditFirst - 1 - after).catch(failed);
  }

  function verifyAudit() {
    var out = $('audit-verify-result');
    var btn = $('audit-verify');
    clear(out);
    showError(null);
    btn.disabled = true;
    out.appendChild(el('p', null, bi('Verifying…', '検証中…')));
    api('GET', '/v1/audit/verify').then(function (r) {
      var v = r.data || {};
      clear(out);
      if (v.intact) {
        var head = v.head ? ' Head: #' + v.head.seq + ' ' + v.head.hash + '.' : '';
        out.appendChild(el('p', { className: 'ok', id: 'audit-intact' },
          bi('Intact: ' + v.entries + ' entries, every hash and signature checks.' + head,
            '改ざんなし: ' + v.entries + ' 件すべてのハッシュと署名を確認しました。')));
      } else {
        out.appendChild(el('p', { className: 'refused', id: 'audit-broken' },
          bi('The chain is broken (' + (v.breaks || []).length + ' break(s) in ' + v.entries + ' entries):',
            '改ざんまたは欠落を検出しました:')));
        var ul = el('ul', { className: 'breaks' });
        (v.breaks || []).forEach(function (b) { ul.appendChild(el('li', { text: String(b) })); });
        out.appendChild(ul);
      }
    }, function (err) { clear(out); failed(err); }).then(function () { btn.disabled = false; });
  }

  var LOADERS = {
    users: loadUsers,
    workstations: loadWorkstations,
    devices: loadDevices,
    policies: loadPolicies,
    reviews: loadReviews,
    audit: loadAudit
  };

  function show(view) {
    if (VIEWS.indexOf(view) < 0) { view = 'users'; }
    current = view;
    VIEWS.forEach(function (v) {
      $('view-' + v).hidden = v !== view;
    });
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      if (a.getAttribute('data-view') === view) { a.setAttribute('aria-current', 'page'); } else { a.removeAttribute('aria-current'); }
    });
    reload();
  }

  function reload() {
    showError(null);
    if (!ticket()) { status(null); return; }
    status(bi('Loading…', '読み込み中…'));
    var view = current;
    LOADERS[view]().then(function () {
      if (current === view) { status(bi('Loaded.', '読み込み完了。')); }
      document.body.setAttribute('data-loaded', view);
    }, failed);
  }

  function viewFromHash() {
    var v = new URLSearchParams(location.hash.replace(/^#/, '')).get('view');
    return VIEWS.indexOf(v) >= 0 ? v : null;
  }

  function start() {
    var view = readFragment() || viewFromHash() || 'users';
    showTicketState();
    $('ticket-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var input = $('ticket-input');
      var t = input.value.trim();
      input.value = '';
      if (t) { setTicket(t); reload(); }
    });
    $('ticket-forget').addEventListener('click', function () {
      setTicket('');
      VIEWS.forEach(function (v) {
        var table = $(v + '-table');
        if (table) { clear(table.tBodies[0]); }
      });
      clear($('audit-verify-result'));
      clear($('policy-result'));
      status(bi('Ticket forgotten.', 'チケットを破棄しました。'));
    });
    Array.prototype.forEach.call(document.querySelectorAll('button.reload'), function (b) {
      b.addEventListener('click', reload);
    });
    $('policy-form').addEventListener('submit', activatePolicy);
    $('audit-newest').addEventListener('click', function () { showError(null); loadAudit().catch(failed); });
    $('audit-older').addEventListener('click', olderAudit);
    $('audit-verify').addEventListener('click', verifyAudit);
    window.addEventListener('hashchange', function () {
      var v = readFragment() || viewFromHash();
      if (v && v !== current) { show(v); }
    });
    show(view);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
}());
