//! The allow path of `Policy::decide` allocates nothing: it runs for every
//! login, and a login storm must not turn into allocator pressure.

use clinauth_policy::{Connectivity, Context, Evidence, Factor, Policy, Purpose, UnixTime};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn allow_path_does_not_allocate() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    let policy = Policy::from_toml(&text).unwrap();
    let now = UnixTime(1_800_000_000);
    let ctx = Context {
        roles: policy.role_set(["nurse"]),
        group: "ward",
        purpose: Purpose::Login,
        connectivity: Connectivity::Online,
        now,
        max_age: None,
    };
    let evidence = [
        Evidence::new(Factor::Badge, now),
        Evidence::new(Factor::ServerPin, now),
    ];
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let allowed = policy.decide(&ctx, &evidence).is_allow();
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(allowed);
    assert_eq!(after - before, 0, "the allow path allocated");

    // The counter works: the deny path builds its explanation.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let denied = !policy.decide(&ctx, &evidence[..1]).is_allow();
    assert!(denied);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before);
}
