//! Compile-time checks of `#[step]` and `#[pipeline]`: what compiles, and what
//! fails with an error at the user's code that says what to do.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
