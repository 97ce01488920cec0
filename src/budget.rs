//! A memory budget for work that could otherwise grow without bound: rendering a template.
//! minijinja's fuel counts instructions, not bytes (`x ~ x` in a loop doubles a string each
//! step), and it has no hook to stop an allocation. So the process's allocator counts what each
//! thread allocates while a budget is set on it, and [`bounded`] runs the work on a thread of its
//! own: work that would go over its budget is stopped there (the thread is parked for good,
//! holding no more than the budget) and reported, while the process goes on.
//!
//! The count is cumulative (every allocation adds, none subtracts), so it bounds the bytes the
//! work can copy as well as what it can hold: a loop that builds and drops large strings is
//! stopped too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The process's allocator: the system's, counting on threads with a budget.
pub struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    /// Bytes this thread may still allocate; `usize::MAX` when it has no budget.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Raised when this thread's budget runs out.
    static OVER: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Charges `size` bytes to this thread's budget, parking it for good when the budget is spent.
/// Touches only constant-initialized thread-locals and makes no allocation itself.
#[allow(unsafe_code)]
fn charge(size: usize) {
    let left = LEFT.with(Cell::get);
    if left == usize::MAX {
        return;
    }
    if size <= left {
        LEFT.with(|l| l.set(left - size));
        return;
    }
    let over = OVER.with(Cell::get);
    if !over.is_null() {
        // SAFETY: the thread running the work owns the flag's Arc until its work returns, and
        // its work never returns from here.
        unsafe { (*over).store(true, Ordering::SeqCst) };
    }
    loop {
        // Parked for good: the caller has been told, and this thread's memory is bounded.
        // pause(2), not thread::park: nothing here may allocate.
        // SAFETY: pause has no preconditions; it returns only after a signal handler ran.
        unsafe { libc::pause() };
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting only reads and
// writes constant-initialized thread-locals, and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The work went over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub budget: usize,
    /// False when it was not tried: the process had stopped [`MAX_STOPPED`] already.
    pub tried: bool,
}

/// A stopped thread keeps what it had allocated (an allocator may not unwind, so nothing frees
/// it): after this many, the process runs no more bounded work, so that what it holds stays
/// bounded too (at most this many budgets).
pub const MAX_STOPPED: usize = 4;

static STOPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `work` on a thread of its own that may allocate at most `budget` bytes in all. `Err`
/// when it went over (it is stopped there, its thread parked), panicked, or when this process
/// has stopped [`MAX_STOPPED`] such threads already.
pub fn bounded<T: Send + 'static>(
    budget: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Exceeded> {
    if STOPPED.load(Ordering::SeqCst) >= MAX_STOPPED {
        return Err(Exceeded {
            budget,
            tried: false,
        });
    }
    let over = Arc::new(AtomicBool::new(false));
    let flag = over.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("lifeboat-bounded".into())
        .spawn(move || {
            // `flag` lives until this closure returns, which a parked thread never does.
            OVER.with(|o| o.set(Arc::as_ptr(&flag)));
            LEFT.with(|l| l.set(budget));
            let result = work();
            LEFT.with(|l| l.set(usize::MAX));
            OVER.with(|o| o.set(std::ptr::null()));
            let _ = tx.send(result);
            drop(flag);
        });
    if spawned.is_err() {
        return Err(Exceeded {
            budget,
            tried: false,
        });
    }
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(5)) {
            Ok(result) => return Ok(result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if over.load(Ordering::SeqCst) {
                    STOPPED.fetch_add(1, Ordering::SeqCst);
                    return Err(Exceeded {
                        budget,
                        tried: true,
                    });
                }
            }
            // It panicked.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Exceeded {
                    budget,
                    tried: true,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_its_budget_returns_and_work_beyond_it_is_stopped() {
        assert_eq!(bounded(1 << 20, || vec![0u8; 1000].len()), Ok(1000));
        let doubling = bounded(8 << 20, || {
            let mut s = String::from("x");
            for _ in 0..64 {
                s = format!("{s}{s}");
            }
            s.len()
        });
        assert_eq!(
            doubling,
            Err(Exceeded {
                budget: 8 << 20,
                tried: true
            })
        );
        // Building and dropping large values counts too: the budget bounds the copying.
        let churn = bounded(8 << 20, || {
            for _ in 0..1000 {
                drop(vec![1u8; 1 << 20]);
            }
        });
        assert!(churn.is_err());
        // This thread has no budget, and the process goes on.
        assert_eq!(vec![0u8; 64 << 20].len(), 64 << 20);
    }
}
