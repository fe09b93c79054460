//! `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a byte).

use std::string::FromUtf8Error;

/// Splits `body` on `&` into decoded `(name, value)` pairs, in order; empty pieces are skipped
/// and a piece without `=` has an empty value. Malformed `%` escapes are kept literally.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FromUtf8Error> {
    body.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &[][..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(input: &[u8]) -> Result<String, FromUtf8Error> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn pairs(body: &str) -> Vec<(String, String)> {
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_plus_and_percent() {
        assert_eq!(
            pairs("command=%2Fdeploy&text=prod+now&user_name=al%C3%ADce"),
            [
                ("command".into(), "/deploy".into()),
                ("text".into(), "prod now".into()),
                ("user_name".into(), "alíce".into())
            ]
        );
    }

    #[test]
    fn keeps_malformed_escapes_and_bare_names() {
        assert_eq!(
            pairs("a=%zz&b&&c=%4"),
            [
                ("a".into(), "%zz".into()),
                ("b".into(), String::new()),
                ("c".into(), "%4".into())
            ]
        );
        assert_eq!(pairs("x=1%"), [("x".into(), "1%".into())]);
        assert_eq!(pairs("k=%41"), [("k".into(), "A".into())]);
    }

    #[test]
    fn rejects_invalid_utf8() {
        assert!(parse(b"a=%FF").is_err());
    }
}
