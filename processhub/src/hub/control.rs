//! The control loop: membership changes, the planner's timer, the sleep sweep.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Control, HubInner, REPLAN_INTERVAL};

/// How often the control loop looks at the downing's timers and its own lateness.
const WATCH: Duration = Duration::from_millis(50);

/// A watch tick later than this means the process was paused: half the lease (a
/// shorter pause cannot outlast it), at least four ticks (a busy runtime is late too).
fn pause_threshold(hub: &HubInner) -> Duration {
    (hub.lease().config.lease / 2).max(WATCH * 4)
}
use crate::core::view::Gossip;

impl HubInner {
    /// Runs the planner over the current view and executes what it decides. Runs after
    /// every membership change and on a timer (to take up what an earlier plan left).
    fn replan(&self) {
        if self.is_stopped() {
            return;
        }
        self.decide(|engine| engine.tick());
    }
}

pub(super) async fn control_loop(
    hub: Weak<HubInner>,
    mut members: mpsc::UnboundedReceiver<Gossip>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut tick = tokio::time::interval(REPLAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sleep sweeps run at half the idle time (so a child sleeps within 1.5x of it).
    let sweep_every = hub
        .upgrade()
        .and_then(|h| h.hibernate_after)
        .map_or(REPLAN_INTERVAL, |idle| {
            (idle / 2).clamp(Duration::from_millis(5), REPLAN_INTERVAL)
        });
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The downing's timers, and this process's own pauses: a watch tick that fires far
    // too late means the process was stopped (a GC pause, a stopped VM).
    let mut watch = tokio::time::interval(WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_watch = Instant::now();
    loop {
        tokio::select! {
            // In a fixed order: the same events give the same decisions.
            biased;
            m = members.recv() => {
                let Some(mut gossip) = m else { return };
                // A burst of views (nodes starting one after the other): only the last
                // one counts, so the members are recomputed (and the ring rebuilt) once.
                while let Ok(next) = members.try_recv() {
                    gossip = gossip.then(next);
                }
                let Some(hub) = hub.upgrade() else { return };
                hub.decide(|engine| engine.gossip(gossip));
            }
            c = control.recv() => {
                let Some(Control::Refresh) = c else { return };
                let Some(hub) = hub.upgrade() else { return };
                hub.decide(|engine| engine.refresh_members());
            }
            _ = tick.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.replan();
                // Parts of a big state whose sender went quiet (it died, or gave up).
                hub.staging
                    .lock()
                    .unwrap()
                    .purge(Instant::now().into_std(), hub.move_timeout);
            }
            _ = watch.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                let now = Instant::now();
                let late = now.saturating_duration_since(last_watch);
                last_watch = now;
                if late > pause_threshold(&hub) {
                    tracing::warn!(me = %hub.me(), ?late, "this process was paused");
                    hub.lease().expire();
                    hub.decide(|engine| engine.paused());
                } else if hub.engine.read().unwrap().downing_due(now.into_std()) {
                    hub.decide(|engine| engine.refresh_members());
                }
            }
            _ = sweep.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.is_stopped() {
                    return;
                }
                hub.hibernate_idle();
            }
        }
    }
}
