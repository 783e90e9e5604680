//! Who the workers run as: `user` and `group` (names or numeric ids), resolved to ids once,
//! when the config is loaded.
//!
//! Names go through the C library's user database (NSS). A static glibc build cannot load NSS
//! modules, so there names may not resolve; numeric ids always work (the musl build reads
//! /etc/passwd and /etc/group itself).

use nix::unistd::{Group, Uid, User};

/// The identity workers switch to after fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user as written (`nobody`, `65534`), for messages.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Resolves `user` and `group` (each a name or a numeric id). Without `group`, the user's
    /// primary group from the user database.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
        let (uid, primary) = lookup_user(user)?;
        let gid = match group {
            Some(group) => lookup_group(group)?,
            None => primary.ok_or_else(|| {
                format!("user `{user}` is not in the user database, so it has no group: set group too")
            })?,
        };
        Ok(RunAs {
            user: user.to_string(),
            uid,
            gid,
        })
    }

    /// Reads `-U USER[:GROUP]`.
    pub fn from_flag(spec: &str) -> Result<RunAs, String> {
        match spec.split_once(':') {
            Some((user, group)) => RunAs::resolve(user, Some(group)),
            None => RunAs::resolve(spec, None),
        }
    }
}

/// The uid of `user`, with its primary gid when the user database knows it.
fn lookup_user(user: &str) -> Result<(u32, Option<u32>), String> {
    if let Ok(uid) = user.parse::<u32>() {
        let entry = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        return Ok((uid, entry.map(|u| u.gid.as_raw())));
    }
    match User::from_name(user) {
        Ok(Some(entry)) => Ok((entry.uid.as_raw(), Some(entry.gid.as_raw()))),
        Ok(None) => Err(format!(
            "no user `{user}` in the user database (numeric ids always work)"
        )),
        Err(e) => Err(format!("getpwnam(\"{user}\") failed: {e}")),
    }
}

/// The gid of `group`.
pub(super) fn lookup_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group) {
        Ok(Some(entry)) => Ok(entry.gid.as_raw()),
        Ok(None) => Err(format!(
            "no group `{group}` in the group database (numeric ids always work)"
        )),
        Err(e) => Err(format!("getgrnam(\"{group}\") failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_by_number() {
        let by_name = RunAs::resolve("root", None).unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        let by_number = RunAs::resolve("0", Some("0")).unwrap();
        assert_eq!((by_number.uid, by_number.gid), (0, 0));
        assert_eq!(RunAs::from_flag("root:0").unwrap().gid, 0);
    }

    #[test]
    fn numeric_ids_need_no_database_but_then_a_group() {
        let ids = RunAs::resolve("4000123", Some("4000456")).unwrap();
        assert_eq!((ids.uid, ids.gid), (4_000_123, 4_000_456));
        let missing = RunAs::resolve("4000123", None).unwrap_err();
        assert!(missing.contains("set group too"), "{missing}");
    }

    #[test]
    fn unknown_names_are_errors() {
        let user = RunAs::resolve("no-such-user-shoal", None).unwrap_err();
        assert!(user.starts_with("no user `no-such-user-shoal`"), "{user}");
        let group = RunAs::resolve("root", Some("no-such-group-shoal")).unwrap_err();
        assert!(group.starts_with("no group `no-such-group-shoal`"), "{group}");
    }
}
