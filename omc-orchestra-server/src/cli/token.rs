//! `orchestra token`: mint a control-plane service token.

use crate::ops::span::parse_span;
use clap::Args;
use omc_orchestra::access::{Grants, Scope, TokenIssuer};
use std::path::PathBuf;
use std::time::Duration;

/// What `orchestra token` mints.
#[derive(Args)]
pub struct TokenArgs {
    /// The service the token acts for (its `sub`); `registry:write` covers this
    /// service's instances only.
    #[arg(long)]
    pub service: Option<String>,
    /// Space-separated scopes: registry:write, read, events:publish, jobs:write,
    /// logs:write, admin.
    #[arg(long)]
    pub scope: Option<String>,
    /// Mint an admin token (every scope, any service): for operators and the dashboard.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid: `90s`, `15m`, `12h`, `30d`.
    #[arg(long, default_value = "30d", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Sign with this PEM private key (RSA, P-256 or Ed25519) instead of JWT_SECRET, for
    /// servers started with --service-public-key.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// The servers' control-plane secret (HS256, at least 32 bytes) to sign with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

// Hand-written so that a printed command line never shows the secret.
impl std::fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArgs")
            .field("service", &self.service)
            .field("scope", &self.scope)
            .field("admin", &self.admin)
            .field("ttl", &self.ttl)
            .field("private_key", &self.private_key)
            .finish_non_exhaustive()
    }
}

/// A token lifetime: a span between 1 second and 10 years.
pub(crate) fn parse_ttl(text: &str) -> Result<Duration, String> {
    // A control-plane token that outlives ten years is a token nobody will rotate.
    match parse_span(text) {
        Ok(span) if span.as_secs() > 0 && span.as_secs() <= 10 * 365 * 86_400 => Ok(span),
        Ok(_) => Err("the ttl must be between 1 second and 10 years".into()),
        Err(err) => Err(err),
    }
}

/// The issuer that signs with `private_key`, or else with `jwt_secret`.
pub(crate) fn issuer(
    private_key: Option<&PathBuf>,
    jwt_secret: Option<&str>,
) -> Result<TokenIssuer, String> {
    if let Some(path) = private_key {
        let pem =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        return TokenIssuer::from_private_key_pem(&pem)
            .map_err(|err| format!("{}: {err}", path.display()));
    }
    let secret = jwt_secret
        .filter(|s| !s.is_empty())
        .ok_or("set JWT_SECRET (the servers' secret) or pass --private-key to sign")?;
    TokenIssuer::from_secret(secret.as_bytes()).map_err(|err| err.to_string())
}

/// `orchestra token`: the token alone on stdout, so `$(orchestra token …)` works.
pub(crate) fn mint(args: &TokenArgs) -> i32 {
    let minted = issuer(args.private_key.as_ref(), args.jwt_secret.as_deref()).and_then(|issuer| {
        let mut grants = Grants::parse_strict(args.scope.as_deref().unwrap_or_default())
            .map_err(|err| err.to_string())?;
        if args.admin {
            grants = grants.with(Scope::Admin);
        }
        if grants == Grants::NONE {
            return Err(
                "name the grants with --scope \"registry:write read …\" or pass --admin".to_owned(),
            );
        }
        let service = match (&args.service, args.admin) {
            (Some(service), _) => service.clone(),
            (None, true) => "admin".to_owned(),
            (None, false) => return Err("--service names the service the token acts for".into()),
        };
        issuer
            .mint(&service, grants, args.ttl)
            .map_err(|err| err.to_string())
    });
    match minted {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(message) => {
            eprintln!("orchestra token: {message}");
            2
        }
    }
}
