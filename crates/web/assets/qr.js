// A small QR code encoder (ISO/IEC 18004): byte mode, error correction level L or M,
// versions 1 to 10 (up to 213 bytes at M), mask chosen by the standard's penalty
// rules. Enough for an otpauth:// URI, drawn locally so the TOTP secret never
// leaves the page. Also loads under Node for the tests (module.exports).
(function (root) {
  'use strict';
  // Per version (index 1..10): error-correction codewords per block, and blocks.
  var ECC = { L: [0, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18], M: [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26] };
  var BLOCKS = { L: [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4], M: [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5] };
  var FORMAT = { L: 1, M: 0 };
  var MAX_VERSION = 10;

  // Modules left for data and error correction once the function patterns are drawn.
  function rawModules(ver) {
    var r = (16 * ver + 128) * ver + 64;
    if (ver >= 2) {
      var n = Math.floor(ver / 7) + 2;
      r -= (25 * n - 10) * n - 55;
      if (ver >= 7) r -= 36;
    }
    return r;
  }

  function dataCodewords(ver, ecl) {
    return Math.floor(rawModules(ver) / 8) - ECC[ecl][ver] * BLOCKS[ecl][ver];
  }

  // GF(2^8) multiplication modulo x^8 + x^4 + x^3 + x^2 + 1.
  function mul(x, y) {
    var z = 0;
    for (var i = 7; i >= 0; i--) {
      z = (z << 1) ^ ((z >>> 7) * 0x11d);
      z ^= ((y >>> i) & 1) * x;
    }
    return z;
  }

  function rsDivisor(degree) {
    var result = [];
    for (var i = 0; i < degree - 1; i++) result.push(0);
    result.push(1);
    for (var k = 0, root = 1; k < degree; k++) {
      for (var j = 0; j < result.length; j++) {
        result[j] = mul(result[j], root);
        if (j + 1 < result.length) result[j] ^= result[j + 1];
      }
      root = mul(root, 2);
    }
    return result;
  }

  function rsRemainder(data, divisor) {
    var result = divisor.map(function () {
      return 0;
    });
    data.forEach(function (b) {
      var factor = b ^ result.shift();
      result.push(0);
      divisor.forEach(function (coef, i) {
        result[i] ^= mul(coef, factor);
      });
    });
    return result;
  }

  // Split into blocks, add each block's error correction, interleave.
  function interleave(data, ver, ecl) {
    var count = BLOCKS[ecl][ver], eccLen = ECC[ecl][ver], raw = Math.floor(rawModules(ver) / 8);
    var short = count - (raw % count), shortLen = Math.floor(raw / count);
    var divisor = rsDivisor(eccLen), blocks = [];
    for (var i = 0, k = 0; i < count; i++) {
      var block = data.slice(k, k + shortLen - eccLen + (i < short ? 0 : 1));
      k += block.length;
      var ecc = rsRemainder(block, divisor);
      if (i < short) block.push(0);
      blocks.push(block.concat(ecc));
    }
    var out = [];
    for (var c = 0; c < blocks[0].length; c++) {
      for (var b = 0; b < count; b++) if (c !== shortLen - eccLen || b >= short) out.push(blocks[b][c]);
    }
    return out;
  }

  function alignmentPositions(ver, size) {
    if (ver === 1) return [];
    var n = Math.floor(ver / 7) + 2;
    var step = Math.floor((ver * 8 + n * 3 + 5) / (n * 4 - 4)) * 2;
    var out = [6];
    for (var pos = size - 7; out.length < n; pos -= step) out.splice(1, 0, pos);
    return out;
  }

  var MASKS = [
    function (x, y) { return (x + y) % 2 === 0; },
    function (x, y) { return y % 2 === 0; },
    function (x) { return x % 3 === 0; },
    function (x, y) { return (x + y) % 3 === 0; },
    function (x, y) { return (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0; },
    function (x, y) { return ((x * y) % 2) + ((x * y) % 3) === 0; },
    function (x, y) { return (((x * y) % 2) + ((x * y) % 3)) % 2 === 0; },
    function (x, y) { return (((x + y) % 2) + ((x * y) % 3)) % 2 === 0; },
  ];

  function Grid(ver) {
    var size = ver * 4 + 17;
    this.size = size;
    this.dark = [];
    this.fixed = [];
    for (var y = 0; y < size; y++) {
      this.dark.push(new Array(size).fill(false));
      this.fixed.push(new Array(size).fill(false));
    }
    for (var i = 0; i < size; i++) {
      this.set(6, i, i % 2 === 0);
      this.set(i, 6, i % 2 === 0);
    }
    this.finder(3, 3);
    this.finder(size - 4, 3);
    this.finder(3, size - 4);
    var pos = alignmentPositions(ver, size), last = pos.length - 1;
    for (var a = 0; a <= last; a++) {
      for (var b = 0; b <= last; b++) {
        if ((a === 0 && b === 0) || (a === 0 && b === last) || (a === last && b === 0)) continue;
        for (var dy = -2; dy <= 2; dy++) {
          for (var dx = -2; dx <= 2; dx++) this.set(pos[a] + dx, pos[b] + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
        }
      }
    }
    this.format('M', 0); // reserves the format areas; drawn for real once the mask is chosen
    if (ver >= 7) {
      var rem = ver;
      for (var k = 0; k < 12; k++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
      var bits = (ver << 12) | rem;
      for (var j = 0; j < 18; j++) {
        var bit = ((bits >>> j) & 1) === 1, p = size - 11 + (j % 3), q = Math.floor(j / 3);
        this.set(p, q, bit);
        this.set(q, p, bit);
      }
    }
  }

  Grid.prototype.set = function (x, y, dark) {
    this.dark[y][x] = dark;
    this.fixed[y][x] = true;
  };

  Grid.prototype.finder = function (cx, cy) {
    for (var dy = -4; dy <= 4; dy++) {
      for (var dx = -4; dx <= 4; dx++) {
        var d = Math.max(Math.abs(dx), Math.abs(dy)), x = cx + dx, y = cy + dy;
        if (x >= 0 && x < this.size && y >= 0 && y < this.size) this.set(x, y, d !== 2 && d !== 4);
      }
    }
  };

  Grid.prototype.format = function (ecl, mask) {
    var data = (FORMAT[ecl] << 3) | mask, rem = data, size = this.size;
    for (var i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    var bits = ((data << 10) | rem) ^ 0x5412;
    function bit(i) {
      return ((bits >>> i) & 1) === 1;
    }
    for (var a = 0; a <= 5; a++) this.set(8, a, bit(a));
    this.set(8, 7, bit(6));
    this.set(8, 8, bit(7));
    this.set(7, 8, bit(8));
    for (var b = 9; b < 15; b++) this.set(14 - b, 8, bit(b));
    for (var c = 0; c < 8; c++) this.set(size - 1 - c, 8, bit(c));
    for (var d = 8; d < 15; d++) this.set(8, size - 15 + d, bit(d));
    this.set(8, size - 8, true);
  };

  // Codewords in the zig-zag order, two columns at a time from the bottom right.
  Grid.prototype.place = function (codewords) {
    var size = this.size, i = 0;
    for (var right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (var v = 0; v < size; v++) {
        for (var j = 0; j < 2; j++) {
          var x = right - j, y = ((right + 1) & 2) === 0 ? size - 1 - v : v;
          if (!this.fixed[y][x] && i < codewords.length * 8) {
            this.dark[y][x] = ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
            i++;
          }
        }
      }
    }
  };

  Grid.prototype.mask = function (m) {
    for (var y = 0; y < this.size; y++) {
      for (var x = 0; x < this.size; x++) if (!this.fixed[y][x] && MASKS[m](x, y)) this.dark[y][x] = !this.dark[y][x];
    }
  };

  // The standard's penalty: runs, 2x2 blocks, finder-like patterns, dark balance.
  Grid.prototype.penalty = function () {
    var size = this.size, g = this.dark, score = 0, dark = 0;
    function scan(get) {
      for (var a = 0; a < size; a++) {
        var run = 0, prev = -1, pattern = 0;
        for (var b = 0; b < size; b++) {
          var v = get(a, b) ? 1 : 0;
          if (v === prev) {
            run++;
            if (run === 5) score += 3;
            else if (run > 5) score++;
          } else {
            run = 1;
            prev = v;
          }
          pattern = ((pattern << 1) | v) & 0x7ff;
          if (b >= 10 && (pattern === 0x5d0 || pattern === 0x05d)) score += 40;
        }
      }
    }
    scan(function (y, x) { return g[y][x]; });
    scan(function (x, y) { return g[y][x]; });
    for (var y = 0; y < size; y++) {
      for (var x = 0; x < size; x++) {
        if (g[y][x]) dark++;
        if (x < size - 1 && y < size - 1 && g[y][x] === g[y][x + 1] && g[y][x] === g[y + 1][x] && g[y][x] === g[y + 1][x + 1]) score += 3;
      }
    }
    var total = size * size;
    return score + (Math.ceil(Math.abs(dark * 20 - total * 10) / total) - 1) * 10;
  };

  // `text` as a QR code: { size, version, mask, dark(x, y) }.
  function encode(text, ecl) {
    ecl = ecl === 'L' ? 'L' : 'M';
    var bytes = Array.from(new TextEncoder().encode(text)), ver, capacity;
    for (ver = 1; ; ver++) {
      if (ver > MAX_VERSION) throw new RangeError('too long for a QR code of version ' + MAX_VERSION);
      capacity = dataCodewords(ver, ecl) * 8;
      if (4 + (ver < 10 ? 8 : 16) + bytes.length * 8 <= capacity) break;
    }
    var bits = [];
    function put(value, len) {
      for (var i = len - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    }
    put(4, 4);
    put(bytes.length, ver < 10 ? 8 : 16);
    bytes.forEach(function (b) {
      put(b, 8);
    });
    put(0, Math.min(4, capacity - bits.length));
    put(0, (8 - (bits.length % 8)) % 8);
    for (var pad = 0xec; bits.length < capacity; pad ^= 0xec ^ 0x11) put(pad, 8);
    var data = [];
    for (var i = 0; i < bits.length; i += 8) {
      var byte = 0;
      for (var j = 0; j < 8; j++) byte = (byte << 1) | bits[i + j];
      data.push(byte);
    }
    var grid = new Grid(ver);
    grid.place(interleave(data, ver, ecl));
    var best = 0, bestScore = Infinity;
    for (var m = 0; m < 8; m++) {
      grid.mask(m);
      grid.format(ecl, m);
      var s = grid.penalty();
      if (s < bestScore) {
        best = m;
        bestScore = s;
      }
      grid.mask(m);
    }
    grid.mask(best);
    grid.format(ecl, best);
    return {
      size: grid.size,
      version: ver,
      mask: best,
      dark: function (x, y) {
        return grid.dark[y][x];
      },
    };
  }

  // Draw `text` on `canvas` with a four-module quiet zone, `scale` pixels a module.
  function draw(canvas, text, scale) {
    var q = encode(text, 'M'), quiet = 4, px = scale || 4, side = (q.size + 2 * quiet) * px;
    canvas.width = canvas.height = side;
    var ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, side, side);
    ctx.fillStyle = '#000';
    for (var y = 0; y < q.size; y++) {
      for (var x = 0; x < q.size; x++) if (q.dark(x, y)) ctx.fillRect((x + quiet) * px, (y + quiet) * px, px, px);
    }
    return q;
  }

  var api = { encode: encode, draw: draw };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else (root.Palisade = root.Palisade || {}).qr = api;
})(this);
