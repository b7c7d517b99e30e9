//! Every grant decision in one place: a plugin gets a capability only if
//! its manifest asks for it *and* the operator allows it
//! (`DWA_PLUGIN_POLICY`; without a policy file the operator allows what
//! manifests ask). One method per capability.

use std::collections::HashMap;

use serde::Deserialize;

use crate::manifest::host_matches;

/// The operator's grants (`DWA_PLUGIN_POLICY`, JSON): per plugin, and a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorPolicy {
    /// Grants for plugins not listed.
    #[serde(default)]
    pub default: Option<Grants>,
    /// Grants by plugin name.
    #[serde(default)]
    pub plugins: HashMap<String, Grants>,
}

impl OperatorPolicy {
    /// What the operator allows plugin `name`: its own entry, else the
    /// default, else nothing.
    pub fn grants_for(&self, name: &str) -> Grants {
        self.plugins
            .get(name)
            .or(self.default.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

/// What the operator allows one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host patterns it may reach over HTTP.
    #[serde(default)]
    pub http: Vec<String>,
    /// Whether a transform may have its task's working folder.
    #[serde(default)]
    pub workdir: bool,
}

/// Why a capability is refused; the message names the capability missing
/// and who withheld it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The plugin's manifest does not ask for HTTP to this host.
    #[error(
        "refused: capability http:{host} is not granted to plugin {plugin} (its manifest asks for: {})",
        list_or_nothing(asked)
    )]
    HttpNotAsked {
        /// The plugin (`name@version`).
        plugin: String,
        /// The host it tried to reach.
        host: String,
        /// The host patterns its manifest asks for.
        asked: Vec<String>,
    },
    /// The manifest asks, but the operator's policy does not allow it.
    #[error(
        "refused: capability http:{host} is not granted to plugin {plugin} (the operator's policy allows: {})",
        list_or_nothing(allowed)
    )]
    HttpNotGranted {
        /// The plugin (`name@version`).
        plugin: String,
        /// The host it tried to reach.
        host: String,
        /// The host patterns the operator allows it.
        allowed: Vec<String>,
    },
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

/// What one plugin asked for, and the operator's word on it.
#[derive(Debug, Clone)]
pub struct Granter {
    plugin: String,
    asked_http: Vec<String>,
    asked_workdir: bool,
    /// None: no policy file, the operator allows what was asked.
    operator: Option<Grants>,
}

impl Granter {
    /// The decisions for `plugin` (`name@version`), which asks for HTTP to
    /// `asked_http` and for its task's working folder if `asked_workdir`;
    /// `operator` is the policy's grants for it (None: no policy file).
    pub fn new(
        plugin: &str,
        asked_http: Vec<String>,
        asked_workdir: bool,
        operator: Option<Grants>,
    ) -> Granter {
        Granter {
            plugin: plugin.to_owned(),
            asked_http,
            asked_workdir,
            operator,
        }
    }

    /// Whether the plugin gets its task's working folder.
    pub fn workdir(&self) -> bool {
        self.asked_workdir && self.operator.as_ref().is_none_or(|g| g.workdir)
    }

    /// Whether the plugin may send HTTP to `host` (the address rule, which
    /// no grant overrides, is the outbound client's).
    pub fn http(&self, host: &str) -> Result<(), Denied> {
        if !self.asked_http.iter().any(|p| host_matches(p, host)) {
            return Err(Denied::HttpNotAsked {
                plugin: self.plugin.clone(),
                host: host.to_owned(),
                asked: self.asked_http.clone(),
            });
        }
        match &self.operator {
            Some(g) if !g.http.iter().any(|p| host_matches(p, host)) => {
                Err(Denied::HttpNotGranted {
                    plugin: self.plugin.clone(),
                    host: host.to_owned(),
                    allowed: g.http.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The host patterns asked for that the operator allows, for
    /// `GET /api/plugins`.
    pub fn http_patterns(&self) -> Vec<String> {
        match &self.operator {
            None => self.asked_http.clone(),
            Some(g) => self
                .asked_http
                .iter()
                .filter(|a| {
                    g.http
                        .iter()
                        .any(|o| o == "*" || host_matches(o, a.trim_start_matches("*.")))
                })
                .cloned()
                .collect(),
        }
    }

    /// The HTTP host patterns the manifest asks for.
    pub fn asked_http(&self) -> &[String] {
        &self.asked_http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(http: &[&str], workdir: bool) -> Option<Grants> {
        Some(Grants {
            http: http.iter().map(|s| s.to_string()).collect(),
            workdir,
        })
    }

    fn asking(http: &[&str], workdir: bool, operator: Option<Grants>) -> Granter {
        Granter::new(
            "p@1",
            http.iter().map(|s| s.to_string()).collect(),
            workdir,
            operator,
        )
    }

    #[test]
    fn without_a_policy_file_the_operator_grants_what_was_asked() {
        let g = asking(&["api.example.com"], true, None);
        assert!(g.workdir());
        assert_eq!(g.http("api.example.com"), Ok(()));
        assert_eq!(g.http_patterns(), vec!["api.example.com".to_string()]);
    }

    #[test]
    fn a_capability_not_asked_for_is_refused_whatever_the_operator_allows() {
        let g = asking(&[], false, grants(&["*"], true));
        assert!(!g.workdir());
        assert_eq!(
            g.http("evil.test"),
            Err(Denied::HttpNotAsked {
                plugin: "p@1".into(),
                host: "evil.test".into(),
                asked: vec![],
            })
        );
        assert!(
            g.http("evil.test")
                .unwrap_err()
                .to_string()
                .contains("its manifest asks for: nothing")
        );
    }

    #[test]
    fn a_capability_asked_for_is_refused_when_the_operator_withholds_it() {
        let g = asking(&["*"], true, grants(&["api.example.com"], false));
        assert!(!g.workdir());
        assert_eq!(g.http("api.example.com"), Ok(()));
        let e = g.http("other.example.com").unwrap_err();
        assert!(matches!(&e, Denied::HttpNotGranted { host, .. } if host == "other.example.com"));
        assert!(
            e.to_string()
                .contains("the operator's policy allows: api.example.com")
        );
    }

    #[test]
    fn granted_patterns_are_those_asked_that_the_operator_allows() {
        let g = asking(
            &["*.example.com", "api.other.com"],
            false,
            grants(&["example.com"], false),
        );
        assert_eq!(g.http_patterns(), vec!["*.example.com".to_string()]);
        let g = asking(&["a.com", "b.com"], false, grants(&["*"], false));
        assert_eq!(g.http_patterns().len(), 2);
    }

    #[test]
    fn a_plugin_not_named_in_the_policy_gets_the_default() {
        let policy = OperatorPolicy {
            default: grants(&["x.com"], true),
            plugins: HashMap::from([("named".to_string(), Grants::default())]),
        };
        assert!(policy.grants_for("other").workdir);
        assert!(!policy.grants_for("named").workdir);
        assert!(OperatorPolicy::default().grants_for("any").http.is_empty());
    }
}
