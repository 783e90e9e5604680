//! Users files for `basic_auth`, in Apache's htpasswd format: one `user:hash` per line, read
//! whole when the config loads (at start and at every reload).
//!
//! Only hashes made for passwords are taken: bcrypt (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B`
//! writes them) and SHA-crypt (`$5$`, `$6$`, as `mkpasswd -m sha-512` and `openssl passwd -6`
//! do). Every other kind (Apache's MD5 `$apr1$`, `{SHA}`, DES crypt, plain text) is refused
//! at load, naming the line and why, so a file never holds an entry that cannot be checked or
//! that falls to a brute force in minutes. Verifying costs one hash whether the user exists
//! or not: an unknown user is checked against the file's first entry and refused whatever
//! that says, so timing tells nobody which names exist.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};

/// The largest users file read: a file is held in memory by every worker.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// bcrypt's costs (log2 of its rounds) that the `bcrypt` crate computes.
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// What every refusal adds: which kinds are taken and how to make one.
const TAKEN: &str = "only bcrypt ($2y$, $2b$, $2a$: `htpasswd -B`) and SHA-crypt ($5$, $6$) hashes are taken";

/// A users file, loaded.
pub struct Htpasswd {
    /// Where it was read from (absolute when the config named it relative to its directory).
    path: PathBuf,
    users: HashMap<String, Hash>,
    /// The first entry's hash, which an unknown user is checked against.
    decoy: Hash,
}

/// One entry's hash, of a kind that was checked to be well formed when the file loaded.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    /// `$2y$10$...`: 60 characters.
    Bcrypt(String),
    /// `$5$[rounds=N$]salt$hash` or `$6$...`.
    ShaCrypt(String),
}

impl Htpasswd {
    /// Reads the users file at `path`. Errors name the file, and the line when one is wrong:
    /// `/etc/shoal/users:3: user "carol": Apache's MD5 ...`.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let shown = path.display();
        let bytes = match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => return Err(format!("{shown}: not a file")),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => return Err(format!("{shown}: over 16 MiB")),
            Ok(_) => std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?,
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        Htpasswd::parse(path, &bytes)
    }

    /// Reads `bytes` as the users file at `path` (which only names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Htpasswd, String> {
        let shown = path.display();
        let mut users = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        let mut decoy = None;
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let number = index + 1;
            let fail = |why: String| format!("{shown}:{number}: {why}");
            let Ok(line) = std::str::from_utf8(line) else {
                return Err(fail("not UTF-8".to_string()));
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            // The line itself is never quoted: it may hold a password in plain text.
            let Some((user, hash)) = line.split_once(':') else {
                return Err(fail(
                    "no `:` between a user and a hash (lines are USER:HASH)".into(),
                ));
            };
            if user.is_empty() {
                return Err(fail("the user name is empty".into()));
            }
            let hash = Hash::parse(hash.trim_end()).map_err(|why| fail(format!("user {user:?}: {why}")))?;
            if let Some(first) = lines_of.insert(user.to_string(), number) {
                return Err(fail(format!(
                    "user {user:?} is listed again (first on line {first})"
                )));
            }
            decoy.get_or_insert_with(|| hash.clone());
            users.insert(user.to_string(), hash);
        }
        let Some(decoy) = decoy else {
            return Err(format!("{shown}: no users (lines are USER:HASH)"));
        };
        Ok(Htpasswd {
            path: path.to_path_buf(),
            users,
            decoy,
        })
    }

    /// Where the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many users it holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file held no users (never, once loaded: such a file is refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Costs one verification of a hash whatever the answer
    /// (the first entry's for an unknown user); the hashes are compared in constant time.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                // Spend what a known user costs, and refuse whatever it says.
                let _ = self.decoy.verify(password);
                false
            }
        }
    }
}

