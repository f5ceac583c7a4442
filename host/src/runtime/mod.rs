//! The sandboxed plugin runtime.
