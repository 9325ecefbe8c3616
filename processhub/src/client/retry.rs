//! The one retry and redirect policy of calls and stops: where to try next, whether an
//! answer is worth another try, and the pause before it, all within one deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::hub::{HubInner, Route};
use crate::node::NodeId;

/// One call's or stop's tries of one id, until its deadline (the hub's call timeout).
///
/// ```text
///  route() ─► try there ─► answer: done
///                       ├─► NotHere { owner } ─► moved(): the next try goes there at once
///                       ├─► NotFound ─► missing(): try again if the registry expects it
///                       └─► no connection, lost, ... ─► again(): back off, try again
/// ```
pub(crate) struct Retry<'a> {
    hub: &'a HubInner,
    id: &'a str,
    deadline: Instant,
    backoff: Backoff,
    /// The owner an answer named: the next try goes there.
    redirect: Option<NodeId>,
}

impl<'a> Retry<'a> {
    /// Tries of `id` through `hub`, from `now` until its call timeout.
    pub(crate) fn new(hub: &'a HubInner, id: &'a str, now: Instant) -> Self {
        let deadline = now + hub.call_timeout;
        Self {
            hub,
            id,
            deadline,
            backoff: Backoff::until(deadline),
            redirect: None,
        }
    }

    /// When the tries end.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Where to try now: the owner the last answer named, else where the local registry
    /// routes the id.
    pub(crate) fn route(&mut self) -> Route {
        match self.redirect.take() {
            Some(node) => Route::Remote(node),
            None => self.hub.route(self.id),
        }
    }

    /// `asked` answered that `owner` runs it (it moved): the next try goes there, at
    /// once. An answer naming itself (it is restarting the child) is a plain retry.
    pub(crate) fn moved(&mut self, asked: NodeId, owner: NodeId) {
        if owner != asked {
            self.redirect = Some(owner);
        }
    }

    /// `asked` does not have it: whether the registry expects it to appear somewhere (a
    /// restart or a move under way), so that another try may find it.
    pub(crate) fn missing(&self, asked: NodeId) -> bool {
        self.hub.retry_after_not_found(self.id, asked)
    }

    /// Before the next try: at once after a redirect, else after the backoff. False when
    /// the deadline is too close for another try.
    pub(crate) async fn again(&mut self) -> bool {
        if self.redirect.is_some() {
            return true;
        }
        self.backoff.wait().await
    }
}

/// The pause between two tries of a call, start or stop: from 1 ms, doubling up to
/// 50 ms, never past the deadline.
pub(crate) struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            next: Duration::from_millis(1),
            deadline,
        }
    }

    /// Sleeps before the next try; false (without sleeping) if it would end past the
    /// deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() + self.next >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_millis(50));
        true
    }
}
