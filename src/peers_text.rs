//! Editing the `peers:` list of a YAML file as text, for `peergate peer add` and `remove`.
//!
//! The allowlist is a file people write by hand, with comments that explain why a peer is
//! there and what it may do. Re-serializing the YAML would drop every comment and reorder what
//! is left, so these functions edit the text instead: they find the top-level `peers:` block
//! and insert or cut whole list items, leaving every other byte as it was. What they produce is
//! always validated by loading it before it replaces the real file, and anything they do not
//! understand (a flow-style `peers: [...]` list, items at odd indentation) is refused rather
//! than guessed at.

use crate::identity::PublicIdentity;

/// A new allowlist entry, as `peer add` writes it.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub name: String,
    /// SPKI base64.
    pub public_key: String,
    pub url: Option<String>,
}

/// One list item of the `peers:` block, as read back from the text.
#[derive(Debug, Clone)]
pub struct Item {
    /// First and last line (inclusive, 0-based) of the item, with comments indented under it.
    pub first: usize,
    pub last: usize,
    pub name: Option<String>,
    /// The keys listed for the peer (`public_key`, then `public_keys`), parsed.
    pub keys: Vec<PublicIdentity>,
}

impl Item {
    /// Whether `handle` names this entry: its name (case-insensitively, as apps address
    /// peers), the short ID of its own (first) key, or one of its full key ids.
    pub fn is_named(&self, handle: &str) -> bool {
        let handle = handle.trim();
        self.name
            .as_deref()
            .is_some_and(|n| n.trim().to_lowercase() == handle.to_lowercase())
            || self.keys.first().is_some_and(|k| k.short_id() == handle)
            || self.keys.iter().any(|k| k.key_id() == handle)
    }
}

