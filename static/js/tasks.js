/* Tasks page: the rows are refreshed from the server whenever the event stream says a task
 * changed (status, usage, result); other events (messages, tool calls) do not change a row. */
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
})();
