//! The server's series, through the `metrics` facade; every one carries the server's name
//! as its `server` label. Handles are resolved once per server, not per connection.

use metrics::{Counter, Gauge};

/// Connections open now (gauge).
pub const CONNECTIONS_OPEN: &str = "rampart_gateway_connections_open";
/// Connections accepted (counter).
pub const CONNECTIONS_ACCEPTED: &str = "rampart_gateway_connections_accepted_total";
/// Connections the server closed because a timeout expired (counter), labelled
/// `timeout="header_read" | "keep_alive" | "body_read" | "send"`.
pub const CONNECTIONS_TIMED_OUT: &str = "rampart_gateway_connections_timed_out_total";
/// `408 Request Timeout` answers sent (counter).
pub const REQUEST_TIMEOUTS_ANSWERED: &str = "rampart_gateway_request_timeout_responses_total";
/// Times the server stopped accepting because `max_connections` were open (counter).
pub const CONNECTION_LIMIT_REACHED: &str = "rampart_gateway_connection_limit_reached_total";
/// Failed `accept` calls, such as `EMFILE` (counter).
pub const ACCEPT_ERRORS: &str = "rampart_gateway_accept_errors_total";

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) open: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) header_timeouts: Counter,
    pub(crate) idle_timeouts: Counter,
    pub(crate) body_timeouts: Counter,
    pub(crate) send_timeouts: Counter,
    pub(crate) answered_408: Counter,
    pub(crate) limit_reached: Counter,
    pub(crate) accept_errors: Counter,
}

impl Metrics {
    pub(crate) fn new(server: &str) -> Self {
        let label = [("server", server.to_owned())];
        let timed_out = |timeout: &'static str| metrics::counter!(CONNECTIONS_TIMED_OUT, "server" => server.to_owned(), "timeout" => timeout);
        Self {
            open: metrics::gauge!(CONNECTIONS_OPEN, &label),
            accepted: metrics::counter!(CONNECTIONS_ACCEPTED, &label),
            header_timeouts: timed_out("header_read"),
            idle_timeouts: timed_out("keep_alive"),
            body_timeouts: timed_out("body_read"),
            send_timeouts: timed_out("send"),
            answered_408: metrics::counter!(REQUEST_TIMEOUTS_ANSWERED, &label),
            limit_reached: metrics::counter!(CONNECTION_LIMIT_REACHED, &label),
            accept_errors: metrics::counter!(ACCEPT_ERRORS, &label),
        }
    }
}
