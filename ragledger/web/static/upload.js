// Admin uploads: each file goes to POST /api/v1/documents (or .../versions) with XHR, so
// the upload's progress shows; then its status is polled until indexed or failed.
(function () {
  "use strict";
  var list, groupsInput;

  function row(name) {
    var li = document.createElement("li");
    var label = document.createElement("span");
    label.textContent = name + " ";
    var bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + name);
    var state = document.createElement("span");
    state.className = "upload-state";
    state.textContent = " waiting";
    li.append(label, bar, state);
    list.appendChild(li);
    return { li: li, bar: bar, state: state };
  }

  function show(r, text, kind) {
    r.state.textContent = " " + text;
    r.state.className = "upload-state" + (kind ? " " + kind : "");
    r.li.setAttribute("data-state", kind || "working");
  }

  function poll(r, documentId) {
    fetch("/api/v1/documents/" + documentId, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (doc) {
        if (doc && doc.status === "indexed") { show(r, "indexed", "ok"); return; }
        if (doc && doc.status === "failed") {
          show(r, "failed: " + (doc.failure_reason || "unknown reason"), "error");
          return;
        }
        show(r, doc ? doc.status + "…" : "accepted, waiting to be listed…");
        window.setTimeout(function () { poll(r, documentId); }, 1000);
      })
      .catch(function () { window.setTimeout(function () { poll(r, documentId); }, 2000); });
  }

  function send(file, url, groups) {
    var r = row(file.name);
    var data = new FormData();
    data.append("file", file);
    groups.forEach(function (g) { data.append("access_groups", g); });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("X-CSRF-Token", window.ragledger.csrfToken());
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        r.bar.value = Math.round((event.loaded / event.total) * 100);
        show(r, "uploading " + r.bar.value + "%");
      }
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 202 && body) {
        r.bar.value = 100;
        show(r, "uploaded, indexing…");
        poll(r, body.document_id);
      } else {
        show(r, "refused: " + window.ragledger.errorText(xhr.status, body), "error");
      }
    });
    xhr.addEventListener("error", function () { show(r, "the upload did not reach the server", "error"); });
    xhr.send(data);
  }

  function groups() {
    return groupsInput.value.split(/[,;]/).map(function (g) { return g.trim(); })
      .filter(function (g) { return g; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    list = document.getElementById("uploads");
    groupsInput = document.getElementById("upload-groups");
    var form = document.getElementById("upload-form");
    var input = document.getElementById("files");
    var zone = document.getElementById("dropzone");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      Array.prototype.forEach.call(input.files, function (file) {
        send(file, "/api/v1/documents", groups());
      });
      input.value = "";
    });
    zone.addEventListener("dragover", function (event) { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      Array.prototype.forEach.call(event.dataTransfer.files, function (file) {
        send(file, "/api/v1/documents", groups());
      });
    });
    document.querySelectorAll("input[data-new-version]").forEach(function (picker) {
      picker.addEventListener("change", function () {
        var id = picker.getAttribute("data-new-version");
        Array.prototype.forEach.call(picker.files, function (file) {
          send(file, "/api/v1/documents/" + id + "/versions", []);
        });
        picker.value = "";
      });
    });
  });
})();
