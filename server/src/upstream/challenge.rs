//! `WWW-Authenticate` challenges (RFC 7235 / RFC 9110 §11.6.1).
//!
//! A header may hold several challenges (`Basic realm="x", Bearer
//! realm="y",service="z"`); parameter values may be tokens or quoted strings
//! with backslash escapes and commas inside; schemes and parameter names are
//! case-insensitive. Several headers are concatenated by the caller.

use std::collections::BTreeMap;

/// One challenge: a scheme and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters by lowercased name.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter by (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge of the header values. Malformed parts are skipped
/// rather than failing the whole header; an empty result means "no usable
/// challenge".
pub fn parse(headers: &[&str]) -> Vec<Challenge> {
    headers.iter().flat_map(|h| parse_one(h)).collect()
}

fn parse_one(header: &str) -> Vec<Challenge> {
    let mut lexer = Lexer { input: header.as_bytes(), at: 0 };
    let mut challenges: Vec<Challenge> = Vec::new();
    loop {
        lexer.skip_separators();
        let Some(scheme) = lexer.token() else { break };
        let mut challenge = Challenge { scheme: scheme.to_ascii_lowercase(), params: BTreeMap::new() };
        // Parameters: name = value, separated by commas, until the next
        // token that is not followed by `=` (the next scheme).
        loop {
            lexer.skip_whitespace_and_commas();
            let checkpoint = lexer.at;
            let Some(name) = lexer.token() else { break };
            // Token68 (`Basic abc==`): its `=` padding ends the challenge.
            if challenge.params.is_empty() && lexer.token68_padding() {
                continue;
            }
            lexer.skip_whitespace();
            if !lexer.eat(b'=') {
                // The next challenge's scheme (or a token68 without padding).
                lexer.at = checkpoint;
                break;
            }
            lexer.skip_whitespace();
            let value = if lexer.peek() == Some(b'"') { lexer.quoted() } else { lexer.bare_value() };
            match value {
                Some(value) => {
                    challenge.params.entry(name.to_ascii_lowercase()).or_insert(value);
                }
                None => {
                    lexer.skip_to_comma();
                }
            }
        }
        challenges.push(challenge);
    }
    challenges
}

struct Lexer<'a> {
    input: &'a [u8],
    at: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b == b' ' || b == b'\t') {
            self.at += 1;
        }
    }

    fn skip_whitespace_and_commas(&mut self) {
        while self.peek().is_some_and(|b| b == b' ' || b == b'\t' || b == b',') {
            self.at += 1;
        }
    }

    fn skip_separators(&mut self) {
        self.skip_whitespace_and_commas();
    }

    fn skip_to_comma(&mut self) {
        while self.peek().is_some_and(|b| b != b',') {
            self.at += 1;
        }
    }

    /// An RFC 9110 token (with token68's `/` among its characters). Never
    /// holds `=`: parameter names and schemes are tokens.
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_token_char) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.input[start..self.at]).into_owned())
    }

    /// Skips a token68's `=` padding if one is here, ending the challenge
    /// (at the end of the value, or before a comma).
    fn token68_padding(&mut self) -> bool {
        let mut end = self.at;
        while self.input.get(end) == Some(&b'=') {
            end += 1;
        }
        let mut after = end;
        while self.input.get(after).is_some_and(|b| *b == b' ' || *b == b'\t') {
            after += 1;
        }
        if end > self.at && self.input.get(after).is_none_or(|b| *b == b',') {
            self.at = after;
            true
        } else {
            false
        }
    }

    /// An unquoted parameter value: lenient, up to the next comma or space
    /// (registries send unquoted URLs, which are not RFC tokens).
    fn bare_value(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(|b| b != b',' && b != b' ' && b != b'\t') {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.input[start..self.at]).into_owned())
    }

    /// A quoted string with `\` escapes; `None` if unterminated.
    fn quoted(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.at += 1;
                    }
                }
                other => out.push(other),
            }
        }
        None
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(header: &str) -> Challenge {
        let mut all = parse(&[header]);
        assert_eq!(all.len(), 1, "{header}: {all:?}");
        all.remove(0)
    }

    #[test]
    fn docker_hub_style_bearer_challenge() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/ubuntu:pull"));
    }

    #[test]
    fn parameter_names_never_take_an_equals_sign_from_the_value() {
        // Found by the www_authenticate fuzz target: `r= =r` once read as
        // the name `r=`, which no written form could give back.
        let c = one("Bearer r= =r");
        assert_eq!(c.params.keys().collect::<Vec<_>>(), ["r"]);
        assert_eq!(c.param("r"), Some("=r"));
        let basic = parse(&["Basic dXNlcjpwYXNz==, Bearer realm=x"]);
        assert_eq!(basic.len(), 2, "{basic:?}");
        assert!(basic[0].params.is_empty());
        assert_eq!(basic[1].param("realm"), Some("x"));
    }

    #[test]
    fn schemes_and_names_are_case_insensitive_and_tokens_need_no_quotes() {
        let c = one("BEARER Realm=https://r.example.com/jwt/auth, SERVICE=container_registry");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://r.example.com/jwt/auth"));
        assert_eq!(c.param("service"), Some("container_registry"));
    }

    #[test]
    fn quoted_strings_keep_commas_equals_and_escapes() {
        let c = one(r#"Bearer realm="https://a.example/t?x=1,y=2", service="say \"hi\", ok", scope="a:b:c,d""#);
        assert_eq!(c.param("realm"), Some("https://a.example/t?x=1,y=2"));
        assert_eq!(c.param("service"), Some(r#"say "hi", ok"#));
        assert_eq!(c.param("scope"), Some("a:b:c,d"));
    }

    #[test]
    fn several_challenges_in_one_or_many_headers() {
        let all =
            parse(&[r#"Basic realm="registry", Bearer realm="https://t.example/token",service="s""#, "Negotiate"]);
        let schemes: Vec<&str> = all.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate"]);
        assert_eq!(all[0].param("realm"), Some("registry"));
        assert_eq!(all[1].param("service"), Some("s"));
    }

    #[test]
    fn malformed_headers_yield_what_can_be_read_without_panicking() {
        assert!(parse(&[""]).is_empty());
        let c = one(r#"Bearer realm="unterminated"#);
        assert_eq!(c.param("realm"), None);
        let c = one("Basic abc123==");
        assert_eq!(c.scheme, "basic");
        for weird in ["=", ",,,", "Bearer ,,realm=", "Bearer realm=\"a\\", "\"\"", "Bearer realm==x"] {
            let _ = parse(&[weird]);
        }
    }
}
