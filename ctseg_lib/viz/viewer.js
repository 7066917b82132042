// ctseg static slice viewer: renders an embedded, quantised HU volume into <canvas> elements.
// No external scripts, no network, no kernel: works in a built Jupyter Book, Jupyter, Colab and as
// a standalone file.  Python side: ctseg_lib/viz/viewer.py (config format documented there).
// Every text that came from the user (title, label and panel names) is inserted with textContent,
// never innerHTML, so names cannot inject markup.
function ctsegViewer(root, cfg) {
  "use strict";
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fail(msg) {
    root.dataset.error = msg;
    var m = root.querySelector(".ctv-msg");
    if (m) m.textContent = "Viewer error: " + msg;
    console.error("ctseg viewer: " + msg);
  }
  function bytesOf(blob) {
    var bin = atob(blob.b64), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    if (blob.enc !== "deflate") return Promise.resolve(u);
    if (typeof DecompressionStream === "undefined")
      return Promise.reject(new Error("this browser lacks DecompressionStream; save the viewer with compress=False"));
    var stream = new Blob([u]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }

  var NX = cfg.shape[0], NY = cfg.shape[1], NZ = cfg.shape[2], N = NX * NY * NZ;
  var EXT = cfg.extent_mm, AX = ["sagittal", "coronal", "axial"];  // slicing axis 0, 1, 2
  var state = { orient: 2, pos: [NX >> 1, NY >> 1, cfg.start], win: cfg.window,
                level: 0, width: 1, mode: cfg.mode, opacity: cfg.opacity, on: cfg.overlays.map(function () { return true; }) };
  var codes = null, labs = [], lut = new Uint8Array(1);

  // ---- layout -----------------------------------------------------------------------------------
  root.textContent = "";
  if (cfg.title) root.appendChild(el("div", "ctv-title", cfg.title));
  var msg = el("div", "ctv-msg", "loading…");
  root.appendChild(msg);
  var row = el("div", "ctv-panels"); root.appendChild(row);
  var panels = cfg.panels.map(function (p) {
    var box = el("figure", "ctv-panel"), cv = el("canvas", "ctv-canvas");
    box.appendChild(cv); box.appendChild(el("figcaption", "ctv-cap", p.title)); row.appendChild(box);
    return { cfg: p, canvas: cv, ctx: cv.getContext("2d") };
  });
  var ctl = el("div", "ctv-controls"); root.appendChild(ctl);
  var sRow = el("div", "ctv-row"); ctl.appendChild(sRow);
  var slider = el("input", "ctv-slider"); slider.type = "range"; slider.min = 0; slider.step = 1;
  slider.setAttribute("aria-label", "slice");
  var sliceTxt = el("span", "ctv-slice");
  sRow.appendChild(slider); sRow.appendChild(sliceTxt);

  function group(parent, label) {
    var g = el("span", "ctv-group"); g.appendChild(el("span", "ctv-lbl", label)); parent.appendChild(g); return g;
  }
  function buttons(parent, label, names, onpick) {
    var g = group(parent, label), bs = [];
    names.forEach(function (n, i) {
      var b = el("button", "ctv-btn", n); b.type = "button";
      b.addEventListener("click", function () { onpick(i); });
      g.appendChild(b); bs.push(b);
    });
    return bs;
  }
  var r2 = el("div", "ctv-row"); ctl.appendChild(r2);
  var orientBtns = buttons(r2, "view", ["axial", "coronal", "sagittal"], function (i) { setOrient([2, 1, 0][i]); });
  var winNames = Object.keys(cfg.windows);
  var winBtns = buttons(r2, "window", winNames, function (i) { setWindow(winNames[i]); });
  var r3 = el("div", "ctv-row"); ctl.appendChild(r3);
  if (cfg.overlays.length) {
    var og = group(r3, "overlay");
    cfg.overlays.forEach(function (o, i) {
      var lab = el("label", "ctv-chk"), cb = el("input"); cb.type = "checkbox"; cb.checked = true;
      cb.addEventListener("change", function () { state.on[i] = cb.checked; draw(); });
      lab.appendChild(cb); lab.appendChild(document.createTextNode(" " + o.name)); og.appendChild(lab);
    });
    var modeBtns = buttons(r3, "style", ["fill", "contour"], function (i) { state.mode = ["fill", "contour"][i]; draw(); });
    var opg = group(r3, "opacity"), op = el("input", "ctv-op");
    op.type = "range"; op.min = 0; op.max = 1; op.step = 0.05; op.value = cfg.opacity;
    op.addEventListener("input", function () { state.opacity = parseFloat(op.value); draw(); });
    opg.appendChild(op);
  }
  var r4 = el("div", "ctv-row"); ctl.appendChild(r4);
  var legend = group(r4, cfg.overlays.length ? "labels" : "");
  Object.keys(cfg.labels).forEach(function (k) {
    var L = cfg.labels[k], item = el("span", "ctv-leg"), sw = el("span", "ctv-sw");
    sw.style.background = "rgb(" + L.color.join(",") + ")";
    item.appendChild(sw); item.appendChild(document.createTextNode(L.name)); legend.appendChild(item);
  });
  if (cfg.overlays.length > 1 && cfg.panels.length === 1)
    legend.appendChild(el("span", "ctv-note", "(several overlays: first as chosen, others dotted outline)"));
  var bar = el("canvas", "ctv-bar"); bar.width = 128; bar.height = 1;
  var barG = group(r4, "HU"), barLo = el("span", "ctv-num"), barHi = el("span", "ctv-num"), winTxt = el("span", "ctv-win");
  barG.appendChild(barLo); barG.appendChild(bar); barG.appendChild(barHi); barG.appendChild(winTxt);
  var bctx = bar.getContext("2d"), bimg = bctx.createImageData(128, 1);
  for (var bx = 0; bx < 128; bx++) {
    var gv = Math.round(bx * 255 / 127);
    bimg.data[4 * bx] = bimg.data[4 * bx + 1] = bimg.data[4 * bx + 2] = gv; bimg.data[4 * bx + 3] = 255;
  }
  bctx.putImageData(bimg, 0, 0);
  var readout = el("div", "ctv-readout", "hover over the image for HU values"); root.appendChild(readout);

  // ---- geometry ---------------------------------------------------------------------------------
  // Display (row r, column c) → voxel (i, j, k) of the embedded (X, Y, Z) RAS grid.  Radiological
  // convention: axial — anterior up, patient right on the viewer's left; coronal — superior up,
  // right on the left; sagittal — superior up, anterior on the left.
  function dims(o) { return o === 2 ? [NX, NY] : o === 1 ? [NX, NZ] : [NY, NZ]; }  // [W, H]
  function vox(o, s, r, c) {
    if (o === 2) return [NX - 1 - c, NY - 1 - r, s];
    if (o === 1) return [NX - 1 - c, s, NZ - 1 - r];
    return [s, NY - 1 - c, NZ - 1 - r];
  }
  function mmSize(o) { return o === 2 ? [EXT[0], EXT[1]] : o === 1 ? [EXT[0], EXT[2]] : [EXT[1], EXT[2]]; }
  function nAlong(o) { return [NX, NY, NZ][o]; }

  function setWindow(name) {
    state.win = name; var lw = cfg.windows[name]; state.level = lw[0]; state.width = lw[1];
    var lo = lw[0] - lw[1] / 2, tab = cfg.hu.table;
    lut = new Uint8Array(tab.length);
    for (var v = 0; v < tab.length; v++) {
      var t = (tab[v] - lo) / lw[1];
      lut[v] = Math.round(Math.min(1, Math.max(0, t)) * 255);
    }
    winBtns.forEach(function (b, i) { b.classList.toggle("ctv-on", winNames[i] === name); });
    barLo.textContent = String(Math.round(lo)); barHi.textContent = String(Math.round(lo + lw[1]));
    winTxt.textContent = name + ": L " + lw[0] + " / W " + lw[1] + " HU";
    draw();
  }
  function setOrient(o) {
    state.orient = o; slider.max = nAlong(o) - 1; slider.value = state.pos[o];
    orientBtns.forEach(function (b, i) { b.classList.toggle("ctv-on", [2, 1, 0][i] === o); });
    // Fit all panels on one row of the page (a book column is ~750 px) but never below 120 px each.
    var avail = (root.clientWidth || 0) - 24 - 8 * (panels.length - 1);
    var px = avail > 0 ? Math.max(120, Math.min(cfg.display_px, avail / panels.length)) : cfg.display_px;
    var wh = dims(o), mm = mmSize(o), scale = px / Math.max(mm[0], mm[1]);
    panels.forEach(function (p) {
      p.canvas.width = wh[0]; p.canvas.height = wh[1];
      p.canvas.style.width = Math.round(mm[0] * scale) + "px"; p.canvas.style.height = Math.round(mm[1] * scale) + "px";
      p.img = p.ctx.createImageData(wh[0], wh[1]);
    });
    draw();
  }
  slider.addEventListener("input", function () { state.pos[state.orient] = parseInt(slider.value, 10); draw(); });

  function draw() {
    if (!codes || !panels[0].img) return;
    var o = state.orient, s = state.pos[o], wh = dims(o), W = wh[0], H = wh[1], a = state.opacity;
    var idx = new Int32Array(W * H);
    for (var r = 0; r < H; r++) for (var c = 0; c < W; c++) {
      var v = vox(o, s, r, c); idx[r * W + c] = (v[2] * NY + v[1]) * NX + v[0];
    }
    panels.forEach(function (p) {
      var d = p.img.data, n, g;
      for (n = 0; n < W * H; n++) { g = lut[codes[idx[n]]]; d[4 * n] = d[4 * n + 1] = d[4 * n + 2] = g; d[4 * n + 3] = 255; }
      var act = p.cfg.overlays.filter(function (k) { return state.on[k] && labs[k]; });
      act.forEach(function (k, rank) {
        var L = labs[k], contour = state.mode === "contour" || rank > 0, dotted = rank > 0;
        for (var r = 0; r < H; r++) for (var c = 0; c < W; c++) {
          n = r * W + c; var lv = L[idx[n]];
          if (!lv) continue;
          var col = cfg.labels[lv] ? cfg.labels[lv].color : [255, 255, 0];
          if (contour) {
            var edge = r === 0 || c === 0 || r === H - 1 || c === W - 1 || L[idx[n - 1]] !== lv ||
              L[idx[n + 1]] !== lv || L[idx[n - W]] !== lv || L[idx[n + W]] !== lv;
            if (!edge || (dotted && (r + c) % 2)) continue;
            d[4 * n] = col[0]; d[4 * n + 1] = col[1]; d[4 * n + 2] = col[2];
          } else {
            d[4 * n] = (1 - a) * d[4 * n] + a * col[0]; d[4 * n + 1] = (1 - a) * d[4 * n + 1] + a * col[1];
            d[4 * n + 2] = (1 - a) * d[4 * n + 2] + a * col[2];
          }
        }
      });
      p.ctx.putImageData(p.img, 0, 0);
    });
    if (modeBtns) modeBtns.forEach(function (b, i) { b.classList.toggle("ctv-on", ["fill", "contour"][i] === state.mode); });
    var axis = "xyz"[o], orig = [cfg.xs, cfg.ys, cfg.zs][o][s], mm = cfg.pos_mm[o][s];
    sliceTxt.textContent = AX[o] + " " + (s + 1) + "/" + nAlong(o) + " · " + axis + " = " + mm.toFixed(1) +
      " mm (voxel " + "ijk"[o] + " = " + orig + ")";
    root.dataset.slice = String(s); root.dataset.orient = AX[o];
  }

  function hover(ev) {
    if (!codes) return;
    var cv = ev.currentTarget, rect = cv.getBoundingClientRect(), o = state.orient, wh = dims(o);
    var c = Math.floor((ev.clientX - rect.left) / rect.width * wh[0]), r = Math.floor((ev.clientY - rect.top) / rect.height * wh[1]);
    if (c < 0 || r < 0 || c >= wh[0] || r >= wh[1]) return;
    var v = vox(o, state.pos[o], r, c), n = (v[2] * NY + v[1]) * NX + v[0];
    var hu = cfg.hu.table[codes[n]];
    var parts = ["voxel (" + cfg.xs[v[0]] + ", " + cfg.ys[v[1]] + ", " + cfg.zs[v[2]] + ")", Math.round(hu) + " HU"];
    cfg.overlays.forEach(function (ov, k) {
      if (!labs[k]) return;
      var lv = labs[k][n];
      parts.push(ov.name + ": " + (lv ? (cfg.labels[lv] ? cfg.labels[lv].name : "label " + lv) : "background"));
    });
    readout.textContent = parts.join(" · ");
  }
  panels.forEach(function (p) { p.canvas.addEventListener("mousemove", hover); });

  // ---- data -------------------------------------------------------------------------------------
  Promise.all([bytesOf(cfg.hu)].concat(cfg.overlays.map(bytesOf))).then(function (arrs) {
    var hb = arrs[0];
    if (hb.length !== 2 * N) throw new Error("HU data has " + hb.length + " bytes, expected " + 2 * N);
    codes = new Uint16Array(N);
    var T = cfg.hu.table.length;
    for (var n = 0; n < N; n++) {
      codes[n] = (hb[n] << 8) | hb[N + n];  // high-byte plane, then low
      if (codes[n] >= T) throw new Error("HU code out of range at voxel " + n);
    }
    for (var k = 1; k < arrs.length; k++) {
      if (arrs[k].length !== N) throw new Error("overlay " + k + " has " + arrs[k].length + " bytes, expected " + N);
      labs[k - 1] = arrs[k];
    }
    msg.textContent = "";
    msg.style.display = "none";
    setWindow(state.win);
    setOrient(2);
    root.dataset.ready = "1";
  }).catch(function (e) { fail(String(e && e.message || e)); });
}
