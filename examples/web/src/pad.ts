// A canvas a person draws on with a mouse, a pen or a finger; what it shows is what is sent,
// as a PNG.

// A sample is 8x8 pixel values, row by row: 0 (blank) .. 16 (ink), as in load_digits.
const SIDE = 8;
const MAX_PIXEL = 16;

export class DrawingPad {
  private readonly context: CanvasRenderingContext2D;
  private last: { x: number; y: number } | null = null;

  /** `onStroke` runs each time a stroke ends. */
  constructor(
    private readonly canvas: HTMLCanvasElement,
    onStroke: () => void,
  ) {
    const context = canvas.getContext("2d");
    if (context === null) throw new Error("no 2D canvas");
    this.context = context;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = canvas.width / 7;
    context.strokeStyle = "#111";
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      this.last = this.point(event);
      this.line(this.last, this.last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (this.last === null) return;
      const next = this.point(event);
      this.line(this.last, next);
      this.last = next;
    });
    const end = (): void => {
      if (this.last === null) return;
      this.last = null;
      onStroke();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
  }

  clear(): void {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Paint an 8x8 sample over the whole pad, one grey square per pixel (dark is ink). */
  show(pixels: readonly number[]): void {
    const cell = this.canvas.width / SIDE;
    pixels.forEach((value, index) => {
      const shade = Math.round(255 * (1 - value / MAX_PIXEL));
      this.context.fillStyle = `rgb(${shade}, ${shade}, ${shade})`;
      this.context.fillRect((index % SIDE) * cell, Math.floor(index / SIDE) * cell, cell, cell);
    });
  }

  /** The pad as PNG bytes: dark ink on a transparent background. */
  async png(): Promise<Uint8Array> {
    const blob = await new Promise<Blob | null>((resolve) => {
      this.canvas.toBlob(resolve, "image/png");
    });
    if (blob === null) throw new Error("the canvas did not encode as PNG");
    return new Uint8Array(await blob.arrayBuffer());
  }

  /** The event's position in canvas pixels (the canvas may be scaled by CSS). */
  private point(event: PointerEvent): { x: number; y: number } {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  }

  private line(from: { x: number; y: number }, to: { x: number; y: number }): void {
    this.context.beginPath();
    this.context.moveTo(from.x, from.y);
    this.context.lineTo(to.x, to.y);
    this.context.stroke();
  }
}
