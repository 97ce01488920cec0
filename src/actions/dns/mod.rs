//! What the DNS actions share: record values in canonical text, a DNS client that speaks the
//! wire protocol itself (hickory-proto messages over UDP, TCP when truncated, TSIG-signed for
//! RFC 2136), and the two `dns.failover` providers: an RFC 2136 primary and the Route 53 API.

pub mod failover;
pub mod verify;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType, TSigner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::actions::{ActionError, Exec};

// The record types lifeboat fails over: an address, or an alias. (A plain comment: a doc comment
// would change the published schema.)
#[derive(
    Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema, PartialEq, Eq,
)]
pub enum RecordType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
}

/// A name's records of one type, as the server serves them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordSet {
    /// Canonical text (`192.0.2.7`, `2001:db8::1`, `app.example.com.`), sorted.
    pub values: Vec<String>,
    /// `None` when there are no records.
    pub ttl: Option<u32>,
}

/// `name` as an absolute, lower-case name with its trailing dot.
pub fn fqdn(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

/// A target in canonical text, so that `2001:DB8::1` and `2001:db8:0::1` compare equal.
pub fn canonical(t: RecordType, value: &str) -> Result<String, String> {
    let v = value.trim();
    match t {
        RecordType::A => v
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("`{v}` is not an IPv4 address")),
        RecordType::AAAA => v
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("`{v}` is not an IPv6 address")),
        RecordType::CNAME => {
            if v.is_empty() || v.parse::<IpAddr>().is_ok() {
                Err(format!("`{v}` is not a host name"))
            } else {
                Name::from_ascii(v)
                    .map(|_| fqdn(v))
                    .map_err(|e| format!("`{v}` is not a host name: {e}"))
            }
        }
    }
}

pub fn canonical_all(t: RecordType, values: &[String]) -> Result<Vec<String>, ActionError> {
    let mut out = values
        .iter()
        .map(|v| canonical(t, v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ActionError::permanent)?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn wire_type(t: RecordType) -> WireType {
    match t {
        RecordType::A => WireType::A,
        RecordType::AAAA => WireType::AAAA,
        RecordType::CNAME => WireType::CNAME,
    }
}

fn wire_name(name: &str) -> Result<Name, ActionError> {
    Name::from_ascii(fqdn(name))
        .map_err(|e| ActionError::permanent(format!("`{name}` is not a DNS name: {e}")))
}

fn rdata(t: RecordType, value: &str) -> Result<RData, ActionError> {
    let v = canonical(t, value).map_err(ActionError::permanent)?;
    Ok(match t {
        RecordType::A => RData::A(A(v.parse().expect("canonical IPv4"))),
        RecordType::AAAA => RData::AAAA(AAAA(v.parse().expect("canonical IPv6"))),
        RecordType::CNAME => RData::CNAME(CNAME(wire_name(&v)?)),
    })
}

fn text(data: &RData) -> Option<String> {
    match data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        RData::CNAME(c) => Some(fqdn(&c.0.to_ascii())),
        _ => None,
    }
}

/// The records of `name`/`t` in an answer. `follow`: through a CNAME chain to the records of
/// its end, as a client's resolver would (for `dns.verify`). Otherwise a CNAME at the name where
/// another type was asked for is an error: such a name can hold nothing else, and an update
/// adding to it would be ignored.
fn record_set(
    answer: &Message,
    name: &Name,
    t: RecordType,
    follow: bool,
) -> Result<RecordSet, String> {
    let same = |a: &Name, b: &Name| a.to_ascii().eq_ignore_ascii_case(&b.to_ascii());
    let mut at = name.clone();
    let mut set = RecordSet::default();
    // Bounded: a CNAME loop in a hostile answer must not hang the step.
    for _ in 0..16 {
        let mut next = None;
        for r in answer.answers.iter().filter(|r| same(&r.name, &at)) {
            if r.record_type() == WireType::CNAME && t != RecordType::CNAME {
                let RData::CNAME(target) = &r.data else {
                    continue;
                };
                if !follow {
                    return Err(format!(
                        "{name} is a CNAME (to {}), which can hold no {t:?} records: fail over \
                         the CNAME itself (`type: CNAME`)",
                        target.0
                    ));
                }
                next = Some(target.0.clone());
            }
            if r.record_type() == wire_type(t)
                && let Some(v) = text(&r.data)
            {
                set.values.push(v);
                set.ttl = Some(set.ttl.map_or(r.ttl, |ttl| ttl.min(r.ttl)));
            }
        }
        match next {
            Some(n) if set.values.is_empty() => at = n,
            _ => break,
        }
    }
    set.values.sort();
    set.values.dedup();
    Ok(set)
}

/// Parses `host:port` (a bare host means port 53). Names are not resolved: DNS servers are
/// given by address, so that failing DNS cannot stop a DNS failover.
pub fn server_addr(server: &str) -> Result<SocketAddr, ActionError> {
    let s = server.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(ActionError::permanent(format!(
        "DNS server `{server}` is not an address with an optional port (`192.0.2.53`, \
         `192.0.2.53:5353`, `[2001:db8::53]:53`)"
    )))
}

/// The first `nameserver` of /etc/resolv.conf: what "the system resolver" means here.
pub fn system_resolver() -> Result<SocketAddr, ActionError> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| {
        ActionError::permanent(format!(
            "no `server` given and /etc/resolv.conf cannot be read: {e}"
        ))
    })?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| {
            ActionError::permanent("no `server` given and /etc/resolv.conf names no nameserver")
        })
}

