//! Who is calling: JWT (HS256 with a secret, RS256/ES256 with public keys; `exp`, `nbf`,
//! `iss`, `aud` checked) or an API key.

use crate::per_thread::PerThread;
use crate::{Error, Result};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Keys and rules for authentication. Its `Debug` shows which keys are set, never the
/// secret nor an API key.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for end-user tokens (never the control plane's `JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// RS256 public key, PEM.
    pub rsa_public_key_pem: Option<String>,
    /// ES256 public key, PEM.
    pub ec_public_key_pem: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim that holds roles (`roles` when absent): an array or a space-separated
    /// string.
    pub roles_claim: Option<String>,
    /// Accepted API keys (sent in `X-API-Key`).
    pub api_keys: Vec<ApiKey>,
}

/// One API key and the consumer it stands for (its `Debug` hides the key).
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKey {
    /// The key.
    pub key: String,
    /// The consumer's id (forwarded as `X-User-Id`).
    pub consumer: String,
    /// The consumer's roles.
    pub roles: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("rsa_public_key_pem", &self.rsa_public_key_pem.is_some())
            .field("ec_public_key_pem", &self.ec_public_key_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("roles_claim", &self.roles_claim)
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"***")
            .field("consumer", &self.consumer)
            .field("roles", &self.roles)
            .finish()
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// JWT `sub` or the API key's consumer.
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
}

/// Why authentication failed, for the 401 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure(pub String);

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Verified tokens, with the caller each stands for and when it stops being valid. A
/// token enters only once its signature checks, so a client cannot fill the map with keys
/// chosen to collide: the fast hash serves. Keyed by the token's bytes: a token found
/// there was checked as text when it entered.
type Verified = foldhash::HashMap<Box<[u8]>, (Arc<Identity>, u64)>;

/// How many verified tokens each thread slot remembers.
const VERIFIED_CAPACITY: usize = 1024;

/// Verifies credentials against an [`AuthConfig`]. A verified token is remembered until
/// its `exp` (at most 1024 tokens per serving thread, each thread remembering its own),
/// so the signature of a client's token is checked once per thread, not on every request.
pub struct Authenticator {
    verified: PerThread<Mutex<Verified>>,
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    roles_claim: String,
    /// The configured keys (a client only looks them up).
    api_keys: foldhash::HashMap<String, Arc<Identity>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "algorithms",
                &self.keys.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}

/// The API-key header.
pub const API_KEY_HEADER: &str = "x-api-key";

