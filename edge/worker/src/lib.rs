//! failsoft on Cloudflare Workers (wasm32 only).
