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

#[path = "auth_shim.rs"]
mod auth;

use auth::hmac::HmacScheme;
use auth::secrets::Secret;
use auth::{AuthFailure, Call};

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
    let others = auth::secrets(SCHEME, &input.others);
    let unsigned = Call {
        scheme: SCHEME,
        secrets: &others,
        body: input.body,
        now: input.now,
    };
    // Any header values, each of the three possibly absent: also `Missing` unless all three
    // are there and readable.
    const NAMES: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];
    let pairs: Vec<(&str, Option<&[u8]>)> = NAMES.into_iter().zip(input.raw).collect();
    let headers = unsigned.any_headers(&pairs);
    let readable = NAMES
        .iter()
        .all(|n| headers.get(*n).is_some_and(|v| v.to_str().is_ok()));
    if !readable {
        assert_eq!(unsigned.verify(&headers), Err(AuthFailure::Missing));
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

    let call = Call {
        secrets: &secrets,
        ..unsigned
    };
    let good = with(&id, &ts, &sig);
    if !call.assert_passes_when_fresh(&good, offset) {
        return;
    }

    call.assert_wrong(&with(&id, &ts, &auth::flipped(&sig, input.flip)));
    call.assert_wrong_body(&good, input.flip);
    call.assert_wrong(&with(&format!("{id}x"), &ts, &sig));
    call.assert_wrong(&with(&id, &format!("0{ts}"), &sig));
});
