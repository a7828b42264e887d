// The registration frame: opens Checkout in a popup, learns every outcome from the server, and keeps the
// confirmation on screen until the admin presses Finish.
// Sentences the script says itself come from data-* attributes of #flow (translated with the page).
(function () {
  "use strict";
  // The confirmation's Copy button (in the frame, and on the payment popup's return page).
  function wireCopy() {
    var button = document.getElementById("copy-key");
    var key = document.getElementById("licence-key");
    var said = document.getElementById("copy-said");
    if (!button || !key || button.getAttribute("data-wired")) { return; }
    button.setAttribute("data-wired", "yes");
    function done() { if (said) { said.textContent = button.getAttribute("data-copied-text") || "Copied"; } }
    function select() {  // without the clipboard (an LMS frame may deny it): select the key, copy the selection
      var range = document.createRange();
      range.selectNodeContents(key);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      if (copied) { done(); }
    }
    button.addEventListener("click", function () {
      if (said) { said.textContent = ""; }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(key.textContent.trim()).then(done, select);
      } else {
        select();
      }
    });
  }
  wireCopy();
  var root = document.getElementById("flow");
  if (!root) { return; }
  var statusUrl = root.getAttribute("data-status-url");
  var statusText = document.getElementById("status");
  var payArea = document.getElementById("pay-area");
  var payButton = document.getElementById("pay");
  var blocked = document.getElementById("blocked");
  var blockedLink = document.getElementById("blocked-link");
  var invoiceOption = document.getElementById("invoice-option");
  var keyOption = document.getElementById("key-option");
  var pilotOption = document.getElementById("pilot-option");
  var completion = null;   // LTIaaS's html, run when the admin presses Finish
  var finishPressed = false;
  var nonce = document.currentScript && document.currentScript.nonce;
  var payUrl = payArea && payArea.getAttribute("action");
  var payLabel = payButton && payButton.textContent;
  var quoteUrl = root.getAttribute("data-quote-url");
  var seats = document.getElementById("seats");
  var seatsArea = document.getElementById("seats-area");
  var seatsLabel = document.getElementById("seats-label");
  var seatsError = document.getElementById("seats-error");
  var quoteText = document.getElementById("quote");
  var priceText = document.getElementById("price");
  var termsList = document.getElementById("terms");
  var quoteTimer = null;
  var quoteSeq = 0;
  var ran = false;
  var timer = null;
  var popup = null;        // the payment window while it is open
  var openedTarget = null; // the choice it was opened for
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

  // The offer and the number of seats: the server says what they cost (one place decides the amount).
  function chosenOffer() {
    if (!payArea) { return null; }
    return payArea.querySelector("input[name=offer]:checked") ||
           payArea.querySelector("input[type=hidden][name=offer]");
  }

  function setText(element, sentence) {
    if (element && element.textContent !== sentence) { element.textContent = sentence; }
  }

  function showSeatsError(sentence) {
    setText(seatsError, sentence || "");
    setHidden(seatsError, !sentence);
    if (seats) {
      if (sentence) { seats.setAttribute("aria-invalid", "true"); } else { seats.removeAttribute("aria-invalid"); }
    }
  }

  // The number as the admin typed it, checked as the server checks it: a whole number within the offer's range.
  function seatsProblem() {
    var offer = chosenOffer();
    if (!offer || offer.getAttribute("data-per-seat") !== "yes" || !seats) { return null; }
    var value = seats.value.trim();
    var low = parseInt(offer.getAttribute("data-min"), 10), high = parseInt(offer.getAttribute("data-max"), 10);
    if (!/^\d{1,7}$/.test(value) || parseInt(value, 10) < low || parseInt(value, 10) > high) {
      return offer.getAttribute("data-refusal");
    }
    return null;
  }

  function choiceQuery() {
    var offer = chosenOffer();
    var query = "offer=" + encodeURIComponent(offer ? offer.value : "");
    if (offer && offer.getAttribute("data-per-seat") === "yes" && seats) {
      query += "&seats=" + encodeURIComponent(seats.value.trim());
    }
    return query;
  }

  function offerChanged() {
    var offer = chosenOffer();
    if (!offer || !seats) { return; }
    var perSeat = offer.getAttribute("data-per-seat") === "yes";
    setHidden(seatsArea, !perSeat);
    seats.disabled = !perSeat;
    if (perSeat) {
      var low = offer.getAttribute("data-min"), high = offer.getAttribute("data-max");
      if (seats.min !== low || seats.max !== high) {
        seats.min = low;
        seats.max = high;
        seats.value = low;  // another offer's range: its minimum at first, as on arrival
      }
      setText(seatsLabel, offer.getAttribute("data-seats-label"));
    }
    requestQuote();
  }

  function requestQuote() {
    clearTimeout(quoteTimer);
    var problem = seatsProblem();
    showSeatsError(problem);
    if (problem || !quoteUrl) { return; }
    quoteTimer = setTimeout(function () {
      var seq = ++quoteSeq;
      fetch(quoteUrl + "?" + choiceQuery(), { cache: "no-store", credentials: "omit",
                                              headers: { "Accept": "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (quote) {
          if (seq !== quoteSeq) { return; }  // an older answer: a newer question is on its way
          if (quote.error) { showSeatsError(quote.error); return; }
          setText(quoteText, quote.breakdown);
          setText(priceText, quote.total);
          payLabel = quote.pay_label;
          labelButton();
          if (termsList) {
            termsList.textContent = "";
            quote.terms.forEach(function (line) {
              var item = document.createElement("li");
              item.textContent = line;
              termsList.appendChild(item);
            });
          }
        })
        .catch(function () { /* the server checks the choice again when Pay is pressed */ });
    }, 250);
  }

  if (payArea) {
    Array.prototype.forEach.call(payArea.querySelectorAll("input[name=offer]"), function (radio) {
      radio.addEventListener("change", offerChanged);
    });
    if (seats) { seats.addEventListener("input", requestQuote); }
  }
  var invoiceForm = document.getElementById("invoice-form");
  if (invoiceForm) {
    invoiceForm.addEventListener("submit", function (event) {  // the invoice is for the offer chosen above
      var problem = seatsProblem();
      if (problem) {
        event.preventDefault();
        showSeatsError(problem);
        if (seats) { seats.focus(); }
        return;
      }
      var offer = chosenOffer();
      var offerField = document.getElementById("invoice-offer"), seatsField = document.getElementById("invoice-seats");
      if (offer && offerField) { offerField.value = offer.value; }
      if (seatsField) { seatsField.value = offer && offer.getAttribute("data-per-seat") === "yes" && seats ? seats.value.trim() : ""; }
    });
  }

  // window.open must run synchronously in the click (Enter and Space on the button are clicks too),
  // or popup blockers stop it.
  if (payArea && payButton) {
    payArea.addEventListener("submit", function (event) {
      event.preventDefault();  // the form is the fallback without script: a new tab
      var problem = seatsProblem();
      if (problem) {  // said here, in the frame: nothing is opened, nothing is made at Stripe
        showSeatsError(problem);
        if (seats) { seats.focus(); }
        return;
      }
      var target = payUrl + "?" + choiceQuery();
      if (popup && !popup.closed) {
        // Another offer or number of seats since the window opened: it goes to that choice's payment page
        // (the server closes the previous choice's session first, so that only one can be paid).
        if (target !== openedTarget) {
          try { popup.location.href = target; openedTarget = target; } catch (e) { /* closed meanwhile */ }
        }
        try { popup.focus(); } catch (e) { /* another browser's window: nothing to do */ }
        return;
      }
      if (blockedLink) { blockedLink.setAttribute("href", target); }
      var opened = window.open(target, "paygate-checkout", "popup,width=520,height=760");
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
      openedTarget = target;
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

  // Done: the confirmation stays until the admin presses Finish; only then does LTIaaS's html run (the LMS
  // closes its dialog). The page may hold it already (after a licence key: with the key typed); else the
  // status brings it.
  function showConfirmation(status) {
    completion = status.html || null;
    var section = document.getElementById("confirmation");
    if (!section && status.confirmation) {
      var template = document.createElement("template");
      template.innerHTML = status.confirmation;
      statusText.parentNode.insertBefore(template.content, statusText.nextSibling);
      section = document.getElementById("confirmation");
    }
    if (!section) {  // nothing to keep on screen
      if (completion) { runCompletion(completion); }
      return;
    }
    setHidden(section, false);
    wireCopy();
    var finish = document.getElementById("finish");
    if (finish && !finish.getAttribute("data-wired")) {
      finish.setAttribute("data-wired", "yes");
      finish.addEventListener("click", function () {
        finishPressed = true;
        finish.disabled = true;
        if (completion) { runCompletion(completion); }
      });
    }
    if (finishPressed && completion) { runCompletion(completion); }
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
    setHidden(keyOption, phase !== "pay");
    setHidden(pilotOption, phase !== "pay");
    if (phase === "done") { showConfirmation(status); }
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
