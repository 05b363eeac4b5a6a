//! Registry token scopes: `repository:<name>:<actions>`, as sent to a token
//! realm and as found in a token's `access` claim.

use std::fmt;

/// An action a registry token can allow on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests and blobs.
    Pull,
    /// Write manifests and blobs.
    Push,
}

impl Action {
    /// The name used in scopes (`pull`, `push`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
        }
    }
}

/// A repository scope: a repository and the actions on it, kept sorted and
/// without duplicates so equal scopes print equally.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    repository: String,
    actions: Vec<String>,
}

impl Scope {
    /// The scope asking for `actions` on `repository` (PUSH implies PULL at
    /// the registry, so it is asked for too).
    pub fn request(repository: &str, actions: &[Action]) -> Self {
        let mut names: Vec<String> = actions.iter().map(|a| a.as_str().to_owned()).collect();
        if actions.contains(&Action::Push) {
            names.push("pull".into());
        }
        if names.is_empty() {
            names.push("pull".into());
        }
        Self::new(repository, names)
    }

    /// A scope with arbitrary action names (as granted by a registry).
    pub fn new(repository: &str, actions: impl IntoIterator<Item = String>) -> Self {
        let mut actions: Vec<String> = actions.into_iter().filter(|a| !a.is_empty()).collect();
        actions.sort();
        actions.dedup();
        Self { repository: repository.to_owned(), actions }
    }

    /// Parses `repository:<name>:<a>,<b>`: the type is up to the first `:`,
    /// the actions after the last one (names may contain `:` with ports).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("repository:")?;
        let (name, actions) = rest.rsplit_once(':')?;
        if name.is_empty() {
            return None;
        }
        Some(Self::new(name, actions.split(',').map(str::to_owned)))
    }

    /// The repository.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The actions, sorted.
    pub fn actions(&self) -> &[String] {
        &self.actions
    }

    /// Does this scope allow `action` (directly or through `*`)?
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }

    /// The part of `self` that `granted` covers (actions in both, `*`
    /// granting all).
    pub fn intersect(&self, granted: &Scope) -> Scope {
        if granted.repository != self.repository {
            return Scope::new(&self.repository, Vec::new());
        }
        Scope::new(&self.repository, self.actions.iter().filter(|a| granted.allows(a)).cloned())
    }

    /// Does it allow nothing?
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repository:{}:{}", self.repository, self.actions.join(","))
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_scopes_print_sorted_and_push_implies_pull() {
        assert_eq!(Scope::request("team/app", &[]).to_string(), "repository:team/app:pull");
        assert_eq!(Scope::request("team/app", &[Action::Push]).to_string(), "repository:team/app:pull,push");
        assert_eq!(
            Scope::request("team/app", &[Action::Pull, Action::Push, Action::Pull]).to_string(),
            "repository:team/app:pull,push"
        );
    }

    #[test]
    fn scopes_parse_names_with_ports_and_intersect_with_grants() {
        let scope = Scope::parse("repository:localhost:5000/team/app:pull,push").unwrap();
        assert_eq!(scope.repository(), "localhost:5000/team/app");
        let requested = Scope::request("team/app", &[Action::Push]);
        assert_eq!(
            requested.intersect(&Scope::new("team/app", vec!["pull".into()])).to_string(),
            "repository:team/app:pull"
        );
        assert_eq!(requested.intersect(&Scope::new("team/app", vec!["*".into()])), requested);
        assert!(requested.intersect(&Scope::new("other", vec!["*".into()])).is_empty());
        assert!(Scope::parse("registry:catalog:*").is_none());
    }
}
