//! Unsigned test tokens: JWTs with `alg: none`, a base64url JSON payload and an empty
//! signature, carrying the claims Graph routes by (`tid`, `oid`, `appid`, `scp`/`roles`).
//!
//! The simulator reads claims only; it never verifies anything, like the proxy (Graph tokens
//! cannot be verified by third parties). Never logs a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What the simulator learns from a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub tenant_id: String,
    pub object_id: String,
    pub app_id: String,
    /// Client-credential token: `roles` and no `scp`.
    pub app_only: bool,
}

/// Mints a token; `app_only` gives it `roles` instead of `scp`, as client-credential
/// tokens have.
pub fn mint(tid: &str, oid: &str, appid: &str, app_only: bool) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": "none"});
    let mut payload = serde_json::json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tid}/"),
        "tid": tid,
        "oid": oid,
        "appid": appid,
        "ver": "1.0",
    });
    if let Some(claims) = payload.as_object_mut() {
        if app_only {
            claims.insert(
                "roles".into(),
                serde_json::json!(["Mail.ReadWrite", "User.Read.All"]),
            );
        } else {
            claims.insert(
                "scp".into(),
                "Mail.ReadWrite User.Read User.ReadBasic.All".into(),
            );
        }
    }
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

/// Reads an `Authorization` header value; `None` for anything that is not a bearer JWT
/// with string `tid` and `oid` claims.
pub fn parse_authorization(value: &str) -> Option<Claims> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parts = token.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Some(Claims {
        tenant_id: text("tid")?,
        object_id: text("oid")?,
        app_id: text("appid").or_else(|| text("azp")).unwrap_or_default(),
        app_only: claims.get("roles").is_some() && claims.get("scp").is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_delegated_token_parses_back_to_its_claims() {
        let token = mint("t-1", "o-1", "a-1", false);
        assert!(token.ends_with('.'));
        assert_eq!(token.matches('.').count(), 2);
        let claims = parse_authorization(&format!("Bearer {token}")).unwrap();
        assert_eq!(
            claims,
            Claims {
                tenant_id: "t-1".into(),
                object_id: "o-1".into(),
                app_id: "a-1".into(),
                app_only: false
            }
        );
    }

    #[test]
    fn app_only_token_is_recognised_by_roles_without_scp() {
        let token = mint("t", "sp", "app", true);
        let claims = parse_authorization(&format!("bearer {token}")).unwrap();
        assert!(claims.app_only);
    }

    #[test]
    fn garbage_tokens_are_refused() {
        for value in [
            "",
            "Bearer",
            "Bearer abc",
            "Basic dXNlcjpwYXNz",
            "Bearer a.b.c",
            "Bearer EwBwA8l6BAAU",
            "Bearer a.e30.",
            "Bearer a.b.c.d",
        ] {
            assert_eq!(parse_authorization(value), None, "{value}");
        }
    }
}
