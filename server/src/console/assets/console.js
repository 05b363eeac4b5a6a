// pullpass console: progressive enhancement only. Every page works without
// this file; with it:
// - a login link's code (in the URL fragment, which browsers never send)
//   signs in by itself, and is removed from the address bar at once;
// - choosing Docker Hub, GHCR or Quay fills in its registry server;
// - the Copy button copies a new token.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("login-form");
  const code = window.location.hash.slice(1);
  if (login && code.startsWith("ppl_")) {
    history.replaceState(null, "", window.location.pathname);
    login.querySelector("#token").value = code;
    login.submit();
  }
  const provider = document.getElementById("provider");
  const registry = document.getElementById("registry_server");
  if (provider && registry && provider.tagName === "SELECT") {
    let filled = "";
    const fill = () => {
      const chosen = provider.selectedOptions[0];
      const server = chosen ? chosen.dataset.registry || "" : "";
      if (registry.value === "" || registry.value === filled) {
        registry.value = server;
        filled = server;
      }
    };
    provider.addEventListener("change", fill);
    fill();
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.select();
      }
    });
  }
});
