//! A test whose external tool (`redis-server`, `nginx`, `chromium`, `varnishd`, `squid`) is
//! missing fails, so a green run means the test ran. Outside CI the user may opt out
//! explicitly with `ACTIX_CONDITIONAL_SKIP` (comma-separated tools, or `all`): the test then
//! says it skipped on the process's own stderr, which the harness's output capture does not
//! hide (`eprintln!` would be captured and shown only on failure).
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::Write as _;

/// The variable that lists the tools whose tests may skip.
pub(crate) const SKIP_VAR: &str = "ACTIX_CONDITIONAL_SKIP";

/// Called when `tool` is not installed: panics (fails the test) unless the user opted out of
/// it outside CI; then reports the skip where the harness does not hide it.
pub(crate) fn tool_missing(tool: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is not installed, and CI must run this test (.ci/run installs it: {install})"
    );
    let opted_out = std::env::var(SKIP_VAR).is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|skipped| skipped == tool || skipped == "all")
    });
    assert!(
        opted_out,
        "{tool} is not installed: `{install}`, or set {SKIP_VAR}={tool} to skip the tests that need it"
    );
    // Straight to the process's stderr: libtest captures only the print macros.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED ({SKIP_VAR}={tool}): {tool} is not installed; `{install}` to run this test !!!!!!!!"
    );
}
