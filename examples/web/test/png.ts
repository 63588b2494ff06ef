// Greyscale PNGs for the tests, as the page's canvas would send them: deflate from node:zlib,
// CRC-32 from its table. Samples become dark ink on white, as a scan of them would be.
import { deflateSync } from "node:zlib";

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** An 8-bit greyscale PNG of `width` x `height` pixels, row by row. */
export function greyPng(width: number, height: number, pixels: readonly number[]): Uint8Array {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, colour type 0 (grey), no interlace
  const rows = Buffer.alloc(height * (width + 1)); // each row: filter byte 0, then pixels
  for (let y = 0; y < height; y++) {
    rows.set(pixels.slice(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    signature,
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(rows)),
    chunk("IEND", new Uint8Array()),
  ]);
}

/** An 8x8 load_digits sample (0..16, ink high) as a PNG of dark ink on white. */
export function samplePng(pixels: readonly number[]): Uint8Array {
  return greyPng(8, 8, pixels.map((value) => Math.round(255 * (1 - value / 16))));
}
