//! GitHub signatures (`X-Hub-Signature-256: sha256=<hex>`), `wharf::auth::hmac::verify` on hostile
//! input: any header value, secrets and body never panic; a header signed over the body with one
//! of the secrets always passes, and any other signature, a changed body or a cut signature
//! never does.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "auth_shim.rs"]
mod auth;

use auth::Call;
use auth::hmac::HmacScheme;

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
    call.assert_verdict(&good, Ok(()));
    call.assert_wrong(&with(&auth::flipped(&sig, input.flip)));
    call.assert_wrong(&with(&sig[..input.cut as usize % 32]));
    let mut longer = sig.to_vec();
    longer.push(input.cut);
    call.assert_wrong(&with(&longer));
    call.assert_wrong_body(&good, input.flip);
});
