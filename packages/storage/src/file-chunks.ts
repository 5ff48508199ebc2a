// How large a chunk bulk artifact files are read and written in. Node's default (64 KiB) makes a 120 MB snapshot
// ~1,900 reads, writes and hash updates on the node's event loop; 1 MiB chunks take about half of a verified
// download's time and ~45 % of its CPU off (docs/performance.md, "A resume on another node, step by step").

export const FILE_CHUNK_BYTES = 1024 * 1024;