impl fmt::Debug for Htpasswd {
    /// The path and the number of users; never a hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

impl Hash {
    /// Takes a bcrypt or SHA-crypt hash whose form its verifier reads; anything else is
    /// refused, saying what it looks like.
    fn parse(text: &str) -> Result<Hash, String> {
        let id = text
            .strip_prefix('$')
            .and_then(|rest| rest.split_once('$'))
            .map(|(id, _)| id);
        match id {
            Some("2y" | "2b" | "2a") => {
                let parts = bcrypt::HashParts::from_str(text)
                    .map_err(|e| format!("not a well-formed bcrypt hash ({e})"))?;
                let cost = parts.get_cost();
                if !BCRYPT_COSTS.contains(&cost) {
                    return Err(format!("bcrypt cost {cost} is out of range (4 to 31)"));
                }
                Ok(Hash::Bcrypt(text.to_string()))
            }
            Some("2x") => Err(format!(
                "`$2x$` marks a hash from a bcrypt with a known bug: re-hash the password ({TAKEN})"
            )),
            Some(id @ ("5" | "6")) => {
                sha_crypt_form(text, id)?;
                Ok(Hash::ShaCrypt(text.to_string()))
            }
            Some("apr1") => Err(format!(
                "Apache's MD5 (`$apr1$`) is refused: it falls to a brute force in minutes ({TAKEN})"
            )),
            Some("1") => Err(format!(
                "MD5-crypt (`$1$`) is refused: it is fast to brute-force ({TAKEN})"
            )),
            Some(id) => Err(format!("`${id}$` hashes are refused ({TAKEN})")),
            None if text.starts_with("{SHA}") => Err(format!(
                "`{{SHA}}` (unsalted SHA-1) is refused: it is fast to brute-force ({TAKEN})"
            )),
            None if text.len() == 13 && text.bytes().all(is_crypt_byte) => Err(format!(
                "this looks like DES crypt, which reads only the first 8 characters of a password ({TAKEN})"
            )),
            None => Err(format!("not a password hash (plain text?) ({TAKEN})")),
        }
    }

    /// Whether `password` is the one this hash was made from.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Hash::ShaCrypt(hash) => ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
        }
    }
}

