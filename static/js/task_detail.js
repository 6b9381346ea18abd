/* Task page: tabs, the live transcript (events arrive over the websocket with their HTML
 * rendered by the server), and refreshes of the summary (status, stages, tokens) and of the
 * documents (plan, review, diff) when the stream says the task or a stage changed. */
(function () {
  "use strict";
  var transcript = document.getElementById("transcript");
  if (!transcript) return;

  // --- tabs
  var tabs = document.querySelectorAll("[data-tab]");
  function show(name) {
    tabs.forEach(function (tab) {
      var selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      document.getElementById("tab-" + tab.dataset.tab).hidden = !selected;
    });
    if (name === "transcript") followBottom();
  }
  tabs.forEach(function (tab) {
    tab.addEventListener("click", function () {
      show(tab.dataset.tab);
      history.replaceState(null, "", "#" + tab.dataset.tab);
    });
  });
  var initial = window.location.hash.replace("#", "");
  if (initial && document.getElementById("tab-" + initial)) show(initial);

  // --- confirmations for destructive buttons (the summary is re-rendered: delegate)
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // --- live parts
  var summary = document.getElementById("task-summary");
  var documents = document.getElementById("tab-documents");
  var refreshSummary = TacxLive.debounced(250, function () {
    return TacxLive.reload(summary, summary.dataset.summaryUrl);
  });
  var refreshDocuments = TacxLive.debounced(1000, function () {
    return TacxLive.reload(documents, documents.dataset.documentsUrl);
  });
  var follow = document.getElementById("follow");

  function followBottom() {
    if (follow && follow.checked && !document.getElementById("tab-transcript").hidden) {
      transcript.lastElementChild && transcript.lastElementChild.scrollIntoView({ block: "end" });
    }
  }

  function lastResult() {
    var items = transcript.querySelectorAll("li.event");
    return items.length ? items[items.length - 1].dataset.result : "";
  }

  function append(event) {
    if (document.getElementById("event-" + event.id)) return;
    var empty = transcript.querySelector(".empty");
    if (empty) empty.remove();
    var result = event.attempt_id ? String(event.attempt_id) : "";
    if (result && result !== lastResult()) {
      var head = document.createElement("li");
      head.className = "attempt-head";
      head.dataset.result = result;
      head.textContent = event.stage + " · attempt " + event.attempt;
      transcript.appendChild(head);
    }
    transcript.insertAdjacentHTML("beforeend", event.html);
  }

  TacxLive.connect("/ws/tasks/" + transcript.dataset.task + "/events/", transcript.dataset.liveAfter, function (events) {
    var status = false, usage = false;
    events.forEach(function (event) {
      append(event);
      if (event.kind === "status") status = true;
      if (event.kind === "usage" || event.kind === "result") usage = true;
    });
    if (status || usage) refreshSummary();
    if (status) refreshDocuments();
    followBottom();
  });
})();
