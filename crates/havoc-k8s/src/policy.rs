//! Which namespaces chaos may touch at all.
//!
//! A namespace is open to chaos if the operator was started with it (`--namespaces`) or it
//! carries the opt-in label. The cluster's own namespaces and the operator's are closed unless
//! explicitly allowed, so a selector typo cannot take down the control plane or the operator.

use k8s_openapi::api::core::v1::Namespace;

/// The label that opens a namespace to chaos, unless configured otherwise.
pub const DEFAULT_OPT_IN_LABEL: &str = "havoc.dev/chaos=enabled";

/// Namespaces never touched unless `allow_protected` is set.
pub const PROTECTED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// The operator's namespace policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// Namespaces open to chaos regardless of labels (the `--namespaces` flag).
    pub allowed: Vec<String>,
    /// `key=value` (or just `key`) a namespace carries to opt in; empty disables opting in.
    pub opt_in_label: String,
    /// The operator's own namespace: protected.
    pub operator_namespace: String,
    /// Allow the protected namespaces too (explicit, for clusters dedicated to chaos).
    pub allow_protected: bool,
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            opt_in_label: DEFAULT_OPT_IN_LABEL.into(),
            operator_namespace: "havoc-system".into(),
            allow_protected: false,
        }
    }
}

impl NamespacePolicy {
    /// `Ok` if chaos may select pods in `ns`, else the reason (for an event or condition).
    pub fn permits(&self, ns: &Namespace) -> Result<(), String> {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        if !self.allow_protected {
            if PROTECTED_NAMESPACES.contains(&name) {
                return Err(format!(
                    "namespace `{name}` is protected: the operator must be started with --allow-protected-namespaces to touch it"
                ));
            }
            if name == self.operator_namespace {
                return Err(format!(
                    "namespace `{name}` is the operator's own namespace and is protected"
                ));
            }
        }
        if self.allowed.iter().any(|a| a == name) {
            return Ok(());
        }
        if !self.opt_in_label.is_empty() {
            let (key, value) = match self.opt_in_label.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (self.opt_in_label.as_str(), None),
            };
            let label = ns.metadata.labels.as_ref().and_then(|l| l.get(key));
            if let Some(l) = label {
                if value.is_none_or(|v| v == l) {
                    return Ok(());
                }
            }
        }
        let mut how = Vec::new();
        if !self.opt_in_label.is_empty() {
            how.push(format!("label it `{}`", self.opt_in_label));
        }
        how.push("start the operator with --namespaces including it".to_string());
        Err(format!(
            "namespace `{name}` is not open to chaos: {}",
            how.join(" or ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::namespace;

    #[test]
    fn allowed_or_opted_in_namespaces_are_open() {
        let p = NamespacePolicy {
            allowed: vec!["shop".into()],
            ..Default::default()
        };
        assert_eq!(p.permits(&namespace("shop", &[])), Ok(()));
        assert_eq!(
            p.permits(&namespace("db", &[("havoc.dev/chaos", "enabled")])),
            Ok(())
        );
        let e = p
            .permits(&namespace("db", &[("havoc.dev/chaos", "disabled")]))
            .unwrap_err();
        assert!(e.contains("label it `havoc.dev/chaos=enabled`"), "{e}");
        assert!(p.permits(&namespace("db", &[])).is_err());
        let key_only = NamespacePolicy {
            opt_in_label: "chaos".into(),
            ..Default::default()
        };
        assert_eq!(
            key_only.permits(&namespace("db", &[("chaos", "anything")])),
            Ok(())
        );
        let no_label = NamespacePolicy {
            opt_in_label: String::new(),
            ..Default::default()
        };
        assert!(no_label
            .permits(&namespace("db", &[("havoc.dev/chaos", "enabled")]))
            .is_err());
    }

    #[test]
    fn protected_namespaces_need_the_explicit_switch() {
        let mut p = NamespacePolicy {
            allowed: vec!["kube-system".into(), "havoc-system".into()],
            ..Default::default()
        };
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "havoc-system",
        ] {
            let opted = namespace(ns, &[("havoc.dev/chaos", "enabled")]);
            assert!(p.permits(&opted).unwrap_err().contains("protected"), "{ns}");
        }
        p.allow_protected = true;
        assert_eq!(p.permits(&namespace("kube-system", &[])), Ok(()));
        assert!(
            p.permits(&namespace("kube-public", &[])).is_err(),
            "still needs allowing"
        );
    }
}
