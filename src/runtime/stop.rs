//! A shard-local, one-shot stop signal: every task of a shard can await
//! [`StopSignal::stopped`]; [`StopSignal::stop`] wakes them all at once.
//!
//! Single-threaded by design (`Rc`, `Cell`): it lives on one glommio
//! executor and costs no atomic operation.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One-shot broadcast "stop now" for the tasks of one shard.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopped: Cell<bool>,
    /// Waker slots; `None` slots are free and listed in `free`.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Signal stop and wake every waiter. Idempotent.
    pub fn stop(&self) {
        if self.inner.stopped.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.inner.waiters.borrow_mut());
        self.inner.free.borrow_mut().clear();
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }

    /// A future that completes once [`stop`](Self::stop) has been called.
    pub fn stopped(&self) -> Stopped {
        Stopped {
            inner: self.inner.clone(),
            slot: None,
        }
    }
}

/// Future returned by [`StopSignal::stopped`].
pub struct Stopped {
    inner: Rc<Inner>,
    slot: Option<usize>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.stopped.get() {
            self.slot = None;
            return Poll::Ready(());
        }
        let inner = self.inner.clone();
        let mut waiters = inner.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut waiters[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            None => {
                let i = match inner.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if !self.inner.stopped.get() {
                if let Some(entry) = self.inner.waiters.borrow_mut().get_mut(i) {
                    *entry = None;
                    self.inner.free.borrow_mut().push(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn stop_wakes_all_waiters_and_later_waits_complete_at_once() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let stop = StopSignal::new();
            let done = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let (stop, done) = (stop.clone(), done.clone());
                tasks.push(glommio::spawn_local(async move {
                    stop.stopped().await;
                    done.set(done.get() + 1);
                }));
            }
            // Let them all register.
            glommio::executor().yield_task_queue_now().await;
            assert_eq!(done.get(), 0);
            assert!(!stop.is_stopped());
            stop.stop();
            for t in tasks {
                t.await;
            }
            assert_eq!(done.get(), 3);
            stop.stopped().await;
        });
    }

    #[test]
    fn dropped_waiters_free_their_slot() {
        let stop = StopSignal::new();
        let waker =
            futures_lite::future::block_on(future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10 {
            let mut f = stop.stopped();
            assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        }
        assert_eq!(stop.inner.waiters.borrow().len(), 1);
        stop.stop();
        let mut f = stop.stopped();
        assert!(Pin::new(&mut f).poll(&mut cx).is_ready());
    }
}
