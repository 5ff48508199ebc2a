export * from './policy.js';
export * from './nft.js';
export * from './wire.js';
export * from './upstream.js';
export * from './proxy.js';
export * from './dns.js';
export * from './ca.js';
export * from './table.js';
