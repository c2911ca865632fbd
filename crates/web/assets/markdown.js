// Safe Markdown for model replies: paragraphs, lists, emphasis, inline code, fenced
// code blocks, quotes and rules, rendered by building DOM nodes. Reply text only
// ever becomes text nodes, so HTML in a reply shows as the characters it is.
// Unclosed constructs (a reply still streaming) render as far as they go.
(function () {
  'use strict';
  var P = (window.Palisade = window.Palisade || {});

  function el(tag) {
    return document.createElement(tag);
  }

  function isSpace(c) {
    return c === undefined || /\s/.test(c);
  }

  function isWord(c) {
    return c !== undefined && /[A-Za-z0-9]/.test(c);
  }

  // Where `marker` closes emphasis opened before `from`, or -1.
  function closing(text, from, marker) {
    var c = marker[0];
    for (var j = from; j < text.length; j++) {
      if (text[j] === '`') {
        var end = text.indexOf('`', j + 1);
        if (end < 0) return -1;
        j = end;
        continue;
      }
      if (text.substr(j, marker.length) !== marker || isSpace(text[j - 1])) continue;
      if (marker.length === 1 && (text[j + 1] === c || text[j - 1] === c)) continue;
      if (c === '_' && isWord(text[j + marker.length])) continue;
      return j;
    }
    return -1;
  }

  // Inline spans of `text`, appended to `parent`.
  function inline(text, parent) {
    var buf = '';
    function flush() {
      if (buf) parent.appendChild(document.createTextNode(buf));
      buf = '';
    }
    for (var i = 0; i < text.length; ) {
      var c = text[i];
      if (c === '\\' && /[\\`*_#>+\-.]/.test(text[i + 1] || '')) {
        buf += text[i + 1];
        i += 2;
        continue;
      }
      if (c === '`') {
        var n = 1;
        while (text[i + n] === '`') n++;
        var fence = text.substr(i, n), close = text.indexOf(fence, i + n);
        if (close > i) {
          flush();
          var code = el('code');
          code.textContent = text.slice(i + n, close).replace(/^ (.+) $/, '$1');
          parent.appendChild(code);
          i = close + n;
          continue;
        }
        buf += fence;
        i += n;
        continue;
      }
      if (c === '*' || c === '_') {
        var marker = text[i + 1] === c ? c + c : c;
        var opens = !isSpace(text[i + marker.length]) && (c === '*' || !isWord(text[i - 1]));
        var end = opens ? closing(text, i + marker.length + 1, marker) : -1;
        if (end > 0) {
          flush();
          var span = el(marker.length === 2 ? 'strong' : 'em');
          inline(text.slice(i + marker.length, end), span);
          parent.appendChild(span);
          i = end + marker.length;
          continue;
        }
        buf += marker;
        i += marker.length;
        continue;
      }
      buf += c;
      i++;
    }
    flush();
  }

  var FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  var RULE = /^ {0,3}([-*_])( *\1){2,} *$/;
  var HEADING = /^ {0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$/;
  var ITEM = /^ {0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;
  var QUOTE = /^ {0,3}>\s?(.*)$/;

  // Replace the children of `root` with `source` rendered.
  function render(source, root) {
    while (root.firstChild) root.removeChild(root.firstChild);
    var lines = String(source).replace(/\r\n?/g, '\n').split('\n');
    var para = [], list = null, m;
    function endPara() {
      if (!para.length) return;
      var p = el('p');
      para.forEach(function (line, k) {
        if (k) p.appendChild(el('br'));
        inline(line, p);
      });
      root.appendChild(p);
      para = [];
    }
    function endBlock() {
      endPara();
      list = null;
    }
    for (var i = 0; i < lines.length; ) {
      var line = lines[i];
      if ((m = FENCE.exec(line))) {
        endBlock();
        var body = [], mark = m[1];
        for (i++; i < lines.length; i++) {
          var t = lines[i].trim();
          if (t.indexOf(mark) === 0 && t.replace(new RegExp('\\' + mark[0], 'g'), '') === '') break;
          body.push(lines[i]);
        }
        i++;
        var pre = el('pre'), code = el('code');
        if (m[2]) code.setAttribute('data-lang', m[2]);
        code.textContent = body.join('\n');
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      i++;
      if (/^\s*$/.test(line)) {
        endBlock();
      } else if (RULE.test(line)) {
        endBlock();
        root.appendChild(el('hr'));
      } else if ((m = HEADING.exec(line))) {
        endBlock();
        var h = el('p'), strong = el('strong');
        h.className = 'md-heading';
        inline(m[1], strong);
        h.appendChild(strong);
        root.appendChild(h);
      } else if ((m = ITEM.exec(line))) {
        endPara();
        var ordered = !!m[2];
        if (!list || list.ordered !== ordered) {
          list = { ordered: ordered, el: el(ordered ? 'ol' : 'ul') };
          if (ordered && m[2] !== '1') list.el.setAttribute('start', String(parseInt(m[2], 10)));
          root.appendChild(list.el);
        }
        list.last = el('li');
        inline(m[3], list.last);
        list.el.appendChild(list.last);
      } else if (list && /^\s{2,}\S/.test(line)) {
        list.last.appendChild(document.createTextNode(' '));
        inline(line.trim(), list.last);
      } else if ((m = QUOTE.exec(line))) {
        endBlock();
        var quoted = [m[1]];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          quoted.push(m[1]);
          i++;
        }
        var q = el('blockquote');
        render(quoted.join('\n'), q);
        root.appendChild(q);
      } else {
        list = null;
        para.push(line.trim());
      }
    }
    endPara();
  }

  P.markdown = render;
})();
