//! Store URIs, and hiding their passwords.

use crate::{Result, StoreError};

/// Where results go, parsed from a sink or store URI.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// `sqlite:<path>`
    Sqlite(std::path::PathBuf),
    /// `mongodb://…` or `mongodb+srv://…`, as given (it may hold a password: print
    /// it only through [`redact_uri`], which `Display` and `Debug` do).
    Mongo(String),
}

impl StoreUri {
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
            return Ok(StoreUri::Mongo(uri.to_string()));
        }
        match uri.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(StoreUri::Sqlite(path.trim_start_matches("//").into())),
            _ => Err(StoreError::UnsupportedUri(redact_uri(uri))),
        }
    }
}

impl std::fmt::Display for StoreUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUri::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreUri::Mongo(uri) => f.write_str(&redact_uri(uri)),
        }
    }
}

impl std::fmt::Debug for StoreUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUri({self})")
    }
}

/// The URI with the password of its `user:password@` part replaced by `***`, for
/// every message, log line and status that names a store.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else { return uri.to_string() };
    // The credentials end at the last `@` before the path (a password may hold `@`
    // only percent-encoded, but be generous with users who did not encode it).
    let authority_end = uri[scheme_end..].find(['/', '?']).map_or(uri.len(), |i| scheme_end + i);
    let Some(at) = uri[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) else {
        return uri.to_string();
    };
    match uri[scheme_end..at].find(':') {
        Some(colon) => format!("{}***{}", &uri[..scheme_end + colon + 1], &uri[at..]),
        None => uri.to_string(),
    }
}

/// The password inside `uri`, percent-decoded, if it has one (to scrub it from error
/// texts that did not come from us).
pub(crate) fn password_of(uri: &str) -> Option<String> {
    let scheme_end = uri.find("://")? + 3;
    let authority_end = uri[scheme_end..].find(['/', '?']).map_or(uri.len(), |i| scheme_end + i);
    let at = uri[scheme_end..authority_end].rfind('@')? + scheme_end;
    let colon = uri[scheme_end..at].find(':')? + scheme_end;
    let raw = &uri[colon + 1..at];
    (!raw.is_empty()).then(|| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_everything_else_kept() {
        assert_eq!(
            redact_uri("mongodb://app:s3cr%40t@db1:27017,db2/results?authSource=admin"),
            "mongodb://app:***@db1:27017,db2/results?authSource=admin"
        );
        assert_eq!(redact_uri("mongodb://app:p@ss@db/x"), "mongodb://app:***@db/x");
        assert_eq!(redact_uri("mongodb://app@db/x"), "mongodb://app@db/x");
        assert_eq!(redact_uri("mongodb://db/x?a=b@c"), "mongodb://db/x?a=b@c");
        assert_eq!(redact_uri("sqlite:data/x.sqlite"), "sqlite:data/x.sqlite");
        assert_eq!(password_of("mongodb://app:p@ss@db/x").as_deref(), Some("p@ss"));
        assert_eq!(password_of("mongodb://db/x"), None);
    }

    #[test]
    fn parses_sqlite_and_mongodb_uris_and_rejects_others_without_their_password() {
        assert_eq!(StoreUri::parse("sqlite:data/x.sqlite").unwrap(), StoreUri::Sqlite("data/x.sqlite".into()));
        let mongo = StoreUri::parse("mongodb://u:secret@h/db").unwrap();
        assert_eq!(mongo, StoreUri::Mongo("mongodb://u:secret@h/db".into()));
        assert_eq!(format!("{mongo} {mongo:?}"), "mongodb://u:***@h/db StoreUri(mongodb://u:***@h/db)");
        let err = StoreUri::parse("postgres://u:secret@h/db").unwrap_err().to_string();
        assert!(err.contains("postgres://u:***@h/db") && !err.contains("secret"), "{err}");
    }
}
