//! Where a setting's value is written, for errors found after the file was read.
//!
//! serde_yaml puts a line and column only on its own errors. A check made once the whole file
//! is read (one setting against another, a floor under a duration) knows the setting's path but
//! not where it is written. So the text is walked again along that path, and the walk fails at
//! the value on purpose: the position serde_yaml gives that failure is the value's. Only on the
//! error path; `None` when the path is not in the text (a default), or the text changed.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// 1-based line and column of the value at `path` (map keys from the top) in the YAML `text`.
pub fn value_position(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let reached = Cell::new(false);
    let walk = Walk {
        path,
        reached: &reached,
    };
    match walk.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if reached.get() => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Walk<'a> {
    path: &'a [&'a str],
    reached: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            // The value itself: any visit fails (the default `Visitor` methods refuse every
            // type), and serde_yaml marks that failure with the value's position.
            self.reached.set(true);
            d.deserialize_any(Refuse)
        } else {
            d.deserialize_map(self)
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if key.as_str() == Some(*first) {
                return map.next_value_seed(Walk {
                    path: rest,
                    reached: self.reached,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

struct Refuse;

impl Visitor<'_> for Refuse {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing (locating a value)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_in_block_and_flow_mappings() {
        let text = "identity:\n  hosts: [a]\nlisten:\n  inbound: \"0.0.0.0:1\"\n  outbound: 10.0.0.1:8480\nsignatures: { lifetime: 1s, replay_cache_size: 0 }\n";
        assert_eq!(value_position(text, &["listen", "outbound"]), Some((5, 13)));
        assert_eq!(value_position(text, &["listen", "inbound"]), Some((4, 12)));
        assert_eq!(
            value_position(text, &["signatures", "replay_cache_size"]),
            Some((6, 48))
        );
        assert_eq!(value_position(text, &["identity", "hosts"]), Some((2, 10)));
    }

    #[test]
    fn absent_paths_and_other_shapes_give_nothing() {
        let text = "listen:\n  inbound: x\nreload: 5\n";
        assert_eq!(value_position(text, &["listen", "outbound"]), None);
        assert_eq!(value_position(text, &["shutdown", "timeout"]), None);
        assert_eq!(value_position(text, &["reload", "poll_interval"]), None);
        assert_eq!(value_position("[1, 2]", &["listen"]), None);
        assert_eq!(value_position(": : :", &["listen"]), None);
        assert_eq!(value_position("", &["listen"]), None);
    }
}
