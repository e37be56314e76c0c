//! Answering one query: the selector's pick first, then the other routable sites, from
//! records built once at start-up.
//!
//! Per query the work is bounded: a parse (hickory-server's), a lookup among the configured
//! names, one call of the selector (one atomic load, a few random numbers), and at most
//! `max_answers` record indices pushed into buffers owned by the worker and reused. The records
//! themselves are built when the responder starts and only borrowed by answers. Snapshots of the
//! selector are taken only when its decision changes.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::zone_handler::{MessageRequest, MessageResponse, MessageResponseBuilder};
use tower_service::Service;

use super::config::{DnsConfig, DnsGslb};
use super::query::{Addresses, DnsQuery, Transport};
use super::stats::{Rcode, Stats};
use crate::extract::IpTable;
use crate::handle::GslbHandle;
use crate::snapshot::{Mode, Snapshot};

/// One site's records inside a name's record table.
#[derive(Debug)]
struct SiteRecords {
    name: Arc<str>,
    addrs: Addresses,
    v4: Range<usize>,
    v6: Range<usize>,
}

/// A configured name: its selector and every record it can answer with.
struct Zone {
    lower: LowerName,
    name: Arc<str>,
    gslb: DnsGslb,
    /// The sites in configuration order, then the fallback site.
    sites: Box<[SiteRecords]>,
    /// Address records of all sites, then the SRV records pointing here.
    records: Box<[Record]>,
}

/// A configured SRV name.
struct Srv {
    lower: LowerName,
    zone: usize,
    record: usize,
}

/// The family an address answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Everything the responder answers from; shared by all workers.
pub(crate) struct Authority {
    zones: Box<[Zone]>,
    srv: Box<[Srv]>,
    regions: IpTable<()>,
    region_names: Box<[Arc<str>]>,
    pub(crate) udp_payload: u16,
    max_answers: usize,
    pub(crate) label: Arc<str>,
    pub(crate) stats: Stats,
}

/// What the selector routes to, as seen at its last change: refreshed only when it changes.
#[derive(Debug, Default)]
struct View {
    /// Routable sites with a positive planned share, and the share.
    weighted: Vec<(usize, f64)>,
    /// Routable sites without planned share (standby priorities), in failover order.
    standby: Vec<usize>,
}

impl View {
    fn rebuild(&mut self, snapshot: &Snapshot) {
        self.weighted.clear();
        self.standby.clear();
        if !matches!(snapshot.mode, Mode::Normal | Mode::AllAsHealthy) {
            return;
        }
        let mut routable: Vec<(u32, usize, f64)> = snapshot
            .sites
            .iter()
            .enumerate()
            .filter(|(_, s)| s.routable)
            .map(|(i, s)| (s.priority, i, s.traffic_share))
            .collect();
        routable.sort_by_key(|&(p, i, _)| (p, i));
        for (_, i, share) in routable {
            if share > 0.0 {
                self.weighted.push((i, share));
            } else {
                self.standby.push(i);
            }
        }
    }
}

/// A worker's own copy of each selector and its reusable buffers.
pub(crate) struct Worker {
    zones: Box<[ZoneState]>,
    pub(crate) scratch: Scratch,
}

struct ZoneState {
    gslb: DnsGslb,
    handle: GslbHandle,
    view: View,
}

/// Buffers reused from query to query.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    answers: Vec<usize>,
    additionals: Vec<usize>,
    order: Vec<(f64, usize)>,
}

/// How to answer one query.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) metadata: Metadata,
    pub(crate) zone: Option<usize>,
    edns: Option<Edns>,
}

