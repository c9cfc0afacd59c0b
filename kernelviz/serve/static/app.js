// kernelviz explorer: asks the server for missing units and shows them as they arrive (server-sent events).
"use strict";

(function () {
  var body = document.body;
  var token = body.getAttribute("data-token") || "";
  var api = JSON.parse(body.getAttribute("data-api") || "{}");  // the server's URL paths (kernelviz/serve/urls.py)
  function withToken(url) {
    if (!token) return url;
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token);
  }
  function post(url, data) {
    return fetch(withToken(url), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || r.statusText);
        return j;
      });
    });
  }
  var statusBox = document.getElementById("status");
  var bar = document.querySelector(".bar > div");
  function say(text, isError) {
    if (!statusBox) return;
    statusBox.textContent = text;
    statusBox.className = isError ? "status error" : "status";
  }
  // The server's events, declared in kernelviz/serve/events.py (each type and its fields): one connection per page,
  // opened by the first part of the page that listens; every listener sees every event.
  var declared = JSON.parse(body.getAttribute("data-events") || "{}");
  var listeners = [], opened = [], source = null;
  function events(onEvent, onOpen) {
    listeners.push(onEvent);
    if (onOpen) opened.push(onOpen);
    if (source) return;
    source = new EventSource(withToken(api.events));
    source.onmessage = function (m) {
      var e = JSON.parse(m.data);
      if (!declared[e.type]) { console.error("undeclared event type: " + e.type); return; }
      listeners.forEach(function (listen) { listen(e); });
    };
    source.onopen = function () { opened.forEach(function (run) { run(); }); };
  }
  var markImagesLoaded = window.kernelvizMarkImages;  // the page's own script (kernelviz/sets/site.py)

  // A filter's quick preview (a "preview" event), shown until its picture replaces it.
  function previewImage(e, className) {
    var img = document.createElement("img");
    img.alt = "filter " + e.filter + " (preview)";
    img.className = className;
    img.title = "a quick preview: the full picture follows";
    img.src = withToken(e.src);
    img.onload = markImagesLoaded;
    return img;
  }

  // A layer page: tiles without a picture are asked for; each arrives with a "done" event.
  var layer = body.getAttribute("data-layer");
  var page = body.getAttribute("data-page");
  if (page === "layer") {
    var missing = JSON.parse(body.getAttribute("data-missing") || "[]");
    var total = missing.length, got = 0, previews = 0;
    body.setAttribute("data-missing-count", String(total));
    if (total > 0) {
      var asked = false;
      events(function (e) {
        if (e.layer !== layer) return;
        if (e.type === "progress" && (e.task === "batch" || e.task === "preview")) {
          var where = e.value === null ? "starting" : "objective " + e.value.toFixed(3);
          var what = (e.task === "preview" ? "previews of filters " : "filters ") + e.filters[0] + "-" + e.filters[e.filters.length - 1];
          say(what + ": step " + e.step + "/" + e.steps + ", " + where);
        } else if (e.type === "preview") {
          // a quick preview stands in for the picture until its "done" event replaces it
          var ptile = document.getElementById("f" + e.filter);
          var wait = ptile && ptile.getAttribute("data-done") !== "1" ? ptile.querySelector(".wait") : null;
          if (wait) {
            wait.replaceWith(previewImage(e, "preview"));
            ptile.querySelector(".value").textContent = "preview";
            previews += 1;
            body.setAttribute("data-previews", String(previews));
          }
        } else if (e.type === "done") {
          var tile = document.getElementById("f" + e.filter);
          if (tile && tile.getAttribute("data-done") !== "1") {
            var box = tile.querySelector(".wait, img.preview");
            var img = document.createElement("img");
            img.alt = "filter " + e.filter;
            img.src = withToken(e.src);
            img.onload = markImagesLoaded;
            if (box) box.replaceWith(img);
            tile.querySelector(".value").textContent = "mean " + e.value.toPrecision(4) + (e.dead ? " (not raised from noise)" : "");
            tile.setAttribute("data-done", "1");
            got += 1;
            body.setAttribute("data-missing-count", String(total - got));
            if (bar) bar.style.width = (100 * got / total) + "%";
            if (got === total) say("all " + total + " filters on this page are done");
          }
        } else if (e.type === "error") {
          say(e.message, true);
        }
      }, function () {  // asked once the events flow, so that none of them is missed
        if (asked) return;
        asked = true;
        post(api.compute, { layer: layer, filters: missing, previews: true })
          .then(function (j) {
            var first = j.preview_batches ? j.preview_batches + " batch(es) of quick previews, then " : "";
            say("queued " + first + j.batches + " batch(es) of " + j.batch_size + " filters");
          })
          .catch(function (err) { say(err.message, true); });
      });
    }
  }

  // A layer page's button: what each unit matters for (written into units.json, then the page reloads).
  var importanceButton = document.getElementById("importance-button");
  if (importanceButton) {
    events(function (e) {
      if (e.type === "error") say(e.message, true);
      if (e.layer !== layer) return;
      if (e.type === "importance") window.location.reload();
      else if (e.type === "progress" && e.task === "importance") say(e.stage + ": " + e.step + "/" + e.steps);
    });
    importanceButton.addEventListener("click", function () {
      importanceButton.disabled = true;
      say("queued: what each unit matters for");
      post(api.importance, { layer: layer }).catch(function (err) { say(err.message, true); });
    });
  }

  // A layer page's table of units (units.json): a click on a column sorts by it (again: the other way), the box
  // keeps the units whose labels hold what is typed.
  var unitsTable = document.getElementById("units-table");
  if (unitsTable) {
    var tbody = unitsTable.querySelector("tbody");
    var rows = Array.prototype.slice.call(tbody.querySelectorAll("tr"));
    var sortedBy = null, ascending = true;
    Array.prototype.forEach.call(unitsTable.querySelectorAll("th[data-key]"), function (th) {
      th.style.cursor = "pointer";
      th.addEventListener("click", function () {
        var key = th.getAttribute("data-key");
        ascending = sortedBy === key ? !ascending : (key === "n" || key === "label" || key === "state");
        sortedBy = key;
        rows.sort(function (a, b) {
          var x = a.getAttribute("data-" + key), y = b.getAttribute("data-" + key);
          var nx = parseFloat(x), ny = parseFloat(y);
          var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { tbody.appendChild(row); });
      });
    });
    var filterBox = document.getElementById("units-filter");
    if (filterBox) filterBox.addEventListener("input", function () {
      var wanted = filterBox.value.trim().toLowerCase();
      rows.forEach(function (row) {
        row.style.display = !wanted || row.getAttribute("data-labels").toLowerCase().indexOf(wanted) >= 0 ? "" : "none";
      });
    });
  }

  // A small picture of a unit that was not made when the page was drawn, once its "done" event arrives.
  function showThumb(e) {
    Array.prototype.forEach.call(document.querySelectorAll("div.thumb[data-filter]"), function (slot) {
      if (slot.getAttribute("data-layer") !== e.layer || parseInt(slot.getAttribute("data-filter"), 10) !== e.filter) return;
      var img = document.createElement("img");
      img.className = "thumb";
      img.src = withToken(e.src);
      img.alt = e.layer + " " + e.filter;
      slot.replaceWith(img);
    });
  }

  // A filter page: variant buttons and the dataset-examples button.
  if (page === "filter") {
    var filter = parseInt(body.getAttribute("data-filter"), 10);
    events(function (e) {
      if (e.type === "done") showThumb(e);
      if (e.layer !== layer) return;
      if (e.type === "progress" && e.task === "variant") {
        say(e.variant + ": step " + e.step + "/" + e.steps + (e.value === null ? "" : ", objective " + e.value.toFixed(3)));
      } else if (e.type === "variant" && e.filter === filter) {
        var slot = document.getElementById("variant-" + e.variant);
        if (slot) {
          slot.innerHTML = "";
          var img = document.createElement("img");
          img.src = withToken(e.src);
          img.alt = e.variant;
          img.className = e.variant === "diversity" ? "" : "big";
          img.style.maxWidth = "640px";
          slot.appendChild(img);
        }
        say(e.variant + " done");
      } else if (e.type === "preview" && e.filter === filter) {
        var wait = document.getElementById("preview");  // its quick preview, until the picture is made
        if (wait && wait.tagName !== "IMG") {
          var big = previewImage(e, "big preview");
          big.id = "preview";
          wait.replaceWith(big);
          say("a quick preview: the full picture follows");
        }
      } else if (e.type === "done" && e.filter === filter) {
        window.location.reload();
      } else if (e.type === "examples") {
        window.location.reload();
      } else if ((e.type === "trust" || e.type === "ablate") && e.filter === filter) {
        window.location.reload();
      } else if (e.type === "progress" && e.task === "ablate") {
        say("switching it off over the images: " + e.step + "/" + e.steps);
      } else if (e.type === "error") {
        say(e.message, true);
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll("button[data-variant]"), function (b) {
      b.addEventListener("click", function () {
        say("queued " + b.getAttribute("data-variant"));
        post(api.variant, { layer: layer, filter: filter, variant: b.getAttribute("data-variant") })
          .catch(function (err) { say(err.message, true); });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("button[data-ablate]"), function (b) {
      b.addEventListener("click", function () {
        b.disabled = true;
        say("queued: " + b.textContent);
        post(api.ablate, { layer: layer, filter: filter, kind: b.getAttribute("data-ablate") })
          .catch(function (err) { say(err.message, true); });
      });
    });
    if (document.getElementById("trust-pending")) {  // the path check, always on with --images
      post(api.trust, { layer: layer, filter: filter }).catch(function (err) { say(err.message, true); });
    }
    var ex = document.getElementById("examples-button");
    if (ex) ex.addEventListener("click", function () {
      say("scanning the images folder...");
      post(api.examples, { layer: layer }).catch(function (err) { say(err.message, true); });
    });
    // Neighbours without a picture: the button queues their atlas batches; each thumbnail fills when done.
    Array.prototype.forEach.call(document.querySelectorAll("button.neighbours"), function (b) {
      b.addEventListener("click", function () {
        var byLayer = {};
        JSON.parse(b.getAttribute("data-units")).forEach(function (u) {
          (byLayer[u[0]] = byLayer[u[0]] || []).push(u[1]);
        });
        b.disabled = true;
        Object.keys(byLayer).forEach(function (name) {
          post(api.compute, { layer: name, filters: byLayer[name] })
            .then(function (j) { say("queued " + j.batches + " batch(es) for " + name); })
            .catch(function (err) { say(err.message, true); });
        });
      });
    });
    var missingSelf = body.getAttribute("data-self-missing") === "1";
    if (missingSelf) post(api.compute, { layer: layer, filters: [filter], previews: true }).catch(function (err) { say(err.message, true); });
  }

  // A concepts page: the button asks for them; progress arrives as events, and the page reloads when done.
  if (page === "concepts") {
    var cls = body.getAttribute("data-class") || null;
    var button = document.getElementById("concepts-button");
    events(function (e) {
      if (e.layer !== layer) return;
      if (e.type === "progress" && e.task === "concepts") {
        var of = e.stage === "pictures" ? "step " : "image ";
        say("concepts: " + e.stage + ", " + of + e.step + "/" + e.steps + (e.value === null ? "" : ", objective " + e.value.toFixed(3)));
        if (bar && e.steps) bar.style.width = (100 * e.step / e.steps) + "%";
      } else if (e.type === "concepts" && (e["class"] || null) === cls) {
        window.location.reload();
      } else if (e.type === "error") {
        say(e.message, true);
      }
    });
    var search = document.getElementById("class-search");
    var go = document.getElementById("class-go");
    if (search && go) {  // a long class list is a search box: go to the class typed or picked
      var open = function () {
        var url = new URL(window.location.href);
        if (search.value) url.searchParams.set("class", search.value); else url.searchParams["delete"]("class");
        url.searchParams["delete"]("token");
        window.location.href = url.pathname + url.search;
      };
      go.addEventListener("click", open);
      search.addEventListener("keydown", function (ev) { if (ev.key === "Enter") open(); });
    }
    if (button) button.addEventListener("click", function () {
      var k = parseInt(document.getElementById("concepts-k").value, 10);
      say("queued: finding " + k + " concepts");
      post(api.concepts, { layer: layer, k: k, "class": cls }).catch(function (err) { say(err.message, true); });
    });
  }

  // Pictures made from a photo (caricature, DeepDream, accentuation): each form asks /api/photo.png and shows the
  // answer in its slot; the steps arrive as progress events.
  var photoForms = document.querySelectorAll("form.photo-form");
  if (photoForms.length) {
    events(function (e) {
      if (e.type === "progress" && e.task === "photo") {
        var part = e.stage.indexOf("part") === 0 ? " (" + e.stage + ")" : "";
        say("picture from the photo" + (e.layer ? " at " + e.layer : "") + part + ": step " + e.step + "/" + e.steps);
      }
    });
  }
  Array.prototype.forEach.call(photoForms, function (pform) {
    pform.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(pform);
      var photo = data.get("photo");
      data["delete"]("photo");
      var slot = document.getElementById(pform.getAttribute("data-slot"));
      var out = document.createElement("img");  // made on request: no empty image on the page before
      out.className = "photo-picture";
      out.alt = data.get("kind") + " of the photo";
      slot.innerHTML = "";
      slot.appendChild(out);
      say("queued: " + data.get("kind") + " of the photo");
      out.onload = function () { say(data.get("kind") + " ready"); markImagesLoaded(); };
      out.onerror = function () {
        fetch(out.src).then(function (r) { return r.json(); }).then(function (j) { say(j.error, true); })
          .catch(function () { say("the picture failed", true); });
      };
      out.src = withToken(api.photo + "?" + new URLSearchParams(data).toString() + "&" + photo);
    });
  });

  // An image page: the heatmap and feature-map pictures follow the choosers, and the URL keeps the choices
  // (method, target, filter, layer, concepts), so it reopens to the same view.
  function keepInUrl(fields) {
    var url = new URL(window.location.href);
    Object.keys(fields).forEach(function (k) {
      if (fields[k]) url.searchParams.set(k, fields[k]); else url.searchParams["delete"](k);
    });
    url.searchParams["delete"]("token");
    window.history.replaceState(null, "", url.pathname + url.search);
  }
  if (page === "image") {
    var form = document.getElementById("heatmap-form");
    var out = document.getElementById("heatmap");
    if (form && out) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var fd = new FormData(form);
        var q = new URLSearchParams(fd).toString();
        keepInUrl({ method: fd.get("method"), target: fd.get("target"), filter: fd.get("filter") });
        say("computing the heatmap...");
        out.onload = function () { say("heatmap ready"); markImagesLoaded(); };
        out.onerror = function () {
          fetch(out.src).then(function (r) { return r.json(); }).then(function (j) { say(j.error, true); })
            .catch(function () { say("the heatmap failed", true); });
        };
        out.src = withToken(api.heatmap + "?" + q);
      });
      form.dispatchEvent(new Event("submit"));
    }
    var mform = document.getElementById("maps-form");
    var mout = document.getElementById("maps");
    if (mform && mout) {
      mform.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var mfd = new FormData(mform);
        var q = new URLSearchParams(mfd).toString();
        keepInUrl({ layer: mfd.get("layer") });
        mout.onload = markImagesLoaded;
        mout.src = withToken(api.maps + "?" + q);
      });
      mform.dispatchEvent(new Event("submit"));
    }
    var cform = document.getElementById("concepts-form");
    var cout = document.getElementById("concept-maps");
    if (cform && cout) {
      cform.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var data = new FormData(cform);
        var chosen = data.get("concepts");
        data["delete"]("concepts");
        keepInUrl({ concepts: chosen });
        say("finding the concepts in the image...");
        cout.onload = function () { say("concepts shown"); markImagesLoaded(); };
        cout.onerror = function () {
          fetch(cout.src).then(function (r) { return r.json(); }).then(function (j) { say(j.error, true); })
            .catch(function () { say("the concepts could not be shown", true); });
        };
        cout.src = withToken(api.concept_maps + "?" + new URLSearchParams(data).toString() + "&" + chosen);
      });
      cform.dispatchEvent(new Event("submit"));
    }
  }
})();
