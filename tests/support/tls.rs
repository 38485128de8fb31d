//! HTTPS against a TLS broker's HTTP listener, checked against the
//! cluster CA, with or without a client certificate.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapse_pki::{Expect, TlsFiles};

/// GET `path` over HTTPS from `address`; the status and body. `identity`
/// is a client certificate and key to present.
pub fn https_get(
    address: &str,
    path: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> std::io::Result<(u16, String)> {
    https_request(address, "GET", path, ca, identity, &[], "")
}

/// `method path` over HTTPS to `address` with `headers` and `body`; the
/// status and body.
pub fn https_request(
    address: &str,
    method: &str,
    path: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let files = TlsFiles {
        ca: ca.to_owned(),
        cert: identity.map(|(cert, _)| cert.to_owned()),
        key: identity.map(|(_, key)| key.to_owned()),
    };
    let credentials = files
        .load(SystemTime::now())
        .map_err(std::io::Error::other)?;
    let config = credentials
        .client_config(Expect::AnyBroker, b"http/1.1")
        .map_err(std::io::Error::other)?;
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let socket = std::net::TcpStream::connect(address)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}")?;
    stream.flush()?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify still sent it all.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}
