// How large a chunk bulk artifact files are read and written in. Node's default (64 KiB) makes a 120 MB snapshot
// ~1,900 reads, writes and hash updates on the node's event loop; 1 MiB chunks cut a verified download's time by
// ~30 % and its CPU by ~40 % here (docs/performance.md, "An artifact's download in 1 MiB chunks").

export const FILE_CHUNK_BYTES = 1024 * 1024;
