//! The resolver of user-defined networks: containers find each other by name, network alias
//! and short id, as with Docker's 127.0.0.11.
//!
//! Design: one listener per user-defined bridge network, on its gateway address, port 53 (UDP
//! and TCP), in berthd's own network namespace; a container on such a network gets that
//! gateway as its nameserver. Docker instead opens a socket inside every container's namespace
//! and adds NAT rules there; here a container costs nothing but its record, and the names are
//! read from the container records at query time (running containers on that network only,
//! so a container on another network is not found: Docker's isolation). Other names go to the
//! upstream servers (`--dns-upstream`, default the host's /etc/resolv.conf, loopback ones
//! included, which berthd can reach and containers could not); `none` answers REFUSED.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containers::Status;
use crate::daemon::Daemon;

/// How long answers may be cached (Docker's embedded server uses 600 s).
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Where names that are not containers are asked.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// The host's resolv.conf nameservers.
    Host,
    Servers(Vec<SocketAddr>),
    /// Only container names are answered.
    None,
}

impl Upstream {
    /// `--dns-upstream` values: `none`, or addresses (`IP` or `IP:PORT`).
    pub fn parse(values: &[String]) -> Result<Upstream, String> {
        if values.is_empty() {
            return Ok(Upstream::Host);
        }
        if values.iter().any(|v| v == "none") {
            return Ok(Upstream::None);
        }
        values
            .iter()
            .map(|v| {
                v.parse::<SocketAddr>()
                    .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("--dns-upstream {v:?}: an address or `none`"))
            })
            .collect::<Result<_, _>>()
            .map(Upstream::Servers)
    }

    fn servers(&self) -> Vec<SocketAddr> {
        match self {
            Upstream::None => Vec::new(),
            Upstream::Servers(s) => s.clone(),
            Upstream::Host => std::fs::read_to_string("/etc/resolv.conf")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
        }
    }
}

pub struct Resolver {
    upstream: Upstream,
    /// Network id → its listeners.
    serving: Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
}

impl Resolver {
    pub fn new(upstream: Upstream) -> Resolver {
        Resolver {
            upstream,
            serving: Default::default(),
        }
    }

    /// Serves `network_id`'s names on each of `gateways`, port 53 (call from the runtime).
    pub async fn serve(&self, d: &Arc<Daemon>, network_id: &str, gateways: &[IpAddr]) {
        let mut tasks = Vec::new();
        for gw in gateways {
            let addr = SocketAddr::new(*gw, 53);
            match tokio::net::UdpSocket::bind(addr).await {
                Ok(sock) => tasks.push(tokio::spawn(serve_udp(
                    sock,
                    Arc::downgrade(d),
                    network_id.to_string(),
                    self.upstream.servers(),
                ))),
                Err(e) => tracing::warn!("network {network_id}: DNS on udp {addr}: {e}"),
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => tasks.push(tokio::spawn(serve_tcp(
                    l,
                    Arc::downgrade(d),
                    network_id.to_string(),
                    self.upstream.servers(),
                ))),
                Err(e) => tracing::warn!("network {network_id}: DNS on tcp {addr}: {e}"),
            }
        }
        let old = self
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(network_id.to_string(), tasks);
        for t in old.into_iter().flatten() {
            t.abort();
        }
    }

    /// Stops serving a network (it was removed).
    pub fn stop(&self, network_id: &str) {
        let tasks = self
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(network_id);
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
    }
}

/// The gateways a network's resolver listens on: user-defined bridge networks only (Docker
/// has no embedded resolver on the default bridge; a macvlan container cannot reach the host).
pub fn gateways(r: &crate::networks::NetworkRecord) -> Vec<IpAddr> {
    if r.predefined || r.driver != "bridge" {
        return Vec::new();
    }
    r.made
        .iter()
        .flat_map(|m| m.subnets.iter().map(|s| s.gateway))
        .collect()
}

/// Serves every user-defined bridge network (berthd's start).
pub async fn serve_networks(d: &Arc<Daemon>) {
    for r in d.networks.list() {
        let gw = gateways(&r);
        if !gw.is_empty() {
            d.dns.serve(d, &r.id, &gw).await;
        }
    }
}

async fn serve_udp(
    sock: tokio::net::UdpSocket,
    d: Weak<Daemon>,
    network_id: String,
    upstream: Vec<SocketAddr>,
) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let query = &buf[..n];
        match local_answer(&d, &network_id, query) {
            Some(Local::Answer(reply)) => {
                let _ = sock.send_to(&reply, peer).await;
            }
            Some(Local::Relay(fallback)) => {
                // A slow upstream must not hold up container names: relay on its own.
                let (sock, query, upstream) = (sock.clone(), query.to_vec(), upstream.clone());
                tokio::spawn(async move {
                    let reply = relay(&query, &upstream, false).await.unwrap_or(fallback);
                    let _ = sock.send_to(&reply, peer).await;
                });
            }
            None => {}
        }
    }
}

