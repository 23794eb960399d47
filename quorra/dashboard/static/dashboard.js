// Quorra's dashboard: live updates without reloading, and confirmation of destructive forms.
// Served as a file (the Content-Security-Policy admits no inline script); no library.
"use strict";

(function () {
  var FRAGMENT_HEADER = "X-Quorra-Fragment";

  // The element marked data-live is fetched again every 5 s (QUORRA_DASHBOARD_REFRESH) (only its part of the page,
  // rendered and escaped by the server) and swapped in place. Paused while the tab is hidden.
  function startLiveUpdates() {
    var live = document.querySelector("[data-live]");
    if (!live) return;
    var interval = Number(document.body.getAttribute("data-refresh-ms")) || 5000; // QUORRA_DASHBOARD_REFRESH
    var timer = null;
    var busy = false;

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, interval);
    }

    function refresh() {
      if (document.hidden) return; // visibilitychange restarts us
      if (busy) return schedule();
      busy = true;
      var headers = {};
      headers[FRAGMENT_HEADER] = "1";
      fetch(window.location.href, { headers: headers, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
          var current = document.querySelector("[data-live]");
          if (fresh && current) {
            keepOpen(current, fresh);
            current.replaceWith(document.adoptNode(fresh));
          }
          document.documentElement.removeAttribute("data-stale");
        })
        .catch(function () {
          document.documentElement.setAttribute("data-stale", "true"); // shown by the stylesheet
        })
        .then(function () { busy = false; schedule(); });
    }

    document.addEventListener("visibilitychange", function () {
      if (document.hidden) clearTimeout(timer);
      else refresh();
    });
    schedule();
  }

  // A <details> the reader opened (an attempt's traceback) stays open across refreshes.
  function keepOpen(current, fresh) {
    var before = current.querySelectorAll("details");
    var after = fresh.querySelectorAll("details");
    for (var i = 0; i < before.length && i < after.length; i++) {
      if (before[i].open) after[i].open = true;
    }
  }

  // A form with data-confirm asks before it is sent (bulk deletes, pauses). The filter form
  // leaves its empty fields out, so a shared URL holds only the filters that were set.
  function enhanceForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { event.preventDefault(); return; }
      if (form.classList && form.classList.contains("filters")) {
        Array.prototype.forEach.call(form.elements, function (field) {
          if (field.name && field.value === "") field.disabled = true;
        });
      }
    });
    window.addEventListener("pageshow", function () { // back to a page whose form we had trimmed
      Array.prototype.forEach.call(document.querySelectorAll(".filters [disabled]"), function (field) {
        field.disabled = false;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    startLiveUpdates();
    enhanceForms();
  });
})();
