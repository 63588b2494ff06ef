// The `digits` model: 8x8 images of handwritten digits (pixel values 0..16) -> 0..9.
import type { InferenceClient } from "./client";
import { inferRequest, outputOf, outputTensors, tensor } from "./tensors";

export const DIGITS_MODEL = "digits";
export const PIXELS = 64;
export const MAX_PIXEL = 16;

export interface DigitPrediction {
  readonly label: number;
  /** One per class 0..9; they sum to 1. */
  readonly probabilities: readonly number[];
  /** The model version that answered. */
  readonly version: string;
}

/** Classify images, each 64 pixel values (row by row) in 0..16, in one request. */
export async function predictDigits(
  client: InferenceClient,
  images: readonly (readonly number[])[],
  version = "",
): Promise<DigitPrediction[]> {
  const pixels = new Float32Array(images.length * PIXELS);
  images.forEach((image, row) => {
    if (image.length !== PIXELS) throw new RangeError(`image ${row}: ${PIXELS} pixels expected`);
    pixels.set(image, row * PIXELS);
  });
  const input = tensor("input", "FP32", [images.length, PIXELS], pixels);
  const response = await client.modelInfer(inferRequest(DIGITS_MODEL, [input], { version }));
  const outputs = outputTensors(response);
  const labels = outputOf(outputs, "label", "INT64").data;
  const probabilities = outputOf(outputs, "probabilities", "FP32").data;
  return images.map((_, row) => ({
    label: Number(labels[row]),
    probabilities: Array.from(probabilities.subarray(row * 10, row * 10 + 10)),
    version: response.modelVersion,
  }));
}
