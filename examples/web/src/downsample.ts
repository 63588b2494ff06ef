// A drawing -> the 8x8 image the digits model expects, preprocessed as the UCI optdigits
// data was: the digit is scaled into a 32x32 bitmap, and each 4x4 block of it becomes one
// pixel whose value is the number of inked bits in the block (0..16).
//
// In that data a digit spans the full height but leaves the outer columns nearly empty
// (their spread is close to 0, so the model reads ink there as a strong signal): the
// drawing is scaled to fit FIT_WIDTH x BITMAP bits, centred.

const BITMAP = 32;
const FIT_WIDTH = 20;
const BLOCK = 4;
const SIDE = BITMAP / BLOCK; // 8
const INKED_ALPHA = 128;

/** RGBA pixels, row by row, as a canvas's ImageData holds them. */
export interface Rgba {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8ClampedArray;
}

interface Box {
  left: number;
  top: number;
  right: number; // exclusive
  bottom: number; // exclusive
}

function inked(image: Rgba, x: number, y: number): boolean {
  return image.data[(y * image.width + x) * 4 + 3]! >= INKED_ALPHA;
}

/** The smallest box holding every inked pixel, or null for a blank image. */
function inkBox(image: Rgba): Box | null {
  const box: Box = { left: image.width, top: image.height, right: 0, bottom: 0 };
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < image.width; x++) {
      if (!inked(image, x, y)) continue;
      box.left = Math.min(box.left, x);
      box.top = Math.min(box.top, y);
      box.right = Math.max(box.right, x + 1);
      box.bottom = Math.max(box.bottom, y + 1);
    }
  }
  return box.right > 0 ? box : null;
}

/** 64 pixel values in 0..16, row by row; null when nothing is drawn. */
export function downsample(image: Rgba): number[] | null {
  const box = inkBox(image);
  if (box === null) return null;
  const width = box.right - box.left;
  const height = box.bottom - box.top;
  // Source pixels per bit: as few as fit the whole drawing, keeping its aspect ratio.
  const scale = Math.max(width / FIT_WIDTH, height / BITMAP);
  const offsetX = (BITMAP - width / scale) / 2;
  const offsetY = (BITMAP - height / scale) / 2;
  const pixels = new Array<number>(SIDE * SIDE).fill(0);
  for (let by = 0; by < BITMAP; by++) {
    for (let bx = 0; bx < BITMAP; bx++) {
      // Sample the drawing at the centre of this bit.
      const x = Math.floor(box.left + (bx + 0.5 - offsetX) * scale);
      const y = Math.floor(box.top + (by + 0.5 - offsetY) * scale);
      if (x < box.left || x >= box.right || y < box.top || y >= box.bottom) continue;
      if (inked(image, x, y)) pixels[Math.floor(by / BLOCK) * SIDE + Math.floor(bx / BLOCK)]! += 1;
    }
  }
  return pixels;
}
