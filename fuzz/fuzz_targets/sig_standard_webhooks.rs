//! Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64> …`), `wharf::auth::hmac::verify` on hostile input: any header
//! values, secrets and body never panic; a call signed over `id.timestamp.body` with the base64
//! key of a `whsec_` secret, among wrong and other-version signatures, passes exactly when the
//! timestamp is within the tolerance of now; a changed signature, body, id or timestamp never
//! passes.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

// `hmac.rs` takes its `HeaderMap` from `axum::http`; the target has the `http` crate only.
extern crate self as axum;
mod http {
    pub use ::http::HeaderMap;
}

#[path = "auth_shim.rs"]
mod auth;

use auth::AuthFailure;
use auth::hmac::{HmacScheme, TOLERANCE_SECS, verify};
use auth::secrets::Secret;

const SCHEME: HmacScheme = HmacScheme::StandardWebhooks;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Any `webhook-id`, `webhook-timestamp` and `webhook-signature` values (each may be absent).
    raw: [Option<&'a [u8]>; 3],
    /// Any secrets, as given.
    others: Vec<String>,
    body: &'a [u8],
    now: i64,
    /// The key of the secret that signs (the secret is `whsec_` + its base64), and whether the
    /// secret is written without `whsec_`.
    key: &'a [u8],
    bare: bool,
    /// Where among the other secrets it goes.
    signer: u8,
    /// `webhook-id` of the signed call (printable ASCII kept).
    id: &'a str,
    /// The timestamp minus now, taken modulo 400 s: within the tolerance and past it.
    offset: i16,
    /// Wrong `v1` signatures and other tokens around the right one, and where the right one goes.
    decoys: Vec<[u8; 32]>,
    tokens: Vec<&'a str>,
    at: u8,
    /// A byte of the signature to change, and how.
    flip: (u8, u8),
}

fuzz_target!(|input: Input| {
    let others: Vec<Secret> = input.others.iter().cloned().map(Secret::new).collect();
    for secret in &input.others {
        let _ = SCHEME.check_secret(secret);
    }

    // Any header values: no panic; missing unless all three are there; never a pass without a
    // secret.
    const NAMES: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];
    let mut headers = ::http::HeaderMap::new();
    for (name, value) in NAMES.iter().zip(&input.raw) {
        if let Some(value) = value.and_then(|v| ::http::HeaderValue::from_bytes(v).ok()) {
            headers.insert(*name, value);
        }
    }
    let got = verify(SCHEME, &others, &headers, input.body, input.now);
    let readable = NAMES
        .iter()
        .all(|n| headers.get(*n).is_some_and(|v| v.to_str().is_ok()));
    if !readable {
        assert_eq!(got, Err(AuthFailure::Missing));
    }
    if others.is_empty() {
        assert!(got.is_err());
    }

    let encoded = B64.encode(input.key);
    let secret = if input.bare {
        encoded.clone()
    } else {
        format!("whsec_{encoded}")
    };
    if input.key.len() >= 16 && secret.len() <= 512 {
        assert_eq!(SCHEME.check_secret(&secret), Ok(()));
    }
    let mut secrets = others.clone();
    secrets.insert(
        input.signer as usize % (others.len() + 1),
        Secret::new(secret),
    );

    let offset = i64::from(input.offset) % 400;
    let Some(ts) = input.now.checked_add(offset) else {
        return;
    };
    let ts = ts.to_string();
    let id = auth::printable(input.id);
    let sig = auth::sign(
        input.key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", input.body],
    );

    let with = |id: &str, ts: &str, sig: &[u8]| {
        let mut tokens: Vec<String> = input
            .decoys
            .iter()
            .map(|d| format!("v1,{}", B64.encode(d)))
            .chain(input.tokens.iter().map(|t| auth::printable(t)))
            .collect();
        tokens.insert(
            input.at as usize % (tokens.len() + 1),
            format!("v1,{}", B64.encode(sig)),
        );
        let value = tokens.join(" ");
        auth::headers(&[
            ("webhook-id", id.as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", value.as_bytes()),
        ])
        .expect("valid header values")
    };

    let good = with(&id, &ts, &sig);
    let fresh = offset.abs() <= TOLERANCE_SECS;
    let expected = if fresh {
        Ok(())
    } else {
        Err(AuthFailure::Wrong)
    };
    assert_eq!(
        verify(SCHEME, &secrets, &good, input.body, input.now),
        expected,
        "timestamp {ts} now {}",
        input.now
    );
    let reversed: Vec<Secret> = secrets.iter().rev().cloned().collect();
    assert_eq!(
        verify(SCHEME, &reversed, &good, input.body, input.now),
        expected
    );
    if !fresh {
        return;
    }

    let mut flipped = sig;
    flipped[input.flip.0 as usize % 32] ^= input.flip.1.max(1);
    assert_eq!(
        verify(
            SCHEME,
            &secrets,
            &with(&id, &ts, &flipped),
            input.body,
            input.now
        ),
        Err(AuthFailure::Wrong)
    );
    let mut body = input.body.to_vec();
    match body.get_mut(input.flip.0 as usize % input.body.len().max(1)) {
        Some(byte) => *byte ^= input.flip.1.max(1),
        None => body.push(input.flip.1),
    }
    assert_eq!(
        verify(SCHEME, &secrets, &good, &body, input.now),
        Err(AuthFailure::Wrong)
    );
    let other_id = format!("{id}x");
    assert_eq!(
        verify(
            SCHEME,
            &secrets,
            &with(&other_id, &ts, &sig),
            input.body,
            input.now
        ),
        Err(AuthFailure::Wrong)
    );
    let other_ts = format!("0{ts}");
    assert_eq!(
        verify(
            SCHEME,
            &secrets,
            &with(&id, &other_ts, &sig),
            input.body,
            input.now
        ),
        Err(AuthFailure::Wrong)
    );
});
