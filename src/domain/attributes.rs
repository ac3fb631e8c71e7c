//! Invitation attributes: a small map of string keys to string values that
//! an invitation carries to the sign-up service (a group, role, organization
//! or topic for the new user). The service checks only their size and the
//! key's spelling and never interprets them. This module owns the limits and
//! the stored form (a flat `text[]` of key, value, key, value, … in key
//! order, which is also the order a prost `BTreeMap` encodes them in, so the
//! SQL-encoded `redeemed` event is byte for byte the Rust one).

use std::collections::BTreeMap;

/// Most attributes on one invitation.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 512;
/// Most bytes of keys and values together.
pub const MAX_TOTAL_BYTES: usize = 4096;

/// A checked attribute map. Keys are 1-64 bytes of ASCII letters, digits and
/// `_ . : -`, starting with a letter or digit (they end up as field names,
/// column names or URL parameters in the products that read them); values
/// are at most 512 bytes of UTF-8 without control characters (empty
/// allowed); at most 16 pairs and 4096 bytes in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(BTreeMap<String, String>);

/// One broken limit: the field to name in the BadRequest violation
/// (`attributes.<key>`, or `attributes` for the map as a whole or a key
/// that cannot be a field name) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeError {
    pub field: String,
    pub description: String,
}

fn key_error(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("keys must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Some(format!("key {:?}… is longer than {MAX_KEY_LEN} bytes", truncated(key)));
    }
    let first_ok = key.as_bytes()[0].is_ascii_alphanumeric();
    if !first_ok || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        return Some(format!(
            "key {key:?} must be ASCII letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        ));
    }
    None
}

fn truncated(key: &str) -> &str {
    let mut end = MAX_KEY_LEN.min(key.len());
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// No attributes, for batches that never carry any (waitlist admissions).
pub static NONE: Attributes = Attributes(BTreeMap::new());

impl Attributes {
    /// Checks a request's map; every broken limit is reported.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<Self, Vec<AttributeError>> {
        let mut errors = Vec::new();
        let mut map = BTreeMap::new();
        let (mut total, mut count) = (0usize, 0usize);
        for (key, value) in pairs {
            total += key.len() + value.len();
            count += 1;
            if let Some(description) = key_error(key) {
                errors.push(AttributeError { field: "attributes".into(), description });
                continue;
            }
            let field = format!("attributes.{key}");
            if value.len() > MAX_VALUE_LEN {
                errors.push(AttributeError { field, description: format!("must be at most {MAX_VALUE_LEN} bytes") });
            } else if value.chars().any(char::is_control) {
                errors.push(AttributeError { field, description: "must not contain control characters".into() });
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
        if count > MAX_ATTRIBUTES {
            errors.push(AttributeError {
                field: "attributes".into(),
                description: format!("at most {MAX_ATTRIBUTES} attributes"),
            });
        } else if total > MAX_TOTAL_BYTES {
            errors.push(AttributeError {
                field: "attributes".into(),
                description: format!("keys and values must be at most {MAX_TOTAL_BYTES} bytes in all"),
            });
        }
        if errors.is_empty() { Ok(Self(map)) } else { Err(errors) }
    }

    /// Parses `key=value` pairs (flags and the CLI).
    pub fn parse_pairs(pairs: &[String]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("{pair:?} is not key=value"));
            };
            if map.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(format!("key {key:?} given twice"));
            }
        }
        Self::parse(&map).map_err(|errors| {
            errors.into_iter().map(|e| format!("{}: {}", e.field, e.description)).collect::<Vec<_>>().join("; ")
        })
    }

    /// The stored form: key, value, key, value, … in key order.
    pub fn from_stored(flat: Vec<String>) -> Self {
        let mut map = BTreeMap::new();
        let mut items = flat.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            map.insert(key, value);
        }
        Self(map)
    }

    pub fn to_stored(&self) -> Vec<String> {
        self.0.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Attributes, Vec<AttributeError>> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Attributes::parse(&map)
    }

    #[test]
    fn limits_at_their_edges() {
        assert!(parse(&[]).expect("empty").is_empty());
        assert!(parse(&[(&"k".repeat(MAX_KEY_LEN), "v")]).is_ok());
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        let e = parse(&[(&long_key, "v")]).expect_err("long key");
        assert_eq!(e[0].field, "attributes");
        assert!(e[0].description.contains("longer than 64"), "{e:?}");
        assert!(parse(&[("role", &"v".repeat(MAX_VALUE_LEN))]).is_ok());
        let e = parse(&[("role", &"v".repeat(MAX_VALUE_LEN + 1))]).expect_err("long value");
        assert_eq!(e[0].field, "attributes.role");
        let keys: Vec<String> = (0..=MAX_ATTRIBUTES).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "")).collect();
        assert!(parse(&pairs[..MAX_ATTRIBUTES]).is_ok());
        assert_eq!(parse(&pairs).expect_err("17")[0].description, "at most 16 attributes");
        // 8 pairs of 4 + 508 bytes is exactly 4096.
        let keys: Vec<String> = (0..8).map(|i| format!("key{i}")).collect();
        let value = "v".repeat(508);
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
        assert!(parse(&pairs).is_ok());
        let value = "v".repeat(509);
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
        assert!(parse(&pairs).expect_err("4104 bytes")[0].description.contains("4096 bytes"));
    }

    #[test]
    fn keys_are_spelled_like_field_names() {
        for ok in ["role", "org:id", "group.name", "follow-1", "A_b", "9lives"] {
            assert!(parse(&[(ok, "x")]).is_ok(), "{ok}");
        }
        for bad in ["", "_x", "-x", "has space", "ü", "a/b", "a\nb"] {
            let e = parse(&[(bad, "x")]).expect_err(bad);
            assert_eq!(e[0].field, "attributes", "{bad:?}");
        }
        let e = parse(&[("role", "a\u{7}b")]).expect_err("control");
        assert_eq!(e[0].field, "attributes.role");
    }

    #[test]
    fn stored_form_round_trips_in_key_order() {
        let a = parse(&[("b", "2"), ("a", "1"), ("c", "")]).expect("valid");
        assert_eq!(a.to_stored(), ["a", "1", "b", "2", "c", ""]);
        assert_eq!(Attributes::from_stored(a.to_stored()), a);
    }

    #[test]
    fn pairs_from_flags() {
        let a = Attributes::parse_pairs(&["role=admin".into(), "org=acme=1".into()]).expect("valid");
        assert_eq!(a.as_map().get("org").map(String::as_str), Some("acme=1"));
        assert!(Attributes::parse_pairs(&["role".into()]).is_err());
        assert!(Attributes::parse_pairs(&["a=1".into(), "a=2".into()]).is_err());
        assert!(Attributes::parse_pairs(&["bad key=1".into()]).is_err());
    }
}
