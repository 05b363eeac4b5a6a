//! The `ListCredentials` filter: a small AIP-160 subset.
//!
//! Grammar: `term (AND term)*`, `term := field "=" value`, where field is
//! `registry_server` or `provider` and value is a bare word or a quoted
//! string. Each field at most once.

use pullpass::registry::RegistryServer;

use crate::domain::Provider;
use crate::domain::ids::shorten;
use crate::error::Error;
use crate::filter::{Op, terms, unsupported};
use crate::store::CredentialFilter;

/// Parses a filter; the empty string matches everything.
pub fn parse(filter: &str) -> Result<CredentialFilter, Error> {
    let invalid = |message: String| Error::invalid("filter", message);
    let mut parsed = CredentialFilter::default();
    for term in terms(filter)? {
        match (term.field.as_str(), term.op) {
            ("registry_server", Op::Equals) if parsed.registry.is_none() => {
                let server = RegistryServer::parse(&term.value).map_err(|e| invalid(format!("registry_server {e}")))?;
                parsed.registry = Some(server.server);
            }
            ("provider", Op::Equals) if parsed.provider.is_none() => {
                parsed.provider = Some(
                    Provider::from_wire_name(&term.value)
                        .ok_or_else(|| invalid(format!("unknown provider `{}`", shorten(&term.value))))?,
                );
            }
            ("registry_server" | "provider", Op::Equals) => {
                return Err(invalid(format!("`{}` appears twice", term.field)));
            }
            _ => return Err(unsupported(&term, "`registry_server = \"…\"`, `provider = GHCR`")),
        }
    }
    Ok(parsed)
}

/// The canonical form of a parsed filter, bound into page tokens.
pub fn canonical(filter: &CredentialFilter) -> String {
    format!(
        "registry={};provider={}",
        filter.registry.as_ref().map(ToString::to_string).unwrap_or_default(),
        filter.provider.map(Provider::wire_name).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_and_provider_terms_combine_with_and() {
        let f = parse(r#"registry_server = "https://index.docker.io/v1/" AND provider=DOCKER_HUB"#).unwrap();
        assert_eq!(f.registry.unwrap().to_string(), "docker.io");
        assert_eq!(f.provider, Some(Provider::DockerHub));
        assert_eq!(parse("").unwrap(), CredentialFilter::default());
        assert_eq!(parse("provider = ghcr").unwrap().provider, Some(Provider::Ghcr));
    }

    #[test]
    fn malformed_filters_are_invalid_argument_on_filter() {
        for bad in [
            "provider",
            "provider =",
            "provider = NOPE",
            "username = x",
            "provider = GHCR OR provider = QUAY",
            "provider = GHCR AND",
            "provider = GHCR AND provider = QUAY",
            "registry_server = \"ghcr .io\"",
            "registry_server = \"unterminated",
        ] {
            match parse(bad) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "filter", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
