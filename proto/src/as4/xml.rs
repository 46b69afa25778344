//! Bounded XML parsing and the small writing helpers every builder shares.
//!
//! [`parse`] first scans the raw bytes without building anything: size, UTF-8, nesting depth,
//! and any `<!DOCTYPE`/`<!ENTITY`/other `<!` markup are checked before roxmltree sees the text
//! (roxmltree would also refuse a DTD; refusing earlier keeps the error typed and the cost
//! linear). roxmltree then parses with a node limit. roxmltree is not recursive, so a deep
//! document cannot overflow the stack either way.

use roxmltree::{Document, Node, ParsingOptions};

use super::{As4Error, BuildError, Limits};

/// At most this many namespace declarations in one document. Every element carries all the
/// namespaces in scope, and canonicalization looks prefixes up among them, so their number
/// multiplies the cost of each element; real envelopes and payloads declare a few dozen.
pub(crate) const MAX_NAMESPACE_DECLARATIONS: usize = 128;

/// Strips a UTF-8 BOM, checks the bytes against `limits` and parses them.
pub(crate) fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Document<'a>, As4Error> {
    let text = prescan(bytes, limits)?;
    let opts = ParsingOptions { allow_dtd: false, nodes_limit: limits.max_nodes, ..Default::default() };
    Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => As4Error::TooManyNodes { limit: limits.max_nodes },
        roxmltree::Error::DtdDetected => As4Error::Dtd,
        other => As4Error::Malformed(other.to_string()),
    })
}

/// The raw-byte checks of [`parse`]; returns the text without BOM.
pub(crate) fn prescan<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, As4Error> {
    if bytes.len() > limits.max_bytes {
        return Err(As4Error::TooLarge { limit: limits.max_bytes });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| As4Error::Malformed(format!("not UTF-8: {e}")))?;
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut declarations = 0usize;
    let mut i = 0usize;
    while let Some(off) = memchr::memchr(b'<', &b[i..]) {
        i += off;
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = skip_past(b, i + 4, b"-->")?;
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_past(b, i + 9, b"]]>")?;
        } else if rest.starts_with(b"<!") {
            let word: Vec<u8> = rest[2..].iter().take(7).map(|c| c.to_ascii_uppercase()).collect();
            if word.starts_with(b"DOCTYPE") || word.starts_with(b"ENTITY") {
                return Err(As4Error::Dtd);
            }
            return Err(As4Error::Malformed("unexpected markup declaration".into()));
        } else if rest.starts_with(b"<?") {
            i = skip_past(b, i + 2, b"?>")?;
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_past(b, i + 2, b">")?;
        } else {
            // A start tag: find its end outside quoted attribute values.
            let mut j = i + 1;
            let mut quote: Option<u8> = None;
            loop {
                let Some(&c) = b.get(j) else {
                    return Err(As4Error::Malformed("unterminated start tag".into()));
                };
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => break,
                    None if c.is_ascii_whitespace() && b[j + 1..].starts_with(b"xmlns") => {
                        declarations += 1;
                        if declarations > MAX_NAMESPACE_DECLARATIONS {
                            return Err(As4Error::Malformed(format!(
                                "more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations"
                            )));
                        }
                    }
                    None => {}
                }
                j += 1;
            }
            let self_closing = j > i + 1 && b[j - 1] == b'/';
            if !self_closing {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(As4Error::TooDeep { limit: limits.max_depth });
                }
            }
            i = j + 1;
        }
    }
    Ok(text)
}

fn skip_past(b: &[u8], from: usize, end: &[u8]) -> Result<usize, As4Error> {
    let hay = b.get(from..).unwrap_or_default();
    memchr::memmem::find(hay, end)
        .map(|p| from + p + end.len())
        .ok_or_else(|| As4Error::Malformed("unterminated markup".into()))
}

// ---------------------------------------------------------------------------------------------
// Navigation
// ---------------------------------------------------------------------------------------------

/// True for an element with this namespace and local name.
pub(crate) fn is(node: Node, ns: &str, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local && node.tag_name().namespace() == Some(ns)
}

/// Element children with this namespace and local name.
pub(crate) fn children<'a, 'i>(
    node: Node<'a, 'i>,
    ns: &'static str,
    local: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, ns, local))
}

/// The only element child with this name; `Ok(None)` when absent, an error when repeated.
pub(crate) fn only_child<'a, 'i>(
    node: Node<'a, 'i>,
    ns: &'static str,
    local: &'static str,
) -> Result<Option<Node<'a, 'i>>, As4Error> {
    let mut it = children(node, ns, local);
    let first = it.next();
    if it.next().is_some() {
        return Err(As4Error::InvalidHeader(format!("more than one {local} element")));
    }
    Ok(first)
}

/// The concatenated text content of an element, trimmed.
pub(crate) fn text(node: Node) -> String {
    let mut s = String::new();
    for d in node.descendants() {
        if d.is_text() {
            s.push_str(d.text().unwrap_or_default());
        }
    }
    s.trim().to_string()
}

/// The id of an element for same-document references: `wsu:Id`, or an `Id`/`ID`/`id`
/// attribute in any namespace, or `xml:id`. Returns every such value (a well-formed WS-Security
/// element has one; the caller rejects documents where a value is not unique).
pub(crate) fn ids<'a>(node: Node<'a, '_>) -> impl Iterator<Item = &'a str> {
    node.attributes()
        .filter(|a| matches!(a.name(), "Id" | "ID" | "id"))
        .map(|a| a.value())
}

