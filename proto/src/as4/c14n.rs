//! Exclusive XML Canonicalization 1.0 (<http://www.w3.org/2001/10/xml-exc-c14n#>) over a
//! roxmltree document: of one element and its subtree (what a same-document `#id` Reference
//! and SignedInfo need) and of a whole document (XML attachments, SwA profile 5.4.2).
//!
//! roxmltree resolves names to (namespace, local name) and does not keep prefixes, which C14N
//! must reproduce; the prefixes are read back from the source text through the node and
//! attribute positions and checked against the parsed local names.
//!
//! The traversal is iterative: a deep document costs heap, never stack.

use roxmltree::{Document, Node, NodeType};

use super::As4Error;

pub(crate) const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub(crate) const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";

/// Parameters of one exclusive canonicalization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExcC14n {
    pub with_comments: bool,
    /// The InclusiveNamespaces PrefixList; `#default` stands for the default namespace.
    pub inclusive_prefixes: Vec<String>,
}

/// At most this many distinct prefixes in an InclusiveNamespaces PrefixList (each element
/// checks its in-scope namespaces against the list; senders name a handful).
pub(crate) const MAX_INCLUSIVE_PREFIXES: usize = 16;

impl ExcC14n {
    /// From an Algorithm URI; `None` for anything but exclusive C14N, or a PrefixList of more
    /// than [`MAX_INCLUSIVE_PREFIXES`] distinct prefixes.
    pub(crate) fn from_algorithm(uri: &str, prefix_list: Option<&str>) -> Option<ExcC14n> {
        let with_comments = match uri {
            EXC_C14N => false,
            EXC_C14N_WITH_COMMENTS => true,
            _ => return None,
        };
        let mut inclusive_prefixes: Vec<String> = Vec::new();
        for p in prefix_list.unwrap_or_default().split_ascii_whitespace() {
            if !inclusive_prefixes.iter().any(|q| q == p) {
                if inclusive_prefixes.len() == MAX_INCLUSIVE_PREFIXES {
                    return None;
                }
                inclusive_prefixes.push(p.to_string());
            }
        }
        Some(ExcC14n { with_comments, inclusive_prefixes })
    }

    fn inclusive(&self, prefix: &str) -> bool {
        self.inclusive_prefixes
            .iter()
            .any(|p| if prefix.is_empty() { p == "#default" } else { p == prefix })
    }
}

/// Canonicalizes `apex` and its descendants (a document subset whose only root is `apex`).
pub(crate) fn canonicalize_subtree(apex: Node, opts: &ExcC14n, out: &mut Vec<u8>) -> Result<(), As4Error> {
    if !apex.is_element() {
        return Err(As4Error::Malformed("can only canonicalize an element".into()));
    }
    Walker { opts, rendered: Vec::new(), out }.walk(apex)
}

/// Canonicalizes a whole document (no XML declaration, no DTD, comments and PIs around the
/// document element on their own lines).
pub(crate) fn canonicalize_document(doc: &Document, opts: &ExcC14n, out: &mut Vec<u8>) -> Result<(), As4Error> {
    let mut seen_root = false;
    for child in doc.root().children() {
        match child.node_type() {
            NodeType::Element => {
                Walker { opts, rendered: Vec::new(), out }.walk(child)?;
                seen_root = true;
            }
            NodeType::Comment if !opts.with_comments => {}
            NodeType::Comment | NodeType::PI => {
                if seen_root {
                    out.push(b'\n');
                }
                write_leaf(child, out);
                if !seen_root {
                    out.push(b'\n');
                }
            }
            _ => {}
        }
    }
    Ok(())
}

struct Walker<'o, 'b> {
    opts: &'o ExcC14n,
    /// Namespace declarations rendered by output ancestors: (depth, prefix, uri).
    rendered: Vec<(usize, String, String)>,
    out: &'b mut Vec<u8>,
}

enum Step<'a, 'i> {
    Open(Node<'a, 'i>, usize),
    Close(Node<'a, 'i>, usize),
}