impl Authenticator {
    /// An authenticator for `config`; a key that does not parse is an error naming it.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        if config.audience.as_deref() == Some(crate::access::AUDIENCE) {
            return Err(Error::invalid(
                "gateway.auth.audience",
                "`orchestra` is the control plane's audience; end-user tokens need their own",
            ));
        }
        let mut keys = Vec::new();
        if let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(pem) = &config.rsa_public_key_pem {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|err| Error::invalid("gateway.auth.rsaPublicKeyPem", err.to_string()))?;
            keys.push((Algorithm::RS256, key));
        }
        if let Some(pem) = &config.ec_public_key_pem {
            let key = DecodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|err| Error::invalid("gateway.auth.ecPublicKeyPem", err.to_string()))?;
            keys.push((Algorithm::ES256, key));
        }
        let mut api_keys = foldhash::HashMap::default();
        for (index, key) in config.api_keys.iter().enumerate() {
            if key.key.is_empty() || key.consumer.is_empty() {
                return Err(Error::invalid(
                    format!("gateway.auth.apiKeys[{index}]"),
                    "key and consumer must not be empty",
                ));
            }
            api_keys.insert(
                key.key.clone(),
                Arc::new(Identity {
                    subject: key.consumer.clone(),
                    roles: key.roles.clone(),
                }),
            );
        }
        Ok(Self {
            verified: PerThread::new(|| Mutex::new(foldhash::HashMap::default())),
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
            roles_claim: config.roles_claim.clone().unwrap_or_else(|| "roles".into()),
            api_keys,
        })
    }

    /// Verify the request's credentials: an API key in `X-API-Key`, else a bearer token.
    /// The identity is shared with the cache of verified tokens.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthFailure> {
        self.authenticate_values(
            headers.get(&super::names::X_API_KEY),
            headers.get(http::header::AUTHORIZATION),
        )
    }

    /// [`Authenticator::authenticate`], given the request's `X-API-Key` and
    /// `Authorization` values.
    pub fn authenticate_values(
        &self,
        api_key: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Arc<Identity>, AuthFailure> {
        if let Some(key) = api_key {
            return key
                .to_str()
                .ok()
                .and_then(|k| self.api_keys.get(k.trim()))
                .cloned()
                .ok_or_else(|| AuthFailure("unknown API key".into()));
        }
        let header =
            authorization.ok_or_else(|| AuthFailure("missing bearer token or API key".into()))?;
        let not_bearer = || AuthFailure("the Authorization header must be `Bearer <token>`".into());
        let value = header.as_bytes();
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii)
            .ok_or_else(not_bearer)?;
        let now = jsonwebtoken::get_current_timestamp();
        {
            // Looked up by its bytes: a known token is text already checked.
            let mut verified = self.verified.get().lock();
            match verified.get(token) {
                Some((identity, until)) if now <= *until => return Ok(identity.clone()),
                Some(_) => {
                    verified.remove(token);
                }
                None => {}
            }
        }
        // Visible ASCII only, as `HeaderValue::to_str` has it.
        if header.to_str().is_err() {
            return Err(not_bearer());
        }
        let token_text = std::str::from_utf8(token).map_err(|_| not_bearer())?;
        let (identity, exp) = self.verify_jwt(token_text)?;
        let identity = Arc::new(identity);
        let mut verified = self.verified.get().lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, (_, until)| now <= *until);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            token.into(),
            (identity.clone(), exp.saturating_add(self.leeway)),
        );
        Ok(identity)
    }

    /// Check `token` in full; returns the caller and the token's `exp`.
    fn verify_jwt(&self, token: &str) -> Result<(Identity, u64), AuthFailure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| AuthFailure(format!("malformed token: {err}")))?;
        let key = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, key)| key)
            .ok_or_else(|| AuthFailure(format!("algorithm {:?} is not accepted", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                AuthFailure(match err.kind() {
                    ErrorKind::ExpiredSignature => "token expired".into(),
                    ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
                    ErrorKind::InvalidSignature => "invalid token signature".into(),
                    ErrorKind::InvalidIssuer => "wrong token issuer".into(),
                    ErrorKind::InvalidAudience => "wrong token audience".into(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("token lacks `{claim}`"),
                    _ => format!("invalid token: {err}"),
                })
            })?;
        let claims = data.claims;
        if is_control_plane(&claims) {
            return Err(AuthFailure(format!(
                "a control-plane token (`aud: \"{}\"`) is not accepted on gateway routes",
                crate::access::AUDIENCE
            )));
        }
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthFailure("token `sub` must be a non-empty string".into()))?
            .to_owned();
        let roles = match claims.get(&self.roles_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        // `exp` is required and checked above; a fractional one counts down.
        let exp = claims
            .get("exp")
            .and_then(|e| e.as_u64().or_else(|| e.as_f64().map(|f| f as u64)))
            .unwrap_or(0);
        Ok((Identity { subject, roles }, exp))
    }
}

