//! A fork-join pool for running one kernel's pieces at batch 1.
//!
//! A model runs as a chain of 50-120 kernels of 20 µs - 3 ms each, every one split into
//! `t` pieces. A general-purpose pool (rayon's `scope`) pays two cross-thread wake-ups per
//! kernel (the sleeping workers, then the caller, which only waits), each ~40-50 µs through
//! a futex on a VM. Here instead:
//!
//! - **The caller runs piece 0** itself, so a `t`-way split needs only `t - 1` workers and
//!   the caller is awake when the pieces finish.
//! - **Spin, then park.** After a piece a worker spins on its own epoch counter for
//!   [`SPIN`], longer than the usual gap between two kernels, so the next hand-off is one
//!   atomic store and one load; then it parks, so an idle model does not burn a core.
//!   Spinning yields to the OS scheduler between rounds, so it does not starve the thread
//!   it waits for when there are more threads than cores. Each side sets a "sleeping" flag
//!   before parking and the other side wakes it (a syscall) only if that flag is set: the
//!   fast path is pure atomics. The caller waits for the workers the same way.
//! - **Concurrent callers** (a `CompiledModel` is `Sync`): one run owns the workers at a
//!   time; a caller that finds them busy (`try_lock` fails, also for a nested call) runs all
//!   pieces itself, in order, rather than wait. The pieces and their indices are the same
//!   either way, so results do not depend on who ran them.
//! - **Panics** in a piece are caught; the run still waits for every piece (they borrow the
//!   caller's closure), then resumes the first panic on the caller.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker (or the waiting caller) spins before parking. Gaps within one
/// model run (uneven pieces, single-unit kernels run on the caller alone) often exceed
/// 100 µs: with 100 µs a 2-thread resnet50 run parked ~30 times, with 1 ms almost never.
const SPIN: Duration = Duration::from_millis(1);

/// A slot's epoch value telling its worker to exit.
const SHUTDOWN: u64 = u64::MAX;

type Piece<'a> = dyn Fn(usize) + Sync + 'a;

/// One worker's mailbox, on its own cache lines so spinning workers do not share one.
#[repr(align(128))]
struct Slot {
    /// Bumped by the submitter to hand this worker a piece of the current job.
    epoch: AtomicU64,
    /// Set by the worker before it parks, cleared after.
    sleeping: AtomicBool,
}

#[derive(Default)]
struct Caller {
    sleeping: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

struct Shared {
    slots: Box<[Slot]>,
    /// The current job; written only by the run holding `submit` while no worker runs a
    /// piece, read by workers between seeing their epoch bumped and decrementing `pending`.
    job: UnsafeCell<Option<&'static Piece<'static>>>,
    /// Worker pieces of the current job not yet finished.
    pending: AtomicUsize,
    caller: Caller,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is the only non-`Sync` field; the protocol on it (see its comment and
// `Pool::run`) orders every write after all reads of the previous value and before the
// Release store that lets workers read the new one.
unsafe impl Sync for Shared {}

/// A pool of `threads - 1` persistent workers plus the calling thread.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the run that owns the workers.
    submit: Mutex<()>,
}

impl Pool {
    /// Starts `threads - 1` worker threads.
    pub(crate) fn new(threads: usize) -> std::io::Result<Pool> {
        let n = threads.max(1) - 1;
        let slots = (0..n)
            .map(|_| Slot {
                epoch: AtomicU64::new(0),
                sleeping: AtomicBool::new(false),
            })
            .collect();
        let shared = Arc::new(Shared {
            slots,
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            caller: Caller::default(),
            panic: Mutex::new(None),
        });
        let mut pool = Pool {
            shared: shared.clone(),
            workers: Vec::with_capacity(n),
            submit: Mutex::new(()),
        };
        for w in 0..n {
            let shared = shared.clone();
            // On error `pool` drops and joins the workers already started.
            pool.workers.push(
                thread::Builder::new()
                    .name(format!("bnc-pool-{}", w + 1))
                    .spawn(move || worker(&shared, w))?,
            );
        }
        Ok(pool)
    }

