//! Signed links for `builtin.wait` steps (docs/tasks.md, "Waiting for a
//! signal"): a link names the task, the step and the wait (its deadline),
//! signed with the host's key (HMAC-SHA256), so that whoever holds it — an
//! approver, a third party's webhook — can send that one signal without the
//! API token. It is good once: the step then no longer waits, and a later
//! wait of the same step (after a re-run) has another deadline.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest token `verify` reads: a task id, a step, a time and a digest.
const MAX_TOKEN: usize = 512;

/// The key links are signed with, and where the host is reached.
#[derive(Clone)]
pub struct Signals {
    key: Vec<u8>,
    /// Where clients reach the host; None: links are paths.
    public_url: Option<String>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Default for Signals {
    /// A key of this process only (its links die with it); links are paths.
    fn default() -> Self {
        Signals::random(None)
    }
}

impl Signals {
    /// Links signed with `key`, under `public_url` (`https://dwa.example.com`;
    /// None: links are paths, `/api/signals/...`).
    pub fn new(key: &[u8], public_url: Option<&str>) -> Signals {
        Signals {
            key: key.to_vec(),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
        }
    }

    /// Links signed with a random key of this process.
    pub fn random(public_url: Option<&str>) -> Signals {
        Signals::new(&rand::random::<[u8; 32]>(), public_url)
    }

    /// The MAC of `body` under the key (HMAC takes a key of any length:
    /// None does not happen).
    fn mac(&self, body: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        mac.update(body.as_bytes());
        Some(mac)
    }

    /// The link that sends the signal of step `step` of task `task`,
    /// waiting until `until`.
    pub fn link(&self, task: &str, step: u32, until: i64) -> Option<String> {
        let body = format!("{task}.{step}.{until}");
        let digest = hex::encode(self.mac(&body)?.finalize().into_bytes());
        let base = self.public_url.as_deref().unwrap_or("");
        Some(format!("{base}/api/signals/{body}.{digest}"))
    }

    /// The (task, step, until) a token signed with this key names.
    pub fn verify(&self, token: &str) -> Option<(String, u32, i64)> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let (body, digest) = token.rsplit_once('.')?;
        let digest = hex::decode(digest).ok()?;
        self.mac(body)?.verify_slice(&digest).ok()?;
        let mut parts = body.rsplitn(3, '.');
        let until = parts.next()?.parse().ok()?;
        let step = parts.next()?.parse().ok()?;
        let task = parts.next()?.to_owned();
        Some((task, step, until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_with_its_key_only_and_unchanged() {
        let s = Signals::new(b"key-one", Some("https://dwa.example.com/"));
        let link = s.link("01a2-b3", 4, 1_700_000_000_000).unwrap();
        let token = link
            .strip_prefix("https://dwa.example.com/api/signals/")
            .unwrap();
        assert_eq!(
            s.verify(token),
            Some(("01a2-b3".to_owned(), 4, 1_700_000_000_000))
        );
        assert_eq!(Signals::new(b"key-two", None).verify(token), None);
        assert!(
            Signals::new(b"key-one", None)
                .link("t", 0, 1)
                .unwrap()
                .starts_with("/api/signals/t.0.1."),
            "a path without DWA_PUBLIC_URL"
        );
        let forged = token.replacen(".4.", ".5.", 1);
        assert_eq!(s.verify(&forged), None, "another step, same digest");
        assert_eq!(s.verify("nonsense"), None);
        assert_eq!(s.verify(&"a".repeat(600)), None);
    }
}