/// How long one UDP try waits for its answer; three tries, then the attempt fails (transient).
const UDP_WAIT: Duration = Duration::from_secs(2);
const UDP_TRIES: usize = 3;

/// Sends one message and returns the raw answer: UDP, then TCP if the answer was truncated.
async fn exchange(server: SocketAddr, request: &[u8], id: u16) -> Result<Vec<u8>, ActionError> {
    let unreachable = |e: std::io::Error| {
        ActionError::transient(format!("cannot reach DNS server {server}: {e}"))
    };
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(unreachable)?;
    socket.connect(server).await.map_err(unreachable)?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..UDP_TRIES {
        socket.send(request).await.map_err(unreachable)?;
        let deadline = tokio::time::Instant::now() + UDP_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(unreachable(e)),
                Ok(Ok(n)) => {
                    // A late answer to an earlier query, or noise: wait for ours.
                    if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                        continue;
                    }
                    let truncated = buf[2] & 0x02 != 0;
                    if !truncated {
                        return Ok(buf[..n].to_vec());
                    }
                    return exchange_tcp(server, request).await;
                }
            }
        }
    }
    Err(ActionError::transient(format!(
        "DNS server {server} did not answer ({UDP_TRIES} tries, {}s each)",
        UDP_WAIT.as_secs()
    )))
}

async fn exchange_tcp(server: SocketAddr, request: &[u8]) -> Result<Vec<u8>, ActionError> {
    let fail = |e: std::io::Error| ActionError::transient(format!("DNS over TCP to {server}: {e}"));
    let io = async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(request.len()).map_err(std::io::Error::other)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(request).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    tokio::time::timeout(UDP_WAIT * UDP_TRIES as u32, io)
        .await
        .map_err(|_| {
            ActionError::transient(format!("DNS server {server} did not answer over TCP"))
        })?
        .map_err(fail)
}

/// Asks `server` for `name`/`t`, unsigned (the check a client's resolver makes).
pub async fn query(
    server: SocketAddr,
    name: &str,
    t: RecordType,
    recursion: bool,
) -> Result<RecordSet, ActionError> {
    let qname = wire_name(name)?;
    let mut m = Message::query();
    m.add_query(Query::query(qname.clone(), wire_type(t)));
    m.metadata.recursion_desired = recursion;
    let bytes = m
        .to_vec()
        .map_err(|e| ActionError::permanent(format!("DNS query: {e}")))?;
    let raw = exchange(server, &bytes, m.metadata.id).await?;
    let answer = Message::from_vec(&raw).map_err(|e| {
        ActionError::transient(format!(
            "DNS server {server} sent an answer that does not parse: {e}"
        ))
    })?;
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {
            record_set(&answer, &qname, t, true).map_err(ActionError::permanent)
        }
        ResponseCode::ServFail => Err(ActionError::transient(format!(
            "DNS server {server} answered SERVFAIL for {name}"
        ))),
        code => Err(ActionError::permanent(format!(
            "DNS server {server} answered {} for {name} {t:?}",
            code.to_str()
        ))),
    }
}

