//! HS256 bearer tokens for the registry, signed locally and reused until close to expiry.

use crate::{ClientError, Result};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a signed token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Sign a new token when the cached one has less than this left, so a request in flight
/// never carries a token that expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// A signed token and for whom and until when it is good.
#[derive(Clone)]
struct Cached {
    subject: String,
    token: String,
    expires: Instant,
}

/// Signs tokens with one secret and caches the current one.
pub(crate) struct TokenSigner {
    key: EncodingKey,
    cached: Mutex<Option<Cached>>,
}

impl TokenSigner {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            cached: Mutex::new(None),
        }
    }

    /// A token for `subject` valid for at least [`RENEW_BEFORE`].
    pub(crate) fn token(&self, subject: &str) -> Result<String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            if c.subject == subject
                && c.expires.saturating_duration_since(Instant::now()) > RENEW_BEFORE
            {
                return Ok(c.token.clone());
            }
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: subject,
            iat,
            exp: iat + TOKEN_LIFETIME.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.key)
            .map_err(ClientError::Token)?;
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
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Decoded {
        sub: String,
        iat: u64,
        exp: u64,
    }

    #[test]
    fn signs_hs256_with_sub_iat_exp_and_reuses_the_token() {
        let signer = TokenSigner::new(b"s3cret");
        let token = signer.token("pricing-service").unwrap();
        let decoded = jsonwebtoken::decode::<Decoded>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(jsonwebtoken::Algorithm::HS256),
        )
        .unwrap()
        .claims;
        assert_eq!(decoded.sub, "pricing-service");
        assert_eq!(decoded.exp - decoded.iat, 300);
        assert_eq!(signer.token("pricing-service").unwrap(), token);
    }

    #[test]
    fn renews_a_token_close_to_expiry() {
        let signer = TokenSigner::new(b"s3cret");
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
        let signer = TokenSigner::new(b"s3cret");
        let a = signer.token("a").unwrap();
        let b = signer.token("b").unwrap();
        assert_ne!(a, b);
    }
}
