//! What serde_json does not check: a key twice in one object.
//!
//! `serde_json::Value` (and every map type) keeps the last of duplicate keys,
//! so `{"messages":[A],"messages":[B]}` silently loses `A`. A signed webhook
//! with such a body is refused instead (contract §2: "taken whole or refused
//! whole"). The check walks the document once without building it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a body failed the strict check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the key {key:?} appears twice in {place}; each key may appear only once in an object")]
    DuplicateKey {
        key: String,
        /// `the top-level object` or `` `entry[0].changes[0].value` ``.
        place: String,
    },
}

/// Checks that `body` is one JSON value in which no object has a key twice
/// (keys compared after unescaping), at any depth.
pub fn reject_duplicate_keys(body: &[u8]) -> Result<(), StrictJsonError> {
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let checked =
        Check { at: &Location::Root, found: &found }.deserialize(&mut deserializer).and_then(|()| deserializer.end());
    match (checked, found.into_inner()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(duplicate)) => Err(duplicate),
        (Err(error), None) => Err(StrictJsonError::Json(error.to_string())),
    }
}

/// Where a value sits: built on the stack as the walk descends, turned into
/// text only for an error.
enum Location<'a> {
    Root,
    Key(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Root => Ok(()),
            Location::Key(Location::Root, key) => write!(formatter, "{key}"),
            Location::Key(parent, key) => write!(formatter, "{parent}.{key}"),
            Location::Index(parent, index) => write!(formatter, "{parent}[{index}]"),
        }
    }
}

impl Location<'_> {
    fn describe(&self) -> String {
        match self {
            Location::Root => "the top-level object".to_owned(),
            _ => format!("`{self}`"),
        }
    }
}

/// Visits any value, descending into arrays and objects.
struct Check<'a> {
    at: &'a Location<'a>,
    found: &'a RefCell<Option<StrictJsonError>>,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let at = Location::Index(self.at, index);
            if items.next_element_seed(Check { at: &at, found: self.found })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        // Webhook objects have a handful of keys: a linear scan over keys
        // borrowed from the body (owned only when they hold escapes) costs
        // less than hashing and allocating each one. Past a few, a hash set
        // (an object with many keys must not cost quadratic time).
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = entries.next_key_seed(KeySeed)? {
            let duplicate = if many.is_empty() { few.contains(&key) } else { many.contains(&key) };
            if duplicate {
                let place = self.at.describe();
                *self.found.borrow_mut() = Some(StrictJsonError::DuplicateKey { key: key.into_owned(), place });
                return Err(de::Error::custom("duplicate key"));
            }
            {
                let at = Location::Key(self.at, &key);
                entries.next_value_seed(Check { at: &at, found: self.found })?;
            }
            if many.is_empty() && few.len() < LINEAR_SCAN_KEYS {
                few.push(key);
            } else {
                many.extend(few.drain(..));
                many.insert(key);
            }
        }
        Ok(())
    }
}

/// Keys of one object compared by a linear scan, before a hash set takes over.
const LINEAR_SCAN_KEYS: usize = 16;

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Result<(), (&str, &str)>) {
        let outcome = reject_duplicate_keys(body.as_bytes());
        match expected {
            Ok(()) => assert_eq!(outcome, Ok(()), "{body}"),
            Err((key, place)) => assert_eq!(
                outcome,
                Err(StrictJsonError::DuplicateKey { key: key.to_owned(), place: place.to_owned() }),
                "{body}"
            ),
        }
    }

    #[test]
    fn a_key_twice_in_one_object_is_found_at_any_depth() {
        check(r#"{"a":1,"a":2}"#, Err(("a", "the top-level object")));
        check(r#"{"a":1,"b":{"c":null,"c":[]}}"#, Err(("c", "`b`")));
        check(
            r#"{"entry":[{"changes":[{"value":{"messages":[1],"messages":[2]}}]}]}"#,
            Err(("messages", "`entry[0].changes[0].value`")),
        );
        check(r#"[{"x":1},{"y":[{"z":1,"z":1}]}]"#, Err(("z", "`[1].y[0]`")));
        check(r#"{"a":1,"\u0061":2}"#, Err(("a", "the top-level object")));
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        check(r#"{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":1}]}"#, Ok(()));
        check(r#"{"a":"a","b":1.5,"c":-3,"d":18446744073709551615,"e":true,"f":null,"g":{}}"#, Ok(()));
        check("[]", Ok(()));
        check("\"text\"", Ok(()));
    }

    /// Objects with more keys than the linear scan covers: duplicates are
    /// found on either side of the switch to the hash set, escaped or not.
    #[test]
    fn many_keys_are_checked_as_well_as_few() {
        let object = |keys: &[String]| {
            let fields: Vec<String> = keys.iter().map(|key| format!("\"{key}\":0")).collect();
            format!("{{{}}}", fields.join(","))
        };
        let distinct: Vec<String> = (0..200).map(|index| format!("k{index}")).collect();
        check(&object(&distinct), Ok(()));
        for (first, second) in [(0, 5), (3, LINEAR_SCAN_KEYS), (LINEAR_SCAN_KEYS + 1, 150), (0, 199)] {
            let mut keys = distinct.clone();
            keys[second] = keys[first].clone();
            let duplicate = keys[first].clone();
            check(&object(&keys), Err((duplicate.as_str(), "the top-level object")));
        }
        let mut escaped = distinct.clone();
        escaped[120] = "\\u006b7".to_owned(); // "k7", escaped
        check(&object(&escaped), Err(("k7", "the top-level object")));
    }

    #[test]
    fn invalid_json_is_reported_as_such() {
        for body in ["", "{", r#"{"a":1,}"#, r#"{"a":1} trailing"#, "not json"] {
            assert!(matches!(reject_duplicate_keys(body.as_bytes()), Err(StrictJsonError::Json(_))), "{body:?}");
        }
    }
}
