(function () {
  "use strict";
  function key(cell) {
    if (!cell) return "";
    var v = cell.getAttribute("data-value");
    if (v !== null && v !== "" && !isNaN(parseFloat(v))) return parseFloat(v);
    return cell.textContent.trim().toLowerCase();
  }
  function compare(x, y, asc) {
    var nx = typeof x === "number", ny = typeof y === "number";
    if (nx && ny) return asc ? x - y : y - x;
    if (nx) return -1;
    if (ny) return 1;
    var r = x < y ? -1 : x > y ? 1 : 0;
    return asc ? r : -r;
  }
  function sortBy(table, index, th) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { return compare(key(a.cells[index]), key(b.cells[index]), asc); });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, i, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
  // The page's layout, recorded for checks that read the rendered page.
  var root = document.documentElement;
  root.setAttribute("data-scroll-width", String(root.scrollWidth));
  root.setAttribute("data-scroll-height", String(root.scrollHeight));
  Array.prototype.forEach.call(document.querySelectorAll("figure.chart svg"), function (svg) {
    var r = svg.getBoundingClientRect();
    svg.parentNode.setAttribute("data-rect", [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(","));
  });
  root.setAttribute("data-script", "done");
})();
