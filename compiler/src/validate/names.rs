//! Object names as the Kubernetes API server checks them.
//!
//! Each kind has a name rule: most kinds, and every custom resource, take a DNS-1123 subdomain;
//! Namespaces a DNS-1123 label; Services a DNS-1035 label; the RBAC kinds any path segment (so
//! `system:aggregate-to-view` stays valid). Built-in kinds whose rule is not listed here are held
//! only to the path-segment rule every name obeys, so no valid object is ever refused.

/// How a kind's `metadata.name` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Lower-case alphanumerics, `-` and `.`; each dot-separated part starts and ends
    /// alphanumeric; at most 253 characters.
    Subdomain,
    /// Lower-case alphanumerics and `-`, starting and ending alphanumeric; at most 63.
    Label,
    /// A [`NameRule::Label`] that starts with a letter.
    Dns1035Label,
    /// Anything but `.`, `..` and names holding `/` or `%`.
    PathSegment,
}

/// Longest DNS-1123 subdomain.
pub const SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 (or DNS-1035) label.
pub const LABEL_MAX: usize = 63;

/// Built-in kinds (group, kind) known to take a DNS-1123 subdomain.
const SUBDOMAIN_KINDS: &[(&str, &str)] = &[
    ("", "ConfigMap"),
    ("", "Endpoints"),
    ("", "LimitRange"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "ResourceQuota"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("apps", "DaemonSet"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("batch", "CronJob"),
    ("batch", "Job"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
];

/// True for the API groups the API server itself serves (as opposed to custom resources,
/// whose names are always subdomains).
fn is_builtin_group(group: &str) -> bool {
    if group.is_empty() || !group.contains('.') {
        return true;
    }
    group.ends_with(".k8s.io") && group != "gateway.networking.k8s.io"
}

/// The rule for a kind.
pub fn rule_for(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035Label,
        (
            "rbac.authorization.k8s.io",
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding",
        ) => NameRule::PathSegment,
        _ if !is_builtin_group(group) => NameRule::Subdomain,
        _ if SUBDOMAIN_KINDS.contains(&(group, kind)) => NameRule::Subdomain,
        _ => NameRule::PathSegment,
    }
}

/// Checks `name` against `rule`; the error says what is wrong in a user's words.
pub fn check(rule: NameRule, name: &str) -> Result<(), String> {
    match rule {
        NameRule::Subdomain => check_subdomain(name),
        NameRule::Label => check_label(name, false),
        NameRule::Dns1035Label => check_label(name, true),
        NameRule::PathSegment => check_path_segment(name),
    }
}

fn shown(name: &str) -> String {
    crate::diag::quoted(name)
}

fn check_path_segment(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("{} is not a valid name", shown(name)));
    }
    if name.contains(['/', '%']) {
        return Err(format!(
            "{} is not a valid name: it may not contain '/' or '%'",
            shown(name)
        ));
    }
    Ok(())
}

/// Why one dot-free part of a name is not a label, if it is not.
fn label_fault(part: &str, letter_first: bool) -> Option<&'static str> {
    let first = part.chars().next()?;
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(if bad.is_ascii_uppercase() {
            "upper-case letters are not allowed"
        } else if bad == '_' {
            "'_' is not allowed (use '-')"
        } else if bad.is_whitespace() {
            "spaces are not allowed"
        } else {
            "only lower-case letters, digits, '-' and '.' are allowed"
        });
    }
    if letter_first && !first.is_ascii_lowercase() {
        return Some("it must start with a letter");
    }
    if first == '-' {
        return Some("it must start with a letter or digit");
    }
    if part.ends_with('-') {
        return Some("it must end with a letter or digit");
    }
    None
}

