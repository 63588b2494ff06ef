// Tensors in ModelInfer requests and responses, carried as raw little-endian bytes
// (`raw_input_contents` / `raw_output_contents`), the V2 protocol's fast path. BYTES inputs
// (text, encoded images) go as each element's 4-byte little-endian length, then its bytes.
import { create } from "@bufbuild/protobuf";
import {
  ModelInferRequestSchema,
  type ModelInferRequest,
  type ModelInferResponse,
} from "./gen/inference/grpc_service_pb";

/** The numeric V2 datatypes and the typed arrays that hold them. */
const ARRAYS = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP32: Float32Array,
  FP64: Float64Array,
} as const;

export type Datatype = keyof typeof ARRAYS;
export type TensorData = InstanceType<(typeof ARRAYS)[Datatype]>;

export interface Tensor {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

// Typed arrays use the platform's byte order; the protocol's raw contents are little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("raw tensor contents are little-endian; this platform is not");
}

function isDatatype(name: string): name is Datatype {
  return Object.hasOwn(ARRAYS, name);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, dim) => count * dim, 1);
}

/** A tensor, checking that `data` holds exactly as many elements as `shape` says. */
export function tensor(
  name: string,
  datatype: Datatype,
  shape: readonly number[],
  data: TensorData,
): Tensor {
  if (!(data instanceof ARRAYS[datatype])) {
    throw new TypeError(`${name}: ${datatype} data must be a ${ARRAYS[datatype].name}`);
  }
  if (data.length !== elementCount(shape)) {
    throw new RangeError(`${name}: shape [${shape}] needs ${elementCount(shape)} values`);
  }
  return { name, datatype, shape, data };
}

/** A BYTES tensor of shape [elements.length]: one byte string per row. */
export interface BytesTensor {
  readonly name: string;
  readonly datatype: "BYTES";
  readonly shape: readonly number[];
  readonly elements: readonly Uint8Array[];
}

export function bytesTensor(name: string, elements: readonly Uint8Array[]): BytesTensor {
  return { name, datatype: "BYTES", shape: [elements.length], elements };
}

/** UTF-8 text, one string per row. */
export function textTensor(name: string, texts: readonly string[]): BytesTensor {
  const encoder = new TextEncoder();
  return bytesTensor(name, texts.map((text) => encoder.encode(text)));
}

export type Input = Tensor | BytesTensor;

/** An input's raw contents: a numeric tensor's bytes, or BYTES elements length-prefixed. */
export function rawContents(input: Input): Uint8Array {
  if (input.datatype !== "BYTES") {
    return new Uint8Array(input.data.buffer, input.data.byteOffset, input.data.byteLength);
  }
  const size = input.elements.reduce((total, element) => total + 4 + element.length, 0);
  const raw = new Uint8Array(size);
  const view = new DataView(raw.buffer);
  let offset = 0;
  for (const element of input.elements) {
    view.setUint32(offset, element.length, true);
    raw.set(element, offset + 4);
    offset += 4 + element.length;
  }
  return raw;
}

export interface InferOptions {
  /** "" (the default) is the newest ready version. */
  readonly version?: string;
  /** Outputs to return; all of them when empty. */
  readonly outputs?: readonly string[];
  readonly id?: string;
}

/** A ModelInferRequest carrying every input as raw bytes. */
export function inferRequest(
  model: string,
  inputs: readonly Input[],
  options: InferOptions = {},
): ModelInferRequest {
  return create(ModelInferRequestSchema, {
    modelName: model,
    modelVersion: options.version ?? "",
    id: options.id ?? "",
    inputs: inputs.map((input) => ({
      name: input.name,
      datatype: input.datatype,
      shape: input.shape.map(BigInt),
    })),
    outputs: (options.outputs ?? []).map((name) => ({ name })),
    rawInputContents: inputs.map(rawContents),
  });
}

/** The outputs of a response to a raw request, by name. */
export function outputTensors(response: ModelInferResponse): Map<string, Tensor> {
  const tensors = new Map<string, Tensor>();
  response.outputs.forEach((output, index) => {
    const raw = response.rawOutputContents[index];
    if (raw === undefined) {
      throw new Error(`output '${output.name}' has no raw contents (send raw inputs)`);
    }
    if (!isDatatype(output.datatype)) {
      throw new Error(`output '${output.name}': datatype ${output.datatype} is not numeric`);
    }
    const ArrayType = ARRAYS[output.datatype];
    // Copy: the bytes sit at any offset inside the message, and typed arrays need alignment.
    const aligned = raw.slice().buffer;
    const data = new ArrayType(aligned, 0, raw.byteLength / ArrayType.BYTES_PER_ELEMENT);
    const shape = output.shape.map(Number);
    tensors.set(output.name, tensor(output.name, output.datatype, shape, data));
  });
  return tensors;
}

/** One named output, which must have the given datatype. */
export function outputOf<D extends Datatype>(
  outputs: Map<string, Tensor>,
  name: string,
  datatype: D,
): Tensor & { data: InstanceType<(typeof ARRAYS)[D]> } {
  const found = outputs.get(name);
  if (found === undefined) throw new Error(`the response has no output '${name}'`);
  if (found.datatype !== datatype) {
    throw new Error(`output '${name}' is ${found.datatype}, expected ${datatype}`);
  }
  return found as Tensor & { data: InstanceType<(typeof ARRAYS)[D]> };
}
