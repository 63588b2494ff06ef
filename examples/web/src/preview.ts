// Renders what the model sees: 8x8 pixels, 0 (white) .. 16 (black).
import { MAX_PIXEL } from "./digits";

export function drawPreview(canvas: HTMLCanvasElement, pixels: readonly number[] | null): void {
  const context = canvas.getContext("2d");
  if (context === null) return;
  const cell = canvas.width / 8;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  pixels?.forEach((value, index) => {
    const shade = Math.round(255 * (1 - value / MAX_PIXEL));
    context.fillStyle = `rgb(${shade}, ${shade}, ${shade})`;
    context.fillRect((index % 8) * cell, Math.floor(index / 8) * cell, cell, cell);
  });
}
