//! The SHA-1 signatures of WeChat pushes: `signature` over (token, timestamp, nonce) and, in
//! safe mode, `msg_signature` over (token, timestamp, nonce, Encrypt). Parts are sorted
//! lexicographically and concatenated; the digest is lowercase hex.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

fn sorted_sha1(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// `signature` of URL verification and plaintext pushes.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&mut [token, timestamp, nonce])
}

/// `msg_signature` of safe and compatible mode pushes and encrypted replies.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&mut [token, timestamp, nonce, encrypt])
}

/// Compares a computed signature with a presented one in constant time (case-insensitively,
/// though WeChat sends lowercase).
pub fn signatures_match(computed: &str, presented: &str) -> bool {
    let presented = presented.to_ascii_lowercase();
    computed.len() == presented.len() && bool::from(computed.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ../shared/test-vectors/callback-crypto.md, token `AAAAA`.
    #[test]
    fn url_verification_vector() {
        assert_eq!(signature("AAAAA", "1714036504", "1514711492"), "f464b24fc39322e44b38aa78f5edd27bd1441696");
    }

    #[test]
    fn plaintext_post_vector() {
        assert_eq!(signature("AAAAA", "1714037059", "486452656"), "899cf89e464efb63f54ddac96b0a0a235f53aa78");
    }

    #[test]
    fn safe_mode_vectors() {
        let encrypt = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
        assert_eq!(
            msg_signature("AAAAA", "1714112445", "415670741", encrypt),
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
        );
        assert_eq!(signature("AAAAA", "1714112445", "415670741"), "6c5c811b55cc85e0e1b54100749188c20beb3f5d");
    }

    #[test]
    fn comparison_rejects_near_misses() {
        let good = signature("AAAAA", "1714036504", "1514711492");
        assert!(signatures_match(&good, &good));
        assert!(signatures_match(&good, &good.to_uppercase()));
        assert!(!signatures_match(&good, &good[..39]));
        let mut flipped = good.clone().into_bytes();
        flipped[0] = if flipped[0] == b'f' { b'e' } else { b'f' };
        assert!(!signatures_match(&good, std::str::from_utf8(&flipped).unwrap()));
        assert!(!signatures_match(&good, ""));
    }
}
