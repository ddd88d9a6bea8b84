"""The page's inline style and script (vanilla JavaScript, no library): sortable tables, the confusion matrix's
cells opening their thumbnails, the explanations' overlays. The script reads its data from the JSON block
#report-data and builds every element with textContent, never with HTML strings."""

STYLE = """
:root { --fg: #1d2433; --muted: #5b6476; --line: #d8dce4; --accent: #1f6feb; --good: #1a7f37; --bad: #cf222e;
        --bg-soft: #f5f7fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0 auto;
       max-width: 1280px; padding: 0 20px 40px; }
header { border-bottom: 1px solid var(--line); padding: 18px 0 10px; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 17px; margin: 28px 0 8px; }
nav { padding: 6px 0; border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
.facts { display: flex; flex-wrap: wrap; gap: 10px 26px; margin: 8px 0; }
.fact b { display: block; font-size: 18px; } .fact span { color: var(--muted); font-size: 12px; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff;
          background: var(--muted); vertical-align: middle; }
.status.completed { background: var(--good); } .status.failed, .status.diverged { background: var(--bad); }
.status.interrupted { background: #9a6700; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { background: var(--bg-soft); padding: 10px; overflow: auto; max-height: 480px; border-radius: 6px; }
code.cmd { display: block; background: var(--bg-soft); padding: 6px 8px; border-radius: 6px; word-break: break-all; }
.note { color: var(--muted); margin: 4px 0 8px; }
.warn { color: #9a6700; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; background: var(--bg-soft); }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
table.kv th { background: var(--bg-soft); font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; border: 1px solid var(--line); border-radius: 6px; }
svg .grid { stroke: #eceef2; } svg .frame { fill: none; stroke: #aab1bd; }
svg .tick, svg .legend { font-size: 11px; fill: var(--muted); } svg .axis { font-size: 12px; fill: var(--fg); }
svg .title { font-size: 13px; font-weight: 600; fill: var(--fg); }
svg .mark { stroke: #6e7781; stroke-dasharray: 4 3; } svg .mark-label { font-size: 11px; fill: #6e7781; }
svg .bar { fill: #4c8bf5; fill-opacity: .75; } svg .gap { stroke: #cf222e; stroke-width: 2; }
svg .confidence { fill: #f0883e; stroke: #1f2328; stroke-width: 1; }
svg .diagonal { stroke: #6e7781; stroke-dasharray: 5 4; }
.cm-wrap { overflow: auto; max-width: 100%; }
table.cm td, table.cm th { padding: 2px 5px; font-size: 12px; }
table.cm th.row { text-align: right; white-space: nowrap; }
table.cm th.colhead { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; max-height: 140px; }
table.cm td.cell { text-align: center; cursor: pointer; min-width: 30px; }
table.cm td.cell:hover, table.cm td.cell:focus { outline: 2px solid var(--accent); }
table.cm td.selected { outline: 3px solid var(--fg); }
table.cm.small td.cell { font-size: 0; min-width: 9px; height: 9px; padding: 0; }
#cell-view { margin-top: 12px; min-height: 20px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; text-align: center; font-size: 11px; color: var(--muted); }
figure img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; background: #000;
             display: block; }
figure img.overlay { width: auto; height: 64px; image-rendering: auto; border: 1px solid #e36209; }
figure .pair { display: flex; gap: 2px; }
figure .missing { width: 64px; height: 64px; background: var(--bg-soft); display: flex; align-items: center;
                  justify-content: center; }
#explanation-grid figure img { width: auto; height: auto; max-width: 340px; image-rendering: auto; }
#explanation-grid figure { max-width: 344px; }
"""

SCRIPT = r"""
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var classes = data.classes || [];
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function img(b64, cls, alt) {
    var i = el("img", cls);
    i.src = "data:image/jpeg;base64," + b64;
    i.alt = alt;
    return i;
  }

  function value(row, col) {
    var text = row.cells[col] ? row.cells[col].textContent.trim() : "";
    var n = Number(text.replace(/%$/, ""));
    return text !== "" && !isNaN(n) ? n : text.toLowerCase();
  }
  function sortBy(table, th, col) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col), c;
      if (typeof x === typeof y) c = x < y ? -1 : (x > y ? 1 : 0);
      else c = typeof x === "number" ? -1 : 1;
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });

  function overlayFigure(ex) {
    var f = el("figure", "explanation");
    f.dataset.key = ex.key;
    if (ex.src) f.appendChild(img(ex.src, "overlay", ex.kind + " of " + ex.key));
    else f.appendChild(el("div", "missing", "overlay not found"));
    var what = ex.kind + (ex.target ? " for " + ex.target : "");
    var cell = ex.cell ? " (true " + classes[ex.cell[0]] + ", predicted " + classes[ex.cell[1]] + ")" : "";
    f.appendChild(el("figcaption", null, ex.key + cell + ": " + what + (ex.p !== null ? ", p " + ex.p : "")));
    f.title = ex.key;
    return f;
  }
  function thumb(item, t, p) {
    var f = el("figure", "thumb");
    f.dataset.true = classes[t];
    f.dataset.pred = classes[p];
    f.dataset.key = item[2];
    f.title = item[2] + "\ntrue: " + classes[t] + "\npredicted: " + classes[p] +
      (item[1] !== null ? " (p " + item[1] + ")" : "");
    var pair = el("div", "pair");
    if (item[0]) pair.appendChild(img(item[0], "", item[2]));
    else pair.appendChild(el("div", "missing", "no image"));
    item[3].forEach(function (i) {
      var ex = data.explanations[i];
      if (ex && ex.src) {
        var o = img(ex.src, "overlay", ex.kind + " of " + ex.key);
        o.title = ex.kind + (ex.target ? " for " + ex.target : "");
        pair.appendChild(o);
      }
    });
    f.appendChild(pair);
    f.appendChild(el("figcaption", null, item[1] !== null ? "p " + item[1].toFixed(3) : ""));
    return f;
  }
  var view = document.getElementById("cell-view");
  var selected = null;
  function showCell(td) {
    var t = Number(td.dataset.t), p = Number(td.dataset.p);
    var cell = data.cells[t + "," + p] || { n: 0, items: [] };
    if (selected) selected.classList.remove("selected");
    selected = td;
    td.classList.add("selected");
    view.textContent = "";
    var text = "true " + classes[t] + ", predicted " + classes[p] + ": " + cell.n +
      (cell.n === 1 ? " image" : " images");
    if (cell.items.length < cell.n) {
      text += ", " + cell.items.length + " shown (at most " + data.cap + " a cell";
      if (cell.items.length < Math.min(cell.n, data.cap)) {
        text += "; the page's " + data.budget + " thumbnails are spent";
      }
      text += ")";
    }
    view.appendChild(el("p", "cell-head", text));
    var grid = el("div", "thumbs");
    grid.id = "cell-thumbs";
    cell.items.forEach(function (item) { grid.appendChild(thumb(item, t, p)); });
    view.appendChild(grid);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.cm td.cell"), function (td) {
    td.addEventListener("click", function () { showCell(td); });
    td.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showCell(td); }
    });
  });
  var grid = document.getElementById("explanation-grid");
  if (grid) (data.explanations || []).forEach(function (ex) { grid.appendChild(overlayFigure(ex)); });
})();
"""
