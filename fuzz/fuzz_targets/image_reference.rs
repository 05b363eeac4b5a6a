//! Image references (`IssueRegistryAuth.images`, gateway pulls, CLI
//! arguments). Property: an accepted reference prints in a normal form that
//! parses back to the same value and prints the same, and that form obeys
//! the distribution reference grammar (checked with its regular
//! expressions, not with our parser).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pullpass::reference::ImageRef;
use regex::Regex;

/// `path-component` of distribution's `reference/regexp.go`.
static COMPONENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$").unwrap());
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").unwrap());
static DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$").unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(image) = ImageRef::parse(text) else { return };
    let printed = image.to_string();
    let again = ImageRef::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
    assert!(again == image, "{printed:?} parses to another value");
    assert_eq!(again.to_string(), printed, "the printed form is not stable");
    assert!(!image.repository().is_empty());
    assert!(image.name().len() <= 255, "a name longer than 255 characters was accepted");
    for component in image.repository().split('/') {
        assert!(COMPONENT.is_match(component), "repository component {component:?} breaks the grammar");
    }
    if let Some(tag) = image.tag() {
        assert!(TAG.is_match(tag), "tag {tag:?} breaks the grammar");
    }
    if let Some(digest) = image.digest() {
        assert!(DIGEST.is_match(digest), "digest {digest:?} breaks the grammar");
    }
    assert!(image.tag().is_some() || image.digest().is_some(), "a normalized reference names a tag or digest");
});
