/* The live event stream shared by the Tasks and Task pages.
 *
 * TacxLive.connect(path, after, onEvents) opens a websocket at `path?after=<cursor>`, hands every
 * new event to onEvents (never one twice: the cursor is the last id seen) and reconnects with
 * the cursor after a drop, so the server sends exactly what was missed. Close codes 4000-4999
 * are the server saying no (not logged in, unknown task): no reconnect then. (A handshake the
 * server refuses outright arrives as 1006; the back-off below keeps those retries rare.)
 */
(function () {
  "use strict";

  // The dot's words (a colour alone says nothing to some readers).
  var LABELS = { connecting: "connecting", live: "live", reconnecting: "reconnecting", "logged-out": "logged out", refused: "refused" };

  function setState(state) {
    var el = document.getElementById("live-state");
    if (el) {
      el.className = "live-state " + state;
      el.title = "Live updates: " + state;
      var label = el.querySelector(".live-label");
      if (label) label.textContent = LABELS[state] || state;
    }
  }

  function connect(path, after, onEvents) {
    var cursor = Number(after) || 0;
    var delay = 500;
    var socket = null;
    setState("connecting");

    function open() {
      var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(proto + "//" + window.location.host + path + "?after=" + cursor);
      socket.onopen = function () {
        delay = 500;
        setState("live");
      };
      socket.onmessage = function (message) {
        var data = JSON.parse(message.data);
        if (data.type !== "events") return;
        var fresh = data.events.filter(function (e) { return e.id > cursor; });
        if (!fresh.length) return;
        cursor = fresh[fresh.length - 1].id;
        onEvents(fresh);
      };
      socket.onclose = function (event) {
        if (event.code >= 4000 && event.code < 5000) {
          setState(event.code === 4401 ? "logged-out" : "refused");
          return;
        }
        setState("reconnecting");
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }

    open();
    return { cursor: function () { return cursor; } };
  }

  /* "1h 02m", "3m 05s", "12s" like the server's duration filter. */
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) return h + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(s) + "s";
    return s + "s";
  }

  /* Keep the elapsed time of running things ticking between refreshes. */
  function tickElapsed() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.dataset.since);
      if (!isNaN(since)) el.textContent = duration((now - since) / 1000);
    });
  }

  /* fn() runs at most once per `ms`, and again after a call that came while it ran. */
  function debounced(ms, fn) {
    var timer = null, running = false, again = false;
    function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      Promise.resolve(fn()).catch(function () {}).then(function () {
        running = false;
        if (again) { again = false; schedule(); }
      });
    }
    function schedule() { if (!timer) timer = window.setTimeout(run, ms); }
    return schedule;
  }

  /* Replace el's content with the partial at url (keeps the page if the session is gone). */
  function reload(el, url) {
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } }).then(function (r) {
      if (!r.ok || r.redirected) throw new Error("refresh failed: " + r.status);
      return r.text();
    }).then(function (html) {
      el.innerHTML = html;
      tickElapsed();
    });
  }

  window.TacxLive = { connect: connect, duration: duration, tickElapsed: tickElapsed, debounced: debounced, reload: reload };
  window.setInterval(tickElapsed, 1000);
})();
