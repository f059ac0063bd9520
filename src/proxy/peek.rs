//! Hot side: the start of a connection whose route depends on what it says first (a shared
//! address), or that speaks the PROXY protocol (in or out).
//!
//! The client's first bytes are read (not peeked: `MSG_PEEK` would leave them queued and
//! every wake-up would re-read them) into a per-connection buffer that grows up to
//! [`PEEK_LIMIT`]; a trusted PROXY header is parsed and stripped; the TLS ClientHello or the
//! HTTP request head is parsed ([`crate::sniff`]); [`Door::decide`] picks the route. What was
//! read is then sent to the backend first ([`Prelude`]), after the PROXY header ringway
//! sends itself, and the relay goes on as for any session (splice included). Everything is
//! bounded: `peek_timeout` for the whole phase, `PEEK_LIMIT` bytes; a peek that cannot
//! decide leaves the connection to the address's default route, or resets it.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::door::{Door, Seen};
use super::table::Route;
use crate::config::{PEEK_LIMIT, ProxyProtocol, canonical};
use crate::metrics::local::{PeekFailure, Rejected};
use crate::net::sys;
use crate::sniff::{self, Peek};

/// What goes to the backend before the relay starts: ringway's PROXY header (if the route
/// sends one), then the bytes the peek read from the client.
#[derive(Debug, Default)]
pub struct Prelude {
    pub bytes: Vec<u8>,
    /// The client's own bytes are in it (not only a PROXY header): `first_byte_timeout`
    /// has nothing to wait for.
    pub heard: bool,
}

/// The client's first bytes, as read so far.
struct Read {
    buf: Vec<u8>,
    filled: usize,
    /// Bytes at the front already taken (the PROXY header received).
    skip: usize,
}

impl Read {
    fn bytes(&self) -> &[u8] {
        self.buf.get(self.skip..self.filled).unwrap_or_default()
    }

    /// Reads what the client has sent (at least one byte), waiting until `deadline`; or
    /// says why it could not (`Timeout`, `TooLarge`, `Closed`).
    async fn more(
        &mut self,
        client: &TcpStream,
        fd: RawFd,
        deadline: Instant,
    ) -> Result<(), PeekFailure> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= PEEK_LIMIT {
                return Err(PeekFailure::TooLarge);
            }
            let grown = (self.buf.len() * 4).clamp(2048, PEEK_LIMIT);
            self.buf.resize(grown, 0);
        }
        loop {
            let spare = self.buf.get_mut(self.filled..).unwrap_or_default();
            match sys::recv(fd, spare) {
                Ok(0) => return Err(PeekFailure::Closed),
                Ok(n) => {
                    self.filled += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match monoio::time::timeout(left, client.readable(false)).await {
                        Err(_) => return Err(PeekFailure::Timeout),
                        Ok(Err(_)) => return Err(PeekFailure::Closed),
                        Ok(Ok(())) => {}
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(PeekFailure::Closed),
            }
        }
    }
}

/// What the first bytes said.
enum Found {
    /// The ClientHello, with its server name if it has one.
    Sni(Option<String>),
    /// The HTTP request head.
    Http(sniff::http::Head),
    /// Nothing usable (the reason was counted); the default route's, if any.
    Nothing,
}

/// A connection a shared address gave a route.
#[derive(Debug)]
pub struct Admitted {
    pub route: Rc<Route>,
    pub prelude: Option<Box<Prelude>>,
    /// The client: the peer, or the source its trusted PROXY header named.
    pub source: SocketAddr,
}

