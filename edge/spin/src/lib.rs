//! failsoft as a Spin component (wasm32-wasip2 only).
