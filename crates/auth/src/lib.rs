//! Client users: who may connect to RESP and HTTP, and what they may do.
//!
//! A user has a name, a password stored only as an argon2id hash (PHC
//! string), roles and optional key patterns:
//!
//! - `read`: commands and routes that read keys (GET, MGET, TTL, ...);
//! - `write`: commands and routes that change keys (SET, DEL, EXPIRE, ...);
//! - `admin`: the node's administration (CONFIG, ACL LIST, decommission,
//!   remove, repair, movement, debug routes, metrics when protected).
//!
//! Key patterns limit the keys a user may name: `app:*` (a prefix), an
//! exact key, or `*` (every key, the default). Users come from a TOML file
//! (see [`Users::from_toml`]); the user named `default` is the one `AUTH
//! <password>` (one argument) logs in as, like Redis' `requirepass`.
//!
//! Checking a password with argon2 costs milliseconds on purpose; a
//! successful check is remembered (as a salted SHA-256 of the password
//! under a key drawn at start, never the password) so that a client opening
//! many connections pays it once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;

/// Most users in one file.
pub const USERS_MAX: usize = 1_000;
/// Most key patterns of one user.
pub const PATTERNS_MAX: usize = 64;
/// Longest password accepted for checking, in bytes (longer ones fail
/// without hashing: no work for an attacker's megabyte).
pub const PASSWORD_BYTES_MAX: usize = 1_024;

/// Why users could not be loaded, or a password hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Which keys a user may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPattern {
    All,
    Prefix(Bytes),
    Exact(Bytes),
}

impl KeyPattern {
    fn parse(text: &str) -> Result<Self, AuthError> {
        match text.strip_suffix('*') {
            Some("") => Ok(Self::All),
            Some(prefix) if !prefix.contains('*') => {
                Ok(Self::Prefix(Bytes::copy_from_slice(prefix.as_bytes())))
            }
            None if !text.is_empty() => Ok(Self::Exact(Bytes::copy_from_slice(text.as_bytes()))),
            _ => Err(AuthError::Invalid(format!(
                "key pattern {text:?}: a key, a prefix followed by '*', or '*'"
            ))),
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(p) => key.starts_with(p),
            Self::Exact(k) => key == &k[..],
        }
    }

    fn text(&self) -> String {
        match self {
            Self::All => "*".into(),
            Self::Prefix(p) => format!("{}*", String::from_utf8_lossy(p)),
            Self::Exact(k) => String::from_utf8_lossy(k).into_owned(),
        }
    }
}

/// One user.
#[derive(Debug, Clone)]
pub struct User {
    name: String,
    /// None: the unrestricted user of a node without users.
    hash: Option<String>,
    roles: Vec<Role>,
    keys: Vec<KeyPattern>,
}