/// The characters of crypt's base64.
fn is_crypt_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// Checks that `text`, a `$5$` or `$6$` hash, is one SHA-crypt's verifier reads:
/// `$ID$[rounds=N$]SALT$HASH`, rounds 1,000 to 999,999,999, a salt of crypt characters and a
/// hash of 43 (`$5$`) or 86 (`$6$`) characters.
fn sha_crypt_form(text: &str, id: &str) -> Result<(), String> {
    let malformed = |why: &str| format!("not a well-formed SHA-crypt hash ({why})");
    PasswordHashRef::new(text).map_err(|e| malformed(&e.to_string()))?;
    let mut fields = text.split('$').skip(2);
    let mut next = fields.next().unwrap_or_default();
    if let Some(rounds) = next.strip_prefix("rounds=") {
        let rounds = rounds
            .parse::<u32>()
            .ok()
            .filter(|r| (1_000..=999_999_999).contains(r));
        if rounds.is_none() {
            return Err(malformed("rounds must be 1000 to 999999999"));
        }
        next = fields.next().unwrap_or_default();
    }
    if next.is_empty() || !next.bytes().all(is_crypt_byte) {
        return Err(malformed("the salt is not crypt characters ./0-9A-Za-z"));
    }
    let length = if id == "5" { 43 } else { 86 };
    match (fields.next(), fields.next()) {
        (Some(hash), None) if hash.len() == length && hash.bytes().all(is_crypt_byte) => Ok(()),
        (Some(_), None) => Err(malformed(&format!("the hash is not {length} crypt characters"))),
        _ => Err(malformed("it has a field too many or too few")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `htpasswd -nbB -C 4 alice 'wonder land'`.
    const ALICE: &str = "$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu";
    /// `openssl passwd -5 -salt Gq7u3oJkVh2 'ümlaut pass'`.
    const UMLAUT: &str = "$5$Gq7u3oJkVh2$w9eUQ.Cs9RliV5ZUUhAxZJuvPP47.uIc7XKgKWSBSr8";
    /// `openssl passwd -6 -salt 'rounds=1000$x' y`.
    const ROUNDS: &str = "$6$rounds=1000$x$hRya3wJn9Fg2iWNaQ4i.taeYFetToEEvEEJpCLSROhopURv6WdrvtO6SHPfb6wp8i6SosuIFeFUzPqT7D9z67.";
    /// `openssl passwd -6 -salt saltsalt secret`.
    const SECRET: &str =
        "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    fn parse(text: &str) -> Result<Htpasswd, String> {
        Htpasswd::parse(Path::new("/etc/users"), text.as_bytes())
    }

    #[test]
    fn bcrypt_and_sha_crypt_entries_verify_their_passwords_only() {
        let text = format!(
            "# staging\n\nalice:{ALICE}\r\nbob:{}\nümit:{UMLAUT}\ncarol:{ROUNDS}\ndave:{SECRET}\n",
            ALICE.replace("$2y$", "$2b$")
        );
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 5);
        assert!(users.verify("alice", b"wonder land"));
        assert!(!users.verify("alice", b"wonder lan"));
        assert!(!users.verify("alice", b"wonder land "));
        assert!(users.verify("bob", b"wonder land"), "$2b$ is bcrypt too");
        assert!(users.verify("ümit", "ümlaut pass".as_bytes()));
        assert!(!users.verify("ümit", b"umlaut pass"));
        assert!(users.verify("carol", b"y"));
        assert!(!users.verify("carol", b"Y"));
        assert!(users.verify("dave", b"secret"));
        assert!(!users.verify("dave", b""));
        // An unknown user is refused, even with the password of the entry it is checked against.
        assert!(!users.verify("mallory", b"wonder land"));
        assert!(!users.verify("", b""));
        assert!(!users.verify("Alice", b"wonder land"), "names are case-sensitive");
    }

    #[test]
    fn other_kinds_of_hash_are_refused_naming_the_line_and_why() {
        let cases = [
            ("carol:$apr1$e9FCtnVR$RxGPqAQEPNfQj7NWEMpdt1", "Apache's MD5"),
            ("dave:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=", "unsalted SHA-1"),
            ("frank:3mV5UjTTWvAfE", "DES crypt"),
            ("erin:hunter2", "not a password hash"),
            ("erin:", "not a password hash"),
            ("gus:$1$ab$e2KlfqG5YBMTjSz7XF.Eu1", "MD5-crypt"),
            ("hal:$2x$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu", "known bug"),
            ("ian:$y$j9T$abc$def", "`$y$` hashes are refused"),
            ("jo:$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnw", "not a well-formed bcrypt"),
            ("kim:$2y$03$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu", "cost 3 is out of range"),
            ("lea:$5$salt$short", "not 43 crypt characters"),
            ("max:$6$rounds=10$x$hRya3wJn9Fg2iWNaQ4i.taeYFetToEEvEEJpCLSROhopURv6WdrvtO6SHPfb6wp8i6SosuIFeFUzPqT7D9z67.", "rounds must be"),
            ("ned:$5$sa_lt$w9eUQ.Cs9RliV5ZUUhAxZJuvPP47.uIc7XKgKWSBSr8", "not a well-formed SHA-crypt"),
            ("oz:$5$salt$w9eUQ.Cs9RliV5ZUUhAxZJuvPP47.uIc7XKgKWSBSr8$more", "not a well-formed SHA-crypt"),
            ("just a line", "no `:`"),
            (":$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu", "user name is empty"),
        ];
        for (line, why) in cases {
            let text = format!("alice:{ALICE}\n\n{line}\n");
            let error = parse(&text).map(|_| ()).unwrap_err();
            assert!(error.starts_with("/etc/users:3: "), "{line}: {error}");
            assert!(error.contains(why), "{line}: {error}");
            assert!(!error.contains("hunter2"), "the line is not quoted: {error}");
        }
        let twice = parse(&format!("alice:{ALICE}\nbob:{SECRET}\nalice:{SECRET}\n"));
        let error = twice.map(|_| ()).unwrap_err();
        assert_eq!(
            error,
            "/etc/users:3: user \"alice\" is listed again (first on line 1)"
        );
        let empty = parse("# nobody yet\n\n").map(|_| ()).unwrap_err();
        assert_eq!(empty, "/etc/users: no users (lines are USER:HASH)");
        let mut latin1 = format!("alice:{ALICE}\n").into_bytes();
        latin1.extend_from_slice(b"J\xe9r\xf4me:x\n");
        let error = Htpasswd::parse(Path::new("/etc/users"), &latin1).map(|_| ());
        assert_eq!(error.unwrap_err(), "/etc/users:2: not UTF-8");
    }

    #[test]
    fn debug_shows_no_hash() {
        let users = parse(&format!("alice:{ALICE}\n")).unwrap();
        let shown = format!("{users:?}");
        assert!(shown.contains("/etc/users") && !shown.contains("$2y$"), "{shown}");
    }
}
