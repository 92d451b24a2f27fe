//! OData query options of one request (`$top`, `$skip`, `$select`, `$search`, tokens),
//! by name without `$` and lower-cased, with the raw pairs kept so links repeat them byte
//! for byte.
//!
//! Parsing only; it never fails: a pair without `=` is a name with an empty value.

use percent_encoding::percent_decode_str;

/// One `name=value` pair: as received, and decoded.
#[derive(Clone, Debug, Default)]
struct QueryOption {
    raw: String,
    name: String,
    value: String,
}

#[derive(Clone, Debug, Default)]
pub struct Query {
    options: Vec<QueryOption>,
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        let options = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded_key = percent_decode_str(key).decode_utf8_lossy();
                QueryOption {
                    raw: pair.to_string(),
                    name: decoded_key.trim_start_matches('$').to_ascii_lowercase(),
                    value: percent_decode_str(value).decode_utf8_lossy().into_owned(),
                }
            })
            .collect();
        Query { options }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|option| option.name == name)
            .map(|option| option.value.as_str())
    }

    /// Raw pairs except `names`, a leading `$` written `%24` as Graph's mail links do.
    pub fn raw_without(&self, names: &[&str]) -> Vec<String> {
        self.options
            .iter()
            .filter(|option| !names.contains(&option.name.as_str()))
            .map(|option| match option.raw.strip_prefix('$') {
                Some(rest) => format!("%24{rest}"),
                None => option.raw.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_dollar_and_case_and_links_keep_raw_values() {
        let query = Query::parse("%24top=5&$Select=subject,id&$search=%22a%20b%22&flag");
        assert_eq!(query.get("top"), Some("5"));
        assert_eq!(query.get("select"), Some("subject,id"));
        assert_eq!(query.get("search"), Some("\"a b\""));
        assert_eq!(query.get("flag"), Some(""));
        assert_eq!(
            query.raw_without(&["top"]),
            ["%24Select=subject,id", "%24search=%22a%20b%22", "flag"]
        );
    }
}
