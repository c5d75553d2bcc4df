//! Where a setting's value is written, for errors found after the file was read.
//!
//! serde_yaml puts a line and column only on its own errors. A check made once the whole file
//! is read (one setting against another, a floor under a duration) knows the setting's path but
//! not where it is written. So the text is walked again along that path, and the walk fails at
//! the value on purpose: the position serde_yaml gives that failure is the value's. The same
//! walk finds the second of two equal keys, which serde_yaml's own error places at the start of
//! their mapping. Only on the error path; `None` when the path is not in the text (a default),
//! or the text changed.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// 1-based line and column of the value at `path` (map keys from the top) in the YAML `text`.
pub fn value_position(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let steps: Vec<Step> = path.iter().map(|k| Step::Key(k)).collect();
    locate(text, &steps, Target::Value)
}

/// 1-based line and column of the key that repeats another, for serde's `duplicate field`
/// error (`message` as serde_yaml words it, path included). serde_yaml gives that error the
/// position of the mapping that holds both keys, which names the wrong line when the second
/// one is further down; this finds the second one.
pub fn duplicate_key_position(text: &str, message: &str) -> Option<(usize, usize)> {
    let (path, key) = duplicate_field(message)?;
    let steps = parse_path(path)?;
    locate(text, &steps, Target::SecondKey(key))
}

/// The path and the key of a `[path: ]duplicate field `key`` message.
fn duplicate_field(message: &str) -> Option<(&str, &str)> {
    let (path, rest) = match message.split_once(": duplicate field `") {
        Some(split) => split,
        None => ("", message.strip_prefix("duplicate field `")?),
    };
    let key = rest.strip_suffix('`')?;
    Some((path, key))
}

/// serde_yaml's path notation: keys joined by `.`, sequence indexes as `[n]`.
fn parse_path(path: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    if path.is_empty() {
        return Some(steps);
    }
    for part in path.split('.') {
        let (key, mut indexes) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let (number, after) = rest.split_once(']')?;
            steps.push(Step::Index(number.parse().ok()?));
            indexes = after;
        }
        if !indexes.is_empty() {
            return None;
        }
    }
    Some(steps)
}

fn locate(text: &str, steps: &[Step], target: Target) -> Option<(usize, usize)> {
    let reached = Cell::new(false);
    let walk = Walk {
        path: steps,
        target,
        reached: &reached,
    };
    match walk.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if reached.get() => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where the walk fails on purpose once the path is followed.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// The value there.
    Value,
    /// The second occurrence of this key in the mapping there.
    SecondKey(&'a str),
}

struct Walk<'a> {
    path: &'a [Step<'a>],
    target: Target<'a>,
    reached: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match (self.path.first(), self.target) {
            (None, Target::Value) => {
                // The value itself: any visit fails (the default `Visitor` methods refuse every
                // type), and serde_yaml marks that failure with the value's position.
                self.reached.set(true);
                d.deserialize_any(Refuse)
            }
            (None, Target::SecondKey(_)) | (Some(Step::Key(_)), _) => d.deserialize_map(self),
            (Some(Step::Index(_)), _) => d.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let seen = Cell::new(0u32);
        match (self.path.split_first(), self.target) {
            (Some((Step::Key(first), rest)), _) => {
                while let Some(key) = map.next_key::<serde_yaml::Value>()? {
                    if key.as_str() == Some(*first) {
                        return map.next_value_seed(Walk { path: rest, ..self });
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
            (None, Target::SecondKey(wanted)) => {
                while map
                    .next_key_seed(SecondKey {
                        wanted,
                        seen: &seen,
                        reached: self.reached,
                    })?
                    .is_some()
                {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(index), rest)) = self.path.split_first() else {
            return Ok(());
        };
        for _ in 0..*index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk { path: rest, ..self })?;
        Ok(())
    }
}

/// A mapping key that fails, at its own position, when it is `wanted` for the second time.
struct SecondKey<'a> {
    wanted: &'a str,
    seen: &'a Cell<u32>,
    reached: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for SecondKey<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SecondKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        if key == self.wanted {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() == 2 {
                self.reached.set(true);
                return Err(E::custom("located"));
            }
        }
        Ok(())
    }

    // Keys of other types are not the one serde named; they are passed over.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
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

    #[test]
    fn a_duplicate_key_is_found_where_it_repeats() {
        let text = "identity:\n  name: a\nlisten:\n  inbound: x\n  outbound: y\n  inbound: z\nidentity: {}\n";
        let at = |m| duplicate_key_position(text, m);
        assert_eq!(at("listen: duplicate field `inbound`"), Some((6, 3)));
        assert_eq!(at("duplicate field `identity`"), Some((7, 1)));
        let flow = "listen: { inbound: x, outbound: y, inbound: z }\n";
        assert_eq!(
            duplicate_key_position(flow, "listen: duplicate field `inbound`"),
            Some((1, 36))
        );
        let peers = "peers:\n  - name: a\n  - name: b\n    url: u\n    allow:\n      - path: /x\n        path: /y\n    name: c\n";
        let at = |m| duplicate_key_position(peers, m);
        assert_eq!(at("peers[1]: duplicate field `name`"), Some((8, 5)));
        assert_eq!(
            at("peers[1].allow[0]: duplicate field `path`"),
            Some((7, 9))
        );
    }

    #[test]
    fn a_duplicate_that_is_not_there_gives_nothing() {
        let text = "listen:\n  inbound: x\npeers:\n  - name: a\n";
        let at = |m| duplicate_key_position(text, m);
        assert_eq!(at("listen: duplicate field `inbound`"), None);
        assert_eq!(at("peers[4]: duplicate field `name`"), None);
        assert_eq!(at("peers[x]: duplicate field `name`"), None);
        assert_eq!(at("listen: unknown field `inbound`"), None);
        assert_eq!(at("listen: duplicate field `inbound"), None);
        assert_eq!(at("peers[0]]: duplicate field `name`"), None);
    }
}
