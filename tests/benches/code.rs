//! Micro-benchmarks of what every Mint does per code (draw it, hash it, seal
//! it) and what every Redeem and CheckCode does first (parse what the user
//! typed, hash it for the lookup). `cargo bench --bench code`; under `cargo
//! test --all-targets` each runs once as a test. Figures: docs/performance.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use invitations::crypto::secret::Secrets;
use invitations::crypto::vault::{Purpose, Vault};
use invitations::domain::code::{CodeGenerator, DEFAULT_RANDOM_SYMBOLS, InvitationCode};

fn codes(c: &mut Criterion) {
    let generator = CodeGenerator::new(DEFAULT_RANDOM_SYMBOLS).expect("the default length is valid");
    let code = generator.generate().expect("OS random source");
    let typed = code.display("inv").to_lowercase();
    let mistyped = {
        let mut s = code.as_str().to_owned();
        let swapped = if s.starts_with('2') { "3" } else { "2" };
        s.replace_range(0..1, swapped);
        s
    };
    c.bench_function("code/generate", |b| b.iter(|| generator.generate().expect("OS random source")));
    c.bench_function("code/parse canonical", |b| b.iter(|| InvitationCode::parse(black_box(code.as_str()), "")));
    c.bench_function("code/parse typed (prefix, dashes, lower case)", |b| {
        b.iter(|| InvitationCode::parse(black_box(&typed), "INV"))
    });
    c.bench_function("code/parse mistyped (check symbol)", |b| {
        b.iter(|| InvitationCode::parse(black_box(&mistyped), "").expect_err("a substitution is caught"))
    });
    c.bench_function("code/display form", |b| b.iter(|| black_box(&code).display("INV")));

    let secrets = Secrets::parse("0123456789abcdef0123456789abcdef-bench", &[]).expect("a valid secret");
    let vault = Vault::new(&secrets);
    let id = uuid::Uuid::now_v7();
    c.bench_function("vault/lookup hash of a code", |b| {
        b.iter(|| vault.hash(Purpose::Code, black_box(code.as_str().as_bytes())))
    });
    c.bench_function("vault/seal a code", |b| {
        b.iter(|| vault.seal(id.as_bytes(), black_box(code.as_str().as_bytes())).expect("seal"))
    });
    let sealed = vault.seal(id.as_bytes(), code.as_str().as_bytes()).expect("seal");
    c.bench_function("vault/open a sealed code", |b| {
        b.iter(|| vault.open(sealed.key_id, id.as_bytes(), black_box(&sealed.bytes)).expect("opens"))
    });
}

criterion_group!(benches, codes);
criterion_main!(benches);
