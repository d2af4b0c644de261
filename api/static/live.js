// stylefarm dashboard: keeps each [data-live] block current without reloading the page.
// Every block polls its fragment URL once a second while the tab is visible, sending the
// last ETag; the server answers 304 (no body) when nothing changed, and renders a changed
// fragment once per second for all viewers. Without JavaScript the pages work as they are.
(function () {
  "use strict";
  var PERIOD_MS = 1000;

  function poll(block) {
    var url = block.getAttribute("data-live");
    var etag = null;
    function tick() {
      if (document.hidden) { return schedule(); }
      var headers = etag ? { "If-None-Match": etag } : {};
      fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" })
        .then(function (reply) {
          if (reply.status === 200) {
            etag = reply.headers.get("ETag");
            return reply.text().then(function (html) { block.innerHTML = html; });
          }
        })
        .catch(function () { /* the server is away: try again next period */ })
        .then(schedule);
    }
    function schedule() { window.setTimeout(tick, PERIOD_MS); }
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var blocks = document.querySelectorAll("[data-live]");
    for (var i = 0; i < blocks.length; i++) { poll(blocks[i]); }
  });
})();