    /// Threads a run can use: the workers plus the caller.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)`, ..., `f(n - 1)`, piece 0 on the calling thread and the others on the
    /// workers (or all on the calling thread if another run holds the workers), and returns
    /// when all have finished; everything they wrote is then visible to the caller. A panic
    /// in a piece is resumed here once every piece is done.
    pub(crate) fn run(&self, n: usize, f: &Piece<'_>) {
        assert!(
            n <= self.threads(),
            "{n} pieces on {} threads",
            self.threads()
        );
        if n <= 1 {
            if n == 1 {
                f(0);
            }
            return;
        }
        let guard = match self.submit.try_lock() {
            Ok(g) => g,
            // A panic only ever unwinds from a finished run: the state is consistent.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..n).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: workers read
        // the reference between their epoch bump below and their `pending` decrement, and
        // we return only after `pending` is back to 0 (also when piece 0 panics).
        let job = unsafe { std::mem::transmute::<&Piece<'_>, &'static Piece<'static>>(f) };
        // SAFETY: we hold `submit`, and the previous run left `pending == 0` (seen with
        // Acquire, and ordered before us by `submit`), so no worker reads `job` now.
        unsafe { *s.job.get() = Some(job) };
        s.pending.store(n - 1, Ordering::Relaxed);
        for (slot, w) in s.slots[..n - 1].iter().zip(&self.workers) {
            // SeqCst pairs with the worker's `sleeping` store + `epoch` load: either it
            // sees the new epoch or we see it asleep (and it releases `job`, `pending`).
            slot.epoch.fetch_add(1, Ordering::SeqCst);
            if slot.sleeping.load(Ordering::SeqCst) {
                w.thread().unpark();
            }
        }
        let mine = panic::catch_unwind(AssertUnwindSafe(|| f(0)));
        wait_done(s);
        // SAFETY: all pieces are done; clear the erased reference (same ordering as above).
        unsafe { *s.job.get() = None };
        let theirs = lock(&s.panic).take();
        drop(guard);
        if let Err(p) = mine {
            panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            panic::resume_unwind(p);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // `&mut self`: no run is in progress, every worker waits for its next epoch.
        for (slot, w) in self.shared.slots.iter().zip(&self.workers) {
            slot.epoch.store(SHUTDOWN, Ordering::SeqCst);
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            // Pieces' panics are caught, so a worker cannot have panicked.
            let _ = w.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spins for up to [`SPIN`] until `done()`; false if it did not happen.
fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return false;
        }
        // Costs ~1 µs when this core has nothing else to run; when the machine has more
        // runnable threads than cores, lets the thread we wait for (or anyone) run.
        thread::yield_now();
    }
}

/// The caller's wait for the workers' pieces: spin, then park until the last one wakes us.
fn wait_done(s: &Shared) {
    if spin_until(|| s.pending.load(Ordering::Acquire) == 0) {
        return;
    }
    *lock(&s.caller.thread) = Some(thread::current());
    s.caller.sleeping.store(true, Ordering::SeqCst);
    // SeqCst pairs with the last worker's `pending` decrement + `sleeping` load.
    while s.pending.load(Ordering::SeqCst) != 0 {
        thread::park();
    }
    s.caller.sleeping.store(false, Ordering::Relaxed);
}

fn worker(s: &Shared, w: usize) {
    let slot = &s.slots[w];
    let mut seen = 0;
    loop {
        let mut epoch = seen;
        if !spin_until(|| {
            epoch = slot.epoch.load(Ordering::Acquire);
            epoch != seen
        }) {
            slot.sleeping.store(true, Ordering::SeqCst);
            loop {
                epoch = slot.epoch.load(Ordering::SeqCst);
                if epoch != seen {
                    break;
                }
                thread::park();
            }
            slot.sleeping.store(false, Ordering::Relaxed);
        }
        if epoch == SHUTDOWN {
            return;
        }
        seen = epoch;
        // SAFETY: the submitter wrote `job` before bumping our epoch (Release, seen with
        // Acquire above) and keeps it, and the closure it points to, alive until `pending`
        // reaches 0, which needs our decrement below.
        let f = unsafe { (*s.job.get()).expect("pool job") };
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(w + 1))) {
            lock(&s.panic).get_or_insert(p);
        }
        // From here on `job` may be replaced; only the wake-up below remains. A late
        // wake-up may hit a later run's caller: harmless, it parks in a loop.
        if s.pending.fetch_sub(1, Ordering::SeqCst) == 1
            && s.caller.sleeping.load(Ordering::SeqCst)
            && let Some(t) = lock(&s.caller.thread).as_ref()
        {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn every_piece_runs_once() {
        for threads in 1..=4 {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for n in 0..=threads {
                let c = counts(threads);
                pool.run(n, &|i| {
                    c[i].fetch_add(1, Ordering::Relaxed);
                });
                for (i, c) in c.iter().enumerate() {
                    assert_eq!(c.load(Ordering::Relaxed), u32::from(i < n), "n={n} i={i}");
                }
            }
        }
    }

    #[test]
    fn many_runs_results_visible() {
        let pool = Pool::new(3).unwrap();
        // Plain (non-atomic) writes by the pieces, read after `run` returns.
        let mut out = vec![0u64; 3];
        for r in 0..if cfg!(miri) { 50 } else { 10_000u64 } {
            let p = SendPtr(out.as_mut_ptr());
            pool.run(3, &|i| {
                // SAFETY: each piece writes only its own element of `out`, which outlives
                // the run.
                unsafe { *p.at(i) = r * 10 + i as u64 };
            });
            assert_eq!(out, [r * 10, r * 10 + 1, r * 10 + 2]);
        }
    }

    #[derive(Clone, Copy)]
    struct SendPtr(*mut u64);
    impl SendPtr {
        fn at(self, i: usize) -> *mut u64 {
            self.0.wrapping_add(i)
        }
    }
    // SAFETY: test-only; pieces write disjoint elements.
    unsafe impl Send for SendPtr {}
    // SAFETY: as above.
    unsafe impl Sync for SendPtr {}

    #[test]
    fn runs_after_workers_parked() {
        let pool = Pool::new(2).unwrap();
        for _ in 0..5 {
            thread::sleep(SPIN * 20);
            let c = counts(2);
            pool.run(2, &|i| {
                c[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(c.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn concurrent_callers() {
        let pool = Pool::new(3).unwrap();
        thread::scope(|sc| {
            for h in 0..4 {
                let pool = &pool;
                sc.spawn(move || {
                    for r in 0..if cfg!(miri) { 20 } else { 2_000 } {
                        let n = 1 + (h + r) % 3;
                        let c = counts(3);
                        pool.run(n, &|i| {
                            c[i].fetch_add(1, Ordering::Relaxed);
                        });
                        for (i, c) in c.iter().enumerate() {
                            assert_eq!(c.load(Ordering::Relaxed), u32::from(i < n));
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn drop_idle_and_busy() {
        drop(Pool::new(4).unwrap());
        let pool = Pool::new(2).unwrap();
        pool.run(2, &|_| {});
        drop(pool);
        let pool = Pool::new(2).unwrap();
        pool.run(2, &|_| {});
        thread::sleep(SPIN * 20);
        drop(pool);
    }

    #[test]
    fn panic_propagates() {
        let pool = Pool::new(3).unwrap();
        for bad in 0..3 {
            let c = counts(3);
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(3, &|i| {
                    c[i].fetch_add(1, Ordering::Relaxed);
                    if i == bad {
                        panic!("piece {i}");
                    }
                })
            }));
            let msg = r.unwrap_err().downcast::<String>().unwrap();
            assert_eq!(*msg, format!("piece {bad}"));
            assert!(c.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            // The pool still works afterwards.
            let c = counts(3);
            pool.run(3, &|i| {
                c[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(c.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }
}

#[cfg(test)]
mod overhead {
    use super::*;

    /// Per-run cost of an empty `run` (cargo test --release -p bnc-codegen --lib
    /// pool_overhead -- --ignored --nocapture).
    #[test]
    #[ignore]
    fn pool_overhead() {
        for threads in [2, 3] {
            let pool = Pool::new(threads).unwrap();
            for gap_us in [0u64, 20, 50, 100, 200, 500, 2000] {
                let runs = 2000;
                let mut total = Duration::ZERO;
                for _ in 0..runs {
                    if gap_us > 0 {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(gap_us) {}
                    }
                    let t = Instant::now();
                    pool.run(threads, &|_| {});
                    total += t.elapsed();
                }
                println!(
                    "threads={threads} gap={gap_us:5} us: {:8.2} us/run",
                    total.as_secs_f64() * 1e6 / runs as f64
                );
            }
        }
    }
}
