//! The timeline: the phases in order, the faults each one injects through the fleet's admin
//! API, and the shops' settings that let even the short run recover within a phase.

use serde_json::json;

use super::{region, tail};

/// One phase of the timeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct PhaseSpec {
    pub(super) name: &'static str,
    /// `(service, region, replica, fault)`; region and replica may be `"*"`.
    pub(super) faults: &'static [(&'static str, &'static str, Replica, &'static str)],
    /// Kill shop instance A mid-phase and restart it.
    pub(super) kill: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Replica {
    All,
    One(u32),
}

pub(super) const PHASES: &[PhaseSpec] = &[
    PhaseSpec {
        name: "baseline",
        faults: &[],
        kill: false,
    },
    PhaseSpec {
        name: "catalog-replica-down",
        faults: &[("catalog", "us-east", Replica::One(0), "down")],
        kill: false,
    },
    // One catalog replica of the active region answers 200 ms late, then one answers 429
    // with `Retry-After: 2` (see `tail`).
    PhaseSpec {
        name: tail::SLOW_REPLICA,
        faults: &[("catalog", "us-east", Replica::One(1), tail::SLOW_FAULT)],
        kill: false,
    },
    PhaseSpec {
        name: tail::RATE_LIMITED,
        faults: &[(
            "catalog",
            "us-east",
            Replica::One(2),
            tail::RATE_LIMITED_FAULT,
        )],
        kill: false,
    },
    PhaseSpec {
        name: "primary-region-down",
        faults: &[
            ("catalog", "us-east", Replica::All, "down"),
            ("checkout", "us-east", Replica::All, "down"),
            ("recommendations", "us-east", Replica::All, "down"),
        ],
        kill: false,
    },
    PhaseSpec {
        name: "checkout-down",
        faults: &[("checkout", "*", Replica::All, "down")],
        kill: false,
    },
    PhaseSpec {
        name: "everything-down",
        faults: &[
            ("catalog", "*", Replica::All, "down"),
            ("checkout", "*", Replica::All, "down"),
            ("recommendations", "*", Replica::All, "down"),
        ],
        kill: false,
    },
    PhaseSpec {
        name: "shop-killed",
        faults: &[],
        kill: true,
    },
    // The primary region's edge is SIGKILLed at 20 % of the phase and restarted at 90 %; the
    // load resolves the shop's name through the DNS responder (see `region`).
    PhaseSpec {
        name: region::PHASE,
        faults: &[],
        kill: false,
    },
    PhaseSpec {
        name: "recovery",
        faults: &[],
        kill: false,
    },
    // Open-loop load at --surge-rate (5 × --rate by default), the usual mix, a healthy fleet.
    PhaseSpec {
        name: SURGE,
        faults: &[],
        kill: false,
    },
];

/// The phase at `--surge-rate`.
pub(super) const SURGE: &str = "surge";

/// The shops' `[shop]` settings for a chaos run: pending orders are replayed within about a
/// second, open breakers probe again after 0.5 s (backing off to 3 s), and active checks run
/// every 0.5 s (a replica is back after two passed checks), so that even the short run sees
/// the recovery within a phase.
pub(super) const SHOP_SETTINGS: &str = concat!(
    "outbox_retry_base = \"100ms\"\n",
    "outbox_retry_max = \"1s\"\n",
    "outbox_lease = \"2s\"\n",
    "breaker_open_for = \"500ms\"\n",
    "health_interval = \"500ms\"\n",
);

/// The shops' settings: [`SHOP_SETTINGS`], with their concurrency limit off when `no_limit`.
pub(super) fn shop_settings(no_limit: bool) -> String {
    if no_limit {
        format!("{SHOP_SETTINGS}\n[limit]\nenabled = false\n")
    } else {
        SHOP_SETTINGS.to_owned()
    }
}

pub(super) fn fault_body(f: &(&str, &str, Replica, &str)) -> serde_json::Value {
    let replica = match f.2 {
        Replica::All => json!("*"),
        Replica::One(i) => json!(i),
    };
    // `fault` or `fault:parameter` (`slow:200ms`, `rate-limited:2s`).
    let (fault, param) = f.3.split_once(':').unwrap_or((f.3, ""));
    let mut body = json!({ "service": f.0, "region": f.1, "replica": replica, "fault": fault });
    match fault {
        "slow" => body["latency"] = json!(if param.is_empty() { "300ms" } else { param }),
        "rate-limited" if !param.is_empty() => body["retry_after"] = json!(param),
        _ => {}
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_SERVICES: [&str; 3] = ["catalog", "checkout", "recommendations"];

    #[test]
    fn fault_bodies_match_the_admin_api() {
        let b = fault_body(&("catalog", "us-east", Replica::One(0), "down"));
        assert_eq!(
            b,
            json!({"service": "catalog", "region": "us-east", "replica": 0, "fault": "down"})
        );
        let b = fault_body(&("checkout", "*", Replica::All, "slow"));
        assert_eq!(b["replica"], "*");
        assert_eq!(b["latency"], "300ms");
        let b = fault_body(&("catalog", "us-east", Replica::One(1), tail::SLOW_FAULT));
        assert_eq!(
            (&b["fault"], &b["latency"]),
            (&json!("slow"), &json!("200ms"))
        );
        let b = fault_body(&(
            "catalog",
            "us-east",
            Replica::One(2),
            tail::RATE_LIMITED_FAULT,
        ));
        assert_eq!(b["fault"], "rate-limited");
        assert_eq!(b["retry_after"], "2s");
        let mut parsed = 0;
        for p in PHASES {
            for f in p.faults {
                assert!(ALL_SERVICES.contains(&f.0), "{f:?}");
                // Every phase's fault is one the fleet's admin API takes.
                crate::fleet::FaultRequest::parse(fault_body(f).to_string().as_bytes(), 3).unwrap();
                parsed += 1;
            }
        }
        assert!(parsed >= 10);
    }
}
