//! The configuration file: unknown keys and bad values are refused with the key named,
//! through the library and through `rampart-gateway --check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use rampart_gateway::config::GatewayConfig;

const VALID: &str =
    "[[routes]]\ncluster = \"shop\"\n[clusters.shop]\nendpoints = [\"127.0.0.1:8081\"]\n";

#[test]
fn an_unknown_key_is_refused_with_its_path() {
    let err = GatewayConfig::from_toml(&format!("{VALID}retires = 3\n")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("clusters.shop.retires: unknown field `retires`"),
        "{msg}"
    );
    let err =
        GatewayConfig::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
    assert!(
        err.to_string().starts_with("server.lisen: unknown field"),
        "{err}"
    );
}

#[test]
fn a_bad_value_is_refused_with_its_path_and_value() {
    let err = GatewayConfig::from_toml(&format!("{VALID}retries = 99\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "clusters.shop.retries: 99 is above the maximum of 10"
    );
    let err =
        GatewayConfig::from_toml(&format!("{VALID}connect_timeout = \"soon\"\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("clusters.shop.connect_timeout: \"soon\" is not a duration"),
        "{err}"
    );
    let err = GatewayConfig::from_toml("[[routes]]\ncluster = \"nowhere\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "routes[0].cluster: \"nowhere\" names no [clusters] table"
    );
    let err = GatewayConfig::from_toml("[clusters.shop]\nendpoints = [\"not an address\"]\n")
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("clusters.shop.endpoints[0]: \"not an address\""),
        "{err}"
    );
}

#[test]
fn defaults_fill_every_missing_key() {
    let config = GatewayConfig::from_toml(VALID).unwrap();
    let shop = &config.clusters["shop"];
    assert_eq!(shop.retries, 2);
    assert_eq!(shop.checks.path, "/healthz");
    assert!(!config.access_log.enabled);
    assert_eq!(config.routes[0].prefix, "/");
    let server = config.server.to_server_config("gateway").unwrap();
    assert_eq!(
        server.header_read_timeout(),
        std::time::Duration::from_secs(10)
    );
}

#[test]
fn the_example_configuration_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    GatewayConfig::from_toml(&text).unwrap();
}

#[test]
fn check_flag_exits_0_on_a_valid_file_and_1_naming_the_key_otherwise() {
    let dir = proxy_support::temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(&good, VALID).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart-gateway"))
        .arg("--check")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{VALID}retries = 99\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart-gateway"))
        .arg("--check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clusters.shop.retries: 99 is above the maximum of 10"),
        "{stderr}"
    );

    std::fs::write(
        &bad,
        format!("{VALID}[clusters.shop.breaker]\nfailure_rat = 5\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart-gateway"))
        .arg("--check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clusters.shop.breaker.failure_rat: unknown field"),
        "{stderr}"
    );
}
