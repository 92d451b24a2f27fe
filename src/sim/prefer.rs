//! RFC 7240 `Prefer` parsing for the simulator, written apart from the product's own parser
//! on purpose: the simulator judges what the proxy sends, so it must not share its bugs.
//!
//! Only reads preferences; never fails: anything unparseable is simply not a preference.

/// One preference: its name as sent, and its value with any quoting removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preference {
    pub name: String,
    pub value: Option<String>,
}

/// The preferences of every `Prefer` line, in order, keeping only the first of each name
/// (names compare case-insensitively), as RFC 7240 section 2 requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    pub list: Vec<Preference>,
}

impl Preferences {
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Preferences {
        let mut list: Vec<Preference> = Vec::new();
        for line in lines {
            for element in split_outside_quotes(line, ',') {
                let Some(preference) = parse_element(&element) else {
                    continue;
                };
                if !list
                    .iter()
                    .any(|seen| seen.name.eq_ignore_ascii_case(&preference.name))
                {
                    list.push(preference);
                }
            }
        }
        Preferences { list }
    }

    pub fn get(&self, name: &str) -> Option<&Preference> {
        self.list
            .iter()
            .find(|preference| preference.name.eq_ignore_ascii_case(name))
    }

    /// `IdType="ImmutableId"`; the value is matched case-insensitively like Graph's enums.
    pub fn wants_immutable_ids(&self) -> bool {
        self.get("IdType")
            .and_then(|preference| preference.value.as_deref())
            .is_some_and(|value| value.eq_ignore_ascii_case("ImmutableId"))
    }

    pub fn max_page_size(&self) -> Option<usize> {
        self.get("odata.maxpagesize")?
            .value
            .as_deref()?
            .trim()
            .parse()
            .ok()
            .filter(|size| *size > 0)
    }
}

/// Splits at `separator` where it is not inside a quoted string; an unterminated quote
/// runs to the end of the input rather than failing the whole header.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_quotes {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            if c == '"' {
                in_quotes = true;
            }
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn parse_element(element: &str) -> Option<Preference> {
    // Parameters after `;` do not matter to anything Graph (or the simulator) honours.
    let head = split_outside_quotes(element, ';').into_iter().next()?;
    let (name, value) = match head.split_once('=') {
        Some((name, value)) => (name, Some(unquote(value.trim()))),
        None => (head.as_str(), None),
    };
    let name = name.trim();
    let is_token = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    is_token.then(|| Preference {
        name: name.to_string(),
        value,
    })
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_id_type_is_recognised_among_other_preferences() {
        let prefs = Preferences::parse([
            "odata.maxpagesize=3, IdType=\"ImmutableId\", outlook.timezone=\"Pacific Standard Time\"",
        ]);
        assert!(prefs.wants_immutable_ids());
        assert_eq!(prefs.max_page_size(), Some(3));
        assert_eq!(
            prefs.get("OUTLOOK.TIMEZONE").and_then(|p| p.value.clone()),
            Some("Pacific Standard Time".to_string())
        );
    }

    #[test]
    fn names_and_values_are_case_insensitive_and_quotes_optional() {
        assert!(Preferences::parse(["idtype=immutableid"]).wants_immutable_ids());
        assert!(!Preferences::parse(["IdType=\"RestId\""]).wants_immutable_ids());
        assert!(!Preferences::parse(["return=minimal"]).wants_immutable_ids());
    }

    #[test]
    fn first_occurrence_wins_across_header_lines() {
        let prefs = Preferences::parse(["IdType=\"RestId\"", "IdType=\"ImmutableId\""]);
        assert!(!prefs.wants_immutable_ids());
        assert_eq!(prefs.list.len(), 1);
    }

    #[test]
    fn commas_inside_quotes_do_not_split_preferences() {
        let prefs = Preferences::parse(["a=\"x, y\", IdType=\"ImmutableId\";p=1"]);
        assert_eq!(prefs.list.len(), 2);
        assert_eq!(prefs.list[0].value.as_deref(), Some("x, y"));
        assert!(prefs.wants_immutable_ids());
    }

    #[test]
    fn unbalanced_quote_still_gets_idtype() {
        let prefs = Preferences::parse(["IdType=\"ImmutableId"]);
        assert!(prefs.wants_immutable_ids());
        let prefs = Preferences::parse(["outlook.timezone=\"x, IdType=\"ImmutableId\""]);
        assert_eq!(prefs.list.len(), 1);
    }

    #[test]
    fn garbage_elements_are_skipped() {
        let prefs = Preferences::parse([",,  , =x, \"q\"=1, respond-async"]);
        assert_eq!(
            prefs.list,
            vec![Preference {
                name: "respond-async".to_string(),
                value: None
            }]
        );
    }
}
