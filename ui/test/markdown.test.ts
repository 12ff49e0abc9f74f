import { describe, expect, it } from "vitest";
import { renderMarkdown } from "../src/lib/markdown";

function dom(html: string): HTMLElement {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
}

describe("renderMarkdown", () => {
  it("renders markdown: headings, emphasis, lists, tables and highlighted code", () => {
    const el = dom(renderMarkdown("# Title\n\n**bold** and `x`\n\n- a\n- b\n\n| h |\n|---|\n| c |\n\n```python\nprint(1)\n```"));
    expect(el.querySelector("h1")?.textContent).toBe("Title");
    expect(el.querySelector("strong")?.textContent).toBe("bold");
    expect(el.querySelectorAll("li").length).toBe(2);
    expect(el.querySelector("td")?.textContent).toBe("c");
    const code = el.querySelector("pre code");
    expect(code?.className).toContain("language-python");
    expect(code?.querySelector("span")).not.toBeNull();
  });

  it("never loads a remote image: markdown images become links, raw <img> loses its source", () => {
    const el = dom(renderMarkdown(
      "see ![chart](http://127.0.0.1:9777/md-image?secret=42) and <img src=\"https://evil.example/x.png?d=1\" alt=\"raw\"> " +
        "![proto](//evil.example/y.png) ![inline](data:image/png;base64,iVBORw0KGgo=)",
    ));
    const srcs = Array.from(el.querySelectorAll("img")).map((img) => img.getAttribute("src"));
    expect(srcs).toEqual([null, "data:image/png;base64,iVBORw0KGgo="]);
    const links = Array.from(el.querySelectorAll("a.remote-image")).map((a) => a.getAttribute("href"));
    expect(links).toEqual(["http://127.0.0.1:9777/md-image?secret=42", "//evil.example/y.png"]);
    expect(el.textContent).toContain("chart");
  });

  it("removes scripts, event handlers and javascript: links from a model's answer", () => {
    const html = renderMarkdown(
      "<script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">a</a>" +
        "[b](javascript:alert(4)) <iframe src=\"https://evil\"></iframe><svg onload=alert(5)></svg>" +
        "<form action=/x><input name=t></form><div style=\"position:fixed\">c</div>",
    );
    const el = dom(html);
    expect(el.querySelector("script, iframe, form, input, [style]")).toBeNull();
    for (const node of Array.from(el.querySelectorAll("*"))) {
      for (const attr of Array.from(node.attributes)) {
        expect(attr.name.startsWith("on")).toBe(false);
        expect(attr.value.toLowerCase()).not.toContain("javascript:");
      }
    }
    // What is left of the attempts is text, never markup.
    expect(html).not.toMatch(/<(script|iframe|svg)|onerror=|onload=/i);
  });

  it("keeps a tool result's HTML-looking text inert (code stays text)", () => {
    const el = dom(renderMarkdown("```\n<img src=x onerror=alert(1)>\n```\n\n`<b>x</b>`"));
    expect(el.querySelector("img, b")).toBeNull();
    expect(el.textContent).toContain("<img src=x onerror=alert(1)>");
  });

  it("opens links in a new tab without the opener", () => {
    const a = dom(renderMarkdown("[chatd](https://example.com)")).querySelector("a")!;
    expect(a.getAttribute("href")).toBe("https://example.com");
    expect(a.getAttribute("target")).toBe("_blank");
    expect(a.getAttribute("rel")).toContain("noopener");
  });
});
