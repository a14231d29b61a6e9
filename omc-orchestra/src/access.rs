//! Who may call the control plane (the registry, events, jobs and logging APIs, and the
//! gateway's `/gateway/*`): service tokens.
//!
//! A service token is a JWT with `aud: "orchestra"`, `sub`: the calling service's name,
//! `exp`, and `scope`: space-separated [`Scope`]s, OAuth2 style. [`TokenIssuer`] mints
//! them from `JWT_SECRET` (HS256) or a private key; [`TokenVerifier`] checks them with the
//! secret or the matching public key (RS256, ES256, EdDSA) and answers the [`Caller`].
//! End-user tokens of gateway routes are another matter (`gateway::auth`): a token made
//! for one is never accepted as the other, which the audience guarantees.
//!
//! ```
//! use omc_orchestra::access::{Grants, Scope, TokenIssuer, TokenVerifier};
//! use std::time::Duration;
//!
//! let secret = b"a secret of at least thirty-two bytes!";
//! let issuer = TokenIssuer::from_secret(secret).unwrap();
//! let grants = Grants::of([Scope::RegistryWrite, Scope::Read]);
//! let token = issuer.mint("pricing-service", grants, Duration::from_secs(3600)).unwrap();
//!
//! let caller = TokenVerifier::from_secret(secret).unwrap().verify(&token).unwrap();
//! assert_eq!(caller.service(), "pricing-service");
//! assert!(caller.may_write_service("pricing-service"));
//! assert!(!caller.may_write_service("auth-service"));
//! assert!(caller.require(Scope::JobsWrite).is_err());
//! ```

use crate::{Error, Result};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The audience of every control-plane token.
pub const AUDIENCE: &str = "orchestra";

/// The shortest HS256 secret accepted: 256 bits, the size of the hash (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew allowed on `exp` and `nbf` between the signer and this server.
const LEEWAY_SECS: u64 = 30;

/// One grant of a service token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Register, heartbeat and deregister instances of the token's own service.
    RegistryWrite,
    /// List, discover and read everything (registry, events, jobs, logs, health).
    Read,
    /// Publish and replay events.
    EventsPublish,
    /// Enqueue and cancel jobs, manage schedules, and the worker calls.
    JobsWrite,
    /// Write log records.
    LogsWrite,
    /// Everything, under any service name (operators, the dashboard, `/gateway/*`).
    Admin,
}

impl Scope {
    /// Every scope, in the order they are printed.
    pub const ALL: [Scope; 6] = [
        Self::RegistryWrite,
        Self::Read,
        Self::EventsPublish,
        Self::JobsWrite,
        Self::LogsWrite,
        Self::Admin,
    ];

    /// The scope as written in a token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistryWrite => "registry:write",
            Self::Read => "read",
            Self::EventsPublish => "events:publish",
            Self::JobsWrite => "jobs:write",
            Self::LogsWrite => "logs:write",
            Self::Admin => "admin",
        }
    }

    /// The scope written `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a token grants.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Grants(u8);

impl Grants {
    /// No scope at all.
    pub const NONE: Grants = Grants(0);

    /// The given scopes.
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Every scope a business service needs to run (all but `admin`): what the SDK signs
    /// for its own service name when it holds the secret.
    pub fn service() -> Self {
        Self::of(Scope::ALL.into_iter().filter(|s| *s != Scope::Admin))
    }

    /// `admin`, which implies every other scope.
    pub fn admin() -> Self {
        Self::of([Scope::Admin])
    }

    /// Whether `scope` is granted (`admin` grants everything).
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// The granted scopes, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    /// Parse a space-separated list, refusing a name that is no scope (for people who
    /// mint tokens: a typo must not silently grant less).
    pub fn parse_strict(text: &str) -> Result<Self> {
        let mut grants = Self::NONE;
        for name in text.split_whitespace() {
            let scope = Scope::parse(name).ok_or_else(|| {
                let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                Error::invalid(
                    "scope",
                    format!("`{name}` is not a scope (one of: {})", known.join(", ")),
                )
            })?;
            grants = grants.with(scope);
        }
        Ok(grants)
    }

    /// Parse a token's `scope` claim, skipping names this version does not know, as
    /// OAuth2 resource servers do, so a newer issuer's token still works here.
    fn parse_lenient<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self::of(names.into_iter().filter_map(Scope::parse))
    }

    /// These grants plus `scope`.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grants({self})")
    }
}

