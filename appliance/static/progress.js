// Follows /hub/api/users/<name>/server/progress (server-sent events) and fills the bar.
(function () {
  "use strict";
  var card = document.getElementById("pending");
  var bar = document.getElementById("bar");
  var message = document.getElementById("message");
  var source = new EventSource(card.dataset.progressUrl);
  source.onmessage = function (e) {
    var event = JSON.parse(e.data);
    if (event.progress !== undefined) { bar.value = event.progress; }
    if (event.message) { message.textContent = event.message; }
    if (event.ready) {
      source.close();
      window.location.href = card.dataset.next || event.url;
    } else if (event.failed) {
      source.close();
      var failed = document.getElementById("failed");
      failed.textContent = event.message;
      failed.hidden = false;
      document.getElementById("retry").hidden = false;
      document.getElementById("cancel").hidden = true;
    }
  };
  source.onerror = function () {
    source.close();
    window.setTimeout(function () { window.location.reload(); }, 2000);
  };
})();
