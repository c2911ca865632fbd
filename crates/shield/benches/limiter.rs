//! Hot-path costs of the edge checks: a limiter check against a table that has seen a
//! million distinct sources, the address+subnet edge check, a block-list lookup among
//! 10,000 rules, and a bot score.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shield::{
    BlockList, BotScoreConfig, Client, EdgeLimits, Gcra, Key, LimiterTable, LimitsConfig, ListKind, RequestSignals,
    SubnetPrefixes, score,
};

const NOW: Duration = Duration::from_secs(1_700_000_000);

fn v4(i: u32) -> IpAddr {
    IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes())
}

fn limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    let table = LimiterTable::new(1 << 18);
    let limit = Gcra::per_period(20, Duration::from_secs(1), 60).expect("limit");
    for i in 0..1_000_000 {
        table.check(Key::ip(v4(i)), &limit, NOW, 1);
    }
    let mut i = 0u32;
    g.bench_function("table_check_distinct_sources", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            table.check(Key::ip(v4(i)), &limit, NOW, 1)
        })
    });
    g.bench_function("table_check_same_source", |b| b.iter(|| table.check(Key::ip(v4(1)), &limit, NOW, 0)));
    let edge = EdgeLimits::new(&LimitsConfig::default()).expect("defaults");
    let mut j = 0u32;
    g.bench_function("edge_check_source_ip_and_subnet", |b| {
        b.iter(|| {
            j = j.wrapping_add(1);
            // Resolving the client is part of the edge's cost per request.
            let client = Client::new(black_box(v4(j)), SubnetPrefixes::default());
            edge.check_source(&client, NOW)
        })
    });
    g.finish();
}

fn blocklist(c: &mut Criterion) {
    let mut list = BlockList::new(100_000);
    for i in 0..10_000u32 {
        let net = shield::Cidr::new(v4(i), 16 + (i % 17) as u8).expect("cidr");
        let _ = list.insert(ListKind::Block, net, None, "", NOW);
        let v6 = IpAddr::from((u128::from(i) << 80 | 0x2001_0db8 << 96).to_be_bytes());
        let _ = list.insert(ListKind::Block, shield::Cidr::new(v6, 48).expect("cidr"), None, "", NOW);
    }
    let mut g = c.benchmark_group("blocklist_10k_rules");
    g.throughput(Throughput::Elements(1));
    let probe4: IpAddr = "198.51.100.7".parse().expect("ip");
    let probe6: IpAddr = "2001:db8:0:1:2:3:4:5".parse().expect("ip");
    g.bench_function("lookup_v4", |b| b.iter(|| list.lookup(black_box(probe4), NOW)));
    g.bench_function("lookup_v6", |b| b.iter(|| list.lookup(black_box(probe6), NOW)));
    g.finish();
}

fn botscore(c: &mut Criterion) {
    let config = BotScoreConfig::default();
    let headers = [
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("sec-ch-ua", r#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#),
    ];
    c.bench_function("botscore_chrome", |b| {
        b.iter(|| score(&RequestSignals::from_headers(black_box(headers), true), &config))
    });
}

criterion_group!(benches, limiter, blocklist, botscore);
criterion_main!(benches);
