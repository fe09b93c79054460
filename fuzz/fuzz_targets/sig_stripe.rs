//! Stripe signatures (`Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`),
//! `wharf::auth::hmac::verify` on hostile input: any header value, secrets and body never panic;
//! a header signed over `t.body` with one of the secrets, among other items and wrong `v1`s,
//! passes exactly when `t` is within the tolerance of now; a changed signature, body or `t`
//! never passes.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "auth_shim.rs"]
mod auth;

use auth::Call;
use auth::hmac::HmacScheme;

const SCHEME: HmacScheme = HmacScheme::Stripe;
const HEADER: &str = "stripe-signature";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Any `Stripe-Signature` value.
    header: &'a [u8],
    secrets: Vec<String>,
    body: &'a [u8],
    now: i64,
    /// Which secret signs.
    signer: u8,
    /// `t` minus now, taken modulo 400 s: within the tolerance and past it.
    offset: i16,
    /// `t` written with a `+` or leading zeros.
    plus: bool,
    zeros: u8,
    /// Other items before `t` (printable ASCII kept; a `t=` among them is overridden).
    before: Vec<&'a str>,
    /// Wrong `v1` signatures around the right one, and where the right one goes.
    decoys: Vec<[u8; 32]>,
    at: u8,
    /// A byte of the signature to change, and how.
    flip: (u8, u8),
}

fuzz_target!(|input: Input| {
    let secrets = auth::secrets(SCHEME, &input.secrets);
    let call = Call {
        scheme: SCHEME,
        secrets: &secrets,
        body: input.body,
        now: input.now,
    };
    call.any_headers(&[(HEADER, Some(input.header))]);

    if secrets.is_empty() {
        return;
    }
    let offset = i64::from(input.offset) % 400;
    let Some(t) = input.now.checked_add(offset) else {
        return;
    };
    let t_text = match (t >= 0, input.plus) {
        (true, true) => format!("+{}{t}", "0".repeat(usize::from(input.zeros % 4))),
        (true, false) => format!("{}{t}", "0".repeat(usize::from(input.zeros % 4))),
        (false, _) => t.to_string(),
    };
    let key = secrets[input.signer as usize % secrets.len()]
        .expose()
        .as_bytes();
    let sig = auth::sign(key, &[t_text.as_bytes(), b".", input.body]);

    let with = |t_text: &str, sig: &[u8]| {
        let mut items: Vec<String> = input.before.iter().map(|s| auth::printable(s)).collect();
        items.push(format!("t={t_text}"));
        let mut v1s: Vec<String> = input
            .decoys
            .iter()
            .map(|d| format!("v1={}", hex::encode(d)))
            .collect();
        v1s.insert(
            input.at as usize % (v1s.len() + 1),
            format!("v1={}", hex::encode(sig)),
        );
        items.extend(v1s);
        let value = items.join(",");
        auth::headers(&[(HEADER, value.as_bytes())]).expect("a valid header value")
    };

    let good = with(&t_text, &sig);
    if !call.assert_passes_when_fresh(&good, offset) {
        return;
    }

    call.assert_wrong(&with(&t_text, &auth::flipped(&sig, input.flip)));
    call.assert_wrong_body(&good, input.flip);
    // The signature is over `t` as written: another `t`, even one as fresh, does not pass.
    let other_t = if let Some(unsigned) = t_text.strip_prefix('+') {
        unsigned.to_string()
    } else {
        format!("{}", t.wrapping_add(1))
    };
    if other_t != t_text {
        call.assert_wrong(&with(&other_t, &sig));
    }
});