/// Who is calling the control plane, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    service: String,
    grants: Grants,
}

/// Why a verified caller may not do what it asked (a 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token lacks a scope.
    #[error("this call needs the `{0}` scope")]
    MissingScope(Scope),
    /// `registry:write` covers the token's own service only.
    #[error("a token for `{own}` may not write instances of `{requested}`")]
    OtherService {
        /// The token's `sub`.
        own: String,
        /// The service the call would change.
        requested: String,
    },
}

impl Caller {
    /// The caller when the control plane runs without credentials: it may do everything.
    pub fn unauthenticated() -> Self {
        Self {
            service: String::new(),
            grants: Grants::admin(),
        }
    }

    /// A caller with `grants` acting for `service` (what a verified token says).
    pub fn new(service: impl Into<String>, grants: Grants) -> Self {
        Self {
            service: service.into(),
            grants,
        }
    }

    /// The token's `sub`: the calling service's name (empty when unauthenticated).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What the token grants.
    pub fn grants(&self) -> Grants {
        self.grants
    }

    /// `Ok` when `scope` is granted.
    pub fn require(&self, scope: Scope) -> std::result::Result<(), Denied> {
        if self.grants.contains(scope) {
            Ok(())
        } else {
            Err(Denied::MissingScope(scope))
        }
    }

    /// Whether the caller may register, heartbeat or deregister instances of `service`:
    /// an admin may write any; `registry:write` only the token's own service.
    pub fn may_write_service(&self, service: &str) -> bool {
        self.write_service(service).is_ok()
    }

    /// [`Caller::may_write_service`] with the reason when not.
    pub fn write_service(&self, service: &str) -> std::result::Result<(), Denied> {
        if self.grants.contains(Scope::Admin) {
            return Ok(());
        }
        self.require(Scope::RegistryWrite)?;
        if self.service == service {
            Ok(())
        } else {
            Err(Denied::OtherService {
                own: self.service.clone(),
                requested: service.to_owned(),
            })
        }
    }
}

/// Why a token was refused (a 401): said so a client can act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

fn rejected(reason: impl Into<String>) -> Rejected {
    Rejected(reason.into())
}

/// The claims of a control-plane token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope: String,
    iat: u64,
    exp: u64,
}

/// Checks control-plane tokens with one key.
pub struct TokenVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A secret long enough for HS256, or the error that names `JWT_SECRET`.
fn checked_secret(secret: &[u8]) -> Result<&[u8]> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::invalid(
            "JWT_SECRET",
            format!(
                "must be at least {MIN_SECRET_LEN} bytes (it has {}); `openssl rand -base64 48` \
                 makes one",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

impl TokenVerifier {
    /// HS256 tokens signed with `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self> {
        Ok(Self {
            key: DecodingKey::from_secret(checked_secret(secret)?),
            algorithm: Algorithm::HS256,
        })
    }

    /// Tokens signed with the private half of a PEM public key: RSA (RS256), P-256
    /// (ES256) or Ed25519 (EdDSA), told apart by the key itself.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self> {
        let found = DecodingKey::from_rsa_pem(pem)
            .map(|k| (k, Algorithm::RS256))
            .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, Algorithm::ES256)))
            .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| (k, Algorithm::EdDSA)));
        let (key, algorithm) = found.map_err(|_| {
            Error::invalid(
                "servicePublicKey",
                "not a PEM public key of RSA, P-256 (EC) or Ed25519",
            )
        })?;
        Ok(Self { key, algorithm })
    }

    /// The one algorithm this verifier accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Check `token` in full: signature with this key's algorithm only, `aud`, `exp`,
    /// `nbf`, a non-empty `sub`. The error says which check failed.
    pub fn verify(&self, token: &str) -> std::result::Result<Caller, Rejected> {
        let segments: Vec<&str> = token.split('.').collect();
        if segments.len() != 3 || segments[0].is_empty() || segments[1].is_empty() {
            return Err(rejected(
                "malformed token: a JWT is three dot-separated segments",
            ));
        }
        let alg = header_alg(segments[0])?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(rejected("unsigned token (`alg: none`) refused"));
        }
        if segments[2].is_empty() {
            return Err(rejected("malformed token: the signature is empty"));
        }
        let expected = format!("{:?}", self.algorithm);
        if alg != expected {
            return Err(rejected(format!(
                "token signed with `{alg}`; this server accepts `{expected}` only"
            )));
        }
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                rejected(match err.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => {
                        "token not valid yet (`nbf` is in the future)".to_owned()
                    }
                    ErrorKind::InvalidSignature => "invalid token signature".to_owned(),
                    ErrorKind::InvalidAudience => format!(
                        "wrong token audience: control-plane tokens have `aud: \"{AUDIENCE}\"`"
                    ),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("token lacks the `{claim}` claim")
                    }
                    _ => format!("malformed token: {err}"),
                })
            })?;
        let claims = data.claims;
        let service = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| rejected("token `sub` must be the calling service's name"))?;
        let grants = match claims.get("scope") {
            Some(serde_json::Value::String(s)) => Grants::parse_lenient(s.split_whitespace()),
            Some(serde_json::Value::Array(items)) => {
                Grants::parse_lenient(items.iter().filter_map(serde_json::Value::as_str))
            }
            _ => Grants::NONE,
        };
        Ok(Caller::new(service, grants))
    }
}

