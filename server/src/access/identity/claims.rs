//! Bindings and claims: how a binding names a claim, how its pattern
//! matches the token's value, what makes a binding acceptable, and the
//! explanation an ADMIN reads when a token does not match.
//!
//! * A claim is named by its top-level name (`sub`, `repository_owner_id`)
//!   or by a JSON pointer for nested claims (`/kubernetes.io/namespace`;
//!   RFC 6901, so `~1` is a `/` and `~0` a `~` inside a name).
//! * A token's value is compared as text: a string as itself, a number as
//!   its JSON text (`1234`), a boolean as `true`/`false`. So the pattern
//!   `true` matches GitLab's `ref_protected: "true"` and a boolean `true`
//!   alike, and `1234` matches GitHub's `repository_owner_id` whether a
//!   token carries it as `"1234"` or `1234`. An array matches if any of its
//!   elements does; objects and `null` match nothing.
//! * A pattern is exact, or a glob whose only metacharacter is `*`, which
//!   matches any run of characters except `:` and `/`. So
//!   `system:serviceaccount:ci:*` matches `system:serviceaccount:ci:builder`
//!   but neither `system:serviceaccount:ci-x:y` nor
//!   `system:serviceaccount:ci:a/b`.
//! * A binding binds at least one claim other than `aud`, `iss`, `exp`,
//!   `nbf` and `iat` (a binding on a shared issuer such as GitHub's must not
//!   admit every repository), with patterns that are not only `*`, and its
//!   role is LAUNCHER or VIEWER.

use serde_json::{Map, Value};

use super::{BindingRule, Verified};
use crate::domain::Role;
use crate::error::{Error, Violations};

/// Most bound claims in one binding.
pub const MAX_BOUND_CLAIMS: usize = 16;
/// Longest claim name or pointer, in bytes.
pub const MAX_CLAIM_NAME_LEN: usize = 256;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;
/// Most projects in one binding.
pub const MAX_ALLOWED_PROJECTS: usize = 100;
/// Longest value shown in an explanation, in characters.
pub const MAX_SHOWN_VALUE: usize = 200;
/// Claims that say nothing about who the caller is: every token of an
/// issuer has them, so they cannot be a binding's only claims.
pub const REGISTERED_CLAIMS: [&str; 5] = ["aud", "iss", "exp", "nbf", "iat"];

/// A claim's name: a top-level name, or a JSON pointer (its unescaped
/// reference tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    /// `sub`: the top-level claim of that name.
    Name(String),
    /// `/kubernetes.io/namespace`: the tokens `kubernetes.io`, `namespace`.
    Pointer(Vec<String>),
}

impl ClaimPath {
    /// Parses a claim name or a JSON pointer.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a claim name must not be empty".to_owned());
        }
        if text.len() > MAX_CLAIM_NAME_LEN {
            return Err(format!("a claim name is at most {MAX_CLAIM_NAME_LEN} bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err("a claim name must not contain control characters".to_owned());
        }
        let Some(pointer) = text.strip_prefix('/') else {
            return Ok(Self::Name(text.to_owned()));
        };
        let mut tokens = Vec::new();
        for raw in pointer.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(format!(
                            "`{}` is not a JSON pointer: `~` must be followed by 0 or 1",
                            shorten(text)
                        ));
                    }
                }
            }
            tokens.push(token);
        }
        Ok(Self::Pointer(tokens))
    }

    /// The top-level claim this names, if it names one directly (`aud` and
    /// `/aud` alike).
    pub fn top_level(&self) -> Option<&str> {
        match self {
            Self::Name(name) => Some(name),
            Self::Pointer(tokens) if tokens.len() == 1 => Some(&tokens[0]),
            Self::Pointer(_) => None,
        }
    }

    /// The reference tokens it names (`sub` and `/sub` alike).
    pub fn tokens(&self) -> Vec<&str> {
        match self {
            Self::Name(name) => vec![name.as_str()],
            Self::Pointer(tokens) => tokens.iter().map(String::as_str).collect(),
        }
    }

    /// The claim's value in `claims`, if present.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        match self {
            Self::Name(name) => claims.get(name),
            Self::Pointer(tokens) => {
                let (first, rest) = tokens.split_first()?;
                let mut value = claims.get(first)?;
                for token in rest {
                    value = match value {
                        Value::Object(object) => object.get(token)?,
                        Value::Array(items) => items.get(array_index(token)?)?,
                        _ => return None,
                    };
                }
                Some(value)
            }
        }
    }
}

