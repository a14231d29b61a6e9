//! Passwords out of connection strings before they are shown or logged.
//!
//! An address a user configures (a Redis or PostgreSQL URL, a libpq DSN, an Elasticsearch
//! URL with an API key) often carries its credentials, and addresses end up in health
//! answers, `Debug` output, error messages and logs. [`redact`] masks the secret parts
//! wherever they sit in a text, so an error message that quotes a URL is as safe to show
//! as the URL alone, and keeps the rest (scheme, user name, hosts, database, options) so
//! the result still says which server was meant:
//!
//! ```
//! use omc_orchestra::redact::redact;
//!
//! assert_eq!(redact("redis://app:hunter2@cache:6379/0"), "redis://app:***@cache:6379/0");
//! assert_eq!(
//!     redact("host=db user=app password='se cret' dbname=erp"),
//!     "host=db user=app password=*** dbname=erp"
//! );
//! assert_eq!(
//!     redact("postgres://db/erp?password=x&sslmode=require"),
//!     "postgres://db/erp?password=***&sslmode=require"
//! );
//! ```

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Parameter names whose value is a secret, compared without regard to case: the query
/// parameters that carry credentials in URLs and libpq's own secret keywords.
const SECRET_NAMES: [&str; 11] = [
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
];

/// The names that are still secret as the last part of a longer name (`client_secret`,
/// `DATABASE_PASSWORD`, `db.password`). `key` and `pass` are not among them: `cache_key`
/// or `by_pass` name no credential, and masking them would hide what a message is about.
const SECRET_SUFFIXES: [&str; 7] = [
    "password", "passwd", "pwd", "secret", "token", "api_key", "apikey",
];

/// `text` with every password masked as [`MASK`]: the password of a URL's userinfo
/// (`scheme://user:***@host`, any scheme, several hosts or none), the value of a
/// credential parameter in a query string (`?password=***&sslmode=require`) and of a
/// `key=value` pair (`password=***`, quoted values included). User names stay; a text
/// without a password comes back unchanged. Never panics, whatever the input.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    userinfo_passwords(bytes, &mut spans);
    secret_values(bytes, &mut spans);
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        if end <= copied {
            continue;
        }
        if start >= copied {
            // Every span starts and ends at an ASCII byte (or the end), so these are
            // character boundaries; `get` keeps a mistake from being a panic.
            out.push_str(text.get(copied..start).unwrap_or_default());
            out.push_str(MASK);
        }
        copied = end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// The spans of the passwords in the userinfo of every `scheme://` in `bytes`.
fn userinfo_passwords(bytes: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(found) = find(bytes, from, b"://") {
        let start = found + 3;
        from = start;
        // Up to a blank only: a password may hold `://`, a quote or a bracket, and a later
        // URL in the same text is masked on its own turn.
        let end = (start..bytes.len())
            .find(|&i| bytes[i].is_ascii_whitespace())
            .unwrap_or(bytes.len());
        let url = bytes.get(start..end).unwrap_or_default();
        if let Some((colon, at)) = userinfo_password(url) {
            if at > colon + 1 {
                spans.push((start + colon + 1, start + at));
            }
        }
    }
}

/// In `url` (what follows `://`), the positions of the `:` before the password and of
/// the `@` after it.
fn userinfo_password(url: &[u8]) -> Option<(usize, usize)> {
    let authority_end = url
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(url.len());
    let authority = &url[..authority_end];
    let at = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => at,
        None => {
            // A password with an unescaped `/`, `?` or `#` ends the authority early; the
            // `user:pa` before it then does not look like `host:port` or `[v6]:port`.
            let colon = authority.iter().position(|&b| b == b':')?;
            let port = &authority[colon + 1..];
            if authority.first() == Some(&b'[')
                || (!port.is_empty() && port.iter().all(u8::is_ascii_digit))
            {
                return None;
            }
            url.iter()
                .rposition(|&b| b == b'@')
                .filter(|&at| at > authority_end)?
        }
    };
    let colon = url[..at].iter().position(|&b| b == b':')?;
    Some((colon, at))
}

/// The spans of the values of `name=value` pairs whose name is a secret's.
fn secret_values(bytes: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i < bytes.len() {
        if !is_name_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let name_start = i;
        let name_end = (i..bytes.len())
            .find(|&j| !is_name_byte(bytes[j]))
            .unwrap_or(bytes.len());
        i = name_end;
        if !is_secret_name(&bytes[name_start..name_end]) {
            continue;
        }
        // In a query string (`?`, `&`, or `;` as in JDBC URLs) the value ends at the next
        // separator; in a libpq DSN only at a blank, with blanks allowed around the `=`.
        let in_query = name_start
            .checked_sub(1)
            .is_some_and(|before| matches!(bytes[before], b'?' | b'&' | b';'));
        let mut j = if in_query {
            name_end
        } else {
            skip_blanks(bytes, name_end)
        };
        if bytes.get(j) != Some(&b'=') {
            continue;
        }
        j = if in_query {
            j + 1
        } else {
            skip_blanks(bytes, j + 1)
        };
        let end = value_end(bytes, j, in_query);
        if end > j {
            spans.push((j, end));
        }
        i = i.max(end);
    }
}

