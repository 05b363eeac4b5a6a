//! A submitted HTML form, read once at the edge: `application/x-www-form-
//! urlencoded` or `multipart/form-data` (the file uploads: a Google
//! service-account key, a docker `config.json`), with a bound on the body.
//! Field values that are secrets (the password, an uploaded key) are kept
//! in zeroizing buffers and are never logged or shown again.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use zeroize::Zeroizing;

/// Largest form body accepted (an uploaded `config.json` or key included).
pub const MAX_FORM_BYTES: usize = 1024 * 1024;

/// Why a body is not a form this console takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Longer than [`MAX_FORM_BYTES`].
    TooLarge,
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

impl Form {
    /// Reads a form body of the type `headers` declare.
    pub async fn read(headers: &HeaderMap, body: Bytes) -> Result<Self, FormError> {
        if body.len() > MAX_FORM_BYTES {
            return Err(FormError::TooLarge);
        }
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-www-form-urlencoded" | "" => Ok(Self::urlencoded(&body)),
            "multipart/form-data" => Self::multipart(content_type, body).await,
            other => Err(FormError::Malformed(format!("a form cannot be `{other}`"))),
        }
    }

    fn urlencoded(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (name, value) in form_urlencoded::parse(body) {
            form.fields.entry(name.into_owned()).or_default().push(Zeroizing::new(value.into_owned()));
        }
        form
    }

    async fn multipart(content_type: &str, body: Bytes) -> Result<Self, FormError> {
        let boundary = multer::parse_boundary(content_type).map_err(|e| FormError::Malformed(e.to_string()))?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let constraints =
            multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(MAX_FORM_BYTES as u64));
        let mut parts = multer::Multipart::with_constraints(stream, boundary, constraints);
        let mut form = Self::default();
        while let Some(field) = parts.next_field().await.map_err(|e| FormError::Malformed(e.to_string()))? {
            let name = field.name().unwrap_or_default().to_owned();
            let is_file = field.file_name().is_some();
            let bytes = field.bytes().await.map_err(|e| FormError::Malformed(e.to_string()))?;
            if is_file {
                // An empty file input (nothing chosen) is no file.
                if !bytes.is_empty() {
                    form.files.insert(name, Zeroizing::new(bytes.to_vec()));
                }
            } else {
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| FormError::Malformed(format!("field `{name}` is not UTF-8")))?;
                form.fields.entry(name).or_default().push(Zeroizing::new(text));
            }
        }
        Ok(form)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn urlencoded_and_multipart_forms_read_the_same_fields_and_files() {
        let plain = Form::read(
            &headers("application/x-www-form-urlencoded"),
            Bytes::from_static(b"name=gh+cr&password=p%26w&restrict=on&projects=a%2C+b%0Ac"),
        )
        .await
        .unwrap();
        assert_eq!(plain.text("name"), "gh cr");
        assert_eq!(plain.secret("password").as_deref().map(String::as_str), Some("p&w"));
        assert!(plain.checked("restrict") && !plain.checked("passthrough"));
        assert_eq!(plain.list("projects"), ["a", "b", "c"]);
        assert!(!format!("{plain:?}").contains("p&w"));

        let body = "--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ngoogle\r\n\
                    --B\r\nContent-Disposition: form-data; name=\"key\"; filename=\"k.json\"\r\n\
                    Content-Type: application/json\r\n\r\n{\"type\":\"x\"}\r\n\
                    --B\r\nContent-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\r\n\r\n--B--\r\n";
        let multi = Form::read(&headers("multipart/form-data; boundary=B"), Bytes::from(body)).await.unwrap();
        assert_eq!(multi.text("name"), "google");
        assert_eq!(multi.file("key"), Some(&b"{\"type\":\"x\"}"[..]));
        assert_eq!(multi.file("empty"), None);
    }

    #[tokio::test]
    async fn oversized_or_foreign_bodies_are_refused() {
        let big = Bytes::from(vec![b'a'; MAX_FORM_BYTES + 1]);
        assert_eq!(
            Form::read(&headers("application/x-www-form-urlencoded"), big).await.unwrap_err(),
            FormError::TooLarge
        );
        assert!(matches!(
            Form::read(&headers("application/json"), Bytes::from_static(b"{}")).await,
            Err(FormError::Malformed(_))
        ));
        assert!(matches!(
            Form::read(&headers("multipart/form-data; boundary=B"), Bytes::from_static(b"garbage")).await,
            Err(FormError::Malformed(_))
        ));
    }
}
