//! What of a webhook call is stored (and shown to vessels and the admin API) with its secrets
//! replaced by `[redacted]`: credential and signature headers of the providers below, and query
//! parameters whose name says they carry a secret.

/// The text a secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Headers whose values are secrets (names lower-case, as `http` gives them), by provider.
pub const HEADERS: &[&str] = &[
    // HTTP and common API-key headers.
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    // GitHub, Gitea/Gogs, Bitbucket, Intercom.
    "x-hub-signature",
    "x-hub-signature-256",
    "x-gitea-signature",
    "x-gogs-signature",
    // GitLab (a shared token, not a signature).
    "x-gitlab-token",
    // Stripe.
    "stripe-signature",
    // Standard Webhooks and Svix.
    "webhook-signature",
    "svix-signature",
    // Slack.
    "x-slack-signature",
    // Shopify.
    "x-shopify-hmac-sha256",
    // Twilio and SendGrid.
    "x-twilio-signature",
    "x-twilio-email-event-webhook-signature",
    // Square.
    "x-square-signature",
    "x-square-hmacsha256-signature",
    // Paddle.
    "paddle-signature",
    // Zoom.
    "x-zm-signature",
    // HubSpot.
    "x-hubspot-signature",
    "x-hubspot-signature-v3",
    // Razorpay.
    "x-razorpay-signature",
    // WooCommerce.
    "x-wc-webhook-signature",
    // Typeform, Linear, Sentry, PagerDuty, Twitch, Dropbox, Discord, Asana.
    "typeform-signature",
    "linear-signature",
    "sentry-hook-signature",
    "x-pagerduty-signature",
    "twitch-eventsub-message-signature",
    "x-dropbox-signature",
    "x-signature-ed25519",
    "x-hook-secret",
    "x-hook-signature",
];

/// Query parameter names (compared case-insensitively) whose values are secrets.
pub const QUERY_KEYS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "key",
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "client_secret",
    "password",
    "signature",
    "sig",
    "hmac",
    "auth",
];

/// Query parameter names that would carry an API key: refused outright on a `bearer` webhook.
pub const QUERY_API_KEYS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
];

/// True for a header whose value is stored as `[redacted]`.
pub fn secret_header(name: &str) -> bool {
    HEADERS.contains(&name)
}

/// True for a query parameter whose value is stored as `[redacted]`: by its name, or because
/// its value looks like a wharf key or an HMAC secret wherever it is.
pub fn secret_query(name: &str, value: &str) -> bool {
    QUERY_KEYS.iter().any(|k| k.eq_ignore_ascii_case(name)) || looks_like_secret(value)
}

/// A wharf API key or a `whsec_` secret, recognised by its prefix.
pub fn looks_like_secret(value: &str) -> bool {
    value.starts_with(super::keys::KEY_PREFIX) || value.starts_with("whsec_")
}

/// True when a query parameter would carry an API key (by name or by value).
pub fn api_key_in_query(name: &str, value: &str) -> bool {
    QUERY_API_KEYS.iter().any(|k| k.eq_ignore_ascii_case(name))
        || value.starts_with(super::keys::KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_headers_and_query_keys_are_secret() {
        for h in [
            "x-gitlab-token",
            "x-slack-signature",
            "x-shopify-hmac-sha256",
            "x-twilio-signature",
            "svix-signature",
        ] {
            assert!(secret_header(h), "{h}");
        }
        assert!(!secret_header("content-type"));
        assert!(secret_query("Token", "x"));
        assert!(secret_query("sig", "x"));
        assert!(secret_query("anything", "wharf_key_abc"));
        assert!(!secret_query("page", "2"));
        assert!(api_key_in_query("api_key", "x"));
        assert!(api_key_in_query("q", "wharf_key_x"));
        assert!(!api_key_in_query("signature", "x"));
    }
}
