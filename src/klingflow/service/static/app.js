// klingflow's only script: live regions, and a confirmation before cancelling or paying.
// <div data-live="URL"> is refreshed from URL every data-poll-ms (on its first child) until
// that is 0. Children with an id are kept when their HTML did not change, so a playing video
// keeps playing and an opened <details> stays open; [data-keyed] containers are patched the
// same way one level down. A flash ("retrying", "started ...") goes once the run has settled
// in another status, so it never sits on top of a run that has since finished or paused again.
"use strict";

const rendered = new WeakMap();

function remember(parent) {
  for (const child of parent.children) {
    rendered.set(child, child.outerHTML);
    if (child.hasAttribute("data-keyed")) remember(child);
  }
}

function patch(current, fresh) {
  const kept = [...fresh.children].map((child) => {
    const html = child.outerHTML;
    const old = child.id ? current.querySelector(":scope > #" + CSS.escape(child.id)) : null;
    if (old && rendered.get(old) === html) return old;
    if (old && child.hasAttribute("data-keyed")) {
      patch(old, child);
      rendered.set(old, html);
      return old;
    }
    rendered.set(child, html);
    if (child.hasAttribute("data-keyed")) remember(child);
    return child;
  });
  current.replaceChildren(...kept);
  for (const attr of fresh.attributes) current.setAttribute(attr.name, attr.value);
}

const SETTLED = new Set(["paused", "completed", "failed", "cancelled", "crashed"]);

function status(region) {
  return region.querySelector("[data-run-status]")?.dataset.runStatus;
}

function live(region) {
  const root = () => region.firstElementChild;
  if (root()) remember(root());
  const tick = async () => {
    const wait = Number(root()?.dataset.pollMs || 0);
    if (!wait) return;
    await new Promise((resolve) => setTimeout(resolve, document.hidden ? wait * 3 : wait));
    try {
      const response = await fetch(region.dataset.live, { credentials: "same-origin" });
      if (response.redirected || response.status === 401) return location.reload();
      if (response.ok) {
        const template = document.createElement("template");
        template.innerHTML = (await response.text()).trim();
        const fresh = template.content.firstElementChild;
        const open = [...region.querySelectorAll("details[open][id]")].map((d) => d.id);
        const before = status(region);
        patch(root(), fresh);
        if (status(region) !== before && SETTLED.has(status(region))) {
          document.querySelectorAll(".flash[role=status]").forEach((flash) => flash.remove());
        }
        for (const id of open) document.getElementById(id)?.setAttribute("open", "");
      }
    } catch (error) {
      console.warn("klingflow: live update failed, retrying", error);
    }
    tick();
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(live);
});

// data-confirm asks before posting; with data-confirm-if, only when that checkbox is ticked.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const message = form.dataset?.confirm;
  const only = form.dataset?.confirmIf;
  if (only && !form.elements[only]?.checked) return;
  if (message && !window.confirm(message)) event.preventDefault();
});

// A graph box links to a node's detail, which may sit in a closed <details>: open it.
document.addEventListener("click", (event) => {
  const link = event.target.closest?.("svg.flow a");
  const hash = link?.getAttribute("href");
  if (!hash?.startsWith("#")) return;
  const target = document.getElementById(hash.slice(1));
  for (let node = target; node; node = node.parentElement) {
    if (node.tagName === "DETAILS") node.open = true;
  }
});
