//! Who may see the dashboard. It shows every result and the SQL of every pipeline, so
//! a dashboard reachable from other machines requires credentials, the way Grafana,
//! Prometheus and Alertmanager are usually run:
//!
//! * HTTP basic auth for people (the browser's own prompt, realm `dashboard`): a user
//!   name and a password;
//! * and/or a bearer token (`Authorization: Bearer …`) for API clients and scrapers.
//!
//! [`Access::decide`] turns the configuration and the listen address into [`Access`]:
//! credentials given are always enforced; without any, the dashboard serves openly on
//! loopback only, unless told to run open anyway. [`require`] is the middleware: every
//! route but `/healthz` (container health checks) answers 401 without valid
//! credentials, before any handler reads the store. Secrets are compared in constant
//! time (`subtle`) and never printed: [`Secret`]'s `Debug` shows `***`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::{Choice, ConstantTimeEq};

/// The realm of the basic-auth challenge (what the browser's prompt names).
pub const REALM: &str = "dashboard";

/// The one route that stays open: health checks carry no credentials.
const HEALTH_PATH: &str = "/healthz";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "--listen {listen} is reachable from other machines and the dashboard shows every result and the SQL of \
         every pipeline: set a password (env DASHBOARD_PASSWORD or --password-file; user --auth-user, default admin) \
         or a bearer token (env DASHBOARD_TOKEN or --token-file), or pass --allow-unauthenticated \
         (DASHBOARD_ALLOW_UNAUTHENTICATED=true) to serve it to anyone who can reach it"
    )]
    CredentialsRequired { listen: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `origin` is the variable or file that held nothing.
    #[error("{origin} is empty")]
    EmptySecret { origin: String },
    #[error("--auth-user {0:?}: a user name must be non-empty and without ':' (HTTP basic auth)")]
    BadUser(String),
}

/// A password or token. Never printed; compared in constant time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// `value` as a secret; `origin` (a variable's name) names it if it is empty.
    pub fn new(value: impl Into<Vec<u8>>, origin: &str) -> Result<Secret, AuthError> {
        let value = value.into();
        if value.is_empty() {
            return Err(AuthError::EmptySecret { origin: origin.to_string() });
        }
        Ok(Secret(value))
    }

    /// The content of the file at `path` without its trailing newline (the Docker-secrets
    /// convention: `echo pass > file` must give `pass`).
    pub fn from_file(path: &Path) -> Result<Secret, AuthError> {
        let mut value =
            std::fs::read(path).map_err(|source| AuthError::ReadSecret { path: path.to_path_buf(), source })?;
        while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            value.pop();
        }
        Secret::new(value, &path.display().to_string())
    }

    /// Whether `candidate` is this secret, in time independent of where they differ.
    fn matches(&self, candidate: &[u8]) -> Choice {
        self.0.as_slice().ct_eq(candidate)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a request must show: the user and password (basic auth), or the token (bearer).
#[derive(Debug)]
pub struct Credentials {
    user: String,
    password: Option<Secret>,
    token: Option<Secret>,
}

impl Credentials {
    /// The credentials configured, or `None` if neither a password nor a token is.
    pub fn new(user: &str, password: Option<Secret>, token: Option<Secret>) -> Result<Option<Credentials>, AuthError> {
        if password.is_some() && (user.is_empty() || user.contains(':')) {
            return Err(AuthError::BadUser(user.to_string()));
        }
        if password.is_none() && token.is_none() {
            return Ok(None);
        }
        Ok(Some(Credentials { user: user.to_string(), password, token }))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?.as_bytes();
        let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
            Some(space) => (&value[..space], value[space + 1..].trim_ascii()),
            None => (value, &b""[..]),
        };
        let accepted = if scheme.eq_ignore_ascii_case(b"basic") {
            let password = self.password.as_ref().ok_or(Refusal::Wrong)?;
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| Refusal::Malformed)?;
            // The user name cannot hold ':'; the password can.
            let colon = decoded.iter().position(|b| *b == b':').ok_or(Refusal::Malformed)?;
            // Both compared, always: which one was wrong must not show in the timing.
            self.user.as_bytes().ct_eq(&decoded[..colon]) & password.matches(&decoded[colon + 1..])
        } else if scheme.eq_ignore_ascii_case(b"bearer") {
            self.token.as_ref().ok_or(Refusal::Wrong)?.matches(rest)
        } else {
            return Err(Refusal::Malformed);
        };
        if bool::from(accepted) { Ok(()) } else { Err(Refusal::Wrong) }
    }

    /// 401 with the challenges the browser (basic) and API clients (bearer) understand.
    fn challenge(&self) -> Response {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "401 Unauthorized: this dashboard requires a user name and password, or a bearer token.\n",
        )
            .into_response();
        let headers = response.headers_mut();
        if self.password.is_some() {
            let basic = format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"");
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_str(&basic).expect("ASCII"));
        }
        if self.token.is_some() {
            let bearer = format!("Bearer realm=\"{REALM}\"");
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_str(&bearer).expect("ASCII"));
        }
        response
    }
}

