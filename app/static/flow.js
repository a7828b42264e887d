// The registration frame: opens Checkout in a popup and learns every outcome from the server.
(function () {
  "use strict";
  var root = document.getElementById("flow");
  if (!root) { return; }
  var statusUrl = root.getAttribute("data-status-url");
  var statusText = document.getElementById("status");
  var payArea = document.getElementById("pay-area");
  var payLink = document.getElementById("pay");
  var blocked = document.getElementById("blocked");
  var invoiceOption = document.getElementById("invoice-option");
  var nonce = document.currentScript && document.currentScript.nonce;
  var ran = false;
  var timer = null;

  // window.open must run synchronously in the click, or popup blockers stop it.
  payLink.addEventListener("click", function (event) {
    var popup = window.open(payLink.href, "paygate-checkout", "popup,width=520,height=760");
    if (!popup) { blocked.hidden = false; return; }  // the plain link opens a tab instead
    event.preventDefault();
    blocked.hidden = true;
    statusText.textContent = "Complete the payment in the payment window. This window updates by itself.";
    poll(1000);
  });

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
    statusText.textContent = status.message;
    root.setAttribute("data-phase", status.phase);
    root.setAttribute("data-state", status.state);
    payArea.hidden = status.phase !== "pay";
    if (invoiceOption) { invoiceOption.hidden = status.phase !== "pay" && status.phase !== "invoice"; }
    if (status.phase === "done" && status.html) { runCompletion(status.html); }
  }

  function poll(delay) {
    clearTimeout(timer);
    timer = setTimeout(check, delay);
  }

  function check() {
    fetch(statusUrl, { cache: "no-store", credentials: "omit", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 404) { statusText.textContent = "This registration link is not known. Start the registration again from your LMS."; return null; }
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
