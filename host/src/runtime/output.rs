//! What a plugin writes to its standard output and error: kept, the newest
//! few KiB only, and attached to the call's report and to its failure, so a
//! Python traceback or a Rust panic message reaches the plugin's author.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of a call's output is kept (the end of it).
const KEEP: usize = 8 * 1024;

/// An output stream that never refuses a write and keeps only the newest
/// `KEEP` bytes: a chatty plugin neither fails nor grows the host's memory.
#[derive(Clone, Default)]
pub(crate) struct TailPipe {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    fn push(&self, bytes: &[u8]) {
        if let Ok(mut buf) = self.buf.lock() {
            let bytes = &bytes[bytes.len().saturating_sub(KEEP)..];
            let excess = (buf.len() + bytes.len()).saturating_sub(KEEP);
            buf.drain(..excess);
            buf.extend(bytes);
        }
    }

    /// Takes what was written since the last take.
    pub fn take(&self) -> String {
        match self.buf.lock() {
            Ok(mut buf) if !buf.is_empty() => {
                let bytes: Vec<u8> = buf.drain(..).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => String::new(),
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_only() {
        let pipe = TailPipe::default();
        pipe.push(b"hello ");
        pipe.push(b"world");
        assert_eq!(pipe.take(), "hello world");
        assert_eq!(pipe.take(), "");
        pipe.push(&vec![b'a'; KEEP]);
        pipe.push(b"end");
        let kept = pipe.take();
        assert_eq!(kept.len(), KEEP);
        assert!(kept.ends_with("aend"));
        pipe.push(&vec![b'b'; 3 * KEEP]);
        assert_eq!(pipe.take(), "b".repeat(KEEP));
    }
}
