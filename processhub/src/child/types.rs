//! The table of component types linked into this binary (linkme), read to start a type
//! by name.

use crate::child::component::{panic_message, Dispatch};
use crate::child::erased::{ChildCtx, ErasedChild};
use crate::child::life::{spawn_replaying, spawn_typed};
use crate::core::engine::{LoggedCall, TypeInfo};
use crate::core::item::StartFailure;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
/// Makes a child from its encoded state. A state handed over in a hot move runs
/// `#[on_handover_in]` now, as it is decoded (before the hub's lock is taken); the other
/// hooks run once its start is admitted (`ErasedChild::arrive`).
fn spawn_erased<T: Dispatch>(
    state: &[u8],
    args: ChildCtx,
    handed_over: bool,
) -> Result<Arc<dyn ErasedChild>, StartFailure> {
    let mut state: T = postcard::from_bytes(state)
        .map_err(|e| StartFailure::State(format!("start state: {e}")))?;
    if handed_over && T::HOT_MIGRATION {
        std::panic::catch_unwind(AssertUnwindSafe(|| state.on_handover_in())).map_err(|p| {
            StartFailure::Hook(format!(
                "#[on_handover_in] panicked: {}",
                panic_message(&*p)
            ))
        })?;
    }
    Ok(spawn_typed(state, args))
}

/// Makes a child from its encoded state; `true` when the state arrived in a move.
pub(crate) type SpawnFn = fn(&[u8], ChildCtx, bool) -> Result<Arc<dyn ErasedChild>, StartFailure>;

/// Makes a child from a promoted standby copy: its state and the writes it holds as
/// calls (`ship = "calls"`), replayed before the child runs anything else.
pub(crate) type PromoteFn =
    fn(&[u8], ChildCtx, Vec<LoggedCall>) -> Result<Arc<dyn ErasedChild>, StartFailure>;

fn promote_erased<T: Dispatch>(
    state: &[u8],
    ctx: ChildCtx,
    calls: Vec<LoggedCall>,
) -> Result<Arc<dyn ErasedChild>, StartFailure> {
    let state: T = postcard::from_bytes(state)
        .map_err(|e| StartFailure::State(format!("standby copy: {e}")))?;
    Ok(if calls.is_empty() {
        spawn_typed(state, ctx)
    } else {
        spawn_replaying(state, ctx, calls)
    })
}

/// One component type, as the hub sees it.
#[doc(hidden)]
pub struct ComponentVTable {
    pub(crate) type_name: &'static str,
    pub(crate) spawn: SpawnFn,
    pub(crate) promote: PromoteFn,
    pub(crate) replicas: usize,
    pub(crate) active_active: bool,
    pub(crate) placement: crate::core::placement::TypePlacement,
    pub(crate) merges: bool,
}

impl std::fmt::Debug for ComponentVTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentVTable")
            .field("type_name", &self.type_name)
            .finish()
    }
}

impl ComponentVTable {
    /// The table entry of `T` (for generated code).
    pub const fn of<T: Dispatch>() -> Self {
        Self {
            type_name: T::TYPE_NAME,
            spawn: spawn_erased::<T>,
            promote: promote_erased::<T>,
            replicas: T::REPLICAS,
            active_active: T::ACTIVE_ACTIVE,
            merges: T::MERGES,
            placement: crate::core::placement::TypePlacement {
                kind: T::DISTRIBUTION,
                custom: T::custom_strategy,
            },
        }
    }
}

/// Every component type linked into this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static COMPONENTS: [ComponentVTable];

/// Copies kept of each child of this type (1 if the type is unknown here).
pub(crate) fn replicas(type_name: &str) -> usize {
    vtable(type_name).map_or(1, |v| v.replicas)
}

/// Whether any component type linked into this binary keeps replicas.
pub(crate) fn any_replicated() -> bool {
    COMPONENTS.iter().any(|v| v.replicas > 1)
}

/// What the engine knows of a type of this binary.
pub(crate) fn type_info(type_name: &str) -> Option<TypeInfo> {
    vtable(type_name).map(|v| TypeInfo {
        replicas: v.replicas,
        active_active: v.active_active,
        placement: v.placement,
        merges: v.merges,
    })
}

/// The table entry of a type name, if this binary has it.
pub(crate) fn vtable(type_name: &str) -> Option<&'static ComponentVTable> {
    static INDEX: std::sync::OnceLock<
        std::collections::HashMap<&'static str, &'static ComponentVTable>,
    > = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut m = std::collections::HashMap::new();
            for v in COMPONENTS {
                if m.insert(v.type_name, v).is_some() {
                    tracing::error!(
                        "two component types are named {:?}; give one `name = \"...\"`",
                        v.type_name
                    );
                }
            }
            m
        })
        .get(type_name)
        .copied()
}
