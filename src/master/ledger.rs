//! What the master remembers about each slot beyond its live workers: how often and why
//! its worker was replaced, and what its exited workers had counted (so totals never go
//! backwards when a worker dies). Kept by slot number for the master's life, so a slot removed
//! and added again (scaling) carries on where it was.

use super::tally::Tally;
use crate::status::RestartReason;

/// One slot's history.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Restarts by reason, in [`RestartReason::ALL`] order.
    pub restarts: [u64; RestartReason::ALL.len()],
    pub last_restart: Option<RestartReason>,
    /// The last counters of every worker of this slot that has exited.
    pub counted: Tally,
}

impl Ledger {
    /// Records that the slot's worker is being replaced for `reason`.
    pub fn note_restart(&mut self, reason: RestartReason) {
        self.restarts[reason as usize] += 1;
        self.last_restart = Some(reason);
    }

    /// Restarts for every reason together.
    pub fn restart_count(&self) -> u64 {
        self.restarts.iter().sum()
    }
}

/// The ledgers of every slot that ever existed, by slot number.
#[derive(Debug, Default)]
pub struct Ledgers(Vec<Ledger>);

impl Ledgers {
    /// The ledger of slot `index` (created empty on first use).
    pub fn slot(&mut self, index: usize) -> &mut Ledger {
        if self.0.len() <= index {
            self.0.resize_with(index + 1, Ledger::default);
        }
        &mut self.0[index]
    }

    /// The ledger of slot `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<&Ledger> {
        self.0.get(index)
    }

    /// Every ledger with its slot number.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Ledger)> {
        self.0.iter().enumerate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_counted_by_reason_and_the_last_one_is_kept() {
        let mut ledgers = Ledgers::default();
        ledgers.slot(2).note_restart(RestartReason::Crash);
        ledgers.slot(2).note_restart(RestartReason::Reload);
        let ledger = ledgers.get(2).unwrap();
        assert_eq!(ledger.restart_count(), 2);
        assert_eq!(ledger.restarts[RestartReason::Crash as usize], 1);
        assert_eq!(ledger.last_restart, Some(RestartReason::Reload));
        assert_eq!(ledgers.get(0).unwrap().restart_count(), 0);
        assert!(ledgers.get(3).is_none());
    }
}
