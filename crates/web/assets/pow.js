// The proof-of-work solver, run in a Web Worker so the page stays responsive.
// Finds a decimal nonce (no sign, no leading zeros) such that SHA-256 of the seed
// followed by the nonce starts with `difficulty` zero bits; see GET /challenge.
'use strict';
self.onmessage = async function (e) {
  var seed = e.data.seed, bits = e.data.difficulty, enc = new TextEncoder();
  var full = bits >> 3, rest = bits & 7, batch = 256;
  function solved(d) {
    for (var i = 0; i < full; i++) if (d[i] !== 0) return false;
    return rest === 0 || d[full] >> (8 - rest) === 0;
  }
  for (var base = 0; ; base += batch) {
    var jobs = [];
    for (var i = 0; i < batch; i++) jobs.push(crypto.subtle.digest('SHA-256', enc.encode(seed + (base + i))));
    var digests = await Promise.all(jobs);
    for (var j = 0; j < batch; j++) {
      if (solved(new Uint8Array(digests[j]))) {
        self.postMessage({ nonce: String(base + j) });
        return;
      }
    }
    if ((base + batch) % 4096 === 0) self.postMessage({ tried: base + batch });
  }
};
