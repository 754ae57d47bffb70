/* Every page: what a refresh by polling changed is said in words, in a live region that stays in the page.
 *
 * htmx replaces a polled block whole, so a live region inside it would be new at every refresh: a screen reader
 * would say nothing, or all of it every few seconds. A block's news is instead an element with an id and
 * data-news (the sentence, or its text when the attribute is empty); a refresh that changes it, or adds it, says it
 * in [data-live-news]. The focus stays where it is.
 */
(function () {
  "use strict";
  var region = document.querySelector("[data-live-news]");
  if (!region) return;

  function newsNow() {
    var found = {};
    document.querySelectorAll("[data-news][id]").forEach(function (element) {
      found[element.id] = (element.getAttribute("data-news") || element.textContent).replace(/\s+/g, " ").trim();
    });
    return found;
  }

  // Taken before htmx loads the blocks a page fetches on "load": those show what the page showed already.
  var told = newsNow();
  document.addEventListener("htmx:afterSettle", function () {
    var now = newsNow();
    var changed = Object.keys(now).filter(function (id) { return told[id] !== now[id]; });
    told = now;
    if (changed.length) {
      region.textContent = changed.map(function (id) { return now[id]; }).join(". ");
    }
  });
})();
