import { useMemo } from "preact/hooks";
import { renderMarkdown } from "../lib/markdown";

/** Markdown from a model or a tool, sanitised (lib/markdown.ts). */
export function Markdown({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  return <div class="md" dangerouslySetInnerHTML={{ __html: html }} />;
}