/// An RFC 6901 array index: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Checks a pattern: not empty, bounded, no control characters, and not
/// only `*` and separators (`*:*` matches whatever `*` would).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a pattern must not be empty".to_owned());
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("a pattern is at most {MAX_PATTERN_LEN} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return Err("a pattern must not contain control characters".to_owned());
    }
    if pattern.bytes().all(|b| matches!(b, b'*' | b':' | b'/')) {
        return Err("a pattern must say something besides `*`, `:` and `/`".to_owned());
    }
    Ok(())
}

/// Does `pattern` match `text`? Exact, or a glob in which `*` matches any
/// run of characters except `:` and `/`.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    // `*` never crosses a separator, so the separators must line up one for
    // one, and each stretch between them matches on its own.
    let is_separator = |c: char| c == ':' || c == '/';
    if !pattern.chars().filter(|c| is_separator(*c)).eq(text.chars().filter(|c| is_separator(*c))) {
        return false;
    }
    pattern.split(is_separator).zip(text.split(is_separator)).all(|(p, t)| segment_matches(p.as_bytes(), t.as_bytes()))
}

/// Glob match within one stretch (no separators): `*` is any run.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// A scalar claim value as the text patterns compare with.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Does `pattern` match the claim value (any element of an array)?
pub fn value_matches(pattern: &str, value: &Value) -> bool {
    match value {
        Value::Array(items) => {
            items.iter().any(|item| scalar_text(item).is_some_and(|text| pattern_matches(pattern, &text)))
        }
        other => scalar_text(other).is_some_and(|text| pattern_matches(pattern, &text)),
    }
}

/// Does every bound claim of `binding` match `claims`? A binding that is
/// not valid (it could only come from a database written by another
/// version) matches nothing.
pub fn binding_matches(binding: &BindingRule, claims: &Map<String, Value>) -> bool {
    check_claims(&binding.bound_claims).is_ok()
        && binding.bound_claims.iter().all(|(claim, pattern)| {
            ClaimPath::parse(claim)
                .ok()
                .and_then(|path| path.lookup(claims).map(|value| value_matches(pattern, value)))
                .unwrap_or(false)
        })
}

/// The bound-claim rules, without the role.
fn check_claims(bound_claims: &[(String, String)]) -> Result<(), String> {
    if bound_claims.is_empty() {
        return Err("bind at least one claim".to_owned());
    }
    if bound_claims.len() > MAX_BOUND_CLAIMS {
        return Err(format!("a binding binds at most {MAX_BOUND_CLAIMS} claims"));
    }
    let mut identifying = false;
    for (i, (claim, pattern)) in bound_claims.iter().enumerate() {
        let path = ClaimPath::parse(claim)?;
        check_pattern(pattern).map_err(|why| format!("`{}`: {why}", shorten(claim)))?;
        if bound_claims[..i]
            .iter()
            .any(|(earlier, _)| ClaimPath::parse(earlier).is_ok_and(|e| e.tokens() == path.tokens()))
        {
            return Err(format!("`{}` is bound twice", shorten(claim)));
        }
        // `/aud/0` names `aud` as much as `aud` does.
        identifying |= !path.tokens().first().is_some_and(|name| REGISTERED_CLAIMS.contains(name));
    }
    if !identifying {
        return Err(
            "bind at least one claim other than aud, iss, exp, nbf and iat (such as sub, or an immutable id like repository_owner_id): \
             every token of the issuer has those"
                .to_owned(),
        );
    }
    Ok(())
}

