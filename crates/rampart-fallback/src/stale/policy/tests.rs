use super::*;

fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

const LIMITS: Limits = Limits {
    default_window: Duration::from_secs(60),
    max_window: Duration::from_secs(3600),
    max_entry_bytes: 1000,
};

fn p_with(
    names: &VaryNames,
    status: u16,
    req: &[(&'static str, &'static str)],
    resp: &[(&'static str, &'static str)],
) -> Result<StorePlan, NotStored> {
    let req = hm(req);
    plan(
        RequestFacts::of(&req),
        &names.capture(&req),
        names,
        StatusCode::from_u16(status).unwrap(),
        &hm(resp),
        LIMITS,
    )
}

fn p(
    req: &[(&'static str, &'static str)],
    resp: &[(&'static str, &'static str)],
) -> Result<StorePlan, NotStored> {
    p_with(&VaryNames::default(), 200, req, resp)
}

#[test]
fn parses_directives() {
    let cc = CacheControl::parse(&hm(&[
        ("cache-control", "Max-Age=10, stale-if-error=\"30\""),
        ("cache-control", "public"),
    ]));
    assert_eq!(cc.max_age, Some(10));
    assert_eq!(cc.stale_if_error, Some(30));
    assert!(cc.public);
    assert_eq!(cc.freshness(), Duration::from_secs(10));
    let cc = CacheControl::parse(&hm(&[("cache-control", "max-age=banana")]));
    assert_eq!(cc.max_age, Some(0));
    let cc = CacheControl::parse(&hm(&[(
        "cache-control",
        "no-cache=\"set-cookie, x\", max-age=7",
    )]));
    assert!(cc.no_cache);
    assert_eq!(cc.max_age, Some(7), "a quoted comma does not split");
    let cc = CacheControl::parse(&hm(&[("cache-control", "max-age = 5 ,public")]));
    assert_eq!(cc.max_age, Some(5));
    assert!(cc.public);
    let cc = CacheControl::parse(&hm(&[(
        "cache-control",
        "  NO-STORE ,s-maxage=99999999999999999999999,,private=\"set-cookie\"",
    )]));
    assert!(cc.no_store && cc.private);
    assert_eq!(cc.s_maxage, Some(u64::MAX));
    assert_eq!(delta_seconds(b""), 0);
    assert_eq!(delta_seconds(b"-1"), 0);
}

#[test]
fn windows() {
    assert_eq!(p(&[], &[]).unwrap().usable_for, Duration::from_secs(60));
    assert_eq!(
        p(&[], &[("cache-control", "max-age=10, stale-if-error=20")])
            .unwrap()
            .usable_for,
        Duration::from_secs(30)
    );
    assert_eq!(
        p(&[], &[("cache-control", "stale-if-error=99999")])
            .unwrap()
            .usable_for,
        Duration::from_secs(3600)
    );
    assert_eq!(
        p(&[], &[("cache-control", "stale-if-error=0")]).unwrap_err(),
        NotStored::NoWindow
    );
}

#[test]
fn refusals() {
    assert_eq!(
        p(&[], &[("cache-control", "no-store")]).unwrap_err(),
        NotStored::NoStore
    );
    assert_eq!(
        p(&[("cache-control", "no-store")], &[]).unwrap_err(),
        NotStored::NoStore
    );
    assert_eq!(
        p(&[], &[("cache-control", "private, max-age=9")]).unwrap_err(),
        NotStored::Private
    );
    assert_eq!(
        p(&[], &[("set-cookie", "a=b")]).unwrap_err(),
        NotStored::SetCookie
    );
    assert_eq!(
        p(&[], &[("vary", "accept, *")]).unwrap_err(),
        NotStored::VaryStar
    );
    assert_eq!(
        p(&[("authorization", "x")], &[]).unwrap_err(),
        NotStored::Authorization
    );
    assert!(p(&[("authorization", "x")], &[("cache-control", "public")]).is_ok());
    assert_eq!(
        p(&[], &[("cache-control", "no-cache")]).unwrap_err(),
        NotStored::Revalidate
    );
    assert!(
        p(
            &[],
            &[("cache-control", "must-revalidate, stale-if-error=5")]
        )
        .is_ok()
    );
    assert_eq!(
        p(&[], &[("content-length", "1001")]).unwrap_err(),
        NotStored::TooLarge
    );
    let names = VaryNames::default();
    assert_eq!(
        p_with(&names, 206, &[], &[("cache-control", "max-age=60")]).unwrap_err(),
        NotStored::Status
    );
}

