//! Micro-benchmarks of the wire crate's hot paths: what every relayed line
//! and every session request costs before any I/O. `make bench-wire`
//! (or `cargo bench -p tether-wire`); numbers, never thresholds.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tether_wire::{
    accepts_persistent, parse_session_received, ClientControl, LineReader, ReplayWindow, SessionId,
};

/// 64 lines of 60 bytes each, as a worker writes a burst.
fn burst() -> Vec<u8> {
    (0..64)
        .flat_map(|i| format!("{i:04} {}\n", "x".repeat(54)).into_bytes())
        .collect()
}

fn line_framing(c: &mut Criterion) {
    let data = burst();
    let mut g = c.benchmark_group("line_framing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("64 lines in one read", |b| {
        let mut reader = LineReader::new(64 * 1024);
        b.iter(|| {
            reader.push(black_box(&data));
            let mut n = 0;
            while let Ok(Some(line)) = reader.next_line() {
                n += line.len();
            }
            n
        })
    });
    g.bench_function("64 lines in 7-byte reads", |b| {
        let mut reader = LineReader::new(64 * 1024);
        b.iter(|| {
            let mut n = 0;
            for piece in data.chunks(7) {
                reader.push(black_box(piece));
                while let Ok(Some(line)) = reader.next_line() {
                    n += line.len();
                }
            }
            n
        })
    });
    g.finish();
}

fn replay_window(c: &mut Criterion) {
    let line = format!("{}\n", "y".repeat(59));
    let mut g = c.benchmark_group("replay_window");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push with eviction (256 KiB window)", |b| {
        let mut w = ReplayWindow::new(256 * 1024);
        b.iter(|| w.push(black_box(line.as_bytes())))
    });
    g.bench_function("push then ack each line", |b| {
        let mut w = ReplayWindow::new(256 * 1024);
        b.iter(|| {
            w.push(black_box(line.as_bytes()));
            w.ack(w.sent());
        })
    });
    g.bench_function("replay 1000 lines after a resume", |b| {
        b.iter_batched(
            || {
                let mut w = ReplayWindow::new(256 * 1024);
                for _ in 0..1000 {
                    w.push(line.as_bytes());
                }
                w
            },
            |mut w| {
                w.start_replay(0);
                let mut n = 0;
                while let Some(l) = w.next_replay() {
                    n += l.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn header_codecs(c: &mut Criterion) {
    let accepted = vec!["application/x-persistent".to_string()];
    let sid = SessionId::from_random([7; 24]);
    let text = sid.as_str().to_owned();
    let mut g = c.benchmark_group("header_codecs");
    g.bench_function("Accept with the persistent type among others", |b| {
        let values: [&[u8]; 1] = [b"text/html, application/x-persistent;q=0.9, */*;q=0.1"];
        b.iter(|| accepts_persistent(black_box(&values), &accepted))
    });
    g.bench_function("Session-Received", |b| {
        b.iter(|| parse_session_received(black_box(b"18446744073709551")))
    });
    g.bench_function("SessionID parse and constant-time compare", |b| {
        b.iter(|| {
            let parsed = SessionId::parse(black_box(text.as_bytes())).unwrap();
            parsed.ct_eq(&sid)
        })
    });
    let record = format!("sid={text}&received=123456");
    g.bench_function("WebSocket resume record", |b| {
        b.iter(|| ClientControl::parse(black_box(record.as_bytes())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, line_framing, replay_window, header_codecs);
criterion_main!(benches);