impl Walker<'_, '_> {
    fn walk(&mut self, apex: Node) -> Result<(), As4Error> {
        let mut stack = vec![Step::Open(apex, 0)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Open(n, depth) => match n.node_type() {
                    NodeType::Element => {
                        self.start_tag(n, depth)?;
                        stack.push(Step::Close(n, depth));
                        let kids: Vec<_> = n.children().collect();
                        for k in kids.into_iter().rev() {
                            stack.push(Step::Open(k, depth + 1));
                        }
                    }
                    NodeType::Text => escape_text(n.text().unwrap_or_default(), self.out),
                    NodeType::Comment if !self.opts.with_comments => {}
                    NodeType::Comment | NodeType::PI => write_leaf(n, self.out),
                    NodeType::Root => {}
                },
                Step::Close(n, depth) => {
                    let (prefix, local) = element_qname(n)?;
                    self.out.extend_from_slice(b"</");
                    push_qname(self.out, prefix, local);
                    self.out.push(b'>');
                    while self.rendered.last().is_some_and(|(d, _, _)| *d >= depth) {
                        self.rendered.pop();
                    }
                }
            }
        }
        Ok(())
    }

    fn rendered_uri(&self, prefix: &str) -> Option<&str> {
        self.rendered.iter().rev().find(|(_, p, _)| p == prefix).map(|(_, _, u)| u.as_str())
    }

    fn start_tag(&mut self, n: Node, depth: usize) -> Result<(), As4Error> {
        let (prefix, local) = element_qname(n)?;

        // Prefixes this element needs: its own (or the default namespace), those of its
        // qualified attributes, and the in-scope ones named by the InclusiveNamespaces list.
        let mut wanted: Vec<&str> = vec![prefix];
        let mut attrs: Vec<(&str, &str, &str, &str)> = Vec::new(); // (ns, local, prefix, value)
        for a in n.attributes() {
            let (ap, al) = attribute_qname(n, &a)?;
            if !ap.is_empty() && ap != "xml" {
                wanted.push(ap);
            }
            attrs.push((a.namespace().unwrap_or(""), al, ap, a.value()));
        }
        for ns in n.namespaces() {
            let p = ns.name().unwrap_or("");
            if self.opts.inclusive(p) {
                wanted.push(p);
            }
        }
        if self.opts.inclusive("") {
            wanted.push("");
        }
        wanted.sort_unstable();
        wanted.dedup();

        let mut decls: Vec<(&str, String)> = Vec::new();
        for p in wanted {
            if p == "xml" {
                continue;
            }
            let in_scope = n
                .namespaces()
                .find(|ns| ns.name().unwrap_or("") == p)
                .map(|ns| ns.uri())
                .unwrap_or("");
            if in_scope.is_empty() && !p.is_empty() {
                return Err(As4Error::Malformed(format!("prefix {p:?} is not declared")));
            }
            let already = self.rendered_uri(p).unwrap_or("");
            if already != in_scope {
                decls.push((p, in_scope.to_string()));
            }
        }

        self.out.push(b'<');
        push_qname(self.out, prefix, local);
        // Sorted by prefix, the default namespace (empty prefix) first.
        for (p, uri) in &decls {
            if p.is_empty() {
                self.out.extend_from_slice(b" xmlns=\"");
            } else {
                self.out.extend_from_slice(b" xmlns:");
                self.out.extend_from_slice(p.as_bytes());
                self.out.extend_from_slice(b"=\"");
            }
            escape_attr(uri, self.out);
            self.out.push(b'"');
        }
        // Sorted by namespace URI (none first), then local name.
        attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, al, ap, value) in attrs {
            self.out.push(b' ');
            push_qname(self.out, ap, al);
            self.out.extend_from_slice(b"=\"");
            escape_attr(value, self.out);
            self.out.push(b'"');
        }
        self.out.push(b'>');
        for (p, uri) in decls {
            self.rendered.push((depth, p.to_string(), uri));
        }
        Ok(())
    }
}

fn push_qname(out: &mut Vec<u8>, prefix: &str, local: &str) {
    if !prefix.is_empty() {
        out.extend_from_slice(prefix.as_bytes());
        out.push(b':');
    }
    out.extend_from_slice(local.as_bytes());
}

/// The element's (prefix, local name) as written in the source.
pub(crate) fn element_qname<'a>(n: Node<'a, '_>) -> Result<(&'a str, &'a str), As4Error> {
    let text = n.document().input_text();
    let start = n.range().start + 1;
    let raw = text.get(start..).unwrap_or_default();
    let end = raw
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(raw.len());
    split_qname(&raw[..end], n.tag_name().name())
}

fn attribute_qname<'a>(
    n: Node<'a, '_>,
    a: &roxmltree::Attribute<'a, '_>,
) -> Result<(&'a str, &'a str), As4Error> {
    let raw = n.document().input_text().get(a.range_qname()).unwrap_or_default();
    split_qname(raw, a.name())
}

fn split_qname<'a>(raw: &'a str, local: &str) -> Result<(&'a str, &'a str), As4Error> {
    let (prefix, l) = raw.rsplit_once(':').unwrap_or(("", raw));
    if l != local {
        return Err(As4Error::Malformed(format!("cannot recover the qualified name of {local:?}")));
    }
    Ok((prefix, l))
}

fn write_leaf(n: Node, out: &mut Vec<u8>) {
    match n.node_type() {
        NodeType::Comment => {
            out.extend_from_slice(b"<!--");
            out.extend_from_slice(n.text().unwrap_or_default().as_bytes());
            out.extend_from_slice(b"-->");
        }
        NodeType::PI => {
            if let Some(pi) = n.pi() {
                out.extend_from_slice(b"<?");
                out.extend_from_slice(pi.target.as_bytes());
                if let Some(v) = pi.value.filter(|v| !v.is_empty()) {
                    out.push(b' ');
                    out.extend_from_slice(v.as_bytes());
                }
                out.extend_from_slice(b"?>");
            }
        }
        _ => {}
    }
}