/// Where the value starting at `start` ends (exclusive): after its closing quote when it
/// is quoted (backslash escapes, as libpq reads them), else at a blank, at a quote that
/// closes a surrounding string, or in a query at `&`, `;` or `#`.
fn value_end(bytes: &[u8], start: usize, in_query: bool) -> usize {
    if let Some(&quote @ (b'\'' | b'"')) = bytes.get(start) {
        let mut k = start + 1;
        while let Some(&b) = bytes.get(k) {
            if b == b'\\' {
                k += 2;
            } else if b == quote {
                return k + 1;
            } else {
                k += 1;
            }
        }
        return bytes.len();
    }
    (start..bytes.len())
        .find(|&k| ends_value(bytes, k) || (in_query && matches!(bytes[k], b'&' | b';' | b'#')))
        .unwrap_or(bytes.len())
}

/// Whether the byte at `i` ends an unquoted value: a blank, or a quote or bracket that
/// closes what surrounds the value (followed by the end, a blank or punctuation). A quote
/// inside a password (`pa"ss`) does not end it, so no part of it is left out.
fn ends_value(bytes: &[u8], i: usize) -> bool {
    match bytes.get(i) {
        Some(b) if b.is_ascii_whitespace() => true,
        Some(b'"' | b'\'' | b')' | b']' | b'}' | b'>') => match bytes.get(i + 1) {
            None => true,
            Some(next) => {
                next.is_ascii_whitespace() || matches!(next, b',' | b';' | b')' | b']' | b'}')
            }
        },
        _ => false,
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn is_secret_name(name: &[u8]) -> bool {
    if SECRET_NAMES
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret.as_bytes()))
    {
        return true;
    }
    SECRET_SUFFIXES.iter().any(|secret| {
        let secret = secret.as_bytes();
        name.len() > secret.len()
            && name[name.len() - secret.len()..].eq_ignore_ascii_case(secret)
            && matches!(name[name.len() - secret.len() - 1], b'_' | b'-' | b'.')
    })
}

fn skip_blanks(bytes: &[u8], from: usize) -> usize {
    (from..bytes.len())
        .find(|&i| !matches!(bytes[i], b' ' | b'\t'))
        .unwrap_or(bytes.len())
}

