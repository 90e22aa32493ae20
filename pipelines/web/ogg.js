// Ogg pages for Opus (RFC 3533, RFC 7845): a small writer and reader.
// Kyutai's protocol carries audio as Ogg pages of Opus, 24 kHz mono; the
// browser's WebCodecs gives raw Opus packets, so we wrap and unwrap them.
"use strict";

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let b = 0; b < 8; b++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    t[i] = r >>> 0;
  }
  return t;
})();

export function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++)
    crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  return crc >>> 0;
}

// One page holding whole packets (each < 255 * 255 bytes).
// flags: 2 = beginning of stream, 4 = end of stream.
export function oggPage(packets, { granule = 0n, serial = 1, seq = 0, flags = 0 }) {
  const lacing = [];
  for (const p of packets) {
    let n = p.length;
    while (n >= 255) { lacing.push(255); n -= 255; }
    lacing.push(n);
  }
  if (lacing.length > 255) throw new Error("too many segments for one page");
  const bodyLen = packets.reduce((a, p) => a + p.length, 0);
  const page = new Uint8Array(27 + lacing.length + bodyLen);
  const dv = new DataView(page.buffer);
  page.set([0x4f, 0x67, 0x67, 0x53], 0); // "OggS"
  page[4] = 0;
  page[5] = flags;
  dv.setBigUint64(6, BigInt.asUintN(64, BigInt(granule)), true);
  dv.setUint32(14, serial >>> 0, true);
  dv.setUint32(18, seq >>> 0, true);
  dv.setUint32(22, 0, true);
  page[26] = lacing.length;
  page.set(lacing, 27);
  let off = 27 + lacing.length;
  for (const p of packets) { page.set(p, off); off += p.length; }
  dv.setUint32(22, oggCrc(page), true);
  return page;
}

export function opusHead({ channels = 1, preSkip = 312, inputRate = 24000 } = {}) {
  const h = new Uint8Array(19);
  const dv = new DataView(h.buffer);
  h.set(new TextEncoder().encode("OpusHead"), 0);
  h[8] = 1; // version
  h[9] = channels;
  dv.setUint16(10, preSkip, true);
  dv.setUint32(12, inputRate, true);
  dv.setInt16(16, 0, true); // output gain
  h[18] = 0; // channel mapping family
  return h;
}

export function opusTags(vendor = "gst-moshi web page") {
  const v = new TextEncoder().encode(vendor);
  const t = new Uint8Array(8 + 4 + v.length + 4);
  const dv = new DataView(t.buffer);
  t.set(new TextEncoder().encode("OpusTags"), 0);
  dv.setUint32(8, v.length, true);
  t.set(v, 12);
  dv.setUint32(12 + v.length, 0, true);
  return t;
}

// Writes an Opus stream: header pages first, then one page per packet.
export class OggOpusWriter {
  constructor({ sampleRate = 24000, serial = (Math.random() * 0xffffffff) >>> 0 } = {}) {
    this.serial = serial;
    this.seq = 0;
    this.granule = 0n; // 48 kHz units, as Opus granules are
    this.sampleRate = sampleRate;
  }
  headers() {
    return [
      oggPage([opusHead({ inputRate: this.sampleRate })], { serial: this.serial, seq: this.seq++, flags: 2 }),
      oggPage([opusTags()], { serial: this.serial, seq: this.seq++ }),
    ];
  }
  // durationUs: the packet's duration (WebCodecs chunk.duration)
  packet(data, durationUs) {
    this.granule += BigInt(Math.round((durationUs * 48000) / 1e6));
    return oggPage([data], { granule: this.granule, serial: this.serial, seq: this.seq++ });
  }
}

// Reads pages (possibly several per message, possibly packets spanning
// pages) and hands out whole packets with the granule of their page.
export class OggReader {
  constructor() { this.partial = null; this.pending = new Uint8Array(0); }
  // Returns [{packet: Uint8Array, granule: BigInt}]; throws on bad data.
  push(bytes) {
    let buf = bytes;
    if (this.pending.length) {
      buf = new Uint8Array(this.pending.length + bytes.length);
      buf.set(this.pending, 0);
      buf.set(bytes, this.pending.length);
    }
    const out = [];
    let off = 0;
    while (buf.length - off >= 27) {
      if (buf[off] !== 0x4f || buf[off + 1] !== 0x67 || buf[off + 2] !== 0x67 || buf[off + 3] !== 0x53)
        throw new Error("bad Ogg capture pattern");
      const nseg = buf[off + 26];
      if (buf.length - off < 27 + nseg) break;
      let body = 0;
      for (let i = 0; i < nseg; i++) body += buf[off + 27 + i];
      const total = 27 + nseg + body;
      if (buf.length - off < total) break;
      const dv = new DataView(buf.buffer, buf.byteOffset + off, total);
      const granule = dv.getBigUint64(6, true);
      const continued = (buf[off + 5] & 1) !== 0;
      let p = off + 27 + nseg;
      let cur = continued && this.partial ? [this.partial] : [];
      if (!continued) this.partial = null;
      for (let i = 0; i < nseg; i++) {
        const n = buf[off + 27 + i];
        cur.push(buf.subarray(p, p + n));
        p += n;
        if (n < 255) {
          out.push({ packet: concat(cur), granule });
          cur = [];
        }
      }
      this.partial = cur.length ? concat(cur) : null;
      off += total;
    }
    this.pending = buf.slice(off);
    return out;
  }
}

function concat(parts) {
  if (parts.length === 1) return parts[0].slice();
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