impl User {
    /// The user of a node that has no users configured: every role, every
    /// key.
    pub fn unrestricted() -> Arc<Self> {
        Arc::new(Self {
            name: "default".into(),
            hash: None,
            roles: vec![Role::Read, Role::Write, Role::Admin],
            keys: vec![KeyPattern::All],
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the user may name `key`.
    pub fn may_access(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|p| p.matches(key))
    }

    /// The user as a rule line, in the shape of Redis' `ACL LIST` (the
    /// password hash is not shown).
    pub fn rule(&self) -> String {
        let mut line = format!("user {} on", self.name);
        if self.hash.is_none() {
            line.push_str(" nopass");
        }
        for k in &self.keys {
            line.push_str(" ~");
            line.push_str(&k.text());
        }
        line.push_str(" resetchannels -@all");
        for role in &self.roles {
            line.push_str(match role {
                Role::Read => " +@read",
                Role::Write => " +@write",
                Role::Admin => " +@admin",
            });
        }
        line
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    /// An argon2 PHC string (`ringkv user hash` prints one).
    password_hash: String,
    roles: Vec<Role>,
    #[serde(default)]
    keys: Vec<String>,
}

/// The users of a node, and the passwords recently checked.
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    /// name -> digest of the password last checked good for it.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    cache_key: [u8; 32],
    /// Password hashes being computed now (at most [`HASHES_AT_ONCE`]).
    hashing: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

impl Users {
    /// Reads a users file:
    ///
    /// ```toml
    /// [[user]]
    /// name = "app"
    /// password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
    /// roles = ["read", "write"]
    /// keys = ["app:*"]          # optional; default every key
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, AuthError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if file.users.len() > USERS_MAX {
            return Err(AuthError::Invalid(format!("more than {USERS_MAX} users")));
        }
        let mut by_name = HashMap::new();
        for u in file.users {
            let invalid = |why: String| AuthError::Invalid(format!("user {:?}: {why}", u.name));
            let name_ok = !u.name.is_empty()
                && u.name.len() <= 64
                && u.name.bytes().all(|b| b.is_ascii_graphic());
            if !name_ok {
                return Err(invalid("a name is 1 to 64 printable characters".into()));
            }
            PasswordHash::new(&u.password_hash)
                .map_err(|e| invalid(format!("password_hash is not a PHC string: {e}")))?;
            if u.roles.is_empty() {
                return Err(invalid("no roles".into()));
            }
            if u.keys.len() > PATTERNS_MAX {
                return Err(invalid(format!("more than {PATTERNS_MAX} key patterns")));
            }
            let keys = if u.keys.is_empty() {
                vec![KeyPattern::All]
            } else {
                u.keys
                    .iter()
                    .map(|k| KeyPattern::parse(k))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(e.to_string()))?
            };
            let user = User {
                name: u.name.clone(),
                hash: Some(u.password_hash),
                roles: u.roles,
                keys,
            };
            if by_name.insert(u.name.clone(), Arc::new(user)).is_some() {
                return Err(AuthError::Invalid(format!("user {:?} twice", u.name)));
            }
        }
        Ok(Self {
            by_name,
            verified: Mutex::new(HashMap::new()),
            hashing: std::sync::atomic::AtomicUsize::new(0),
            cache_key: rand::random(),
        })
    }

    /// Reads a users file from `path`.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Invalid(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| AuthError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every user, by name.
    pub fn all(&self) -> Vec<Arc<User>> {
        let mut users: Vec<Arc<User>> = self.by_name.values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    fn digest(&self, name: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.cache_key);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(password);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The user `name` when `password` is theirs.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let user = self.by_name.get(name)?;
        let hash = user.hash.as_ref()?;
        if password.len() > PASSWORD_BYTES_MAX {
            return None;
        }
        let digest = self.digest(name, password);
        if self.verified.lock().get(name) == Some(&digest) {
            return Some(Arc::clone(user));
        }
        // A password not seen yet costs a hash (about 19 MiB and tens of
        // ms): at most HASHES_AT_ONCE at a time, the rest refused, so a
        // flood of wrong passwords cannot take the node's memory.
        let _slot = HashSlot::take(&self.hashing)?;
        let parsed = PasswordHash::new(hash).ok()?;
        Argon2::default().verify_password(password, &parsed).ok()?;
        let mut verified = self.verified.lock();
        if verified.len() >= USERS_MAX {
            verified.clear();
        }
        verified.insert(name.to_string(), digest);
        Some(Arc::clone(user))
    }
}

/// Most password hashes computed at once (per set of users, one a node);
/// an attempt past it fails (counted in `ringkv_auth_busy_total`) as a
/// wrong password would. Users whose password was verified before are
/// checked by digest and never wait for a slot.
pub const HASHES_AT_ONCE: usize = 4;

/// One of [`HASHES_AT_ONCE`] slots, given back on drop.
struct HashSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> HashSlot<'a> {
    fn take(hashing: &'a std::sync::atomic::AtomicUsize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let taken = hashing.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < HASHES_AT_ONCE).then_some(n + 1)
        });
        match taken {
            Ok(_) => Some(Self(hashing)),
            Err(_) => {
                metrics::counter!("ringkv_auth_busy_total").increment(1);
                None
            }
        }
    }
}

