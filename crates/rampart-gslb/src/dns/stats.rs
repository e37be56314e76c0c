//! The responder's counters (feature `metrics`; without it every call is a no-op).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart_gslb_dns_queries_total` | counter | `gslb`, `transport`, `rcode` | queries answered, by response code |
//! | `rampart_gslb_dns_answers_total` | counter | `gslb`, `site` | answers whose first address is this site's (fallback included) |
//! | `rampart_gslb_dns_truncated_total` | counter | `gslb` | UDP answers sent truncated (TC bit: the client retries over TCP) |
//! | `rampart_gslb_dns_dropped_total` | counter | `gslb` | datagrams dropped unanswered (shorter than a header, or a response) |
//! | `rampart_gslb_dns_client_subnet_total` | counter | `gslb` | queries steered by their EDNS Client Subnet option |
//!
//! `gslb` is the name of the selector behind the queried name, or the responder's label for
//! queries that match no name. Handles are registered when the responder starts; a query only
//! increments cached counters.

use super::query::Transport;

/// The response codes counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NotImp,
    Refused,
}

#[cfg(feature = "metrics")]
const RCODES: [(Rcode, &str); 5] = [
    (Rcode::NoError, "noerror"),
    (Rcode::FormErr, "formerr"),
    (Rcode::ServFail, "servfail"),
    (Rcode::NotImp, "notimp"),
    (Rcode::Refused, "refused"),
];

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Labelled {
    /// `[transport][rcode]`
    queries: [[metrics::Counter; 5]; 2],
    truncated: metrics::Counter,
    dropped: metrics::Counter,
    client_subnet: metrics::Counter,
    answers: Box<[metrics::Counter]>,
}

#[cfg(feature = "metrics")]
impl Labelled {
    fn new(gslb: &str, sites: &[String]) -> Self {
        let per = |transport: &'static str| {
            RCODES.map(|(_, rcode)| {
                metrics::counter!(
                    "rampart_gslb_dns_queries_total",
                    "gslb" => gslb.to_owned(),
                    "transport" => transport,
                    "rcode" => rcode
                )
            })
        };
        Self {
            queries: [per("udp"), per("tcp")],
            truncated: metrics::counter!("rampart_gslb_dns_truncated_total", "gslb" => gslb.to_owned()),
            dropped: metrics::counter!("rampart_gslb_dns_dropped_total", "gslb" => gslb.to_owned()),
            client_subnet: metrics::counter!("rampart_gslb_dns_client_subnet_total", "gslb" => gslb.to_owned()),
            answers: sites
                .iter()
                .map(|s| {
                    metrics::counter!(
                        "rampart_gslb_dns_answers_total",
                        "gslb" => gslb.to_owned(),
                        "site" => s.clone()
                    )
                })
                .collect(),
        }
    }
}

/// Counters per configured name (labelled with its selector's name), then the responder's own.
#[derive(Debug)]
pub(crate) struct Stats {
    names: Box<[std::sync::Arc<str>]>,
    #[cfg(feature = "metrics")]
    labelled: Box<[Labelled]>,
}

impl Stats {
    /// `zones`: each name's selector name and site names (fallback last).
    pub(crate) fn new(label: &str, zones: impl Iterator<Item = (String, Vec<String>)>) -> Self {
        let zones: Vec<(String, Vec<String>)> = zones.collect();
        #[cfg(feature = "metrics")]
        let labelled = zones
            .iter()
            .map(|(g, sites)| Labelled::new(g, sites))
            .chain(std::iter::once(Labelled::new(label, &[])))
            .collect();
        Self {
            names: zones
                .iter()
                .map(|(g, _)| std::sync::Arc::from(g.as_str()))
                .chain(std::iter::once(std::sync::Arc::from(label)))
                .collect(),
            #[cfg(feature = "metrics")]
            labelled,
        }
    }

    /// The `gslb` label of a name (or of the responder).
    pub(crate) fn label<'a>(&'a self, zone: Option<usize>, fallback: &'a str) -> &'a str {
        zone.and_then(|z| self.names.get(z))
            .map_or(fallback, |n| &**n)
    }

    #[cfg(feature = "metrics")]
    fn get(&self, zone: Option<usize>) -> Option<&Labelled> {
        match zone {
            Some(z) => self.labelled.get(z),
            None => self.labelled.last(),
        }
    }

    #[inline]
    pub(crate) fn query(&self, zone: Option<usize>, transport: Transport, rcode: Rcode) {
        #[cfg(feature = "metrics")]
        if let Some(l) = self.get(zone) {
            let t = match transport {
                Transport::Udp => 0,
                Transport::Tcp => 1,
            };
            let r = RCODES.iter().position(|(c, _)| *c == rcode).unwrap_or(0);
            l.queries[t][r].increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (zone, transport, rcode);
    }

    #[inline]
    pub(crate) fn answer(&self, zone: usize, site: usize) {
        #[cfg(feature = "metrics")]
        if let Some(c) = self.labelled.get(zone).and_then(|l| l.answers.get(site)) {
            c.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (zone, site);
    }

    #[inline]
    pub(crate) fn truncated(&self, zone: Option<usize>) {
        #[cfg(feature = "metrics")]
        if let Some(l) = self.get(zone) {
            l.truncated.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = zone;
    }

    #[inline]
    pub(crate) fn dropped(&self) {
        #[cfg(feature = "metrics")]
        if let Some(l) = self.get(None) {
            l.dropped.increment(1);
        }
    }

    #[inline]
    pub(crate) fn client_subnet(&self, zone: usize) {
        #[cfg(feature = "metrics")]
        if let Some(l) = self.labelled.get(zone) {
            l.client_subnet.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = zone;
    }
}
