//! The AIP-160 filter subset pullpass accepts: `term (AND term)*` with
//! `term := field op value`, `op` one of `=`, `>=`, `<`, and `value` a bare
//! word or a quoted string with backslash escapes. Each list RPC decides
//! which fields and operators it accepts.

use crate::domain::ids::shorten;
use crate::error::Error;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Equals,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field name.
    pub field: String,
    /// The operator.
    pub op: Op,
    /// The value, unquoted.
    pub value: String,
}

/// Splits a filter into terms; errors are INVALID_ARGUMENT on `filter`.
pub fn terms(filter: &str) -> Result<Vec<Term>, Error> {
    let invalid = |message: String| Error::invalid("filter", message);
    let tokens = tokenize(filter).map_err(invalid)?;
    let mut terms = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    if tokens.peek().is_none() {
        return Ok(terms);
    }
    loop {
        let field = match tokens.next() {
            Some(Token::Word(field)) => field,
            _ => return Err(invalid("expected a field name".into())),
        };
        let op = match tokens.next() {
            Some(Token::Op(op)) => op,
            _ => return Err(invalid(format!("expected `=`, `>=` or `<` after `{}`", shorten(&field)))),
        };
        let value = match tokens.next() {
            Some(Token::Word(value) | Token::Quoted(value)) => value,
            _ => return Err(invalid(format!("expected a value after `{}`", shorten(&field)))),
        };
        terms.push(Term { field, op, value });
        match tokens.next() {
            None => return Ok(terms),
            Some(Token::Word(and)) if and == "AND" => continue,
            Some(_) => return Err(invalid("terms must be joined by `AND`".into())),
        }
    }
}

/// `value` as a quoted string that [`terms`] reads back as exactly `value`,
/// whatever it holds (backslashes and double quotes are escaped), for
/// callers that build a filter from values they were given.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An error for a term a list RPC does not accept.
pub fn unsupported(term: &Term, accepted: &str) -> Error {
    Error::invalid("filter", format!("cannot filter on `{}` that way; accepted: {accepted}", shorten(&term.field)))
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                tokens.push(Token::Op(Op::Equals));
            }
            '>' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err("`>` must be `>=`".into());
                }
                tokens.push(Token::Op(Op::AtLeast));
            }
            '<' => {
                chars.next();
                tokens.push(Token::Op(Op::Below));
            }
            '"' => {
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
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '=' | '"' | '<' | '>') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_with_each_operator_and_quoting() {
        let parsed = terms(r#"action = CreateCredential AND event_time >= "2026-01-01T00:00:00Z" AND event_time<"2027-01-01T00:00:00Z""#).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], Term { field: "action".into(), op: Op::Equals, value: "CreateCredential".into() });
        assert_eq!(parsed[1].op, Op::AtLeast);
        assert_eq!(parsed[2].op, Op::Below);
        assert!(terms("").unwrap().is_empty());
        for bad in ["a", "a =", "a > b", "a = b OR c = d", "a = \"x", "= b"] {
            assert!(terms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_quoted_value_reads_back_as_itself() {
        for value in ["plain", "", "x\\", "\\", "a\"b", "\"", "\\\"", "x AND y = z", "tab\there", "ünï"] {
            let filter = format!("resource = {} AND action = next", quoted(value));
            let parsed = terms(&filter).unwrap_or_else(|e| panic!("{value:?}: {e:?}"));
            assert_eq!(parsed.len(), 2, "{value:?}");
            assert_eq!(parsed[0].value, value);
            assert_eq!(parsed[1].value, "next");
        }
    }
}
