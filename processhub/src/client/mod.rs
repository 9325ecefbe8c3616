//! The caller's side: what generated handles and constructors call (calls, starts,
//! stops), with one retry policy.

pub(crate) mod call;
pub(crate) mod held;
pub(crate) mod retry;
pub(crate) mod start;
pub(crate) mod stop;
pub(crate) mod ticks;