/// An RFC 2136 primary and the TSIG key its zone accepts updates with.
pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    key_name: String,
    signer: TSigner,
}

impl Rfc2136 {
    fn from_fields(fields: &Value) -> Result<Rfc2136, ActionError> {
        let get = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
        let server = server_addr(get("server"))?;
        let zone = wire_name(get("zone"))?;
        let key_name = get("key_name").to_string();
        let algorithm = match get("algorithm") {
            "" | "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(ActionError::permanent(format!(
                    "TSIG algorithm `{other}` is not supported"
                )));
            }
        };
        use base64::Engine as _;
        // Never quote the secret: it is the one thing this error must not show.
        let secret = base64::engine::general_purpose::STANDARD
            .decode(get("key_secret").trim())
            .map_err(|_| {
                ActionError::permanent(format!(
                    "the secret of TSIG key `{key_name}` is not base64 (as `tsig-keygen` prints it)"
                ))
            })?;
        let signer = TSigner::new(secret, algorithm, wire_name(&key_name)?, 300)
            .map_err(|e| ActionError::permanent(format!("TSIG key `{key_name}`: {e}")))?;
        Ok(Rfc2136 {
            server,
            zone,
            key_name,
            signer,
        })
    }

    pub fn label(&self) -> String {
        format!("{} (zone {})", self.server, self.zone)
    }

    /// Sends a signed message; returns the verified answer, or says in words what the server
    /// held against it.
    async fn signed(&self, mut m: Message, doing: &str) -> Result<Message, ActionError> {
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let mut verifier = m
            .finalize(&self.signer, now)
            .map_err(|e| ActionError::permanent(format!("{doing}: cannot sign: {e}")))?;
        let bytes = m
            .to_vec()
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        let raw = exchange(self.server, &bytes, m.metadata.id).await?;
        let answer = Message::from_vec(&raw).map_err(|e| {
            ActionError::transient(format!(
                "{doing}: {} sent an answer that does not parse: {e}",
                self.server
            ))
        })?;
        let key = &self.key_name;
        // A key the server does not know or a MAC that does not match: the answer carries the
        // TSIG error and no MAC of its own (RFC 8945 5.3.2), so it cannot be verified.
        if let Some(sig) = answer.signature()
            && let Some(err) = &sig.data.error
        {
            return Err(ActionError::permanent(match err {
                TsigError::BadSig => format!(
                    "{doing}: {} rejected the signature of TSIG key `{key}` (BADSIG): the \
                     secret is not the one the server has for that key",
                    self.server
                ),
                TsigError::BadKey => format!(
                    "{doing}: {} does not know TSIG key `{key}` with this algorithm (BADKEY)",
                    self.server
                ),
                TsigError::BadTime => format!(
                    "{doing}: {} says this machine's clock is more than 5 minutes off its own \
                     (BADTIME)",
                    self.server
                ),
                other => format!(
                    "{doing}: {} rejected TSIG key `{key}` ({other:?})",
                    self.server
                ),
            }));
        }
        match (answer.signature().is_some(), verifier.as_mut()) {
            (true, Some(v)) => {
                v.verify(&raw).map_err(|e| {
                    ActionError::permanent(format!(
                        "{doing}: the answer from {} is not signed with TSIG key `{key}`: {e}",
                        self.server
                    ))
                })?;
            }
            // An unsigned answer to a signed request is only acceptable as a refusal: nothing
            // in it is believed.
            _ if answer.metadata.response_code == ResponseCode::NoError => {
                return Err(ActionError::permanent(format!(
                    "{doing}: {} answered without a TSIG signature; the answer cannot be trusted",
                    self.server
                )));
            }
            _ => {}
        }
        let zone = &self.zone;
        match answer.metadata.response_code {
            ResponseCode::NoError => Ok(answer),
            ResponseCode::NXDomain if m.metadata.op_code == OpCode::Query => Ok(answer),
            ResponseCode::Refused if m.metadata.op_code == OpCode::Update => {
                Err(ActionError::permanent(format!(
                    "{doing}: {} refused the update (REFUSED): zone {zone} does not accept \
                     updates signed with key `{key}` (its allow-update or update-policy)",
                    self.server
                )))
            }
            ResponseCode::Refused => Err(ActionError::permanent(format!(
                "{doing}: {} refused the query (REFUSED): it does not serve zone {zone}, or \
                 does not answer this machine (allow-query)",
                self.server
            ))),
            ResponseCode::NotAuth => Err(ActionError::permanent(format!(
                "{doing}: {} is not authoritative for zone {zone} (NOTAUTH): check the \
                 connection's `zone` and `server`",
                self.server
            ))),
            ResponseCode::NotZone => Err(ActionError::permanent(format!(
                "{doing}: the name is not in zone {zone} (NOTZONE)"
            ))),
            ResponseCode::ServFail => Err(ActionError::transient(format!(
                "{doing}: {} answered SERVFAIL",
                self.server
            ))),
            code => Err(ActionError::permanent(format!(
                "{doing}: {} answered {}",
                self.server,
                code.to_str()
            ))),
        }
    }

    fn check_in_zone(&self, name: &Name) -> Result<(), ActionError> {
        if self.zone.zone_of(name) {
            Ok(())
        } else {
            Err(ActionError::permanent(format!(
                "{name} is not in zone {}: the connection's zone must contain the name",
                self.zone
            )))
        }
    }

    /// The record set as the primary serves it (a signed query, so a wrong key shows here, in
    /// the dry run, before any change).
    pub async fn read(&self, name: &str, t: RecordType) -> Result<RecordSet, ActionError> {
        let qname = wire_name(name)?;
        self.check_in_zone(&qname)?;
        let mut m = Message::query();
        m.add_query(Query::query(qname.clone(), wire_type(t)));
        m.metadata.recursion_desired = false;
        let doing = format!("reading {qname} {t:?}");
        let answer = self.signed(m, &doing).await?;
        if !answer.metadata.authoritative {
            return Err(ActionError::permanent(format!(
                "{doing}: {} answered, but not authoritatively: it is not the primary of zone {}",
                self.server, self.zone
            )));
        }
        record_set(&answer, &qname, t, false).map_err(ActionError::permanent)
    }

    /// Replaces the whole record set in one update: the deletion and the additions are applied
    /// together or not at all (RFC 2136 3.4). No values: the set is deleted.
    pub async fn replace(
        &self,
        name: &str,
        t: RecordType,
        ttl: u32,
        values: &[String],
    ) -> Result<(), ActionError> {
        let qname = wire_name(name)?;
        self.check_in_zone(&qname)?;
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(WireType::SOA);
        // Message::query() draws the random id; an update is a query with another opcode.
        let mut m = Message::query();
        m.metadata.op_code = OpCode::Update;
        m.metadata.recursion_desired = false;
        m.add_zone(zone);
        let mut delete = Record::update0(qname.clone(), 0, wire_type(t));
        delete.dns_class = DNSClass::ANY;
        m.add_update(delete);
        for v in values {
            m.add_update(Record::from_rdata(qname.clone(), ttl, rdata(t, v)?));
        }
        self.signed(m, &format!("updating {qname} {t:?}")).await?;
        Ok(())
    }
}

