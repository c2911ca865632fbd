// The views (welcome, sign-up, verification, login, chat, account) and the hash
// router. Text from the server or the model is only ever inserted as text nodes.
(function () {
  'use strict';
  var P = window.Palisade, t = P.t;
  var main = document.getElementById('main');
  var S = { user: null, flash: null, prefill: '', rendered: false };
  var uid = 0;

  // --- DOM helpers -----------------------------------------------------------

  // h('p', {class: 'x', text: 'y', onclick: f}, child, [children], 'text')
  function h(tag, props) {
    var el = document.createElement(tag);
    for (var k in props || {}) {
      var v = props[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'class') el.className = v;
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  function add(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { add(el, c); });
    else el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function field(label, input, hint) {
    if (!input.id) input.id = 'f' + ++uid;
    var note = hint ? h('p', { class: 'hint', id: input.id + '-hint', text: hint }) : null;
    if (note) input.setAttribute('aria-describedby', note.id);
    return h('div', { class: 'field' }, h('label', { for: input.id, text: label }), input, note);
  }

  function input(type, name, extra) {
    var props = { type: type, name: name };
    for (var k in extra || {}) props[k] = extra[k];
    return h('input', props);
  }

  function busy(button, on, label) {
    button.disabled = on;
    if (on) {
      button.dataset.label = button.textContent;
      button.textContent = label || t('working');
    } else if (button.dataset.label) {
      button.textContent = button.dataset.label;
    }
  }

  function section(title, lead) {
    var id = 's' + ++uid;
    var el = h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id: id, text: title }));
    if (lead) el.appendChild(h('p', { class: 'muted', text: lead }));
    return el;
  }

  function when(ms) {
    if (!ms) return t('never');
    return new Date(ms < 1e12 ? ms * 1000 : ms).toLocaleString(P.lang === 'zh' ? 'zh-CN' : 'en');
  }

  // --- refusals as readable messages ----------------------------------------

  var RESTRICTED = ['registration_closed', 'region_not_allowed', 'phone_required', 'invite_required', 'sms_paused'];
  var BUSY = ['overloaded', 'queue_timeout', 'waiting_room_full', 'busy', 'no_healthy_upstream',
    'upstream_unavailable', 'upstream_timeout', 'shutting_down'];
  var KNOWN = {
    network: 'network', blocked: 'blocked', challenge_failed: 'check', challenge_required: 'check',
    challenge_unsupported: 'check', sms_proof_required: 'check', account_suspended: 'suspended', account_flagged: 'suspended',
    prompt_rejected: 'prompt', content_filter: 'filter', invalid_credentials: 'login', invalid_code: 'code',
    already_registered: 'exists', ticket_expired: 'ticket', ticket_invalid: 'ticket', unauthenticated: 'signedout',
    invalid_api_key: 'signedout', not_found: 'missing', method_not_allowed: 'missing',
  };

  // {title, text, kind} for an ApiError.
  function explain(err) {
    var c = err.code, k = KNOWN[c];
    if (RESTRICTED.indexOf(c) >= 0) return { title: t('e_restricted_t'), text: err.message || t('e_restricted'), kind: 'warn' };
    if (err.status === 429 || c === 'too_many_attempts' || c === 'rate_limited') k = 'rate';
    else if (BUSY.indexOf(c) >= 0 || err.status === 503) k = 'busy';
    if (k) return { title: t('e_' + k + '_t'), text: t('e_' + k), kind: k === 'filter' ? 'warn' : 'error' };
    if (err.status >= 500 || !err.message) return { title: t('e_server_t'), text: t('e_server') };
    return { title: t('e_generic_t'), text: err.message };
  }

  // Show `err` in `box`; with Retry-After, a countdown, then onReady().
  function notice(box, err, onReady) {
    clear(box);
    var x = explain(err);
    var el = h('div', { class: 'notice ' + (x.kind || 'error'), role: 'alert' },
      h('strong', { text: x.title }), h('p', { text: x.text }));
    box.appendChild(el);
    if (err.retryAfter) {
      var line = h('p', { class: 'countdown' });
      el.appendChild(line);
      P.countdown(err.retryAfter, line, function (s) {
        line.textContent = t('retry_in', { s: s });
      }, function () {
        line.textContent = t('retry_now');
        if (onReady) onReady();
      });
    }
    return el;
  }

  function info(box, text, kind) {
    clear(box).appendChild(h('div', { class: 'notice ' + (kind || 'ok'), role: 'status' }, h('p', { text: text })));
  }

  // Disable `button` until a refusal's Retry-After has passed.
  function refuse(box, err, button) {
    notice(box, err, function () {
      button.disabled = false;
    });
    if (err.retryAfter) button.disabled = true;
  }

  // --- the proof-of-work panel (called by api.js) ----------------------------

  var pow = document.getElementById('pow');
  P.powView = function (difficulty) {
    var title = h('strong', { text: t('pow_t') }), text = h('p', { text: t('pow', { d: difficulty }) });
    var progress = h('p', { class: 'muted', 'aria-hidden': 'true', text: t('pow_working') });
    clear(pow).className = 'pow working';
    add(pow, [title, text, progress]);
    pow.hidden = false;
    pow.dataset.shown = '0';
    return {
      progress: function (n) {
        progress.textContent = t('pow_tries', { n: n.toLocaleString() });
      },
      done: function (ok) {
        pow.className = 'pow ' + (ok ? 'ok' : 'failed');
        title.textContent = t(ok ? 'pow_ok_t' : 'pow_failed_t');
        text.textContent = t(ok ? 'pow_ok' : 'pow_failed');
        progress.textContent = '';
      },
    };
  };

  // --- session ---------------------------------------------------------------

  async function loadMe() {
    try {
      S.user = (await P.request('GET', '/auth/me')).data;
      localStorage.setItem('palisade.signedIn', '1');
    } catch (e) {
      S.user = null;
      if (e.status === 401) localStorage.removeItem('palisade.signedIn');
      else S.flash = { kind: 'error', text: explain(e).text };
    }
  }

  function signedOut(message) {
    S.user = null;
    localStorage.removeItem('palisade.signedIn');
    S.flash = { kind: 'info', text: message };
    go('login');
  }

  async function logout() {
    try {
      await P.request('POST', '/auth/logout', { body: {} });
    } catch (e) {
      if (e.status !== 401) {
        S.flash = { kind: 'error', text: explain(e).text };
        return render();
      }
    }
    signedOut(t('signed_out'));
  }

  // --- router ----------------------------------------------------------------

  var VIEWS = { '': home, signup: signup, verify: verify, login: login, chat: chat, account: account };
  var cleanups = [];

  function route() {
    var r = location.hash.replace(/^#\/?/, '');
    return Object.prototype.hasOwnProperty.call(VIEWS, r) ? r : '';
  }

  function go(name) {
    if (route() === name) render();
    else location.hash = '#' + name;
  }

  function render() {
    cleanups.splice(0).forEach(function (f) { f(); });
    var name = route();
    if ((name === 'chat' || name === 'account') && !S.user) {
      S.flash = S.flash || { kind: 'info', text: t('need_login') };
      name = 'login';
    } else if ((name === '' || name === 'login' || name === 'signup') && S.user) {
      name = 'chat';
    }
    if (name !== route()) history.replaceState(null, '', '#' + name);
    // The proof-of-work result stays for one more view, so the visitor sees it.
    if (!pow.hidden && pow.className !== 'pow working') {
      if (pow.dataset.shown === '1') pow.hidden = true;
      pow.dataset.shown = '1';
    }
    nav(name);
    clear(main);
    main.className = 'view-' + (name || 'home');
    var flash = S.flash;
    S.flash = null;
    if (flash) main.appendChild(h('div', { class: 'notice ' + flash.kind, role: 'status' }, h('p', { text: flash.text })));
    VIEWS[name](main);
    var title = main.querySelector('h1');
    document.title = (title ? title.textContent + ' · ' : '') + t('brand');
    if (title && S.rendered) {
      title.setAttribute('tabindex', '-1');
      title.focus();
    }
    S.rendered = true;
  }

  function nav(active) {
    var el = clear(document.getElementById('nav'));
    var links = S.user ? [['chat', 'nav_chat'], ['account', 'nav_account']] : [['login', 'nav_login'], ['signup', 'nav_signup']];
    links.forEach(function (l) {
      el.appendChild(h('a', { href: '#' + l[0], 'aria-current': active === l[0] ? 'page' : null, text: t(l[1]) }));
    });
    if (S.user) el.appendChild(h('button', { type: 'button', class: 'link', onclick: logout, text: t('nav_logout') }));
    document.getElementById('brand').textContent = t('brand');
    document.getElementById('lang-label').textContent = t('language');
    document.getElementById('status-link').textContent = t('status_link');
    document.getElementById('privacy').textContent = t('privacy');
    document.querySelector('.skip').textContent = t('skip');
  }

  // --- welcome ---------------------------------------------------------------

  function home(root) {
    add(root, h('section', { class: 'hero' },
      h('h1', { text: t('home_t') }),
      h('p', { class: 'lead', text: t('home_lead') }),
      h('div', { class: 'actions' },
        h('a', { class: 'button primary', href: '#signup', text: t('home_signup') }),
        h('a', { class: 'button', href: '#login', text: t('home_login') })),
      h('ul', { class: 'points' }, h('li', { text: t('home_p1') }), h('li', { text: t('home_p2') }), h('li', { text: t('home_p3') }))));
  }

  // --- sign-up, the waiting room, verification -------------------------------

  function signup(root) {
    var phone = input('tel', 'phone', { autocomplete: 'tel', inputmode: 'tel', required: true, placeholder: '+86 138 0013 8000' });
    var email = input('email', 'email', { autocomplete: 'email', placeholder: 'name@example.com' });
    var password = input('password', 'password', { autocomplete: 'new-password', required: true, minlength: '8' });
    var invite = input('text', 'invite', { autocomplete: 'off' });
    var phoneField = field(t('f_phone'), phone), emailField = field(t('f_email'), email);
    emailField.hidden = true;
    var useEmail = false;
    function choose(toEmail) {
      useEmail = toEmail;
      phoneField.hidden = toEmail;
      emailField.hidden = !toEmail;
      phone.required = !toEmail;
      email.required = toEmail;
    }
    function radio(value, label, checked) {
      var r = input('radio', 'channel', { value: value, checked: checked, onchange: function () { choose(value === 'email'); } });
      r.id = 'channel-' + value;
      return h('label', { class: 'radio', for: r.id }, r, ' ' + label);
    }
    var box = h('div', { class: 'messages' });
    var submit = h('button', { type: 'submit', class: 'primary', text: t('signup_submit') });
    var form = h('form', { class: 'card narrow' },
      h('fieldset', { class: 'choice' }, h('legend', { text: t('f_signup_with') }),
        radio('phone', t('f_phone_short'), true), radio('email', t('f_email_short'), false)),
      phoneField, emailField,
      field(t('f_password'), password, t('f_password_hint')),
      h('details', {}, h('summary', { text: t('f_invite_q') }), field(t('f_invite'), invite)),
      box, submit);
    var room = waitingRoom();
    add(root, [h('h1', { text: t('signup_t') }), form, room.el,
      h('p', { class: 'aside' }, t('signup_have') + ' ', h('a', { href: '#login', text: t('nav_login') }))]);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      var body = { password: password.value };
      if (useEmail) body.email = email.value.trim();
      else body.phone = phone.value.trim();
      if (invite.value.trim()) body.invite = invite.value.trim();
      busy(submit, true, t('signup_busy'));
      clear(box);
      try {
        var reg = await register(body, room, form);
        var pending = { user_id: reg.user_id, channel: reg.verification_channel, ttl: reg.code_expires_in_s, id: body.email || body.phone };
        sessionStorage.setItem('palisade.pending', JSON.stringify(pending));
        go('verify');
      } catch (err) {
        if (err === room) return; // the visitor left the page
        room.hide(form);
        busy(submit, false);
        refuse(box, err, submit);
      }
    });
  }

  // POST /auth/register, through the waiting room when the server says so.
  async function register(body, room, form) {
    var pass = null;
    for (;;) {
      var r = await P.request('POST', '/auth/register', { body: body, headers: pass ? { 'x-palisade-pass': pass } : {} });
      if (r.status !== 202) return r.data;
      room.show(form, r.data);
      pass = await queue(r.data, room);
    }
  }

  // Poll the ticket until it is admitted; null when it expired (join again).
  async function queue(ticket, room) {
    var wait = ticket.poll_after_s || 5;
    for (;;) {
      await P.sleep(Math.max(1, wait) * 1000);
      if (!room.el.isConnected) throw room;
      var r;
      try {
        r = await P.request('GET', '/auth/register/ticket?ticket=' + encodeURIComponent(ticket.ticket));
      } catch (e) {
        if (e.code === 'ticket_expired') return null;
        throw e;
      }
      if (r.data.status === 'admitted') {
        room.admitted();
        return r.data.pass;
      }
      room.update(r.data);
      wait = r.data.poll_after_s || wait;
    }
  }

  function waitingRoom() {
    var position = h('strong', { class: 'position' }), eta = h('span', { class: 'eta' });
    var state = h('p', { role: 'status' }, t('room_position') + ' ', position);
    var el = h('section', { class: 'card narrow room', hidden: true, 'aria-labelledby': 'room-t' },
      h('h2', { id: 'room-t', text: t('room_t') }),
      h('p', { text: t('room_lead') }),
      state,
      h('p', {}, t('room_eta') + ' ', eta),
      h('div', { class: 'bar', 'aria-hidden': 'true' }, h('span')),
      h('p', { class: 'muted', text: t('room_keep') }));
    var left = null, timer = null;
    function tick() {
      eta.textContent = left === null ? t('room_eta_unknown') : t('seconds', { s: Math.max(0, Math.ceil(left)) });
    }
    function update(data) {
      position.textContent = String(data.position);
      left = data.eta_s === null || data.eta_s === undefined ? null : data.eta_s;
      tick();
    }
    return {
      el: el,
      show: function (form, data) {
        form.hidden = true;
        el.hidden = false;
        update(data);
        if (!timer) {
          timer = setInterval(function () {
            if (!el.isConnected) return clearInterval(timer);
            if (left !== null && left > 0) left -= 1;
            tick();
          }, 1000);
        }
        el.querySelector('h2').setAttribute('tabindex', '-1');
        el.querySelector('h2').focus();
      },
      update: update,
      admitted: function () {
        clearInterval(timer);
        timer = null;
        position.textContent = t('room_admitted');
        eta.textContent = t('seconds', { s: 0 });
      },
      hide: function (form) {
        clearInterval(timer);
        timer = null;
        el.hidden = true;
        form.hidden = false;
      },
    };
  }

  function verify(root) {
    var pending = null;
    try {
      pending = JSON.parse(sessionStorage.getItem('palisade.pending') || 'null');
    } catch (_) {}
    if (!pending) {
      add(root, [h('h1', { text: t('verify_none_t') }), h('p', {}, t('verify_none') + ' ', h('a', { href: '#signup', text: t('nav_signup') }))]);
      return;
    }
    var code = input('text', 'code', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: '10', pattern: '[0-9 ]*' });
    var box = h('div', { class: 'messages' });
    var submit = h('button', { type: 'submit', class: 'primary', text: t('verify_submit') });
    var resend = h('button', { type: 'button', class: 'link', text: t('verify_resend') });
    var lead = t(pending.channel === 'email' ? 'verify_lead_email' : 'verify_lead_sms', { min: Math.max(1, Math.round((pending.ttl || 600) / 60)) });
    var form = h('form', { class: 'card narrow' }, h('p', { text: lead }), field(t('f_code'), code), box, submit, ' ', resend);
    add(root, [h('h1', { text: t('verify_t') }), form]);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      busy(submit, true);
      try {
        await P.request('POST', '/auth/verify', { body: { user_id: pending.user_id, code: code.value.trim() } });
        sessionStorage.removeItem('palisade.pending');
        S.prefill = pending.id;
        S.flash = { kind: 'ok', text: t('verified') };
        go('login');
      } catch (err) {
        busy(submit, false);
        refuse(box, err, submit);
      }
    });
    resend.addEventListener('click', async function () {
      busy(resend, true);
      try {
        await P.request('POST', '/auth/verify/resend', { body: { user_id: pending.user_id } });
        info(box, t('verify_resent'));
      } catch (err) {
        notice(box, err);
      }
      busy(resend, false);
    });
  }

  // --- login -------------------------------------------------------------------

  function login(root) {
    var id = input('text', 'username', { autocomplete: 'username', required: true, value: S.prefill || null });
    var password = input('password', 'password', { autocomplete: 'current-password', required: true });
    var totp = input('text', 'totp', { inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '10' });
    var recovery = input('text', 'recovery', { autocomplete: 'off', spellcheck: 'false' });
    var totpField = field(t('f_totp'), totp, t('f_totp_hint')), recoveryField = field(t('f_recovery'), recovery, t('f_recovery_hint'));
    var toggle = h('button', { type: 'button', class: 'link', text: t('login_use_recovery') });
    var second = h('div', { class: 'second', hidden: true }, totpField, recoveryField, toggle);
    recoveryField.hidden = true;
    var useRecovery = false;
    toggle.addEventListener('click', function () {
      useRecovery = !useRecovery;
      totpField.hidden = useRecovery;
      recoveryField.hidden = !useRecovery;
      toggle.textContent = t(useRecovery ? 'login_use_totp' : 'login_use_recovery');
      (useRecovery ? recovery : totp).focus();
    });
    var box = h('div', { class: 'messages' });
    var submit = h('button', { type: 'submit', class: 'primary', text: t('login_submit') });
    var form = h('form', { class: 'card narrow' }, field(t('f_identifier'), id), field(t('f_password'), password), second, box, submit);
    add(root, [h('h1', { text: t('login_t') }), form,
      h('p', { class: 'aside' }, t('login_new') + ' ', h('a', { href: '#signup', text: t('nav_signup') }))]);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      var who = id.value.trim(), body = { password: password.value };
      if (who.indexOf('@') >= 0) body.email = who;
      else body.phone = who;
      if (!second.hidden) {
        if (useRecovery) body.recovery_code = recovery.value.trim();
        else body.totp = totp.value.trim();
      }
      busy(submit, true, t('login_busy'));
      clear(box);
      try {
        var r = await P.request('POST', '/auth/login', { body: body });
        S.prefill = '';
        await loadMe();
        if (!S.user) S.user = { user_id: r.data.user_id };
        if (r.data.mfa_enrollment_required) {
          S.flash = { kind: 'info', text: t('mfa_required_enrol') };
          go('account');
        } else go('chat');
      } catch (err) {
        busy(submit, false);
        if (err.code === 'mfa_required') {
          second.hidden = false;
          info(box, t('login_need_code'), 'info');
          (useRecovery ? recovery : totp).focus();
        } else refuse(box, err, submit);
      }
    });
  }

  // --- chat ----------------------------------------------------------------------

  var C = { list: [], current: null, streaming: null };

  function chatsKey() {
    return 'palisade.chats.' + (S.user ? S.user.user_id : 'anonymous');
  }

  function loadChats() {
    try {
      var list = JSON.parse(localStorage.getItem(chatsKey()) || '[]');
      return Array.isArray(list) ? list : [];
    } catch (_) {
      return [];
    }
  }

  function saveChats() {
    try {
      localStorage.setItem(chatsKey(), JSON.stringify(C.list));
    } catch (_) {
      // Storage full or disabled: the conversation lives on until the page closes.
    }
  }

  function chat(root) {
    C.list = loadChats();
    C.list.forEach(function (c) {
      c.messages.forEach(function (m) {
        if (m.state === 'streaming') m.state = 'stopped';
      });
    });
    if (!C.list.some(function (c) { return c.id === C.current; })) C.current = null;
    var listEl = h('ul', { class: 'convs', id: 'convs' });
    var model = h('select', { id: 'model', name: 'model' }, h('option', { value: '', text: t('loading') }));
    var thread = h('ol', { class: 'thread', 'aria-label': t('chat_messages') });
    var prompt = h('textarea', { id: 'prompt', name: 'prompt', rows: '3', placeholder: t('chat_placeholder'), 'aria-describedby': 'prompt-hint' });
    var send = h('button', { type: 'submit', class: 'primary', text: t('chat_send') });
    var stop = h('button', { type: 'button', class: 'danger', hidden: true, text: t('chat_stop') });
    var modelBox = h('div', { class: 'messages' });
    var toggle = h('button', { type: 'button', class: 'toggle-convs', 'aria-expanded': 'false', 'aria-controls': 'sidebar', text: t('chat_list') });
    var layout = h('div', { class: 'chat' },
      h('nav', { id: 'sidebar', 'aria-labelledby': 'convs-t' },
        h('h2', { id: 'convs-t', class: 'sr-only', text: t('chat_list') }),
        h('button', { type: 'button', class: 'primary wide', text: t('chat_new'), onclick: function () { open(null); prompt.focus(); } }),
        listEl,
        h('button', { type: 'button', class: 'danger small', text: t('chat_clear'), onclick: clearAll }),
        h('p', { class: 'privacy-note', text: t('privacy') })),
      h('section', { class: 'conversation', 'aria-labelledby': 'chat-t' },
        h('div', { class: 'toolbar' },
          h('h1', { id: 'chat-t', class: 'sr-only', text: t('chat_t') }),
          toggle,
          h('span', { class: 'model' }, h('label', { for: 'model', text: t('chat_model') }), model)),
        modelBox,
        thread,
        h('form', { class: 'composer' },
          h('label', { for: 'prompt', class: 'sr-only', text: t('chat_message') }),
          prompt,
          h('p', { id: 'prompt-hint', class: 'hint', text: t('chat_hint') }),
          h('div', { class: 'buttons' }, stop, send))));
    root.appendChild(layout);

    toggle.addEventListener('click', function () {
      var on = layout.classList.toggle('show-list');
      toggle.setAttribute('aria-expanded', String(on));
    });
    prompt.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        layout.querySelector('.composer').requestSubmit();
      }
    });
    layout.querySelector('.composer').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var text = prompt.value.trim();
      if (!text || C.streaming) return;
      prompt.value = '';
      var conv = current();
      if (!conv) {
        conv = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: '', messages: [], updated: Date.now() };
        C.list.push(conv);
        C.current = conv.id;
      }
      conv.messages.push({ role: 'user', content: text });
      if (!conv.title) conv.title = text.replace(/\s+/g, ' ').slice(0, 60);
      generate(conv);
    });
    stop.addEventListener('click', function () {
      if (C.streaming) C.streaming.ctrl.abort();
    });
    model.addEventListener('change', function () {
      localStorage.setItem('palisade.model', model.value);
    });
    cleanups.push(function () {
      if (C.streaming) C.streaming.ctrl.abort();
    });

    function current() {
      for (var i = 0; i < C.list.length; i++) if (C.list[i].id === C.current) return C.list[i];
      return null;
    }

    function open(id) {
      if (C.streaming) C.streaming.ctrl.abort();
      C.current = id;
      layout.classList.remove('show-list');
      toggle.setAttribute('aria-expanded', 'false');
      drawList();
      drawThread();
    }

    function clearAll() {
      if (!C.list.length || !confirm(t('chat_clear_confirm'))) return;
      if (C.streaming) C.streaming.ctrl.abort();
      C.list = [];
      C.current = null;
      saveChats();
      drawList();
      drawThread();
    }

    function drawList() {
      clear(listEl);
      var sorted = C.list.slice().sort(function (a, b) { return b.updated - a.updated; });
      if (!sorted.length) listEl.appendChild(h('li', { class: 'muted', text: t('chat_none') }));
      sorted.forEach(function (c) {
        var title = c.title || t('chat_untitled');
        var li = h('li', { class: 'conv' + (c.id === C.current ? ' current' : '') },
          h('button', { type: 'button', class: 'open', 'aria-current': c.id === C.current ? 'true' : null, text: title, onclick: function () { open(c.id); } }),
          h('span', { class: 'conv-actions' },
            h('button', { type: 'button', class: 'small', 'aria-label': t('chat_rename_x', { title: title }), text: t('chat_rename'), onclick: function () { rename(li, c); } }),
            h('button', { type: 'button', class: 'small danger', 'aria-label': t('chat_delete_x', { title: title }), text: t('chat_delete'), onclick: function () { remove(c); } })));
        listEl.appendChild(li);
      });
    }

    function rename(li, c) {
      var name = input('text', 'title', { value: c.title || '', maxlength: '120', id: 'rename-' + c.id });
      var form = h('form', { class: 'rename' }, h('label', { for: name.id, class: 'sr-only', text: t('chat_new_name') }), name,
        h('button', { type: 'submit', class: 'small primary', text: t('save') }),
        h('button', { type: 'button', class: 'small', text: t('cancel'), onclick: done }));
      function done() {
        drawList();
        var again = listEl.querySelector('.current .open') || listEl.querySelector('.open');
        if (again) again.focus();
      }
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        c.title = name.value.trim() || c.title;
        saveChats();
        done();
      });
      name.addEventListener('keydown', function (ev) {
        if (ev.key === 'Escape') done();
      });
      clear(li).appendChild(form);
      name.focus();
      name.select();
    }

    function remove(c) {
      if (!confirm(t('chat_delete_confirm', { title: c.title || t('chat_untitled') }))) return;
      if (c.id === C.current && C.streaming) C.streaming.ctrl.abort();
      C.list = C.list.filter(function (x) { return x !== c; });
      if (C.current === c.id) C.current = null;
      saveChats();
      drawList();
      drawThread();
    }

    function drawThread() {
      clear(thread);
      var conv = current();
      if (!conv || !conv.messages.length) {
        thread.appendChild(h('li', { class: 'empty' }, h('p', { text: t('chat_empty') }), h('p', { class: 'muted', text: t('privacy') })));
        return;
      }
      conv.messages.forEach(function (m, i) {
        thread.appendChild(message(conv, m, i === conv.messages.length - 1));
      });
      thread.lastChild.scrollIntoView({ block: 'end' });
    }

    function message(conv, m, last) {
      var body = h('div', { class: 'body' });
      if (m.role === 'user') body.textContent = m.content;
      else P.markdown(m.content, body);
      var li = h('li', { class: 'msg ' + m.role }, h('p', { class: 'who', text: t(m.role === 'user' ? 'you' : 'assistant') }), body);
      if (m.state === 'streaming') {
        li.setAttribute('aria-busy', 'true');
        li.classList.add('streaming');
        C.body = body;
        return li;
      }
      if (m.state === 'stopped') li.appendChild(h('p', { class: 'note', text: t('chat_stopped') }));
      if (m.state === 'filtered') notice(li.appendChild(h('div')), { code: 'content_filter', status: 200 });
      if (m.state === 'error') {
        var err = m.error || {};
        var remaining = err.retryAfter ? Math.ceil(err.retryAfter - (Date.now() - err.at) / 1000) : 0;
        notice(li.appendChild(h('div')), { code: err.code, status: err.status, message: err.message, retryAfter: remaining > 0 ? remaining : null });
      }
      if (m.role === 'assistant') {
        var actions = h('div', { class: 'tools' });
        if (m.content) {
          actions.appendChild(h('button', { type: 'button', class: 'small', text: t('copy'), onclick: function () { copy(m.content, this); } }));
        }
        if (last) {
          actions.appendChild(h('button', { type: 'button', class: 'small', text: t('chat_regenerate'), onclick: function () {
            if (C.streaming) return;
            conv.messages.pop();
            generate(conv);
          } }));
        }
        li.appendChild(actions);
      }
      return li;
    }

    var painting = false;
    function paint() {
      if (painting) return;
      painting = true;
      requestAnimationFrame(function () {
        painting = false;
        if (!C.streaming || !C.body) return;
        P.markdown(C.streaming.msg.content, C.body);
        C.body.scrollIntoView({ block: 'end' });
      });
    }

    async function generate(conv) {
      var msg = { role: 'assistant', content: '', state: 'streaming' };
      var history = conv.messages
        .filter(function (m) { return m.role === 'user' || (m.content && m.state !== 'error'); })
        .map(function (m) { return { role: m.role, content: m.content }; });
      conv.messages.push(msg);
      conv.updated = Date.now();
      conv.model = model.value || conv.model || '';
      var ctrl = new AbortController();
      C.streaming = { ctrl: ctrl, msg: msg };
      saveChats();
      drawList();
      drawThread();
      send.disabled = true;
      stop.hidden = false;
      var body = { messages: history, stream: true };
      if (conv.model) body.model = conv.model;
      try {
        var finish = await P.chat(body, ctrl.signal, function (text) {
          msg.content += text;
          paint();
        });
        msg.state = finish === 'content_filter' ? 'filtered' : 'done';
      } catch (e) {
        if (e && e.name === 'AbortError') msg.state = 'stopped';
        else {
          msg.state = 'error';
          msg.error = { code: e.code, status: e.status, message: e.message, retryAfter: e.retryAfter, at: Date.now() };
        }
      }
      var refocus = document.activeElement === stop;
      C.streaming = null;
      C.body = null;
      conv.updated = Date.now();
      saveChats();
      if (!layout.isConnected) return;
      send.disabled = false;
      stop.hidden = true;
      drawList();
      drawThread();
      if (refocus) prompt.focus();
      if (msg.state === 'error' && (msg.error.status === 401 || msg.error.code === 'unauthenticated')) signedOut(t('need_login'));
    }

    async function loadModels() {
      try {
        var r = await P.request('GET', '/v1/models');
        var ids = ((r.data && r.data.data) || []).map(function (m) { return m.id; }).filter(Boolean);
        clear(model);
        ids.forEach(function (id) { model.appendChild(h('option', { value: id, text: id })); });
        var saved = localStorage.getItem('palisade.model');
        if (ids.indexOf(saved) >= 0) model.value = saved;
        if (!ids.length) model.appendChild(h('option', { value: '', text: t('chat_model_default') }));
      } catch (e) {
        clear(model).appendChild(h('option', { value: '', text: t('chat_model_default') }));
        notice(modelBox, e);
      }
    }

    drawList();
    drawThread();
    loadModels();
  }

  async function copy(text, button) {
    var ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      var area = h('textarea', { class: 'sr-only', readonly: true, 'aria-hidden': 'true' });
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try {
        ok = document.execCommand('copy');
      } catch (e) {}
      area.remove();
    }
    var label = button.textContent;
    button.textContent = t(ok ? 'copied' : 'copy_failed');
    setTimeout(function () {
      button.textContent = label;
    }, 2000);
  }

  // --- account -------------------------------------------------------------------

  function account(root) {
    add(root, [h('h1', { text: t('acct_t') }), h('p', { class: 'muted', text: t('acct_lead', { id: S.user.user_id }) })]);
    var out = section(t('nav_logout'), t('logout_lead'));
    out.appendChild(h('button', { type: 'button', class: 'danger', text: t('nav_logout'), onclick: logout }));
    add(root, [sessions(), twoStep(), keys(), changePassword(), out]);
  }

  function sessions() {
    var sec = section(t('sessions_t'), t('sessions_lead')), list = h('ul', { class: 'rows' }), box = h('div', { class: 'messages' });
    add(sec, [box, list]);
    async function load() {
      try {
        var r = await P.request('GET', '/auth/sessions');
        clear(list);
        (r.data.sessions || []).forEach(function (s) {
          var label = s.current ? t('session_this') : t('session_other');
          list.appendChild(h('li', { class: 'row' },
            h('span', { class: 'grow' }, h('strong', { text: label }), ' ', h('span', { class: 'muted', text: t('session_since', { when: when(s.created_at) }) })),
            s.current ? null : h('button', { type: 'button', class: 'small danger', 'aria-label': t('session_revoke_x', { when: when(s.created_at) }), text: t('revoke'), onclick: async function () {
              try {
                await P.request('DELETE', '/auth/sessions/' + encodeURIComponent(s.id));
                info(box, t('session_revoked'));
                load();
              } catch (e) {
                notice(box, e);
              }
            } })));
        });
      } catch (e) {
        notice(box, e);
      }
    }
    load();
    return sec;
  }

  function twoStep() {
    var sec = section(t('totp_t'), t('totp_lead')), box = h('div', { class: 'messages' });
    var password = input('password', 'password', { autocomplete: 'current-password', required: true });
    var current = input('text', 'current-totp', { inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '10' });
    var currentField = field(t('f_totp_current'), current);
    currentField.hidden = true;
    var start = h('button', { type: 'submit', class: 'primary', text: t('totp_start') });
    var form = h('form', {}, field(t('f_password_confirm'), password), currentField, start);
    var stage = h('div');
    add(sec, [box, form, stage]);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      busy(start, true);
      clear(box);
      var body = { password: password.value };
      if (!currentField.hidden) body.totp = current.value.trim();
      try {
        var r = await P.request('POST', '/auth/mfa/totp', { body: body });
        busy(start, false);
        form.hidden = true;
        enrol(r.data);
      } catch (err) {
        busy(start, false);
        if (err.code === 'mfa_required') {
          currentField.hidden = false;
          info(box, t('totp_need_current'), 'info');
          current.focus();
        } else if (err.code === 'invalid_credentials') {
          info(box, t('wrong_password'), 'error');
        } else refuse(box, err, start);
      }
    });

    function enrol(e) {
      var canvas = h('canvas', { class: 'qr', role: 'img', 'aria-label': t('totp_qr_label') });
      try {
        P.qr.draw(canvas, e.otpauth_uri, 4);
      } catch (_) {
        canvas = h('p', { class: 'muted', text: t('totp_qr_failed') });
      }
      var code = input('text', 'totp-code', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: '10' });
      var confirmButton = h('button', { type: 'submit', class: 'primary', text: t('totp_confirm') });
      var confirmForm = h('form', {}, field(t('f_totp_new'), code), confirmButton);
      var secret = e.secret.replace(/(.{4})/g, '$1 ').trim();
      add(clear(stage), [
        h('ol', { class: 'steps' }, h('li', { text: t('totp_step1') }), h('li', { text: t('totp_step2') })),
        h('div', { class: 'qr-box' }, canvas,
          h('p', {}, t('totp_secret') + ' ', h('code', { class: 'secret', text: secret }))),
        confirmForm]);
      code.focus();
      confirmForm.addEventListener('submit', async function (ev) {
        ev.preventDefault();
        busy(confirmButton, true);
        try {
          var r = await P.request('POST', '/auth/mfa/totp/confirm', { body: { enrollment: e.enrollment, code: code.value.trim() } });
          recoveryCodes(r.data.recovery_codes || []);
        } catch (err) {
          busy(confirmButton, false);
          refuse(box, err, confirmButton);
        }
      });
    }

    function recoveryCodes(codes) {
      clear(box);
      var done = h('button', { type: 'button', class: 'primary', text: t('codes_done') });
      var copyButton = h('button', { type: 'button', text: t('codes_copy'), onclick: function () { copy(codes.join('\n'), copyButton); } });
      add(clear(stage), [
        h('div', { class: 'notice ok', role: 'status' }, h('p', { text: t('totp_on') })),
        h('h3', { text: t('codes_t') }),
        h('p', { text: t('codes_lead') }),
        h('ol', { class: 'codes' }, codes.map(function (c) { return h('li', {}, h('code', { text: c })); })),
        h('div', { class: 'buttons' }, copyButton, done)]);
      done.addEventListener('click', function () {
        add(clear(stage), h('p', { class: 'notice ok', text: t('totp_on') }));
      });
      stage.querySelector('h3').setAttribute('tabindex', '-1');
      stage.querySelector('h3').focus();
    }
    return sec;
  }

  function keys() {
    var sec = section(t('keys_t'), t('keys_lead')), box = h('div', { class: 'messages' }), list = h('ul', { class: 'rows keys' });
    var name = input('text', 'key-name', { required: true, maxlength: '64', autocomplete: 'off' });
    var create = h('button', { type: 'submit', class: 'primary', text: t('keys_create') });
    var created = h('div');
    var form = h('form', { class: 'inline' }, field(t('f_key_name'), name), create);
    add(sec, [box, form, created, list]);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      busy(create, true);
      clear(box);
      try {
        var r = await P.request('POST', '/auth/keys', { body: { name: name.value.trim() } });
        name.value = '';
        var copyButton = h('button', { type: 'button', class: 'small', text: t('copy'), onclick: function () { copy(r.data.key, copyButton); } });
        add(clear(created), h('div', { class: 'notice ok new-key', role: 'status' },
          h('strong', { text: t('keys_created') }), h('p', { text: t('keys_once') }),
          h('p', {}, h('code', { class: 'secret', text: r.data.key }), ' ', copyButton)));
        busy(create, false);
        load();
      } catch (err) {
        busy(create, false);
        refuse(box, err, create);
      }
    });
    async function load() {
      try {
        var r = await P.request('GET', '/auth/keys');
        clear(list);
        var all = r.data.keys || [];
        if (!all.length) list.appendChild(h('li', { class: 'muted', text: t('keys_none') }));
        all.forEach(function (k) {
          var revoked = !!k.revoked_at;
          list.appendChild(h('li', { class: 'row' + (revoked ? ' revoked' : '') },
            h('span', { class: 'grow' }, h('strong', { text: k.name }), ' ', h('code', { text: k.prefix + '…' }),
              h('span', { class: 'muted block', text: revoked ? t('keys_revoked_at', { when: when(k.revoked_at) }) : t('keys_used', { created: when(k.created_at), used: when(k.last_used_at) }) })),
            revoked ? null : h('button', { type: 'button', class: 'small danger', 'aria-label': t('keys_revoke_x', { name: k.name }), text: t('revoke'), onclick: async function () {
              try {
                await P.request('DELETE', '/auth/keys/' + encodeURIComponent(k.prefix));
                clear(created);
                info(box, t('keys_revoked', { name: k.name }));
                load();
              } catch (e) {
                notice(box, e);
              }
            } })));
        });
      } catch (e) {
        notice(box, e);
      }
    }
    load();
    return sec;
  }

  function changePassword() {
    var sec = section(t('pw_t'), t('pw_lead')), box = h('div', { class: 'messages' });
    var current = input('password', 'current-password', { autocomplete: 'current-password', required: true });
    var next = input('password', 'new-password', { autocomplete: 'new-password', required: true, minlength: '8' });
    var code = input('text', 'pw-totp', { inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '10' });
    var codeField = field(t('f_totp'), code);
    codeField.hidden = true;
    var submit = h('button', { type: 'submit', class: 'primary', text: t('pw_submit') });
    var form = h('form', {}, field(t('f_password_current'), current), field(t('f_password_new'), next, t('f_password_hint')), codeField, box, submit);
    sec.appendChild(form);
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      busy(submit, true);
      clear(box);
      var body = { current_password: current.value, new_password: next.value };
      if (!codeField.hidden) body.totp = code.value.trim();
      try {
        await P.request('POST', '/auth/password', { body: body });
        busy(submit, false);
        current.value = next.value = code.value = '';
        codeField.hidden = true;
        info(box, t('pw_changed'));
      } catch (err) {
        busy(submit, false);
        if (err.code === 'mfa_required') {
          codeField.hidden = false;
          info(box, t('login_need_code'), 'info');
          code.focus();
        } else if (err.code === 'invalid_credentials') {
          info(box, t('wrong_password'), 'error');
        } else refuse(box, err, submit);
      }
    });
    return sec;
  }

  // --- start -------------------------------------------------------------------

  document.querySelector('.skip').addEventListener('click', function (ev) {
    ev.preventDefault();
    main.focus();
  });
  var lang = document.getElementById('lang');
  lang.value = P.lang;
  lang.addEventListener('change', function () {
    P.setLang(lang.value);
    render();
  });
  window.addEventListener('hashchange', render);
  (async function () {
    if (localStorage.getItem('palisade.signedIn')) await loadMe();
    render();
  })();
})();