impl Authority {
    pub(crate) fn new(config: DnsConfig) -> Self {
        let ttl = config.ttl;
        let mut zones = Vec::with_capacity(config.names.len());
        for n in &config.names {
            let handle = n.gslb.handle();
            let snapshot = handle.snapshot();
            let mut records = Vec::new();
            let mut sites = Vec::with_capacity(snapshot.sites.len() + 1);
            let fallback = snapshot.fallback.clone().zip(n.gslb.fallback_ref());
            let all = snapshot
                .sites
                .iter()
                .map(|s| s.name.clone())
                .zip(n.gslb.get_ref())
                .chain(fallback);
            for (site, addrs) in all {
                let start = records.len();
                records.extend(addrs.ips().iter().filter_map(|ip| match ip {
                    IpAddr::V4(v4) => {
                        Some(Record::from_rdata(n.name.clone(), ttl, RData::A(A(*v4))))
                    }
                    IpAddr::V6(_) => None,
                }));
                let mid = records.len();
                records.extend(addrs.ips().iter().filter_map(|ip| match ip {
                    IpAddr::V6(v6) => Some(Record::from_rdata(
                        n.name.clone(),
                        ttl,
                        RData::AAAA(AAAA(*v6)),
                    )),
                    IpAddr::V4(_) => None,
                }));
                sites.push(SiteRecords {
                    name: site,
                    addrs: addrs.clone(),
                    v4: start..mid,
                    v6: mid..records.len(),
                });
            }
            let name = n.name.to_string();
            zones.push((
                Zone {
                    lower: LowerName::new(&n.name),
                    name: Arc::from(name.as_str()),
                    gslb: n.gslb.clone(),
                    sites: sites.into(),
                    records: Box::default(),
                },
                records,
            ));
        }
        let mut srv = Vec::with_capacity(config.srv.len());
        for s in &config.srv {
            let (zone, records) = &mut zones[s.target];
            let target: Name = zone.lower.clone().into();
            records.push(Record::from_rdata(
                s.name.clone(),
                ttl,
                RData::SRV(SRV::new(0, 0, s.port, target)),
            ));
            srv.push(Srv {
                lower: LowerName::new(&s.name),
                zone: s.target,
                record: records.len() - 1,
            });
        }
        let zones: Box<[Zone]> = zones
            .into_iter()
            .map(|(mut z, records)| {
                z.records = records.into();
                z
            })
            .collect();

        let mut regions = IpTable::new(());
        let mut region_names: Vec<Arc<str>> = Vec::new();
        for (net, len, region) in &config.subnets {
            regions = regions.route(*net, *len, &**region);
            if !region_names.contains(region) {
                region_names.push(region.clone());
            }
        }
        let stats = Stats::new(
            &config.label,
            zones.iter().map(|z| {
                (
                    z.gslb.handle().name().to_owned(),
                    z.sites.iter().map(|s| s.name.to_string()).collect(),
                )
            }),
        );
        Self {
            zones,
            srv: srv.into(),
            regions,
            region_names: region_names.into(),
            udp_payload: config.udp_payload,
            max_answers: config.max_answers,
            label: config.label,
            stats,
        }
    }

    /// A worker: its own selector clones and buffers.
    pub(crate) fn worker(&self) -> Worker {
        Worker {
            zones: self
                .zones
                .iter()
                .map(|z| {
                    let handle = z.gslb.handle();
                    let mut view = View::default();
                    view.rebuild(&handle.snapshot());
                    ZoneState {
                        gslb: z.gslb.clone(),
                        handle,
                        view,
                    }
                })
                .collect(),
            scratch: Scratch::default(),
        }
    }

