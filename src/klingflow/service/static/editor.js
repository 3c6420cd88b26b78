// The workflow editor: CodeMirror (vendored, YAML mode) over the form's textarea, a check of
// the draft as you type (problems marked on their lines, graph, price), node snippets.
// Without this script the textarea and the Check / Publish buttons still work.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("editor-form");
  const textarea = document.getElementById("source");
  if (!form || !textarea || !window.CodeMirror) return;
  const editor = window.CodeMirror.fromTextArea(textarea, {
    mode: "yaml", lineNumbers: true, indentUnit: 2, tabSize: 2, lineWrapping: true,
    extraKeys: { Tab: (cm) => cm.replaceSelection("  ") },
  });
  form.editor = editor;
  const results = document.getElementById("editor-results");
  let marked = [];

  function mark() {
    for (const line of marked) editor.removeLineClass(line, "wrap", "cm-problem-line");
    const lines = (results.querySelector("#check")?.dataset.problemLines || "").split(",");
    marked = lines.filter(Boolean).map((n) => Number(n) - 1).filter((n) => n < editor.lineCount());
    for (const line of marked) editor.addLineClass(line, "wrap", "cm-problem-line");
  }

  let pending = null;
  let sent = 0;
  async function check() {
    const number = ++sent;
    editor.save();
    const body = new FormData(form);
    body.delete("intent");
    try {
      const response = await fetch("/fragments/editor-check", { method: "POST", body, credentials: "same-origin" });
      if (response.redirected || response.status === 401) return location.reload();
      if (response.ok && number === sent) {  // an older answer never replaces a newer one
        results.innerHTML = await response.text();
        mark();
      }
    } catch (error) {
      console.warn("klingflow: the live check failed", error);
    }
  }
  const later = () => { clearTimeout(pending); pending = setTimeout(check, 350); };
  editor.on("change", later);
  document.getElementById("sample")?.addEventListener("input", later);

  results.addEventListener("click", (event) => {  // "line 7" jumps to line 7
    const item = event.target.closest("[data-line]");
    if (!item) return;
    event.preventDefault();
    const line = Number(item.dataset.line) - 1;
    editor.setCursor({ line, ch: 0 });
    editor.scrollIntoView({ line, ch: 0 }, 80);
    editor.focus();
  });

  const snippets = document.getElementById("snippets");
  snippets.hidden = false;
  document.getElementById("insert-snippet").addEventListener("click", () => {
    const option = document.getElementById("snippet").selectedOptions[0];
    const line = editor.getCursor().line;
    const at = editor.getLine(line).trim() ? { line: line + 1, ch: 0 } : { line, ch: 0 };
    if (at.line >= editor.lineCount()) editor.replaceRange("\n", { line: editor.lineCount(), ch: 0 });
    editor.replaceRange(option.dataset.text, at);
    editor.focus();
  });
  mark();
});