/// Why a request was refused (logged; never the credentials themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header (a browser's first request).
    Missing,
    /// A header of an unknown scheme or that does not decode.
    Malformed,
    /// The wrong user, password or token (or a scheme that is not configured).
    Wrong,
}

/// Who may see the dashboard.
#[derive(Debug)]
pub enum Access {
    /// Anyone who can reach the port.
    Open,
    /// Only requests with the credentials (`/healthz` excepted).
    Protected(Credentials),
}

impl Access {
    /// The access for a dashboard listening on `listen` (which resolved to `addresses`):
    /// credentials given are enforced; without them it is open on loopback, or with
    /// `allow_unauthenticated`, and refuses to start otherwise.
    pub fn decide(
        credentials: Option<Credentials>,
        listen: &str,
        addresses: &[SocketAddr],
        allow_unauthenticated: bool,
    ) -> Result<Access, AuthError> {
        match credentials {
            Some(credentials) => Ok(Access::Protected(credentials)),
            None if allow_unauthenticated || is_loopback(addresses) => Ok(Access::Open),
            None => Err(AuthError::CredentialsRequired { listen: listen.to_string() }),
        }
    }
}

/// Whether every address is on loopback (127.0.0.0/8, ::1, and ::ffff:127.x), so that
/// only this machine can connect. `0.0.0.0` and `::` (every interface) are not.
pub fn is_loopback(addresses: &[SocketAddr]) -> bool {
    !addresses.is_empty() && addresses.iter().all(|a| a.ip().to_canonical().is_loopback())
}

