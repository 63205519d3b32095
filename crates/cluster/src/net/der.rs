//! Just enough DER to read two fields of an X.509 certificate that the TLS
//! stack does not expose: the DNS names of its subjectAltName (a node's
//! certificate names its node id there) and its notAfter (days to expiry).
//!
//! Only certificates the TLS stack has already verified, or the node's own
//! certificate, are read here; still, any malformed input gives `None`,
//! never a panic.

/// One TLV: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT` version, `[3] EXPLICIT` extensions of a TBSCertificate.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// subjectAltName, 2.5.29.17, as encoded.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
/// `dNSName [2] IMPLICIT IA5String` in a GeneralName.
const DNS_NAME: u8 = 0x82;

/// The fields of a TBSCertificate, in order.
fn tbs_fields(cert: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = Vec::new();
    while !tbs.is_empty() {
        let (tag, content, rest) = tlv(tbs)?;
        fields.push((tag, content));
        tbs = rest;
    }
    Some(fields)
}

/// The DNS names of the certificate's subjectAltName extension.
pub fn san_dns_names(cert: &[u8]) -> Option<Vec<String>> {
    let fields = tbs_fields(cert)?;
    let (_, extensions) = fields.iter().find(|(tag, _)| *tag == EXTENSIONS)?;
    let (tag, mut list, _) = tlv(extensions)?;
    if tag != SEQUENCE {
        return None;
    }
    while !list.is_empty() {
        let (_, ext, rest) = tlv(list)?;
        list = rest;
        let (_, oid, mut body) = tlv(ext)?;
        if oid != SAN_OID {
            continue;
        }
        // An optional `critical` BOOLEAN, then the OCTET STRING.
        let (mut tag, mut value, rest) = tlv(body)?;
        if tag == 0x01 {
            body = rest;
            (tag, value, _) = tlv(body)?;
        }
        if tag != 0x04 {
            return None;
        }
        let (tag, mut names, _) = tlv(value)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut out = Vec::new();
        while !names.is_empty() {
            let (tag, name, rest) = tlv(names)?;
            names = rest;
            if tag == DNS_NAME {
                out.push(String::from_utf8(name.to_vec()).ok()?);
            }
        }
        return Some(out);
    }
    Some(Vec::new())
}

/// commonName, 2.5.4.3, as encoded.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The TBSCertificate field `n` after the optional version: 0 serial,
/// 1 signature, 2 issuer, 3 validity, 4 subject.
fn tbs_field(cert: &[u8], n: usize) -> Option<(u8, &[u8])> {
    let fields = tbs_fields(cert)?;
    let skip = usize::from(fields.first()?.0 == VERSION);
    fields.get(skip + n).copied()
}

/// The first commonName of the certificate's subject.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (tag, mut rdns) = tbs_field(cert, 4)?;
    if tag != SEQUENCE {
        return None;
    }
    while !rdns.is_empty() {
        let (_, set, rest) = tlv(rdns)?;
        rdns = rest;
        let (_, pair, _) = tlv(set)?;
        let (_, oid, value) = tlv(pair)?;
        if oid == CN_OID {
            let (_, text, _) = tlv(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

/// The certificate's notAfter, in seconds since the Unix epoch.
pub fn not_after_unix(cert: &[u8]) -> Option<i64> {
    let (tag, validity) = tbs_field(cert, 3)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    parse_time(tag, time)
}

fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let text = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_unix_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_time(UTC_TIME, b"000101000000Z"), Some(946_684_800));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20261205183637Z"),
            Some(1_796_495_797)
        );
        assert_eq!(parse_time(UTC_TIME, b"991231235959Z"), Some(946_684_799));
        assert_eq!(parse_time(UTC_TIME, b"001301000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"0001010000Z"), None);
    }

    #[test]
    fn certificates_give_their_names_and_expiry() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".into(), "b.example".into()])
                .expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "the name");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der().to_vec();
        assert_eq!(subject_common_name(&der).as_deref(), Some("the name"));
        assert_eq!(
            san_dns_names(&der),
            Some(vec!["a.example".to_string(), "b.example".to_string()])
        );
        assert_eq!(
            not_after_unix(&der),
            Some(days_from_civil(2031, 7, 9) * 86_400)
        );
    }

    #[test]
    fn garbage_gives_none_at_every_length() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        for n in 0..der.len() {
            // Truncated: never a panic; the outer length no longer fits.
            assert_eq!(san_dns_names(&der[..n]), None, "cut at {n}");
            let _ = not_after_unix(&der[..n]);
            let _ = subject_common_name(&der[..n]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = san_dns_names(&flipped);
            let _ = not_after_unix(&flipped);
            let _ = subject_common_name(&flipped);
            flipped[i] ^= 0xff;
        }
    }
}
