// Injected by tests/test-kyutai-client.c into Kyutai's web client before its
// own scripts run (DevTools Page.addScriptToEvaluateOnNewDocument).  It does
// not change what the client does: it wraps WebSocket and Worker to count
// what goes over the wire and what the Opus decoder worker returns, and
// keeps console errors.  Everything ends up in window.kyutaiStats.
(() => {
  const S = (window.kyutaiStats = {
    url: null, opened: false, closed: null,
    sent: {}, recv: {}, sentPages: 0, sentPackets: 0, maxPagesPerMsg: 0,
    firstSent: [], recvErrors: [], heads: [],
    decodedSamples: 0, decodedMessages: 0,
    consoleErrors: [], exceptions: [],
  });
  const hex = (b, n) =>
    Array.from(b.slice(0, n), (x) => x.toString(16).padStart(2, "0")).join("");
  // Ogg pages in one kind-1 payload: count them and their packets.
  const scanOgg = (b) => {
    let off = 0, pages = 0, packets = 0;
    while (off + 27 <= b.length && b[off] == 0x4f && b[off + 1] == 0x67 &&
           b[off + 2] == 0x67 && b[off + 3] == 0x53) {
      const nseg = b[off + 26];
      let body = 0;
      for (let i = 0; i < nseg; i++) {
        const l = b[off + 27 + i];
        body += l;
        if (l < 255) packets++;
      }
      const payload = b.slice(off + 27 + nseg, off + 27 + nseg + body);
      const magic = new TextDecoder().decode(payload.slice(0, 8));
      if (magic == "OpusHead" || magic == "OpusTags")
        S.heads.push(magic + " flags=" + b[off + 5] + " " + hex(payload, 19));
      off += 27 + nseg + body;
      pages++;
    }
    return { pages, packets, rest: b.length - off };
  };
  const Orig = window.WebSocket;
  class ProbeWebSocket extends Orig {
    constructor(url, protocols) {
      super(url, protocols);
      S.url = String(url);
      this.addEventListener("open", () => (S.opened = true));
      this.addEventListener("close", (e) =>
        (S.closed = { code: e.code, reason: e.reason, clean: e.wasClean }));
      this.addEventListener("message", (e) => {
        if (!(e.data instanceof ArrayBuffer)) {
          S.recv.textframe = (S.recv.textframe || 0) + 1;
          return;
        }
        const b = new Uint8Array(e.data);
        const k = b.length ? b[0] : "empty";
        S.recv[k] = (S.recv[k] || 0) + 1;
        if (k == 5) S.recvErrors.push(new TextDecoder().decode(b.slice(1)));
      });
    }
    send(d) {
      const b = d instanceof Uint8Array ? d
        : d instanceof ArrayBuffer ? new Uint8Array(d)
        : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      const k = b.length ? b[0] : "empty";
      S.sent[k] = (S.sent[k] || 0) + 1;
      if (k == 1) {
        const o = scanOgg(b.subarray(1));
        S.sentPages += o.pages;
        S.sentPackets += o.packets;
        S.maxPagesPerMsg = Math.max(S.maxPagesPerMsg, o.pages);
        if (S.firstSent.length < 6)
          S.firstSent.push({ len: b.length, pages: o.pages,
                             packets: o.packets, rest: o.rest,
                             head: hex(b, 32) });
      }
      return super.send(d);
    }
  }
  window.WebSocket = ProbeWebSocket;
  // The decoder worker (ogg-opus decoder) answers with [Float32Array].
  const OrigWorker = window.Worker;
  class ProbeWorker extends OrigWorker {
    constructor(url, opts) {
      super(url, opts);
      if (String(url).includes("decoderWorker"))
        this.addEventListener("message", (e) => {
          if (e.data && e.data[0] && e.data[0].length) {
            S.decodedSamples += e.data[0].length;
            S.decodedMessages++;
          }
        });
      this.addEventListener("error", (e) =>
        S.exceptions.push("worker " + url + ": " + e.message));
    }
  }
  window.Worker = ProbeWorker;
  const origError = console.error;
  console.error = function (...a) {
    S.consoleErrors.push(a.map(String).join(" ").slice(0, 300));
    return origError.apply(this, a);
  };
  window.addEventListener("error", (e) =>
    S.exceptions.push(String(e.message).slice(0, 300)));
  window.addEventListener("unhandledrejection", (e) =>
    S.exceptions.push("unhandled rejection: " + String(e.reason).slice(0, 300)));
})();
