//! A red team's attacks on what issue 23 hardened: each test is an attack, and passes when the
//! defence holds.

use crate::serve::Served;
use crate::serve_attacks::{hog, peak_rss};
use crate::support::WasmOci;

/// The header maps a guest makes the host hold are charged to `--max-memory`, but an
/// outgoing request's own strings are not: a guest that reuses one 1 MiB buffer as the
/// method name (`set-method`, `other`) of request after request, never sending one, makes
/// the host keep a copy per request (up to the resource cap, some 4 GiB per instance) while
/// its own memory stays at a few MiB.
#[test]
fn strings_of_outgoing_requests_a_guest_makes_the_host_hold_count_against_the_memory_budget() {
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-memory",
            "8MiB",
            "--max-concurrency",
            "1",
            hog().to_str().unwrap(),
        ],
    );
    let r = served.get("/methods?n=1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "set 1\n");
    let before = peak_rss(served.child.id());
    // Refused (a trap, 500) or done within the budget: either holds.
    let r = served.get("/methods?n=200");
    let grown = peak_rss(served.child.id()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "one request under an 8 MiB budget grew the server by {} MiB ({r:?}); log:\n{}",
        grown >> 20,
        served.stderr()
    );
}

/// What a guest writes into an outgoing body is copied into the host's buffer for it (one
/// chunk of up to 1 MiB per write, two in the channel) whether or not the response is ever
/// sent: a guest that makes response after response and fills each body's buffer makes the
/// host hold megabytes per response, outside its memory budget.
#[test]
fn outgoing_bodies_a_guest_fills_count_against_the_memory_budget() {
    let cli = WasmOci::new();
    let served = Served::start(
        &cli,
        &[
            "serve",
            "--max-memory",
            "8MiB",
            "--max-concurrency",
            "1",
            hog().to_str().unwrap(),
        ],
    );
    let r = served.get("/bodies?n=1");
    assert_eq!(r.status, 200, "{r:?}");
    let before = peak_rss(served.child.id());
    // Refused (a trap, 500) or done within the budget: either holds.
    let r = served.get("/bodies?n=100");
    let grown = peak_rss(served.child.id()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "one request under an 8 MiB budget grew the server by {} MiB ({r:?}, {:?}); log:\n{}",
        grown >> 20,
        r.text(),
        served.stderr()
    );
}
