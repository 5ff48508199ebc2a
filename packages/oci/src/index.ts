export * from './errors.js';
export { parseImageRef, formatImageRef, type ImageRef } from './image-ref.js';
export {
  RegistryClient,
  MediaTypes,
  layerIsGzip,
  parseImageConfig,
  type Descriptor,
  type ImageConfig,
  type Platform,
  type PulledImage,
  type RegistryClientOptions,
  type ResolvedManifest,
} from './registry-client.js';
export { importLayer, RUNTIME_FILES, type ImportLayerOptions, type ImportLayerResult } from './import-layer.js';
export { pushImage, type LayerSource, type PushImageOptions, type PushedImage } from './push-image.js';
export { sha256Digest, fileDigest, VerifyingStream } from './digest.js';
export {
  writeRegistryConfig,
  registryCommand,
  registryReady,
  startRegistry,
  REGISTRY_BINARY,
  type RegistryServerConfig,
  type RunningRegistry,
} from './registry-server.js';
