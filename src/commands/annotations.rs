//! What `push` (and the verbs that write artifacts) take for a manifest's own fields:
//! `--annotation KEY=VALUE` and `--artifact-type TYPE`, checked as they are parsed.

/// Longest annotation key or artifact type taken.
const MAX_NAME: usize = 255;
/// Longest annotation value taken.
const MAX_VALUE: usize = 64 << 10;

/// `KEY=VALUE` (split at the first `=`): a key of printable ASCII without spaces, a value
/// without control characters.
pub(super) fn parse_annotation(text: &str) -> Result<(String, String), AnnotationError> {
    let (key, value) = text.split_once('=').ok_or(AnnotationError::NoEquals)?;
    if key.is_empty() || key.len() > MAX_NAME || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AnnotationError::Key);
    }
    if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
        return Err(AnnotationError::Value);
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A media type as RFC 6838 names them, `type/subtype` (with `+suffix` and the like), no
/// parameters: what an `artifactType` is.
pub(super) fn parse_media_type(text: &str) -> Result<String, NotAMediaType> {
    let name = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match text.split_once('/') {
        Some((kind, sub)) if name(kind) && name(sub) => Ok(text.to_owned()),
        _ => Err(NotAMediaType),
    }
}

/// An `--annotation` that is refused (clap names the argument and repeats the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum AnnotationError {
    /// No `=`.
    #[error("expected KEY=VALUE, e.g. org.opencontainers.image.source=https://...")]
    NoEquals,
    /// A key that is empty, too long, or not printable ASCII.
    #[error("the key must be 1 to {MAX_NAME} printable ASCII characters without spaces")]
    Key,
    /// A value that is too long or holds control characters.
    #[error("the value must be at most {MAX_VALUE} bytes without control characters")]
    Value,
}

/// An `--artifact-type` that is not `type/subtype`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a media type, type/subtype, e.g. application/vnd.example.sbom+json")]
pub(super) struct NotAMediaType;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_and_media_types_are_checked() {
        assert_eq!(
            parse_annotation("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert_eq!(parse_annotation("k=").unwrap(), ("k".into(), "".into()));
        for bad in ["nokey", "=v", "a b=c", "k=\u{1b}[2J", "k=a\nb"] {
            assert!(parse_annotation(bad).is_err(), "{bad}");
        }
        assert!(parse_media_type("application/vnd.example.sbom+json").is_ok());
        for bad in [
            "",
            "text",
            "a/b; charset=utf-8",
            "/x",
            "x/",
            "a/b/c",
            "a/\u{1b}",
        ] {
            assert!(parse_media_type(bad).is_err(), "{bad}");
        }
    }
}