/// Decides the route of `client` (from `peer`) accepted on `door`, reading what that needs.
/// `latest` gives the address's routes as they are when the decision is made (a reload
/// during the peek may have changed them; `None`: the address is being retired, `door`
/// stands). `Err(Some(why))`: refused and set to reset on close; `Err(None)`: the client
/// closed first. Both are counted.
pub async fn admit(
    door: &Door,
    latest: impl Fn() -> Option<Rc<Door>>,
    client: &TcpStream,
    peer: SocketAddr,
) -> Result<Admitted, Option<Rejected>> {
    let fd = client.as_raw_fd();
    let deadline = Instant::now() + door.peek_timeout;
    let metrics = door.metrics.as_deref();
    let reject = |why: Rejected| {
        if let Some(m) = metrics {
            m.reject(why);
        }
        reset(fd);
        Err(Some(why))
    };
    let failed = |why: PeekFailure| {
        if let Some(m) = metrics {
            m.peek_failed(why);
        }
    };
    let mut read = Read {
        buf: Vec::new(),
        filled: 0,
        skip: 0,
    };
    let mut source = peer;
    let mut destination = None;

    if !door.accept_proxy_from.is_empty() {
        if !door.trusts(peer.ip()) {
            return reject(Rejected::ProxyUntrusted);
        }
        loop {
            match sniff::proxy::parse(read.bytes()) {
                Peek::Done(h) if read.filled > 0 => {
                    read.skip = h.len;
                    source = h.source.map_or(peer, canonical_addr);
                    destination = h.destination.map(canonical_addr);
                    break;
                }
                Peek::Invalid(_) => return reject(Rejected::ProxyMalformed),
                Peek::Done(_) | Peek::More => {}
            }
            if let Err(why) = read.more(client, fd, deadline).await {
                // Counted once, as a rejection (or not at all when the client left).
                return match why {
                    PeekFailure::Closed => Err(None),
                    _ => reject(Rejected::ProxyMalformed),
                };
            }
        }
    }

    let found = if door.needs_peek() {
        // Where the HTTP parse last looked for the end of the head: each read scans only
        // what is new (a head trickling in byte by byte is not parsed again per byte).
        let mut scanned: usize = 0;
        loop {
            let got = read.bytes();
            let verdict = if got.is_empty() {
                None
            } else if door.needs_tls && got.first() == Some(&0x16) {
                match sniff::tls::client_hello_sni(got) {
                    Peek::Done(name) => Some(Ok(Found::Sni(name))),
                    Peek::More => None,
                    Peek::Invalid(_) => Some(Err(PeekFailure::Malformed)),
                }
            } else if door.needs_http {
                let from = scanned.saturating_sub(3);
                let ended = got.get(from..).is_some_and(head_ends);
                // The first bytes are parsed at once (not HTTP: decided now); then only
                // once the head has ended.
                let parse = scanned == 0 || ended;
                scanned = got.len();
                match parse.then(|| sniff::http::request_head(got)) {
                    Some(Peek::Done(head)) => Some(Ok(Found::Http(head))),
                    Some(Peek::Invalid(_)) => Some(Err(PeekFailure::Malformed)),
                    Some(Peek::More) | None => None,
                }
            } else {
                // Not TLS on an address that routes TLS only: the default route's.
                Some(Err(PeekFailure::Malformed))
            };
            match verdict {
                Some(Ok(found)) => break found,
                Some(Err(why)) => {
                    failed(why);
                    break Found::Nothing;
                }
                None => {}
            }
            if let Err(why) = read.more(client, fd, deadline).await {
                failed(why);
                if why == PeekFailure::Closed && read.bytes().is_empty() {
                    return Err(None);
                }
                // What was read still goes somewhere (the default route, with the
                // client's half-close after it).
                break Found::Nothing;
            }
        }
    } else {
        Found::Nothing
    };
    let now = latest();
    let door = now.as_deref().unwrap_or(door);
    let seen = match &found {
        Found::Sni(name) => Seen {
            sni: name.as_deref(),
            ..Seen::default()
        },
        Found::Http(head) => Seen {
            host: head.host.as_deref(),
            path: Some(&head.path),
            sni: None,
        },
        Found::Nothing => Seen::default(),
    };
    let Some((route, _by)) = door.decide(source.ip(), seen) else {
        return reject(Rejected::NoMatch);
    };

    let heard = !read.bytes().is_empty();
    let mut bytes = Vec::new();
    if let Some(v) = route.cfg.sharing.proxy_protocol {
        let to = destination.unwrap_or_else(|| canonical_addr(local_addr(door.addr, client)));
        let v = match v {
            ProxyProtocol::V1 => sniff::proxy::ProxyVersion::V1,
            ProxyProtocol::V2 => sniff::proxy::ProxyVersion::V2,
        };
        sniff::proxy::encode(v, canonical_addr(source), to, &mut bytes);
    }
    if bytes.is_empty() && read.skip == 0 {
        // Nothing ringway adds: hand over the buffer itself.
        read.buf.truncate(read.filled);
        bytes = read.buf;
    } else {
        bytes.extend_from_slice(read.bytes());
    }
    let prelude = (!bytes.is_empty()).then(|| Box::new(Prelude { bytes, heard }));
    Ok(Admitted {
        route,
        prelude,
        source,
    })
}

/// True when `b` holds the end of a request head (an empty line, CRLF or bare LF).
fn head_ends(b: &[u8]) -> bool {
    b.windows(2).any(|w| w == b"\n\n") || b.windows(3).any(|w| w == b"\n\r\n")
}

/// An address with an IPv4-mapped IPv6 address written as the IPv4 one.
fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

/// The address the client connected to: the listen address, or the socket's own when the
/// listener is a wildcard.
fn local_addr(listen: SocketAddr, client: &TcpStream) -> SocketAddr {
    if listen.ip().is_unspecified() {
        client.local_addr().unwrap_or(listen)
    } else {
        listen
    }
}

/// Makes the coming close a reset (SO_LINGER 0); the caller drops the stream.
fn reset(fd: RawFd) {
    let _ = sys::set_linger_zero(fd);
}

/// Sends `bytes` to a freshly connected backend before the relay starts.
pub async fn send_prelude(backend: &TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let fd = backend.as_raw_fd();
    let mut sent = 0;
    while let Some(rest) = bytes.get(sent..).filter(|r| !r.is_empty()) {
        match sys::send(fd, rest) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                backend.writable(false).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
