/* Tasks page: the rows are refreshed from the server whenever the event stream says a task
 * changed (status, usage, result); other events (messages, tool calls) do not change a row.
 * A click anywhere on a row opens its task (the row's title link stays the one keyboard target:
 * the row itself takes no focus), and the "started" times stay relative as time passes. */
(function () {
  "use strict";
  var box = document.getElementById("task-rows");
  if (!box) return;
  var ROW_KINDS = { status: true, usage: true, result: true };
  var refresh = TacxLive.debounced(300, function () {
    return TacxLive.reload(box, box.dataset.rowsUrl + window.location.search);
  });
  TacxLive.connect("/ws/events/", box.dataset.liveAfter, function (events) {
    if (events.some(function (e) { return ROW_KINDS[e.kind]; })) refresh();
  });

  box.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.target.closest("a, button, input, select, summary, label")) return;
    var row = event.target.closest("tr[data-task]");
    var link = row && row.querySelector("a.row-link");
    if (!link) return;
    if (String(window.getSelection ? window.getSelection() : "")) return;  // selecting text, not opening
    if (event.ctrlKey || event.metaKey || event.shiftKey) window.open(link.href, "_blank", "noopener");
    else window.location.assign(link.href);
  });

  /* "just now", "42 s ago", "5 min ago", "3 h ago", "2 days ago" like the server's ago filter. */
  function ago(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 10) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    var days = Math.floor(seconds / 86400);
    return days + (days === 1 ? " day ago" : " days ago");
  }
  window.setInterval(function () {
    box.querySelectorAll("td.started time[datetime]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var queued = el.textContent.indexOf("queued ") === 0 ? "queued " : "";
      el.textContent = queued + ago((Date.now() - at) / 1000);
    });
  }, 15000);
})();