    /// The configured names, for events.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| &*z.name)
    }

    /// Decides the answer to `request` from `src`; fills the worker's scratch buffers.
    pub(crate) fn plan(
        &self,
        worker: &mut Worker,
        request: &MessageRequest,
        src: SocketAddr,
        transport: Transport,
    ) -> Plan {
        let metadata = Metadata::response_from_request(&request.metadata);
        let scratch = &mut worker.scratch;
        scratch.answers.clear();
        scratch.additionals.clear();
        let mut edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(self.udp_payload);
            e
        });
        let plan = |code: ResponseCode, zone: Option<usize>, edns: Option<Edns>| {
            let mut metadata = metadata;
            metadata.response_code = code;
            // Only answers about our own names are authoritative.
            metadata.authoritative = zone.is_some() || code == ResponseCode::NoError;
            Plan {
                metadata,
                zone,
                edns,
            }
        };

        if request.metadata.op_code != OpCode::Query {
            self.stats.query(None, transport, Rcode::NotImp);
            return plan(ResponseCode::NotImp, None, edns);
        }
        let queries = request.queries.queries();
        let [query] = queries else {
            tracing::debug!(
                target: "rampart_gslb::dns",
                gslb = %self.label,
                %src,
                questions = queries.len(),
                "dns query without exactly one question: formerr"
            );
            self.stats.query(None, transport, Rcode::FormErr);
            return plan(ResponseCode::FormErr, None, edns);
        };
        let qname = query.name();
        let zone_index = self.zones.iter().position(|z| z.lower == *qname);
        let srv = match zone_index {
            Some(_) => None,
            None => self.srv.iter().find(|s| s.lower == *qname),
        };
        let Some(zone_index) = zone_index.or(srv.map(|s| s.zone)) else {
            tracing::debug!(
                target: "rampart_gslb::dns",
                gslb = %self.label,
                %src,
                name = %qname,
                "dns query for a name not served here: refused"
            );
            self.stats.query(None, transport, Rcode::Refused);
            return plan(ResponseCode::Refused, None, edns);
        };
        if query.query_class() != DNSClass::IN {
            self.stats
                .query(Some(zone_index), transport, Rcode::Refused);
            return plan(ResponseCode::Refused, None, edns);
        }
        let families: &[Family] = match (srv.is_some(), query.query_type()) {
            (true, RecordType::SRV) => &[Family::V4, Family::V6],
            (false, RecordType::A) => &[Family::V4],
            (false, RecordType::AAAA) => &[Family::V6],
            _ => {
                // The name exists, the type does not: an authoritative empty answer.
                self.stats
                    .query(Some(zone_index), transport, Rcode::NoError);
                return plan(ResponseCode::NoError, None, edns);
            }
        };

        // The client: EDNS Client Subnet (RFC 7871) when present with a non-zero source
        // prefix, else the resolver.
        let subnet = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) if s.source_prefix() > 0 => Some(*s),
                _ => None,
            });
        let client = subnet.map_or(src.ip().to_canonical(), |s| s.addr());
        if let (Some(s), Some(e)) = (subnet, edns.as_mut()) {
            // The answer is valid for the whole source prefix.
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                s.addr(),
                s.source_prefix(),
                s.source_prefix(),
            )));
            self.stats.client_subnet(zone_index);
        }
        let region = self
            .regions
            .lookup(client)
            .and_then(|r| self.region_names.iter().find(|n| ***n == *r))
            .cloned();

        let zone = &self.zones[zone_index];
        let state = &mut worker.zones[zone_index];
        let dns_query = DnsQuery {
            name: zone.name.clone(),
            client,
            source: src,
            client_subnet: subnet.is_some(),
            region,
            transport,
        };
        let Some(primary) = pick(&mut state.gslb, dns_query)
            .and_then(|a| zone.sites.iter().position(|s| s.addrs.same(&a)))
        else {
            tracing::debug!(
                target: "rampart_gslb::dns",
                gslb = %self.stats.label(Some(zone_index), &self.label),
                name = %zone.name,
                "no site to answer with (none healthy, no fallback): servfail"
            );
            self.stats
                .query(Some(zone_index), transport, Rcode::ServFail);
            return plan(ResponseCode::ServFail, None, edns);
        };
        if let Some(snapshot) = poll_changed(&mut state.handle) {
            state.view.rebuild(&snapshot);
        }

        let out = if srv.is_some() {
            scratch.answers.push(srv.map_or(0, |s| s.record));
            &mut scratch.additionals
        } else {
            &mut scratch.answers
        };
        for &family in families {
            let start = out.len();
            self.select(zone, &state.view, primary, family, out, &mut scratch.order);
            debug_assert!(out.len() - start <= self.max_answers);
        }
        self.stats
            .query(Some(zone_index), transport, Rcode::NoError);
        self.stats.answer(zone_index, primary);
        tracing::debug!(
            target: "rampart_gslb::dns",
            gslb = %self.stats.label(Some(zone_index), &self.label),
            name = %zone.name,
            qtype = %query.query_type(),
            site = %zone.sites[primary].name,
            client = %client,
            region = ?self.regions.lookup(client),
            %transport,
            answers = scratch.answers.len(),
            "dns answer"
        );
        plan(ResponseCode::NoError, Some(zone_index), edns)
    }

    /// Pushes up to `max_answers` record indices of `family`: the primary site's addresses
    /// (shuffled), then the other routable sites' in a weighted random order (Efraimidis and
    /// Spirakis, "Weighted random sampling with a reservoir", 2006: key = ln(u) / share), then
    /// standby sites in failover order.
    fn select(
        &self,
        zone: &Zone,
        view: &View,
        primary: usize,
        family: Family,
        out: &mut Vec<usize>,
        order: &mut Vec<(f64, usize)>,
    ) {
        let limit = out.len() + self.max_answers;
        let push = |site: usize, out: &mut Vec<usize>| {
            let Some(s) = zone.sites.get(site) else {
                return;
            };
            let range = match family {
                Family::V4 => s.v4.clone(),
                Family::V6 => s.v6.clone(),
            };
            let start = out.len();
            out.extend(range);
            fastrand::shuffle(&mut out[start..]);
            out.truncate(limit);
        };
        push(primary, out);
        order.clear();
        order.extend(
            view.weighted
                .iter()
                .filter(|&&(i, _)| i != primary)
                .map(|&(i, share)| (fastrand::f64().ln() / share, i)),
        );
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, i) in order.iter() {
            if out.len() >= limit {
                return;
            }
            push(i, out);
        }
        for &i in &view.standby {
            if out.len() >= limit {
                return;
            }
            if i != primary {
                push(i, out);
            }
        }
    }

    /// The response for `plan`, borrowing the records.
    pub(crate) fn response<'a>(
        &'a self,
        request: &'a MessageRequest,
        plan: &'a Plan,
        scratch: &'a Scratch,
    ) -> MessageResponse<
        'a,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    > {
        let records: &'a [Record] = plan.zone.map_or(&[], |z| &self.zones[z].records);
        MessageResponseBuilder::new(&request.queries, plan.edns.as_ref()).build(
            plan.metadata,
            scratch.answers.iter().filter_map(move |&i| records.get(i)),
            std::iter::empty(),
            std::iter::empty(),
            scratch
                .additionals
                .iter()
                .filter_map(move |&i| records.get(i)),
        )
    }

    /// The largest UDP answer for `request`: its EDNS size within ours, else 512 (RFC 1035).
    pub(crate) fn udp_limit(&self, request: &MessageRequest) -> u16 {
        match &request.edns {
            Some(_) => request.max_payload().clamp(512, self.udp_payload),
            None => 512,
        }
    }
}

