//! Compile-time behaviour of the attribute macros and of the typed cache builders: `tests/ui/pass` must build, each
//! `tests/ui/fail` case must fail with exactly the `.stderr` beside it.
//!
//! The `.stderr` snapshots depend on the rustc version; regenerate them with
//! `TRYBUILD=overwrite cargo test -p actix-conditional-macros --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
