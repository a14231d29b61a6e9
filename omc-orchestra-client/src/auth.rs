//! Control-plane credentials: a token minted by `orchestra token` sent as it is, or a
//! secret from which the client signs its own tokens, reused until close to expiry.

use crate::{ClientError, Result};
use omc_orchestra::access::{Grants, TokenIssuer};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a signed token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Sign a new token when the cached one has less than this left, so a request in flight
/// never carries a token that expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// A signed token and for whom and until when it is good.
#[derive(Clone)]
struct Cached {
    subject: String,
    token: String,
    expires: Instant,
}

/// What the client proves itself with.
pub(crate) enum Credentials {
    /// A token minted elsewhere (`ORCHESTRA_TOKEN`), sent as it is.
    Token(String),
    /// A secret: the client signs tokens for its own service name.
    Signer(TokenSigner),
}

impl Credentials {
    /// The bearer token for a request made by `subject`.
    pub(crate) fn token(&self, subject: &str) -> Result<String> {
        match self {
            Self::Token(token) => Ok(token.clone()),
            Self::Signer(signer) => signer.token(subject),
        }
    }
}

/// Signs tokens with one secret and caches the current one.
pub(crate) struct TokenSigner {
    /// The secret's issuer, or why the secret cannot sign (too short), told at first use.
    issuer: std::result::Result<TokenIssuer, String>,
    cached: Mutex<Option<Cached>>,
}

impl TokenSigner {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self {
            issuer: TokenIssuer::from_secret(secret).map_err(|err| err.to_string()),
            cached: Mutex::new(None),
        }
    }

    /// A token for `subject`, with every scope a service needs for itself (not `admin`),
    /// valid for at least [`RENEW_BEFORE`].
    pub(crate) fn token(&self, subject: &str) -> Result<String> {
        let issuer = self
            .issuer
            .as_ref()
            .map_err(|reason| ClientError::Invalid {
                field: "jwtSecret".into(),
                reason: reason.clone(),
            })?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            if c.subject == subject
                && c.expires.saturating_duration_since(Instant::now()) > RENEW_BEFORE
            {
                return Ok(c.token.clone());
            }
        }
        let token = issuer
            .mint(subject, Grants::service(), TOKEN_LIFETIME)
            .map_err(|err| ClientError::Invalid {
                field: "serviceName".into(),
                reason: err.to_string(),
            })?;
        *cached = Some(Cached {
            subject: subject.to_owned(),
            token: token.clone(),
            expires: Instant::now() + TOKEN_LIFETIME,
        });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omc_orchestra::access::{Scope, TokenVerifier};

    const SECRET: &[u8] = b"a-secret-of-at-least-thirty-two-bytes";

    #[test]
    fn signs_service_tokens_for_the_subject_and_reuses_them() {
        let signer = TokenSigner::new(SECRET);
        let token = signer.token("pricing-service").unwrap();
        let caller = TokenVerifier::from_secret(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(caller.service(), "pricing-service");
        assert!(caller.may_write_service("pricing-service"));
        assert!(caller.require(Scope::Admin).is_err());
        assert_eq!(signer.token("pricing-service").unwrap(), token);
    }

    #[test]
    fn renews_a_token_close_to_expiry() {
        let signer = TokenSigner::new(SECRET);
        signer.token("a").unwrap();
        if let Some(c) = signer.cached.lock().unwrap().as_mut() {
            c.expires = Instant::now() + RENEW_BEFORE / 2;
        }
        // A token signed in the same second has the same claims; what matters is that the
        // cache entry is replaced with one good for the full lifetime.
        signer.token("a").unwrap();
        let cached = signer.cached.lock().unwrap().clone().unwrap();
        assert!(cached.expires.saturating_duration_since(Instant::now()) > RENEW_BEFORE);
    }

    #[test]
    fn a_new_subject_gets_a_new_token() {
        let signer = TokenSigner::new(SECRET);
        let a = signer.token("a").unwrap();
        let b = signer.token("b").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_short_secret_is_reported_at_first_use() {
        let err = TokenSigner::new(b"short").token("a").unwrap_err();
        assert!(
            matches!(&err, ClientError::Invalid { field, .. } if field == "jwtSecret"),
            "{err:?}"
        );
    }
}