/// The Route 53 API for one hosted zone.
pub struct Route53 {
    client: aws_sdk_route53::Client,
    zone_id: String,
}

impl Route53 {
    async fn from_fields(fields: &Value) -> Result<Route53, ActionError> {
        let get = |k: &str| fields.get(k).and_then(Value::as_str).map(String::from);
        let shared = crate::actions::support::aws::sdk_config(fields).await;
        let mut b = aws_sdk_route53::config::Builder::from(&shared);
        if let Some(e) = get("endpoint") {
            b = b.endpoint_url(e);
        }
        let zone_id = get("hosted_zone_id").unwrap_or_default();
        let zone_id = zone_id.trim_start_matches("/hostedzone/").to_string();
        Ok(Route53 {
            client: aws_sdk_route53::Client::from_conf(b.build()),
            zone_id,
        })
    }

    pub fn label(&self) -> String {
        format!("Route 53 hosted zone {}", self.zone_id)
    }

    pub async fn read(&self, name: &str, t: RecordType) -> Result<RecordSet, ActionError> {
        let want = fqdn(name);
        let doing = format!("listing {want} {t:?} in hosted zone {}", self.zone_id);
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .start_record_name(&want)
            .start_record_type(r53_type(t))
            .max_items(1)
            .send()
            .await
            .map_err(|e| crate::actions::support::aws::classify(&e, &doing))?;
        let Some(rrs) = out.resource_record_sets().first() else {
            return Ok(RecordSet::default());
        };
        if fqdn(&unescape_r53(rrs.name())) != want || rrs.r#type() != &r53_type(t) {
            return Ok(RecordSet::default());
        }
        if rrs.alias_target().is_some() {
            return Err(ActionError::permanent(format!(
                "{want} {t:?} is a Route 53 alias record; dns.failover replaces plain record sets only"
            )));
        }
        if rrs.set_identifier().is_some() {
            return Err(ActionError::permanent(format!(
                "{want} {t:?} is a routing-policy record set (weighted, latency, failover...); \
                 dns.failover replaces simple record sets only"
            )));
        }
        let mut values = rrs
            .resource_records()
            .iter()
            .map(|r| canonical(t, r.value()).unwrap_or_else(|_| r.value().to_string()))
            .collect::<Vec<_>>();
        values.sort();
        Ok(RecordSet {
            values,
            ttl: rrs.ttl().map(|t| t.max(0) as u32),
        })
    }

    /// UPSERT (or DELETE, for no values) through ChangeResourceRecordSets, then waits until the
    /// change is INSYNC: applied on all of Route 53's authoritative servers.
    pub async fn replace(
        &self,
        name: &str,
        t: RecordType,
        ttl: u32,
        values: &[String],
        current: &RecordSet,
        cx: &Exec<'_>,
    ) -> Result<String, ActionError> {
        use aws_sdk_route53::types::{
            Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet,
        };
        let name = fqdn(name);
        let (action, ttl, values) = if values.is_empty() {
            if current.values.is_empty() {
                return Ok(String::new());
            }
            (
                ChangeAction::Delete,
                current.ttl.unwrap_or(ttl),
                current.values.as_slice(),
            )
        } else {
            (ChangeAction::Upsert, ttl, values)
        };
        let built = |e: aws_sdk_route53::error::BuildError| {
            ActionError::permanent(format!("building the Route 53 change: {e}"))
        };
        let mut set = ResourceRecordSet::builder()
            .name(&name)
            .r#type(r53_type(t))
            .ttl(i64::from(ttl));
        for v in values {
            set = set.resource_records(ResourceRecord::builder().value(v).build().map_err(built)?);
        }
        let change = Change::builder()
            .action(action)
            .resource_record_set(set.build().map_err(built)?)
            .build()
            .map_err(built)?;
        let batch = ChangeBatch::builder()
            .comment(format!("lifeboat run {} step {}", cx.run_id, cx.step))
            .changes(change)
            .build()
            .map_err(built)?;
        let doing = format!("changing {name} {t:?} in hosted zone {}", self.zone_id);
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| crate::actions::support::aws::classify(&e, &doing))?;
        let Some(info) = out.change_info() else {
            return Err(ActionError::transient(format!(
                "{doing}: no change info in the answer"
            )));
        };
        let id = info.id().trim_start_matches("/change/").to_string();
        let mut status = info.status().clone();
        let mut reported = None;
        // Route 53 takes about a minute to go INSYNC; the step's timeout bounds the wait.
        while status != ChangeStatus::Insync {
            if reported.as_ref() != Some(&status) {
                (cx.progress)(&format!("change {id} is {}", status.as_str()));
                reported = Some(status.clone());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let got = self.client.get_change().id(&id).send().await.map_err(|e| {
                crate::actions::support::aws::classify(&e, &format!("waiting for change {id}"))
            })?;
            status = got
                .change_info()
                .map(|c| c.status().clone())
                .unwrap_or(ChangeStatus::Pending);
        }
        Ok(id)
    }
}

