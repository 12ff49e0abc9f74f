// Markdown for model answers and tool results: marked renders, highlight.js colours code, and
// DOMPurify removes anything that could run (a model's answer is untrusted input).

import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { Marked } from "marked";

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    code({ text, lang }) {
      const language = (lang ?? "").trim().split(/\s+/)[0];
      const html = language && hljs.getLanguage(language)
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : hljs.highlightAuto(text).value;
      const cls = language ? ` class="hljs language-${language.replace(/[^\w-]/g, "")}"` : ' class="hljs"';
      return `<pre><code${cls}>${html}</code></pre>\n`;
    },
  },
});

let hooked = false;
function hook(): void {
  if (hooked) return;
  hooked = true;
  // Links from a model open in a new tab and never pass the opener or the referrer.
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.getAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
}

/** Sanitised HTML for `source` (markdown). Safe to put into innerHTML. */
export function renderMarkdown(source: string): string {
  hook();
  const raw = marked.parse(source) as string;
  return DOMPurify.sanitize(raw, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  });
}
