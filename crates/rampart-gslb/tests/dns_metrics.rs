//! The responder's counters, captured by a local `metrics` recorder, over real UDP and TCP.
#![cfg(all(feature = "dns", feature = "metrics"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_server::proto::rr::{Name, RecordType};
use rampart_gslb::dns::{Addresses, DnsConfig, DnsGslb, DnsResponder};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_test_support::metrics::Captured;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const NAME: &str = "shop.example.";

fn query(name: &str, ecs: Option<&str>) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if let Some(subnet) = ecs {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        let subnet: ClientSubnet = subnet.parse().unwrap();
        e.options_mut().insert(EdnsOption::Subnet(subnet));
        m.set_edns(e);
    }
    m
}

/// Sends `bytes` from `socket` and waits for the reply with `id` (at most 2 s).
async fn exchange(socket: &UdpSocket, addr: SocketAddr, bytes: &[u8], id: u16) -> Message {
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("a reply within 2 s")
            .unwrap();
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.id == id {
            return reply;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_counted_under_the_selectors_name() {
    let many: Vec<IpAddr> = (0..60u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    let sites = Sites::builder()
        .site(Site::new("eu", Addresses::new(many)))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::builder().name("shop").build().unwrap(), sites);
    let config = DnsConfig::builder()
        .name(NAME, gslb)
        .max_answers(60)
        .udp_workers(1) // one datagram at a time: counts are final when the next reply arrives
        .label("edge-dns")
        .build()
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let captured = Captured::default();
    let dns = metrics::with_local_recorder(&captured, || {
        DnsResponder::serve(config, udp, Some(tcp)).unwrap()
    });
    let addr = dns.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // An answer (60 records: truncated at 512 bytes), with a client subnet.
    let q = query(NAME, Some("10.1.2.0/24"));
    let reply = exchange(&client, addr, &q.to_vec().unwrap(), q.metadata.id).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let q = query(NAME, None);
    let reply = exchange(&client, addr, &q.to_vec().unwrap(), q.metadata.id).await;
    assert!(reply.metadata.truncation);
    // Refused, FORMERR, and a datagram too short to answer.
    let q = query("other.example.", None);
    let reply = exchange(&client, addr, &q.to_vec().unwrap(), q.metadata.id).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    let header_only = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let reply = exchange(&client, addr, &header_only, 0x1234).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    client.send_to(&[1, 2, 3], addr).await.unwrap();
    let q = query(NAME, None);
    exchange(&client, addr, &q.to_vec().unwrap(), q.metadata.id).await;

    // Over TCP: two-byte length prefix (RFC 1035 §4.2.2).
    let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
    let q = query(NAME, None).to_vec().unwrap();
    stream
        .write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.unwrap();
    let reply = Message::from_vec(&body).unwrap();
    assert_eq!(reply.answers.len(), 60, "all records over TCP");
    assert!(!reply.metadata.truncation);

    let c = |key: &str| captured.counter(key);
    assert_eq!(
        c("rampart_gslb_dns_queries_total{gslb=shop,transport=udp,rcode=noerror}"),
        3
    );
    assert_eq!(
        c("rampart_gslb_dns_queries_total{gslb=shop,transport=tcp,rcode=noerror}"),
        1
    );
    assert_eq!(c("rampart_gslb_dns_answers_total{gslb=shop,site=eu}"), 4);
    assert_eq!(c("rampart_gslb_dns_truncated_total{gslb=shop}"), 2);
    assert_eq!(c("rampart_gslb_dns_client_subnet_total{gslb=shop}"), 1);
    assert_eq!(
        c("rampart_gslb_dns_queries_total{gslb=edge-dns,transport=udp,rcode=refused}"),
        1
    );
    assert_eq!(
        c("rampart_gslb_dns_queries_total{gslb=edge-dns,transport=udp,rcode=formerr}"),
        1
    );
    assert_eq!(c("rampart_gslb_dns_dropped_total{gslb=edge-dns}"), 1);
}
