// Feedback on an answer: POST /api/v1/answers/{id}/feedback with the session's CSRF token.
(function () {
  "use strict";
  function wire(form, answerId) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = form.querySelector(".feedback-result");
      var choice = form.querySelector('input[name="helpful"]:checked');
      var comment = form.querySelector('textarea[name="comment"]').value;
      var button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      result.className = "feedback-result";
      result.textContent = "Sending…";
      fetch("/api/v1/answers/" + answerId + "/feedback", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": window.ragledger.csrfToken() },
        body: JSON.stringify({ helpful: choice && choice.value === "true", comment: comment || null })
      }).then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          button.disabled = false;
          if (response.ok) {
            result.className = "feedback-result ok";
            result.textContent = "Thank you, your feedback was recorded.";
          } else {
            result.className = "feedback-result error";
            result.textContent = window.ragledger.errorText(response.status, body);
          }
        });
      }).catch(function () {
        button.disabled = false;
        result.className = "feedback-result error";
        result.textContent = "The server could not be reached; your feedback was not sent.";
      });
    });
  }
  window.ragledgerFeedback = { wire: wire };
  document.addEventListener("DOMContentLoaded", function () {
    var host = document.getElementById("feedback-host");
    if (host) { wire(host.querySelector("form[data-feedback]"), host.getAttribute("data-answer-id")); }
  });
})();