impl Drop for HashSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Describes this crate's metric family (HELP text) and shows it at 0.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "ringkv_auth_busy_total",
        "Password checks refused because every hashing slot was busy"
    );
    metrics::counter!("ringkv_auth_busy_total").increment(0);
}

/// An argon2id PHC string of `password`, with a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_at_once_are_bounded_and_known_passwords_skip_them() {
        let users = users();
        assert!(
            users.authenticate("app", b"app-pw").is_some(),
            "verified once"
        );
        let held: Vec<HashSlot<'_>> = (0..HASHES_AT_ONCE)
            .map(|_| HashSlot::take(&users.hashing).expect("a slot"))
            .collect();
        // Every slot busy: a password not seen yet is refused, one
        // verified before still passes by its digest.
        assert!(users.authenticate("ops", b"admin-pw").is_none());
        assert!(users.authenticate("app", b"app-pw").is_some());
        drop(held);
        assert!(users.authenticate("ops", b"admin-pw").is_some());
    }

    fn users() -> Users {
        let app = hash_password(b"app-pw").expect("hash");
        let admin = hash_password(b"admin-pw").expect("hash");
        Users::from_toml(&format!(
            r#"
[[user]]
name = "app"
password_hash = "{app}"
roles = ["read", "write"]
keys = ["app:*", "config"]

[[user]]
name = "ops"
password_hash = "{admin}"
roles = ["admin", "read"]
"#
        ))
        .expect("users")
    }

    #[test]
    fn passwords_roles_and_keys() {
        let u = users();
        assert_eq!(u.len(), 2);
        let app = u.authenticate("app", b"app-pw").expect("app");
        assert!(app.has(Role::Write) && app.has(Role::Read) && !app.has(Role::Admin));
        assert!(app.may_access(b"app:1") && app.may_access(b"config"));
        assert!(!app.may_access(b"other") && !app.may_access(b"config2"));
        // Twice: the second check comes from the cache, same answer.
        assert!(u.authenticate("app", b"app-pw").is_some());
        assert!(u.authenticate("app", b"wrong").is_none());
        assert!(u.authenticate("app", b"admin-pw").is_none());
        assert!(u.authenticate("nobody", b"app-pw").is_none());
        assert!(
            u.authenticate("app", &vec![b'x'; PASSWORD_BYTES_MAX + 1])
                .is_none()
        );
        let ops = u.authenticate("ops", b"admin-pw").expect("ops");
        assert!(ops.has(Role::Admin) && ops.may_access(b"anything"));
        assert_eq!(
            app.rule(),
            "user app on ~app:* ~config resetchannels -@all +@read +@write"
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let h = hash_password(b"x").expect("hash");
        for (text, why) in [
            (
                "[[user]]\nname = \"a\"\npassword_hash = \"plain\"\nroles = [\"read\"]\n",
                "PHC",
            ),
            (
                &format!("[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nroles = []\n"),
                "no roles",
            ),
            (
                &format!("[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nroles = [\"root\"]\n"),
                "unknown variant",
            ),
            (
                &format!("[[user]]\nname = \"a b\"\npassword_hash = \"{h}\"\nroles = [\"read\"]\n"),
                "printable",
            ),
            (
                &format!(
                    "[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nroles = [\"read\"]\nkeys = [\"a*b*\"]\n"
                ),
                "key pattern",
            ),
            (
                &format!(
                    "[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nroles = [\"read\"]\n[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nroles = [\"read\"]\n"
                ),
                "twice",
            ),
            (
                &format!(
                    "[[user]]\nname = \"a\"\npassword = \"x\"\npassword_hash = \"{h}\"\nroles = [\"read\"]\n"
                ),
                "unknown field",
            ),
        ] {
            let err = Users::from_toml(text).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