/// Checks a binding before it is stored: its claims and patterns, its
/// role (LAUNCHER or VIEWER), its number of projects. Fields are named as
/// in `identity_binding`.
pub fn validate_binding(binding: &BindingRule) -> Result<(), Error> {
    let mut violations = Violations::default();
    if let Err(why) = check_claims(&binding.bound_claims) {
        violations.add("identity_binding.bound_claims", why);
    }
    if !matches!(binding.role, Role::Launcher | Role::Viewer) {
        violations.add(
            "identity_binding.role",
            "a binding grants LAUNCHER or VIEWER; ADMIN and ROOT are never granted to a workload identity",
        );
    }
    if binding.allowed_projects.len() > MAX_ALLOWED_PROJECTS {
        violations.add("identity_binding.allowed_projects", format!("at most {MAX_ALLOWED_PROJECTS} projects"));
    }
    violations.finish()
}

/// How one bound claim of a binding fared against a token.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimExplanation {
    /// The claim, as the binding names it.
    pub claim: String,
    /// The binding's pattern.
    pub pattern: String,
    /// The token's value as text (arrays as JSON), at most
    /// [`MAX_SHOWN_VALUE`] characters; `None` when the token lacks it.
    pub value: Option<String>,
    /// Did it match?
    pub matched: bool,
}

impl std::fmt::Debug for ClaimExplanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimExplanation")
            .field("claim", &self.claim)
            .field("present", &self.value.is_some())
            .field("matched", &self.matched)
            .finish_non_exhaustive()
    }
}

/// How one binding fared against a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingExplanation {
    /// The binding's name.
    pub binding: String,
    /// Is the binding for the provider that verified the token? If not,
    /// no value is shown.
    pub provider_matches: bool,
    /// Did the whole binding match?
    pub matched: bool,
    /// Each bound claim, in the binding's order.
    pub claims: Vec<ClaimExplanation>,
}

/// Explains, per binding, each bound claim with its pattern, the token's
/// value and whether it matched. It shows only claims some binding names,
/// and values only for bindings of the provider that verified the token.
pub fn explain(bindings: &[BindingRule], verified: &Verified) -> Vec<BindingExplanation> {
    bindings
        .iter()
        .map(|binding| {
            let provider_matches = binding.provider == verified.provider;
            let claims = binding
                .bound_claims
                .iter()
                .map(|(claim, pattern)| {
                    let value = ClaimPath::parse(claim)
                        .ok()
                        .filter(|_| provider_matches)
                        .and_then(|path| path.lookup(&verified.claims).cloned());
                    ClaimExplanation {
                        claim: claim.clone(),
                        pattern: pattern.clone(),
                        matched: value.as_ref().is_some_and(|v| value_matches(pattern, v)),
                        value: value.as_ref().map(shown),
                    }
                })
                .collect();
            BindingExplanation {
                binding: binding.name.clone(),
                provider_matches,
                matched: provider_matches && binding_matches(binding, &verified.claims),
                claims,
            }
        })
        .collect()
}

/// A value as shown in an explanation: scalars as text, the rest as JSON,
/// cut at [`MAX_SHOWN_VALUE`] characters.
fn shown(value: &Value) -> String {
    let text = scalar_text(value).unwrap_or_else(|| value.to_string());
    if text.chars().count() <= MAX_SHOWN_VALUE {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_SHOWN_VALUE).collect();
    cut.push('…');
    cut
}

