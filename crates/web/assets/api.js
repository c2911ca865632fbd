// Talking to the gateway. Every call goes to this origin with the session cookie,
// JSON bodies and the CSRF token (double submit); a proof-of-work challenge is solved
// in a Web Worker and the call repeated; every refusal becomes an ApiError that the
// views turn into a readable message.
(function () {
  'use strict';
  var P = (window.Palisade = window.Palisade || {});

  // A refusal: HTTP status, the stable `code`, the server's message, Retry-After.
  function ApiError(status, body, headers) {
    var e = (body && body.error) || {};
    this.name = 'ApiError';
    this.status = status;
    this.code = e.code || (status ? 'http_' + status : 'network');
    this.message = typeof e.message === 'string' ? e.message : '';
    var retry = headers ? parseInt(headers.get('retry-after'), 10) : NaN;
    this.retryAfter = retry > 0 ? Math.min(retry, 86400) : null;
    this.challenge = (body && body.challenge) || null;
  }
  ApiError.prototype = Object.create(Error.prototype);
  P.ApiError = ApiError;

  P.cookie = function (name) {
    var m = document.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
    return m ? decodeURIComponent(m[1]) : '';
  };

  P.sleep = function (ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  };

  async function json(res) {
    try {
      return await res.json();
    } catch (_) {
      return null;
    }
  }

  async function csrf() {
    var r = await request('GET', '/auth/csrf', {});
    return P.cookie('palisade_csrf') || (r.data && r.data.csrf_token) || '';
  }

  async function send(method, path, opts) {
    var headers = { accept: 'application/json' };
    if (method !== 'GET') {
      headers['content-type'] = 'application/json';
      var token = P.cookie('palisade_csrf') || (opts.noCsrfFetch ? '' : await csrf());
      if (token) headers['x-csrf-token'] = token;
    }
    for (var k in opts.headers || {}) headers[k] = opts.headers[k];
    try {
      return await fetch(path, {
        method: method,
        headers: headers,
        credentials: 'same-origin',
        cache: 'no-store',
        signal: opts.signal,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, null, null);
    }
  }

  // One call: `{status, data, response}` for a 2xx (data is parsed JSON unless
  // opts.stream), else an ApiError. A challenge is solved and the call repeated.
  async function request(method, path, opts) {
    opts = opts || {};
    for (var attempt = 0; ; attempt++) {
      var res = await send(method, path, opts);
      if (res.ok) {
        var data = opts.stream || res.status === 204 ? null : await json(res);
        return { status: res.status, data: data, response: res };
      }
      var err = new ApiError(res.status, await json(res), res.headers);
      if (err.code === 'challenge_required' && err.challenge && attempt < 3) {
        await P.solve(err.challenge);
        continue;
      }
      // A text to a number range whose codes are seldom entered: the proof pays for this
      // one request, so it goes with the repeat instead of buying a clearance.
      if (err.code === 'sms_proof_required' && err.challenge && attempt < 3) {
        var proof = await prove(err.challenge);
        var extra = {};
        for (var h in opts.headers || {}) extra[h] = opts.headers[h];
        extra['x-palisade-proof'] = proof;
        opts = Object.assign({}, opts, { headers: extra });
        continue;
      }
      if (err.code === 'csrf_failed' && attempt < 1) {
        await csrf();
        continue;
      }
      throw err;
    }
  }
  P.request = request;

  // --- proof of work -------------------------------------------------------
  var solving = null;

  // Solve `challenge` and redeem it for a clearance (a cookie). Calls refused at the
  // same time share one solution.
  P.solve = function (challenge) {
    if (!solving) {
      solving = solveOnce(challenge).finally(function () {
        solving = null;
      });
    }
    return solving;
  };

  async function solveOnce(ch) {
    var view = P.powView ? P.powView(ch.difficulty) : null;
    try {
      var nonce = await work(ch.seed, ch.difficulty, view);
      await request('POST', '/challenge', { body: { token: ch.token, nonce: nonce }, noCsrfFetch: true });
      if (view) view.done(true);
    } catch (e) {
      if (view) view.done(false);
      throw e;
    }
  }

  // Solve `challenge` for one request: `<token> <nonce>` for the X-Palisade-Proof header.
  async function prove(ch) {
    var view = P.powView ? P.powView(ch.difficulty) : null;
    try {
      var nonce = await work(ch.seed, ch.difficulty, view);
      if (view) view.done(true);
      return ch.token + ' ' + nonce;
    } catch (e) {
      if (view) view.done(false);
      throw e;
    }
  }

  function work(seed, difficulty, view) {
    return new Promise(function (resolve, reject) {
      var worker;
      try {
        worker = new Worker(document.querySelector('meta[name="palisade-pow"]').content);
      } catch (e) {
        return reject(new ApiError(0, { error: { code: 'challenge_unsupported' } }, null));
      }
      worker.onmessage = function (e) {
        if (e.data.nonce === undefined) {
          if (view) view.progress(e.data.tried);
          return;
        }
        worker.terminate();
        resolve(e.data.nonce);
      };
      worker.onerror = function () {
        worker.terminate();
        reject(new ApiError(0, { error: { code: 'challenge_unsupported' } }, null));
      };
      worker.postMessage({ seed: seed, difficulty: difficulty });
    });
  }

  // --- streamed chat ---------------------------------------------------------

  // POST /v1/chat/completions with `stream: true`; calls onText(piece) for each
  // piece of the reply as it arrives. Resolves to the finish reason. Abort with
  // `signal` (the connection closes, which frees the model's slot).
  P.chat = async function (body, signal, onText) {
    var r = await request('POST', '/v1/chat/completions', {
      body: body,
      signal: signal,
      stream: true,
      headers: { accept: 'text/event-stream' },
    });
    var reader = r.response.body.getReader(), decoder = new TextDecoder(), buffer = '', finish = null;
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) return finish;
      buffer += decoder.decode(chunk.value, { stream: true });
      var lines = buffer.split('\n');
      buffer = lines.pop();
      for (var i = 0; i < lines.length; i++) {
        var line = lines[i].replace(/\r$/, '');
        if (line.indexOf('data:') !== 0) continue;
        var data = line.slice(5).trim();
        if (data === '[DONE]') return finish;
        var event;
        try {
          event = JSON.parse(data);
        } catch (_) {
          continue;
        }
        if (event.error) throw new ApiError(0, event, null);
        var choice = event.choices && event.choices[0];
        if (!choice) continue;
        if (choice.finish_reason) finish = choice.finish_reason;
        var text = choice.delta && choice.delta.content;
        if (text) onText(text);
      }
    }
  };

  // Calls tick(seconds left) every second, then done(); stops early once `el` leaves
  // the page. Returns a function that cancels it.
  P.countdown = function (seconds, el, tick, done) {
    var left = Math.ceil(seconds);
    tick(left);
    var id = setInterval(function () {
      left -= 1;
      if (!el.isConnected) return clearInterval(id);
      if (left > 0) return tick(left);
      clearInterval(id);
      done();
    }, 1000);
    return function () {
      clearInterval(id);
    };
  };
})();