/// Where the top-level `peers:` list is.
#[derive(Debug)]
struct Block {
    /// The `peers:` line, if there is one.
    key_line: Option<usize>,
    /// The `peers:` line holds an empty flow list or null (`peers: []`, `peers: ~`) that must
    /// become a block list.
    empty_inline: bool,
    /// First line after the key line, and one past the last line of the block.
    start: usize,
    end: usize,
    items: Vec<Item>,
    /// Column of the items' `-`.
    indent: Option<usize>,
    /// Items are separated by blank lines.
    spaced: bool,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// What follows `peers:` on its line, or `None` when the line is not the `peers` key.
fn peers_key_rest(line: &str) -> Option<&str> {
    ["peers:", "\"peers\":", "'peers':"]
        .iter()
        .find_map(|k| line.strip_prefix(k))
        .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn strip_comment(rest: &str) -> &str {
    // Only a `#` after whitespace starts a comment; values here are short tokens (`[]`, `~`).
    let rest = rest.trim();
    match rest.find(" #").or_else(|| rest.find("\t#")) {
        Some(i) => rest.get(..i).unwrap_or(rest).trim(),
        None if rest.starts_with('#') => "",
        None => rest,
    }
}

fn find_block(lines: &[&str]) -> Result<Block, String> {
    let Some(key_line) = lines.iter().position(|l| peers_key_rest(l).is_some()) else {
        return Ok(Block {
            key_line: None,
            empty_inline: false,
            start: lines.len(),
            end: lines.len(),
            items: Vec::new(),
            indent: None,
            spaced: false,
        });
    };
    let rest = lines
        .get(key_line)
        .and_then(|l| peers_key_rest(l))
        .unwrap_or_default();
    let value: String = strip_comment(rest)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let empty_inline = match value.as_str() {
        "" => false,
        "[]" | "~" | "null" => true,
        _ => {
            return Err(format!(
                "line {}: the peers: list is not written as a block list (one \"- name: ...\" item per line); rewrite it that way so peergate can edit it without losing anything",
                key_line + 1
            ))
        }
    };
    let start = key_line + 1;
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate().skip(start) {
        if is_blank(line) || is_comment(line) {
            continue;
        }
        let top_level = indent_of(line) == 0;
        let item_at_zero = line.starts_with("- ") || line.trim_end() == "-";
        if top_level && (!item_at_zero || line.starts_with("---")) {
            end = i;
            break;
        }
    }
    if empty_inline {
        let stray =
            (start..end).find(|&i| lines.get(i).is_some_and(|l| !is_blank(l) && !is_comment(l)));
        if let Some(i) = stray {
            return Err(format!(
                "line {}: unexpected text under \"peers: []\"",
                i + 1
            ));
        }
    }
    let is_item_start = |line: &str, indent: usize| {
        indent_of(line) == indent && {
            let t = line.trim_start_matches(' ');
            t.starts_with("- ") || t.trim_end() == "-"
        }
    };
    let mut indent = None;
    let mut starts = Vec::new();
    for i in start..end {
        let Some(line) = lines.get(i) else { break };
        if is_blank(line) || is_comment(line) {
            continue;
        }
        let ind = *indent.get_or_insert(indent_of(line));
        if is_item_start(line, ind) {
            starts.push(i);
        } else if indent_of(line) <= ind {
            return Err(format!(
                "line {}: expected a list item (\"- name: ...\") under peers:",
                i + 1
            ));
        }
    }
    let mut items = Vec::new();
    let mut spaced = false;
    for (n, &first) in starts.iter().enumerate() {
        let next = starts.get(n + 1).copied().unwrap_or(end);
        let item_indent = indent.unwrap_or(0);
        // The item runs to its last line of content, plus comments indented under it.
        let mut last = first;
        for i in first + 1..next {
            let Some(line) = lines.get(i) else { break };
            if is_blank(line) {
                continue;
            }
            if is_comment(line) && indent_of(line) <= item_indent {
                continue;
            }
            last = i;
        }
        if n > 0 && first > 0 && lines.get(first - 1).is_some_and(|l| is_blank(l)) {
            spaced = true;
        }
        let text = (first..=last)
            .filter_map(|i| lines.get(i))
            .map(|l| l.get(item_indent.min(indent_of(l))..).unwrap_or(l))
            .collect::<Vec<_>>()
            .concat();
        let (name, keys) = read_item(&text);
        items.push(Item {
            first,
            last,
            name,
            keys,
        });
    }
    Ok(Block {
        key_line: Some(key_line),
        empty_inline,
        start,
        end,
        items,
        indent,
        spaced,
    })
}

/// The name and keys of one list item; what does not parse is left out (the full load that
/// follows every edit reports it properly).
fn read_item(text: &str) -> (Option<String>, Vec<PublicIdentity>) {
    let Ok(serde_yaml::Value::Sequence(seq)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return (None, Vec::new());
    };
    let Some(serde_yaml::Value::Mapping(map)) = seq.first() else {
        return (None, Vec::new());
    };
    let get = |k: &str| map.get(serde_yaml::Value::String(k.to_string()));
    let name = get("name").and_then(|v| v.as_str()).map(str::to_string);
    let mut keys = Vec::new();
    if let Some(k) = get("public_key").and_then(|v| v.as_str()) {
        keys.extend(PublicIdentity::parse(k).ok());
    }
    if let Some(serde_yaml::Value::Sequence(list)) = get("public_keys") {
        keys.extend(
            list.iter()
                .filter_map(|v| v.as_str())
                .filter_map(|k| PublicIdentity::parse(k).ok()),
        );
    }
    (name, keys)
}

/// The items of the `peers:` list in `text`.
pub fn items(text: &str) -> Result<Vec<Item>, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    Ok(find_block(&lines)?.items)
}

/// A YAML double-quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || crate::peer_cmd::is_invisible(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn entry_text(entry: &NewEntry, indent: usize, eol: &str) -> String {
    let pad = " ".repeat(indent);
    let mut out = format!("{pad}- name: {}{eol}", quote(&entry.name));
    out.push_str(&format!(
        "{pad}  public_key: {}{eol}",
        quote(&entry.public_key)
    ));
    if let Some(url) = &entry.url {
        out.push_str(&format!("{pad}  url: {}{eol}", quote(url)));
    }
    out
}

