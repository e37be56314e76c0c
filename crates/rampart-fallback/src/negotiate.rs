//! Content negotiation on `Accept` (RFC 9110 §12.5.1), without allocating.
//!
//! The apology comes in three representations ([`Format`]): the HTML page, an RFC 9457
//! `application/problem+json` document, and `text/plain`. [`negotiate`] picks one from the
//! request's `Accept` header, honouring q-values and the "most specific range wins" rule:
//!
//! - `application/json` is answered with `application/problem+json` (RFC 9457 §3 documents are
//!   JSON; a client that takes JSON takes them);
//! - ties (for example `*/*`, `text/*`, or no `Accept` at all) go to the preferred format
//!   (HTML unless configured otherwise), then to the order HTML, problem+json, text;
//! - when nothing acceptable is on offer (`Accept: image/png`, or every range at `q=0`) the
//!   preferred format is served anyway: during an outage an apology the client did not ask for
//!   beats a `406 Not Acceptable`.
//!
//! ```
//! use http::HeaderValue;
//! use rampart_fallback::{Format, negotiate};
//!
//! let accept = HeaderValue::from_static("text/html;q=0.5, application/json");
//! assert_eq!(negotiate(Some(&accept), Format::Html), Format::Problem);
//! assert_eq!(negotiate(None, Format::Html), Format::Html);
//! let curl = HeaderValue::from_static("*/*");
//! assert_eq!(negotiate(Some(&curl), Format::Text), Format::Text);
//! ```

use std::fmt;

/// `true` for a gRPC `Content-Type`: `application/grpc`, alone or followed by `+format`
/// (`+proto`, `+json`) or parameters. gRPC-Web (`application/grpc-web…`) is not gRPC here: its
/// clients read statuses from the body.
///
/// ```
/// use rampart_fallback::negotiate::is_grpc_content_type;
/// assert!(is_grpc_content_type(b"application/grpc"));
/// assert!(is_grpc_content_type(b"application/grpc+proto"));
/// assert!(!is_grpc_content_type(b"application/grpc-web"));
/// assert!(!is_grpc_content_type(b"application/json"));
/// ```
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// One representation of the apology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `text/html; charset=utf-8`: the page.
    #[default]
    Html,
    /// `application/problem+json` (RFC 9457).
    Problem,
    /// `text/plain; charset=utf-8`.
    Text,
}

impl Format {
    /// All formats, in the default tie-breaking order.
    pub const ALL: [Format; 3] = [Format::Html, Format::Problem, Format::Text];

