//! The sample app: the cheapest correct HTTP/1.1 server we can write, so that the proxies in
//! front of it, not the app, are what the harness measures. Keep-alive, pipelining, request
//! bodies framed by `Content-Length`; every request gets `200` with a small fixed body.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::args::Args;

pub fn main(args: &Args) -> Result<(), String> {
    let listen: SocketAddr = args
        .req("listen")?
        .parse()
        .map_err(|_| "--listen wants host:port".to_string())?;
    let threads: usize = args.num("threads", 1)?;
    let body_len: usize = args.num("response-bytes", 2)?;
    let mut body = b"ok".repeat(body_len.div_ceil(2));
    body.truncate(body_len);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response: Arc<[u8]> = response.into();

    let runtime = crate::runtime(threads)?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let response = response.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &response).await;
            });
        }
    })
}

async fn serve(mut stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        // Answer every complete request in the buffer (pipelined ones too).
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await?;
                    return Ok(());
                }
            };
            let mut body_len = 0usize;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body_len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                } else if h.name.eq_ignore_ascii_case("connection")
                    && h.value.eq_ignore_ascii_case(b"close")
                {
                    close = true;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    // Every proxy measured here frames bodies with Content-Length.
                    stream
                        .write_all(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await?;
                    return Ok(());
                }
            }
            if buf.len() < head_len + body_len {
                break;
            }
            buf.drain(..head_len + body_len);
            out.extend_from_slice(response);
            if close {
                break;
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
