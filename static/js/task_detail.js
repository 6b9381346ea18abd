/* Task page: tabs (WAI-ARIA tab pattern), the live transcript (events arrive over the websocket
 * with their HTML rendered by the server) with its filters, the "now doing" line, and refreshes
 * of the summary (status, stages, tokens, result, failure) and of the documents (plan, review,
 * diff) when the stream says the task or a stage changed. */
(function () {
  "use strict";
  var transcript = document.getElementById("transcript");
  if (!transcript) return;

  // --- tabs: click, arrow keys, Home/End; the URL hash remembers the choice
  var tabs = Array.prototype.slice.call(document.querySelectorAll("[role=tab][data-tab]"));
  function show(name, focus) {
    tabs.forEach(function (tab) {
      var selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      tab.tabIndex = selected ? 0 : -1;
      document.getElementById("tab-" + tab.dataset.tab).hidden = !selected;
      if (selected && focus) tab.focus();
    });
    if (name === "transcript") followBottom();
  }
  tabs.forEach(function (tab, i) {
    tab.addEventListener("click", function () {
      show(tab.dataset.tab);
      history.replaceState(null, "", "#" + tab.dataset.tab);
    });
    tab.addEventListener("keydown", function (event) {
      var next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      var target = tabs[(next + tabs.length) % tabs.length];
      show(target.dataset.tab, true);
      history.replaceState(null, "", "#" + target.dataset.tab);
    });
  });
  var initial = window.location.hash.replace("#", "");
  if (initial && document.getElementById("tab-" + initial)) show(initial);

  // --- confirmations for destructive buttons (the summary is re-rendered: delegate). A form of
  // the summary (Retry, Cancel, Approve) carries the open tab in its URL's fragment: the redirect
  // back to this page has none, so the browser keeps it and the page opens on the same tab.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.dataset && form.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); return; }
    var open = tabs.filter(function (tab) { return tab.getAttribute("aria-selected") === "true"; })[0];
    if (open && form.closest && form.closest("#task-summary")) {
      form.action = form.action.split("#")[0] + "#" + open.dataset.tab;
    }
  });

  // --- transcript filters: stage, attempt, kinds; folding of long tool output
  var filters = document.getElementById("transcript-filters");
  var stageSelect = document.getElementById("filter-stage");
  var attemptSelect = document.getElementById("filter-attempt");
  var fold = document.getElementById("fold-output");
  var hiddenCount = document.getElementById("hidden-count");
  var KNOWN = ["message", "output", "stderr", "tool_call", "tool_result", "status", "error", "usage"];

  function shownKinds() {
    var kinds = {};
    filters.querySelectorAll("input[name=kind]").forEach(function (box) { kinds[box.value] = box.checked; });
    return kinds;
  }

  function visible(item, kinds) {
    var stage = stageSelect.value, attempt = attemptSelect.value;
    if (stage && item.dataset.stageName !== stage) return false;
    if (attempt && item.dataset.result !== attempt) return false;
    if (item.classList.contains("attempt-head")) return true;
    var kind = KNOWN.indexOf(item.dataset.kind) >= 0 ? item.dataset.kind : "other";
    return kinds[kind] !== false;
  }

  function applyFilters(items) {
    var kinds = shownKinds();
    (items || transcript.querySelectorAll("li.event, li.attempt-head")).forEach(function (item) {
      item.hidden = !visible(item, kinds);
    });
    var hidden = transcript.querySelectorAll("li.event[hidden]").length;
    hiddenCount.hidden = !hidden;
    hiddenCount.textContent = hidden + " event" + (hidden === 1 ? "" : "s") + " hidden by the filters.";
  }

  function applyFold(root) {
    (root || transcript).querySelectorAll("details.tool-output[data-long='1']").forEach(function (d) { d.open = !fold.checked; });
  }

  if (filters) {
    // ?attempt=<id> (the candidates panel's transcript links): open on that attempt's events.
    var wanted = new URLSearchParams(window.location.search).get("attempt");
    if (wanted && /^[0-9]+$/.test(wanted) && attemptSelect.querySelector('option[value="' + wanted + '"]')) attemptSelect.value = wanted;
    filters.addEventListener("change", function (event) {
      if (event.target === fold) { applyFold(); return; }
      if (event.target === stageSelect) {
        // An attempt of another stage cannot be shown with this stage.
        var chosen = attemptSelect.selectedOptions[0];
        if (chosen && chosen.dataset.stageName && stageSelect.value && chosen.dataset.stageName !== stageSelect.value) attemptSelect.value = "";
      }
      applyFilters();
    });
    filters.addEventListener("submit", function (event) { event.preventDefault(); });
    applyFilters();
  }

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
  var jump = document.getElementById("jump-latest");
  var scrolling = false; // a scroll this script made, not the reader

  // Follow inside the transcript pane only (the window stays where the reader put it); a reader
  // who scrolls the pane up stops following, and "Jump to latest" starts it again.
  function followBottom() {
    if (follow && follow.checked && !document.getElementById("tab-transcript").hidden) {
      scrolling = true;
      transcript.scrollTop = transcript.scrollHeight;
      window.requestAnimationFrame(function () { scrolling = false; });
    }
    if (jump) jump.hidden = !follow || follow.checked;
  }

  transcript.addEventListener("scroll", function () {
    if (scrolling || !follow) return;
    var atBottom = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 24;
    if (follow.checked !== atBottom) {
      follow.checked = atBottom;
      if (jump) jump.hidden = atBottom;
    }
  });
  if (follow) follow.addEventListener("change", followBottom);
  if (jump) jump.addEventListener("click", function () { follow.checked = true; followBottom(); });
  followBottom();

  function lastResult() {
    var items = transcript.querySelectorAll("li.event");
    return items.length ? items[items.length - 1].dataset.result : "";
  }

  function addAttemptOption(event) {
    if (!attemptSelect || attemptSelect.querySelector("option[value='" + event.attempt_id + "']")) return;
    var option = document.createElement("option");
    option.value = String(event.attempt_id);
    option.dataset.stageName = event.stage;
    option.textContent = event.stage + " · attempt " + event.attempt;
    attemptSelect.appendChild(option);
  }

  function append(event) {
    if (document.getElementById("event-" + event.id)) return [];
    var empty = transcript.querySelector(".empty");
    if (empty) empty.remove();
    var added = [];
    var result = event.attempt_id ? String(event.attempt_id) : "";
    if (result && result !== lastResult()) {
      var head = document.createElement("li");
      head.className = "attempt-head";
      head.dataset.result = result;
      head.dataset.stageName = event.stage || "";
      head.textContent = event.stage + " · attempt " + event.attempt;
      transcript.appendChild(head);
      added.push(head);
      addAttemptOption(event);
    }
    transcript.insertAdjacentHTML("beforeend", event.html);
    added.push(transcript.lastElementChild);
    return added;
  }

  function nowDoing(items) {
    var line = document.getElementById("now-doing");
    if (!line) return;
    for (var i = items.length - 1; i >= 0; i--) {
      if (items[i].dataset && items[i].dataset.now) { line.textContent = items[i].dataset.now; return; }
    }
  }

  TacxLive.connect("/ws/tasks/" + transcript.dataset.task + "/events/", transcript.dataset.liveAfter, function (events) {
    var status = false, usage = false, added = [];
    events.forEach(function (event) {
      added = added.concat(append(event));
      if (event.kind === "status") status = true;
      if (event.kind === "usage" || event.kind === "result") usage = true;
    });
    if (filters) applyFilters(added);
    added.forEach(function (item) { applyFold(item); });
    nowDoing(added);
    if (status || usage) refreshSummary();
    if (status) refreshDocuments();
    followBottom();
  });
})();
