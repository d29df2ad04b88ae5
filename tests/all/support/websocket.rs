//! A WebSocket client (RFC 6455), just what the kubelet's streaming protocols need: the
//! handshake with a subprotocol, binary frames out (masked) and in, whose first byte names the
//! channel (`channel.k8s.io`: stdin 0, stdout 1, stderr 2, status 3; port forwarding: data
//! and error channels per port). What `kubectl attach` and `kubectl port-forward` speak to a
//! CRI streaming server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

pub struct WebSocket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl WebSocket {
    /// Opens `url` (`http://host:port/path`) asking for `protocol`; the status line and
    /// headers of a refusal otherwise.
    pub fn connect(url: &str, protocol: &str) -> Result<WebSocket, String> {
        let rest = url.strip_prefix("http://").expect("an http:// URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let stream = TcpStream::connect(host).map_err(|e| format!("{url}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(b"wasm-oci-tests!!");
        let mut writer = stream.try_clone().unwrap();
        write!(
            writer,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("closed during the handshake: {head}"));
            }
            if line.trim().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        Ok(WebSocket { reader, writer })
    }

    /// Sends `data` on `channel`.
    pub fn send(&mut self, channel: u8, data: &[u8]) {
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        let mut frame = vec![0x82]; // FIN, binary
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).unwrap();
    }

    /// The next message, as (channel, data); `None` once the server closes (or after 30 s of
    /// silence).
    pub fn receive(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let mut head = [0u8; 2];
            self.reader.read_exact(&mut head).ok()?;
            let opcode = head[0] & 0x0f;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b).ok()?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b).ok()?;
                len = u64::from_be_bytes(b);
            }
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 {
                self.reader.read_exact(&mut mask).ok()?;
            }
            let mut payload = vec![0u8; usize::try_from(len).ok()?];
            self.reader.read_exact(&mut payload).ok()?;
            if head[1] & 0x80 != 0 {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match opcode {
                0x8 => return None,
                0x1 | 0x2 if !payload.is_empty() => {
                    return Some((payload[0], payload[1..].to_vec()));
                }
                _ => {} // pings, pongs, empty frames
            }
        }
    }
}
