//! A submitted HTML form, read once at the edge: `application/x-www-form-
//! urlencoded` or `multipart/form-data` (the file uploads: a Google
//! service-account key, a docker `config.json`), with a bound on the body.
//! Field values that are secrets (the password, an uploaded key) are kept
//! in zeroizing buffers and are never logged or shown again.
//!
//! The raw body is secret too (it holds those values): [`collect`] gathers
//! it into one zeroizing buffer (grown by hand, so no reallocation leaves a
//! copy behind), and the parsers read it in place, copying each value once,
//! into its own zeroizing buffer; the body is wiped when the form is read.
//! Multipart bodies are parsed here rather than by a streaming parser,
//! which would keep unzeroized copies in its own buffers.

use std::collections::HashMap;

use bytes::Buf;
use http::HeaderMap;
use http_body_util::BodyExt;
use zeroize::Zeroizing;

/// Largest form body accepted (an uploaded `config.json` or key included).
pub const MAX_FORM_BYTES: usize = 1024 * 1024;

/// Why a body is not a form this console takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Longer than [`MAX_FORM_BYTES`].
    TooLarge,
    /// The connection failed while the body was read.
    Broken,
    /// Not urlencoded or multipart, or malformed.
    Malformed(String),
}

/// The fields and files of one form.
#[derive(Default)]
pub struct Form {
    fields: HashMap<String, Vec<Zeroizing<String>>>,
    files: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.fields.keys().chain(self.files.keys()).collect();
        names.sort();
        f.debug_struct("Form").field("names", &names).finish()
    }
}

/// Reads a request body into one zeroizing buffer, at most
/// [`MAX_FORM_BYTES`] (the caller bounds the time it may take).
pub async fn collect<B>(body: B) -> Result<Zeroizing<Vec<u8>>, FormError>
where
    B: http_body::Body,
{
    let mut body = std::pin::pin!(body);
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(MAX_FORM_BYTES);
    if hint > MAX_FORM_BYTES {
        return Err(FormError::TooLarge);
    }
    let mut buffer = Zeroizing::new(Vec::with_capacity(hint));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| FormError::Broken)?.into_data() else { continue };
        let mut data = data;
        while data.has_remaining() {
            let chunk = data.chunk();
            let taken = chunk.len();
            append(&mut buffer, chunk)?;
            data.advance(taken);
        }
    }
    Ok(buffer)
}

/// Appends `data`, growing `buffer` into a new zeroizing allocation when it
/// is full (a `Vec` growing by itself would free the old one unwiped).
fn append(buffer: &mut Zeroizing<Vec<u8>>, data: &[u8]) -> Result<(), FormError> {
    let needed = buffer.len().checked_add(data.len()).filter(|n| *n <= MAX_FORM_BYTES).ok_or(FormError::TooLarge)?;
    if needed > buffer.capacity() {
        let capacity = needed.max(buffer.capacity().saturating_mul(2)).clamp(1024, MAX_FORM_BYTES);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity.max(needed)));
        grown.extend_from_slice(buffer);
        // The old buffer is wiped as `grown` (now holding it) drops.
        std::mem::swap(buffer, &mut grown);
    }
    buffer.extend_from_slice(data);
    Ok(())
}