/// Whether `claims` are for the control plane: such a token grants services, not end
/// users, so a gateway route refuses it even when its keys would verify it.
fn is_control_plane(claims: &serde_json::Value) -> bool {
    match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => aud == crate::access::AUDIENCE,
        Some(serde_json::Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(crate::access::AUDIENCE)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            jwt_secret: Some("s3cret".into()),
            issuer: Some("omc-auth".into()),
            api_keys: vec![ApiKey {
                key: "k1".into(),
                consumer: "reports".into(),
                roles: vec!["reader".into()],
            }],
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn bearer(claims: serde_json::Value, secret: &str) -> HeaderMap {
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn jwt_claims_are_checked() {
        let a = auth();
        let ok = bearer(
            serde_json::json!({"sub":"u1","exp":now()+60,"iss":"omc-auth","roles":["admin","ops"]}),
            "s3cret",
        );
        let id = a.authenticate(&ok).unwrap();
        assert_eq!(id.subject, "u1");
        assert_eq!(id.roles, ["admin", "ops"]);

        let expired = bearer(
            serde_json::json!({"sub":"u1","exp":now()-120,"iss":"omc-auth"}),
            "s3cret",
        );
        assert_eq!(a.authenticate(&expired).unwrap_err().0, "token expired");
        let forged = bearer(
            serde_json::json!({"sub":"u1","exp":now()+60,"iss":"omc-auth"}),
            "other",
        );
        assert_eq!(
            a.authenticate(&forged).unwrap_err().0,
            "invalid token signature"
        );
        let issuer = bearer(
            serde_json::json!({"sub":"u1","exp":now()+60,"iss":"x"}),
            "s3cret",
        );
        assert_eq!(a.authenticate(&issuer).unwrap_err().0, "wrong token issuer");
        let early = bearer(
            serde_json::json!({"sub":"u1","exp":now()+600,"nbf":now()+300,"iss":"omc-auth"}),
            "s3cret",
        );
        assert_eq!(
            a.authenticate(&early).unwrap_err().0,
            "token not valid yet (nbf)"
        );
        assert!(a.authenticate(&HeaderMap::new()).is_err());
        for value in [&b"Basic dTpw"[..], b"Bearer \xff\xfe"] {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_bytes(value).unwrap();
            headers.insert(http::header::AUTHORIZATION, value);
            let refused = a.authenticate(&headers).unwrap_err().0;
            assert_eq!(refused, "the Authorization header must be `Bearer <token>`");
        }
    }

    fn token_of(headers: &HeaderMap) -> String {
        let value = headers[http::header::AUTHORIZATION].to_str().unwrap();
        value.trim_start_matches("Bearer ").to_owned()
    }

    #[test]
    fn verified_tokens_are_remembered_until_they_expire() {
        let a = auth();
        let exp = now() + 60;
        let ok = bearer(
            serde_json::json!({"sub":"u1","exp":exp,"iss":"omc-auth"}),
            "s3cret",
        );
        a.authenticate(&ok).unwrap();
        let (identity, until) = a.verified.get().lock()[token_of(&ok).as_bytes()].clone();
        assert_eq!((identity.subject.as_str(), until as i64), ("u1", exp));
        assert_eq!(a.authenticate(&ok).unwrap().subject, "u1");

        // A remembered token past its time is checked in full again, and refused.
        let stale = bearer(
            serde_json::json!({"sub":"u2","exp":now()-120,"iss":"omc-auth"}),
            "s3cret",
        );
        a.verified.get().lock().insert(
            token_of(&stale).into_bytes().into(),
            (identity, (now() - 1) as u64),
        );
        assert_eq!(a.authenticate(&stale).unwrap_err().0, "token expired");
        assert!(!a
            .verified
            .get()
            .lock()
            .contains_key(token_of(&stale).as_bytes()));
    }

    #[test]
    fn control_plane_tokens_are_refused_on_gateway_routes() {
        let a = auth();
        for aud in [
            serde_json::json!("orchestra"),
            serde_json::json!(["x", "orchestra"]),
        ] {
            let token = bearer(
                serde_json::json!({"sub":"ops","exp":now()+60,"iss":"omc-auth","aud":aud}),
                "s3cret",
            );
            assert!(a
                .authenticate(&token)
                .unwrap_err()
                .0
                .contains("control-plane"));
        }
        let config = AuthConfig {
            audience: Some("orchestra".into()),
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&config).is_err());
    }

    #[test]
    fn debug_prints_no_secret_nor_key() {
        let config = AuthConfig {
            jwt_secret: Some("s3cret-value".into()),
            api_keys: vec![ApiKey {
                key: "key-value".into(),
                consumer: "reports".into(),
                roles: Vec::new(),
            }],
            ..AuthConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-value") && !printed.contains("key-value"));
        assert!(printed.contains("reports"), "{printed}");
    }

    #[test]
    fn api_keys_identify_consumers() {
        let a = auth();
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, "k1".parse().unwrap());
        assert_eq!(a.authenticate(&headers).unwrap().subject, "reports");
        headers.insert(API_KEY_HEADER, "nope".parse().unwrap());
        assert_eq!(a.authenticate(&headers).unwrap_err().0, "unknown API key");
    }
}
