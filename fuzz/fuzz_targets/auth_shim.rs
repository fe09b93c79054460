//! What the signature targets share: the real `wharf_core::auth` (schemes, secrets, the failure
//! answers) and the checks every scheme must pass, so each target states only its own.

pub use wharf_core::auth::{AuthFailure, hmac, secrets};

use secrets::Secret;

/// The `Secret`s of `given`, after `check_secret` has seen each one: the check runs on what an
/// operator types, so it must not panic on any text.
pub fn secrets(scheme: hmac::HmacScheme, given: &[String]) -> Vec<Secret> {
    for secret in given {
        let _ = scheme.check_secret(secret);
    }
    given.iter().cloned().map(Secret::new).collect()
}

/// What stays fixed across the `verify` calls of one input while a target changes the headers.
/// The checks below are the ones every scheme shares, so each target states only its own.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub scheme: hmac::HmacScheme,
    pub secrets: &'a [Secret],
    pub body: &'a [u8],
    pub now: i64,
}

impl Call<'_> {
    pub fn verify(&self, headers: &::http::HeaderMap) -> Result<(), AuthFailure> {
        hmac::verify(self.scheme, self.secrets, headers, self.body, self.now)
    }

    /// Any header values (`None`, or bytes that cannot be a header value, leave the header
    /// out): no panic, never a pass without a secret, and a call without the headers is
    /// `Missing`, not `Wrong`. Returns the headers sent, for the checks only one scheme makes.
    pub fn any_headers(&self, pairs: &[(&'static str, Option<&[u8]>)]) -> ::http::HeaderMap {
        let mut headers = ::http::HeaderMap::new();
        for (name, value) in pairs {
            if let Some(value) = value.and_then(|v| ::http::HeaderValue::from_bytes(v).ok()) {
                headers.insert(*name, value);
            }
        }
        let got = self.verify(&headers);
        if self.secrets.is_empty() {
            assert!(got.is_err(), "{headers:?}");
        }
        assert_eq!(
            self.verify(&::http::HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
        headers
    }

    /// `headers` get `expected` with the secrets in the order given and reversed: `verify` tries
    /// every secret, so where the signing one sits must not matter.
    pub fn assert_verdict(&self, headers: &::http::HeaderMap, expected: Result<(), AuthFailure>) {
        assert_eq!(
            self.verify(headers),
            expected,
            "{headers:?} now {}",
            self.now
        );
        let reversed: Vec<Secret> = self.secrets.iter().rev().cloned().collect();
        let reversed = Call {
            secrets: &reversed,
            ..*self
        };
        assert_eq!(reversed.verify(headers), expected);
    }

    /// `headers` signed for `offset` seconds from now pass exactly when that is within the
    /// tolerance (a stale signature is `Wrong`), in either secret order. Returns whether they
    /// pass: the checks that a changed part fails mean something only for a passing call.
    #[allow(dead_code)]
    pub fn assert_passes_when_fresh(&self, headers: &::http::HeaderMap, offset: i64) -> bool {
        let fresh = offset.abs() <= hmac::TOLERANCE_SECS;
        let expected = if fresh {
            Ok(())
        } else {
            Err(AuthFailure::Wrong)
        };
        self.assert_verdict(headers, expected);
        fresh
    }

    /// `headers` are all there but do not pass: `Wrong`, never `Ok` nor `Missing`.
    pub fn assert_wrong(&self, headers: &::http::HeaderMap) {
        assert_eq!(
            self.verify(headers),
            Err(AuthFailure::Wrong),
            "{headers:?} now {}",
            self.now
        );
    }

    /// `headers` that pass for this body are `Wrong` for the body with one byte changed (or,
    /// when empty, one byte added): the signature covers every byte.
    pub fn assert_wrong_body(&self, headers: &::http::HeaderMap, flip: (u8, u8)) {
        let body = flipped(self.body, flip);
        Call {
            body: &body,
            ..*self
        }
        .assert_wrong(headers);
    }
}

/// `bytes` with byte `flip.0` (modulo the length) XORed with `flip.1`, at least 1 so that the
/// byte does change; empty `bytes` become `[flip.1]`.
pub fn flipped(bytes: &[u8], flip: (u8, u8)) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let len = bytes.len().max(1);
    match bytes.get_mut(flip.0 as usize % len) {
        Some(byte) => *byte ^= flip.1.max(1),
        None => bytes.push(flip.1),
    }
    bytes
}

/// HMAC-SHA256 of `parts` under `key`, computed here independently of `hmac.rs`.
pub fn sign(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use ::hmac::Mac as _;
    let mut mac = ::hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A header map of `pairs`; `None` when a value cannot be a header value.
pub fn headers(pairs: &[(&'static str, &[u8])]) -> Option<::http::HeaderMap> {
    let mut map = ::http::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, ::http::HeaderValue::from_bytes(value).ok()?);
    }
    Some(map)
}

/// Keeps the printable ASCII of `text` (what a sender can put in a header as it is).
#[allow(dead_code)]
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}