fn escape_text(s: &str, out: &mut Vec<u8>) {
    let mut buf = String::with_capacity(s.len());
    super::xml::escape_text(s, &mut buf);
    out.extend_from_slice(buf.as_bytes());
}

fn escape_attr(s: &str, out: &mut Vec<u8>) {
    let mut buf = String::with_capacity(s.len());
    super::xml::escape_attr(s, &mut buf);
    out.extend_from_slice(buf.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::Limits;

    fn c14n_of(xml: &str, local: &str, opts: &ExcC14n) -> String {
        let doc = crate::as4::xml::parse(xml.as_bytes(), &Limits::default()).unwrap();
        let n = doc.descendants().find(|n| n.tag_name().name() == local).unwrap();
        let mut out = Vec::new();
        canonicalize_subtree(n, opts, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_visibly_used_namespaces_are_rendered() {
        let xml = r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns="urn:d"><b:x   z="2"  a:y='1' b:w="3"><c/></b:x></a:root>"#;
        assert_eq!(
            c14n_of(xml, "x", &ExcC14n::default()),
            r#"<b:x xmlns:a="urn:a" xmlns:b="urn:b" z="2" a:y="1" b:w="3"><c xmlns="urn:d"></c></b:x>"#
        );
    }

    #[test]
    fn inclusive_prefixes_and_default_undeclaration() {
        let xml = r#"<r xmlns="urn:d" xmlns:s="urn:s"><e><f xmlns=""/></e></r>"#;
        assert_eq!(
            c14n_of(xml, "e", &ExcC14n::default()),
            r#"<e xmlns="urn:d"><f xmlns=""></f></e>"#
        );
        let opts = ExcC14n { with_comments: false, inclusive_prefixes: vec!["s".into()] };
        assert_eq!(c14n_of(xml, "e", &opts), r#"<e xmlns="urn:d" xmlns:s="urn:s"><f xmlns=""></f></e>"#);
    }

    #[test]
    fn escaping_comments_and_pis() {
        let xml = "<r><e a=\"&lt;&amp;&quot;&#9;&#10;&#13;'\">x &gt; y &amp; &#13;<![CDATA[<z>]]><!-- c --><?p  d ?></e></r>";
        assert_eq!(
            c14n_of(xml, "e", &ExcC14n::default()),
            "<e a=\"&lt;&amp;&quot;&#x9;&#xA;&#xD;'\">x &gt; y &amp; &#xD;&lt;z&gt;<?p d ?></e>"
        );
        let with = ExcC14n { with_comments: true, inclusive_prefixes: vec![] };
        assert!(c14n_of(xml, "e", &with).contains("<!-- c -->"));
    }

    #[test]
    fn attribute_whitespace_is_normalized_by_the_parser() {
        let xml = "<r><e a=\"x\ny\tz\r\nw\"/></r>";
        assert_eq!(c14n_of(xml, "e", &ExcC14n::default()), "<e a=\"x y z w\"></e>");
    }

    #[test]
    fn whole_document() {
        let xml = "<?xml version=\"1.0\"?>\n<?pi x?>\n<!-- c -->\n<r b='1' a='2'/>\n<!-- d -->";
        let doc = crate::as4::xml::parse(xml.as_bytes(), &Limits::default()).unwrap();
        let mut out = Vec::new();
        canonicalize_document(&doc, &ExcC14n::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "<?pi x?>\n<r a=\"2\" b=\"1\"></r>");
        let mut out = Vec::new();
        let with = ExcC14n { with_comments: true, inclusive_prefixes: vec![] };
        canonicalize_document(&doc, &with, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "<?pi x?>\n<!-- c -->\n<r a=\"2\" b=\"1\"></r>\n<!-- d -->");
    }

    #[test]
    fn prefix_list_is_bounded() {
        let list = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>().join(" ");
        let ok = ExcC14n::from_algorithm(EXC_C14N, Some(&format!("{} p0 p1", list(MAX_INCLUSIVE_PREFIXES)))).unwrap();
        assert_eq!(ok.inclusive_prefixes.len(), MAX_INCLUSIVE_PREFIXES);
        assert_eq!(ExcC14n::from_algorithm(EXC_C14N, Some(&list(MAX_INCLUSIVE_PREFIXES + 1))), None);
    }

    #[test]
    fn redeclared_prefix_is_rendered_where_it_changes() {
        let xml = r#"<p:r xmlns:p="urn:1"><p:e><p:f xmlns:p="urn:2"/><p:g/></p:e></p:r>"#;
        assert_eq!(
            c14n_of(xml, "e", &ExcC14n::default()),
            r#"<p:e xmlns:p="urn:1"><p:f xmlns:p="urn:2"></p:f><p:g></p:g></p:e>"#
        );
    }
}
