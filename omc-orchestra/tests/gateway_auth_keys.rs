//! RS256 and ES256 tokens checked with configured public keys.

use http::HeaderMap;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use omc_orchestra::gateway::{AuthConfig, Authenticator};
use serde_json::json;

fn bearer(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> HeaderMap {
    let token = encode(&Header::new(alg), &claims, key).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers
}

#[test]
fn rs256_and_es256_tokens_verify_with_public_keys() {
    let auth = Authenticator::new(&AuthConfig {
        rsa_public_key_pem: Some(include_str!("keys/rsa.pub").into()),
        ec_public_key_pem: Some(include_str!("keys/ec.pub").into()),
        audience: Some("omc-erp".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let exp = chrono::Utc::now().timestamp() + 60;
    let rsa = EncodingKey::from_rsa_pem(include_bytes!("keys/rsa.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(include_bytes!("keys/ec.pem")).unwrap();

    let claims = json!({"sub": "svc-a", "exp": exp, "aud": "omc-erp", "roles": "reader writer"});
    let id = auth
        .authenticate(&bearer(Algorithm::RS256, &rsa, claims.clone()))
        .unwrap();
    assert_eq!(id.subject, "svc-a");
    assert_eq!(id.roles, ["reader", "writer"]);
    assert_eq!(
        auth.authenticate(&bearer(Algorithm::ES256, &ec, claims))
            .unwrap()
            .subject,
        "svc-a"
    );

    let wrong_aud = json!({"sub": "svc-a", "exp": exp, "aud": "elsewhere"});
    assert_eq!(
        auth.authenticate(&bearer(Algorithm::ES256, &ec, wrong_aud))
            .unwrap_err()
            .0,
        "wrong token audience"
    );
    // HS256 is not configured here, so a shared-secret token is refused outright.
    let hs = EncodingKey::from_secret(b"guess");
    let refused = auth
        .authenticate(&bearer(
            Algorithm::HS256,
            &hs,
            json!({"sub": "x", "exp": exp}),
        ))
        .unwrap_err();
    assert!(refused.0.contains("not accepted"), "{}", refused.0);
}

#[test]
fn bad_key_material_names_the_field() {
    let err = Authenticator::new(&AuthConfig {
        rsa_public_key_pem: Some("not a key".into()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("rsaPublicKeyPem"), "{err}");
}
