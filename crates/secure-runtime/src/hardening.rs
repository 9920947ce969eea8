//! Process hardening: no core dumps, secrets in locked memory.
//!
//! The only `unsafe` in the workspace: three libc calls with no pointer
//! arguments beyond a region this process owns.
#![allow(unsafe_code)]

use std::io;

/// Disables core dumps: `RLIMIT_CORE` to 0 and `PR_SET_DUMPABLE` off, so a
/// crash or a signal never writes the key set to disk and same-uid
/// processes cannot ptrace-attach.
pub fn disable_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one rlimit struct that lives on this stack frame.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether core dumps are off for this process (for tests and the start-up log).
pub fn core_dumps_disabled() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: getrlimit writes one rlimit struct that lives on this stack frame.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } == 0;
    ok && lim.rlim_cur == 0
}

/// Locks the pages holding `region` into RAM so they are never swapped out.
/// The pages stay locked until the process exits.
pub fn lock_memory(region: &[u8]) -> io::Result<()> {
    if region.is_empty() {
        return Ok(());
    }
    // SAFETY: the pointer and length describe memory borrowed for this call;
    // mlock only changes the paging of the pages that contain it.
    if unsafe { libc::mlock(region.as_ptr().cast(), region.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
