//! The web console's request paths and form bodies. Input: the path on the
//! first line, the `Content-Type` on the second, the body after.
//! Properties: a path the console serves has one canonical spelling, which
//! parses back to the same page (so links it prints always lead where they
//! say, and no `.`, `..`, empty or encoded segment names anything); reading
//! a form never panics; a form's `Debug` shows field names only, never a
//! value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::console::form::Form;
use pullpass_server::console::route::{PREFIX, Route, to};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let path = lines.next().unwrap_or_default();
    let content_type = lines.next().unwrap_or_default();
    let body = lines.next().unwrap_or_default();

    if let Ok(path) = std::str::from_utf8(path)
        && let Some(route) = Route::parse(path)
    {
        let canonical = canonical(&route);
        assert_eq!(Route::parse(&canonical).as_ref(), Some(&route), "{path:?} -> {canonical:?}");
        for segment in canonical.trim_start_matches(PREFIX).split('/').skip(1) {
            assert!(!matches!(segment, "." | ".."), "{canonical:?}");
            assert!(!segment.contains(['%', '\\', '?', '#']), "{canonical:?}");
        }
    }

    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    let Ok(form) = Form::read(&headers, body.to_vec()) else { return };
    let shown = format!("{form:?}");
    let urlencoded = content_type.is_empty() || content_type.eq_ignore_ascii_case(b"application/x-www-form-urlencoded");
    if urlencoded {
        let pairs: Vec<_> = form_urlencoded::parse(body).collect();
        // Exactly the names, sorted: no value, however it is spelled.
        let mut names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(shown, format!("Form {{ names: {names:?} }}"));
        for (name, _) in &pairs {
            // What the handlers read is what was sent, trimmed.
            let first = pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).unwrap_or_default();
            assert_eq!(form.text(name), first);
        }
    }
});

/// The one spelling of each page, from the links the console prints.
fn canonical(route: &Route) -> String {
    match route {
        Route::Home => format!("{PREFIX}/"),
        Route::Login => to::login(),
        Route::Logout => format!("{PREFIX}/logout"),
        Route::Asset(file) => to::asset(file),
        Route::Workspaces => to::workspaces(),
        Route::Credentials(w) => to::credentials(w),
        Route::Add(w) => to::add(w),
        Route::Credential(name) => to::credential(name),
        Route::Test(name) => to::test(name),
        Route::Delete(name) => to::delete(name),
        Route::Import(w) => to::import(w),
        Route::Tokens(w) => to::tokens(w),
        Route::Revoke(w, token) => to::revoke(w, token),
        Route::Audit(w) => to::audit(w),
        Route::IdentityBindings(w) => to::identity_bindings(w),
        Route::IdentityBinding(name) => to::identity_binding(name),
        Route::DeleteIdentityBinding(name) => to::delete_identity_binding(name),
        Route::TestIdentityToken(w) => to::test_identity_token(w),
        Route::IdentityProviders => to::identity_providers(),
        Route::IdentityProvider(id) => to::identity_provider(id),
        Route::DeleteIdentityProvider(id) => to::delete_identity_provider(id),
    }
}
