/**
 * Binary formats: the data envelope (hop by hop, sealed end to end) and control messages (signed, over the
 * Master). Pure and total: every decoder returns a value or throws one `WireError`.
 * @module
 */

export { ByteReader, ByteWriter, WireError, type WireErrorReason } from "./bytes.ts";
export {
  type AnyControlMessage,
  BODIES,
  BROADCAST,
  type ControlBody,
  type ControlFields,
  ControlKind,
  type ControlMessage,
  decodeControl,
  encodeControlUnsigned,
  MAX_CERTIFICATE_BYTES,
  MAX_SIGNAL_BYTES,
  TetherSignalType,
  withSignature,
} from "./control.ts";
export {
  BatchBuilder,
  DATA_AAD_BYTES,
  DATA_HEADER_BYTES,
  dataAad,
  type DataHeader,
  DataType,
  decrementTtl,
  MAX_BATCH_BYTES,
  readDataHeader,
  sealedPart,
  unpackBatch,
  unpackEntries,
  writeDataHeader,
} from "./envelope.ts";
