// Sentence similarity with the `sentence_embedding` pipeline: raw sentences in, one
// unit-length embedding per sentence out. The server tokenizes, runs minilm and pools
// (models/sentence_embedding/config.yaml); the cosine of two embeddings is their dot product.
import type { InferenceClient } from "./client";
import { inferRequest, outputOf, outputTensors, textTensor } from "./tensors";

export const EMBEDDING_PIPELINE = "sentence_embedding";

/** The dot product; for unit-length vectors, their cosine similarity. */
export function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

/** Sentence embeddings of texts, in one request. */
export async function embed(
  client: InferenceClient,
  texts: readonly string[],
): Promise<Float32Array[]> {
  const request = inferRequest(EMBEDDING_PIPELINE, [textTensor("text", texts)]);
  const embeddings = outputOf(outputTensors(await client.modelInfer(request)), "embedding", "FP32");
  const dim = embeddings.shape[1] ?? 0;
  return texts.map((_, row) => embeddings.data.slice(row * dim, (row + 1) * dim));
}

/** Cosine similarity of two sentences, in -1..1. */
export async function similarity(client: InferenceClient, a: string, b: string): Promise<number> {
  const [first, second] = await embed(client, [a, b]);
  return dot(first!, second!);
}
