//! GitHub signatures (`X-Hub-Signature-256: sha256=<hex>`), `wharf::auth::hmac::verify` on hostile
//! input: any header value, secrets and body never panic; a header signed over the body with one
//! of the secrets always passes, and any other signature, a changed body or a cut signature
//! never does.
#![no_main]

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
use auth::hmac::{HmacScheme, verify};
use auth::secrets::Secret;

const SCHEME: HmacScheme = HmacScheme::Github;
const HEADER: &str = "x-hub-signature-256";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Any `X-Hub-Signature-256` value.
    header: &'a [u8],
    secrets: Vec<String>,
    body: &'a [u8],
    now: i64,
    /// Which secret signs.
    signer: u8,
    /// Upper-case hex digits, spaces around the value.
    upper: bool,
    pad: bool,
    /// A byte of the signature to change, and how.
    flip: (u8, u8),
    /// How much of the signature a cut one keeps.
    cut: u8,
}

fuzz_target!(|input: Input| {
    let secrets: Vec<Secret> = input.secrets.iter().cloned().map(Secret::new).collect();
    for secret in &input.secrets {
        let _ = SCHEME.check_secret(secret);
    }

    // Any header value: no panic, and never a pass without a secret.
    let got = match auth::headers(&[(HEADER, input.header)]) {
        Some(headers) => verify(SCHEME, &secrets, &headers, input.body, input.now),
        None => verify(
            SCHEME,
            &secrets,
            &::http::HeaderMap::new(),
            input.body,
            input.now,
        ),
    };
    if secrets.is_empty() {
        assert!(got.is_err());
    }
    assert_eq!(
        verify(
            SCHEME,
            &secrets,
            &::http::HeaderMap::new(),
            input.body,
            input.now
        ),
        Err(AuthFailure::Missing)
    );

    if secrets.is_empty() {
        return;
    }
    let key = secrets[input.signer as usize % secrets.len()]
        .expose()
        .as_bytes();
    let sig = auth::sign(key, &[input.body]);
    let with = |sig: &[u8]| {
        let mut hex = hex::encode(sig);
        if input.upper {
            hex.make_ascii_uppercase();
        }
        let value = if input.pad {
            format!(" sha256={hex} ")
        } else {
            format!("sha256={hex}")
        };
        auth::headers(&[(HEADER, value.as_bytes())]).expect("a valid header value")
    };

    let good = with(&sig);
    assert_eq!(
        verify(SCHEME, &secrets, &good, input.body, input.now),
        Ok(())
    );
    let reversed: Vec<Secret> = secrets.iter().rev().cloned().collect();
    assert_eq!(
        verify(SCHEME, &reversed, &good, input.body, input.now),
        Ok(())
    );

    let mut flipped = sig;
    flipped[input.flip.0 as usize % 32] ^= input.flip.1.max(1);
    assert_eq!(
        verify(SCHEME, &secrets, &with(&flipped), input.body, input.now),
        Err(AuthFailure::Wrong)
    );
    let cut = &sig[..input.cut as usize % 32];
    assert_eq!(
        verify(SCHEME, &secrets, &with(cut), input.body, input.now),
        Err(AuthFailure::Wrong)
    );
    let mut longer = sig.to_vec();
    longer.push(input.cut);
    assert_eq!(
        verify(SCHEME, &secrets, &with(&longer), input.body, input.now),
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
});
