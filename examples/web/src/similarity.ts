// Sentence similarity with the `minilm` model: token ids -> per-token states, mean-pooled
// over the attention mask into sentence embeddings, compared by cosine.
import type { InferenceClient } from "./client";
import { inferRequest, outputOf, outputTensors, tensor } from "./tensors";

export const MINILM_MODEL = "minilm";

/** What a tokenizer gives for one text (with [CLS] and [SEP]). */
export interface Tokens {
  readonly ids: readonly number[];
  readonly attentionMask: readonly number[];
  readonly typeIds: readonly number[];
}

/** Mean of each row's token states where the mask is 1: [rows, seq, dim] -> rows x [dim]. */
export function meanPool(
  states: Float32Array,
  masks: readonly (readonly number[])[],
  seq: number,
  dim: number,
): Float32Array[] {
  return masks.map((mask, row) => {
    const sum = new Float32Array(dim);
    let count = 0;
    for (let t = 0; t < seq; t++) {
      if (mask[t] !== 1) continue;
      count++;
      const offset = (row * seq + t) * dim;
      for (let d = 0; d < dim; d++) sum[d]! += states[offset + d]!;
    }
    return sum.map((value) => value / Math.max(count, 1));
  });
}

export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    normA += a[i]! * a[i]!;
    normB += b[i]! * b[i]!;
  }
  return dot / Math.sqrt(normA * normB);
}

/** Pad every row with zeros to the longest one: one [rows, seq] INT64 tensor per input. */
function padded(name: string, rows: readonly (readonly number[])[], seq: number) {
  const data = new BigInt64Array(rows.length * seq);
  rows.forEach((row, r) => row.forEach((value, t) => (data[r * seq + t] = BigInt(value))));
  return tensor(name, "INT64", [rows.length, seq], data);
}

/** Sentence embeddings of tokenized texts, in one request. */
export async function embed(
  client: InferenceClient,
  texts: readonly Tokens[],
): Promise<Float32Array[]> {
  const seq = Math.max(...texts.map((t) => t.ids.length));
  const masks = texts.map((t) => t.attentionMask);
  const inputs = [
    padded("input_ids", texts.map((t) => t.ids), seq),
    padded("attention_mask", masks, seq),
    padded("token_type_ids", texts.map((t) => t.typeIds), seq),
  ];
  const request = inferRequest(MINILM_MODEL, inputs, { outputs: ["last_hidden_state"] });
  const response = await client.modelInfer(request);
  const states = outputOf(outputTensors(response), "last_hidden_state", "FP32");
  const dim = states.shape[2] ?? 0;
  return meanPool(states.data, masks, seq, dim);
}

/** Cosine similarity of two tokenized texts' embeddings, in -1..1. */
export async function similarity(
  client: InferenceClient,
  a: Tokens,
  b: Tokens,
): Promise<number> {
  const [first, second] = await embed(client, [a, b]);
  return cosine(first!, second!);
}