async fn serve_tcp(
    listener: tokio::net::TcpListener,
    d: Weak<Daemon>,
    network_id: String,
    upstream: Vec<SocketAddr>,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (d, network_id, upstream) = (d.clone(), network_id.clone(), upstream.clone());
        tokio::spawn(async move {
            // Length-prefixed messages until the client closes (RFC 7766).
            loop {
                let Ok(len) = conn.read_u16().await else {
                    return;
                };
                let mut query = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let reply = match local_answer(&d, &network_id, &query) {
                    Some(Local::Answer(reply)) => reply,
                    Some(Local::Relay(fallback)) => {
                        relay(&query, &upstream, true).await.unwrap_or(fallback)
                    }
                    None => return,
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                if conn.write_u16(len).await.is_err() || conn.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The addresses `name` has on network `network_id`: running containers on it, by name,
/// network alias, or id (12 characters or more).
pub fn lookup(d: &Daemon, network_id: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for h in d.containers.all() {
        // Held only for the comparison (no copy of the record per query).
        let r = h.record();
        if !matches!(r.state.status, Status::Running | Status::Paused) {
            continue;
        }
        let Some(a) = r.networks.values().find(|a| a.network_id == network_id) else {
            continue;
        };
        let Some(endpoint) = &a.endpoint else {
            continue;
        };
        let matches = r.name.eq_ignore_ascii_case(&name)
            || a.aliases.iter().any(|al| al.eq_ignore_ascii_case(&name))
            || (name.len() >= 12 && r.id.starts_with(&name));
        if matches {
            out.extend(endpoint.addresses.iter().map(|(ip, _)| *ip));
        }
    }
    out
}

/// What to do with one query.
enum Local {
    /// Answered from the container names.
    Answer(Vec<u8>),
    /// Not a container: ask upstream; this (SERVFAIL, or REFUSED with no upstream) if that
    /// fails.
    Relay(Vec<u8>),
}

/// The answer from the container names (a cheap, in-memory lookup: done inline), or what to
/// say if upstream cannot answer; `None` for what is not a query.
fn local_answer(d: &Weak<Daemon>, network_id: &str, query: &[u8]) -> Option<Local> {
    let request = Message::from_vec(query).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_queries(request.queries().to_vec());
    let Some(q) = request.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply.to_vec().ok().map(Local::Answer);
    };
    let daemon = d.upgrade()?;
    let addresses = lookup(&daemon, network_id, &q.name().to_utf8());
    if !addresses.is_empty() {
        let wanted = q.query_type();
        for ip in addresses {
            let rdata = match (ip, wanted) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
        }
        // A container without an address of the asked family: the name exists, no data.
        return reply.to_vec().ok().map(Local::Answer);
    }
    reply.set_response_code(ResponseCode::ServFail);
    reply.to_vec().ok().map(Local::Relay)
}

/// Asks the upstream servers in turn; their answer, as it came.
async fn relay(query: &[u8], upstream: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    for server in upstream {
        let attempt = async {
            if tcp {
                let mut c = tokio::net::TcpStream::connect(server).await.ok()?;
                c.write_u16(u16::try_from(query.len()).ok()?).await.ok()?;
                c.write_all(query).await.ok()?;
                let len = c.read_u16().await.ok()?;
                let mut reply = vec![0u8; usize::from(len)];
                c.read_exact(&mut reply).await.ok()?;
                Some(reply)
            } else {
                let bind: SocketAddr = if server.is_ipv4() {
                    "0.0.0.0:0".parse().ok()?
                } else {
                    "[::]:0".parse().ok()?
                };
                let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
                sock.send_to(query, server).await.ok()?;
                let mut buf = vec![0u8; 4096];
                let (n, _) = sock.recv_from(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_settings() {
        assert!(matches!(Upstream::parse(&[]), Ok(Upstream::Host)));
        assert!(matches!(
            Upstream::parse(&["none".into()]),
            Ok(Upstream::None)
        ));
        match Upstream::parse(&["127.0.0.53".into(), "10.0.0.1:5353".into()]) {
            Ok(Upstream::Servers(s)) => assert_eq!(
                s,
                vec![
                    "127.0.0.53:53".parse().unwrap(),
                    "10.0.0.1:5353".parse().unwrap()
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(Upstream::parse(&["not an address".into()]).is_err());
    }
}