fn check_label(name: &str, letter_first: bool) -> Result<(), String> {
    let rule = if letter_first {
        "a DNS-1035 label"
    } else {
        "a DNS-1123 label"
    };
    if name.len() > LABEL_MAX {
        return Err(format!(
            "{} is not {rule}: it is {} characters long, at most {LABEL_MAX} are allowed",
            shown(name),
            name.len()
        ));
    }
    let fault = if name.contains('.') {
        Some("'.' is not allowed")
    } else {
        label_fault(name, letter_first)
    };
    match fault {
        Some(fault) => Err(format!(
            "{} is not {rule} (lower-case letters, digits and '-', starting with a {} and ending with a letter or digit): {fault}",
            shown(name),
            if letter_first {
                "letter"
            } else {
                "letter or digit"
            }
        )),
        None => Ok(()),
    }
}

fn check_subdomain(name: &str) -> Result<(), String> {
    const RULE: &str = "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit)";
    if name.len() > SUBDOMAIN_MAX {
        return Err(format!(
            "{} is not a valid name: it is {} characters long, at most {SUBDOMAIN_MAX} are allowed",
            shown(name),
            name.len()
        ));
    }
    for part in name.split('.') {
        let fault = if part.is_empty() {
            Some(if name.starts_with('.') || name.ends_with('.') {
                "it may not start or end with '.'"
            } else {
                "'..' is not allowed"
            })
        } else {
            label_fault(part, false)
        };
        if let Some(fault) = fault {
            return Err(format!("{} is not {RULE}: {fault}", shown(name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_as_the_api_server_checks_them() {
        for good in ["a", "a.b", "a-b.c-d", "0abc", "x".repeat(253).as_str()] {
            assert_eq!(check(NameRule::Subdomain, good), Ok(()), "{good}");
        }
        for bad in [
            "sp ace",
            "Upper_Case",
            "-lead",
            "trail-",
            "a..b",
            "bad.name.",
            ".a",
            "a_b",
            "a.-b",
            "é",
            "x".repeat(254).as_str(),
        ] {
            assert!(check(NameRule::Subdomain, bad).is_err(), "{bad}");
        }
        let err = check(NameRule::Subdomain, "Upper_Case").unwrap_err();
        assert!(err.contains("upper-case letters are not allowed"), "{err}");
        let err = check(NameRule::Subdomain, "a..b").unwrap_err();
        assert!(err.contains("'..' is not allowed"), "{err}");
    }

    #[test]
    fn labels_and_dns1035_labels() {
        assert_eq!(check(NameRule::Label, "team-a"), Ok(()));
        assert_eq!(check(NameRule::Label, "1team"), Ok(()));
        assert!(check(NameRule::Label, "team.a").is_err());
        assert!(check(NameRule::Label, &"a".repeat(64)).is_err());
        assert_eq!(check(NameRule::Dns1035Label, "svc-1"), Ok(()));
        let err = check(NameRule::Dns1035Label, "1svc").unwrap_err();
        assert!(err.contains("start with a letter"), "{err}");
    }

    #[test]
    fn rbac_names_may_hold_colons_and_unknown_builtin_kinds_are_lenient() {
        let rule = rule_for("rbac.authorization.k8s.io", "ClusterRole");
        assert_eq!(check(rule, "system:aggregate-to-view"), Ok(()));
        assert!(check(rule, "a/b").is_err());
        assert_eq!(
            rule_for("flowcontrol.apiserver.k8s.io", "FlowSchema"),
            NameRule::PathSegment
        );
        assert_eq!(
            rule_for("gateway.networking.k8s.io", "HTTPRoute"),
            NameRule::Subdomain
        );
        assert_eq!(
            rule_for("aigateway.envoyproxy.io", "AIGatewayRoute"),
            NameRule::Subdomain
        );
        assert_eq!(rule_for("", "ConfigMap"), NameRule::Subdomain);
        assert_eq!(rule_for("", "Namespace"), NameRule::Label);
        assert_eq!(rule_for("", "Service"), NameRule::Dns1035Label);
    }

    #[test]
    fn long_names_are_not_echoed_in_full() {
        let err = check(NameRule::Subdomain, &"A".repeat(10_000)).unwrap_err();
        assert!(err.len() < 400, "{}", err.len());
    }
}