/// A bare error header for a message whose body could not be parsed (no question echoed).
pub(crate) fn error_header(header: &Header, code: ResponseCode, out: &mut Vec<u8>) -> bool {
    let mut metadata = Metadata::new(
        header.metadata.id,
        MessageType::Response,
        header.metadata.op_code,
    );
    metadata.recursion_desired = header.metadata.recursion_desired;
    metadata.response_code = code;
    let reply = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    out.clear();
    let mut encoder = BinEncoder::new(out);
    reply.emit(&mut encoder).is_ok()
}

/// Asks the selector for a site: its service is [`Addresses`], ready at once, so the response
/// future completes on its first poll (a `Pending` would mean no answer, never a hang).
fn pick(gslb: &mut DnsGslb, query: DnsQuery) -> Option<Addresses> {
    let mut cx = Context::from_waker(Waker::noop());
    // `Gslb::poll_ready` is always ready (readiness is awaited on the chosen site).
    if !matches!(gslb.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        return None;
    }
    let mut future = pin!(gslb.call(query));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(addrs)) => Some(addrs),
        Poll::Ready(Err(_)) | Poll::Pending => None,
    }
}

/// The new snapshot if the selector recomputed since the last call, without waiting.
fn poll_changed(handle: &mut GslbHandle) -> Option<Snapshot> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(handle.changed()).poll(&mut cx) {
        Poll::Ready(snapshot) => Some(snapshot),
        Poll::Pending => None,
    }
}
