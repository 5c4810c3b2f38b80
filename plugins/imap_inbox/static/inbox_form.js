/* "Connect via IMAP" form: the provider drop-down fills Host, Port and Security and shows the
   provider's hint. Presets come from the page (<script type="application/json" id="imap-presets">).
   Without JS the server does the same when the host is left empty. Text only, never innerHTML. */
(function () {
  "use strict";

  var dataNode = document.getElementById("imap-presets");
  var provider = document.getElementById("provider");
  if (!dataNode || !provider) return;

  var presets = {};
  JSON.parse(dataNode.textContent).forEach(function (p) { presets[p.key] = p; });

  var host = document.getElementById("host");
  var port = document.getElementById("port");
  var security = document.getElementById("security");
  var hintBox = document.getElementById("provider-hint");
  var hintText = hintBox && hintBox.querySelector("[data-role=text]");
  var hintLink = hintBox && hintBox.querySelector("[data-role=link]");
  var DEFAULT_PORTS = { ssl: "993", starttls: "143" };

  function isPresetHost(value) {
    return Object.keys(presets).some(function (key) { return presets[key].host && presets[key].host === value; });
  }

  function showHint(preset) {
    if (!hintBox) return;
    hintBox.hidden = !(preset && preset.hint);
    hintText.textContent = preset ? preset.hint : "";
    var url = preset && preset.help_url;
    if (url && /^https:\/\//.test(url)) {
      hintLink.href = url;
      hintLink.textContent = preset.help_text || "Help";
      hintLink.hidden = false;
    } else {
      hintLink.hidden = true;
    }
  }

  // Google and Microsoft 365: signing in is offered first (the boxes exist on the "new inbox" page only).
  var signInBoxes = document.querySelectorAll(".oauth-preferred[data-preset]");
  function showSignIn() {
    Array.prototype.forEach.call(signInBoxes, function (box) { box.hidden = box.dataset.preset !== provider.value; });
  }

  function applyPreset() {
    var preset = presets[provider.value];
    showHint(preset);
    showSignIn();
    if (!preset) return;
    if (preset.host) {
      host.value = preset.host;
      port.value = String(preset.port);
      security.value = preset.security;
    } else if (isPresetHost(host.value)) {
      // Switching to "Other" after a provider: clear its server so it is not kept by mistake.
      host.value = "";
      host.focus();
    }
  }

  // Picking STARTTLS/SSL moves the port along, unless the admin typed a custom one.
  var lastSecurity = security.value;
  function followSecurity() {
    if (port.value === "" || port.value === DEFAULT_PORTS[lastSecurity]) {
      port.value = DEFAULT_PORTS[security.value] || port.value;
    }
    lastSecurity = security.value;
  }

  provider.addEventListener("change", applyPreset);
  security.addEventListener("change", followSecurity);
  // A provider picked before this deferred script ran (a quick hand, or the browser restoring the form)
  // still fills an empty server; a server already there is never overwritten on load.
  if (host.value === "") {
    applyPreset();
  } else {
    showHint(presets[provider.value]);
    showSignIn();
  }
})();