fn r53_type(t: RecordType) -> aws_sdk_route53::types::RrType {
    use aws_sdk_route53::types::RrType;
    match t {
        RecordType::A => RrType::A,
        RecordType::AAAA => RrType::Aaaa,
        RecordType::CNAME => RrType::Cname,
    }
}

/// Route 53 writes some characters of names as `\NNN` octal escapes (`*` as `\052`).
fn unescape_r53(name: &str) -> String {
    let mut out = String::new();
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
            && let Ok(c) = u8::from_str_radix(&name[i + 1..i + 4], 8)
        {
            out.push(c as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The provider a `dns.failover` connection names.
pub enum Provider {
    Rfc2136(Rfc2136),
    Route53(Route53),
}

impl Provider {
    pub async fn from_exec(cx: &Exec<'_>, name: &str) -> Result<Provider, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        // The connection was validated as `rfc2136` or `route53`; only route53 has a zone id.
        if fields.get("hosted_zone_id").is_some() {
            Route53::from_fields(&fields).await.map(Provider::Route53)
        } else {
            Rfc2136::from_fields(&fields).map(Provider::Rfc2136)
        }
    }

    pub fn label(&self) -> String {
        match self {
            Provider::Rfc2136(p) => p.label(),
            Provider::Route53(p) => p.label(),
        }
    }

    pub async fn read(&self, name: &str, t: RecordType) -> Result<RecordSet, ActionError> {
        match self {
            Provider::Rfc2136(p) => p.read(name, t).await,
            Provider::Route53(p) => p.read(name, t).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_compares_equal_spellings() {
        assert_eq!(
            canonical(RecordType::AAAA, "2001:DB8:0::1").unwrap(),
            "2001:db8::1"
        );
        assert_eq!(
            canonical(RecordType::CNAME, "App.Example.com").unwrap(),
            "app.example.com."
        );
        assert!(canonical(RecordType::A, "300.1.1.1").is_err());
        assert!(canonical(RecordType::CNAME, "192.0.2.1").is_err());
        let all = canonical_all(
            RecordType::A,
            &["192.0.2.2".into(), " 192.0.2.1".into(), "192.0.2.2".into()],
        );
        assert_eq!(all.unwrap(), ["192.0.2.1", "192.0.2.2"]);
    }

    #[test]
    fn servers_are_addresses_never_names() {
        assert_eq!(
            server_addr("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            server_addr("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(server_addr("[::1]").unwrap(), "[::1]:53".parse().unwrap());
        assert!(
            server_addr("ns1.example.com")
                .unwrap_err()
                .message
                .contains("not an address")
        );
    }

    #[test]
    fn route53_escapes_are_read() {
        assert_eq!(unescape_r53("\\052.example.com."), "*.example.com.");
        assert_eq!(unescape_r53("plain.example.com."), "plain.example.com.");
        assert_eq!(unescape_r53("odd\\05"), "odd\\05");
    }

    #[test]
    fn a_cname_where_an_address_was_asked_is_named() {
        let name = Name::from_ascii("www.example.com.").unwrap();
        let mut m = Message::query();
        m.add_answer(Record::from_rdata(
            name.clone(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("app.example.com.").unwrap())),
        ));
        m.add_answer(Record::from_rdata(
            Name::from_ascii("app.example.com.").unwrap(),
            300,
            RData::A(A("192.0.2.1".parse().unwrap())),
        ));
        let err = record_set(&m, &name, RecordType::A, false).unwrap_err();
        assert!(err.contains("is a CNAME (to app.example.com.)"), "{err}");
        let followed = record_set(&m, &name, RecordType::A, true).unwrap();
        assert_eq!(followed.values, ["192.0.2.1"]);
        let set = record_set(&m, &name, RecordType::CNAME, false).unwrap();
        assert_eq!(set.values, ["app.example.com."]);
        assert_eq!(set.ttl, Some(300));
    }

    #[test]
    fn bad_tsig_secrets_are_named_without_being_shown() {
        let fields = serde_json::json!({"server": "127.0.0.1:53", "zone": "example.com.", "key_name": "k", "key_secret": "not base64 secret!"});
        let err = Rfc2136::from_fields(&fields).err().unwrap();
        assert!(err.message.contains("is not base64"), "{}", err.message);
        assert!(!err.message.contains("not base64 secret!"));
        let fields = serde_json::json!({"server": "127.0.0.1:53", "zone": "example.com.", "key_name": "k", "key_secret": "c2VjcmV0", "algorithm": "hmac-md5"});
        assert!(
            Rfc2136::from_fields(&fields)
                .err()
                .unwrap()
                .message
                .contains("not supported")
        );
    }
}
