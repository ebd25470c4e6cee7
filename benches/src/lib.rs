//! Shared helpers for logcache's benchmark harnesses.
