//! Cache purges, asked on the control socket (`shoal cache purge PREFIX`) or the admin
//! endpoint (`DELETE /cache?prefix=`): the master numbers each as an [`Attempt`], the cache's
//! keeper thread carries it out, and the master answers whoever waits for it.

use log::info;

use super::admin::{Health, Operator};
use super::{Attempt, Master};
use crate::cache::purge::Prefix;
use crate::control::PurgeVerdict;

impl Master {
    /// Hands a purge of the entries `prefix` matches to the keeper, or says why not.
    pub(super) fn start_purge(&mut self, prefix: &str) -> Result<Attempt, PurgeVerdict> {
        let refused = |message: String| PurgeVerdict::Refused { message };
        if self.config.cache.is_none() {
            return Err(refused("the config in force has no [cache]".into()));
        }
        let parsed = Prefix::parse(prefix).map_err(refused)?;
        let attempt = self.next_attempt();
        info!("cache purge of {prefix:?} asked");
        self.cache_keeper.purge(attempt.0, parsed);
        Ok(attempt)
    }

    /// Gives the keeper the cache in force, logs what it reports, and answers the purges it
    /// finished.
    pub(super) fn tend_cache(&mut self) {
        let tended = self.cache_keeper.tend(self.config.cache.as_ref());
        if let Some(report) = tended.report {
            info!("{report}");
        }
        for (number, purged) in tended.purged {
            let verdict = match purged {
                Ok(purged) => {
                    info!(
                        "cache purge: removed {} entries ({} bytes)",
                        purged.removed, purged.bytes
                    );
                    PurgeVerdict::Purged {
                        removed: purged.removed,
                        bytes: purged.bytes,
                    }
                }
                Err(message) => {
                    log::error!("cache purge failed: {message}");
                    PurgeVerdict::Failed { message }
                }
            };
            let attempt = Attempt(number);
            if let Some(control) = &mut self.control {
                control.settle(attempt, &verdict.to_line());
            }
            if let Some(admin) = &mut self.admin {
                admin.settle(attempt, &verdict);
            }
        }
    }
}

impl Operator for Master {
    fn health(&self) -> Health {
        Master::health(self)
    }

    fn metrics(&self) -> String {
        Master::metrics(self)
    }

    fn purge(&mut self, prefix: &str) -> Result<Attempt, PurgeVerdict> {
        self.start_purge(prefix)
    }
}
