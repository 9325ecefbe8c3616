//! The child: the contract `#[distributed]` implements (`component`), a child's life
//! asleep and awake (`life`), the erased form the hub holds (`erased`), and the table of
//! component types linked into the binary (`types`).

pub(crate) mod component;
pub(crate) mod erased;
pub(crate) mod lease;
pub(crate) mod life;
pub(crate) mod types;
