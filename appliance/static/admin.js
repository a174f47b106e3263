// Follows /hub/admin/stream (server-sent events) and refreshes the numbers in place.
(function () {
  "use strict";
  var page = document.getElementById("admin");
  function size(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1).replace(/\.0$/, "") : n) + " " + units[i];
  }
  function ago(t) {
    if (!t) { return ""; }
    var s = Math.max(0, Date.now() / 1000 - t);
    if (s < 90) { return "just now"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    return Math.round(s / 3600) + " h ago";
  }
  var source = new EventSource(page.dataset.stream);
  source.onmessage = function (e) {
    var data = JSON.parse(e.data), host = data.host;
    page.querySelector('[data-host="memory"]').textContent =
      size(host.memory_used) + " of " + size(host.memory_cap);
    page.querySelector('[data-host="meter"]').value = host.memory_used;
    page.querySelector('[data-host="load"]').textContent =
      host.load.toFixed(2) + " on " + host.cores + " cores";
    page.querySelector('[data-host="servers"]').textContent =
      host.running + " running, " + host.pending + " starting or stopping";
    data.rows.forEach(function (row) {
      var tr = page.querySelector('tr[data-user="' + CSS.escape(row.name) + '"]');
      if (!tr) { return; }
      var cell = function (name) { return tr.querySelector('[data-cell="' + name + '"]'); };
      cell("state").textContent = row.state;
      cell("state").className = "state state-" + row.state;
      if (row.memory !== null) {
        cell("memory").innerHTML = "";
        cell("memory").append(size(row.memory) + (row.memory_limit ? " / " + size(row.memory_limit) : ""));
        var bar = document.createElement("span"), fill = document.createElement("span");
        bar.className = "bar"; fill.style.width = (row.memory_share * 100).toFixed(1) + "%";
        bar.append(fill); cell("memory").append(" ", bar);
      }
      cell("cpu").textContent = row.cpu_percent === null ? "" : row.cpu_percent + " %";
      cell("activity").textContent = ago(row.last_activity);
      cell("spark").innerHTML = row.sparkline;  // drawn by the hub from numbers only
    });
    page.dataset.updated = String(Date.now());
  };
})();
