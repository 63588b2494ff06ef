// minilm's WordPiece tokenizer, run in the page (or Node) by @huggingface/tokenizers from
// the model's own tokenizer.json and tokenizer_config.json: no hub access.
import { Tokenizer } from "@huggingface/tokenizers";
import type { Tokens } from "./similarity";

export type Tokenize = (text: string) => Tokens & { readonly tokens: readonly string[] };

/** A tokenize function from the parsed tokenizer.json and tokenizer_config.json. */
export function tokenizerFrom(tokenizerJson: object, tokenizerConfig: object): Tokenize {
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  return (text) => {
    const encoding = tokenizer.encode(text, { return_token_type_ids: true });
    return {
      ids: encoding.ids,
      attentionMask: encoding.attention_mask,
      typeIds: encoding.token_type_ids,
      tokens: encoding.tokens,
    };
  };
}

/** Fetch both files from `baseUrl` (a directory URL ending in "/"). */
export async function fetchTokenizer(baseUrl: string): Promise<Tokenize> {
  const load = async (name: string): Promise<object> => {
    const reply = await fetch(new URL(name, baseUrl));
    if (!reply.ok) throw new Error(`${name}: HTTP ${reply.status}`);
    return (await reply.json()) as object;
  };
  const [json, config] = await Promise.all([load("tokenizer.json"), load("tokenizer_config.json")]);
  return tokenizerFrom(json, config);
}
