/* Workers page: heartbeats change without events, so the table is simply fetched again. */
(function () {
  "use strict";
  var box = document.getElementById("worker-rows");
  if (!box) return;
  var failures = 0;
  function refresh() {
    fetch(box.dataset.rowsUrl, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok || r.redirected) throw new Error(String(r.status));
      return r.text();
    }).then(function (html) {
      box.innerHTML = html;
      failures = 0;
    }).catch(function () {
      failures += 1;
    }).then(function () {
      window.setTimeout(refresh, Math.min(2000 * (failures + 1), 30000));
    });
  }
  window.setTimeout(refresh, 2000);
})();
