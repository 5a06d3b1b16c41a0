//! MD5 for `ETagHasher::Md5`: the implementation the crate uses (RustCrypto's assembly
//! `md5-asm` on x86 and x86_64) against the pure-Rust `md-5`, on the bodies the other benches
//! use. OpenSSL's MD5, which Django's `hashlib.md5` runs, is measured beside them by
//! `python3 benches/md5_openssl.py` (the same sizes, best of its rounds).
//!
//! ```sh
//! cargo bench -p actix-conditional-benches --bench md5
//! python3 benches/md5_openssl.py
//! ```

use actix_conditional::__private::md5_digests;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("md5");
    for (label, len) in [("1KiB", 1024), ("32KiB", 32 * 1024), ("1MiB", 1024 * 1024)] {
        let data = body(len);
        group.throughput(Throughput::Bytes(len as u64));
        for (name, digest) in md5_digests() {
            group.bench_with_input(BenchmarkId::new(name, label), &data, |b, data| {
                b.iter(|| digest(std::hint::black_box(data)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