// ---------------------------------------------------------------------------------------------
// Writing (in canonical form: the escapes are exactly those of C14N)
// ---------------------------------------------------------------------------------------------

/// Escapes character data as C14N does (`&`, `<`, `>`, CR).
pub(crate) fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value as C14N does (`&`, `<`, `"`, TAB, LF, CR).
pub(crate) fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Rejects characters XML 1.0 cannot carry (controls other than TAB/LF/CR, U+FFFE/U+FFFF).
pub(crate) fn check_chars(what: &'static str, s: &str) -> Result<(), BuildError> {
    match s.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        Some(c) => Err(BuildError::Invalid {
            what,
            reason: format!("character U+{:04X} cannot be written in XML", c as u32),
        }),
        None => Ok(()),
    }
}

/// Checks that `id` is an XML NCName (required of wsu:Id values).
pub(crate) fn check_ncname(what: &'static str, id: &str) -> Result<(), BuildError> {
    let mut chars = id.chars();
    let ok = match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {
            chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(BuildError::Invalid { what, reason: format!("{id:?} is not an XML NCName") })
    }
}

/// A start tag's attribute text: ` name="escaped"`.
pub(crate) fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_attr(value, out);
    out.push('"');
}

/// `<name attrs>escaped text</name>`, for elements whose namespace is already declared.
pub(crate) fn leaf(out: &mut String, name: &str, attrs: &[(&str, &str)], text: &str) {
    out.push('<');
    out.push_str(name);
    for (k, v) in attrs {
        attr(out, k, v);
    }
    out.push('>');
    escape_text(text, out);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits { max_bytes: 10_000, max_depth: 8, max_nodes: 1000, max_parts: 4 }
    }

    #[test]
    fn doctype_and_entities_are_rejected_before_parsing() {
        let billion = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><a>&lol2;</a>";
        assert_eq!(parse(billion, &lim()).unwrap_err(), As4Error::Dtd);
        let xxe = b"<!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>";
        assert_eq!(parse(xxe, &lim()).unwrap_err(), As4Error::Dtd);
        let lower = b"<!doctype a><a/>";
        assert_eq!(parse(lower, &lim()).unwrap_err(), As4Error::Dtd);
        // Inside a comment or CDATA it is text, not a declaration.
        assert!(parse(b"<a><!-- <!DOCTYPE x> --><![CDATA[<!ENTITY y>]]></a>", &lim()).is_ok());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        assert_eq!(parse(deep.as_bytes(), &Limits { max_bytes: 1 << 20, ..lim() }).unwrap_err(),
            As4Error::TooDeep { limit: 8 });
        let ok = "<a>".repeat(8) + &"</a>".repeat(8);
        assert!(parse(ok.as_bytes(), &lim()).is_ok());
        // Self-closing tags and '>' inside attribute values do not count.
        assert!(parse(b"<a><b x='>' y=\"/>\"/><b/><b/></a>", &lim()).is_ok());
    }

    #[test]
    fn size_nodes_and_garbage_are_errors() {
        let big = vec![b' '; 10_001];
        assert_eq!(parse(&big, &lim()).unwrap_err(), As4Error::TooLarge { limit: 10_000 });
        let many = format!("<a>{}</a>", "<b/>".repeat(2000));
        assert_eq!(parse(many.as_bytes(), &lim()).unwrap_err(), As4Error::TooManyNodes { limit: 1000 });
        for g in [&b""[..], b"\xff\xfe<a/>", b"<a", b"<a><b></a>", b"<a x='1></a>", b"<!-- x", b"hello", b"<?xml"] {
            assert!(matches!(parse(g, &lim()), Err(As4Error::Malformed(_))), "{g:?}");
        }
    }

    #[test]
    fn namespace_declarations_are_bounded() {
        let decls = |n: usize| (0..n).map(|i| format!(" xmlns:p{i}='u'")).collect::<String>();
        let ok = format!("<a{}><b\txmlns='v'/></a>", decls(MAX_NAMESPACE_DECLARATIONS - 1));
        assert!(parse(ok.as_bytes(), &lim()).is_ok());
        let over = format!("<a{}><b\nxmlns='v'/></a>", decls(MAX_NAMESPACE_DECLARATIONS));
        assert!(matches!(parse(over.as_bytes(), &lim()), Err(As4Error::Malformed(_))));
        // In attribute values and text it is not a declaration.
        let text = format!("<a x=' xmlns'>{}</a>", " xmlns".repeat(1000));
        assert!(parse(text.as_bytes(), &lim()).is_ok());
    }

    #[test]
    fn bom_is_stripped() {
        assert!(parse(b"\xEF\xBB\xBF<a/>", &lim()).is_ok());
    }

    #[test]
    fn ncname_and_chars() {
        assert!(check_ncname("id", "body-1.a_b").is_ok());
        assert!(check_ncname("id", "1abc").is_err());
        assert!(check_ncname("id", "a b").is_err());
        assert!(check_ncname("id", "").is_err());
        assert!(check_chars("v", "ok\ttab\r\n").is_ok());
        assert!(check_chars("v", "bad\u{1}").is_err());
    }
}