impl Form {
    /// Reads a form body of the type `headers` declare; the body is wiped
    /// when this returns.
    pub fn read(headers: &HeaderMap, body: impl Into<Zeroizing<Vec<u8>>>) -> Result<Self, FormError> {
        let body = body.into();
        if body.len() > MAX_FORM_BYTES {
            return Err(FormError::TooLarge);
        }
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-www-form-urlencoded" | "" => Ok(Self::urlencoded(&body)),
            "multipart/form-data" => Self::multipart(content_type, &body),
            other => Err(FormError::Malformed(format!("a form cannot be `{}`", crate::domain::ids::shorten(other)))),
        }
    }

    fn urlencoded(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (name, value) in form_urlencoded::parse(body) {
            form.fields.entry(name.into_owned()).or_default().push(Zeroizing::new(value.into_owned()));
        }
        form
    }

    /// A `multipart/form-data` body (RFC 7578) as browsers send it: parts
    /// between `--boundary` lines, each with a `Content-Disposition:
    /// form-data; name="…"` header (and `filename="…"` for a file).
    fn multipart(content_type: &str, body: &[u8]) -> Result<Self, FormError> {
        let malformed = |why: &str| FormError::Malformed(format!("a malformed multipart form: {why}"));
        let boundary = boundary(content_type).ok_or_else(|| malformed("no boundary in its Content-Type"))?;
        let delimiter = [b"--", boundary.as_bytes()].concat();
        let next_delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        // Skip a preamble, if any.
        let mut rest = if body.starts_with(&delimiter) {
            &body[delimiter.len()..]
        } else {
            let at = find(body, &next_delimiter).ok_or_else(|| malformed("no boundary line"))?;
            &body[at + next_delimiter.len()..]
        };
        let mut form = Self::default();
        loop {
            if rest.starts_with(b"--") {
                return Ok(form);
            }
            // Transport padding, then the end of the boundary line.
            let line_end = find(rest, b"\r\n").ok_or_else(|| malformed("a boundary line does not end"))?;
            if rest[..line_end].iter().any(|b| !matches!(b, b' ' | b'\t')) {
                return Err(malformed("text after a boundary"));
            }
            rest = &rest[line_end + 2..];
            let headers_end = find(rest, b"\r\n\r\n")
                .map(|at| (at, at + 4))
                .or_else(|| rest.starts_with(b"\r\n").then_some((0, 2)))
                .ok_or_else(|| malformed("a part's headers do not end"))?;
            let headers = std::str::from_utf8(&rest[..headers_end.0]).map_err(|_| malformed("headers not UTF-8"))?;
            rest = &rest[headers_end.1..];
            let content_end = find(rest, &next_delimiter).ok_or_else(|| malformed("a part does not end"))?;
            let content = &rest[..content_end];
            rest = &rest[content_end + next_delimiter.len()..];
            let (name, filename) = disposition(headers).ok_or_else(|| malformed("a part has no form-data name"))?;
            if filename.is_some() {
                // An empty file input (nothing chosen) is no file.
                if !content.is_empty() {
                    form.files.insert(name, Zeroizing::new(content.to_vec()));
                }
            } else {
                let text = std::str::from_utf8(content).map_err(|_| {
                    FormError::Malformed(format!("field `{}` is not UTF-8", crate::domain::ids::shorten(&name)))
                })?;
                form.fields.entry(name).or_default().push(Zeroizing::new(text.to_owned()));
            }
        }
    }

    /// The first value of a field, trimmed ("" when absent).
    pub fn text(&self, name: &str) -> String {
        self.fields.get(name).and_then(|v| v.first()).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    /// The first value of a secret field, as sent (not trimmed: a secret is
    /// what it is), in a zeroizing buffer; `None` when empty or absent.
    pub fn secret(&self, name: &str) -> Option<Zeroizing<String>> {
        self.fields.get(name).and_then(|v| v.first()).filter(|v| !v.is_empty()).cloned()
    }

    /// Is a checkbox ticked?
    pub fn checked(&self, name: &str) -> bool {
        self.fields.get(name).is_some_and(|v| v.iter().any(|value| !value.is_empty()))
    }

    /// An uploaded file's bytes, when one was chosen.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|bytes| bytes.as_slice())
    }

    /// A comma- or line-separated list field, each item trimmed, empty items
    /// dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.text(name).split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    /// A field of one item per line (a textarea), each line trimmed, empty
    /// lines dropped.
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.text(name).lines().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    /// Every value sent under `name` (checkboxes of one group), trimmed,
    /// empty ones dropped.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields.get(name).into_iter().flatten().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect()
    }
}

