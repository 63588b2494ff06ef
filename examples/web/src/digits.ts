// The `digit_from_png` pipeline: an image of a handwritten digit (PNG or JPEG) -> 0..9. The
// server decodes it and reads it as the `digits` model's 8x8 training images were made
// (models/digit_from_png/config.yaml): the page sends the image, nothing else.
import type { InferenceClient } from "./client";
import { bytesTensor, inferRequest, outputOf, outputTensors } from "./tensors";

export const DIGITS_PIPELINE = "digit_from_png";
export const CLASSES = 10;

export interface DigitPrediction {
  readonly label: number;
  /** One per class 0..9; they sum to 1. */
  readonly probabilities: readonly number[];
  /** The pipeline version that answered. */
  readonly version: string;
}

/** Classify encoded images (PNG or JPEG bytes), one row each, in one request. */
export async function predictDigits(
  client: InferenceClient,
  images: readonly Uint8Array[],
): Promise<DigitPrediction[]> {
  const request = inferRequest(DIGITS_PIPELINE, [bytesTensor("image", images)]);
  const response = await client.modelInfer(request);
  const outputs = outputTensors(response);
  const labels = outputOf(outputs, "label", "INT64").data;
  const probabilities = outputOf(outputs, "probabilities", "FP32").data;
  return images.map((_, row) => ({
    label: Number(labels[row]),
    probabilities: Array.from(probabilities.subarray(row * CLASSES, (row + 1) * CLASSES)),
    version: response.modelVersion,
  }));
}
