//! For the targets whose property is "`Debug` does not depend on a secret":
//! the same value with the secret swapped for another must print the same.

/// Text of the same length in bytes as `secret` that differs from it in
/// every character (`x`, or `y` where `secret` has an `x`), so a `Debug`
/// that showed the secret, a part of it, or its length in any unit would
/// print something else.
pub fn other_text(secret: &str) -> String {
    secret.chars().flat_map(|c| std::iter::repeat_n(if c == 'x' { 'y' } else { 'x' }, c.len_utf8())).collect()
}
