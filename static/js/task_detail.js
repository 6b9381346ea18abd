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
    transcript.querySelectorAll("li.step").forEach(function (step) {
      step.hidden = !step.querySelector("li.event:not([hidden])");
    });
    if (attemptSelect.value) {
      // One attempt picked (e.g. a candidate's transcript link): its last step shows, unless the
      // reader folded it by hand; earlier steps stay as they were.
      var shown = transcript.querySelectorAll("li.step:not([hidden])");
      var last = shown[shown.length - 1];
      if (last && !last.dataset.pinned) last.querySelector("details").open = true;
    }
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

  // --- steps: the same rule as dashboard/steps.py (starts_step), applied to live events
  function usageTotal(data) { return (Number(data.input_tokens) || 0) + (Number(data.output_tokens) || 0); }
  function titleOf(text) {
    var lines = String(text || "").split("\n");
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim().replace(/^[#>*\-` ]+/, "").split("**").join("").split("`").join("").trim();
      if (line) return line.length <= 120 ? line : line.slice(0, 119) + "…";
    }
    return "";
  }
  function startsStep(step, event) {
    if (!step) return true;
    if (event.kind === "message" || event.kind === "output") return step.dataset.hasTool === "1";
    if (event.kind === "tool_call") return step.dataset.hasResult === "1";
    return false;
  }
  function newStep(event, result, previous) {
    var n = transcript.querySelectorAll("li.step[data-result='" + result + "']").length + 1;
    var base = previous ? previous.dataset.total : "0";
    var li = document.createElement("li");
    li.className = "step";
    li.id = "step-" + event.id;
    li.dataset.result = result;
    li.dataset.stageName = event.stage || "";
    li.dataset.n = String(n);
    li.dataset.base = base;
    li.dataset.total = base;
    li.dataset.hasTool = "0";
    li.dataset.hasResult = "0";
    li.dataset.started = event.created_at;
    li.innerHTML = '<details class="step-box" open><summary><span class="step-n"></span> <span class="step-title"></span> <span class="step-tools"></span> ' +
      '<span class="step-meta"><span class="step-duration">0s</span> · <span class="step-tokens">0</span> tokens · <span class="step-count">0</span> rows</span></summary><ol class="step-events"></ol></details>';
    li.querySelector(".step-n").textContent = "step " + n;
    // The step before folds, unless the reader opened or closed it by hand.
    // (Only while following: a reader who scrolled up keeps the page as it is.)
    if (previous && !previous.dataset.pinned && (!follow || follow.checked)) previous.querySelector("details").open = false;
    transcript.appendChild(li);
    return li;
  }
  function tokensText(n) { return n < 1000 ? String(n) : n < 1000000 ? (n / 1000).toFixed(1) + "k" : (n / 1000000).toFixed(1) + "M"; }
  function stepAdd(step, event) {
    var data = event.data || {};
    if (event.kind === "tool_call") {
      step.dataset.hasTool = "1";
      var tools = step.querySelector(".step-tools");
      var names = (step.dataset.tools ? step.dataset.tools.split("\n") : []).concat([String(data.name || "tool").slice(0, 60)]);
      step.dataset.tools = names.join("\n");
      var counts = {}, order = [];
      names.forEach(function (name) { if (!counts[name]) { counts[name] = 0; order.push(name); } counts[name] += 1; });
      tools.textContent = order.map(function (name) { return counts[name] > 1 ? name + " ×" + counts[name] : name; }).join(", ");
    } else if (event.kind === "tool_result") {
      step.dataset.hasResult = "1";
    } else if (event.kind === "usage") {
      step.dataset.total = String(usageTotal(data));
      step.querySelector(".step-tokens").textContent = tokensText(Math.max(0, usageTotal(data) - Number(step.dataset.base)));
    } else if ((event.kind === "message" || event.kind === "output") && (data.role || "assistant") === "assistant") {
      var title = step.querySelector(".step-title");
      if (!title.textContent) title.textContent = titleOf(data.text);
    }
    var since = Date.parse(step.dataset.started), at = Date.parse(event.created_at);
    if (!isNaN(since) && !isNaN(at)) step.querySelector(".step-duration").textContent = TacxLive.duration((at - since) / 1000);
    var count = step.querySelector(".step-count");
    count.textContent = String(Number(count.textContent) + 1);
  }
  transcript.addEventListener("click", function (event) {
    var summary = event.target.closest && event.target.closest("li.step > details > summary");
    if (summary) summary.closest("li.step").dataset.pinned = "1";
  });

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
    if (!result) {
      transcript.insertAdjacentHTML("beforeend", event.html);
      added.push(transcript.lastElementChild);
      return added;
    }
    var last = transcript.lastElementChild;
    var step = last && last.classList.contains("step") && last.dataset.result === result ? last : null;
    if (startsStep(step, event)) {
      var previous = null;
      var steps = transcript.querySelectorAll("li.step[data-result='" + result + "']");
      if (steps.length) previous = steps[steps.length - 1];
      step = newStep(event, result, previous);
      added.push(step);
    }
    var list = step.querySelector("ol.step-events");
    list.insertAdjacentHTML("beforeend", event.html);
    added.push(list.lastElementChild);
    stepAdd(step, event);
    return added;
  }

  function nowDoing(items) {
    var line = document.getElementById("now-doing");
    if (!line) return;
    for (var i = items.length - 1; i >= 0; i--) {
      if (items[i].dataset && items[i].dataset.now) { line.textContent = items[i].dataset.now; return; }
    }
  }

  // --- the diff beside the log: fetched once, then again (at most every 3 s) when the agent
  // did something that can change files; a finished task's is the branch's and stays.
  var liveDiff = document.getElementById("live-diff");
  var refreshDiff = TacxLive.debounced(3000, function () {
    if (!liveDiff) return null;
    return TacxLive.reload(liveDiff, liveDiff.dataset.url).then(function () {
      // Keep the files the reader opened open.
      (liveDiff.dataset.opened || "").split("\n").forEach(function (path) {
        liveDiff.querySelectorAll("details.file-diff").forEach(function (d) { if (path && d.dataset.path === path) d.open = true; });
      });
    });
  });
  if (liveDiff) {
    TacxLive.reload(liveDiff, liveDiff.dataset.url).catch(function () {});
    liveDiff.addEventListener("toggle", function () {
      liveDiff.dataset.opened = Array.prototype.map.call(liveDiff.querySelectorAll("details.file-diff[open]"), function (d) { return d.dataset.path; }).join("\n");
    }, true);
  }

  TacxLive.connect("/ws/tasks/" + transcript.dataset.task + "/events/", transcript.dataset.liveAfter, function (events) {
    var status = false, usage = false, changed = false, added = [];
    events.forEach(function (event) {
      added = added.concat(append(event));
      if (event.kind === "status") status = true;
      if (event.kind === "usage" || event.kind === "result") usage = true;
      if (event.kind === "tool_result" || event.kind === "output" || event.kind === "status") changed = true;
    });
    if (filters) applyFilters(added);
    added.forEach(function (item) { applyFold(item); });
    nowDoing(added);
    if (status || usage) refreshSummary();
    if (status) refreshDocuments();
    if (changed) refreshDiff();
    followBottom();
  });
})();
