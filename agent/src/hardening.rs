//! Process hardening at start: the agent handles PINs and session state, so
//! its memory must never reach swap or a core dump, and other processes of
//! the same user must not attach to it.
//!
//! `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` keeps every page the
//! agent touches in RAM (the PIN buffers on their way to the card
//! included) without faulting in untouched thread stacks, so resident memory
//! stays what the agent uses. `PR_SET_DUMPABLE 0` turns off core dumps and
//! ptrace by non-root processes.

/// What hardening achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    /// Memory locked (no swap).
    pub memory_locked: bool,
    /// Core dumps and ptrace off.
    pub not_dumpable: bool,
}

/// Locks memory and turns off dumps; reports what worked (as root both do).
pub fn harden() -> Hardened {
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    let locked =
        unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } == 0;
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integers only.
    let not_dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    Hardened {
        memory_locked: locked,
        not_dumpable,
    }
}