/// The `alg` of a token's header, read before any key is chosen, so `none` and a wrong
/// algorithm get their own answers.
fn header_alg(segment: &str) -> std::result::Result<String, Rejected> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| rejected("malformed token: the header is not base64url"))?;
    let header: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| rejected("malformed token: the header is not JSON"))?;
    header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| rejected("malformed token: the header has no `alg`"))
}

/// Mints control-plane tokens.
pub struct TokenIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// HS256 tokens signed with `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self> {
        Ok(Self {
            key: EncodingKey::from_secret(checked_secret(secret)?),
            algorithm: Algorithm::HS256,
        })
    }

    /// Tokens signed with a PEM private key: RSA (RS256), P-256 (ES256) or Ed25519
    /// (EdDSA).
    pub fn from_private_key_pem(pem: &[u8]) -> Result<Self> {
        let found = EncodingKey::from_rsa_pem(pem)
            .map(|k| (k, Algorithm::RS256))
            .or_else(|_| EncodingKey::from_ec_pem(pem).map(|k| (k, Algorithm::ES256)))
            .or_else(|_| EncodingKey::from_ed_pem(pem).map(|k| (k, Algorithm::EdDSA)));
        let (key, algorithm) = found.map_err(|_| {
            Error::invalid(
                "privateKey",
                "not a PEM private key of RSA, P-256 (EC) or Ed25519",
            )
        })?;
        Ok(Self { key, algorithm })
    }

    /// A token for `service` with `grants`, valid for `ttl` from now.
    pub fn mint(&self, service: &str, grants: Grants, ttl: Duration) -> Result<String> {
        if service.is_empty() {
            return Err(Error::invalid("service", "must not be empty"));
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            aud: AUDIENCE.to_owned(),
            sub: service.to_owned(),
            scope: grants.to_string(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|err| Error::invalid("token", err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::encode;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn refused(token: &str) -> String {
        TokenVerifier::from_secret(SECRET)
            .unwrap()
            .verify(token)
            .unwrap_err()
            .0
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = TokenVerifier::from_secret(b"short")
            .unwrap_err()
            .to_string();
        assert!(err.contains("JWT_SECRET") && err.contains("32"), "{err}");
        assert!(TokenIssuer::from_secret(b"short").is_err());
    }

    #[test]
    fn minted_tokens_verify_with_their_grants() {
        let issuer = TokenIssuer::from_secret(SECRET).unwrap();
        let token = issuer
            .mint(
                "pricing-service",
                Grants::service(),
                Duration::from_secs(60),
            )
            .unwrap();
        let caller = TokenVerifier::from_secret(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(caller.service(), "pricing-service");
        assert_eq!(
            caller.grants().to_string(),
            "registry:write read events:publish jobs:write logs:write"
        );
        assert!(caller.require(Scope::Admin).is_err());
        assert_eq!(
            caller.write_service("auth-service").unwrap_err(),
            Denied::OtherService {
                own: "pricing-service".into(),
                requested: "auth-service".into()
            }
        );
    }

    #[test]
    fn admin_implies_every_scope_and_any_service() {
        let admin = Caller::new("ops", Grants::admin());
        for scope in Scope::ALL {
            assert!(admin.require(scope).is_ok());
        }
        assert!(admin.may_write_service("anything"));
        let reader = Caller::new("reports", Grants::of([Scope::Read]));
        assert_eq!(
            reader.write_service("reports").unwrap_err(),
            Denied::MissingScope(Scope::RegistryWrite)
        );
    }

    #[test]
    fn scopes_parse_strictly_for_minting_and_leniently_in_tokens() {
        assert_eq!(
            Grants::parse_strict("read  jobs:write").unwrap(),
            Grants::of([Scope::Read, Scope::JobsWrite])
        );
        let err = Grants::parse_strict("read registry:wirte").unwrap_err();
        assert!(err.to_string().contains("registry:wirte"), "{err}");
        let token = signed(json!({"aud":"orchestra","sub":"s","exp":now()+60,
            "scope":"read future:scope"}));
        let caller = TokenVerifier::from_secret(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(caller.grants(), Grants::of([Scope::Read]));
    }

    #[test]
    fn the_negative_corpus_is_refused_with_a_reason() {
        let base = || json!({"aud":"orchestra","sub":"s","exp":now()+600,"scope":"admin"});
        let mut no_aud = base();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(refused(&signed(no_aud)).contains("`aud`"));
        let mut no_exp = base();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(refused(&signed(no_exp)).contains("`exp`"));
        let mut wrong_aud = base();
        wrong_aud["aud"] = json!("erp-users");
        assert!(refused(&signed(wrong_aud)).contains("audience"));
        let mut expired = base();
        expired["exp"] = json!(now() - 3600);
        assert_eq!(refused(&signed(expired)), "token expired");
        let mut early = base();
        early["nbf"] = json!(now() + 3600);
        assert!(refused(&signed(early)).contains("nbf"));
        let mut no_sub = base();
        no_sub["sub"] = json!("");
        assert!(refused(&signed(no_sub)).contains("sub"));

        let forged = encode(
            &Header::default(),
            &base(),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        )
        .unwrap();
        assert_eq!(refused(&forged), "invalid token signature");

        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg":"none","typ":"JWT"})),
            b64(base())
        );
        assert!(refused(&unsigned).contains("alg: none"));
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg":"HS256","typ":"JWT"})),
            b64(base())
        );
        assert!(refused(&unsigned).contains("signature is empty"));
        let unsigned = format!(
            "{}.{}.sig",
            b64(json!({"alg":"none","typ":"JWT"})),
            b64(base())
        );
        assert!(refused(&unsigned).contains("alg: none"));
        let rs = format!(
            "{}.{}.sig",
            b64(json!({"alg":"RS256","typ":"JWT"})),
            b64(base())
        );
        assert!(refused(&rs).contains("accepts `HS256` only"));
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            "e30.e30.e30",
            "\u{1F600}.x.y",
        ] {
            assert!(refused(garbage).contains("malformed"), "{garbage}");
        }
    }

    #[test]
    fn public_keys_are_told_apart_by_kind() {
        let keys = [
            ("rsa", Algorithm::RS256),
            ("ec", Algorithm::ES256),
            ("ed25519", Algorithm::EdDSA),
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
        for (name, algorithm) in keys {
            let private = std::fs::read(format!("{dir}/{name}.pem")).unwrap();
            let public = std::fs::read(format!("{dir}/{name}.pub.pem")).unwrap();
            let issuer = TokenIssuer::from_private_key_pem(&private).unwrap();
            let verifier = TokenVerifier::from_public_key_pem(&public).unwrap();
            assert_eq!(verifier.algorithm(), algorithm, "{name}");
            let token = issuer
                .mint("ops", Grants::admin(), Duration::from_secs(60))
                .unwrap();
            assert_eq!(verifier.verify(&token).unwrap().service(), "ops", "{name}");
            // The classic confusion: HS256 keyed with the public key's own bytes.
            let confused = encode(
                &Header::default(),
                &json!({"aud":"orchestra","sub":"s","exp":now()+60}),
                &EncodingKey::from_secret(&public),
            )
            .unwrap();
            let reason = verifier.verify(&confused).unwrap_err().0;
            assert!(reason.contains("signed with `HS256`"), "{name}: {reason}");
        }
        assert!(TokenVerifier::from_public_key_pem(b"not a key").is_err());
        assert!(TokenIssuer::from_private_key_pem(b"not a key").is_err());
    }
}
