// A canvas a person draws on with a mouse, a pen or a finger.
import type { Rgba } from "./downsample";

export class DrawingPad {
  private readonly context: CanvasRenderingContext2D;
  private last: { x: number; y: number } | null = null;

  /** `onStroke` runs each time a stroke ends. */
  constructor(
    private readonly canvas: HTMLCanvasElement,
    onStroke: () => void,
  ) {
    const context = canvas.getContext("2d", { willReadFrequently: true });
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

  image(): Rgba {
    return this.context.getImageData(0, 0, this.canvas.width, this.canvas.height);
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
