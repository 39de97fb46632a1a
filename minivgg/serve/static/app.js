"use strict";
// The page: a drawing pad and a drop zone that POST the image to /api/predict, and the
// answer drawn as the top classes, the preprocessed image and a grid of feature maps per layer.
(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const body = document.body;
  const STROKE = 20;            // about MNIST's stroke width once the digit is fitted to 20x20
  const LIVE_EVERY_MS = 250;    // while drawing, at most one prediction this often
  let inFlight = false, queued = null, drawing = false, last = null, lastSent = 0, results = 0;
  let encoding = 0;             // pad images being turned into PNGs, not yet sent

  // data-idle="yes" once every image asked for has been answered (what a test waits for)
  function updateIdle() {
    body.dataset.idle = !inFlight && !queued && encoding === 0 ? "yes" : "no";
  }

  function clearPad() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function showMessage(text) {
    const box = $("message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function describe(info) {
    const [c, h, w] = info.input_shape;
    const prep = info.preprocess === "mnist" ? "MNIST-style preprocessing" : "resized to the input";
    return `${info.model} · trained on ${info.dataset} · ${info.classes.length} classes · ` +
           `input ${c}×${h}×${w} · ${prep} · ${info.tta}`;
  }

  async function loadInfo() {
    try {
      const response = await fetch("/api/info");
      const info = await response.json();
      $("model-info").textContent = describe(info);
      body.dataset.state = "ready";
    } catch (error) {
      $("model-info").textContent = "cannot reach the server: " + error;
      body.dataset.state = "error";
    }
  }

  function send(blob, type) {
    if (inFlight) { queued = { blob, type }; updateIdle(); return; }
    inFlight = true;
    body.dataset.state = "busy";
    updateIdle();
    fetch("/api/predict", { method: "POST", headers: { "Content-Type": type }, body: blob })
      .then(async (response) => {
        let payload;
        try { payload = await response.json(); }
        catch (error) { payload = { error: `the server answered ${response.status} without JSON` }; }
        if (!response.ok) throw new Error(`${response.status}: ${payload.error || response.statusText}`);
        render(payload);
      })
      .catch((error) => {
        showMessage(error.message || String(error));
        body.dataset.state = "error";
      })
      .finally(() => {
        inFlight = false;
        if (queued) { const next = queued; queued = null; send(next.blob, next.type); }
        updateIdle();
      });
  }

  function sendPad() {
    lastSent = performance.now();
    encoding += 1;
    updateIdle();
    pad.toBlob((blob) => { encoding -= 1; send(blob, "image/png"); updateIdle(); }, "image/png");
  }

  function render(result) {
    showMessage("");
    $("prediction").textContent = result.prediction;
    const top = $("top");
    top.replaceChildren(...result.top.map(({ label, probability }) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label"; name.textContent = label; name.title = label;
      const bar = document.createElement("span");
      bar.className = "bar"; bar.style.width = `${(probability * 100).toFixed(1)}%`;
      const value = document.createElement("span");
      value.className = "p"; value.textContent = `${(probability * 100).toFixed(1)}%`;
      const track = document.createElement("span");
      track.className = "track";
      track.appendChild(bar);
      item.append(name, track, value);
      return item;
    }));
    $("seen").src = result.input;
    $("timing").textContent = `answered in ${result.milliseconds} ms`;
    $("maps").replaceChildren(...result.feature_maps.map((layer) => {
      const [h, w] = layer.size;
      const cols = Math.ceil(Math.sqrt(layer.channels));
      const rows = Math.ceil(layer.channels / cols);
      const width = cols * (w + 1) - 1, height = rows * (h + 1) - 1;
      const scale = Math.max(1, Math.min(6, Math.floor(200 / Math.max(width, height))));
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.className = "feature-map";
      img.src = layer.image;
      img.width = width * scale; img.height = height * scale;
      img.alt = `feature maps of layer ${layer.layer}`;
      const caption = document.createElement("figcaption");
      caption.textContent = `layer ${layer.layer}: ${layer.channels} maps, ${h}×${w}`;
      figure.append(img, caption);
      return figure;
    }));
    results += 1;
    body.dataset.results = String(results);
    body.dataset.state = "done";
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width,
            (event.clientY - box.top) * pad.height / box.height];
  }

  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = point(event);
    pad.setPointerCapture(event.pointerId);
    ctx.beginPath();
    ctx.arc(last[0], last[1], STROKE / 2, 0, 2 * Math.PI);
    ctx.fillStyle = "#000";
    ctx.fill();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const here = point(event);
    ctx.strokeStyle = "#000"; ctx.lineWidth = STROKE; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...here); ctx.stroke();
    last = here;
    if (performance.now() - lastSent > LIVE_EVERY_MS && !inFlight) sendPad();
  });
  const endStroke = () => { if (drawing) { drawing = false; sendPad(); } };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function sendFile(file) {
    if (!file) return;
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      clearPad();
      const scale = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * scale, h = img.height * scale;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      URL.revokeObjectURL(url);
    };
    img.onerror = () => URL.revokeObjectURL(url);
    img.src = url;
    send(file, file.type || "application/octet-stream");
  }

  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    sendFile(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (event) => { sendFile(event.target.files[0]); event.target.value = ""; });
  $("clear").addEventListener("click", () => {
    clearPad();
    showMessage("");
    $("prediction").textContent = "–";
    $("top").replaceChildren();
    $("maps").replaceChildren();
    $("seen").removeAttribute("src");
    $("timing").textContent = "";
  });

  clearPad();
  updateIdle();
  loadInfo();
})();
