// Markdown for model answers and tool results: marked renders, highlight.js colours code, and
// DOMPurify removes anything that could run (a model's answer is untrusted input). Images load only
// from data: and blob: URLs: an image address in an answer is fetched without a click, so a model
// (or a tool result it repeats) could send what it read in the chat to any server. Remote images
// become links (the server's Content-Security-Policy blocks them too).

import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { Marked } from "marked";

/** Whether an image address may load without a click: inline data, or a blob the UI made. */
export function isLocalImage(src: string): boolean {
  return /^(data:image\/|blob:)/i.test(src.trim());
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    image({ href, title, text }) {
      if (isLocalImage(href)) return false; // marked's own rendering
      const label = escapeHtml(text || title || href);
      return `<a href="${escapeHtml(href)}" class="remote-image" title="Remote image (not loaded): ${escapeHtml(href)}">🖼 ${label}</a>`;
    },
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
    // Raw HTML images from a model: no remote source (the alt text stays).
    if (node.tagName === "IMG" && !isLocalImage(node.getAttribute("src") ?? "")) {
      node.removeAttribute("src");
      node.removeAttribute("srcset");
    }
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
