"use strict";
// Same-origin calls only: the web service proxies /api/* to the API, so no CORS and no API URL here.
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const $ = (id) => document.getElementById(id);
let current = null; // the identity on display, with its embedding

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function call(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const reason = body && (body.message || body.detail) || response.statusText;
    throw Object.assign(new Error(typeof reason === "string" ? reason : JSON.stringify(reason)), {status: response.status});
  }
  return body;
}

async function lookUp(address) {
  if (!ADDRESS.test(address)) {
    say("The address must be 0x followed by 40 hexadecimal digits.", true);
    $("address").setAttribute("aria-invalid", "true");
    $("address").focus();
    return;
  }
  $("address").removeAttribute("aria-invalid");
  say("Looking up " + address + "…");
  try {
    current = await call("/api/identities/" + address);
  } catch (error) {
    current = null;
    $("identity").hidden = true;
    $("similar-button").disabled = true;
    say(error.status === 404 ? "No identity with address " + address.toLowerCase() + "." : "Lookup failed: " + error.message, true);
    return;
  }
  $("identity-address").textContent = current.address;
  $("identity-created").textContent = current.created_at || "unknown";
  $("identity-updated").textContent = current.updated_at || "unknown";
  $("trust-score").textContent = current.trust ? current.trust.score.toFixed(6) : "not computed yet";
  $("identity").hidden = false;
  $("similar-button").disabled = !current.embedding;
  say("Found " + current.address + (current.embedding ? "." : " (it has no embedding, so no similarity search)."));
}

async function findSimilar(k) {
  if (!current || !current.embedding) return;
  say("Searching…");
  try {
    const body = await call("/api/similarity", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({embedding: current.embedding, k: k}),
    });
    const rows = body.results.map((result, i) => {
      const tr = document.createElement("tr");
      tr.dataset.address = result.address;
      const rank = document.createElement("td"); rank.textContent = String(i + 1);
      const who = document.createElement("td");
      const link = document.createElement("button");
      link.type = "button"; link.className = "link"; link.textContent = result.address;
      link.setAttribute("aria-label", "Look up " + result.address);
      link.addEventListener("click", () => { $("address").value = result.address; lookUp(result.address); });
      who.appendChild(link);
      const distance = document.createElement("td"); distance.textContent = result.distance.toFixed(4);
      tr.append(rank, who, distance);
      return tr;
    });
    $("results-body").replaceChildren(...rows);
    $("results").hidden = false;
    say(rows.length + " similar " + (rows.length === 1 ? "identity" : "identities") + " found.");
  } catch (error) {
    say("Similarity search failed: " + error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lookup-form").addEventListener("submit", (event) => { event.preventDefault(); lookUp($("address").value.trim()); });
  $("similar-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const k = Number($("k").value);
    if (!Number.isInteger(k) || k < 1 || k > 100) { say("How many must be a whole number from 1 to 100.", true); $("k").focus(); return; }
    findSimilar(k);
  });
  fetch("/healthz").then((r) => r.json()).then((h) => { $("version").textContent = h.version; }).catch(() => {});
  const preset = new URLSearchParams(location.search).get("address");
  if (preset) { $("address").value = preset; lookUp(preset); }
});
