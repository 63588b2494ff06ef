// The drawing -> 8x8 preprocessing, on synthetic images.
import assert from "node:assert/strict";
import { test } from "node:test";
import { downsample, type Rgba } from "../src/downsample";

/** A transparent width x height image with the given rectangles inked. */
function image(width: number, height: number, inked: [number, number, number, number][]): Rgba {
  const data = new Uint8ClampedArray(width * height * 4);
  for (const [left, top, right, bottom] of inked) {
    for (let y = top; y < bottom; y++) {
      for (let x = left; x < right; x++) data[(y * width + x) * 4 + 3] = 255;
    }
  }
  return { width, height, data };
}

const rows = (pixels: number[]): number[][] =>
  Array.from({ length: 8 }, (_, r) => pixels.slice(r * 8, r * 8 + 8));

test("a blank drawing is null", () => {
  assert.equal(downsample(image(64, 64, [])), null);
});

test("a filled square becomes 20x20 bits in the middle of the 32x32 bitmap", () => {
  // Bits 6..25 in each direction: blocks 1 and 6 get 2 of their 4 bits, 2..5 all 4.
  const pixels = downsample(image(100, 100, [[10, 20, 50, 60]]));
  const bits = [0, 2, 4, 4, 4, 4, 2, 0];
  assert.deepEqual(pixels, bits.flatMap((y) => bits.map((x) => x * y)));
});

test("a tall bar is scaled to full height and centred", () => {
  // 8 wide, 64 high: in the 32x32 bitmap, 4 bits wide (columns 14..17), all 32 rows.
  const pixels = downsample(image(200, 200, [[50, 100, 58, 164]]));
  assert.ok(pixels !== null);
  for (const row of rows(pixels)) assert.deepEqual(row, [0, 0, 0, 8, 8, 0, 0, 0]);
});

test("placement on the pad does not matter", () => {
  const a = downsample(image(120, 120, [[0, 0, 30, 60], [30, 50, 60, 60]]));
  const b = downsample(image(120, 120, [[60, 60, 90, 120], [90, 110, 120, 120]]));
  assert.deepEqual(a, b);
});