/// `text` with `entry` appended to its `peers:` list (created at the end of the file when
/// there is none). Every other line is kept as it is.
pub fn append(text: &str, entry: &NewEntry) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let block = find_block(&lines)?;
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // Make sure the line we insert after ends with a line break.
    let ensure_eol = |out: &mut Vec<String>, i: usize| {
        if let Some(line) = out.get_mut(i) {
            if !line.ends_with('\n') {
                line.push_str(eol);
            }
        }
    };
    let Some(key_line) = block.key_line else {
        let mut new = text.to_string();
        if !new.is_empty() && !new.ends_with('\n') {
            new.push_str(eol);
        }
        new.push_str(&format!("peers:{eol}"));
        new.push_str(&entry_text(entry, 2, eol));
        return Ok(new);
    };
    if block.empty_inline {
        if let Some(line) = out.get_mut(key_line) {
            let rest = peers_key_rest(line).unwrap_or_default();
            let comment = rest
                .find('#')
                .and_then(|i| rest.get(i..))
                .map(|c| format!(" {}", c.trim_end()))
                .unwrap_or_default();
            let key = line.get(..line.len() - rest.len()).unwrap_or("peers:");
            *line = format!("{key}{comment}{eol}");
        }
    }
    let indent = block.indent.unwrap_or(2);
    let (at, spaced) = match block.items.last() {
        Some(last) => (last.last + 1, block.spaced),
        None => {
            // After the key line and any comments under it, before trailing blank lines.
            let mut at = key_line + 1;
            for i in block.start..block.end {
                if lines.get(i).is_some_and(|l| !is_blank(l)) {
                    at = i + 1;
                }
            }
            (at, false)
        }
    };
    ensure_eol(&mut out, at - 1);
    let mut insert = String::new();
    if spaced {
        insert.push_str(eol);
    }
    insert.push_str(&entry_text(entry, indent, eol));
    out.insert(at.min(out.len()), insert);
    Ok(out.concat())
}

