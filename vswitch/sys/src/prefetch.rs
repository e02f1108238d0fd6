//! The cache prefetch hint the tables use for their batched lookups (hash a burst's keys,
//! prefetch every slot, then probe). It is here because the intrinsic is `unsafe` to call,
//! and this crate is the only one allowed `unsafe`; it reads and writes nothing.

/// Brings the cache line holding `p` towards the CPU: a hint only, whatever `p` is.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and has no architectural effect,
    // whatever the address (the tables pass one inside a live allocation).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
