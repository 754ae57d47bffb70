/* SMS segment counter: the same GSM 03.38 rules as smsblast/sms.py, so the page agrees with the server.
 *
 * GSM-7: 160 septets in one SMS, 153 per part when concatenated; extension characters cost two septets
 * and an escape pair never straddles a part. Anything else turns the whole text UCS-2: 70 UTF-16 units in
 * one SMS, 67 per part; a surrogate pair never straddles a part. Parts are packed greedily.
 * Positions are counted in code points, as Python indexes strings.
 */
(function (global) {
  "use strict";

  var GSM7_BASIC =
    "@£$¥èéùìòÇ\nØø\rÅå" +
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ" +
    " !\"#¤%&'()*+,-./" +
    "0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNO" +
    "PQRSTUVWXYZÄÖÑÜ§" +
    "¿abcdefghijklmno" +
    "pqrstuvwxyzäöñüà";
  var GSM7_EXTENSION = "\f^{}\\[~]|€";
  var MAX_SEGMENTS = 10;
  var SINGLE = { GSM7: 160, UCS2: 70 };
  var CONCATENATED = { GSM7: 153, UCS2: 67 };

  var basic = new Set(Array.from(GSM7_BASIC));
  var extension = new Set(Array.from(GSM7_EXTENSION));

  var ZERO_WIDTH = "\u200b\u200c\u200d\ufeff";
  var UNICODE_SPACES = "\t\u00a0\u202f\u205f\u3000";
  for (var c = 0x2000; c < 0x200b; c++) UNICODE_SPACES += String.fromCharCode(c);

  var REPLACEMENTS = {};
  function map(chars, replacement) {
    Array.from(chars).forEach(function (ch) { REPLACEMENTS[ch] = replacement; });
  }
  map("\u2018\u2019\u201a\u201b\u2032\u2039\u203a`\u00b4", "'");
  map("\u02bc\u02bb\u02b9", "'"); // apostrophes and primes typed as modifier letters
  map("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\u02ba", '"');
  map("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2022", "-");
  REPLACEMENTS["\u2026"] = "...";
  REPLACEMENTS["\u2265"] = ">=";
  REPLACEMENTS["\u2264"] = "<=";
  REPLACEMENTS["\u00d7"] = "x";
  REPLACEMENTS["\u00b1"] = "+/-";
  map("\u00b0\u00ba", "o"); // the degree sign, and the ordinal indicator typed for it
  REPLACEMENTS["\u00b2"] = "2";
  REPLACEMENTS["\u00b3"] = "3";
  REPLACEMENTS["\u00bd"] = "1/2";
  REPLACEMENTS["\u00bc"] = "1/4";
  REPLACEMENTS["\u00be"] = "3/4";
  map(UNICODE_SPACES, " ");
  map(ZERO_WIDTH, "");
  map("\u00ad\u2060", ""); // break hints: soft hyphen, word joiner
  map("\u2028\u2029", "\n"); // line and paragraph separators
  map("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", ""); // direction controls, refused on submission
  map("\u200e\u200f\u061c", ""); // direction marks: left-to-right, right-to-left, Arabic letter

  function isGsm(ch) { return basic.has(ch) || extension.has(ch); }

  function isGsm7(text) {
    return Array.from(text).every(isGsm);
  }

  function encodingOf(text) { return isGsm7(text) ? "GSM7" : "UCS2"; }

  function unitCost(ch, encoding) {
    if (encoding === "GSM7") return extension.has(ch) ? 2 : 1;
    return ch.codePointAt(0) > 0xffff ? 2 : 1;
  }

  function units(chars, encoding) {
    var total = 0;
    for (var i = 0; i < chars.length; i++) total += unitCost(chars[i], encoding);
    return total;
  }

  function pack(chars, encoding) {
    if (!chars.length) return [];
    if (units(chars, encoding) <= SINGLE[encoding]) return [chars.join("")];
    var size = CONCATENATED[encoding];
    var parts = [];
    var start = 0;
    var used = 0;
    for (var i = 0; i < chars.length; i++) {
      var cost = unitCost(chars[i], encoding);
      if (used + cost > size) {
        parts.push(chars.slice(start, i).join(""));
        start = i;
        used = 0;
      }
      used += cost;
    }
    parts.push(chars.slice(start).join(""));
    return parts;
  }

  function replacementFor(ch) {
    if (Object.prototype.hasOwnProperty.call(REPLACEMENTS, ch)) return REPLACEMENTS[ch];
    // An accented Latin letter outside GSM-7 falls back to its base letter. Only a letter: a symbol's mark can be
    // what it says ("≠" is "=" struck through), and the Greek question mark is no ";".
    if (!/\p{L}/u.test(ch)) return null;
    var base = ch.normalize("NFD").replace(/\p{Mn}/gu, "");
    if (base && base !== ch && isGsm7(base)) return base;
    return null;
  }

  // The combining diacritical marks of letters, by the ranges the server names (marks added since are not among them).
  var DIACRITIC_RANGES = [[0x0300, 0x036f], [0x1ab0, 0x1ace], [0x1dc0, 0x1dff]];
  function isDiacriticMark(ch) {
    var code = ch.codePointAt(0);
    return /\p{Mn}/u.test(ch) && DIACRITIC_RANGES.some(function (r) { return code >= r[0] && code <= r[1]; });
  }

  /* A mark right after a GSM-7 letter composes with it into the GSM-7 letter ("e" and U+0301 into "é") or goes,
   * leaving the letter; on no letter, or one without a GSM-7 form, it has none. Invisible characters the suggestion
   * removes are looked past. Returns [start, replacement]. */
  function markReplacement(chars, position) {
    var baseAt = position - 1;
    while (baseAt >= 0 && (isDiacriticMark(chars[baseAt]) || REPLACEMENTS[chars[baseAt]] === "")) baseAt--;
    if (baseAt < 0 || !/\p{L}/u.test(chars[baseAt])) return [position, null];
    var base = chars[baseAt];
    if (isGsm(base)) {
      var composed = (base + chars[position]).normalize("NFC");
      var onTheLetter = !chars.slice(baseAt + 1, position).some(isDiacriticMark);
      if (onTheLetter && Array.from(composed).length === 1 && isGsm(composed)) return [baseAt, composed];
      return [position, ""];
    }
    return [position, replacementFor(base) !== null ? "" : null];
  }

  function nonGsmChar(chars, position) {
    var ch = chars[position];
    var start = position;
    var replacement = replacementFor(ch);
    if (replacement === null && isDiacriticMark(ch)) {
      var found = markReplacement(chars, position);
      start = found[0];
      replacement = found[1];
    }
    return { char: ch, position: position, start: start, replacement: replacement };
  }

  // What Python's str.strip() takes for white space: JavaScript's \s and also U+001C-U+001F and U+0085.
  var BLANK = /^[\s\x1c-\x1f\x85]*$/;

  // The invisible characters the suggestion removes count as blank, as on the server.
  function blank(text) {
    var shown = Array.from(text).filter(function (ch) { return REPLACEMENTS[ch] !== ""; });
    return BLANK.test(shown.join(""));
  }

  // --- characters a reader cannot see as they are: the rule of smsblast.sms.hidden_characters, whose comments
  // say why each kind matters. Positions are in code points; kinds are named as there.
  var BIDI_CONTROLS = new Set(Array.from("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"));
  var BLANK_GLYPHS = new Set(Array.from("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e"));
  var BLACK_FLAG = "\u{1f3f4}";
  // Python's str.isspace(): JavaScript's \s without U+FEFF, with U+001C-U+001F and U+0085.
  function isSpace(ch) { return ch !== "\ufeff" && /^[\s\x1c-\x1f\x85]$/.test(ch); }
  function inRange(ch, low, high) { var code = ch.codePointAt(0); return code >= low && code <= high; }

  function isPictographic(ch) {
    return inRange(ch, 0x1f000, 0x10ffff) || inRange(ch, 0x2190, 0x21ff) || inRange(ch, 0x2300, 0x27bf) ||
      inRange(ch, 0x2b00, 0x2bff) || "\u00a9\u00ae\u203c\u2049\u2122\u2139".indexOf(ch) >= 0;
  }

  function joinsEmoji(chars, position) {
    var before = position - 1;
    while (before >= 0 && (inRange(chars[before], 0xfe00, 0xfe0f) || inRange(chars[before], 0x1f3fb, 0x1f3ff))) before--;
    var after = position + 1;
    return before >= 0 && after < chars.length && isPictographic(chars[before]) && isPictographic(chars[after]);
  }

  function inFlagTags(chars, position) {
    var start = position;
    while (start > 0 && inRange(chars[start - 1], 0xe0020, 0xe007f)) start--;
    return start > 0 && chars[start - 1] === BLACK_FLAG;
  }

  function looksLikeAscii(ch, inLatinWord) {
    if (/\p{Nd}/u.test(ch)) return true;
    var folded = ch.normalize("NFKC");
    if (folded !== ch && /^[A-Za-z0-9]+$/.test(folded)) return true;
    // The server asks whether the character's name starts with "LATIN": a Latin letter's does, but for modifier
    // letters and the letterlike symbols and number forms of U+2100-U+218F ("ANGSTROM SIGN", "ROMAN NUMERAL..."),
    // bar the subscript schwa and the reversed c.
    var latinName = /\p{Script=Latin}/u.test(ch) && !/\p{Lm}/u.test(ch) && !inRange(ch, 0x2100, 0x218f);
    if (latinName || ch === "\u2094" || ch === "\u2184") return false;
    // Tangut ideographs have no name in the server's Unicode data, which leaves them unmarked there.
    if (inRange(ch, 0x17000, 0x187f7) || inRange(ch, 0x18d00, 0x18d08)) return false;
    return inLatinWord;
  }

  function hiddenKind(chars, position, inLatinWord) {
    var ch = chars[position];
    if (BIDI_CONTROLS.has(ch)) return "reorders";
    if (/\p{Cc}/u.test(ch)) return "\n\r\t".indexOf(ch) >= 0 ? null : ch === "\f" ? "invisible" : "control";
    if (ch === "\u200d" && joinsEmoji(chars, position)) return null;
    if (inRange(ch, 0xe0020, 0xe007f) && inFlagTags(chars, position)) return null;
    if (inRange(ch, 0xfe00, 0xfe0f) || inRange(ch, 0xe0100, 0xe01ef)) {
      var before = position ? chars[position - 1] : "";
      return before && (isPictographic(before) || "0123456789#*".indexOf(before) >= 0) ? null : "invisible";
    }
    if (/[\p{Cf}\p{Zl}\p{Zp}]/u.test(ch) || BLANK_GLYPHS.has(ch)) return "invisible";
    if (/[\p{L}\p{N}]/u.test(ch) && ch.codePointAt(0) > 0x7f && looksLikeAscii(ch, inLatinWord)) return "look_alike";
    return null;
  }

  /* Return the characters of the text a page would show as nothing or as another character:
   * [{char, position, code_point, kind}], as smsblast.sms.hidden_characters returns them. */
  function hiddenCharacters(text) {
    var chars = Array.from(text);
    var lead = 0;
    while (lead < chars.length && isSpace(chars[lead])) lead++;
    var end = chars.length;
    while (end > lead && isSpace(chars[end - 1])) end--;
    var trail = end > lead ? end : 0;
    var inLatinWord = new Array(chars.length).fill(false);
    var word = [];
    chars.concat([""]).forEach(function (ch, position) {
      if (ch && /[\p{L}\p{N}]/u.test(ch)) {
        word.push(position);
      } else {
        if (word.some(function (at) { return /[A-Za-z]/.test(chars[at]); })) {
          word.forEach(function (at) { inLatinWord[at] = true; });
        }
        word = [];
      }
    });
    var hidden = [];
    chars.forEach(function (ch, position) {
      var kind = hiddenKind(chars, position, inLatinWord[position]);
      if (kind === null && (position < lead || position >= trail)) kind = "edge_blank";
      if (kind !== null) {
        var code = "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
        hidden.push({ char: ch, position: position, code_point: code, kind: kind });
      }
    });
    return hidden;
  }

  /* Return the analysis of `text` with the fields of smsblast.sms.Analysis, plus `error` when the
   * server would refuse it (blank, or more than MAX_SEGMENTS segments). */
  function analyze(text) {
    var chars = Array.from(text);
    var encoding = encodingOf(text);
    var parts = pack(chars, encoding);
    var segments = parts.length;
    var perSegment = segments <= 1 ? SINGLE[encoding] : CONCATENATED[encoding];
    var last = parts.length ? Array.from(parts[parts.length - 1]) : [];
    var nonGsm = [];
    chars.forEach(function (ch, position) {
      if (!isGsm(ch)) nonGsm.push(nonGsmChar(chars, position));
    });
    var suggestion = null;
    var suggestionEncoding = null;
    var suggestionSegments = null;
    if (nonGsm.some(function (item) { return item.replacement !== null; })) {
      var replaced = chars.slice();
      nonGsm.forEach(function (item) {
        if (item.replacement === null) return;
        // The letter a mark composes with is GSM-7, and what stands between them is removed.
        for (var at = item.start; at < item.position; at++) replaced[at] = "";
        replaced[item.position] = item.replacement;
      });
      suggestion = replaced.join("");
      suggestionEncoding = encodingOf(suggestion);
      suggestionSegments = pack(Array.from(suggestion), suggestionEncoding).length;
    }
    var error = null;
    if (blank(text)) error = "empty";
    else if (segments > MAX_SEGMENTS) error = "too_long";
    return {
      encoding: encoding,
      length: chars.length,
      units: units(chars, encoding),
      segments: segments,
      per_segment: perSegment,
      remaining: perSegment - units(last, encoding),
      non_gsm: nonGsm,
      suggestion: suggestion,
      suggestion_encoding: suggestionEncoding,
      suggestion_segments: suggestionSegments,
      parts: parts,
      hidden: hiddenCharacters(text),
      error: error,
    };
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch];
    });
  }

  /* Wire a compose form: a textarea [data-sms-input] and outputs inside [data-sms-counter]. */
  function bind(root) {
    var input = root.querySelector("[data-sms-input]");
    if (!input) return;
    var out = function (name) { return root.querySelector("[data-sms-out=" + name + "]"); };
    var labels = JSON.parse(root.getAttribute("data-sms-labels") || "{}");

    function setText(value) {
      input.value = value;
      input.dispatchEvent(new Event("input", { bubbles: true }));
      input.focus();
    }

    var lastSaid = null;

    function render() {
      var a = analyze(input.value);
      out("chars").textContent = a.length;
      out("encoding").textContent = a.encoding === "GSM7" ? "GSM-7" : "UCS-2";
      out("segments").textContent = a.segments;
      // A screen reader is told the encoding and the parts when they change: the counts at every key would
      // interrupt the typing. The page as loaded is not announced.
      var news = out("news");
      if (news) {
        var said = [out("encoding"), out("segments")].map(function (figure) {
          return figure.parentNode.textContent.replace(/\s+/g, " ").trim();
        }).join(", ");
        if (lastSaid !== null && said !== lastSaid) news.textContent = said;
        lastSaid = said;
      }
      out("remaining").textContent = a.segments ? a.remaining : a.per_segment;
      var error = out("error");
      error.textContent = a.error === "too_long" ? labels.too_long || "" : "";
      error.hidden = a.error !== "too_long";
      root.classList.toggle("is-ucs2", a.encoding === "UCS2");

      var list = out("nongsm");
      list.innerHTML = "";
      a.non_gsm.forEach(function (item) {
        var li = document.createElement("li");
        var shown = /^[\s\u200b-\u200d\ufeff]$/.test(item.char) ? "␣" : item.char;
        // A combining mark alone is drawn on a dotted circle, as character charts show it.
        if (isDiacriticMark(item.char)) shown = "\u25cc" + item.char;
        var code = "U+" + item.char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
        li.innerHTML = '<mark class="nongsm">' + escapeHtml(shown) + '</mark> <span class="muted">' + code + "</span> ";
        if (item.replacement !== null) {
          var btn = document.createElement("button");
          btn.type = "button";
          btn.className = "small";
          // A space or line break put in is named: on the button it would read as nothing at all.
          var shownReplacement = item.replacement;
          if (shownReplacement === "") shownReplacement = "∅";
          if (shownReplacement === " ") shownReplacement = labels.space || "␣";
          if (shownReplacement === "\n") shownReplacement = labels.line_break || "↵";
          btn.textContent = (labels.replace || "Replace with") + " " + shownReplacement;
          btn.addEventListener("click", function () {
            var chars = Array.from(input.value);
            if (chars[item.position] === item.char) {
              for (var at = item.start; at < item.position; at++) chars[at] = "";
              chars[item.position] = item.replacement;
              setText(chars.join(""));
            }
          });
          li.appendChild(btn);
        } else {
          li.appendChild(document.createTextNode(labels.no_replacement || ""));
        }
        list.appendChild(li);
      });
      // What handsets get but a reader does not see as it is, named as the review page names it.
      var hiddenList = out("hidden");
      hiddenList.innerHTML = "";
      a.hidden.forEach(function (item) {
        var li = document.createElement("li");
        var code = document.createElement("code");
        code.textContent = item.code_point;
        li.appendChild(code);
        var where = (labels.character || "character %(n)s").replace("%(n)s", item.position + 1);
        li.appendChild(document.createTextNode(" " + where + ": " + ((labels.hidden_kinds || {})[item.kind] || "")));
        hiddenList.appendChild(li);
      });
      out("hidden-box").hidden = !a.hidden.length;

      var box = out("suggestion-box");
      if (a.suggestion !== null) {
        box.hidden = false;
        var partsLabel = a.suggestion_segments === 1 ? labels.parts_one : labels.parts_other;
        out("suggestion-segments").textContent = (partsLabel || "%(n)s").replace("%(n)s", a.suggestion_segments);
        // An emoji or another character without a replacement keeps the suggestion UCS-2: say so, promise no GSM-7.
        out("suggestion-gsm").hidden = a.suggestion_encoding !== "GSM7";
        out("suggestion-ucs2").hidden = a.suggestion_encoding === "GSM7";
        box.querySelector("[data-sms-accept]").onclick = function () { setText(a.suggestion); };
      } else {
        box.hidden = true;
      }

      var preview = out("preview");
      preview.innerHTML = "";
      a.parts.forEach(function (part, index) {
        var bubble = document.createElement("div");
        bubble.className = "bubble";
        if (a.parts.length > 1) {
          var tag = document.createElement("span");
          tag.className = "part-tag";
          tag.textContent = (labels.part || "Part") + " " + (index + 1) + "/" + a.parts.length;
          bubble.appendChild(tag);
        }
        // Characters outside GSM-7 are marked where they stand, so the officer sees what turned the text UCS-2.
        Array.from(part).forEach(function (ch) {
          if (isGsm(ch)) {
            bubble.appendChild(document.createTextNode(ch));
          } else {
            var mark = document.createElement("mark");
            mark.className = "nongsm";
            mark.textContent = ch;
            bubble.appendChild(mark);
          }
        });
        preview.appendChild(bubble);
      });
    }

    input.addEventListener("input", render);
    render();
  }

  global.SmsCounter = { analyze: analyze, bind: bind, MAX_SEGMENTS: MAX_SEGMENTS };

  if (typeof document !== "undefined") {
    var start = function () {
      document.querySelectorAll("[data-sms-counter]").forEach(bind);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})(typeof window !== "undefined" ? window : globalThis);