/// The `boundary` parameter of a multipart Content-Type (1 to 70
/// characters, RFC 2046), unquoted.
fn boundary(content_type: &str) -> Option<String> {
    let value = parameters(content_type).find(|(key, _)| key.eq_ignore_ascii_case("boundary"))?.1;
    (1..=70).contains(&value.len()).then_some(value)
}

/// The `name` (and `filename`, for a file) of a part's
/// `Content-Disposition: form-data` header.
fn disposition(headers: &str) -> Option<(String, Option<String>)> {
    let value = headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case("content-disposition").then_some(value)
    })?;
    if !value.split(';').next()?.trim().eq_ignore_ascii_case("form-data") {
        return None;
    }
    let mut name = None;
    let mut filename = None;
    for (key, value) in parameters(value) {
        if key.eq_ignore_ascii_case("name") {
            name = Some(value);
        } else if key.eq_ignore_ascii_case("filename") {
            filename = Some(value);
        }
    }
    Some((name?, filename))
}

/// The `key=value` parameters after the first `;` of a header value; quoted
/// values are unquoted (`\"` and `\\` unescaped). A `;` inside quotes is
/// part of the value.
fn parameters(header: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let mut rest = header.split_once(';').map_or("", |(_, rest)| rest);
    std::iter::from_fn(move || {
        loop {
            let trimmed = rest.trim_start_matches([' ', '\t', ';']);
            if trimmed.is_empty() {
                return None;
            }
            let key_end = trimmed.find(['=', ';']).unwrap_or(trimmed.len());
            let key = trimmed[..key_end].trim().to_owned();
            let Some(after) = trimmed[key_end..].strip_prefix('=') else {
                // A parameter without a value says nothing here.
                rest = &trimmed[key_end..];
                continue;
            };
            let after = after.trim_start();
            if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = at + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                rest = &quoted[end..];
                return Some((key, value));
            }
            let (value, after) = after.split_once(';').unwrap_or((after, ""));
            rest = after;
            if !key.is_empty() {
                return Some((key, value.trim().to_owned()));
            }
        }
    })
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(offset) = haystack.get(from..)?.iter().position(|b| *b == first) {
        let at = from + offset;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    fn body(text: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(text.to_vec())
    }

    #[test]
    fn urlencoded_and_multipart_forms_read_the_same_fields_and_files() {
        let plain = Form::read(
            &headers("application/x-www-form-urlencoded"),
            body(b"name=gh+cr&password=p%26w&restrict=on&projects=a%2C+b%0Ac"),
        )
        .unwrap();
        assert_eq!(plain.text("name"), "gh cr");
        assert_eq!(plain.secret("password").as_deref().map(String::as_str), Some("p&w"));
        assert!(plain.checked("restrict") && !plain.checked("passthrough"));
        assert_eq!(plain.list("projects"), ["a", "b", "c"]);
        let lines = Form::read(
            &headers("application/x-www-form-urlencoded"),
            body(b"aud=a%2Cb%0D%0A%0D%0A+c+%0D%0A&alg=RS256&alg=&alg=ES256"),
        )
        .unwrap();
        assert_eq!(lines.lines("aud"), ["a,b", "c"], "one item per line, commas kept");
        assert_eq!(lines.all("alg"), ["RS256", "ES256"]);
        assert!(lines.all("none").is_empty());
        assert!(!format!("{plain:?}").contains("p&w"));

        let text = "--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ngoogle\r\n\
                    --B\r\nContent-Disposition: form-data; name=\"key\"; filename=\"k.json\"\r\n\
                    Content-Type: application/json\r\n\r\n{\"type\":\"x\"}\r\n\
                    --B\r\nContent-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\r\n\r\n--B--\r\n";
        let multi = Form::read(&headers("multipart/form-data; boundary=B"), body(text.as_bytes())).unwrap();
        assert_eq!(multi.text("name"), "google");
        assert_eq!(multi.file("key"), Some(&b"{\"type\":\"x\"}"[..]));
        assert_eq!(multi.file("empty"), None);
    }

    #[test]
    fn multipart_parts_are_read_as_browsers_write_them() {
        // A preamble, a quoted boundary, padding after a boundary, a value
        // holding CRLF and a near-boundary, a `;` inside a quoted file name,
        // and a parameter without a value.
        let text = "ignored preamble\r\n--a;b \t\r\n\
                    content-disposition: form-data; name=\"note\"\r\n\r\nline 1\r\n--a;c\r\nline 2\r\n\
                    --a;b\r\nContent-Disposition: form-data; flag; filename=\"x;y.json\"; name=\"config_json\"\r\n\r\n{}\r\n\
                    --a;b--";
        let form = Form::read(&headers("multipart/form-data; boundary=\"a;b\""), body(text.as_bytes())).unwrap();
        assert_eq!(form.text("note"), "line 1\r\n--a;c\r\nline 2");
        assert_eq!(form.file("config_json"), Some(&b"{}"[..]));
        for bad in [
            "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end",
            "--B\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nv\r\n--B--",
            "--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--",
            "--Bjunk\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--B--",
            "--B\r\nContent-Disposition: form-data; name=\"x\"",
        ] {
            assert!(
                matches!(
                    Form::read(&headers("multipart/form-data; boundary=B"), body(bad.as_bytes())),
                    Err(FormError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(Form::read(&headers("multipart/form-data"), body(b"--B--")), Err(FormError::Malformed(_))));
    }

    #[test]
    fn oversized_or_foreign_bodies_are_refused() {
        let big = Zeroizing::new(vec![b'a'; MAX_FORM_BYTES + 1]);
        assert_eq!(Form::read(&headers("application/x-www-form-urlencoded"), big).unwrap_err(), FormError::TooLarge);
        assert!(matches!(Form::read(&headers("application/json"), body(b"{}")), Err(FormError::Malformed(_))));
        assert!(matches!(
            Form::read(&headers("multipart/form-data; boundary=B"), body(b"garbage")),
            Err(FormError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn multipart_bodies_read_back_what_was_written_and_anything_else_never_panics(
            fields in proptest::collection::vec(("[a-z_]{1,10}", "\\PC{0,40}"), 1..5),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}",
        ) {
            let mut text = String::new();
            for (name, value) in &fields {
                text.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
            }
            text.push_str(&format!("--{boundary}--\r\n"));
            let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
            if !fields.iter().any(|(_, value)| value.contains(&format!("\r\n--{boundary}"))) {
                let form = Form::read(&headers(&content_type), body(text.as_bytes())).unwrap();
                for (name, value) in &fields {
                    let first = fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).unwrap_or_default();
                    proptest::prop_assert_eq!(form.text(name), first, "{}", value);
                }
            }
            let mut mangled = text.into_bytes();
            mangled.extend_from_slice(&noise);
            let shift = noise.len().min(mangled.len());
            mangled.rotate_left(shift);
            let _ = Form::read(&headers(&content_type), body(&mangled));
            let _ = Form::read(&headers(&content_type), body(&noise));
        }
    }

    #[tokio::test]
    async fn a_body_is_collected_whole_across_frames_and_bounded() {
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> =
            (0..3000).map(|i| Ok(http_body::Frame::data(bytes::Bytes::from(format!("{i:04}"))))).collect();
        let collected = collect(http_body_util::StreamBody::new(futures_util::stream::iter(frames))).await.unwrap();
        let expected: String = (0..3000).map(|i| format!("{i:04}")).collect();
        assert_eq!(collected.as_slice(), expected.as_bytes());
        let big = http_body_util::Full::new(bytes::Bytes::from(vec![b'a'; MAX_FORM_BYTES + 1]));
        assert_eq!(collect(big).await.unwrap_err(), FormError::TooLarge);
        let chunks: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = (0..=MAX_FORM_BYTES / 4096)
            .map(|_| Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'a'; 4096]))))
            .collect();
        let unhinted = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        assert_eq!(collect(unhinted).await.unwrap_err(), FormError::TooLarge, "bounded without a size hint too");
    }
}
