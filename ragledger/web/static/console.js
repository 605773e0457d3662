// Shared by every page: times in the browser's own zone, and the CSRF token for fetches.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localiseTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = format.format(when);
        el.title = el.getAttribute("datetime");
      }
    });
  }
  window.ragledger = {
    csrfToken: function () {
      var meta = document.querySelector('meta[name="csrf-token"]');
      return meta ? meta.content : "";
    },
    localiseTimes: localiseTimes,
    // The API's error body says what went wrong: {"detail": "..."} or pydantic's list.
    errorText: function (status, body) {
      if (body && typeof body.detail === "string") { return body.detail; }
      if (body && Array.isArray(body.detail) && body.detail.length) {
        return body.detail.map(function (e) { return e.msg; }).join("; ");
      }
      return "The request failed (HTTP " + status + ").";
    }
  };
  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });
})();
