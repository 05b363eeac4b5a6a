//! The `ListCredentials` filter: a small AIP-160 subset.
//!
//! Grammar: `term (AND term)*`, `term := field "=" value`, where field is
//! `registry_server` or `provider` and value is a bare word or a quoted
//! string. Each field at most once.

use pullpass::registry::RegistryServer;

use crate::domain::Provider;
use crate::error::Error;
use crate::store::credentials::CredentialFilter;

/// Parses a filter; the empty string matches everything.
pub fn parse(filter: &str) -> Result<CredentialFilter, Error> {
    let invalid = |message: String| Error::invalid("filter", message);
    let mut parsed = CredentialFilter::default();
    let mut tokens = tokenize(filter).map_err(invalid)?.into_iter().peekable();
    if tokens.peek().is_none() {
        return Ok(parsed);
    }
    loop {
        let field = tokens.next().ok_or_else(|| invalid("expected a field after `AND`".into()))?;
        match tokens.next() {
            Some(op) if op == "=" => {}
            _ => return Err(invalid(format!("expected `=` after `{field}`"))),
        }
        let value = tokens.next().ok_or_else(|| invalid(format!("expected a value after `{field} =`")))?;
        match field.as_str() {
            "registry_server" if parsed.registry.is_none() => {
                let server = RegistryServer::parse(&value).map_err(|e| invalid(format!("registry_server {e}")))?;
                parsed.registry = Some(server.server);
            }
            "provider" if parsed.provider.is_none() => {
                parsed.provider =
                    Some(Provider::from_wire_name(&value).ok_or_else(|| {
                        invalid(format!("unknown provider `{}`", crate::domain::ids::shorten(&value)))
                    })?);
            }
            "registry_server" | "provider" => return Err(invalid(format!("`{field}` appears twice"))),
            other => {
                return Err(invalid(format!(
                    "unknown field `{}`; filter on `registry_server` or `provider`",
                    crate::domain::ids::shorten(other)
                )));
            }
        }
        match tokens.next() {
            None => return Ok(parsed),
            Some(and) if and == "AND" => continue,
            Some(other) => {
                return Err(invalid(format!("expected `AND`, found `{}`", crate::domain::ids::shorten(&other))));
            }
        }
    }
}

/// The canonical form of a parsed filter, bound into page tokens.
pub fn canonical(filter: &CredentialFilter) -> String {
    format!(
        "registry={};provider={}",
        filter.registry.as_ref().map(ToString::to_string).unwrap_or_default(),
        filter.provider.map(Provider::wire_name).unwrap_or_default()
    )
}

fn tokenize(input: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '=' {
            chars.next();
            tokens.push("=".into());
        } else if c == '"' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or("unterminated escape")?),
                    Some(other) => value.push(other),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            tokens.push(value);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '=' || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        }
    }
    Ok(tokens)
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
