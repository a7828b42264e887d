// The registration frame: opens Checkout in a popup and learns every outcome from the server.
// Sentences the script says itself come from data-* attributes of #flow (translated with the page).
(function () {
  "use strict";
  var root = document.getElementById("flow");
  if (!root) { return; }
  var statusUrl = root.getAttribute("data-status-url");
  var statusText = document.getElementById("status");
  var payArea = document.getElementById("pay-area");
  var payButton = document.getElementById("pay");
  var blocked = document.getElementById("blocked");
  var blockedLink = document.getElementById("blocked-link");
  var invoiceOption = document.getElementById("invoice-option");
  var nonce = document.currentScript && document.currentScript.nonce;
  var payUrl = payArea && payArea.getAttribute("action");
  var payLabel = payButton && payButton.textContent;
  var ran = false;
  var timer = null;
  var popup = null;        // the payment window while it is open
  var watcher = null;      // notices the payment window closing
  var phase = root.getAttribute("data-phase");
  var serverText = statusText.textContent;  // the server's last sentence
  var local = null;        // {text, base}: a sentence of ours, kept while the server's stays `base`

  function text(name, fallback) {
    return root.getAttribute("data-" + name + "-text") || fallback;
  }

  // The live region is written only when its sentence changes: a screen reader announces every write.
  function say(sentence) {
    if (statusText.textContent !== sentence) { statusText.textContent = sentence; }
  }

  function setHidden(element, hidden) {
    if (element && element.hidden !== hidden) { element.hidden = hidden; }
  }

  function render() {
    say(local && phase === "pay" && serverText === local.base ? local.text : serverText);
  }

  function saySoon(sentence) {  // until the server says something new
    local = { text: sentence, base: serverText };
    render();
  }

  function labelButton() {
    if (!payButton) { return; }
    var label = popup ? text("reopen", "Reopen the payment window") : payLabel;
    if (payButton.textContent !== label) { payButton.textContent = label; }
  }

  function watchPopup() {
    clearInterval(watcher);
    watcher = setInterval(function () {
      var closed = true;
      try { closed = !popup || popup.closed; } catch (e) { closed = true; }
      if (closed) {
        popup = null;
        clearInterval(watcher);
        labelButton();
      }
    }, 500);
  }

  // window.open must run synchronously in the click (Enter and Space on the button are clicks too),
  // or popup blockers stop it.
  if (payArea && payButton) {
    payArea.addEventListener("submit", function (event) {
      event.preventDefault();  // the form is the fallback without script: a new tab
      if (popup && !popup.closed) {
        try { popup.focus(); } catch (e) { /* another browser's window: nothing to do */ }
        return;
      }
      var opened = window.open(payUrl, "paygate-checkout", "popup,width=520,height=760");
      if (!opened) {
        popup = null;
        setHidden(blocked, false);
        saySoon(text("blocked", "Your browser blocked the payment window. Open the payment page with the " +
                               "link below, then come back to this window."));
        if (blockedLink) { blockedLink.focus(); }
        labelButton();
        return;
      }
      // noopener, keeping the handle: Checkout (another site) must never reach this frame through
      // window.opener. The popup needs nothing of ours: the frame learns the outcome from the server.
      try { opened.opener = null; } catch (e) { /* not ours to change: nothing of ours to sever */ }
      popup = opened;
      setHidden(blocked, true);
      saySoon(text("opened", "Complete the payment in the payment window. This window updates by itself."));
      labelButton();
      watchPopup();
      poll(1000);
    });
  }
  if (blockedLink) {
    blockedLink.addEventListener("click", function () {
      saySoon(text("opened", "Complete the payment in the payment window. This window updates by itself."));
      poll(1000);
    });
  }

  // The LTIaaS html must run in THIS document (the frame or tab the LMS opened), never in the popup.
  function runCompletion(html) {
    if (ran) { return; }
    ran = true;
    var template = document.createElement("template");
    template.innerHTML = html;
    Array.prototype.forEach.call(template.content.childNodes, function (node) {
      if (node.nodeName === "SCRIPT") {
        var script = document.createElement("script");
        if (nonce) { script.nonce = nonce; }
        script.textContent = node.textContent;
        document.body.appendChild(script);
      } else {
        document.body.appendChild(document.importNode(node, true));
      }
    });
  }

  function show(status) {
    serverText = status.message;
    phase = status.phase;
    if (phase !== "pay") { local = null; }
    render();
    if (root.getAttribute("data-phase") !== status.phase) { root.setAttribute("data-phase", status.phase); }
    if (root.getAttribute("data-state") !== status.state) { root.setAttribute("data-state", status.state); }
    setHidden(payArea, phase !== "pay");
    if (phase !== "pay") { setHidden(blocked, true); }
    setHidden(invoiceOption, phase !== "pay" && phase !== "invoice");
    if (phase === "done" && status.html) { runCompletion(status.html); }
  }

  function poll(delay) {
    clearTimeout(timer);
    timer = setTimeout(check, delay);
  }

  function check() {
    fetch(statusUrl, { cache: "no-store", credentials: "omit", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 404) {
          local = null;
          say(text("unknown", "This registration link is not known. Start the registration again from your LMS."));
          return null;
        }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (status) {
        if (status === null) { return; }  // an unknown link never becomes known
        show(status);
        // Even "stop" is asked again, slowly: a late payment can still revive a registration.
        if (status.phase !== "done") { poll(status.phase === "stop" ? 15000 : 1500); }
      })
      .catch(function () { poll(4000); });  // a network blip: keep asking, a little slower
  }

  check();
}());