/// At most 64 characters of a name, for messages.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(64).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ProjectName;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn binding(bound: &[(&str, &str)], role: Role) -> BindingRule {
        BindingRule {
            name: "ci".to_owned(),
            provider: "cluster".to_owned(),
            bound_claims: bound.iter().map(|(c, p)| (c.to_string(), p.to_string())).collect(),
            role,
            allowed_projects: vec![],
        }
    }

    fn kubernetes_claims() -> Map<String, Value> {
        claims(json!({
            "iss": "https://cluster.example",
            "aud": ["pullpass"],
            "sub": "system:serviceaccount:ci:builder",
            "kubernetes.io": {
                "namespace": "ci",
                "serviceaccount": {"name": "builder", "uid": "7f1c"},
                "pod": {"name": "builder-0", "uid": "aa"},
            },
            "a/b": {"c~d": "slash-and-tilde"},
            "groups": ["dev", "ops"],
        }))
    }

    #[test]
    fn a_glob_does_not_cross_colons_or_slashes() {
        let pattern = "system:serviceaccount:ci:*";
        assert!(pattern_matches(pattern, "system:serviceaccount:ci:builder"));
        assert!(pattern_matches(pattern, "system:serviceaccount:ci:"));
        assert!(!pattern_matches(pattern, "system:serviceaccount:ci-x:y"));
        assert!(!pattern_matches(pattern, "system:serviceaccount:ci:a/b"));
        assert!(!pattern_matches(pattern, "system:serviceaccount:ci:a:b"));
        assert!(!pattern_matches("repo:org/app*", "repo:org/app-evil:ref:refs/heads/main"));
        assert!(pattern_matches("repo:org/app*:ref:*", "repo:org/app-x:ref:main"));
        assert!(!pattern_matches("ci*", "ci-evil/x"));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxbyy"));
        assert!(pattern_matches("*-prod", "eu-west-prod"));
    }

    #[test]
    fn a_pattern_without_a_star_is_exact() {
        assert!(pattern_matches("main", "main"));
        assert!(!pattern_matches("main", "main2"));
        assert!(!pattern_matches("ma?n", "main"));
        assert!(!pattern_matches("ma[i]n", "main"));
    }

    #[test]
    fn json_pointers_reach_nested_claims_with_rfc6901_escapes() {
        let claims = kubernetes_claims();
        let lookup = |text: &str| ClaimPath::parse(text).unwrap().lookup(&claims).cloned();
        assert_eq!(lookup("/kubernetes.io/namespace"), Some(json!("ci")));
        assert_eq!(lookup("/kubernetes.io/serviceaccount/uid"), Some(json!("7f1c")));
        assert_eq!(lookup("/a~1b/c~0d"), Some(json!("slash-and-tilde")));
        assert_eq!(lookup("/groups/1"), Some(json!("ops")));
        assert_eq!(lookup("/groups/01"), None);
        assert_eq!(lookup("/kubernetes.io/missing"), None);
        assert_eq!(lookup("sub"), Some(json!("system:serviceaccount:ci:builder")));
        assert_eq!(lookup("kubernetes.io/namespace"), None, "a name without a leading slash is a top-level name");
        assert!(ClaimPath::parse("/a~2b").is_err());
        assert!(ClaimPath::parse("/a~").is_err());
        assert_eq!(ClaimPath::parse("/aud").unwrap().top_level(), Some("aud"));
    }

    #[test]
    fn numbers_and_booleans_compare_as_their_json_text_either_way() {
        let as_string = claims(json!({"ref_protected": "true", "repository_owner_id": "1234"}));
        let as_json = claims(json!({"ref_protected": true, "repository_owner_id": 1234}));
        for claims in [as_string, as_json] {
            let rule = binding(&[("ref_protected", "true"), ("repository_owner_id", "1234")], Role::Launcher);
            assert!(binding_matches(&rule, &claims));
            let other = binding(&[("ref_protected", "false"), ("repository_owner_id", "1234")], Role::Launcher);
            assert!(!binding_matches(&other, &claims));
        }
        assert!(!value_matches("null", &Value::Null));
        assert!(!value_matches("*x*", &json!({"x": "x"})));
    }

    #[test]
    fn an_array_claim_matches_if_any_element_does() {
        let claims = kubernetes_claims();
        assert!(binding_matches(&binding(&[("groups", "ops")], Role::Viewer), &claims));
        assert!(!binding_matches(&binding(&[("groups", "sec")], Role::Viewer), &claims));
    }

    #[test]
    fn every_bound_claim_must_match_and_a_missing_claim_matches_nothing() {
        let claims = kubernetes_claims();
        let both = binding(
            &[("/kubernetes.io/namespace", "ci"), ("/kubernetes.io/serviceaccount/name", "builder")],
            Role::Launcher,
        );
        assert!(binding_matches(&both, &claims));
        let one_wrong =
            binding(&[("/kubernetes.io/namespace", "ci"), ("/kubernetes.io/serviceaccount/name", "x")], Role::Launcher);
        assert!(!binding_matches(&one_wrong, &claims));
        assert!(!binding_matches(&binding(&[("environment", "*prod")], Role::Launcher), &claims));
    }

    #[test]
    fn a_binding_with_no_claim_but_registered_ones_is_refused() {
        for bound in [
            &[][..],
            &[("aud", "pullpass")],
            &[("aud", "pullpass"), ("iss", "https://token.actions.githubusercontent.com")],
            &[("/aud", "pullpass")],
            // A pointer into `aud` (an array in Kubernetes tokens) names it too.
            &[("/aud/0", "pullpass")],
            &[("/exp/x", "1"), ("/iss", "https://kubernetes.default.svc")],
        ] {
            let refused = validate_binding(&binding(bound, Role::Launcher)).unwrap_err();
            let Error::InvalidArgument(violations) = refused else { panic!("{refused:?}") };
            assert_eq!(violations[0].field, "identity_binding.bound_claims", "{bound:?}");
        }
        assert!(!binding_matches(&binding(&[("aud", "pullpass")], Role::Launcher), &kubernetes_claims()));
        assert_eq!(
            validate_binding(&binding(&[("aud", "pullpass"), ("sub", "repo:org/app:*")], Role::Launcher)),
            Ok(())
        );
    }

    #[test]
    fn admin_or_root_in_a_binding_is_refused() {
        for role in [Role::Admin, Role::Root] {
            let refused = validate_binding(&binding(&[("sub", "x")], role)).unwrap_err();
            let Error::InvalidArgument(violations) = refused else { panic!("{refused:?}") };
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].field, "identity_binding.role");
        }
        assert_eq!(validate_binding(&binding(&[("sub", "x")], Role::Viewer)), Ok(()));
    }

    #[test]
    fn claim_names_patterns_and_counts_are_bounded() {
        let long_name = "a".repeat(MAX_CLAIM_NAME_LEN + 1);
        let long_pattern = "a".repeat(MAX_PATTERN_LEN + 1);
        let many: Vec<(String, String)> = (0..=MAX_BOUND_CLAIMS).map(|i| (format!("c{i}"), "x".to_owned())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(c, p)| (c.as_str(), p.as_str())).collect();
        for bound in [
            vec![(long_name.as_str(), "x")],
            vec![("sub", long_pattern.as_str())],
            vec![("sub", "")],
            vec![("sub", "*")],
            vec![("sub", "**")],
            vec![("sub", "*:*")],
            vec![("sub", "*/*:*")],
            vec![("sub", "a\nb")],
            vec![("sub", "a"), ("/sub", "b")],
            many,
        ] {
            assert!(validate_binding(&binding(&bound, Role::Launcher)).is_err(), "{bound:?}");
        }
        let mut too_many_projects = binding(&[("sub", "x")], Role::Launcher);
        too_many_projects.allowed_projects =
            (0..=MAX_ALLOWED_PROJECTS).map(|i| ProjectName::parse(&format!("p{i}")).unwrap()).collect();
        assert!(validate_binding(&too_many_projects).is_err());
    }

    #[test]
    fn an_explanation_shows_only_bound_claims_and_bounds_values() {
        let mut claims = kubernetes_claims();
        claims.insert("long".to_owned(), json!("x".repeat(500)));
        claims.insert("secretish".to_owned(), json!("never-shown"));
        let verified = Verified::for_tests("cluster", claims);
        let rules = vec![
            binding(
                &[("/kubernetes.io/namespace", "ci"), ("sub", "system:serviceaccount:ci:*"), ("long", "x*")],
                Role::Launcher,
            ),
            BindingRule { provider: "github".to_owned(), ..binding(&[("sub", "repo:org/app:*")], Role::Launcher) },
        ];
        let explained = explain(&rules, &verified);
        assert_eq!(explained.len(), 2);
        assert!(explained[0].matched && explained[0].provider_matches);
        assert_eq!(explained[0].claims[0].value.as_deref(), Some("ci"));
        assert!(explained[0].claims.iter().all(|c| c.matched));
        let long = explained[0].claims[2].value.as_deref().unwrap();
        assert_eq!(long.chars().count(), MAX_SHOWN_VALUE + 1);
        assert!(!explained[1].matched && !explained[1].provider_matches);
        assert_eq!(explained[1].claims[0].value, None, "another provider's binding shows no value");
        let text = format!("{explained:?}");
        assert!(!text.contains("never-shown") && !text.contains("builder"), "{text}");
    }
}
