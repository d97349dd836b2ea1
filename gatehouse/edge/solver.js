// The human check's solver, inlined into the challenge page (allowed by its CSP hash).
// Finds a counter such that SHA-256(token + counter) starts with `difficulty` zero bits,
// in slices that yield to the page between them, then posts it as a normal form navigation.
(function () {
  "use strict";
  var form = document.getElementById("gh-challenge");
  var status = document.getElementById("gh-status");
  var bar = document.getElementById("gh-progress");
  var token = form.elements.token.value;
  var difficulty = parseInt(form.getAttribute("data-difficulty"), 10);
  var expected = Math.pow(2, difficulty);
  var encoder = new TextEncoder();

  function say(text) { status.textContent = text; }

  if (!navigator.cookieEnabled) {
    say("Cookies are blocked for this site. The check keeps its result in a cookie: allow " +
        "cookies for this site and reload the page.");
    return;
  }

  function zeroBits(bytes) {
    var bits = 0;
    for (var i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) { bits += 8; continue; }
      return bits + Math.clz32(bytes[i]) - 24;
    }
    return bits;
  }

  // Web Crypto exists only in secure contexts (https, localhost); plain http gets this one.
  var K = [];
  (function () {
    var n = 2, found = 0;
    function frac(x) { return ((x - Math.floor(x)) * 4294967296) | 0; }
    while (found < 64) {
      var prime = true;
      for (var d = 2; d * d <= n; d++) { if (n % d === 0) { prime = false; break; } }
      if (prime) { K[found++] = frac(Math.pow(n, 1 / 3)); }
      n++;
    }
  })();
  function sha256(bytes) {
    var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    var length = bytes.length, blocks = ((length + 9 + 63) >> 6) << 6;
    var data = new Uint8Array(blocks);
    data.set(bytes);
    data[length] = 0x80;
    var view = new DataView(data.buffer);
    view.setUint32(blocks - 4, length * 8);
    var w = new Int32Array(64);
    for (var off = 0; off < blocks; off += 64) {
      for (var t = 0; t < 16; t++) { w[t] = view.getInt32(off + t * 4); }
      for (t = 16; t < 64; t++) {
        var a0 = w[t - 15], a1 = w[t - 2];
        var s0 = ((a0 >>> 7) | (a0 << 25)) ^ ((a0 >>> 18) | (a0 << 14)) ^ (a0 >>> 3);
        var s1 = ((a1 >>> 17) | (a1 << 15)) ^ ((a1 >>> 19) | (a1 << 13)) ^ (a1 >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
      }
      var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
      for (t = 0; t < 64; t++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var t1 = (k + S1 + ((e & f) ^ (~e & g)) + K[t] + w[t]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0;
      h[3] = (h[3] + d) | 0; h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0;
      h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
    }
    var out = new Uint8Array(32);
    var outView = new DataView(out.buffer);
    for (t = 0; t < 8; t++) { outView.setInt32(t * 4, h[t]); }
    return out;
  }

  var subtle = window.crypto && window.crypto.subtle;
  function hash(counter) {
    var bytes = encoder.encode(token + counter);
    if (subtle) {
      return subtle.digest("SHA-256", bytes).then(function (d) { return new Uint8Array(d); });
    }
    return Promise.resolve(sha256(bytes));
  }

  // a message task, not a timer: timers are throttled in background tabs, and several tabs
  // solving at once must all finish
  function yieldToPage() {
    return new Promise(function (resolve) {
      var channel = new MessageChannel();
      channel.port1.onmessage = function () { resolve(); };
      channel.port2.postMessage(0);
    });
  }

  var BATCH = 256, SLICE_MS = 40;
  async function solve() {
    var counter = 0;
    for (;;) {
      var sliceEnd = Date.now() + SLICE_MS;
      while (Date.now() < sliceEnd) {
        var batch = [];
        for (var i = 0; i < BATCH; i++) { batch.push(hash(counter + i)); }
        var digests = await Promise.all(batch);
        for (i = 0; i < digests.length; i++) {
          if (zeroBits(digests[i]) >= difficulty) { return counter + i; }
        }
        counter += BATCH;
      }
      // the chance a solution would have turned up by now; honest, as work has no end date
      var done = 1 - Math.exp(-counter / expected);
      bar.value = Math.min(99, Math.round(done * 100));
      say("Checking your browser… " + counter.toLocaleString() + " tries so far.");
      await yieldToPage();
    }
  }

  say("Checking your browser… this takes a moment and happens only once in a while.");
  solve().then(function (counter) {
    form.elements.counter.value = String(counter);
    bar.value = 100;
    say("Done — taking you on.");
    form.submit();
  }, function (err) {
    say("Your browser could not run the check (" + err + "). Try another browser, or " +
        "contact support with the Ray ID below.");
  });
})();