#[test]
fn statuses() {
    let names = VaryNames::default();
    for code in [200, 203, 204, 300, 301, 308] {
        assert!(p_with(&names, code, &[], &[]).is_ok(), "{code}");
    }
    // Explicitly cacheable (RFC 9111 §3): other 2xx/3xx with freshness or `public`.
    for code in [201, 302, 307] {
        assert_eq!(
            p_with(&names, code, &[], &[]).unwrap_err(),
            NotStored::Status,
            "{code}"
        );
        assert!(
            p_with(&names, code, &[], &[("cache-control", "max-age=5")]).is_ok(),
            "{code}"
        );
        assert!(
            p_with(
                &names,
                code,
                &[],
                &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]
            )
            .is_ok(),
            "{code}"
        );
    }
    // Never: partial, not modified, errors (even when marked cacheable).
    for code in [206, 304, 404, 410, 500, 503] {
        assert_eq!(
            p_with(
                &names,
                code,
                &[],
                &[("cache-control", "public, max-age=60")]
            )
            .unwrap_err(),
            NotStored::Status,
            "{code}"
        );
    }
}

#[test]
fn vary_selects_variants() {
    let names = VaryNames::default();
    let req = [("accept-language", "de")];
    let resp = [("vary", "Accept-Language, accept-encoding")];
    // First sight of these names: registered, not stored (their values were not kept).
    assert_eq!(
        p_with(&names, 200, &req, &resp).unwrap_err(),
        NotStored::VaryNotCaptured
    );
    let plan = p_with(&names, 200, &req, &resp).unwrap();
    assert_eq!(plan.vary.len(), 2);
    let cap = |pairs: &[(&'static str, &'static str)]| names.capture(&hm(pairs));
    assert!(vary_matches(&plan.vary, &cap(&[("accept-language", "de")])));
    assert!(!vary_matches(
        &plan.vary,
        &cap(&[("accept-language", "fr")])
    ));
    assert!(!vary_matches(
        &plan.vary,
        &cap(&[("accept-language", "de"), ("accept-encoding", "gzip")])
    ));
    // A request captured before a name was registered never matches a variant using it.
    assert!(!vary_matches(&plan.vary, &[]));
    // `Vary: *` is never stored, wherever the star is.
    assert_eq!(
        p_with(
            &names,
            200,
            &req,
            &[("vary", "accept-language"), ("vary", "*")]
        )
        .unwrap_err(),
        NotStored::VaryStar
    );
}

#[test]
fn vary_names_are_bounded() {
    let names = VaryNames::default();
    let many: Vec<HeaderName> = (0..MAX_VARY_NAMES + 3)
        .map(|i| HeaderName::try_from(format!("x-v{i}")).unwrap())
        .collect();
    for n in &many {
        let _ = names.slot_or_register(n);
    }
    assert_eq!(names.capture(&HeaderMap::new()).len(), MAX_VARY_NAMES);
    assert!(names.slot_or_register(&many[MAX_VARY_NAMES]).is_none());
    assert_eq!(names.slot_or_register(&many[3]), Some(3));
}

#[test]
fn request_facts() {
    let f = RequestFacts::of(&hm(&[("cache-control", "max-age=0, No-Store")]));
    assert!(f.no_store && !f.authorization);
    let f = RequestFacts::of(&hm(&[("authorization", "Bearer x")]));
    assert!(!f.no_store && f.authorization);
}

#[test]
fn strips_hop_by_hop() {
    let mut h = hm(&[
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("age", "3"),
        ("etag", "\"a\""),
        ("transfer-encoding", "chunked"),
    ]);
    strip_for_storage(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("etag"));
}