/// The middleware: lets a request through if the access is open, it is the health
/// check, or it carries valid credentials; answers 401 otherwise.
pub async fn require(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let Access::Protected(credentials) = access.as_ref() else {
        return next.run(request).await;
    };
    if request.uri().path() == HEALTH_PATH {
        return next.run(request).await;
    }
    match credentials.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            let path = request.uri().path();
            // A browser's first request never has credentials: not worth more than debug.
            if refusal == Refusal::Missing {
                tracing::debug!(path, client = ?client, "request without credentials refused");
            } else {
                tracing::info!(path, client = ?client, reason = ?refusal, "request with wrong credentials refused");
            }
            credentials.challenge()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn credentials() -> Credentials {
        let password = Secret::new("pa:ss word", "test").unwrap();
        let token = Secret::new("tok-123", "test").unwrap();
        Credentials::new("admin", Some(password), Some(token)).unwrap().unwrap()
    }

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    fn basic(user_and_password: &str) -> HeaderValue {
        header(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_and_password)))
    }

    #[test]
    fn loopback_is_127_8_and_ipv6_loopback_only() {
        for loopback in ["127.0.0.1:8501", "127.1.2.3:80", "[::1]:8501", "[::ffff:127.0.0.1]:8501"] {
            assert!(is_loopback(&[addr(loopback)]), "{loopback}");
        }
        for open in ["0.0.0.0:8501", "[::]:8501", "192.168.1.2:8501", "10.0.0.1:80", "[::ffff:10.0.0.1]:80"] {
            assert!(!is_loopback(&[addr(open)]), "{open}");
        }
        // A name that resolves to loopback and another address is not loopback.
        assert!(!is_loopback(&[addr("127.0.0.1:1"), addr("10.0.0.1:1")]));
        assert!(!is_loopback(&[]));
    }

    #[test]
    fn without_credentials_only_loopback_or_an_explicit_opt_out_runs_open() {
        let loopback = [addr("127.0.0.1:8501")];
        let everywhere = [addr("0.0.0.0:8501")];
        assert!(matches!(Access::decide(None, "127.0.0.1:8501", &loopback, false), Ok(Access::Open)));
        let refused = Access::decide(None, "0.0.0.0:8501", &everywhere, false).unwrap_err();
        let message = refused.to_string();
        for named in
            ["0.0.0.0:8501", "DASHBOARD_PASSWORD", "--password-file", "--token-file", "--allow-unauthenticated"]
        {
            assert!(message.contains(named), "{named} in {message}");
        }
        assert!(matches!(Access::decide(None, "0.0.0.0:8501", &everywhere, true), Ok(Access::Open)));
        // Credentials given are enforced everywhere, even on loopback.
        let on_loopback = Access::decide(Some(credentials()), "127.0.0.1:8501", &loopback, false);
        assert!(matches!(on_loopback, Ok(Access::Protected(_))));
        let opted_out = Access::decide(Some(credentials()), "0.0.0.0:8501", &everywhere, true);
        assert!(matches!(opted_out, Ok(Access::Protected(_))));
    }

    #[test]
    fn basic_and_bearer_are_checked() {
        let c = credentials();
        assert_eq!(c.check(Some(&basic("admin:pa:ss word"))), Ok(()), "a password may hold ':' and spaces");
        assert_eq!(c.check(Some(&header("Bearer tok-123"))), Ok(()));
        assert_eq!(c.check(Some(&header("bearer  tok-123 "))), Ok(()), "scheme case and spaces");
        assert_eq!(c.check(None), Err(Refusal::Missing));
        assert_eq!(c.check(Some(&basic("admin:pa:ss"))), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(&basic("root:pa:ss word"))), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(&basic("admin:pa:ss word "))), Err(Refusal::Wrong), "one byte more");
        assert_eq!(c.check(Some(&header("Bearer tok-12"))), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(&header("Bearer"))), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(&header("Basic %%%"))), Err(Refusal::Malformed));
        assert_eq!(c.check(Some(&basic("no colon"))), Err(Refusal::Malformed));
        assert_eq!(c.check(Some(&header("Digest x"))), Err(Refusal::Malformed));
        // The token is not a password, nor the password a token.
        assert_eq!(c.check(Some(&basic("admin:tok-123"))), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(&header("Bearer pa:ss word"))), Err(Refusal::Wrong));
        // A scheme that is not configured is refused.
        let token_only = Credentials::new("admin", None, Some(Secret::new("t", "test").unwrap())).unwrap().unwrap();
        assert_eq!(token_only.check(Some(&basic("admin:t"))), Err(Refusal::Wrong));
    }

    #[test]
    fn secrets_never_print_and_files_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        let secret = Secret::from_file(&file).unwrap();
        assert_eq!(secret.0, b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", credentials()).contains("tok-123"));
        std::fs::write(&file, "\n").unwrap();
        let empty = Secret::from_file(&file).unwrap_err();
        assert_eq!(empty.to_string(), format!("{} is empty", file.display()));
        let missing = Secret::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().starts_with(&format!("cannot read {}", dir.path().join("nope").display())));
        assert!(matches!(Secret::new("", "DASHBOARD_PASSWORD"), Err(AuthError::EmptySecret { .. })));
        let colon_user = Credentials::new("a:b", Some(Secret::new("p", "test").unwrap()), None).unwrap_err();
        assert!(matches!(colon_user, AuthError::BadUser(_)));
        assert!(Credentials::new("admin", None, None).unwrap().is_none(), "nothing configured");
    }
}
