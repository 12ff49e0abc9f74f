import { describe, expect, it } from "vitest";
import { followSse } from "../src/lib/sse";

/** A fetch whose answers are streams of the given chunks, one answer per call. */
function fakeFetch(answers: (string[] | number)[]) {
  const calls: { headers: Record<string, string> }[] = [];
  const fn = (async (_url: string, init: RequestInit) => {
    calls.push({ headers: { ...(init.headers as Record<string, string>) } });
    const a = answers.shift();
    if (a === undefined) throw new TypeError("network down");
    if (typeof a === "number") return new Response("nope", { status: a });
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const chunk of a) c.enqueue(enc.encode(chunk));
        c.close();
      },
    });
    return new Response(body, { status: 200 });
  }) as unknown as typeof fetch;
  return { fn, calls };
}

async function collect(answers: (string[] | number)[], stopAfter: number) {
  const ctl = new AbortController();
  const got: { event?: string; id?: string; data: string }[] = [];
  const opens: boolean[] = [];
  const { fn, calls } = fakeFetch(answers);
  let fatal: number | null = null;
  await followSse("/s", {
    onMessage: (m) => {
      got.push({ event: m.event, id: m.id, data: m.data });
      if (got.length >= stopAfter) ctl.abort();
    },
    onOpen: (again) => opens.push(again),
    onFatal: (status) => { fatal = status; },
  }, { signal: ctl.signal, fetchFn: fn, sleep: async () => { if (answers.length === 0) ctl.abort(); } });
  return { got, calls, opens, fatal };
}

describe("followSse", () => {
  it("parses events framed with CRLF, as chatd's server sends them", async () => {
    const { got } = await collect([["event: status\r\nid: 0\r\ndata: {\"a\":1}\r\n\r\nevent: message\r\nid: 7\r\ndata: {\"b\":2}\r\n\r\n"]], 2);
    expect(got).toEqual([{ event: "status", id: "0", data: "{\"a\":1}" }, { event: "message", id: "7", data: "{\"b\":2}" }]);
  });

  it("parses events framed with LF and with CR alone", async () => {
    // A lone CR at the end of a chunk may be half of a CRLF: the event completes with the next chunk.
    const { got } = await collect([["event: a\ndata: 1\n\n", "event: b\rdata: 2\r\r", ": keep-alive\r\r"]], 2);
    expect(got.map((g) => [g.event, g.data])).toEqual([["a", "1"], ["b", "2"]]);
  });

  it("joins an event split across chunks, even between CR and LF", async () => {
    const { got } = await collect([["event: mess", "age\r", "\ndata: {\"x\":", "\"y\"}\r\n", "\r\n"]], 1);
    expect(got).toEqual([{ event: "message", id: undefined, data: "{\"x\":\"y\"}" }]);
  });

  it("reconnects after the stream ends and sends the last id as Last-Event-ID", async () => {
    const { got, calls, opens } = await collect([["id: 5\r\ndata: one\r\n\r\n"], ["id: 9\r\ndata: two\r\n\r\n"]], 2);
    expect(got.map((g) => g.data)).toEqual(["one", "two"]);
    expect(calls[0].headers["Last-Event-ID"]).toBeUndefined();
    expect(calls[1].headers["Last-Event-ID"]).toBe("5");
    expect(opens).toEqual([false, true]);
  });

  it("reconnects after a network error with the id it had", async () => {
    const answers: (string[] | number)[] = [["id: 3\ndata: a\n\n"]];
    const ctl = new AbortController();
    const { fn, calls } = fakeFetch(answers);
    let sleeps = 0;
    await followSse("/s", { onMessage: () => undefined }, {
      signal: ctl.signal, fetchFn: fn,
      sleep: async () => {
        sleeps++;
        if (sleeps === 2) answers.push(["data: b\n\n"]);
        if (sleeps === 3) ctl.abort();
      },
    });
    expect(calls.map((c) => c.headers["Last-Event-ID"])).toEqual([undefined, "3", "3"]);
  });

  it("stops on 401 and 404 without retrying", async () => {
    const r = await collect([404, ["data: never\n\n"]], 1);
    expect(r.fatal).toBe(404);
    expect(r.got).toEqual([]);
    expect(r.calls.length).toBe(1);
  });
});
