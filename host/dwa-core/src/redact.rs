//! Credentials out of what the host shows: a URL's user and password (a
//! Redis URL's password, a backend URL's basic auth) and its query (where
//! tokens ride) never reach `/health`, logs of status, or error texts.

/// `text` with every URL's `user:password@` replaced by `***@` and its
/// query replaced by `?***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The URL runs to the first character that cannot be in one here.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ','))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        out.push_str(&redact_one(url));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// One URL after its `scheme://`.
fn redact_one(url: &str) -> String {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, path) = url.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(i) => format!("***@{}", &authority[i + 1..]),
        None => authority.to_owned(),
    };
    let path = match path.find('?') {
        Some(q) => {
            let fragment = path[q..].find('#').map_or("", |f| &path[q + f..]);
            format!("{}?***{fragment}", &path[..q])
        }
        None => path.to_owned(),
    };
    format!("{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_and_queries_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact("https://user:pw@modal.example/app?token=abc#x"),
            "https://***@modal.example/app?***#x"
        );
        assert_eq!(
            redact("cannot connect to redis://u:p@h:1 (refused), then http://ok.example/x"),
            "cannot connect to redis://***@h:1 (refused), then http://ok.example/x"
        );
        assert_eq!(redact("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(redact("no url here"), "no url here");
    }
}
