//! Compile-pass and compile-fail cases of `#[distributed]`. Refresh the expected
//! output with `TRYBUILD=overwrite cargo test -p processhub-ui-tests` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
}