/// `text` without the one item of the `peers:` list that `handle` names (name, short ID or key
/// id), and that item. Refuses when no item or several items match.
pub fn remove(text: &str, handle: &str) -> Result<Option<(String, Item)>, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let block = find_block(&lines)?;
    let mut matching = block.items.iter().filter(|i| i.is_named(handle));
    let Some(item) = matching.next() else {
        return Ok(None);
    };
    if matching.next().is_some() {
        return Err(format!(
            "{handle:?} names more than one entry of the peers list; use the short ID"
        ));
    }
    // Keep the spacing of what remains: drop the blank line after the item when it would
    // double one before it, or leave a gap above the item that becomes the first.
    let first_item = block.items.first().is_some_and(|f| f.first == item.first);
    let last_item = block.items.last().is_some_and(|l| l.first == item.first);
    let mut cut_end = item.last + 1;
    let blank_before = item.first > 0 && lines.get(item.first - 1).is_some_and(|l| is_blank(l));
    let blank_after = cut_end < block.end && lines.get(cut_end).is_some_and(|l| is_blank(l));
    if blank_after && (blank_before || (first_item && !last_item)) {
        cut_end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if i < item.first || i >= cut_end {
            out.push_str(line);
        }
    }
    Ok(Some((out, item.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "MCowBQYDK2VwAyEAdY32uFUJ8Srv+Aqzc+7DCkhitAMAFN7usLv8M1KN4wM=";
    const CAROL: &str = "MCowBQYDK2VwAyEAHM9zcYTHhtwnAiAk/3Uwezx0wPElEqLdA/gYdI0BZIA=";
    const RFC: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

    fn sample() -> String {
        format!(
            "# The peers this installation trusts.\npeers:\n  - name: Bob\n    public_key: \"{BOB}\"\n    url: https://bob.example.org:8443\n\n  - name: \"Carol's NAS\"\n    public_key: \"{CAROL}\"\n    # Carol may only read.\n    allow: {{ methods: [GET] }}\n    # trailing comment of Carol\n\n# end of file comment\n"
        )
    }

    fn dave() -> NewEntry {
        NewEntry {
            name: "Dave \"D\"".into(),
            public_key: RFC.into(),
            url: Some("https://dave.example:8443".into()),
        }
    }

    #[test]
    fn items_are_found_with_their_names_and_keys() {
        let items = items(&sample()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name.as_deref(), Some("Bob"));
        assert_eq!((items[0].first, items[0].last), (2, 4));
        assert_eq!((items[1].first, items[1].last), (6, 10));
        assert!(items[1].is_named("carol's nas"));
        assert!(items[1].is_named(items[1].keys[0].short_id()));
    }

    #[test]
    fn append_keeps_everything_else_and_follows_the_spacing() {
        let text = sample();
        let new = append(&text, &dave()).unwrap();
        assert!(
            new.starts_with(&text[..text.find("\n# end").unwrap()]),
            "{new}"
        );
        assert!(new.contains(
            "    # trailing comment of Carol\n\n  - name: \"Dave \\\"D\\\"\"\n    public_key: \""
        ), "{new}");
        assert!(new.ends_with("\n\n# end of file comment\n"), "{new}");
        let items = items(&new).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].name.as_deref(), Some("Dave \"D\""));
        let parsed: serde_yaml::Value = serde_yaml::from_str(&new).unwrap();
        assert_eq!(parsed["peers"][2]["url"], "https://dave.example:8443");
    }

    #[test]
    fn append_to_empty_and_missing_lists() {
        for (text, expect_prefix) in [
            ("", "peers:\n  - name:"),
            ("# only a comment", "# only a comment\npeers:\n  - name:"),
            ("peers: [] # none yet\n", "peers: # none yet\n  - name:"),
            (
                "peers:\n  # - name: Example\n\nother: 1\n",
                "peers:\n  # - name: Example\n  - name:",
            ),
            (
                "peers:\n- name: Bob\n  public_key: x\n",
                "peers:\n- name: Bob\n  public_key: x\n- name:",
            ),
        ] {
            let new = append(text, &dave()).unwrap();
            assert!(new.starts_with(expect_prefix), "{text:?} -> {new:?}");
            let parsed: serde_yaml::Value = serde_yaml::from_str(&new).unwrap();
            let list = parsed["peers"].as_sequence().unwrap();
            assert_eq!(list.last().unwrap()["public_key"], RFC, "{new}");
        }
        let crlf = append("peers:\r\n  - name: Bob\r\n    public_key: x\r\n", &dave()).unwrap();
        assert!(crlf.contains("\r\n  - name: \"Dave"), "{crlf:?}");
        assert!(!crlf.replace("\r\n", "").contains('\n'), "{crlf:?}");
    }

    #[test]
    fn flow_lists_are_refused() {
        let err = append("peers: [{name: Bob, public_key: x}]\n", &dave()).unwrap_err();
        assert!(err.contains("block list"), "{err}");
    }

    #[test]
    fn remove_cuts_one_item_and_its_separator() {
        let text = sample();
        let (new, item) = remove(&text, "bob").unwrap().unwrap();
        assert_eq!(item.name.as_deref(), Some("Bob"));
        assert_eq!(
            new,
            format!(
                "# The peers this installation trusts.\npeers:\n  - name: \"Carol's NAS\"\n    public_key: \"{CAROL}\"\n    # Carol may only read.\n    allow: {{ methods: [GET] }}\n    # trailing comment of Carol\n\n# end of file comment\n"
            )
        );
        let carol_short = items(&text).unwrap()[1].keys[0].short_id().to_string();
        let (new, _) = remove(&text, &carol_short).unwrap().unwrap();
        assert_eq!(
            new,
            format!(
                "# The peers this installation trusts.\npeers:\n  - name: Bob\n    public_key: \"{BOB}\"\n    url: https://bob.example.org:8443\n\n# end of file comment\n"
            )
        );
        assert!(remove(&text, "nobody").unwrap().is_none());
    }
}