    /// The `Content-Type` this format is served with.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Problem => "application/problem+json",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// Specificity (0 = `*/*`, 1 = `type/*`, 2 = exact) of `range` for this format, or `None`
    /// when the range does not match it.
    fn matches(self, ty: &str, subtype: &str) -> Option<u8> {
        let (my_ty, my_subs): (&str, &[&str]) = match self {
            Format::Html => ("text", &["html"]),
            Format::Problem => ("application", &["problem+json", "json"]),
            Format::Text => ("text", &["plain"]),
        };
        if ty == "*" {
            // `*/subtype` is not a valid media range; treat `*/…` as `*/*`.
            return Some(0);
        }
        if !ty.eq_ignore_ascii_case(my_ty) {
            return None;
        }
        if subtype == "*" {
            return Some(1);
        }
        my_subs
            .iter()
            .any(|s| subtype.eq_ignore_ascii_case(s))
            .then_some(2)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// Parses a q-value (`0`, `0.5`, `1.000`) into thousandths; malformed values count as `1`.
fn parse_q(v: &str) -> u16 {
    let v = v.trim_ascii();
    let mut parts = v.splitn(2, '.');
    let whole = parts.next().unwrap_or("1");
    let frac = parts.next().unwrap_or("");
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return 1000,
    };
    let mut thousandths = 0u16;
    let mut scale = 100u16;
    for c in frac.bytes().take(3) {
        if !c.is_ascii_digit() {
            return 1000;
        }
        thousandths += u16::from(c - b'0') * scale;
        scale /= 10;
    }
    (whole + thousandths).min(1000)
}

/// Picks the apology's representation for an `Accept` header value (see the module docs).
///
/// `preferred` wins ties and is the answer when the header is absent, unreadable, or accepts
/// none of the formats.
pub fn negotiate(accept: Option<&http::HeaderValue>, preferred: Format) -> Format {
    let Some(accept) = accept else {
        return preferred;
    };
    // The values most clients send, recognised without parsing.
    match accept.as_bytes() {
        b"*/*" => return preferred,
        b"text/html" => return Format::Html,
        b"application/json" | b"application/problem+json" => return Format::Problem,
        b"text/plain" => return Format::Text,
        // Browsers list `text/html` first, without a q (so at q=1, which nothing beats):
        // when HTML is also the preference, the rest of the header cannot change the answer.
        v if preferred == Format::Html && v.starts_with(b"text/html,") => return Format::Html,
        _ => {}
    }
    let Ok(accept) = accept.to_str() else {
        return preferred;
    };
    // Per format: (specificity of the best-matching range, its q in thousandths).
    let mut best: [Option<(u8, u16)>; 3] = [None; 3];
    for range in accept.split(',') {
        let (media, params) = range.split_once(';').unwrap_or((range, ""));
        let media = media.trim_ascii();
        if media.is_empty() {
            continue;
        }
        let (ty, subtype) = media.split_once('/').unwrap_or((media, ""));
        let (ty, subtype) = (ty.trim_ascii(), subtype.trim_ascii());
        let mut q = 1000;
        if !params.is_empty() {
            for p in params.split(';') {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim_ascii().eq_ignore_ascii_case("q")
                {
                    q = parse_q(v);
                }
            }
        }
        for (i, f) in Format::ALL.iter().enumerate() {
            if let Some(spec) = f.matches(ty, subtype) {
                // The most specific matching range decides the format's q (RFC 9110 §12.5.1);
                // among equally specific ranges the highest q is kept.
                let better = match best[i] {
                    None => true,
                    Some((s, old_q)) => spec > s || (spec == s && q > old_q),
                };
                if better {
                    best[i] = Some((spec, q));
                }
            }
        }
    }
    let q_of = |f: Format| {
        let i = Format::ALL.iter().position(|x| *x == f).unwrap_or(0);
        best[i].map_or(0, |(_, q)| q)
    };
    let mut choice = preferred;
    let mut choice_q = q_of(preferred);
    for f in Format::ALL {
        let q = q_of(f);
        if q > choice_q {
            choice = f;
            choice_q = q;
        }
    }
    if choice_q == 0 { preferred } else { choice }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn n(accept: &'static str) -> Format {
        negotiate(Some(&HeaderValue::from_static(accept)), Format::Html)
    }

    #[test]
    fn common_clients() {
        assert_eq!(
            n("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        assert_eq!(n("application/json"), Format::Problem);
        assert_eq!(n("application/problem+json"), Format::Problem);
        assert_eq!(n("text/plain"), Format::Text);
        assert_eq!(n("*/*"), Format::Html);
        assert_eq!(n(""), Format::Html);
        assert_eq!(negotiate(None, Format::Problem), Format::Problem);
    }

    #[test]
    fn q_values_and_specificity() {
        assert_eq!(n("text/html;q=0.1, text/plain;q=0.9"), Format::Text);
        assert_eq!(
            n("text/*;q=0.5, text/html;q=0, application/*;q=0.2"),
            Format::Text
        );
        assert_eq!(n("application/json;q=0.3, */*;q=0.2"), Format::Problem);
        assert_eq!(n("text/html;q=0.001, application/json;q=0"), Format::Html);
        assert_eq!(n("TEXT/PLAIN; Q=1.0"), Format::Text);
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        for accept in [
            "*/*",
            "text/html",
            "application/json",
            "application/problem+json",
            "text/plain",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "text/html,text/html;q=0,application/json",
        ] {
            // A leading space defeats the exact match and goes through the parser.
            let padded = HeaderValue::from_str(&format!(" {accept}")).unwrap();
            let exact = HeaderValue::from_static(accept);
            for preferred in Format::ALL {
                assert_eq!(
                    negotiate(Some(&exact), preferred),
                    negotiate(Some(&padded), preferred),
                    "{accept} preferring {preferred:?}"
                );
            }
        }
    }

    #[test]
    fn nothing_acceptable_falls_back_to_preferred() {
        assert_eq!(n("image/png"), Format::Html);
        assert_eq!(n("text/html;q=0, */*;q=0"), Format::Html);
        assert_eq!(
            negotiate(Some(&HeaderValue::from_static("image/png")), Format::Text),
            Format::Text
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_header(accept in "[ -~]{0,80}") {
            if let Ok(v) = HeaderValue::from_str(&accept) {
                let _ = negotiate(Some(&v), Format::Text);
            }
        }

        #[test]
        fn the_highest_q_wins(qh in 1u16..=1000, qj in 1u16..=1000, qt in 1u16..=1000) {
            let accept = format!(
                "text/html;q={}, application/json;q={}, text/plain;q={}",
                q(qh), q(qj), q(qt)
            );
            let got = negotiate(Some(&HeaderValue::from_str(&accept).unwrap()), Format::Html);
            let best = qh.max(qj).max(qt);
            let want = if qh == best { Format::Html } else if qj == best { Format::Problem } else { Format::Text };
            proptest::prop_assert_eq!(got, want, "{}", accept);
        }
    }

    fn q(thousandths: u16) -> String {
        if thousandths == 1000 {
            "1".into()
        } else {
            format!("0.{thousandths:03}")
        }
    }

    #[test]
    fn parse_q_edges() {
        assert_eq!(parse_q("0"), 0);
        assert_eq!(parse_q("0.5"), 500);
        assert_eq!(parse_q("0.125"), 125);
        assert_eq!(parse_q("1.000"), 1000);
        assert_eq!(parse_q("banana"), 1000);
        assert_eq!(parse_q("0.9999"), 999);
    }
}
