// Ask: POST /api/v1/questions and show its Server-Sent Events as they arrive
// (question, context, token*, then done or error), read with fetch + ReadableStream.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };

  function setState(text, state) {
    var el = $("answer-state");
    el.textContent = text;
    el.setAttribute("data-state", state);
  }

  function showError(text) {
    var el = $("ask-error");
    el.textContent = text;
    el.hidden = false;
  }

  // The answer's text with each [n] of a known passage turned into a link to it.
  function renderAnswer(container, text, answerId, citations) {
    container.textContent = "";
    var known = {};
    citations.forEach(function (c) { known[c.n] = c; });
    var pattern = /\[(\d{1,3})\]/g, last = 0, match;
    while ((match = pattern.exec(text)) !== null) {
      container.appendChild(document.createTextNode(text.slice(last, match.index)));
      var n = Number(match[1]);
      if (known[n]) {
        var a = document.createElement("a");
        a.className = "cite";
        a.href = "/answers/" + answerId + "#passage-" + n;
        a.textContent = "[" + n + "]";
        a.title = known[n].title + ", version " + known[n].version;
        container.appendChild(a);
      } else {
        container.appendChild(document.createTextNode(match[0]));
      }
      last = pattern.lastIndex;
    }
    container.appendChild(document.createTextNode(text.slice(last)));
  }

  function listCitations(answerId, citations, cited) {
    var list = $("citations");
    list.textContent = "";
    citations.filter(function (c) { return cited.indexOf(c.n) !== -1; }).forEach(function (c) {
      var li = document.createElement("li");
      li.value = c.n;
      var a = document.createElement("a");
      a.href = "/answers/" + answerId + "#passage-" + c.n;
      a.textContent = c.title;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" (version " + c.version + ")"));
      list.appendChild(li);
    });
    $("sources-heading").hidden = list.children.length === 0;
  }

  function parseEvent(block) {
    var name = "message", data = "";
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event: ") === 0) { name = line.slice(7); }
      else if (line.indexOf("data: ") === 0) { data += line.slice(6); }
    });
    return data ? { name: name, data: JSON.parse(data) } : null;
  }

  function ask(question) {
    var answerEl = $("answer"), button = $("ask-button");
    var answerId = null, citations = [], text = "";
    $("ask-error").hidden = true;
    $("answer-section").hidden = false;
    $("nothing-found").hidden = true;
    $("declined").hidden = true;
    $("support").hidden = true;
    $("answer-link").hidden = true;
    $("sources-heading").hidden = true;
    $("citations").textContent = "";
    $("feedback-slot").textContent = "";
    answerEl.textContent = "";
    setState("Searching your documents…", "searching");
    button.disabled = true;

    function handle(event) {
      var d = event.data;
      if (event.name === "question") { answerId = d.question_id; }
      else if (event.name === "context") {
        citations = d.citations;
        setState(citations.length ? "Writing the answer…" : "Nothing found", "streaming");
      } else if (event.name === "token") {
        text += d.text;
        answerEl.textContent = text;
        setState("Writing the answer…", "streaming");
      } else if (event.name === "done") {
        // A generative answer that its sources did not support is replaced, after the
        // check, by the platform's decline: show that text, not what streamed.
        if (typeof d.answer === "string") { text = d.answer; }
        renderAnswer(answerEl, text, answerId, citations);
        $("declined").hidden = !d.declined;
        var support = $("support");
        if (d.support && typeof d.support.groundedness === "number") {
          support.textContent = "Checked against the sources: groundedness " +
            Math.round(d.support.groundedness * 100) + "%.";
          support.hidden = false;
        } else { support.hidden = true; }
        listCitations(answerId, citations, d.citations);
        if (!citations.length) { $("nothing-found").hidden = false; }
        var link = $("answer-link");
        link.querySelector("a").href = "/answers/" + answerId;
        link.hidden = false;
        var form = $("feedback-template").content.firstElementChild.cloneNode(true);
        $("feedback-slot").appendChild(form);
        window.ragledgerFeedback.wire(form, answerId);
        setState("Done", "done");
      } else if (event.name === "error") {
        setState("Failed", "error");
        showError(d.detail);
      }
    }

    fetch("/api/v1/questions", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "X-CSRF-Token": window.ragledger.csrfToken()
      },
      body: JSON.stringify({ question: question })
    }).then(function (response) {
      if (!response.ok) {
        return response.json().catch(function () { return null; }).then(function (body) {
          $("answer-section").hidden = true;
          if (response.status === 401) { window.location.assign("/sign-in?next=%2F"); return; }
          showError(window.ragledger.errorText(response.status, body));
        });
      }
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { return; }
          buffer += decoder.decode(chunk.value, { stream: true });
          var end;
          while ((end = buffer.indexOf("\n\n")) !== -1) {
            var block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            var event = parseEvent(block);
            if (event) { handle(event); }
          }
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      setState("Failed", "error");
      showError("The connection to the server was lost; please ask again.");
    }).then(function () { button.disabled = false; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("ask-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var question = $("question").value.trim();
      if (question) { ask(question); }
    });
  });
})();