/// The first position at or after `from` where `needle` starts.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_and_user_names_kept() {
        let cases = [
            (
                "redis://user:pass@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("redis://:pass@h", "redis://:***@h"),
            ("rediss://:pass@h:6380", "rediss://:***@h:6380"),
            (
                "redis+sentinel://user:pw@h1:26379,h2:26379/mymaster",
                "redis+sentinel://user:***@h1:26379,h2:26379/mymaster",
            ),
            (
                "redis+cluster://:pw@n1:7000,n2:7001",
                "redis+cluster://:***@n1:7000,n2:7001",
            ),
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:p@[::1]:5432/db",
                "postgresql://u:***@[::1]:5432/db",
            ),
            ("http://u:p@h", "http://u:***@h"),
            ("https://u:p@h/x?y=1#z", "https://u:***@h/x?y=1#z"),
            // Unescaped `@`, `/` and `?` in the password still hide all of it.
            ("redis://:p@ss@host/0", "redis://:***@host/0"),
            ("redis://u:pa/ss@host/0", "redis://u:***@host/0"),
            ("redis://:pa?ss@host", "redis://:***@host"),
            ("redis://:pa\"ss@host", "redis://:***@host"),
        ];
        for (given, wanted) in cases {
            assert_eq!(redact(given), wanted, "{given}");
        }
    }

    #[test]
    fn urls_without_a_password_come_back_unchanged() {
        for url in [
            "redis://host:6379/0",
            "redis://user@host:6379",
            "redis://user:@host",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "http://[::1]:8080/a@b",
            "http://host:8080/users/@me",
            "http://h/p?next=a:b@c",
            "http://h/p?monkey=1&keyboard=2&sslkey=/etc/k",
            "tcp://db:5432",
            "db:5432",
            "",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn credential_parameters_in_queries_are_masked() {
        let cases = [
            (
                "postgres://h/db?password=x&sslmode=require",
                "postgres://h/db?password=***&sslmode=require",
            ),
            (
                "postgres://h/db?sslmode=require&PASSWORD=x",
                "postgres://h/db?sslmode=require&PASSWORD=***",
            ),
            ("http://h/?token=abc#top", "http://h/?token=***#top"),
            (
                "http://es:9200/?api_key=a&apikey=b&key=c&access_token=d&secret=e&pass=f&pwd=g",
                "http://es:9200/?api_key=***&apikey=***&key=***&access_token=***&secret=***&pass=***&pwd=***",
            ),
            (
                "jdbc:sqlserver://h;user=sa;password=x;db=erp",
                "jdbc:sqlserver://h;user=sa;password=***;db=erp",
            ),
            (
                "http://h/cb?client_secret=s&x-auth-token=t",
                "http://h/cb?client_secret=***&x-auth-token=***",
            ),
            ("redis://h:6379?password=x", "redis://h:6379?password=***"),
        ];
        for (given, wanted) in cases {
            assert_eq!(redact(given), wanted, "{given}");
        }
    }

    #[test]
    fn libpq_passwords_are_masked() {
        let cases = [
            (
                "host=db user=app password='se cret' dbname=erp",
                "host=db user=app password=*** dbname=erp",
            ),
            (
                "host=db password=plain dbname=erp",
                "host=db password=*** dbname=erp",
            ),
            (
                "host=db password = 'it\\'s here' port=5432",
                "host=db password = *** port=5432",
            ),
            ("password='unterminated and more", "password=***"),
            ("Password=x", "Password=***"),
            ("sslpassword=k host=db", "sslpassword=*** host=db"),
            (
                "cannot connect (host=db password=x) refused",
                "cannot connect (host=db password=***) refused",
            ),
            ("DATABASE_PASSWORD=x other", "DATABASE_PASSWORD=*** other"),
            // As `Debug` shows it: the closing quote of the string stays.
            (
                "PostgresProbe { config: \"host=db password=x\" }",
                "PostgresProbe { config: \"host=db password=***\" }",
            ),
        ];
        for (given, wanted) in cases {
            assert_eq!(redact(given), wanted, "{given}");
        }
    }

    #[test]
    fn urls_inside_messages_are_masked() {
        assert_eq!(
            redact("error sending request for url (http://u:p@es:9200/_bulk?api_key=k)"),
            "error sending request for url (http://u:***@es:9200/_bulk?api_key=***)"
        );
        assert_eq!(
            redact("from redis://:a@h1 to redis://:b@h2 via http://h/?r=http://u:c@x"),
            "from redis://:***@h1 to redis://:***@h2 via http://h/?r=http://u:***@x"
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let odd = [
            "",
            "@",
            "@@@",
            ":",
            "://",
            ":///",
            "://@",
            "://:@",
            "://:x@",
            "a://b://c://",
            "redis://",
            "redis://:",
            "redis://@",
            "redis://:@",
            "=",
            "password",
            "password=",
            "password= ",
            "password='",
            "password=\"",
            "password='\\",
            "password=\\",
            "?password",
            "?password=",
            "&key=",
            "key==",
            "ñpassword=é",
            "password=🦀 host=ü",
            "redis://ü:🦀@ö/ä",
            "redis://:pa🦀ss/x@h",
            "\u{0}://\u{0}:\u{0}@\u{0}",
            "'\"'\"://'\"@",
        ];
        for text in odd {
            let _ = redact(text);
        }
        assert_eq!(redact("password= "), "password= ");
        assert_eq!(redact("redis://ü:🦀@ö/ä"), "redis://ü:***@ö/ä");
        assert_eq!(redact("password=🦀 host=ü"), "password=*** host=ü");
    }

    /// A small xorshift generator: random texts from fragments that matter to the parser.
    struct Fragments(u64);

    impl Fragments {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 28] = [
                "://", "@", ":", "=", "'", "\"", "\\", "?", "&", ";", "#", "/", " ", "[", "]",
                "password", "key", "token", "redis", "u", "p4ss", "h", "6379", "ñ", "€", "🦀",
                "\t", ",",
            ];
            let len = self.next() % 24;
            (0..len)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn random_texts_do_not_panic_and_plain_text_is_kept() {
        let mut gen = Fragments(0x9e37_79b9_7f4a_7c15);
        for _ in 0..50_000 {
            let text = gen.text();
            let out = redact(&text);
            if !text.contains("://") && !text.contains('=') {
                assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn random_passwords_never_survive() {
        let mut gen = Fragments(0x2545_f491_4f6c_dd1d);
        let alphabet: Vec<char> = "abcXYZ019-_.~!$%*+,@:/?#[]é🦀".chars().collect();
        for _ in 0..20_000 {
            let len = 6 + gen.next() % 10;
            let password: String = (0..len)
                .map(|_| alphabet[(gen.next() % alphabet.len() as u64) as usize])
                .collect();
            let marked = format!("S3CR{password}T");
            for text in [
                format!("redis://app:{marked}@cache:6379/0"),
                format!("redis://:{marked}@cache"),
                format!("host=db password='{marked}' dbname=erp"),
            ] {
                let out = redact(&text);
                assert!(!out.contains("S3CR"), "{text} -> {out}");
                assert!(!out.contains(&marked), "{text} -> {out}");
            }
        }
    }
}
